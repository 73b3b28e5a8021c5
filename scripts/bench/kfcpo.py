"""KFCPO against CPO on one epoch's batch: update time, trust region, surrogate gain.

Three subcommands:

``time``: one synthetic epoch (20000 samples, obs 60, act 2 by default; actions sampled from
the policy, advantages correlated with them) is given to a fresh CPO and a fresh KFCPO with
the same actor architecture and seed, for each hidden-layer setting. Timed per epoch:

* CPO ``update_actor``: two gradients, two CG(15) solves with Fisher-vector products on all
  samples, the CPO dual and the backtracking line search;
* KFCPO ``update_actor`` with its critic fit switched off (the same regression CPO does after
  its actor step), and both full ``update()`` calls (actor + critics).

Wall-clock and process CPU time are both reported (CPU time is robust to other load on a shared
machine). Median over ``--repeats``.

``record PATH``: train CPO (OmniSafe defaults) on SafetyHalfCheetahVelocity-v1 for
``--epochs`` epochs of 20000 steps over 10 envs, then save the next epoch's rollout through
``safebench.core.rollout.Collector`` and the policy that collected it as a compressed float32
``.npz`` — the fixture of ``tests/algorithms/test_kfcpo.py``.

``grid RESULTS``: the λ × k table of ``experiments/kfcpo_sensitivity.yaml``'s results (Ĵc/d
and return over the best return at that cost, medians over seeds).

``fixture PATH``: give that recorded batch to CPO and to KFCPO (``--config`` JSON overrides,
``--ep-cost`` to replace the recorded Ĵc) starting from the recorded policy; print KFCPO's
rollback rate, epoch KL (mean over action dims, the baselines' convention), the true, exact-
model and K-FAC-predicted KL per step, and its reward-surrogate gain relative to CPO's.

    .venv/bin/python scripts/bench/kfcpo.py time [--hidden 64,64 --hidden 256,256]
    .venv/bin/python scripts/bench/kfcpo.py record tests/fixtures/halfcheetah_cpo_epoch15.npz
    .venv/bin/python scripts/bench/kfcpo.py fixture tests/fixtures/halfcheetah_cpo_epoch15.npz
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import gymnasium
import numpy as np
import torch

from algorithms.cpo import CPO, CPOConfig
from algorithms.kfcpo import KFCPO, KFCPOConfig
from safebench.cmdps import ContinuousTarget
from safebench.core.onpolicy import OnPolicyAlgorithm, Rollout
from safebench.core.rollout import Collector
from safebench.envs.factory import make_vector_env
from safebench.results.store import RunDir, load_runs
from safebench.training.bench import pin_threads

COST_LIMIT = 25.0
FIXTURE_ENV = "SafetyHalfCheetahVelocity-v1"
ROLLOUT_FIELDS = ("obs", "act", "logp", "adv_r", "adv_c", "target_r", "target_c")


def spaces(obs_dim: int, act_dim: int) -> tuple[gymnasium.spaces.Box, gymnasium.spaces.Box]:
    obs = gymnasium.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
    return obs, gymnasium.spaces.Box(-1.0, 1.0, (act_dim,), np.float32)


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """``(wall s, CPU s, result)`` of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, out


# ---- time ------------------------------------------------------------------------------------


def synthetic_epoch(algo: OnPolicyAlgorithm, n: int, obs_dim: int, seed: int = 0) -> Rollout:
    """One epoch of data: π's own actions, advantages correlated with actions and states."""
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, obs_dim)).astype(np.float32)
    act, logp = algo.rollout_policy().sample(obs, rng)
    a = np.asarray(act, dtype=np.float64)
    return Rollout(
        obs=obs,
        act=np.asarray(act),
        logp=np.asarray(logp, dtype=np.float32),
        adv_r=a[:, 0] + 0.5 * rng.normal(size=n),
        adv_c=a[:, -1] + 0.5 * obs[:, 0] + 0.5 * rng.normal(size=n),
        target_r=rng.normal(size=n),
        target_c=rng.normal(size=n),
        ep_cost=0.9 * COST_LIMIT,  # near the margin: both directions matter
        ep_ret=0.0,
    )


