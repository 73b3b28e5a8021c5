"""K-FAC natural gradients against the exact Fisher built by autograd."""

from __future__ import annotations

import io

import pytest
import torch
from torch import Tensor
from torch.func import functional_call, jacrev, vmap

from safebench.core.kfac import KFAC
from safebench.core.optim import flat_grad
from safebench.core.policies import Actor, CategoricalActor, GaussianActor

F64 = torch.float64


def exact_fisher(actor: Actor, obs: Tensor) -> Tensor:
    """``F = mean_s J_sᵀ F_out(s) J_s`` ``(P, P)`` in flat-parameter order.

    ``J_s`` is the autograd Jacobian of the network output (Gaussian mean or logits) with
    respect to every parameter; the output Fisher is ``Σ⁻¹`` (Gaussian) or ``diag(p) − ppᵀ``
    (categorical). The Gaussian log σ block is ``2·I`` (no cross term with the mean).
    """
    names = [n for n, _ in actor.named_parameters()]
    values = tuple(p.detach() for _, p in actor.named_parameters())

    def head(params: tuple[Tensor, ...], s: Tensor) -> Tensor:
        out: Tensor = functional_call(actor, dict(zip(names, params)), (s[None],))[0]
        return out

    jac = vmap(jacrev(head), in_dims=(None, 0))(values, obs)
    n = obs.shape[0]
    J = torch.cat([j.reshape(n, j.shape[1], -1) for j in jac], dim=-1)  # (N, out, P)
    if isinstance(actor, GaussianActor):
        prec = torch.exp(-2.0 * actor.log_std.detach())
        F = torch.einsum("nip,i,niq->pq", J, prec, J) / n
        k = actor.log_std.numel()
        assert names[0] == "log_std"  # log σ leads the flat vector
        F[:k, :k] += 2.0 * torch.eye(k, dtype=F.dtype)
        return F
    probs = torch.softmax(actor(obs), dim=-1).detach()
    out_fisher = torch.diag_embed(probs) - probs[:, :, None] * probs[:, None, :]
    return torch.einsum("nip,nij,njq->pq", J, out_fisher, J) / n


def block_index(kfac: KFAC) -> dict[int, Tensor]:
    """Flat indices of each K-FAC block (−1: log σ)."""
    out: dict[int, list[Tensor]] = {}
    for s in kfac.slots:
        out.setdefault(s.block, []).append(torch.arange(s.offset, s.offset + s.numel))
    return {b: torch.cat(ix) for b, ix in out.items()}


def rel(a: Tensor, b: Tensor) -> float:
    return float((a - b).norm() / b.norm())


# --------------------------------------------------------------------------------------------
# Linear-Gaussian policy: K-FAC is exact (the Fisher of vec[W|b] is A ⊗ Σ⁻¹)
# --------------------------------------------------------------------------------------------


def linear_gaussian(n: int = 20_000) -> tuple[GaussianActor, Tensor, Tensor]:
    """μ = W s + b (no hidden layer), σ = exp([−0.5, 0.2]); a surrogate gradient ``(P,)``.

    The states are anisotropic and off-centre so that A is far from a multiple of I; the
    advantage is correlated with the action so that the gradient is not trivial.
    """
    gen = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    actor = GaussianActor(4, 2, ()).double()
    with torch.no_grad():
        actor.log_std.copy_(torch.tensor([-0.5, 0.2]))
    obs = torch.randn(n, 4, generator=gen, dtype=F64) * torch.tensor([1.0, 2.0, 0.5, 1.5]) + 0.3
    act = actor.sample(obs, gen).detach()
    mean, std = actor(obs).detach(), torch.exp(actor.log_std.detach())
    adv = 2.0 * (act[:, 0] - mean[:, 0]) / std[0] + 0.5 * torch.randn(n, generator=gen, dtype=F64)
    logp_old = actor.log_prob(obs, act).detach()
    ratio = torch.exp(actor.log_prob(obs, act) - logp_old)
    grad = flat_grad((ratio * adv).mean(), list(actor.parameters()))
    return actor, obs, grad


def test_linear_gaussian_analytic_G_is_the_exact_natural_gradient() -> None:
    actor, obs, grad = linear_gaussian()
    F = exact_fisher(actor, obs)
    kfac = KFAC(actor, decay=0.0, damping=1e-12, fisher="exact")
    kfac.update_stats(obs)
    kfac.refresh_inverse()
    # analytic G: the output Fisher Σ⁻¹ itself
    for g in kfac.G:
        assert g is not None
        torch.testing.assert_close(g, torch.diag(torch.exp(-2.0 * actor.log_std.detach())))
    assert rel(kfac.dense(), F) < 1e-12
    nat = kfac.natural_gradient(grad)
    exact = torch.linalg.solve(F, grad)
    assert rel(nat, exact) < 1e-8
    assert float(kfac.quadratic_form(nat)) == pytest.approx(float(nat @ F @ nat), rel=1e-10)


