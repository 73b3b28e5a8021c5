"""How much of a clipped-ratio pass the critic step costs: the bound on skipping the cost critic.

OmniSafe's PPO fits no cost critic (``use_cost: False``); the official PPO, and safebench's,
fits one. This script measures, per method, one minibatch pass of the actor update
(``update_actor`` with one pass and no early stop: the actor step plus, inside it, the critic
step of every minibatch) and the critic steps alone over the same minibatches, on a 20000-row
batch of HalfCheetah's shapes (obs 17, act 6), in thread CPU time (so other jobs on the cores
inflate neither). A method that skipped the cost critic would save at most the cost head's part
of the critic step, which is at most the whole critic share::

    .venv/bin/python scripts/bench/critic_share.py [--algo ppo ppo-lag] [--rounds 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import gymnasium
import numpy as np
import torch

from safebench import registry
from safebench.core.onpolicy import OnPolicyAlgorithm
from scripts.bench.update import synthetic_rollout


def measure(name: str, variant: str, rows: int, rounds: int) -> tuple[float, float, int]:
    """Median thread-CPU seconds of one pass and of its critic steps alone; minibatch count."""
    obs_space = gymnasium.spaces.Box(-np.inf, np.inf, (17,), np.float32)
    act_space = gymnasium.spaces.Box(-1.0, 1.0, (6,), np.float32)
    entry = registry.get(name)
    config = registry.resolve_config(
        name, {"variant": variant, "update_iters": 1, "kl_early_stop": False}
    )
    algo = entry.cls(obs_space, act_space, config, cost_limit=25.0, seed=0)
    assert isinstance(algo, OnPolicyAlgorithm)
    batch = algo.prepare(synthetic_rollout(algo, rows, 17))
    minibatches = list(algo.minibatches(len(batch), config.batch_size))  # type: ignore[attr-defined]
    whole, critic = [], []
    for _ in range(rounds + 1):  # the first round warms up and is dropped
        t0 = time.thread_time()
        algo.update_actor(batch)
        whole.append(time.thread_time() - t0)
        t0 = time.thread_time()
        for idx in minibatches:
            algo.critic_step(batch, idx)
        critic.append(time.thread_time() - t0)
    return statistics.median(whole[1:]), statistics.median(critic[1:]), len(minibatches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--algo", nargs="+", default=["ppo", "ppo-lag"])
    parser.add_argument("--variant", default="official")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--rows", type=int, default=20_000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"one pass over {args.rows} rows (HalfCheetah shapes), 1 thread, thread CPU time")
    header = ("algo", "pass ms", "µs/minibatch", "critic µs", "critic share")
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, (10, 8, 13, 10, 13), strict=True)))
    for name in args.algo:
        whole, critic, n = measure(name, args.variant, args.rows, args.rounds)
        print(
            f"{name:>10} {whole * 1e3:8.1f} {whole / n * 1e6:13.0f} {critic / n * 1e6:10.0f} "
            f"{critic / whole:13.2f}"
        )


if __name__ == "__main__":
    main()
