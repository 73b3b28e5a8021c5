"""The report's "Enough seeds?" section on runs with a known effect (and on a reference
report's final scores), reproducibly.

Known effect (default): a results root in the store's layout whose final returns and costs
are drawn from stated normal distributions (``METHODS``; 10 seeds per cell, one from each
tenth of the distribution), its report, and for each closest pair the section names, the
true number of seeds to separate it — by simulation from normal runs (the section's
procedure with the true distribution instead of the observed runs), at the true effect and at
the observed one:

    .venv/bin/python scripts/analysis/seeds_synthetic.py --root results/seeds-synthetic \\
        --out results/reference/seeds-synthetic
    rm results/reference/seeds-synthetic/report.html   # kept: report.md, tables, PNGs

Replay: a root whose runs end at the final scores of a report's ``tables/runs.csv`` (one
epoch per run: final return and cost exact; regret and curves are not), for reports whose
runs are not on disk; ``--out`` as above, or ``safebench plan ROOT``:

    .venv/bin/python scripts/analysis/seeds_synthetic.py --root results/fidelity-replay \\
        --replay results/reference/fidelity/tables/runs.csv
"""

from __future__ import annotations

import argparse
import itertools
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from safebench.report import ReportConfig, build_report
from safebench.results import store
from safebench.schema.spec import EvalSpec, RunSpec

COST_LIMIT = 25.0
SEEDS = 10
EPOCHS, STEPS = 5, 20_000
TRUE_SD = {"HalfCheetah": 100.0, "Hopper": 50.0}
ENVS = {"HalfCheetah": "SafetyHalfCheetahVelocity-v1", "Hopper": "SafetyHopperVelocity-v1"}
METHODS: dict[str, dict[str, tuple[float, float]]] = {
    # env -> label -> (true mean final return, true mean final cost); return sd TRUE_SD[env],
    # cost sd 4. Effects in return sd: HalfCheetah strong - close = 1 sd, close - weak = 1.5
    # sd; Hopper strong - close = 0.5 sd, close - weak = 3 sd; "unsafe" is over the limit.
    "HalfCheetah": {
        "strong": (1000.0, 15.0),
        "close": (900.0, 15.0),
        "weak": (750.0, 12.0),
        "unsafe": (1200.0, 40.0),
    },
    "Hopper": {"strong": (500.0, 15.0), "close": (475.0, 15.0), "weak": (325.0, 12.0)},
}
ALGO_OF = {"strong": "ppo-lag", "close": "cppo-pid", "weak": "trpo-lag", "unsafe": "ppo"}


def _spec(label: str, algo: str, env: str, seed: int, limit: float) -> RunSpec:
    return RunSpec(
        experiment="seeds-synthetic",
        algo=algo,
        label=label,
        env_id=env,
        seed=seed,
        budget=EPOCHS * STEPS,
        steps_per_epoch=STEPS,
        cost_limit=limit,
        eval=EvalSpec(episodes=0),
    )


def _write_run(root: Path, spec: RunSpec, ret: float, cost: float, epochs: int) -> None:
    """A done run whose last epoch ends at (ret, cost), rising to it over ``epochs``."""
    rows = []
    for epoch in range(epochs):
        share = (epoch + 1) / epochs
        rows.append(
            {
                "epoch": epoch,
                "steps": (epoch + 1) * spec.steps_per_epoch,
                "episodes": (epoch + 1) * 20,
                "epoch_episodes": 20,
                "ep_ret": ret * share,
                "ep_cost": cost * (2.0 - share),
                "ep_len": 1000.0,
                "time_rollout": 10.0,
                "time_update": 5.0,
                "time_eval": 0.0,
                "wall_time": 15.0 * (epoch + 1),
            }
        )
    run = store.RunDir(spec.run_dir(root))
    run.write_spec({**spec.model_dump(mode="json"), "run_id": spec.run_id})
    run.write_metrics(rows)
    run.write_status("done")


def _experiment_record(root: Path, name: str, description: str) -> None:
    store.atomic_write_json(
        root / store.EXPERIMENT_RECORD,
        {"experiment": {"name": name, "description": description}, "runs": []},
    )


def _stratified_normal(rng: np.random.Generator, mean: float, sd: float, n: int) -> np.ndarray:
    """n draws from Normal(mean, sd), one from each of n equally likely bands, in random
    order: random runs whose mean and spread stay close to the true ones, so the section's
    estimates (which take the observed runs as the truth) can be held against the truth."""
    u = (rng.permutation(n) + rng.random(n)) / n
    return mean + sd * stats.norm.ppf(u)


