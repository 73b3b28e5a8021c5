"""Time the analysis/report path on a synthetic benchmark of realistic size.

Generates a tidy per-epoch frame (default 4 algos x 10 envs x 25 seeds = 1,000 runs
x 500 epochs = 500,000 rows), then runs final_scores, normalisation, aggregate,
per_env_table, feasibility and KFCPO-gain tables, probability of improvement,
performance profiles and the plots, printing the wall time of every stage.

    .venv/bin/python scripts/bench/report_synthetic.py [--reps 50000] [--out DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from safebench import analysis
from safebench.report import plots

ALGOS = ("cpo", "ctrpo-beta2", "pcpo", "ppo")
COST_LIMIT = 25.0


def synthetic_runs(
    n_algos: int = 4,
    n_envs: int = 10,
    n_seeds: int = 25,
    n_epochs: int = 500,
    partial_frac: float = 0.02,
    seed: int = 0,
) -> pd.DataFrame:
    """Tidy (run, epoch) frame with saturating returns and costs decaying towards a level.

    Each algo has a return skill and a final cost level relative to the limit; a share
    ``partial_frac`` of runs is left "running" or "failed" (truncated) so the partial-run
    handling is exercised at scale.
    """
    rng = np.random.default_rng(seed)
    algos = [ALGOS[i] if i < len(ALGOS) else f"algo{i}" for i in range(n_algos)]
    skill = np.linspace(0.6, 1.0, n_algos)
    final_cost = np.linspace(0.7, 1.3, n_algos) * COST_LIMIT
    env_scale = rng.uniform(10.0, 5000.0, n_envs)
    epochs = np.arange(n_epochs)
    progress = 1.0 - np.exp(-epochs / (0.2 * n_epochs))
    frames = []
    for a, algo in enumerate(algos):
        for e in range(n_envs):
            runs = n_seeds
            run_skill = skill[a] * rng.normal(1.0, 0.08, (runs, 1))
            ret = env_scale[e] * run_skill * progress + rng.normal(
                0, 0.03 * env_scale[e], (runs, n_epochs)
            )
            level = final_cost[a] * rng.normal(1.0, 0.15, (runs, 1))
            cost = level + (60.0 - level) * np.exp(-epochs / (0.15 * n_epochs))
            cost = np.clip(cost + rng.normal(0, 3.0, (runs, n_epochs)), 0.0, None)
            status = np.where(rng.random(runs) < partial_frac, "running", "done")
            status[rng.random(runs) < partial_frac / 4] = "failed"
            n_logged = np.where(
                status == "done", n_epochs, rng.integers(n_epochs // 4, n_epochs, runs)
            )
            keep = epochs[None, :] < n_logged[:, None]
            seeds = np.repeat(np.arange(runs) * 1000, n_epochs).reshape(runs, n_epochs)
            run_ids = np.array([f"{algo}/env{e}/s{s * 1000}" for s in range(runs)])
            eval_mask = (epochs[None, :] % 10 == 9) & keep
            frames.append(
                pd.DataFrame(
                    {
                        "run_id": np.repeat(run_ids, n_epochs)[keep.ravel()],
                        "algo": algo,
                        "env": f"env{e}",
                        "seed": seeds[keep],
                        "status": np.repeat(status, n_epochs)[keep.ravel()],
                        "epoch": np.broadcast_to(epochs, (runs, n_epochs))[keep],
                        "steps": (np.broadcast_to(epochs, (runs, n_epochs))[keep] + 1) * 20000,
                        "ep_ret": ret[keep],
                        "ep_cost": cost[keep],
                        "ep_len": 1000.0,
                        "eval_ret": np.where(eval_mask, ret, np.nan)[keep],
                        "eval_cost": np.where(eval_mask, cost, np.nan)[keep],
                        "cost_limit": COST_LIMIT,
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


@contextmanager
def stage(name: str, times: dict[str, float]) -> Iterator[None]:
    start = time.perf_counter()
    yield
    times[name] = time.perf_counter() - start
    print(f"{name:<56s} {times[name]:8.2f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algos", type=int, default=4)
    parser.add_argument("--envs", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=25)
    parser.add_argument("--epochs", type=int, default=500)
    parser.add_argument("--partial-frac", type=float, default=0.02, help="share of non-done runs")
    parser.add_argument("--reps", type=int, default=50000, help="bootstrap reps for aggregate")
    parser.add_argument(
        "--statistics", default="iqm,mean,median,optimality_gap", help="aggregate statistics"
    )
    parser.add_argument("--per-env-reps", type=int, default=50000)
    parser.add_argument("--extra-reps", type=int, default=2000, help="POI / profiles / curves")
    parser.add_argument("--out", type=Path, default=None, help="PNG folder (default: temp dir)")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="safebench-report-"))
    out.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}

    with stage("generate (not part of the report)", times):
        df = synthetic_runs(args.algos, args.envs, args.seeds, args.epochs, args.partial_frac)
    n_runs = df["run_id"].nunique()
    print(f"  {n_runs} runs, {len(df):,} rows -> PNGs in {out}")
    report_start = time.perf_counter()

    with stage("final_scores", times):
        scores = analysis.final_scores(df, "last")
    with stage("normalize_scores", times):
        norm = analysis.normalize_scores(
            scores, reference="ppo", regret_reference="cpo", method="reference"
        )
    statistics = args.statistics.split(",")
    with stage(f"aggregate ret {'+'.join(statistics)} (reps={args.reps})", times):
        agg = analysis.aggregate(
            norm, "ret", reps=args.reps, statistics=statistics, ragged="truncate"
        )
    with stage(f"per_env_table (reps={args.per_env_reps})", times):
        table = analysis.per_env_table(scores, reps=args.per_env_reps)
    with stage("feasibility_table", times):
        analysis.feasibility_table(scores)
    with stage("gain_over_best_feasible_baseline", times):
        analysis.gain_over_best_feasible_baseline(
            scores, "ctrpo-beta2", [a for a in agg["algo"] if a != "ctrpo-beta2"]
        )
    with stage(f"probability_of_improvement x3 (reps={args.extra_reps})", times):
        analysis.probability_of_improvement(
            norm,
            [("ctrpo-beta2", "cpo"), ("ctrpo-beta2", "pcpo"), ("cpo", "pcpo")],
            reps=args.extra_reps,
            ragged="truncate",
        )
    with stage(f"performance_profiles (reps={args.extra_reps})", times):
        profiles = analysis.performance_profiles(
            norm, np.linspace(0.0, 1.5, 31), reps=args.extra_reps, ragged="truncate"
        )

    def save(name: str, draw: Callable[[Any], Any]) -> None:
        fig = Figure(figsize=(6, 4), dpi=100)
        draw(fig.add_subplot())
        fig.tight_layout()
        fig.savefig(out / f"{name}.png")

    env0 = "env0"
    curve_kw = {"env": env0, "reps": args.extra_reps}
    with stage("plots (6 PNGs)", times):
        save("return_curves", lambda ax: plots.plot_return_curves(df, ax, **curve_kw))
        save("cost_curves", lambda ax: plots.plot_cost_curves(df, ax, **curve_kw))
        save("regret_curves", lambda ax: plots.plot_regret_curves(df, ax, **curve_kw))
        save("iqm_return", lambda ax: plots.plot_interval_estimates(agg, ax))
        save("return_vs_cost", lambda ax: plots.plot_return_cost_scatter(norm, ax))
        save("profiles", lambda ax: plots.plot_performance_profiles(profiles, ax))

    total = time.perf_counter() - report_start
    print(f"{'report total (all but generate)':<56s} {total:8.2f} s")
    print(agg[["algo", "n_runs", "n_excluded", "iqm", "iqm_low", "iqm_high"]].to_string())
    print("notes:", *agg.attrs["notes"], sep="\n  ")
    print(f"per_env_table: {len(table)} rows, {table['n_runs'].nunique()} distinct run counts")


if __name__ == "__main__":
    main()
