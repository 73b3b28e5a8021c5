"""Tests for safebench.core.optim."""

from __future__ import annotations

import math
from collections.abc import Callable
from types import ModuleType

import pytest
import torch
from torch import Tensor, nn
from torch.distributions import Categorical

from safebench.core.optim import (
    backtracking_line_search,
    conjugate_gradient,
    fisher_vector_product,
    flat_grad,
    flat_params,
    frozen_distribution,
    kl_mean,
    kl_sum_dims,
    set_flat_params,
)
from safebench.core.policies import CategoricalActor, GaussianActor


def _spd(n: int, seed: int, cond: float = 50.0) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    eig = torch.logspace(0, math.log10(cond), n, dtype=torch.float64)
    return q @ torch.diag(eig) @ q.T


def _matrix_of(op: Callable[[Tensor], Tensor], n: int) -> Tensor:
    eye = torch.eye(n, dtype=torch.float64)
    return torch.stack([op(eye[k]) for k in range(n)], dim=1)


@pytest.fixture
def tiny_gaussian() -> tuple[GaussianActor, Tensor]:
    torch.manual_seed(0)
    actor = GaussianActor(3, 2, hidden=(4,)).double()
    with torch.no_grad():
        actor.log_std.copy_(torch.tensor([0.3, -0.6], dtype=torch.float64))
    obs = torch.randn(7, 3, dtype=torch.float64)
    return actor, obs


# ---------------------------------------------------------------------------- flat utilities


def test_flat_params_round_trip_and_copy_semantics() -> None:
    torch.manual_seed(0)
    first, last = nn.Linear(3, 4), nn.Linear(4, 2)
    net = nn.Sequential(first, nn.Tanh(), last)
    flat = flat_params(net)
    assert flat.shape == (3 * 4 + 4 + 4 * 2 + 2,)
    assert torch.equal(flat[:12], first.weight.reshape(-1))
    assert torch.equal(flat[-2:], last.bias)
    new = torch.arange(flat.numel(), dtype=torch.float32)
    set_flat_params(net, new)
    assert torch.equal(flat_params(net), new)
    assert torch.equal(last.weight, new[16:24].reshape(2, 4))
    assert not torch.equal(flat, new)  # the earlier snapshot did not follow the update
    with pytest.raises(ValueError, match="entries"):
        set_flat_params(net, new[:-1])


def test_flat_grad_matches_autograd_and_zero_fills_unused() -> None:
    torch.manual_seed(1)
    a = torch.randn(3, requires_grad=True)
    b = torch.randn(2, 2, requires_grad=True)
    unused = torch.randn(4, requires_grad=True)
    out = (a**2).sum() + (a[0] * b).sum()
    g = flat_grad(out, [a, unused, b])
    expected_a = 2 * a.detach() + torch.tensor([b.detach().sum().item(), 0.0, 0.0])
    expected_b = a.detach()[0] * torch.ones(4)
    assert torch.allclose(g, torch.cat([expected_a, torch.zeros(4), expected_b]))


# ------------------------------------------------------------------------- conjugate gradient


