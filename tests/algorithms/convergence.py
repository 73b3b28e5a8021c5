"""Shared harness: train an algorithm on a built-in CMDP and compare with the known optimum.

Runs go through the real runner (``safebench.training.runner.run``), several seeds in parallel
processes (``SAFEBENCH_TEST_THREADS`` torch threads each, default 1), so the numbers are those
a user gets. Tests assert on statistics over seeds (``tests/learning.py``): a single seed's
trajectory differs from one CPU to another, the median over seeds much less.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tests.learning import torch_threads


@dataclass(frozen=True)
class Outcome:
    seed: int
    train_ret: float  # mean training EpRet of the last `tail` epochs
    train_cost: float  # mean training EpCost (Ĵc) of the last `tail` epochs
    eval_ret: float  # final evaluation return (deterministic unless the test says otherwise)
    eval_cost: float
    regret: float  # Σ_epochs max(0, Ĵc − d)
    frame: pd.DataFrame = field(repr=False, compare=False)  # the run's metrics, one row/epoch


@dataclass(frozen=True)
class _Job:
    algo: str
    overrides: dict[str, Any]
    env_id: str
    seed: int
    epochs: int
    steps_per_epoch: int
    num_envs: int
    tail: int
    eval_episodes: int
    eval_every: int
    env_kwargs: dict[str, Any]
    cost_limit: float | None


def _train(job: _Job) -> Outcome:
    import torch

    from safebench import registry
    from safebench.cmdps import BUILTIN_CMDPS
    from safebench.schema.spec import EvalSpec, RunSpec
    from safebench.training.runner import metrics_frame, run
    from tests.learning import torch_threads

    torch.set_num_threads(torch_threads())
    limit = job.cost_limit
    if limit is None:
        limit = BUILTIN_CMDPS[job.env_id].default_cost_limit
    spec = RunSpec(
        algo=job.algo,
        config=registry.resolve_config(job.algo, job.overrides).model_dump(mode="json"),
        env_id=job.env_id,
        env_kwargs=job.env_kwargs,
        seed=job.seed,
        budget=job.epochs * job.steps_per_epoch,
        steps_per_epoch=job.steps_per_epoch,
        cost_limit=limit,
        eval=EvalSpec(episodes=job.eval_episodes, every_epochs=job.eval_every or job.epochs),
        num_envs=job.num_envs,
        device="cpu",
    )
    with tempfile.TemporaryDirectory() as tmp:
        frame = metrics_frame(run(spec, Path(tmp)))
    last = frame.iloc[-job.tail :]
    return Outcome(
        seed=job.seed,
        train_ret=float(last["ep_ret"].mean()),
        train_cost=float(last["ep_cost"].mean()),
        eval_ret=float(frame["eval_ret"].iloc[-1]),
        eval_cost=float(frame["eval_cost"].iloc[-1]),
        regret=float(np.clip(frame["ep_cost"] - limit, 0, None).sum()),
        frame=frame,
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
    eval_episodes: int = 50,
    eval_every: int = 0,
    env_kwargs: dict[str, Any] | None = None,
    cost_limit: float | None = None,
) -> list[Outcome]:
    """Train ``algo`` on ``env_id`` once per seed, in parallel processes (cores ÷ threads).

    ``eval_every`` = 0 evaluates once, after the last epoch. ``env_kwargs`` configure the env
    (e.g. ``{"horizon": 100}``); ``cost_limit`` defaults to the built-in's own.
    """
    jobs = [
        _Job(
            algo,
            overrides or {},
            env_id,
            s,
            epochs,
            steps_per_epoch,
            num_envs,
            tail,
            eval_episodes,
            eval_every,
            env_kwargs or {},
            cost_limit,
        )
        for s in seeds
    ]
    # As many seeds at once as the cores hold at the tests' thread count: more would
    # oversubscribe the cores (OpenMP threads spin-wait), and a 2-thread run on 2 cores took
    # over 15 minutes for one test instead of ~3.
    workers = min(len(jobs), max(1, len(os.sched_getaffinity(0)) // torch_threads()))
    # spawn, not fork: the test process may already run torch/OpenMP threads.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        return list(pool.map(_train, jobs))
