"""Synthetic on-policy batches for algorithm tests (no environment needed)."""

from __future__ import annotations

import gymnasium
import numpy as np

from safebench.core.onpolicy import OnPolicyAlgorithm, Rollout

OBS_DIM = 3
ACT_DIM = 2


def box_spaces() -> tuple[gymnasium.spaces.Box, gymnasium.spaces.Box]:
    obs = gymnasium.spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32)
    act = gymnasium.spaces.Box(-1.0, 1.0, (ACT_DIM,), np.float32)
    return obs, act


def discrete_spaces() -> tuple[gymnasium.spaces.Box, gymnasium.spaces.Discrete]:
    obs = gymnasium.spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32)
    return obs, gymnasium.spaces.Discrete(3)


def synthetic_rollout(
    algo: OnPolicyAlgorithm, n: int = 256, ep_cost: float = 10.0, seed: int = 0
) -> Rollout:
    """Actions sampled from the algorithm's own policy (so ``logp`` is π_k's); advantages and
    value targets are random but correlated with the actions, so the surrogates have a
    non-trivial gradient."""
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, OBS_DIM)).astype(np.float32)
    act, logp = algo.rollout_policy().sample(obs, rng)
    a = np.asarray(act, dtype=np.float64).reshape(n, -1)
    adv_r = a[:, 0] + 0.5 * rng.normal(size=n)
    adv_c = a[:, -1] + 0.5 * obs[:, 0] + 0.5 * rng.normal(size=n)
    return Rollout(
        obs=obs,
        act=np.asarray(act),
        logp=np.asarray(logp, dtype=np.float32),
        adv_r=adv_r,
        adv_c=adv_c,
        target_r=rng.normal(size=n),
        target_c=rng.normal(size=n),
        ep_cost=ep_cost,
        ep_ret=0.0,
    )
