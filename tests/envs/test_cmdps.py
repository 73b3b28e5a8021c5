"""Tests for the built-in CMDPs: the claimed optima are checked against independent brute-force
solutions and against Monte-Carlo rollouts in the environments themselves."""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Callable

import numpy as np
import pytest
from numpy.typing import NDArray

from safebench.cmdps import BUILTIN_CMDPS, BuiltinCMDP, ContinuousTarget, Optimum, TabularCMDP

M2 = 13.0 / 12.0  # E[s²] for s ~ U[0.5, 1.5]


def rollout_stats(
    env: BuiltinCMDP,
    act: Callable[[NDArray[np.float32]], object],
    episodes: int,
    seed: int,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.int64]]:
    """Per-episode undiscounted return, cost and length of policy ``act`` in ``env``."""
    rets, costs, lengths = np.zeros(episodes), np.zeros(episodes), np.zeros(episodes, np.int64)
    obs, _ = env.reset(seed=seed)
    for ep in range(episodes):
        ret = cost = 0.0
        n = 0
        while True:
            obs, r, c, terminated, truncated, _ = env.step(act(obs))
            ret += r
            cost += c
            n += 1
            if terminated or truncated:
                break
        rets[ep], costs[ep], lengths[ep] = ret, cost, n
        obs, _ = env.reset()
    return rets, costs, lengths


def assert_mc_close(samples: NDArray[np.float64], expected: float) -> None:
    """Sample mean within 4 standard errors of the expected value (seeded, so not flaky)."""
    se = samples.std(ddof=1) / math.sqrt(samples.size)
    assert abs(samples.mean() - expected) <= 4.0 * se, (samples.mean(), expected, se)


# ---------------------------------------------------------------------------------------------
# ContinuousTarget
# ---------------------------------------------------------------------------------------------


def brute_force_continuous(cost_limit: float, horizon: int) -> tuple[float, float, float]:
    """(return, cost, multiplier) by per-target grid search over actions, bisection on ν.

    The target law is discretised at 400 quantile midpoints and the action at 4001 grid points in
    [-2, 2]; for each ν the Lagrangian r − ν c is maximised pointwise on the grid, and ν is
    bisected until the expected episode cost meets the limit.
    """
    s = 0.5 + (np.arange(400) + 0.5) / 400
    a = np.linspace(-2.0, 2.0, 4001)
    reward = 1.0 - (a[None, :] - s[:, None]) ** 2
    cost = np.broadcast_to(a[None, :] ** 2, reward.shape)

    def solve(nu: float) -> tuple[float, float]:
        best = np.argmax(reward - nu * cost, axis=1)
        rows = np.arange(s.size)
        return horizon * reward[rows, best].mean(), horizon * cost[rows, best].mean()

    ret, c = solve(0.0)
    if c <= cost_limit:
        return ret, c, 0.0
    lo, hi = 0.0, 1e3
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if solve(mid)[1] > cost_limit:
            lo = mid
        else:
            hi = mid
    ret, c = solve(hi)
    return ret, c, hi


@pytest.mark.parametrize("cost_limit", [1.0, 5.0, 12.0, 30.0])
def test_continuous_optimum_matches_brute_force(cost_limit: float) -> None:
    env = ContinuousTarget(horizon=20)
    opt = env.optimum(cost_limit)
    ret, cost, nu = brute_force_continuous(cost_limit, 20)
    assert cost <= cost_limit + 1e-12
    assert opt.cost == pytest.approx(cost, abs=2e-3)
    assert opt.ret == pytest.approx(ret, abs=2e-3)
    assert opt.multiplier == pytest.approx(nu, abs=1e-2)
    assert opt.cost <= cost_limit + 1e-9


