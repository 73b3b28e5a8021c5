"""Throughput measurement shared by the benchmark scripts.

A training run's speed is only meaningful relative to the environment it steps: safebench
reports training env-steps/s divided by the raw env step rate measured in the same process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from safebench.envs.factory import CMDPEnv, make_env


@dataclass(frozen=True)
class EnvRate:
    env_id: str
    steps: int
    episodes: int
    seconds: float

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.seconds


def raw_env_rate(
    env_id: str,
    steps: int = 5000,
    seed: int = 0,
    *,
    env: CMDPEnv | None = None,
    **env_kwargs: Any,
) -> EnvRate:
    """Random-action step rate of one env, episode resets included (as training pays them).

    Actions are pre-sampled so that only ``env.step``/``env.reset`` are timed. ``env_kwargs``
    go to :func:`make_env` (``fast=False``: stock Safety-Gymnasium); or time an existing
    ``env`` (left open).
    """
    own = env is None
    if env is None:
        env = make_env(env_id, **env_kwargs)
    env.reset(seed=seed)  # the first reset builds the world; training pays it once too
    env.action_space.seed(seed)
    actions = [env.action_space.sample() for _ in range(steps)]
    episodes = 0
    start = time.perf_counter()
    for action in actions:
        *_, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            episodes += 1
            env.reset()
    seconds = time.perf_counter() - start
    if own:
        env.close()
    return EnvRate(env_id, steps, episodes, seconds)


def pin_threads(n: int = 1) -> None:
    """Pin torch and BLAS to ``n`` threads so a measurement uses ``n`` cores."""
    import torch

    torch.set_num_threads(n)
    np.seterr(all="ignore")
