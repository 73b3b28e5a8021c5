"""PCPO: the projection step, both forms, and one full update."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from torch.distributions import kl_divergence

from algorithms.pcpo import PCPO, PCPOConfig, pcpo_step
from safebench.core.optim import frozen_distribution
from tests.algorithms.synthetic import box_spaces, synthetic_rollout

DELTA = 0.01


def _instance(seed: int, c: float, n: int = 6) -> dict[str, np.ndarray | float]:
    rng = np.random.default_rng(seed)
    M = rng.normal(size=(n, n))
    F = M @ M.T / n + 0.5 * np.eye(n)
    g = rng.normal(size=n)
    b = g + 0.5 * rng.normal(size=n)  # the TRPO step raises the cost
    x, p = np.linalg.solve(F, g), np.linalg.solve(F, b)
    return {"F": F, "g": g, "b": b, "x": x, "p": p, "q": g @ x, "r": g @ p, "s": b @ p, "c": c}


def _step(inst: dict[str, np.ndarray | float], fx_quirk: bool) -> tuple[np.ndarray, float]:
    F, x = np.asarray(inst["F"]), np.asarray(inst["x"])
    step, nu = pcpo_step(
        torch.from_numpy(x),
        torch.from_numpy(F @ x),
        torch.from_numpy(np.asarray(inst["p"])),
        float(inst["q"]),
        float(inst["r"]),
        float(inst["s"]),
        float(inst["c"]),
        DELTA,
        fx_quirk,
    )
    return step.numpy(), nu


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("c", [-1.0, -0.05, 0.0, 0.3])
def test_paper_step_is_the_kl_projection(seed: int, c: float) -> None:
    """fx_quirk=False: the F-metric projection of the TRPO step onto c + bᵀs ≤ 0."""
    inst = _instance(seed, c)
    F, b = np.asarray(inst["F"]), np.asarray(inst["b"])
    step, nu = _step(inst, fx_quirk=False)
    y = math.sqrt(2 * DELTA / float(inst["q"])) * np.asarray(inst["x"])  # TRPO step
    assert c + b @ step <= 1e-7
    if c + b @ y > 0:
        assert nu > 0
        assert c + b @ step == pytest.approx(0.0, abs=1e-7)
    else:
        assert nu == 0.0
        np.testing.assert_allclose(step, y, rtol=1e-7)
    res = minimize(
        lambda z: 0.5 * (z - y) @ F @ (z - y),
        np.zeros_like(y),
        jac=lambda z: F @ (z - y),
        constraints=[{"type": "ineq", "fun": lambda z: -(b @ z + c), "jac": lambda z: -b}],
        method="SLSQP",
        options={"ftol": 1e-15, "maxiter": 1000},
    )
    np.testing.assert_allclose(step, res.x, atol=1e-5 * float(np.linalg.norm(res.x)))


@pytest.mark.parametrize("seed", range(4))
def test_omnisafe_step_uses_fisher_times_x(seed: int) -> None:
    """fx_quirk=True: sqrt(2δ/q)·F·x − max(0, (sqrt(2δ/q)·r + c)/s)·p, with F·x = g here."""
    inst = _instance(seed, c=0.1)
    step, nu = _step(inst, fx_quirk=True)
    alpha = math.sqrt(2 * DELTA / float(inst["q"]))
    nu_ref = max(0.0, (alpha * float(inst["r"]) + 0.1) / float(inst["s"]))
    assert nu == pytest.approx(nu_ref, rel=1e-7)
    expected = alpha * np.asarray(inst["g"]) - nu_ref * np.asarray(inst["p"])
    np.testing.assert_allclose(step, expected, rtol=1e-6)


@pytest.mark.parametrize("fx_quirk", [True, False])
@pytest.mark.parametrize("ep_cost", [10.0, 40.0])
def test_update(fx_quirk: bool, ep_cost: float) -> None:
    obs_space, act_space = box_spaces()
    config = PCPOConfig(hidden_sizes=(16, 16), update_iters=1, fx_quirk=fx_quirk)
    algo = PCPO(obs_space, act_space, config, cost_limit=25.0, seed=0)
    rollout = synthetic_rollout(algo, ep_cost=ep_cost)
    obs = torch.as_tensor(rollout.obs)
    old = frozen_distribution(algo.actor, obs)
    info = algo.update(rollout)
    assert all(math.isfinite(v) for v in info.values())
    with torch.no_grad():
        kl = float(kl_divergence(old, algo.actor.distribution(obs)).mean())
    assert kl <= DELTA
    if info["accepted"]:
        assert info["loss_c_after"] - info["loss_c_before"] <= max(25.0 - ep_cost, 0.0)
    if not fx_quirk:
        assert info["linear_cost_full_step"] <= 1e-4
