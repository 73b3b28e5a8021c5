"""KFCPO's policy update per epoch against CPO's conjugate-gradient update, same batch and net.

One synthetic epoch (20000 samples, obs 60, act 2 by default; actions sampled from the policy,
advantages correlated with them) is given to a fresh CPO and a fresh KFCPO with the same
actor architecture and seed, for each hidden-layer setting. Timed per epoch:

* CPO ``update_actor``: two gradients, two CG(15) solves with double-backprop Fisher-vector
  products on all samples, the CPO dual and the backtracking line search;
* KFCPO policy update: ``update_iters × ⌈N / batch_size⌉`` minibatch steps (K-FAC statistics,
  eigendecompositions every T_f steps, two natural gradients, projection, ν, KL rollback test).
  KFCPO fits its critics inside the same loop; that regression is the same work CPO does after
  its actor step, so it is switched off for this column and both full ``update()`` calls
  (actor + critics) are reported as well.

Wall-clock and process CPU time are both reported (CPU time is robust to other load on a shared
machine; with one thread the two agree on an idle one). Median over ``--repeats``.

    .venv/bin/python scripts/bench_kfcpo.py [--hidden 64,64 --hidden 256,256] [--repeats 3]
        [--samples 20000] [--threads 1] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
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
from safebench.bench import pin_threads
from safebench.core.onpolicy import OnPolicyAlgorithm, Rollout

COST_LIMIT = 25.0


def spaces(obs_dim: int, act_dim: int) -> tuple[gymnasium.spaces.Box, gymnasium.spaces.Box]:
    obs = gymnasium.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
    return obs, gymnasium.spaces.Box(-1.0, 1.0, (act_dim,), np.float32)


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
        ep_cost=0.9 * COST_LIMIT,  # near the margin: both directions matter (w_c ≈ 0.6)
        ep_ret=0.0,
    )


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """``(wall s, CPU s, result)`` of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, out


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
        kfcpo_refreshes=info["kfac_refreshes"],
    )
    kfcpo = fresh_kfcpo(fit_critics=True)
    out["kfcpo_full_wall"], out["kfcpo_full_cpu"], _ = timed(lambda: kfcpo.update(rollout))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", action="append", help="hidden sizes, e.g. 64,64 (repeatable)")
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--obs-dim", type=int, default=60)
    parser.add_argument("--act-dim", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    pin_threads(args.threads)
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
    header = (
        f"{'hidden':>10} {'CPO pol':>8} {'KFCPO pol':>9} {'ratio':>6} {'ratio cpu':>9} "
        f"{'CPO full':>8} {'KFCPO full':>10} {'ratio':>6} {'steps':>6} {'rollback':>8}"
    )
    print(header)
    for r in results:
        print(
            f"{'x'.join(map(str, r['hidden'])):>10} {r['cpo_policy_wall']:8.2f} "
            f"{r['kfcpo_policy_wall']:9.2f} {r['ratio_policy_wall']:6.2f} "
            f"{r['ratio_policy_cpu']:9.2f} {r['cpo_full_wall']:8.2f} {r['kfcpo_full_wall']:10.2f} "
            f"{r['ratio_full_wall']:6.2f} {r['kfcpo_steps']:6.0f} {r['kfcpo_rollback_rate']:8.3f}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
