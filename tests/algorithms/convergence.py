"""Shared harness: train an algorithm on a built-in CMDP and compare with the known optimum.

Runs go through the real runner (``safebench.runner.run``), several seeds in parallel
processes (one torch thread each), so the numbers are those a user gets.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Outcome:
    seed: int
    train_ret: float  # mean training EpRet of the last `tail` epochs
    train_cost: float  # mean training EpCost (Ĵc) of the last `tail` epochs
    eval_ret: float  # final deterministic evaluation return
    eval_cost: float
    regret: float  # Σ_epochs max(0, Ĵc − d)


def _train(args: tuple[str, dict[str, Any], str, int, int, int, int, int]) -> Outcome:
    algo, overrides, env_id, seed, epochs, steps_per_epoch, num_envs, tail = args
    import torch

    from safebench import registry
    from safebench.cmdps import BUILTIN_CMDPS
    from safebench.runner import metrics_frame, run
    from safebench.spec import EvalSpec, RunSpec

    torch.set_num_threads(1)
    limit = BUILTIN_CMDPS[env_id].default_cost_limit
    spec = RunSpec(
        algo=algo,
        config=registry.resolve_config(algo, overrides).model_dump(mode="json"),
        env_id=env_id,
        seed=seed,
        budget=epochs * steps_per_epoch,
        steps_per_epoch=steps_per_epoch,
        cost_limit=limit,
        eval=EvalSpec(episodes=50, every_epochs=epochs),
        num_envs=num_envs,
        device="cpu",
    )
    with tempfile.TemporaryDirectory() as tmp:
        frame = metrics_frame(run(spec, Path(tmp)))
    last = frame.iloc[-tail:]
    return Outcome(
        seed=seed,
        train_ret=float(last["ep_ret"].mean()),
        train_cost=float(last["ep_cost"].mean()),
        eval_ret=float(frame["eval_ret"].iloc[-1]),
        eval_cost=float(frame["eval_cost"].iloc[-1]),
        regret=float(np.clip(frame["ep_cost"] - limit, 0, None).sum()),
    )


def train_seeds(
    algo: str,
    env_id: str,
    overrides: dict[str, Any] | None = None,
    *,
    seeds: tuple[int, ...] = (0, 1, 2),
    epochs: int = 40,
    steps_per_epoch: int = 2000,
    num_envs: int = 4,
    tail: int = 5,
) -> list[Outcome]:
    """Train ``algo`` on ``env_id`` once per seed, two processes at a time."""
    jobs = [
        (algo, overrides or {}, env_id, s, epochs, steps_per_epoch, num_envs, tail) for s in seeds
    ]
    workers = min(len(jobs), max(1, (os.cpu_count() or 2)))
    # spawn, not fork: the test process may already run torch/OpenMP threads.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        return list(pool.map(_train, jobs))
