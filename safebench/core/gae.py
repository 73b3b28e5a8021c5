"""Generalised advantage estimation over time-major rollouts of ``N`` parallel environments.

Used for both the reward and the cost stream (OmniSafe computes GAE(γ, λ) for rewards and
GAE(γ_c, λ_c) for costs with the same estimator).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]


def gae(
    rewards: npt.ArrayLike,
    values: npt.ArrayLike,
    next_values: npt.ArrayLike,
    terminated: npt.ArrayLike,
    ends: npt.ArrayLike,
    gamma: float,
    lam: float,
) -> tuple[F64, F64]:
    """GAE(γ, λ) advantages and OmniSafe's value targets.

    All inputs have shape ``(T, N)`` (time-major, ``N`` parallel envs) or ``(T,)``:

    * ``values[t] = V(s_t)``;
    * ``next_values[t] = V(s_{t+1})``: inside an episode the value of the next observation; at a
      time-out (truncation) the value of the *final* observation (bootstrap); at the last
      rollout step the value of the observation the rollout stopped at. Ignored (taken as 0)
      where ``terminated[t]``, so it may hold anything there, NaN included;
    * ``terminated[t]``: the episode ended at ``t`` in a terminal state;
    * ``ends[t]``: the episode ended at ``t`` (terminated or truncated), which cuts the
      recursion. The end of the rollout cuts it implicitly.

    Recursion, backwards in ``t`` for all envs at once:

        δ_t = r_t + γ (1 - terminated_t) next_values_t - values_t
        A_t = δ_t + γ λ (1 - ends_t) A_{t+1},      A_T = 0
        returns_t = A_t + values_t

    ``returns`` is OmniSafe's ``'gae'`` value target (``target_value = adv + values``), i.e. the
    λ-return. With ``next_values[t] = values[t+1]`` inside episodes this equals OmniSafe's
    per-path ``finish_path`` computation (``last_value`` = 0 on termination, V(final obs) on
    time-out, V(next obs) at the epoch cut).

    Returns:
        ``(advantages, returns)``, float64, same shape as ``rewards``.
    """
    r = np.asarray(rewards, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    nv = np.asarray(next_values, dtype=np.float64)
    term = np.asarray(terminated, dtype=bool)
    end = np.asarray(ends, dtype=bool)
    for name, arr in (("values", v), ("next_values", nv), ("terminated", term), ("ends", end)):
        if arr.shape != r.shape:
            raise ValueError(f"{name} has shape {arr.shape}, rewards has {r.shape}")
    if r.ndim not in (1, 2):
        raise ValueError(f"expected arrays of shape (T,) or (T, N), got {r.shape}")
    if np.any(term & ~end):
        raise ValueError("every terminated step must also be marked in `ends`")

    # np.where rather than a (1 - terminated) factor, so that a NaN placeholder in next_values
    # at terminal steps cannot leak into the advantages.
    deltas = r + gamma * np.where(term, 0.0, nv) - v
    carry = np.where(end, 0.0, gamma * lam)
    adv = np.empty_like(deltas)
    last = np.zeros(deltas.shape[1:], dtype=np.float64)
    for t in range(deltas.shape[0] - 1, -1, -1):
        last = deltas[t] + carry[t] * last
        adv[t] = last
    return adv, adv + v


def standardize(x: npt.ArrayLike, eps: float = 1e-8) -> F64:
    """``(x - mean(x)) / (std(x) + eps)`` over all elements, population std (ddof = 0).

    OmniSafe applies this to the reward advantages (``standardized_rew_adv``).
    """
    arr = np.asarray(x, dtype=np.float64)
    return (arr - arr.mean()) / (arr.std() + eps)


def centre(x: npt.ArrayLike) -> F64:
    """``x - mean(x)``; OmniSafe's ``standardized_cost_adv`` only centres the cost advantages."""
    arr = np.asarray(x, dtype=np.float64)
    return arr - arr.mean()