def test_linear_gaussian_sampled_G_within_monte_carlo_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    actor, obs, grad = linear_gaussian()
    exact = torch.linalg.solve(exact_fisher(actor, obs), grad)
    kfac = KFAC(actor, decay=0.0, damping=1e-12, fisher="sampled")
    kfac.update_stats(obs, torch.Generator().manual_seed(7))
    kfac.refresh_inverse()
    sampled = rel(kfac.natural_gradient(grad), exact)
    # One action per state, 20000 states: MC error of G about √(d/N) ≈ 1%.
    assert 1e-4 < sampled < 0.03

    # The tolerance is tight enough to catch the "empirical Fisher" (G from the
    # advantage-weighted scores of the surrogate), which is ~90% off
    # (docs/algorithms.md#kfcpo-k-fac-curvature).
    mean, std = actor(obs).detach(), torch.exp(actor.log_std.detach())
    act = mean + std * torch.randn(
        mean.shape, generator=torch.Generator().manual_seed(3), dtype=F64
    )
    adv = 2.0 * (act[:, 0] - mean[:, 0]) / std[0]
    monkeypatch.setattr(
        kfac, "_output_vectors", lambda head, gen: [(act - mean) / std**2 * adv[:, None]]
    )
    kfac.update_stats(obs)
    kfac.refresh_inverse()
    assert rel(kfac.natural_gradient(grad), exact) > 0.3


# --------------------------------------------------------------------------------------------
# Small tanh MLP
# --------------------------------------------------------------------------------------------


def mlp_actor(kind: str, seed: int = 0) -> Actor:
    torch.manual_seed(seed)
    if kind == "gaussian":
        actor: Actor = GaussianActor(3, 2, (6, 5), "tanh", log_std_init=-0.3)
    else:
        actor = CategoricalActor(3, 4, (6, 5), "tanh")
    return actor.double()


@pytest.mark.parametrize("kind", ["gaussian", "categorical"])
def test_mlp_single_state_blocks_are_exact(kind: str) -> None:
    """With one state, ā is fixed, so E[(ā ⊗ g)(ā ⊗ g)ᵀ] = āāᵀ ⊗ E[ggᵀ] exactly: every K-FAC
    block must equal the corresponding diagonal block of the exact Fisher, and the damped
    natural gradient must be the exact block-diagonal solve."""
    actor = mlp_actor(kind)
    obs = torch.randn(1, 3, dtype=F64).expand(8, 3)
    F = exact_fisher(actor, obs)
    kfac = KFAC(actor, decay=0.0, damping=1e-3, fisher="exact", eig_floor=0.0)
    kfac.update_stats(obs)
    kfac.refresh_inverse()
    dense = kfac.dense()
    block_diag = torch.zeros_like(F)
    for ix in block_index(kfac).values():
        block_diag[ix[:, None], ix[None, :]] = F[ix[:, None], ix[None, :]]
    assert float((dense - block_diag).abs().max()) < 1e-12 * float(F.abs().max())

    grad = torch.randn(F.shape[0], dtype=F64, generator=torch.Generator().manual_seed(2))
    expected = torch.linalg.solve(block_diag + 1e-3 * torch.eye(F.shape[0], dtype=F64), grad)
    assert rel(kfac.natural_gradient(grad), expected) < 1e-8
    assert float(kfac.quadratic_form(grad)) == pytest.approx(float(grad @ dense @ grad))
    # F̂·v against the exact Fisher's diagonal blocks; damped adds γv; inverse of the solve
    assert rel(kfac.product(grad), block_diag @ grad) < 1e-12
    torch.testing.assert_close(kfac.product(grad, damped=True), block_diag @ grad + 1e-3 * grad)
    assert rel(kfac.product(kfac.natural_gradient(grad), damped=True), grad) < 1e-8


