"""Constrained TRPO (Milosevic, Müller, Scherf; ICML 2025) as in the official ``c-trpo.py``.

TRPO's trust region ``KL̄ ≤ δ`` is replaced by a constrained divergence that grows without
bound as the surrogate cost increase α uses up the remaining budget Δb (docs/algorithms.md#c-trpo):

    D_C(θ) = KL̄(π_k ‖ π_θ) + β · D_φ(α(θ); Δb)
    D_φ(α; Δb) = φ(Δb − α) − φ(Δb) + φ'(Δb)·α          (+∞ when α ≥ Δb)
    α(θ) = 1/(1−γ_c) · mean[(π_θ(a|s)/π_k(a|s) − 1) · A_c],   Δb = d − Ĵc

One epoch, with a hysteresis mode switch on Ĵc (windowed undiscounted episode cost; 0 until
the official logger's first dump, see :meth:`CTRPO.prepare`):

    mode = normal    if (normal and Ĵc < d) or (recovery and Ĵc < b_H),  b_H = hyst_frac·d
           recovery  otherwise
    normal:   loss = −mean(ρ·A_r),  metric D = D_C     recovery: loss = mean(ρ·A_c),  D = KL̄
    g = −∇loss(θ_k);  x = CG(∇²D(θ_k) + damping·I, g);  step = sqrt(2δ / xᵀHx) · x
    line search θ_k + 0.8^j·step: first candidate with loss improved and exact D ≤ δ.

At θ_k, ∇D_C = 0 and ∇²D_C = F + β·φ''(Δb)·g_c g_cᵀ with g_c = ∇α(θ_k): TRPO's metric plus a
rank-one cost-curvature term that stiffens as the budget shrinks. As in the official code, Δb
compares the undiscounted episode cost with d while α is on the discounted-return scale.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from torch import Tensor
from torch.distributions import Distribution

from safebench.core.base import OnPolicyConfig
from safebench.core.onpolicy import Batch, OnPolicyAlgorithm, Rollout
from safebench.core.optim import (
    backtracking_line_search,
    conjugate_gradient,
    fisher_vector_product,
    flat_grad,
    frozen_distribution,
    hessian_vector_product,
    kl_mean,
)
from safebench.core.policies import Actor
from safebench.core.trust_region import EPS, TrustRegionFields, surrogate_losses

__all__ = [
    "CTRPO",
    "CTRPOConfig",
    "Mode",
    "Phi",
    "bregman_term",
    "constrained_divergence",
    "cost_surrogate_increase",
    "curvature_product",
    "next_mode",
    "phi_second_derivative",
]

Phi = Literal["entropy", "barrier"]
Mode = Literal["normal", "recovery"]


class CTRPOConfig(TrustRegionFields, OnPolicyConfig):
    """C-TRPO hyperparameters (milosen/ctrpo ``algorithms/c-trpo.py``,
    docs/algorithms.md#c-trpo-defaults)."""

    beta: float = Field(
        1.0, ge=0, description="[H] c-trpo.py default_cfg beta = 1.0 (code comment: 0.05 tried)"
    )
    hyst_frac: float = Field(
        0.8,
        gt=0,
        le=1,
        description=(
            "[H] runs reported as C-TRPO (ours): data/runs/ablation/*/c-trpo-hyst/*/config.json "
            "hyst_frac 0.8 (default_cfg 1.0 = no hysteresis); b_H = hyst_frac·d"
        ),
    )
    phi: Phi = Field(
        "entropy",
        description="[H] c-trpo.py DIV_MODE = 'entropy': φ(x) = x log x; 'barrier': φ(x) = −log x",
    )
    adaptive_target_kl: bool = Field(
        False,
        description="[H] c-trpo.py default_cfg adaptive_target_kl: δ·(1 − 0.5·Ĵc/d) in normal mode",
    )
    batch_size: int = Field(
        128, ge=1, description="[H] c-trpo.py env_configs batch_size 128 (every benchmark env)"
    )
    critic_lr: float = Field(1e-3, gt=0, description="[H] c-trpo.py critic Adam lr 1e-3")
    update_iters: int = Field(10, ge=1, description="[H] c-trpo.py env_configs learning_iters")


# --------------------------------------------------------------------------------------------
# Pure math
# --------------------------------------------------------------------------------------------


def next_mode(mode: Mode, ep_cost: float, cost_limit: float, hyst_frac: float) -> Mode:
    """Hysteresis switch: stay normal while ``Ĵc < d``; leave recovery once ``Ĵc < hyst_frac·d``.

    Both comparisons are strict, so normal mode always has ``Δb = d − Ĵc > 0``.
    """
    threshold = cost_limit if mode == "normal" else hyst_frac * cost_limit
    return "normal" if ep_cost < threshold else "recovery"


def phi_second_derivative(delta_b: float, phi: Phi) -> float:
    """``φ''(Δb)``: ``1/Δb`` for φ = x log x, ``1/Δb²`` for φ = −log x."""
    return 1.0 / delta_b if phi == "entropy" else 1.0 / delta_b**2


def bregman_term(alpha: Tensor, delta_b: float, phi: Phi) -> Tensor:
    """``D_φ = φ(Δb − α) − φ(Δb) + φ'(Δb)·α`` (0-d), written with ``u = (Δb − α)/Δb``:

        entropy (φ = x log x):  D_φ = α + (Δb − α)·log u
        barrier (φ = −log x):   D_φ = −log u − α/Δb

    Convex in α with ``D_φ(0) = D_φ'(0) = 0`` and ``D_φ''(0) = φ''(Δb)``; ``+∞`` when α ≥ Δb
    (the step would spend more than the remaining budget).

    Raises:
        ValueError: if ``Δb ≤ 0`` (the barrier is only defined inside the budget; the mode
            switch never calls it there).
    """
    if not delta_b > 0:
        raise ValueError(f"remaining budget Δb = d − Ĵc must be > 0 in normal mode, got {delta_b}")
    if not bool(alpha < delta_b):
        return torch.full_like(alpha, math.inf)
    log_u = torch.log((delta_b - alpha) / delta_b)
    if phi == "entropy":
        return alpha + (delta_b - alpha) * log_u
    return -log_u - alpha / delta_b


def cost_surrogate_increase(actor: Actor, batch: Batch, cost_gamma: float) -> Tensor:
    """``α(θ) = 1/(1−γ_c) · mean[(π_θ(a|s)/π_k(a|s) − 1) · A_c]`` over the ``B`` batch rows.

    ``A_c`` is the centred cost advantage ``(B,)``; the ``−1`` makes α(θ_k) = 0 (up to the
    rounding between collection-time and torch log-probabilities).
    """
    ratio = torch.exp(actor.log_prob(batch.obs, batch.act) - batch.logp)
    return ((ratio - 1.0) * batch.adv_c).mean() / (1.0 - cost_gamma)


def constrained_divergence(
    actor: Actor,
    batch: Batch,
    old_dist: Distribution,
    beta: float,
    delta_b: float,
    phi: Phi,
    cost_gamma: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(D_C, KL̄, α)`` at the actor's parameters: ``D_C = KL̄(π_k ‖ π_θ) + β·D_φ(α; Δb)``.

    KL̄ follows :func:`~safebench.core.optim.kl_mean` (mean over states and action dimensions,
    the convention the paper's β was tuned with). Differentiable in the actor's parameters.
    """
    alpha = cost_surrogate_increase(actor, batch, cost_gamma)
    kl = kl_mean(actor, batch.obs, old_dist)
    return kl + beta * bregman_term(alpha, delta_b, phi), kl, alpha


def curvature_product(
    actor: Actor,
    batch: Batch,
    beta: float,
    delta_b: float,
    phi: Phi,
    cost_gamma: float,
    damping: float,
) -> Callable[[Tensor], Tensor]:
    """``v ↦ (∇²_θ D_C(θ_k) + damping·I) v`` on the whole batch, ``(P,) -> (P,)``.

    At θ_k this equals ``(F + β·φ''(Δb)·g_c g_cᵀ + damping·I) v`` with F the Hessian of KL̄ and
    ``g_c = ∇α(θ_k)``. With ``β = 0`` it is exactly TRPO's Fisher-vector product.
    """
    if beta == 0:
        return fisher_vector_product(actor, batch.obs, damping)
    old_dist = frozen_distribution(actor, batch.obs)
    div, _, _ = constrained_divergence(actor, batch, old_dist, beta, delta_b, phi, cost_gamma)
    return hessian_vector_product(div, [w for w in actor.parameters() if w.requires_grad], damping)


# --------------------------------------------------------------------------------------------
# Algorithm
# --------------------------------------------------------------------------------------------


class CTRPO(OnPolicyAlgorithm):
    """C-TRPO: TRPO under the constrained divergence D_C, with hysteresis recovery steps."""

    name = "ctrpo"
    Config = CTRPOConfig
    config: CTRPOConfig

    def setup(self) -> None:
        # The official loop starts in recovery (optim_case = 0) and reads Ĵc as 0 until its
        # logger's first dump (see prepare), so its first update is always in normal mode,
        # with the whole budget Δb = d, whatever the first epoch's episodes cost.
        self.mode: Mode = "recovery"
        # Whether the official logger would have dumped Metrics/EpCost before this epoch's
        # update: an episode finished in an earlier epoch.
        self.cost_logged = False

    def prepare(self, rollout: Rollout) -> Batch:
        """The base preparation, with the Ĵc the official code's update would read.

        ``c-trpo.py`` reads Ĵc with ``logger.get_stats("Metrics/EpCost")``, which returns 0.0
        while the key is not among the logger's headers (``EpochLogger.get_stats``), i.e. until
        the first ``dump_tabular``; that dump follows the update of the first epoch in which
        an episode finished. So an update uses 0.0 (normal mode, Δb = d) unless an episode
        finished in an earlier epoch. ``rollout.ep_cost`` is NaN before any episode finished.
        """
        batch = super().prepare(rollout)
        logged = self.cost_logged
        self.cost_logged = logged or bool(np.isfinite(rollout.ep_cost))
        return batch if logged else dataclasses.replace(batch, ep_cost=0.0)

    def update_actor(self, batch: Batch) -> dict[str, float]:
        """One C-TRPO step: mode → gradient → CG on the barrier-shaped curvature → line search.

        Kept as one function, past 80 lines, so that it reads step for step beside the official
        ``algorithms/c-trpo.py`` update (same order, same names for the diagnostics it logs)."""
        cfg = self.config
        d = self.cost_limit
        ep_cost = batch.ep_cost
        self.mode = next_mode(self.mode, ep_cost, d, cfg.hyst_frac)
        normal = self.mode == "normal"
        delta_b = d - ep_cost
        # β = 0 drops the barrier term together with its domain check: the update is TRPO.
        barrier = normal and cfg.beta > 0
        params = [w for w in self.actor.parameters() if w.requires_grad]

        old_dist = frozen_distribution(self.actor, batch.obs)
        loss_r, loss_c = surrogate_losses(self.actor, batch)
        loss = loss_r if normal else loss_c
        g = -flat_grad(loss, params)
        loss_before = float(loss.detach())
        hvp = curvature_product(
            self.actor,
            batch,
            cfg.beta if barrier else 0.0,
            delta_b,
            cfg.phi,
            cfg.cost_gamma,
            cfg.cg_damping,
        )
        x = conjugate_gradient(hvp, g, cfg.cg_iters)
        xhx = float(torch.dot(x, hvp(x)))
        step = math.sqrt(2.0 * cfg.target_kl / (max(xhx, 0.0) + EPS)) * x.detach()
        target = cfg.target_kl
        if normal and cfg.adaptive_target_kl:
            target *= 1.0 - 0.5 * ep_cost / d

        # (loss, KL̄, α) at the candidate last tried; evaluate() returns (loss, D).
        last = [math.nan, math.nan, math.nan]
        domain_rejections = 0

        def evaluate() -> tuple[float, float]:
            nonlocal domain_rejections
            with torch.no_grad():
                l_r, l_c = surrogate_losses(self.actor, batch)
                if barrier:
                    div, kl, alpha = constrained_divergence(
                        self.actor, batch, old_dist, cfg.beta, delta_b, cfg.phi, cfg.cost_gamma
                    )
                    domain_rejections += int(not math.isfinite(float(div)))
                else:
                    div = kl = kl_mean(self.actor, batch.obs, old_dist)
                    alpha = cost_surrogate_increase(self.actor, batch, cfg.cost_gamma)
            last[:] = [float(l_r if normal else l_c), float(kl), float(alpha)]
            return last[0], float(div)

        def accept(loss_new: float, div: float, _fraction: float) -> bool:
            return loss_before - loss_new >= 0 and div <= target

        if bool(torch.isfinite(step).all()):
            result = backtracking_line_search(
                self.actor, step, evaluate, accept, cfg.line_search_steps, cfg.line_search_decay
            )
            accepted, tries, fraction = result.accepted, result.tries, result.fraction
            divergence = result.kl if accepted else 0.0  # 0 on rejection, as the official final_div
        else:
            # A degenerate CG solve is a rejected step, as in CPO, rather than an abort.
            accepted, tries, fraction, divergence = False, 0, 0.0, 0.0
        return {
            "mode": 1.0 if normal else 0.0,  # the official optim_case: 1 normal, 0 recovery
            "delta_b": delta_b,
            "beta": cfg.beta if barrier else 0.0,
            "barrier_curvature": (
                cfg.beta * phi_second_derivative(delta_b, cfg.phi) if barrier else 0.0
            ),
            "target_div": target,
            "xHx": xhx,
            "grad_norm": float(g.norm()),
            "accepted": float(accepted),
            "step_fraction": fraction,
            "line_search_tries": float(tries),
            "domain_rejections": float(domain_rejections),
            "divergence": divergence,  # D at the accepted step (D_C normal, KL̄ recovery)
            "kl": last[1] if accepted else 0.0,
            "alpha": last[2] if accepted else 0.0,
            "loss_before": loss_before,
            "loss_after": last[0] if accepted else loss_before,
            "step_norm": fraction * float(step.norm()) if accepted else 0.0,
        }

    def extra_state(self) -> dict[str, Any]:
        return {"mode": self.mode, "cost_logged": self.cost_logged}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        mode = state["mode"]
        if mode not in ("normal", "recovery"):
            raise ValueError(f"unknown C-TRPO mode {mode!r} in checkpoint")
        self.mode = mode
        # checkpoints from before this flag: every epoch then had finished episodes
        self.cost_logged = bool(state.get("cost_logged", True))
