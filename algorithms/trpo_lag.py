"""TRPO-Lagrangian (Ray et al., 2019): a TRPO step on the Lagrangian of the constrained problem.

The code behind the published C-TRPO runs (milosen/ctrpo ``algorithms/baselines/trpo_lag.py``,
docs/algorithms.md#trpo-lag). Per epoch, with θ_k the current actor parameters (P,):

    λ ← projected Adam ascent on the dual from Ĵc (as PPO-Lag)
    A = (Â_r − λ·Â_c) / (1 + λ)                                   (B,) over all B samples
    L(θ) = −mean(ρ_θ·A),  g = −∇L(θ_k)                            (P,)
    x = CG(F + 0.1·I, g)                                          15 iterations
    Δ = √(2δ / (xᵀ(F + 0.1·I)x + 1e-8)) · x
    θ = θ_k + 0.8^j·Δ for the first j < 15 with L finite, L(θ_k) − L(θ) ≥ 0 and
        KL̄_m(π_k ‖ π_θ) ≤ δ; else θ = θ_k

F is the Fisher of KL̄_m, the KL averaged over states *and* action dimensions (so the trust
region in the summed KL is δ·act_dim, as in OmniSafe). Then the critics: 10 passes of
minibatch 128 at lr 1e-3, both heads under one gradient clip. No learning-rate schedule.

Variant ``omnisafe``: OmniSafe 0.5.0's TRPOLag (the same step and values; each critic clipped
on its own, window Ĵc).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

from safebench.core.base import OnPolicyConfig
from safebench.core.first_order import OMNISAFE_CLIPPED, lagrangian_advantage
from safebench.core.lagrange import LagrangeFields
from safebench.core.onpolicy import Batch, OnPolicyAlgorithm
from safebench.core.optim import (
    backtracking_line_search,
    conjugate_gradient,
    fisher_vector_product,
    flat_grad,
    frozen_distribution,
    kl_mean,
)
from safebench.core.trust_region import TrustRegionFields

__all__ = ["TRPOLag", "TRPOLagConfig"]

_C = "[H] milosen/ctrpo trpo_lag.py"


class TRPOLagConfig(TrustRegionFields, LagrangeFields, OnPolicyConfig):
    """TRPO-Lag hyperparameters: the published runs' (``config.json`` and the script)."""

    VARIANTS: ClassVar[dict[str, dict[str, Any]]] = {"omnisafe": OMNISAFE_CLIPPED}
    variant: Literal["official", "omnisafe"] = Field(
        "official",
        description="[H] official: milosen/ctrpo trpo_lag.py; omnisafe: OmniSafe TRPOLag.yaml",
    )
    batch_size: int = Field(128, ge=1, description=f"{_C} runs' config.json batch_size (critics)")
    update_iters: int = Field(10, ge=1, description=f"{_C} runs' config.json learning_iters")
    critic_lr: float = Field(1e-3, gt=0, description=f"{_C} critic Adam lr 1e-3")
    joint_grad_clip: bool = Field(True, description=f"{_C}: one clip_grad_norm_ over both critics")
    cost_estimate: Literal["window", "official"] = Field(
        "official",
        description=f"{_C}: Ĵc as logged (docs/algorithms.md#cost-estimate), 0.0 at epoch 0",
    )


class TRPOLag(OnPolicyAlgorithm):
    """TRPO on (Â_r − λÂ_c)/(1 + λ); the critics are fitted after the actor step."""

    name = "trpo-lag"
    Config = TRPOLagConfig
    config: TRPOLagConfig
    checkpointed = ("multiplier",)

    def setup(self) -> None:
        self.multiplier = self.config.multiplier()

    def update_actor(self, batch: Batch) -> dict[str, float]:
        cfg = self.config
        lam = self.multiplier.update(batch.ep_cost, self.cost_limit)
        adv = lagrangian_advantage(batch.adv_r, batch.adv_c, lam)
        params = [p for p in self.actor.parameters() if p.requires_grad]
        old_dist = frozen_distribution(self.actor, batch.obs)

        def surrogate() -> torch.Tensor:
            ratio = torch.exp(self.actor.log_prob(batch.obs, batch.act) - batch.logp)
            return -(ratio * adv).mean()

        loss_before = surrogate()
        g = -flat_grad(loss_before, params)
        fvp = fisher_vector_product(self.actor, batch.obs, cfg.cg_damping)
        x = conjugate_gradient(fvp, g, cfg.cg_iters)
        xfx = float(torch.dot(x, fvp(x)))
        step = math.sqrt(2.0 * cfg.target_kl / (xfx + 1e-8)) * x.detach()
        before = float(loss_before.detach())

        def evaluate() -> tuple[float, float]:
            with torch.no_grad():
                return float(surrogate()), float(kl_mean(self.actor, batch.obs, old_dist))

        def accept(loss: float, kl: float, _fraction: float) -> bool:
            return before - loss >= 0 and kl <= cfg.target_kl

        result = backtracking_line_search(
            self.actor, step, evaluate, accept, cfg.line_search_steps, cfg.line_search_decay
        )
        return {
            "lagrangian": lam,
            "accepted": float(result.accepted),
            "step_fraction": result.fraction,
            "line_search_tries": float(result.tries),
            "kl": result.kl if result.accepted else 0.0,
            "loss_pi_before": before,
            "loss_pi_after": result.loss if result.accepted else before,
            "ep_cost_estimate": batch.ep_cost,
        }
