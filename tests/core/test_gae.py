"""Tests for safebench.core.gae."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import numpy as np
import pytest
import torch

from safebench.core.gae import centre, gae, standardize

GAMMA, LAM = 0.99, 0.95


def _rollout(t_len: int, n_envs: int, seed: int) -> dict[str, np.ndarray]:
    """Random rollout with terminations, truncations and an epoch cut at the end.

    ``next_values`` follows the collector's contract: ``values[t+1]`` inside an episode, the
    value of the final observation at a truncation, NaN (must be ignored) at a termination,
    and a bootstrap value at the last step.
    """
    rng = np.random.default_rng(seed)
    rewards = rng.normal(size=(t_len, n_envs))
    values = rng.normal(size=(t_len, n_envs))
    terminated = rng.random((t_len, n_envs)) < 0.08
    truncated = (rng.random((t_len, n_envs)) < 0.08) & ~terminated
    ends = terminated | truncated
    next_values = np.empty_like(values)
    next_values[:-1] = values[1:]
    next_values[-1] = rng.normal(size=n_envs)
    final_obs_values = rng.normal(size=(t_len, n_envs))
    next_values[truncated] = final_obs_values[truncated]
    next_values[terminated] = np.nan
    return {
        "rewards": rewards,
        "values": values,
        "next_values": next_values,
        "terminated": terminated,
        "truncated": truncated,
        "ends": ends,
    }


def _reference_per_episode(ro: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Plain-Python GAE: split each env's stream into paths, finish every path on its own.

    Mirrors OmniSafe's ``finish_path``: append ``last_value`` (0 if terminated, V(final obs) if
    truncated, V(next obs) at the rollout cut) and use ``values[t+1]`` inside the path.
    """
    t_len, n_envs = ro["rewards"].shape
    adv = np.zeros((t_len, n_envs))
    for n in range(n_envs):
        start = 0
        for t in range(t_len):
            if not (ro["ends"][t, n] or t == t_len - 1):
                continue
            last_value = 0.0 if ro["terminated"][t, n] else float(ro["next_values"][t, n])
            path_values = [float(v) for v in ro["values"][start : t + 1, n]] + [last_value]
            path_rewards = [float(r) for r in ro["rewards"][start : t + 1, n]]
            deltas = [
                path_rewards[k] + GAMMA * path_values[k + 1] - path_values[k]
                for k in range(len(path_rewards))
            ]
            running = 0.0
            for k in reversed(range(len(deltas))):
                running = deltas[k] + GAMMA * LAM * running
                adv[start + k, n] = running
            start = t + 1
    return adv, adv + ro["values"]


@pytest.mark.parametrize(("n_envs", "seed"), [(1, 0), (3, 1), (3, 2)])
def test_gae_matches_per_episode_reference(n_envs: int, seed: int) -> None:
    ro = _rollout(60, n_envs, seed)
    assert ro["terminated"].any() and ro["truncated"].any()
    adv, ret = gae(
        ro["rewards"], ro["values"], ro["next_values"], ro["terminated"], ro["ends"], GAMMA, LAM
    )
    ref_adv, ref_ret = _reference_per_episode(ro)
    assert adv.shape == (60, n_envs) and adv.dtype == np.float64
    assert np.isfinite(adv).all()
    np.testing.assert_allclose(adv, ref_adv, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ret, ref_ret, rtol=1e-12, atol=1e-12)


def test_gae_accepts_one_dimensional_input() -> None:
    ro = _rollout(30, 1, 4)
    adv_2d, ret_2d = gae(
        ro["rewards"], ro["values"], ro["next_values"], ro["terminated"], ro["ends"], GAMMA, LAM
    )
    col = {k: v[:, 0] for k, v in ro.items()}
    adv_1d, ret_1d = gae(
        col["rewards"],
        col["values"],
        col["next_values"],
        col["terminated"],
        col["ends"],
        GAMMA,
        LAM,
    )
    np.testing.assert_array_equal(adv_1d, adv_2d[:, 0])
    np.testing.assert_array_equal(ret_1d, ret_2d[:, 0])


