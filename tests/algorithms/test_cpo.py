"""CPO: the closed-form step against a generic QP solver, and one full update."""

from __future__ import annotations

import ast
import importlib.util
import math
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from torch.distributions import kl_divergence

from algorithms.cpo import CPO, CPOConfig, cpo_step
from safebench.core import trust_region
from safebench.core.optim import flat_params, frozen_distribution
from tests.algorithms.synthetic import box_spaces, discrete_spaces, synthetic_rollout

DELTA = 0.01


# --------------------------------------------------------------------------------------------
# Random instances of  max gᵀs  s.t.  ½sᵀFs ≤ δ,  c + bᵀs ≤ 0
# --------------------------------------------------------------------------------------------


class Instance:
    """A QP instance with exact solves ``x = F⁻¹g``, ``p = F⁻¹b``."""

    def __init__(self, F: np.ndarray, g: np.ndarray, b: np.ndarray, c: float, delta: float):
        self.F, self.g, self.b, self.c, self.delta = F, g, b, c, delta
        self.x = np.linalg.solve(F, g)
        self.p = np.linalg.solve(F, b)
        self.q = float(g @ self.x)
        self.r = float(g @ self.p)
        self.s = float(b @ self.p)

    def solve(self, dual_quirk: bool = False) -> Any:
        return cpo_step(
            torch.from_numpy(self.x),
            torch.from_numpy(self.p),
            self.q,
            self.r,
            self.s,
            self.c,
            self.delta,
            float(self.b @ self.b),
            dual_quirk,
        )


def make_instance(seed: int, kind: str, n: int = 6) -> Instance:
    """An instance built to land in a given CPO case.

    ``m = sqrt(2δ·s)`` is the largest change of bᵀs inside the trust region, so ``|c| > m``
    puts the constraint boundary outside it (cases 0, 3) and ``|c| < m`` inside (cases 1, 2).
    ``b ≈ +g`` makes the TRPO step raise the cost (constraint binds); ``b ≈ −g`` makes it
    lower the cost (the TRPO step stays feasible, ν* = 0).
    """
    rng = np.random.default_rng(seed)
    M = rng.normal(size=(n, n))
    F = M @ M.T / n + 0.5 * np.eye(n)
    g = rng.normal(size=n)
    noise = 0.3 * rng.normal(size=n)
    b = {"bind": g + noise, "free": -g + noise}.get(kind.split("-")[-1], rng.normal(size=n))
    if kind == "case4":
        b = 1e-4 * rng.normal(size=n)  # bᵀb ≤ 1e-6
    m = math.sqrt(2 * DELTA * float(b @ np.linalg.solve(F, b)))
    c = {
        "case4": -0.5,
        "case3": -1.5 * m,
        "case2-bind": -0.5 * m,
        "case2-free": -0.5 * m,
        "case1-bind": 0.5 * m,
        "case1-free": 0.5 * m,
        "case0": 1.5 * m,
    }[kind]
    return Instance(F, g, b, c, DELTA)


def qp_optimum(inst: Instance) -> np.ndarray:
    """SLSQP from several starts; the best feasible point."""
    F, g, b, c, delta = inst.F, inst.g, inst.b, inst.c, inst.delta
    cons = [
        {"type": "ineq", "fun": lambda z: delta - 0.5 * z @ F @ z, "jac": lambda z: -F @ z},
        {"type": "ineq", "fun": lambda z: -(b @ z + c), "jac": lambda z: -b},
    ]
    starts = [
        np.zeros_like(g),
        math.sqrt(2 * delta / inst.q) * inst.x,
        -0.99 * math.sqrt(2 * delta / inst.s) * inst.p,
    ]
    best: np.ndarray | None = None
    for z0 in starts:
        res = minimize(
            lambda z: -g @ z,
            z0,
            jac=lambda z: -g,
            constraints=cons,
            method="SLSQP",
            options={"ftol": 1e-15, "maxiter": 1000},
        )
        z = res.x
        feasible = b @ z + c <= 1e-9 and 0.5 * z @ F @ z <= delta * (1 + 1e-9)
        if feasible and (best is None or g @ z > g @ best):
            best = z
    assert best is not None, "the QP solver found no feasible point"
    return best


