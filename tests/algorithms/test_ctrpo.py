"""C-TRPO: divergence, its curvature, the β = 0 limit, the budget barrier and the hysteresis."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor
from torch.distributions import kl_divergence
from torch.func import functional_call

from algorithms.ctrpo import (
    CTRPO,
    CTRPOConfig,
    Mode,
    Phi,
    bregman_term,
    constrained_divergence,
    curvature_product,
    next_mode,
    phi_second_derivative,
)
from safebench import registry
from safebench.core.onpolicy import Batch
from safebench.core.optim import (
    backtracking_line_search,
    conjugate_gradient,
    fisher_vector_product,
    flat_grad,
    flat_params,
    frozen_distribution,
    kl_mean,
)
from safebench.core.policies import Actor, CategoricalActor, GaussianActor
from tests.algorithms.synthetic import OBS_DIM, box_spaces, discrete_spaces, synthetic_rollout

GAMMA = 0.99
LIMIT = 5.0


def _config(**overrides: Any) -> CTRPOConfig:
    return CTRPOConfig(hidden_sizes=(16, 16), update_iters=1, **overrides)


def _algo(mode: Mode | None = "normal", seed: int = 0, discrete: bool = False, **cfg: Any) -> CTRPO:
    """A small C-TRPO in ``mode``, past its first logged epoch, so that its updates read the
    measured Ĵc (None: as constructed, before any epoch)."""
    obs_space, act_space = discrete_spaces() if discrete else box_spaces()
    algo = CTRPO(obs_space, act_space, _config(**cfg), cost_limit=LIMIT, seed=seed)
    if mode is not None:
        algo.mode = mode
        algo.cost_logged = True
    return algo


# --------------------------------------------------------------------------------------------
# The Bregman term and the mode switch
# --------------------------------------------------------------------------------------------


def _phi(x: float, phi: Phi) -> tuple[float, float]:
    """``(φ(x), φ'(x))`` written out independently of the implementation."""
    if phi == "entropy":
        return x * math.log(x), math.log(x) + 1.0
    return -math.log(x), -1.0 / x


@pytest.mark.parametrize("phi", ["entropy", "barrier"])
@pytest.mark.parametrize("delta_b", [0.3, 2.0, 5.0])
def test_bregman_term_is_the_bregman_divergence_of_phi(phi: Phi, delta_b: float) -> None:
    for alpha in np.linspace(-3.0, 0.999 * delta_b, 9):
        f_lo, _ = _phi(delta_b - alpha, phi)
        f_b, df_b = _phi(delta_b, phi)
        expected = f_lo - f_b + df_b * alpha
        got = float(bregman_term(torch.tensor(alpha, dtype=torch.float64), delta_b, phi))
        assert got == pytest.approx(expected, rel=1e-10, abs=1e-12)
        assert got >= 0.0  # a Bregman divergence of a convex φ
    assert float(bregman_term(torch.tensor(0.0), delta_b, phi)) == 0.0


@pytest.mark.parametrize("phi", ["entropy", "barrier"])
def test_alpha_at_or_beyond_budget_makes_divergence_infinite(phi: Phi) -> None:
    delta_b = 0.5
    for alpha in (0.5, 0.5000001, 3.0):
        assert float(bregman_term(torch.tensor(alpha, dtype=torch.float64), delta_b, phi)) == (
            math.inf
        )
    assert math.isfinite(float(bregman_term(torch.tensor(0.4999), delta_b, phi)))
    # the barrier is undefined outside the budget; normal mode never gets there
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="must be > 0"):
            bregman_term(torch.tensor(0.0), bad, phi)


@pytest.mark.parametrize(
    ("mode", "ep_cost", "expected"),
    [
        # normal stays normal strictly below the limit d = 5
        ("normal", 0.0, "normal"),
        ("normal", 4.999, "normal"),
        ("normal", 5.0, "recovery"),
        ("normal", 7.0, "recovery"),
        # recovery ends only strictly below b_H = 0.8·d = 4
        ("recovery", 7.0, "recovery"),
        ("recovery", 4.5, "recovery"),
        ("recovery", 4.0, "recovery"),
        ("recovery", 3.999, "normal"),
        ("recovery", 0.0, "normal"),
    ],
)
def test_hysteresis_thresholds(mode: Mode, ep_cost: float, expected: Mode) -> None:
    assert next_mode(mode, ep_cost, LIMIT, 0.8) == expected


