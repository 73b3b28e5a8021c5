"""The trust-region machinery CPO, PCPO and C-TRPO share (OmniSafe 0.5.0 semantics).

With ρ(θ) = π_θ(a|s) / π_k(a|s) on the rollout batch, the surrogates are

    L_r(θ) = −mean(ρ·A_r),   L_c(θ) = mean(ρ·A_c),

their gradients at θ_k are g = −∇L_r and b = ∇L_c, and the natural-gradient solves are
x = F⁻¹g and p = F⁻¹b (CG on the Fisher of KL̄ plus damping, ``safebench.core.optim``).
:func:`trust_region_update` backtracks a proposed step under OmniSafe's acceptance test
(``_cpo_search_step``): cost-surrogate increase ≤ max(−c, 0), KL̄ ≤ δ, and optionally a
reward-surrogate improvement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from pydantic import BaseModel, Field
from torch import Tensor
from torch.distributions import Distribution

from safebench.core.onpolicy import Batch
from safebench.core.optim import (
    LineSearchResult,
    backtracking_line_search,
    conjugate_gradient,
    fisher_vector_product,
    flat_grad,
    kl_mean,
)
from safebench.core.policies import Actor

__all__ = [
    "EPS",
    "PolicyGradients",
    "TrustRegionFields",
    "cpo_line_search",
    "policy_gradients",
    "surrogate_losses",
    "trust_region_update",
]

EPS = 1e-8  # OmniSafe's guard in every division of the CPO / PCPO solvers


class TrustRegionFields(BaseModel):
    """The natural-gradient step's settings, shared by every trust-region method (CPO, PCPO,
    C-TRPO, TRPO-Lag), mixed in before ``OnPolicyConfig``. The values are the same in OmniSafe
    0.5.0 (``CPO.yaml``/``PCPO.yaml``/``TRPOLag.yaml``) and in the official C-TRPO code
    (``c-trpo.py``, ``baselines/trpo_lag.py``) except the line-search length, which a method
    overrides where its source differs (OmniSafe CPO 20 tries, PCPO 200)."""

    target_kl: float = Field(
        0.01, gt=0, description="[H] δ: OmniSafe algo_cfgs.target_kl; milosen/ctrpo target_kl"
    )
    cg_iters: int = Field(
        15, ge=1, description="[H] OmniSafe algo_cfgs.cg_iters; milosen/ctrpo CG iters 15"
    )
    cg_damping: float = Field(
        0.1, ge=0, description="[H] OmniSafe algo_cfgs.cg_damping; milosen/ctrpo fvp + 0.1·v"
    )
    line_search_steps: int = Field(
        15, ge=1, description="[H] milosen/ctrpo TRPO_SEARCHING_STEPS / trpo_lag.py 15 tries"
    )
    line_search_decay: float = Field(
        0.8, gt=0, lt=1, description="[H] OmniSafe _cpo_search_step(decay=0.8); milosen/ctrpo 0.8"
    )


def surrogate_losses(actor: Actor, batch: Batch) -> tuple[Tensor, Tensor]:
    """``(L_r, L_c) = (−mean(ρ·A_r), mean(ρ·A_c))`` with ``ρ = exp(log π_θ(a|s) − logp_old)``."""
    ratio = torch.exp(actor.log_prob(batch.obs, batch.act) - batch.logp)
    return -(ratio * batch.adv_r).mean(), (ratio * batch.adv_c).mean()


@dataclass(frozen=True)
class PolicyGradients:
    """Everything the second-order step needs at ``θ_k`` (vectors ``(P,)``, scalars float)."""

    g: Tensor
    b: Tensor
    x: Tensor
    p: Tensor
    fx: Tensor  # (F + damping·I)·x, which PCPO's OmniSafe form uses
    q: float
    r: float
    s: float
    loss_r: float
    loss_c: float


def policy_gradients(
    actor: Actor, batch: Batch, cg_iters: int, cg_damping: float, fvp_sample_freq: int
) -> PolicyGradients:
    """Gradients of both surrogates and their natural-gradient solves ``x = F⁻¹g``, ``p = F⁻¹b``.

    F is the Hessian of KL̄ (mean over states and action dimensions) on every
    ``fvp_sample_freq``-th state, plus ``cg_damping·I``; both solves use ``cg_iters`` CG steps.
    """
    params = [w for w in actor.parameters() if w.requires_grad]
    loss_r, loss_c = surrogate_losses(actor, batch)
    g = -flat_grad(loss_r, params, retain_graph=True)
    b = flat_grad(loss_c, params)
    fvp = fisher_vector_product(actor, batch.obs[::fvp_sample_freq], cg_damping)
    x = conjugate_gradient(fvp, g, cg_iters)
    fx = fvp(x)
    p = conjugate_gradient(fvp, b, cg_iters)
    return PolicyGradients(
        g=g.detach(),
        b=b.detach(),
        x=x.detach(),
        p=p.detach(),
        fx=fx.detach(),
        q=float(torch.dot(x, fx)),
        r=float(torch.dot(g, p)),
        s=float(torch.dot(b, p)),
        loss_r=float(loss_r.detach()),
        loss_c=float(loss_c.detach()),
    )


def cpo_line_search(
    actor: Actor,
    batch: Batch,
    old_dist: Distribution,
    step: Tensor,
    loss_r_before: float,
    loss_c_before: float,
    c: float,
    require_reward_improvement: bool,
    target_kl: float,
    max_tries: int,
    decay: float,
) -> tuple[LineSearchResult, float, float]:
    """OmniSafe's ``_cpo_search_step``: first ``θ_k + decay^j·step`` with

        (not require_reward_improvement or L_r(before) − L_r(new) ≥ 0)
        and L_c(new) − L_c(before) ≤ max(−c, 0)  and  KL̄(π_k ‖ π_new) ≤ target_kl.

    Non-finite losses or KL reject the candidate and the step still shrinks (OmniSafe retries
    the same candidate after a non-finite KL, see ``backtracking_line_search``). On rejection
    the actor is restored bit-for-bit. Returns the search result and ``(L_r, L_c)`` at the
    last candidate evaluated.
    """
    last: list[float] = [math.nan, math.nan]

    def evaluate() -> tuple[float, float]:
        with torch.no_grad():
            loss_r, loss_c = surrogate_losses(actor, batch)
            kl = kl_mean(actor, batch.obs, old_dist)
        last[:] = [float(loss_r), float(loss_c)]
        return last[0] + last[1], float(kl)

    def accept(_loss: float, kl: float, _fraction: float) -> bool:
        loss_r, loss_c = last
        if require_reward_improvement and loss_r_before - loss_r < 0:
            return False
        return loss_c - loss_c_before <= max(-c, 0.0) and kl <= target_kl

    result = backtracking_line_search(actor, step, evaluate, accept, max_tries, decay)
    return result, last[0], last[1]


def trust_region_update(
    actor: Actor,
    batch: Batch,
    old_dist: Distribution,
    pg: PolicyGradients,
    step: Tensor,
    c: float,
    require_reward_improvement: bool,
    target_kl: float,
    max_tries: int,
    decay: float,
) -> dict[str, float]:
    """Apply :func:`cpo_line_search` along ``step``; diagnostics of the resulting actor."""
    if bool(torch.isfinite(step).all()):
        result, loss_r, loss_c = cpo_line_search(
            actor,
            batch,
            old_dist,
            step,
            pg.loss_r,
            pg.loss_c,
            c,
            require_reward_improvement,
            target_kl,
            max_tries,
            decay,
        )
    else:
        # OmniSafe asserts here; a degenerate solve is treated as a rejected step instead so
        # that one bad batch does not end the run.
        result = LineSearchResult(False, 0.0, 0, math.nan, math.nan)
    if not result.accepted:
        loss_r, loss_c = pg.loss_r, pg.loss_c
    with torch.no_grad():
        kl = float(kl_mean(actor, batch.obs, old_dist)) if result.accepted else 0.0
    return {
        "accepted": float(result.accepted),
        "step_fraction": result.fraction,
        "line_search_tries": float(result.tries),
        "kl": kl,
        "loss_r_before": pg.loss_r,
        "loss_c_before": pg.loss_c,
        "loss_r_after": loss_r,
        "loss_c_after": loss_c,
        "full_step_norm": float(step.norm()) if result.tries else 0.0,
        "step_norm": result.fraction * float(step.norm()) if result.accepted else 0.0,
    }