CASES = {
    "case4": (4, False),
    "case3": (3, False),
    "case2-bind": (2, True),
    "case2-free": (2, False),
    "case1-bind": (1, True),
    "case1-free": (1, False),
}


@pytest.mark.parametrize("kind", list(CASES))
@pytest.mark.parametrize("seed", range(4))
def test_exact_step_matches_qp_optimum(kind: str, seed: int) -> None:
    inst = make_instance(seed, kind)
    sol = inst.solve(dual_quirk=False)
    expected_case, binding = CASES[kind]
    assert sol.case == expected_case
    assert (sol.nu > 0) == binding
    step = sol.step.numpy()
    z = qp_optimum(inst)
    optimum = float(inst.g @ z)  # negative when recovery must give up reward
    assert float(inst.g @ step) == pytest.approx(optimum, rel=1e-4)
    # both constraints hold (the trust region is always tight at a linear objective's optimum)
    assert 0.5 * step @ inst.F @ step == pytest.approx(DELTA, rel=1e-4)
    assert inst.c + inst.b @ step <= 1e-6 * math.sqrt(inst.s)
    if binding:
        assert inst.c + inst.b @ step == pytest.approx(0.0, abs=1e-6 * math.sqrt(inst.s))
    np.testing.assert_allclose(step, z, rtol=0, atol=1e-3 * float(np.linalg.norm(z)))


@pytest.mark.parametrize("seed", range(4))
def test_case0_is_pure_cost_descent(seed: int) -> None:
    inst = make_instance(seed, "case0")
    for quirk in (False, True):
        sol = inst.solve(dual_quirk=quirk)
        assert sol.case == 0
        expected = -math.sqrt(2 * DELTA / inst.s) * inst.p
        np.testing.assert_allclose(sol.step.numpy(), expected, rtol=1e-6)
    # the QP is infeasible; the step is the trust-region point of least linearised cost
    F, b = inst.F, inst.b
    res = minimize(
        lambda z: b @ z,
        np.zeros_like(b),
        jac=lambda z: b,
        constraints=[{"type": "ineq", "fun": lambda z: DELTA - 0.5 * z @ F @ z}],
        method="SLSQP",
        options={"ftol": 1e-15, "maxiter": 1000},
    )
    assert inst.c + b @ res.x > 0  # infeasible indeed
    np.testing.assert_allclose(
        inst.solve().step.numpy(), res.x, atol=1e-3 * float(np.linalg.norm(res.x))
    )


def test_omnisafe_dual_quirk_is_not_the_qp_optimum() -> None:
    """OmniSafe's sign of r: in feasible recovery with a binding constraint its step is not
    optimal; the line search then has to repair it."""
    gaps = []
    for seed in range(4):
        inst = make_instance(seed, "case1-bind")
        quirk = inst.solve(dual_quirk=True)
        exact = inst.solve(dual_quirk=False)
        assert quirk.case == exact.case == 1
        gaps.append(torch.linalg.norm(quirk.step - exact.step) / torch.linalg.norm(exact.step))
    assert min(gaps) > 1e-2


# --------------------------------------------------------------------------------------------
# dual_quirk=True reproduces OmniSafe 0.5.0's own solver
# --------------------------------------------------------------------------------------------


def _omnisafe_solver() -> tuple[Callable[..., Any], Callable[..., Any]]:
    """``CPO._determine_case`` and ``CPO._step_direction`` from the installed OmniSafe source.

    Importing ``omnisafe`` pulls in every environment, so the two methods are compiled from
    the source file on their own.
    """
    spec = importlib.util.find_spec("omnisafe")
    # omnisafe is a locked dependency: its absence is a broken install, so fail, never skip.
    assert spec is not None and spec.submodule_search_locations, "omnisafe is not installed"
    root = Path(next(iter(spec.submodule_search_locations)))
    path = root / "algorithms/on_policy/second_order/cpo.py"
    tree = ast.parse(path.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "CPO")
    wanted = {"_determine_case", "_step_direction"}
    funcs: list[ast.stmt] = [
        f for f in cls.body if isinstance(f, ast.FunctionDef) and f.name in wanted
    ]
    namespace: dict[str, Any] = {"torch": torch}
    exec(compile(ast.Module(body=funcs, type_ignores=[]), str(path), "exec"), namespace)
    return namespace["_determine_case"], namespace["_step_direction"]