def test_continuous_default_values_and_limits() -> None:
    env = ContinuousTarget(**ContinuousTarget.default_kwargs)
    d = ContinuousTarget.default_cost_limit
    opt = env.optimum(d)
    kappa = math.sqrt(3.0 / 13.0)
    assert opt.cost == pytest.approx(d)  # binds
    assert opt.ret == pytest.approx(10.0 / 3.0 * (math.sqrt(39.0) - 2.0), rel=1e-12)
    assert opt.ret == pytest.approx(14.15, abs=1e-3)
    assert opt.multiplier == pytest.approx(1.0 / kappa - 1.0)
    assert env.optimal_gain(d) == pytest.approx(kappa)

    free = env.optimum(math.inf)
    assert (free.ret, free.cost, free.multiplier) == (20.0, pytest.approx(20 * M2), 0.0)
    assert free.cost > 4 * d  # the default limit binds hard
    assert env.optimum(30.0) == free  # slack limit: unconstrained solution

    zero = env.optimum(0.0)
    assert (zero.ret, zero.cost, zero.multiplier) == (pytest.approx(20 * (1 - M2)), 0.0, math.inf)

    # The multiplier is the slope of the optimal return in the limit.
    h = 1e-5
    slope = (env.optimum(d + h).ret - env.optimum(d - h).ret) / (2 * h)
    assert opt.multiplier == pytest.approx(slope, rel=1e-6)

    for bad in (-1.0, math.nan):
        with pytest.raises(ValueError):
            env.optimum(bad)
    with pytest.raises(ValueError, match="infeasible"):
        env.optimum(d, action_std=0.6)  # 20 · 0.36 > 5


@pytest.mark.parametrize(("horizon", "cost_scale", "limit"), [(100, 1.0, 25.0), (50, 0.2, 4.0)])
def test_continuous_variant_optimum_matches_monte_carlo(
    horizon: int, cost_scale: float, limit: float
) -> None:
    """Other horizons, cost units and limits: the binding optimum, its slope and its value."""
    env = ContinuousTarget(horizon=horizon, cost_scale=cost_scale)
    opt = env.optimum(limit)
    kappa = env.optimal_gain(limit)
    assert 0.0 < kappa < 1.0 and opt.cost == pytest.approx(limit)  # the limit binds
    h = 1e-5
    slope = (env.optimum(limit + h).ret - env.optimum(limit - h).ret) / (2 * h)
    assert opt.multiplier == pytest.approx(slope, rel=1e-6)
    # a = κs is the Lagrangian maximiser: 1/(1 + ν k) = κ
    assert 1.0 / (1.0 + opt.multiplier * cost_scale) == pytest.approx(kappa)
    rets, costs, lengths = rollout_stats(
        env, lambda o: np.array([kappa * o[0]], np.float32), 1000, seed=4
    )
    assert (lengths == horizon).all()
    assert_mc_close(rets, opt.ret)
    assert_mc_close(costs, opt.cost)
    with pytest.raises(ValueError, match="cost_scale"):
        ContinuousTarget(cost_scale=0.0)


def test_continuous_monte_carlo_matches_optimum() -> None:
    env = ContinuousTarget()
    d = ContinuousTarget.default_cost_limit
    opt = env.optimum(d)
    kappa = 1.0 / (1.0 + opt.multiplier)

    rets, costs, lengths = rollout_stats(
        env, lambda o: np.array([kappa * o[0]], np.float32), 3000, seed=1
    )
    assert (lengths == 20).all()
    assert_mc_close(rets, opt.ret)
    assert_mc_close(costs, opt.cost)
    assert abs(costs.mean() - d) < 0.05  # cost ≈ limit, within ~4 SE

    # A Gaussian policy around the best mean action for its own noise level.
    sigma = 0.3
    g_opt = env.optimum(d, action_std=sigma)
    g_kappa = env.optimal_gain(d, action_std=sigma)
    rng = np.random.default_rng(0)
    rets, costs, _ = rollout_stats(
        env,
        lambda o: np.array([g_kappa * o[0] + sigma * rng.standard_normal()], np.float32),
        3000,
        seed=2,
    )
    assert_mc_close(rets, g_opt.ret)
    assert_mc_close(costs, g_opt.cost)
    assert g_opt.ret < opt.ret - 20 * sigma**2  # noise costs at least σ² per step

    # Tracking the target exactly earns reward 1 per step (float32 observation rounding aside).
    rets, costs, _ = rollout_stats(env, lambda o: o[:1], 500, seed=3)
    np.testing.assert_allclose(rets, 20.0, atol=1e-6)
    assert_mc_close(costs, 20 * M2)


