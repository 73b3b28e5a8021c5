"""What a time-out's bootstrap value is worth: V(raw final observation) against V(normalised).

The official C-TRPO code bootstraps a time-out from the critic at the env's *raw* final
observation (``truncation_bootstrap: raw``), while its critic is fitted on normalised ones.
For each run given, this loads its checkpoint (policy, critics, normaliser), steps ``--envs``
envs with the stochastic policy until every one has ended an episode, and prints, over the
episodes that ended by time-out, the mean reward critic value at the raw final observation and
at the same observation normalised, and the mean reward per step of the last 100 steps
(r̄ / (1 − γ) is the value a long running episode is worth).

    .venv/bin/python scripts/analysis/bootstrap_values.py RUN_DIR [RUN_DIR ...] [--envs 10]

A raw value far below the normalised one means every time-out is undervalued, which pulls down
the advantages of each episode's last steps (the GAE carries it back by (γλ)^k).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from safebench.envs.factory import make_vector_env
from safebench.results.store import RunDir
from safebench.schema.spec import RunSpec
from safebench.training.runner import load_policy


def bootstrap_values(run: Path, envs: int = 10, seed: int = 123) -> dict[str, Any]:
    """Mean V_r at the raw and the normalised final observation of time-outs, and the
    last 100 steps' mean reward, for the run at ``run`` (from its checkpoint)."""
    run_dir = RunDir(run)
    spec = RunSpec.from_record(run_dir.read_spec())
    venv = make_vector_env(spec.env_id, envs)
    try:
        algo, collector, _ = load_policy(spec, run_dir.checkpoint, venv)
        policy = algo.rollout_policy()  # type: ignore[attr-defined]
        rng = np.random.default_rng(seed)
        raw = venv.reset(seed)
        ended = np.zeros(envs, dtype=bool)
        finals: list[np.ndarray] = []
        rewards: list[np.ndarray] = []
        while not ended.all():
            action, _ = policy.sample(collector.normalize(raw), rng)
            raw, rew, _, term, trunc, final = venv.step(collector.action_map(action))
            rewards.append(rew)
            for i in np.flatnonzero((trunc & ~term) & ~ended):
                finals.append(final[i])
            ended |= term | trunc
    finally:
        venv.close()
    out: dict[str, Any] = {
        "run": str(run),
        "timeouts": len(finals),
        "reward_per_step": float(np.mean(rewards[-100:])),
        "gamma": float(getattr(algo.config, "gamma", float("nan"))),
    }
    if finals:
        batch = np.stack(finals).astype(np.float32)
        out["v_raw"] = float(algo.values(batch)[0].mean())  # type: ignore[attr-defined]
        out["v_normalised"] = float(algo.values(collector.normalize(batch))[0].mean())  # type: ignore[attr-defined]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--envs", type=int, default=10)
    args = parser.parse_args()
    for run in args.runs:
        row = bootstrap_values(run, args.envs)
        scale = row["reward_per_step"] / (1.0 - row["gamma"])
        print(
            f"{run}: {row['timeouts']} time-outs  V(raw final) {row.get('v_raw', float('nan')):.1f}"
            f"  V(normalised final) {row.get('v_normalised', float('nan')):.1f}"
            f"  r̄ {row['reward_per_step']:.2f} (r̄/(1-γ) {scale:.0f})"
        )


if __name__ == "__main__":
    main()