def measure(hidden: tuple[int, ...], n: int, obs_dim: int, act_dim: int) -> dict[str, Any]:
    obs_space, act_space = spaces(obs_dim, act_dim)

    def fresh_cpo() -> CPO:
        return CPO(
            obs_space, act_space, CPOConfig(hidden_sizes=hidden), cost_limit=COST_LIMIT, seed=0
        )

    def fresh_kfcpo(fit_critics: bool) -> KFCPO:
        algo = KFCPO(
            obs_space, act_space, KFCPOConfig(hidden_sizes=hidden), cost_limit=COST_LIMIT, seed=0
        )
        if not fit_critics:
            algo.critics.fit_minibatch = lambda *args, **kwargs: (0.0, 0.0)  # type: ignore[method-assign]
        return algo

    rollout = synthetic_epoch(fresh_cpo(), n, obs_dim)
    out: dict[str, Any] = {"hidden": list(hidden)}
    cpo = fresh_cpo()
    wall, cpu, info = timed(lambda: cpo.update_actor(cpo.prepare(rollout)))
    out.update(cpo_policy_wall=wall, cpo_policy_cpu=cpu, cpo_case=info["case"])
    cpo = fresh_cpo()
    out["cpo_full_wall"], out["cpo_full_cpu"], _ = timed(lambda: cpo.update(rollout))
    kfcpo = fresh_kfcpo(fit_critics=False)
    wall, cpu, info = timed(lambda: kfcpo.update_actor(kfcpo.prepare(rollout)))
    out.update(
        kfcpo_policy_wall=wall,
        kfcpo_policy_cpu=cpu,
        kfcpo_steps=info["actor_steps"],
        kfcpo_rollback_rate=info["rollback_rate"],
    )
    kfcpo = fresh_kfcpo(fit_critics=True)
    out["kfcpo_full_wall"], out["kfcpo_full_cpu"], _ = timed(lambda: kfcpo.update(rollout))
    return out