def test_continuous_episode_structure_and_action_handling() -> None:
    env = ContinuousTarget(horizon=5)
    assert env.max_episode_steps == 5
    obs, info = env.reset(seed=0)
    assert obs.dtype == np.float32 and obs.shape == (2,) and info == {}
    assert env.observation_space.contains(obs) and obs[1] == 0.0
    for t in range(1, 6):
        target = float(obs[0])
        obs, r, c, terminated, truncated, _ = env.step(np.array([2.5], np.float32))
        assert env.observation_space.contains(obs)
        assert obs[1] == pytest.approx(t / 5)
        assert not terminated and truncated == (t == 5)
        assert c == 4.0  # clipped to the bound 2
        assert r == pytest.approx(1.0 - (2.0 - target) ** 2, abs=1e-6)
        assert isinstance(r, float) and isinstance(c, float)
    env.reset(seed=0)
    for action in (0.5, np.float64(0.5), np.array(0.5), np.array([[0.5]])):
        assert env.step(action)[2] == 0.25
    with pytest.raises(ValueError):
        env.step(np.array([math.nan]))
    with pytest.raises(ValueError):
        env.step(np.array([0.1, 0.2]))
    with pytest.raises(RuntimeError):
        ContinuousTarget().step(np.zeros(1))


# ---------------------------------------------------------------------------------------------
# TabularCMDP
# ---------------------------------------------------------------------------------------------


def policy_values(env: TabularCMDP, policies: NDArray[np.float64]) -> NDArray[np.float64]:
    """Exact (return, cost) of a batch of stationary policies (N, S, A) -> (N, 2).

    Independent of ``TabularCMDP.evaluate``: v = Σ_t γ'^t P_π^t x_π is summed as a linear system
    (I − γ' P_π) v = x_π solved per policy.
    """
    p = np.asarray(env.transitions)
    p_pi = np.einsum("nsa,sat->nst", policies, p)
    x = np.stack(
        [
            np.einsum("nsa,sa->ns", policies, env.rewards),
            np.einsum("nsa,sa->ns", policies, env.costs),
        ],
        axis=-1,
    )
    m = np.eye(env.n_states)[None] - (1.0 - env.p_end) * p_pi
    v = np.linalg.solve(m, x)
    return np.einsum("s,nsk->nk", env.initial_distribution, v)


def best_mixture(values: NDArray[np.float64], cost_limit: float) -> float:
    """Max return over mixtures of (at most two) policies with given (return, cost) pairs."""
    r, c = values[:, 0], values[:, 1]
    best = r[c <= cost_limit + 1e-12].max()
    lo, hi = c <= cost_limit, c > cost_limit
    ri, ci = r[lo][:, None], c[lo][:, None]
    rj, cj = r[hi][None, :], c[hi][None, :]
    if ri.size and rj.size:
        w = (cj - cost_limit) / (cj - ci)  # weight on the feasible policy, in [0, 1)
        best = max(best, float((w * ri + (1 - w) * rj).max()))
    return float(best)


def small_instance() -> TabularCMDP:
    """2 states × 2 actions, where the optimum randomises in s1 (d = 0.5) or s0 (d = 2)."""
    return TabularCMDP(
        p_end=0.2,
        transitions=[[[0.8, 0.2], [0.5, 0.5]], [[0.5, 0.5], [0.1, 0.9]]],
        rewards=[[0.2, 1.0], [0.5, 1.0]],
        costs=[[0.0, 1.0], [0.0, 0.5]],
    )


@pytest.mark.parametrize("cost_limit", [0.0, 0.5, 1.0, 1.7, 2.5, 3.0, math.inf])
def test_tabular_lp_matches_deterministic_policy_hull(cost_limit: float) -> None:
    # Occupancy measures of stationary policies form a polytope whose vertices are those of the
    # deterministic policies, so the optimum is the best mixture of two of the 3^5 of them.
    env = TabularCMDP()
    det = np.array(list(itertools.product(range(env.n_actions), repeat=env.n_states)))
    policies = np.eye(env.n_actions)[det]  # (243, S, A)
    values = policy_values(env, policies)
    opt = env.optimum(cost_limit)
    assert opt.ret == pytest.approx(best_mixture(values, cost_limit), abs=1e-8)
    assert opt.cost <= cost_limit + 1e-8


def test_tabular_lp_matches_policy_grid_on_small_instance() -> None:
    env = small_instance()
    q = np.linspace(0.0, 1.0, 401)  # π(a1|s0), π(a1|s1) on a 401 × 401 grid
    q0, q1 = (x.ravel() for x in np.meshgrid(q, q, indexing="ij"))
    policies = np.stack([np.stack([1 - q0, q0], -1), np.stack([1 - q1, q1], -1)], axis=1)
    values = policy_values(env, policies)
    for cost_limit, mixed_state in ((0.5, 1), (2.0, 0)):
        opt = env.optimum(cost_limit)
        feasible = values[:, 1] <= cost_limit
        grid_best = values[feasible, 0].max()
        assert grid_best <= opt.ret + 1e-9  # no policy beats the LP
        assert grid_best >= opt.ret - 5e-3  # and the grid gets within its resolution of it
        assert opt.policy is not None
        mixing = np.flatnonzero((opt.policy > 1e-9).sum(1) > 1)
        assert mixing.tolist() == [mixed_state]