def test_first_update_reads_zero_cost_as_the_official_logger() -> None:
    """c-trpo.py reads Ĵc with logger.get_stats, 0.0 until the logger's first dump, which
    follows the first epoch with a finished episode: the updates up to and including that
    epoch's run in normal mode with the whole budget Δb = d, whatever Ĵc is."""
    algo = _algo(mode=None)
    assert algo.mode == "recovery" and not algo.cost_logged  # the official start
    # epoch 0 finished episodes costing 7 > d: still normal, Δb = d
    info = algo.update(synthetic_rollout(algo, ep_cost=7.0, seed=0))
    assert info["mode"] == 1.0 and info["delta_b"] == LIMIT
    assert info["barrier_curvature"] == pytest.approx(1.0 / LIMIT)
    # from the next epoch on the measured Ĵc counts
    assert algo.cost_logged
    info = algo.update(synthetic_rollout(algo, ep_cost=7.0, seed=1))
    assert info["mode"] == 0.0 and info["delta_b"] == pytest.approx(LIMIT - 7.0)

    # no episode finished in epoch 0 (Ĵc NaN): the logger has not dumped after epoch 1 either
    late = _algo(mode=None)
    for i, ep_cost in enumerate([math.nan, 7.0]):
        info = late.update(synthetic_rollout(late, ep_cost=ep_cost, seed=i))
        assert info["mode"] == 1.0 and info["delta_b"] == LIMIT, i
    assert late.update(synthetic_rollout(late, ep_cost=7.0, seed=2))["mode"] == 0.0
    # the flag is part of the checkpoint
    for logged in (False, True):
        algo = _algo(mode=None)
        algo.cost_logged = logged
        restored = _algo(mode=None, seed=5)
        restored.load_state_dict(algo.state_dict())
        assert restored.cost_logged is logged
        mode = restored.update(synthetic_rollout(restored, ep_cost=7.0, seed=3))["mode"]
        assert mode == (0.0 if logged else 1.0)


def test_hysteresis_in_updates_and_checkpoint() -> None:
    algo = _algo(mode=None)
    # the first epoch is normal whatever its cost (above), with Δb = d
    info = algo.update(synthetic_rollout(algo, ep_cost=4.5, seed=99))
    assert info["mode"] == 1.0 and info["delta_b"] == LIMIT
    sequence = [(4.5, 1.0), (3.9, 1.0), (4.9, 1.0), (5.0, 0.0), (4.5, 0.0), (4.0, 0.0), (3.0, 1.0)]
    for i, (ep_cost, mode) in enumerate(sequence):
        rollout = synthetic_rollout(algo, ep_cost=ep_cost, seed=i)
        info = algo.update(rollout)
        assert info["mode"] == mode, (i, ep_cost)
        assert info["delta_b"] == pytest.approx(LIMIT - ep_cost)
        assert info["accepted"] == 1.0
        if mode == 0.0:
            # recovery: a cost-decreasing TRPO step under the plain KL
            assert info["beta"] == 0.0 and info["barrier_curvature"] == 0.0
            assert info["divergence"] == info["kl"] <= 0.01
            assert info["loss_after"] < info["loss_before"]  # cost surrogate decreased
            assert info["alpha"] < 0.0
        else:
            assert info["beta"] == 1.0
            assert info["barrier_curvature"] == pytest.approx(1.0 / (LIMIT - ep_cost))
            assert info["kl"] < info["divergence"] <= 0.01
    assert algo.mode == "normal"
    # the mode is part of the checkpoint: at Ĵc = 4.5 a normal algorithm stays normal, a
    # recovering one (the state of a fresh instance) stays in recovery
    restored = _algo(mode=None, seed=5)
    restored.load_state_dict(algo.state_dict())
    assert restored.mode == "normal"
    assert restored.update(synthetic_rollout(restored, ep_cost=4.5, seed=9))["mode"] == 1.0
    recovering = _algo(mode="recovery", seed=5)
    assert recovering.update(synthetic_rollout(recovering, ep_cost=4.5, seed=9))["mode"] == 0.0