def time_command(args: argparse.Namespace) -> None:
    hiddens = [tuple(int(x) for x in h.split(",")) for h in (args.hidden or ["64,64", "256,256"])]
    results = []
    for hidden in hiddens:
        runs = [
            measure(hidden, args.samples, args.obs_dim, args.act_dim) for _ in range(args.repeats)
        ]
        row: dict[str, Any] = {"hidden": list(hidden)}
        for key, value in runs[0].items():
            if isinstance(value, float) and key.endswith(("_wall", "_cpu")):
                row[key] = statistics.median(r[key] for r in runs)
            elif key != "hidden":
                row[key] = value
        for kind in ("policy", "full"):
            for clock in ("wall", "cpu"):
                row[f"ratio_{kind}_{clock}"] = (
                    row[f"kfcpo_{kind}_{clock}"] / row[f"cpo_{kind}_{clock}"]
                )
        results.append(row)

    print(
        f"N={args.samples} obs={args.obs_dim} act={args.act_dim} threads={args.threads} "
        f"torch={torch.__version__} repeats={args.repeats} (median); times in s, ratio = KFCPO/CPO"
    )
    print(
        f"{'hidden':>10} {'CPO pol':>8} {'KFCPO pol':>9} {'ratio':>6} {'ratio cpu':>9} "
        f"{'CPO full':>8} {'KFCPO full':>10} {'ratio':>6} {'steps':>6} {'rollback':>8}"
    )
    for r in results:
        print(
            f"{'x'.join(map(str, r['hidden'])):>10} {r['cpo_policy_wall']:8.2f} "
            f"{r['kfcpo_policy_wall']:9.2f} {r['ratio_policy_wall']:6.2f} "
            f"{r['ratio_policy_cpu']:9.2f} {r['cpo_full_wall']:8.2f} {r['kfcpo_full_wall']:10.2f} "
            f"{r['ratio_full_wall']:6.2f} {r['kfcpo_steps']:6.0f} {r['kfcpo_rollback_rate']:8.3f}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


# ---- record / fixture ------------------------------------------------------------------------


def record_command(args: argparse.Namespace) -> None:
    venv = make_vector_env(FIXTURE_ENV, args.envs)
    cpo = CPO(
        venv.observation_space, venv.action_space, CPOConfig(), cost_limit=25.0, seed=args.seed
    )
    collector = Collector(venv, args.seed, window=cpo.config.ep_cost_window)
    for epoch in range(args.epochs):
        data, stats = collector.collect(cpo, args.steps)
        info = cpo.update(data)
        kl = info["kl"]
        print(f"epoch {epoch}: EpRet {stats.ep_ret:.1f} EpCost {stats.ep_cost:.2f} KL {kl:.4f}")
    data, stats = collector.collect(cpo, args.steps)
    venv.close()
    arrays = {name: np.asarray(getattr(data, name), dtype=np.float32) for name in ROLLOUT_FIELDS}
    actor = {f"actor/{k}": v.detach().cpu().numpy() for k, v in cpo.actor.state_dict().items()}
    np.savez_compressed(
        args.path,
        **arrays,
        **actor,
        ep_cost=np.float32(data.ep_cost),
        ep_ret=np.float32(data.ep_ret),
    )
    size = args.path.stat().st_size / 1e6
    print(f"recorded: EpRet {stats.ep_ret:.1f} EpCost {stats.ep_cost:.2f}")
    print(f"-> {args.path} ({size:.2f} MB)")


def load_fixture(path: Path) -> tuple[Rollout, dict[str, torch.Tensor]]:
    """The recorded rollout (float64 advantages/targets, as the collector makes them) and the
    state dict of the policy that collected it."""
    z = np.load(path)
    rollout = Rollout(
        **{
            k: z[k] if k in ("obs", "act", "logp") else z[k].astype(np.float64)
            for k in ROLLOUT_FIELDS
        },
        ep_cost=float(z["ep_cost"]),
        ep_ret=float(z["ep_ret"]),
    )
    actor = {k[len("actor/") :]: torch.as_tensor(z[k]) for k in z.files if k.startswith("actor/")}
    return rollout, actor


def fixture_command(args: argparse.Namespace) -> None:
    rollout, actor = load_fixture(args.path)
    if args.ep_cost is not None:
        rollout = Rollout(**{**rollout.__dict__, "ep_cost": args.ep_cost})
    obs_space, act_space = spaces(rollout.obs.shape[1], rollout.act.shape[1])
    cpo = CPO(obs_space, act_space, CPOConfig(), cost_limit=COST_LIMIT, seed=0)
    cpo.actor.load_state_dict(actor)
    wall, _, info = timed(lambda: cpo.update_actor(cpo.prepare(rollout)))
    cpo_gain = info["loss_r_before"] - info["loss_r_after"]
    print(
        f"Ĵc {rollout.ep_cost:.2f} (d = {COST_LIMIT}); CPO: case {info['case']:.0f}, "
        f"KL {info['kl']:.5f}, reward-surrogate gain {cpo_gain:.5f}, {wall:.2f} s"
    )
    overrides = json.loads(args.config)
    keys = ("rollback_rate", "kl", "kl_step", "kl_step_predicted", "kfac_predicted_kl", "w_c")
    print(
        f"KFCPO {overrides or 'defaults'}: seed "
        + " ".join(f"{k:>17}" for k in keys)
        + "  gain/CPO  time"
    )
    for seed in args.seeds:
        algo = KFCPO(
            obs_space, act_space, KFCPOConfig(**overrides), cost_limit=COST_LIMIT, seed=seed
        )
        algo.actor.load_state_dict(actor)
        batch = algo.prepare(rollout)
        wall, _, info = timed(lambda: algo.update_actor(batch))  # noqa: B023 (called at once)
        gain = info.get("surrogate_gain", math.nan) / cpo_gain if cpo_gain > 0 else math.nan
        values = " ".join(f"{info.get(k, float('nan')):17.5f}" for k in keys)
        print(f"{'':>36}{seed:>4} {values} {gain:9.3f} {wall:5.2f}")


def grid_command(args: argparse.Namespace) -> None:
    """The λ × k grid of experiments/kfcpo_sensitivity.yaml as Markdown tables: per CMDP,
    medians over seeds of the training Ĵc/d (last ``--tail`` epochs) and of the final
    deterministic evaluation return over the best return achievable at that Ĵc."""
    frame = load_runs(args.results)
    cells: dict[tuple[str, float, float], list[tuple[float, float]]] = {}
    for run_dir, run in frame.groupby("run_dir"):
        if run["status"].iloc[0] != "done":
            continue
        spec = RunDir(Path(str(run_dir))).read_spec()
        cfg, limit = spec["config"], float(spec["cost_limit"])
        cost = float(run["ep_cost"].iloc[-args.tail :].mean())
        optimum = ContinuousTarget(**spec["env_kwargs"]).optimum(cost).ret
        ret = float(run["eval_ret"].dropna().iloc[-1])
        key = (spec["env_id"], cfg["margin_lambda"], cfg["margin_k"])
        cells.setdefault(key, []).append((cost / limit, ret / optimum))
    lines = [
        f"Medians over seeds: training Ĵc/d over the last {args.tail} epochs / final "
        "deterministic return ÷ the best return at that Ĵc (ContinuousTarget.optimum). "
        "Bold: feasible (Ĵc ≤ 1.05·d) and on the frontier (≥ 0.9).",
        "",
    ]
    for env in sorted({key[0] for key in cells}):
        lams = sorted({key[1] for key in cells if key[0] == env})
        ks = sorted({key[2] for key in cells if key[0] == env})
        lines += [f"**{env}**", "", "| λ \\ k | " + " | ".join(f"{k:g}" for k in ks) + " |"]
        lines.append("|---" * (len(ks) + 1) + "|")
        for lam in lams:
            row = []
            for k in ks:
                values = np.asarray(cells.get((env, lam, k), [(math.nan, math.nan)]))
                cost, ratio = np.median(values[:, 0]), np.median(values[:, 1])
                text = f"{cost:.2f} / {ratio:.2f}"
                row.append(f"**{text}**" if cost <= 1.05 and ratio >= 0.9 else text)
            lines.append(f"| {lam:g} | " + " | ".join(row) + " |")
        lines.append("")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    sub = parser.add_subparsers(dest="command", required=True)
    p_time = sub.add_parser("time", help="update time per epoch, synthetic batch")
    p_time.add_argument("--hidden", action="append", help="hidden sizes, e.g. 64,64 (repeatable)")
    p_time.add_argument("--samples", type=int, default=20_000)
    p_time.add_argument("--obs-dim", type=int, default=60)
    p_time.add_argument("--act-dim", type=int, default=2)
    p_time.add_argument("--repeats", type=int, default=3)
    p_time.add_argument("--json", type=Path, help="also write the results here")
    p_record = sub.add_parser("record", help="record the HalfCheetah fixture")
    p_record.add_argument("path", type=Path)
    p_record.add_argument("--epochs", type=int, default=15, help="CPO epochs before recording")
    p_record.add_argument("--steps", type=int, default=20_000)
    p_record.add_argument("--envs", type=int, default=10)
    p_record.add_argument("--seed", type=int, default=0)
    p_fixture = sub.add_parser("fixture", help="KFCPO vs CPO on a recorded batch")
    p_fixture.add_argument("path", type=Path)
    p_fixture.add_argument("--config", default="{}", help="KFCPO config overrides (JSON)")
    p_fixture.add_argument("--ep-cost", type=float, help="replace the recorded Ĵc")
    p_fixture.add_argument(
        "--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2]
    )
    p_grid = sub.add_parser("grid", help="summarise experiments/kfcpo_sensitivity.yaml")
    p_grid.add_argument("results", type=Path, help="e.g. results/kfcpo-sensitivity")
    p_grid.add_argument("--tail", type=int, default=10, help="epochs averaged for Ĵc")
    p_grid.add_argument("--out", type=Path, help="also write the Markdown here")
    args = parser.parse_args()
    pin_threads(args.threads)
    commands = {"time": time_command, "record": record_command, "fixture": fixture_command}
    {**commands, "grid": grid_command}[args.command](args)


if __name__ == "__main__":
    main()