def test_tabular_lp_not_beaten_by_random_policies() -> None:
    env = TabularCMDP()
    d = TabularCMDP.default_cost_limit
    opt = env.optimum(d)
    rng = np.random.default_rng(0)
    policies = rng.dirichlet(np.full(env.n_actions, 0.3), size=(20000, env.n_states))
    values = policy_values(env, policies)
    assert values[values[:, 1] <= d, 0].max() <= opt.ret + 1e-9

    # A fine grid over the mixing probability in state 0, others as in the LP policy, recovers
    # the LP value: the extracted policy is the optimal one.
    assert opt.policy is not None
    q = np.linspace(0.0, 1.0, 2001)
    grid = np.repeat(opt.policy[None], q.size, axis=0).copy()
    grid[:, 0] = np.stack([1 - q, q, np.zeros_like(q)], -1)
    values = policy_values(env, grid)
    feasible = values[:, 1] <= d
    assert values[feasible, 0].max() == pytest.approx(opt.ret, abs=2e-3)
    assert env.evaluate(opt.policy) == pytest.approx((opt.ret, opt.cost), abs=1e-10)
    assert policy_values(env, opt.policy[None])[0] == pytest.approx([opt.ret, opt.cost], abs=1e-10)


def test_tabular_default_constraint_binds_and_randomises() -> None:
    env = TabularCMDP(**TabularCMDP.default_kwargs)
    d = TabularCMDP.default_cost_limit
    opt, free, zero = env.optimum(d), env.optimum(math.inf), env.optimum(0.0)
    assert opt.cost == pytest.approx(d, abs=1e-9)
    assert opt.ret == pytest.approx(4.939476, abs=1e-5)
    assert opt.multiplier == pytest.approx(1.930690, abs=1e-5)
    assert free.cost > 3.0 * d  # the unconstrained optimum violates the limit
    assert free.ret > opt.ret + 3.0 and opt.ret > zero.ret + 1.9
    assert free.multiplier == 0.0 and zero.cost == 0.0
    assert opt.policy is not None and free.policy is not None
    # Classic CMDP structure: exactly one state mixes, with substantial weight on both actions.
    np.testing.assert_allclose(opt.policy.sum(1), 1.0)
    support = opt.policy > 1e-9
    assert support.sum(1).tolist() == [2, 1, 1, 1, 1]
    assert opt.policy[0, :2] == pytest.approx([0.401705, 0.598295], abs=1e-5)
    assert np.isin(free.policy, (0.0, 1.0)).all()
    assert (free.policy.argmax(1) != opt.policy.argmax(1)).sum() >= 2
    assert not opt.policy.flags.writeable
    # The slope of the optimal return in the limit is the multiplier.
    h = 1e-4
    slope = (env.optimum(d + h).ret - env.optimum(d - h).ret) / (2 * h)
    assert slope == pytest.approx(opt.multiplier, rel=1e-6)

    # With every cost raised by 0.1 an episode costs at least 0.1 · E[length] = 1 > 0.5.
    costly = TabularCMDP(transitions=env.transitions, rewards=env.rewards, costs=env.costs + 0.1)
    with pytest.raises(ValueError, match="infeasible"):
        costly.optimum(0.5)
    assert costly.optimum(1.05).cost == pytest.approx(1.05)
    with pytest.raises(ValueError):
        env.evaluate(np.full((5, 3), 0.5))


def test_tabular_monte_carlo_matches_optimum() -> None:
    env = TabularCMDP()
    opt = env.optimum(TabularCMDP.default_cost_limit)
    assert opt.policy is not None
    cum = [np.cumsum(row).tolist() for row in opt.policy]
    rng = np.random.default_rng(0)

    def act(obs: NDArray[np.float32]) -> int:
        s = int(obs.argmax())
        return min(bisect.bisect_right(cum[s], rng.random()), env.n_actions - 1)

    rets, costs, lengths = rollout_stats(env, act, 20000, seed=0)
    assert_mc_close(rets, opt.ret)
    assert_mc_close(costs, opt.cost)
    assert_mc_close(lengths.astype(float), 1.0 / env.p_end)
    assert lengths.max() < env.max_episode_steps

    # The unconstrained optimum (deterministic) is reproduced as well.
    free = env.optimum(math.inf)
    assert free.policy is not None
    greedy = free.policy.argmax(1)
    rets, costs, _ = rollout_stats(env, lambda o: int(greedy[o.argmax()]), 10000, seed=1)
    assert_mc_close(rets, free.ret)
    assert_mc_close(costs, free.cost)