# --------------------------------------------------------------------------------------------
# The curvature seen by conjugate gradient
# --------------------------------------------------------------------------------------------


def _float64_problem(actor: Actor, seed: int, n: int = 64) -> Batch:
    """A double-precision batch whose ``logp`` is the actor's own, so α(θ_k) = 0 exactly."""
    actor.double()
    gen = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, OBS_DIM, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        act = actor.sample(obs, gen)
        logp = actor.log_prob(obs, act)
    adv_c = torch.randn(n, generator=gen, dtype=torch.float64)
    return Batch(
        obs=obs,
        act=act,
        logp=logp,
        adv_r=torch.randn(n, generator=gen, dtype=torch.float64),
        adv_c=adv_c - adv_c.mean(),
        target_r=torch.zeros(n, dtype=torch.float64),
        target_c=torch.zeros(n, dtype=torch.float64),
        ep_cost=0.0,
    )


Params = dict[str, Tensor]


def _distribution(actor: Actor, params: Params, obs: Tensor) -> Any:
    """π(·|s) with the actor's parameters replaced by ``params`` (all of them, log σ included)."""
    out = functional_call(actor, params, (obs,))
    if isinstance(actor, GaussianActor):
        return torch.distributions.Normal(out, torch.exp(params["log_std"]))
    return torch.distributions.Categorical(logits=out)


def _log_prob(actor: Actor, params: Params, batch: Batch) -> Tensor:
    logp = _distribution(actor, params, batch.obs).log_prob(batch.act)
    return logp.sum(-1) if isinstance(actor, GaussianActor) else logp


def _full_hessian(actor: Actor, fn: Callable[[Params], Tensor]) -> Tensor:
    """The dense Hessian ``(P, P)`` of ``fn`` over the actor's flattened parameters."""
    names = [k for k, _ in actor.named_parameters()]
    shapes = [p.shape for _, p in actor.named_parameters()]

    def f(flat: Tensor) -> Tensor:
        parts = torch.split(flat, [math.prod(s) for s in shapes])
        return fn({k: v.view(s) for k, v, s in zip(names, parts, shapes, strict=True)})

    h = torch.autograd.functional.hessian(f, flat_params(actor))
    assert isinstance(h, Tensor)
    return h


def _actor(kind: str) -> Actor:
    torch.manual_seed(3)
    if kind == "gaussian":
        return GaussianActor(OBS_DIM, 2, (5,), "tanh", log_std_init=-0.3)
    return CategoricalActor(OBS_DIM, 4, (5,), "tanh")


@pytest.mark.parametrize("kind", ["gaussian", "categorical"])
@pytest.mark.parametrize("phi", ["entropy", "barrier"])
def test_divergence_hessian_is_fisher_plus_rank_one(kind: str, phi: Phi) -> None:
    actor = _actor(kind)
    batch = _float64_problem(actor, seed=1)
    beta, delta_b, damping = 0.7, 1.3, 0.1
    old = frozen_distribution(actor, batch.obs)

    # independent autograd: dense Hessians of KL̄ and of D_C (formulas written out here), and
    # g_c = ∇α(θ_k)
    def kl_of(params: Params) -> Tensor:
        return kl_divergence(old, _distribution(actor, params, batch.obs)).mean()

    def alpha_of(params: Params) -> Tensor:
        ratio = torch.exp(_log_prob(actor, params, batch) - batch.logp)
        return ((ratio - 1.0) * batch.adv_c).mean() / (1.0 - GAMMA)

    def div_of(params: Params) -> Tensor:
        a = alpha_of(params)
        u = (delta_b - a) / delta_b
        term = a + (delta_b - a) * torch.log(u) if phi == "entropy" else -torch.log(u) - a / delta_b
        return kl_of(params) + beta * term

    fisher = _full_hessian(actor, kl_of)
    hess = _full_hessian(actor, div_of)
    params = list(actor.parameters())
    g_c = flat_grad(alpha_of(dict(actor.named_parameters())), params)
    phi2 = phi_second_derivative(delta_b, phi)
    assert phi2 == pytest.approx(1.0 / delta_b if phi == "entropy" else 1.0 / delta_b**2)
    predicted = fisher + beta * phi2 * torch.outer(g_c, g_c)
    scale = float(hess.abs().max())
    torch.testing.assert_close(hess, predicted, rtol=0, atol=1e-10 * scale)
    # the rank-one term is large here, so the identity is not carried by F alone
    assert float((hess - fisher).abs().max()) > 1e-2 * scale

    # the product CG uses is H v + damping v; and ∇D_C(θ_k) = 0, D_C(θ_k) = 0
    hvp = curvature_product(actor, batch, beta, delta_b, phi, GAMMA, damping)
    gen = torch.Generator().manual_seed(7)
    vs = [torch.randn(g_c.numel(), generator=gen, dtype=torch.float64) for _ in range(3)]
    for v in vs:
        torch.testing.assert_close(hvp(v), hess @ v + damping * v, rtol=1e-10, atol=1e-10 * scale)
    div, _, a0 = constrained_divergence(actor, batch, old, beta, delta_b, phi, GAMMA)
    assert float(a0.detach()) == 0.0 and abs(float(div.detach())) < 1e-15
    assert float(flat_grad(div, params).abs().max()) < 1e-12
    # β = 0: exactly TRPO's Fisher-vector product
    trpo = fisher_vector_product(actor, batch.obs, damping)
    zero = curvature_product(actor, batch, 0.0, delta_b, phi, GAMMA, damping)
    assert torch.equal(zero(vs[0]), trpo(vs[0]))