def make_synthetic(root: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for env_key, methods in METHODS.items():
        for label, (mean_ret, mean_cost) in methods.items():
            spec_seeds = [1000 * s for s in range(SEEDS)]
            rets = _stratified_normal(rng, mean_ret, TRUE_SD[env_key], SEEDS)
            costs = np.clip(_stratified_normal(rng, mean_cost, 4.0, SEEDS), 0.0, None)
            for s, ret, cost in zip(spec_seeds, rets, costs, strict=True):
                spec = _spec(label, ALGO_OF[label], ENVS[env_key], s, COST_LIMIT)
                _write_run(root, spec, float(ret), float(cost), EPOCHS)
    _experiment_record(
        root,
        "seeds-synthetic",
        "Synthetic final scores with a known effect (scripts/analysis/seeds_synthetic.py): "
        "final returns "
        "~ Normal(mean, sd) per method and env (sd 100 on HalfCheetah, 50 on Hopper), 10 seeds "
        "per cell drawn one per decile band; HalfCheetah strong - close = 1 sd, close - weak = "
        "1.5 sd; Hopper strong - close = 0.5 sd, close - weak = 3 sd; 'unsafe' is over the "
        "cost limit.",
    )


def make_replay(runs_csv: Path, root: Path) -> None:
    runs = pd.read_csv(runs_csv)
    runs = runs.loc[runs["status"] == "done"]
    for r in runs.itertuples():
        spec = _spec(str(r.algo), str(r.algo), str(r.env), int(r.seed), float(r.cost_limit))
        _write_run(root, spec, float(r.ret), float(r.cost), 1)
    _experiment_record(
        root,
        f"{runs_csv.parent.parent.name} (final scores replayed)",
        f"The final scores of {runs_csv} as one-epoch runs (scripts/analysis/seeds_synthetic.py "
        "--replay): final return and cost are the report's; regret and curves are not.",
    )


def true_power(delta_sd: float, n: int, experiments: int, reps: int, seed: int = 0) -> float:
    """Share of experiments with n runs per method from Normal(delta, 1) and Normal(0, 1)
    whose 95 % percentile-bootstrap IQM intervals separate (scipy's trim_mean)."""
    rng = np.random.default_rng([seed, n])

    def interval(x: np.ndarray) -> np.ndarray:
        idx = rng.integers(0, n, size=(experiments, reps, n))
        iqm = stats.trim_mean(np.take_along_axis(x[:, None, :], idx, axis=-1), 0.25, axis=-1)
        return np.percentile(iqm, [2.5, 97.5], axis=-1)

    a = rng.normal(delta_sd, 1.0, (experiments, n))
    b = rng.normal(0.0, 1.0, (experiments, n))
    return float(np.mean(interval(a)[0] > interval(b)[1]))


def true_seeds(
    delta_sd: float, experiments: int = 1000, reps: int = 400, lo: int = 4, hi: int = 50
) -> int | None:
    """Smallest n in 5..hi with true power >= 80 % (bisection), None when hi falls short."""
    if true_power(delta_sd, hi, experiments, reps) < 0.8:
        return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if true_power(delta_sd, mid, experiments, reps) >= 0.8 else (mid, hi)
    return hi


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="results root to (re)create")
    parser.add_argument("--out", type=Path, help="report folder (default ROOT/report)")
    parser.add_argument("--replay", type=Path, help="a report's tables/runs.csv to replay")
    parser.add_argument("--seed", type=int, default=0, help="draws of the synthetic runs")
    args = parser.parse_args()
    if args.root.exists():
        if not (args.root / store.EXPERIMENT_RECORD).is_file():
            sys.exit(f"{args.root} exists and is not a root this script made; choose another")
        shutil.rmtree(args.root)
    if args.replay:
        make_replay(args.replay, args.root)
    else:
        make_synthetic(args.root, args.seed)
    stages: list[tuple[str, float, float]] = []

    def stage(name: str) -> None:
        stages.append((name, time.perf_counter(), time.process_time()))

    config = ReportConfig(formats=("png",))  # as results/reference keeps them
    report = build_report(args.root, args.out, config, progress=stage)
    print(f"report: {report.out} ({report.seconds:.1f} s)")
    for (name, wall, cpu), (_, wall_next, cpu_next) in itertools.pairwise(stages):
        if name == "enough seeds?":  # the section, up to the next stage
            print(
                f"  section 'Enough seeds?': {wall_next - wall:.2f} s ({cpu_next - cpu:.2f} s CPU)"
            )
    for line in report.summary:
        print(" ", line)
    separate = report.out / "tables" / "seeds_separate.csv"
    if args.replay or not separate.is_file():
        return
    print("closest pairs: estimated seeds per method (from the observed runs) against the truth")
    print("(simulated from normal runs, 1,000 experiments x 400 bootstrap reps) at the true")
    print("effect and at the observed one (IQM difference / pooled sd of the observed runs):")
    runs = pd.read_csv(report.out / "tables" / "runs.csv")
    runs = runs.loc[runs["status"] == "done"]
    for r in pd.read_csv(separate).to_dict("records"):
        scope, higher, lower = str(r["scope"]), str(r["higher"]), str(r["lower"])
        estimate = "not separable" if pd.isna(r["seeds"]) else str(int(r["seeds"]))
        if scope not in ENVS.values():
            print(f"  {scope}: {higher} vs {lower}: estimate {estimate} (normalised: no truth)")
            continue
        env_key = next(k for k, v in ENVS.items() if v == scope)
        true_delta = (METHODS[env_key][higher][0] - METHODS[env_key][lower][0]) / TRUE_SD[env_key]
        cell = runs.loc[runs["env"] == scope].groupby("algo")["ret"]
        pooled = math.sqrt((cell.var()[higher] + cell.var()[lower]) / 2)
        observed = float(r["effect"]) / pooled
        truths = []
        for delta in (true_delta, observed):
            n = true_seeds(delta)
            truths.append("not separable within 50" if n is None else str(n))
        print(
            f"  {scope}: {higher} vs {lower}: estimate {estimate}; truth {truths[0]} at the "
            f"true effect {true_delta:.2f} sd, {truths[1]} at the observed {observed:.2f} sd"
        )


if __name__ == "__main__":
    main()