@pytest.mark.parametrize("seed", range(24))
def test_dual_quirk_matches_omnisafe_source(seed: int) -> None:
    determine_case, step_direction = _omnisafe_solver()
    kinds = [*CASES, "case0"]
    inst = make_instance(seed, kinds[seed % len(kinds)])
    fake = SimpleNamespace(
        _cfgs=SimpleNamespace(algo_cfgs=SimpleNamespace(target_kl=DELTA)),
        _logger=SimpleNamespace(log=lambda *args, **kwargs: None),
    )
    t = torch.tensor
    x, p, b = torch.from_numpy(inst.x), torch.from_numpy(inst.p), torch.from_numpy(inst.b)
    q, r, s = t(inst.q, dtype=torch.float64), t(inst.r, dtype=torch.float64), t(inst.s)
    case, A, B = determine_case(fake, b_grads=b, ep_costs=inst.c, q=q, r=r, s=s)
    ref_step, ref_lam, ref_nu = step_direction(fake, case, q, x, A, B, q, p, r, s, inst.c)
    ours = inst.solve(dual_quirk=True)
    assert ours.case == case
    assert ours.lam == pytest.approx(float(ref_lam), rel=1e-6)
    assert ours.nu == pytest.approx(float(ref_nu), rel=1e-6, abs=1e-12)
    np.testing.assert_allclose(ours.step.numpy(), ref_step.double().numpy(), rtol=1e-6)


# --------------------------------------------------------------------------------------------
# One full update
# --------------------------------------------------------------------------------------------


def _small_config(**overrides: Any) -> CPOConfig:
    return CPOConfig(hidden_sizes=(16, 16), update_iters=1, **overrides)


@pytest.mark.parametrize("dual_quirk", [True, False])
@pytest.mark.parametrize("ep_cost", [0.0, 24.0, 30.0, 200.0])
def test_update_respects_trust_region(ep_cost: float, dual_quirk: bool) -> None:
    obs_space, act_space = box_spaces()
    config = _small_config(dual_quirk=dual_quirk)
    algo = CPO(obs_space, act_space, config, cost_limit=25.0, seed=0)
    rollout = synthetic_rollout(algo, ep_cost=ep_cost)
    obs = torch.as_tensor(rollout.obs)
    old = frozen_distribution(algo.actor, obs)
    theta_old = flat_params(algo.actor)
    info = algo.update(rollout)
    assert all(math.isfinite(v) for v in info.values())
    assert info["accepted"] == 1.0
    with torch.no_grad():
        kl = float(kl_divergence(old, algo.actor.distribution(obs)).mean())
    assert kl <= DELTA
    assert kl == pytest.approx(info["kl"], rel=1e-5)
    assert not torch.equal(theta_old, flat_params(algo.actor))
    if ep_cost > 25.0:
        assert info["case"] in (0.0, 1.0)
        assert info["loss_c_after"] - info["loss_c_before"] <= 0.0
    else:
        assert info["case"] in (2.0, 3.0, 4.0)
        assert info["loss_r_after"] <= info["loss_r_before"]


def test_rejected_line_search_leaves_actor_untouched(monkeypatch: pytest.MonkeyPatch) -> None:
    obs_space, act_space = box_spaces()
    algo = CPO(obs_space, act_space, _small_config(target_kl=1e-8), cost_limit=25.0, seed=1)
    rollout = synthetic_rollout(algo, ep_cost=10.0, seed=1)
    before = {k: v.clone() for k, v in algo.actor.state_dict().items()}
    # every candidate's KL is reported non-finite, so every candidate is rejected
    monkeypatch.setattr(trust_region, "kl_mean", lambda *args: torch.tensor(float("inf")))
    info = algo.update(rollout)
    assert info["accepted"] == 0.0
    assert info["line_search_tries"] == 20.0
    assert info["step_norm"] == 0.0 and info["kl"] == 0.0
    for k, v in algo.actor.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_update_discrete_actions() -> None:
    obs_space, act_space = discrete_spaces()
    algo = CPO(obs_space, act_space, _small_config(), cost_limit=25.0, seed=2)
    info = algo.update(synthetic_rollout(algo, ep_cost=40.0, seed=2))
    assert all(math.isfinite(v) for v in info.values())
    assert info["kl"] <= DELTA