# --------------------------------------------------------------------------------------------
# β = 0 is TRPO
# --------------------------------------------------------------------------------------------


def _reference_trpo(actor: Actor, batch: Batch, cfg: CTRPOConfig) -> None:
    """TRPO as in docs/algorithms.md#the-trpo-step, from the shared primitives (reward
    surrogate, KL̄)."""
    params = list(actor.parameters())
    old = frozen_distribution(actor, batch.obs)

    def surrogate() -> Tensor:
        ratio = torch.exp(actor.log_prob(batch.obs, batch.act) - batch.logp)
        return -(ratio * batch.adv_r).mean()

    loss = surrogate()
    before = float(loss.detach())
    g = -flat_grad(loss, params)
    fvp = fisher_vector_product(actor, batch.obs, cfg.cg_damping)
    x = conjugate_gradient(fvp, g, cfg.cg_iters)
    step = math.sqrt(2 * cfg.target_kl / (float(torch.dot(x, fvp(x))) + 1e-8)) * x

    def evaluate() -> tuple[float, float]:
        with torch.no_grad():
            return float(surrogate()), float(kl_mean(actor, batch.obs, old))

    def accept(loss: float, kl: float, _fraction: float) -> bool:
        return before - loss >= 0 and kl <= cfg.target_kl

    backtracking_line_search(
        actor, step, evaluate, accept, cfg.line_search_steps, cfg.line_search_decay
    )


@pytest.mark.parametrize("discrete", [False, True])
@pytest.mark.parametrize("ep_cost", [0.0, 3.0, 4.99])
def test_beta_zero_reproduces_trpo_bit_for_bit(discrete: bool, ep_cost: float) -> None:
    algo = _algo(beta=0.0, discrete=discrete, seed=4)
    rollout = synthetic_rollout(algo, ep_cost=ep_cost, seed=4)
    batch = algo.prepare(rollout)
    reference = _algo(beta=0.0, discrete=discrete, seed=4)
    barrier = _algo(beta=1.0, discrete=discrete, seed=4)
    assert torch.equal(flat_params(reference.actor), flat_params(algo.actor))
    info = algo.update_actor(batch)
    _reference_trpo(reference.actor, batch, reference.config)
    barrier.update_actor(batch)
    assert info["mode"] == 1.0 and info["accepted"] == 1.0
    assert info["divergence"] == info["kl"]
    assert torch.equal(flat_params(algo.actor), flat_params(reference.actor))
    # the comparison can fail: with the barrier the step differs
    assert not torch.equal(flat_params(barrier.actor), flat_params(reference.actor))


# --------------------------------------------------------------------------------------------
# Full updates
# --------------------------------------------------------------------------------------------


def _aligned_rollout(algo: CTRPO, ep_cost: float, scale: float = 1.0) -> Any:
    """A rollout whose cost advantage is ``scale`` times its reward advantage: every
    reward-improving step spends budget (α > 0)."""
    rollout = synthetic_rollout(algo, ep_cost=ep_cost, seed=3)
    return type(rollout)(**{**rollout.__dict__, "adv_c": scale * rollout.adv_r})