def test_mlp_many_states_against_exact_fisher() -> None:
    """500 distinct states: log σ and output-layer blocks stay exact (their G is Σ⁻¹ at every
    state); hidden-layer blocks carry the Kronecker (independence) approximation only; the
    natural gradient is the damped inverse of F̂ (dense solve)."""
    actor = mlp_actor("gaussian", seed=1)
    obs = torch.randn(500, 3, dtype=F64, generator=torch.Generator().manual_seed(4))
    F = exact_fisher(actor, obs)
    kfac = KFAC(actor, decay=0.0, damping=1e-2, fisher="exact", eig_floor=0.0)
    kfac.update_stats(obs)
    kfac.refresh_inverse()
    dense = kfac.dense()
    blocks = block_index(kfac)
    last = len(kfac.layers) - 1
    for b, ix in blocks.items():
        err = rel(dense[ix[:, None], ix[None, :]], F[ix[:, None], ix[None, :]])
        if b in (-1, last):
            assert err < 1e-12, b
        else:
            assert 1e-3 < err < 0.5, b  # approximate, but the right matrix
    grad = torch.randn(F.shape[0], dtype=F64, generator=torch.Generator().manual_seed(5))
    expected = torch.linalg.solve(dense + 1e-2 * torch.eye(F.shape[0], dtype=F64), grad)
    nat = kfac.natural_gradient(grad)
    assert rel(nat, expected) < 1e-8
    other = torch.randn(F.shape[0], dtype=F64, generator=torch.Generator().manual_seed(6))
    stacked = kfac.natural_gradient(torch.stack([grad, other]))  # (k, P) in one call
    torch.testing.assert_close(stacked, torch.stack([nat, kfac.natural_gradient(other)]))
    # log σ is preconditioned exactly: (F⁻¹g)_logσ = g_logσ / 2 (here with damping γ)
    torch.testing.assert_close(nat[blocks[-1]], grad[blocks[-1]] / (2.0 + 1e-2))
    # quadratic forms: undamped from the factors, damped adds γ‖d‖²
    q = float(nat @ dense @ nat)
    assert float(kfac.quadratic_form(nat)) == pytest.approx(q, rel=1e-10)
    assert float(kfac.quadratic_form(nat, damped=True)) == pytest.approx(
        q + 1e-2 * float(nat @ nat), rel=1e-10
    )


def test_sampled_G_estimates_exact_G_on_mlp() -> None:
    actor = mlp_actor("categorical", seed=2)
    obs = torch.randn(4000, 3, dtype=F64, generator=torch.Generator().manual_seed(6))
    exact = KFAC(actor, decay=0.0, fisher="exact")
    sampled = KFAC(actor, decay=0.0, fisher="sampled")
    exact.update_stats(obs)
    sampled.update_stats(obs, torch.Generator().manual_seed(0))
    for g_exact, g_sampled in zip(exact.G, sampled.G):
        assert g_exact is not None and g_sampled is not None
        assert rel(g_sampled, g_exact) < 0.1
    for a_exact, a_sampled in zip(exact.A, sampled.A):
        assert a_exact is not None and a_sampled is not None
        assert torch.equal(a_exact, a_sampled)  # A does not depend on the actions


def test_ema_schedule_and_state_round_trip() -> None:
    actor = mlp_actor("gaussian")
    gen = torch.Generator().manual_seed(0)
    obs = [torch.randn(64, 3, dtype=F64, generator=gen) for _ in range(3)]
    kfac = KFAC(actor, decay=0.9, fisher="exact")
    batch = [kfac.batch_factors(o) for o in obs]
    for o in obs:
        kfac.update_stats(o)
    a0, a1, a2 = (b[0][0] for b in batch)
    torch.testing.assert_close(kfac.A[0], 0.9 * (0.9 * a0 + 0.1 * a1) + 0.1 * a2)
    kfac.refresh_inverse()
    assert (kfac.stats_updates, kfac.inverse_refreshes) == (3, 1)

    buffer = io.BytesIO()
    torch.save(kfac.state_dict(), buffer)
    buffer.seek(0)
    clone = KFAC(actor, decay=0.9, fisher="exact")
    clone.load_state_dict(torch.load(buffer))
    grad = torch.randn(kfac.numel, dtype=F64, generator=gen)
    assert torch.equal(clone.natural_gradient(grad), kfac.natural_gradient(grad))
    assert torch.equal(clone.quadratic_form(grad), kfac.quadratic_form(grad))
    assert (clone.stats_updates, clone.inverse_refreshes) == (3, 1)


def test_rejects_unsupported_structures() -> None:
    actor = mlp_actor("gaussian")
    actor.register_parameter("extra", torch.nn.Parameter(torch.zeros(2, dtype=F64)))
    with pytest.raises(TypeError, match="not covered"):
        KFAC(actor)
    frozen = GaussianActor(3, 2, (4,))
    frozen.log_std.requires_grad_(False)
    with pytest.raises(TypeError, match="trainable"):
        KFAC(frozen)
    fresh = KFAC(mlp_actor("gaussian"))
    with pytest.raises(RuntimeError):
        fresh.natural_gradient(torch.zeros(fresh.numel, dtype=F64))