def test_conjugate_gradient_solves_spd_system() -> None:
    mat = _spd(10, seed=0)
    b = torch.randn(10, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 3
    expected = torch.linalg.solve(mat, b)
    # Exact arithmetic would converge in n = 10 < 15 iterations.
    exact = conjugate_gradient(lambda v: mat @ v, b, iters=15, eps=0.0)
    torch.testing.assert_close(exact, expected, rtol=1e-10, atol=1e-10)
    # OmniSafe's eps = 1e-6 in both denominators perturbs the iterates slightly.
    x = conjugate_gradient(lambda v: mat @ v, b, iters=15)
    torch.testing.assert_close(x, expected, rtol=1e-4, atol=1e-5)


def test_conjugate_gradient_iterates_equal_omnisafe(
    omnisafe_module: Callable[[str], ModuleType],
) -> None:
    reference = omnisafe_module("utils/math.py").conjugate_gradients
    mat = _spd(30, seed=2, cond=1e4)
    b = torch.randn(30, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 1e-3
    for iters in (1, 4, 15):
        # Small b makes the eps = 1e-6 in the denominators matter, so its placement is tested.
        x = conjugate_gradient(lambda v: mat @ v, b, iters=iters)
        ref = reference(lambda v: mat @ v, b.clone(), num_steps=iters)
        torch.testing.assert_close(x, ref, rtol=1e-12, atol=1e-15)
    no_eps = conjugate_gradient(lambda v: mat @ v, b, iters=15, eps=0.0)
    assert (no_eps - x).norm() > 1e-3 * x.norm()


# ----------------------------------------------------------------------- KL and Fisher products


def _mean_jacobians(actor: GaussianActor, obs: Tensor) -> list[Tensor]:
    """Per-state Jacobian ``∂μ(s)/∂φ`` of shape ``(act_dim, P_mean)``."""
    params = list(actor.mean_net.parameters())
    mean = actor(obs)
    jacobians = []
    for s in range(obs.shape[0]):
        rows = [flat_grad(mean[s, i], params, retain_graph=True) for i in range(mean.shape[1])]
        jacobians.append(torch.stack(rows))
    return jacobians


def test_gaussian_fvp_equals_explicit_fisher_over_act_dim(
    tiny_gaussian: tuple[GaussianActor, Tensor],
) -> None:
    actor, obs = tiny_gaussian
    n_states, act_dim = obs.shape[0], 2
    inv_var = torch.exp(-2 * actor.log_std.detach())
    jac = _mean_jacobians(actor, obs)
    p_mean = jac[0].shape[1]
    # KL̄ = (1/(B·d)) Σ_s Σ_i KL_i; its Hessian at θ_old:
    #   mean block  (1/(B·d)) Σ_s J_sᵀ diag(1/σ²) J_s,   log σ block  (2/d)·I,   no cross term.
    # nn.Module lists its own parameters before its children's: θ = (log σ, φ).
    assert next(iter(actor.parameters())) is actor.log_std
    fisher = torch.zeros(p_mean + act_dim, p_mean + act_dim, dtype=torch.float64)
    fisher[:act_dim, :act_dim] = 2.0 / act_dim * torch.eye(act_dim, dtype=torch.float64)
    fisher[act_dim:, act_dim:] = sum(j.T @ torch.diag(inv_var) @ j for j in jac) / (
        n_states * act_dim
    )

    fvp = fisher_vector_product(actor, obs, damping=0.1)
    n_params = flat_params(actor).numel()
    assert n_params == p_mean + act_dim
    got = _matrix_of(fvp, n_params)
    expected = fisher + 0.1 * torch.eye(n_params, dtype=torch.float64)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)

    # CG through the FVP behaves exactly as CG with the explicit matrix ...
    g = torch.randn(n_params, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x_fvp = conjugate_gradient(fvp, g, iters=15)
    x_mat = conjugate_gradient(lambda v: expected @ v, g, iters=15)
    torch.testing.assert_close(x_fvp, x_mat, rtol=1e-9, atol=1e-10)
    # ... and, run to convergence, solves the damped Fisher system.
    x_full = conjugate_gradient(fvp, g, iters=200, residual_tol=1e-12, eps=0.0)
    torch.testing.assert_close(x_full, torch.linalg.solve(expected, g), rtol=1e-8, atol=1e-8)


def test_categorical_fvp_equals_explicit_fisher() -> None:
    torch.manual_seed(3)
    actor = CategoricalActor(3, 4, hidden=(5,)).double()
    obs = torch.randn(6, 3, dtype=torch.float64)
    params = list(actor.parameters())
    logits = actor(obs)
    probs = torch.softmax(logits.detach(), -1)
    n_params = flat_params(actor).numel()
    fisher = torch.zeros(n_params, n_params, dtype=torch.float64)
    for s in range(obs.shape[0]):
        jac = torch.stack([flat_grad(logits[s, k], params, retain_graph=True) for k in range(4)])
        curvature = torch.diag(probs[s]) - torch.outer(probs[s], probs[s])
        fisher += jac.T @ curvature @ jac / obs.shape[0]
    got = _matrix_of(fisher_vector_product(actor, obs, damping=0.0), fisher.shape[0])
    torch.testing.assert_close(got, fisher, rtol=1e-9, atol=1e-12)


def test_kl_conventions(tiny_gaussian: tuple[GaussianActor, Tensor]) -> None:
    actor, obs = tiny_gaussian
    old = frozen_distribution(actor, obs)
    assert not old.mean.requires_grad
    assert kl_mean(actor, obs, old).item() == pytest.approx(0.0, abs=1e-15)
    mu_old, sigma_old = old.mean.clone(), old.stddev.clone()

    with torch.no_grad():
        actor.log_std.add_(torch.tensor([0.1, -0.2], dtype=torch.float64))
        next(iter(actor.mean_net.parameters())).add_(0.3)
    mu, sigma = actor(obs).detach(), torch.exp(actor.log_std.detach())
    per_dim = (
        torch.log(sigma / sigma_old) + (sigma_old**2 + (mu_old - mu) ** 2) / (2 * sigma**2) - 0.5
    )  # (B, act_dim)
    kl = kl_mean(actor, obs, old)
    assert kl.requires_grad  # differentiable in θ, as the FVP and C-TRPO need
    assert kl.item() == pytest.approx(per_dim.mean().item(), rel=1e-12)
    assert kl_sum_dims(actor, obs, old).item() == pytest.approx(
        per_dim.sum(-1).mean().item(), rel=1e-12
    )
    assert kl_sum_dims(actor, obs, old).item() == pytest.approx(2 * kl.item(), rel=1e-12)

    cat_actor = CategoricalActor(3, 4, hidden=(5,)).double()
    cat_old = frozen_distribution(cat_actor, obs)
    assert isinstance(cat_old, Categorical)
    with torch.no_grad():
        output_bias = list(cat_actor.logits_net.parameters())[-1]
        output_bias.add_(torch.tensor([0.5, 0.0, -0.5, 0.2], dtype=torch.float64))
    p_old = cat_old.probs
    log_p_new = torch.log_softmax(cat_actor(obs).detach(), -1)
    expected = (p_old * (torch.log(p_old) - log_p_new)).sum(-1).mean()
    assert kl_mean(cat_actor, obs, cat_old).item() == pytest.approx(expected.item(), rel=1e-10)
    assert kl_sum_dims(cat_actor, obs, cat_old).item() == pytest.approx(expected.item(), rel=1e-10)


# ------------------------------------------------------------------------------- line search


@pytest.fixture
def net_and_step() -> tuple[nn.Module, Tensor]:
    torch.manual_seed(5)
    net = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 1))
    step = torch.randn(flat_params(net).numel()) * 0.37
    return net, step