def test_step_spending_more_than_the_budget_is_rejected() -> None:
    # β tiny: the search direction is TRPO's, only the domain α < Δb of D_C can reject
    kwargs: dict[str, Any] = {"beta": 1e-9, "seed": 6}
    algo = _algo(**kwargs)
    before = {k: v.clone() for k, v in algo.actor.state_dict().items()}
    info = algo.update(_aligned_rollout(algo, ep_cost=LIMIT - 1e-5, scale=0.01))
    assert info["mode"] == 1.0
    assert info["accepted"] == 0.0
    assert info["line_search_tries"] == 15.0
    assert info["domain_rejections"] == 15.0  # every candidate had α ≥ Δb
    assert info["divergence"] == 0.0 and info["step_norm"] == 0.0
    for k, v in algo.actor.state_dict().items():
        assert torch.equal(v, before[k]), k
    # the same step with budget to spare is accepted at once and spends part of it
    roomy = _algo(**kwargs)
    info = roomy.update(_aligned_rollout(roomy, ep_cost=0.0, scale=0.01))
    assert info["accepted"] == 1.0 and info["domain_rejections"] == 0.0
    assert 0.0 < info["alpha"] < LIMIT


@pytest.mark.parametrize("phi", ["entropy", "barrier"])
@pytest.mark.parametrize("ep_cost", [0.0, 4.0, 4.9])
def test_normal_step_respects_constrained_divergence(phi: Phi, ep_cost: float) -> None:
    algo = _algo(phi=phi, seed=2)
    rollout = _aligned_rollout(algo, ep_cost=ep_cost)
    batch = algo.prepare(rollout)
    old = frozen_distribution(algo.actor, batch.obs)
    info = algo.update(rollout)
    assert all(math.isfinite(v) for v in info.values())
    assert info["mode"] == 1.0 and info["accepted"] == 1.0
    delta_b = LIMIT - ep_cost
    with torch.no_grad():
        div, kl, alpha = constrained_divergence(algo.actor, batch, old, 1.0, delta_b, phi, GAMMA)
    assert float(div) == pytest.approx(info["divergence"], rel=1e-6)
    assert float(kl) == pytest.approx(info["kl"], rel=1e-6)
    assert float(alpha) == pytest.approx(info["alpha"], rel=1e-6)
    assert float(kl) < float(div) <= 0.01
    assert 0.0 < float(alpha) < delta_b
    assert info["loss_after"] < info["loss_before"]


def test_smaller_budget_gives_more_cautious_steps() -> None:
    """The rank-one term penalises cost-increasing directions more as Δb shrinks."""
    alphas = []
    for ep_cost in (0.0, 4.0, 4.9):
        algo = _algo(seed=2)
        alphas.append(algo.update(_aligned_rollout(algo, ep_cost=ep_cost))["alpha"])
    assert alphas[0] > alphas[1] > alphas[2] > 0.0


def test_adaptive_target_kl() -> None:
    algo = _algo(adaptive_target_kl=True)
    info = algo.update(synthetic_rollout(algo, ep_cost=3.0))
    assert info["target_div"] == pytest.approx(0.01 * (1 - 0.5 * 3.0 / LIMIT))
    assert info["divergence"] <= info["target_div"]


def test_config_defaults_and_registry() -> None:
    cfg = CTRPOConfig()
    assert (cfg.beta, cfg.hyst_frac, cfg.phi, cfg.target_kl) == (1.0, 0.8, "entropy", 0.01)
    assert (cfg.cg_iters, cfg.cg_damping) == (15, 0.1)
    assert (cfg.line_search_steps, cfg.line_search_decay) == (15, 0.8)
    assert (cfg.batch_size, cfg.critic_lr, cfg.update_iters) == (128, 1e-3, 10)
    assert not cfg.adaptive_target_kl
    for name, field in CTRPOConfig.model_fields.items():
        assert (field.description or "")[:3] in ("[H]", "[M]", "[L]"), name
    assert registry.get("ctrpo").cls is CTRPO
    assert isinstance(registry.resolve_config("ctrpo", {"beta": 0.05}), CTRPOConfig)