def test_tabular_transition_frequencies() -> None:
    env = TabularCMDP()
    counts = np.zeros((env.n_states, env.n_actions, env.n_states))
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    for _ in range(60000):
        s, a = int(obs.argmax()), int(rng.integers(env.n_actions))
        obs, r, c, terminated, truncated, _ = env.step(a)
        assert (r, c) == (env.rewards[s, a], env.costs[s, a])
        counts[s, a, int(obs.argmax())] += 1
        if terminated or truncated:
            obs, _ = env.reset()
    n = counts.sum(-1, keepdims=True)
    p = np.asarray(env.transitions)
    se = np.sqrt(p * (1 - p) / n)
    assert (np.abs(counts / n - p) <= 4.5 * se + 1e-12).all()
    assert (counts[p == 0.0] == 0).all()


def test_tabular_episode_structure_and_action_handling() -> None:
    env = TabularCMDP(p_end=1e-12, max_episode_steps=7)
    obs, info = env.reset(seed=0)
    assert obs.dtype == np.float32 and obs.shape == (5,) and info == {}
    assert obs.tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]  # μ₀ = one-hot(0)
    for t in range(1, 8):
        obs, r, c, terminated, truncated, _ = env.step(0)
        assert env.observation_space.contains(obs) and obs.sum() == 1.0
        assert not terminated and truncated == (t == 7)
        assert isinstance(r, float) and isinstance(c, float)
    env = TabularCMDP(p_end=1.0)
    env.reset(seed=0)
    assert env.step(np.int64(2))[3:5] == (True, False)
    for action in (np.array(1), np.array([1]), True):
        env.step(action)
    for bad in (3, -1, np.array([0.5]), np.array([0, 1])):
        with pytest.raises(ValueError):
            env.step(bad)
    with pytest.raises(RuntimeError):
        TabularCMDP().step(0)
    with pytest.raises(ValueError):
        TabularCMDP(p_end=0.0)
    with pytest.raises(ValueError):
        TabularCMDP(transitions=[[[0.5, 0.6]], [[1.0, 0.0]]], rewards=[[0], [0]], costs=[[0], [0]])


# ---------------------------------------------------------------------------------------------
# Shared
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("env_id", sorted(BUILTIN_CMDPS))
def test_same_seed_same_trajectory(env_id: str) -> None:
    cls = BUILTIN_CMDPS[env_id]

    def trajectory(seed: int) -> list[tuple[object, ...]]:
        env = cls(**cls.default_kwargs)
        rng = np.random.default_rng(123)  # the same action sequence for every run
        out: list[tuple[object, ...]] = []
        obs, _ = env.reset(seed=seed)
        for _ in range(300):
            action = _action(env, rng)
            obs, r, c, terminated, truncated, _ = env.step(action)
            out.append((obs.tobytes(), r, c, terminated, truncated))
            if terminated or truncated:
                obs, _ = env.reset()
                out.append((obs.tobytes(),))
        return out

    assert trajectory(7) == trajectory(7)
    assert trajectory(7) != trajectory(8)


def _action(env: BuiltinCMDP, rng: np.random.Generator) -> object:
    if isinstance(env, TabularCMDP):
        return int(rng.integers(env.n_actions))
    return rng.uniform(-2.0, 2.0, size=1).astype(np.float32)


def test_registry() -> None:
    expected = {
        "safebench/ContinuousTarget-v0": ContinuousTarget,
        "safebench/TabularCMDP-v0": TabularCMDP,
    }
    assert expected == BUILTIN_CMDPS
    assert all(issubclass(cls, BuiltinCMDP) for cls in BUILTIN_CMDPS.values())
    for cls in (ContinuousTarget, TabularCMDP):
        env = cls(**cls.default_kwargs)
        d = cls.default_cost_limit
        opt = env.optimum(d)
        assert isinstance(opt, Optimum) and opt.description
        assert opt.cost == pytest.approx(d) and opt.multiplier > 0.5  # binds
        assert env.optimum(math.inf).cost > 2 * d