def test_gae_small_hand_computed_case() -> None:
    # Env 0: episode terminates at t=1, new episode cut by the rollout end at t=2.
    # Env 1: truncated at t=0 (bootstrap 10), then a path cut at t=2 (bootstrap 4).
    rewards = np.array([[1.0, 1.0], [2.0, 0.0], [3.0, 1.0]])
    values = np.array([[0.5, 2.0], [1.0, 1.0], [2.0, 3.0]])
    next_values = np.array([[1.0, 10.0], [np.nan, 3.0], [5.0, 4.0]])
    terminated = np.array([[False, False], [True, False], [False, False]])
    ends = np.array([[False, True], [True, False], [False, False]])
    g, lam = 0.5, 0.5
    adv, ret = gae(rewards, values, next_values, terminated, ends, g, lam)
    d = {
        (0, 0): 1.0 + g * 1.0 - 0.5,
        (1, 0): 2.0 - 1.0,
        (2, 0): 3.0 + g * 5.0 - 2.0,
        (0, 1): 1.0 + g * 10.0 - 2.0,
        (1, 1): 0.0 + g * 3.0 - 1.0,
        (2, 1): 1.0 + g * 4.0 - 3.0,
    }
    expected = np.array(
        [
            [d[0, 0] + g * lam * d[1, 0], d[0, 1]],
            [d[1, 0], d[1, 1] + g * lam * d[2, 1]],
            [d[2, 0], d[2, 1]],
        ]
    )
    np.testing.assert_allclose(adv, expected, rtol=1e-15)
    np.testing.assert_allclose(ret, expected + values, rtol=1e-15)


def test_gae_matches_omnisafe_finish_path_on_one_episode(
    omnisafe_module: Callable[[str], ModuleType],
) -> None:
    discount_cumsum = omnisafe_module("utils/math.py").discount_cumsum
    rng = np.random.default_rng(5)
    t_len = 40
    rewards = rng.normal(size=t_len).astype(np.float32)
    values = rng.normal(size=t_len).astype(np.float32)
    last_value = np.float32(0.7)  # a time-out: bootstrap from the final observation
    # OmniSafe OnPolicyBuffer.finish_path + _calculate_adv_and_value_targets('gae').
    r = torch.cat([torch.from_numpy(rewards), torch.tensor([last_value])])
    v = torch.cat([torch.from_numpy(values), torch.tensor([last_value])])
    deltas = r[:-1] + GAMMA * v[1:] - v[:-1]
    ref_adv = discount_cumsum(deltas, GAMMA * LAM)
    ref_target = ref_adv + v[:-1]

    next_values = np.append(values[1:], last_value)
    ends = np.zeros(t_len, dtype=bool)
    ends[-1] = True
    adv, ret = gae(rewards, values, next_values, np.zeros(t_len, bool), ends, GAMMA, LAM)
    np.testing.assert_allclose(adv, ref_adv.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ret, ref_target.numpy(), rtol=1e-5, atol=1e-5)


def test_gae_validates_inputs() -> None:
    z = np.zeros((4, 2))
    with pytest.raises(ValueError, match="next_values"):
        gae(z, z, np.zeros((4, 3)), z.astype(bool), z.astype(bool), GAMMA, LAM)
    term = np.zeros((4, 2), bool)
    term[1, 0] = True
    with pytest.raises(ValueError, match="ends"):
        gae(z, z, z, term, np.zeros((4, 2), bool), GAMMA, LAM)


def test_standardize_and_centre() -> None:
    x = np.array([1.0, 2.0, 3.0, 4.0])
    # mean 2.5, population std sqrt(1.25)
    np.testing.assert_allclose(standardize(x), (x - 2.5) / (np.sqrt(1.25) + 1e-8), rtol=1e-15)
    np.testing.assert_allclose(centre(x), [-1.5, -0.5, 0.5, 1.5], rtol=1e-15)
    big = np.random.default_rng(0).normal(3.0, 7.0, size=(50, 4))
    s = standardize(big)
    assert s.shape == (50, 4)
    assert abs(s.mean()) < 1e-12 and abs(s.std() - 1.0) < 1e-8
    # A constant array: eps keeps the result finite (all zeros).
    np.testing.assert_array_equal(standardize(np.full(5, 2.0)), np.zeros(5))