def test_line_search_restores_parameters_bit_for_bit(
    net_and_step: tuple[nn.Module, Tensor],
) -> None:
    net, step = net_and_step
    before = [p.detach().clone() for p in net.parameters()]
    evaluated: list[float] = []

    def evaluate() -> tuple[float, float]:
        evaluated.append(float(flat_params(net).sum()))
        return 1.0, 0.5

    result = backtracking_line_search(net, step, evaluate, lambda *_: False, max_tries=6, decay=0.7)
    assert not result.accepted
    assert (result.fraction, result.tries, result.loss, result.kl) == (0.0, 6, 1.0, 0.5)
    assert len(evaluated) == 6 and len(set(evaluated)) == 6  # six distinct candidates were set
    for p, q in zip(net.parameters(), before, strict=True):
        assert torch.equal(p, q)


def test_line_search_accepts_first_acceptable_fraction(
    net_and_step: tuple[nn.Module, Tensor],
) -> None:
    net, step = net_and_step
    theta_old = flat_params(net)
    seen: list[float] = []

    def evaluate() -> tuple[float, float]:
        # Candidate parameters must be θ_old + fraction·step when evaluate runs.
        offset = flat_params(net) - theta_old
        fraction = float(offset.dot(step) / step.dot(step))
        torch.testing.assert_close(offset, fraction * step)
        seen.append(fraction)
        return -fraction, fraction**2

    result = backtracking_line_search(
        net, step, evaluate, lambda loss, kl, frac: kl <= 0.25, max_tries=15, decay=0.8
    )
    assert result.accepted and result.tries == 5
    assert result.fraction == 1.0 * 0.8 * 0.8 * 0.8 * 0.8
    assert result.kl == pytest.approx(result.fraction**2)
    assert seen == pytest.approx([0.8**j for j in range(5)])
    assert torch.equal(flat_params(net), theta_old + result.fraction * step)


def test_line_search_non_finite_values_reject_and_shrink(
    net_and_step: tuple[nn.Module, Tensor],
) -> None:
    net, step = net_and_step
    theta_old = flat_params(net)
    outputs = iter([(0.0, math.nan), (math.inf, 0.0), (0.1, 0.2), (0.0, 0.0)])
    accept_calls: list[tuple[float, float, float]] = []

    def accept(loss: float, kl: float, fraction: float) -> bool:
        accept_calls.append((loss, kl, fraction))
        return True

    result = backtracking_line_search(net, step, lambda: next(outputs), accept, 10, 0.5)
    assert result.accepted and result.tries == 3 and result.fraction == 0.25
    assert accept_calls == [(0.1, 0.2, 0.25)]  # non-finite candidates never reach accept
    assert torch.equal(flat_params(net), theta_old + 0.25 * step)


@pytest.mark.parametrize("kind", ["gaussian", "categorical"])
def test_gauss_newton_fvp_equals_double_backprop_hessian(kind: str) -> None:
    from safebench.core.optim import _detached, _trainable, hessian_vector_product

    torch.manual_seed(3)
    actor: GaussianActor | CategoricalActor
    if kind == "gaussian":
        actor = GaussianActor(5, 3, (16, 16))
        with torch.no_grad():
            actor.log_std.copy_(torch.tensor([-0.3, 0.2, 0.5]))
    else:
        actor = CategoricalActor(5, 4, (16, 16))
    obs = torch.randn(64, 5)
    dist = actor.distribution(obs)
    kl = torch.distributions.kl_divergence(_detached(dist), dist).mean()
    reference = hessian_vector_product(kl, _trainable(actor), damping=0.1)
    fast = fisher_vector_product(actor, obs, damping=0.1)
    for _ in range(3):
        v = torch.randn(sum(p.numel() for p in actor.parameters()))
        torch.testing.assert_close(fast(v), reference(v), rtol=1e-5, atol=1e-6)
