"""CUP (Yang et al., 2022): constrained update projection in two phases per epoch.

The code behind the published C-TRPO runs (milosen/ctrpo ``algorithms/baselines/cup.py``,
docs/algorithms.md#cup). Per epoch, with π_k the rollout policy and ν the cost multiplier (one
projected Adam step on the dual from the rollout just collected, clamped to [0, ν_max]):

1. Improvement: PPO on the reward alone (Â_r), critics fitted jointly, early stop at KL̄.
2. Projection, actor only, from π_{k+½} (the policy after phase 1), per minibatch (B,):

       L₂ = mean(ν·c·ρ·Â_c + Σ_dims KL(π_θ ‖ π_{k+½})),   c = (1 − γ·λ_GAE)/(1 − γ)

   with ρ against the rollout policy π_k, c = 5.95 at γ = 0.99, λ_GAE = 0.95; stop once
   KL̄(π_{k+½} ‖ π_θ) exceeds target_kl. One learning-rate decay step after both phases.

The official code caps ν at 0.2 (so ν·c ≤ 1.19; SafePO issue #73: with the cap the
projection often stops after one pass and CUP drifts towards PPO). ``official`` keeps the
cap, as the published runs trained; ``omnisafe`` is OmniSafe 0.5.0's CUP (ν_max 2.0,
target_kl 0.01, separate clips, window Ĵc); ``uncapped`` is the official code with OmniSafe's
ν_max = 2.0 (SafePO's earlier CUP had no cap at all).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field
from torch import Tensor

from safebench.core.base import OnPolicyConfig
from safebench.core.first_order import (
    OMNISAFE_CLIPPED,
    ActorAdam,
    ClippedUpdateFields,
    PolicyHead,
    clipped_epoch,
    clipped_surrogate,
)
from safebench.core.lagrange import LagrangeFields
from safebench.core.onpolicy import Batch, OnPolicyAlgorithm
from safebench.core.optim import frozen_distribution

__all__ = ["CUP", "CUPConfig", "cup_projection_loss"]

_C = "[H] milosen/ctrpo cup.py"


class CUPConfig(ClippedUpdateFields, LagrangeFields, OnPolicyConfig):
    """CUP hyperparameters: the published runs' (ν_max and λ_CUP are the script's constants)."""

    VARIANTS: ClassVar[dict[str, dict[str, Any]]] = {
        "omnisafe": {**OMNISAFE_CLIPPED, "lagrangian_max": 2.0, "target_kl": 0.01},
        "uncapped": {"lagrangian_max": 2.0},
    }
    variant: Literal["official", "uncapped", "omnisafe"] = Field(
        "official",
        description=(
            "[H] official: milosen/ctrpo cup.py (ν_max 0.2); uncapped: ν_max 2.0 (OmniSafe's "
            "bound); omnisafe: OmniSafe 0.5.0 CUP.yaml"
        ),
    )
    lagrangian_max: float | None = Field(0.2, gt=0, description=f"{_C} CUP_NU = 0.20")
    cup_lambda: float = Field(
        0.95, ge=0, le=1, description=f"{_C} lam = 0.95 in c = (1 − γ·lam)/(1 − γ)"
    )


def cup_projection_loss(ratio_adv_c: Tensor, kl: Tensor, nu: float, coef: float) -> Tensor:
    """``mean(ν·c·ρ·Â_c + KL)`` — CUP's projection loss on a minibatch; a scalar.

    Args:
        ratio_adv_c: ``ρ·Â_c`` ``(B,)``; kl: ``Σ_dims KL(π_θ ‖ π_{k+½})`` ``(B,)``.
        nu: the multiplier ν; coef: ``c = (1 − γ·λ)/(1 − γ)``.
    """
    return (nu * coef * ratio_adv_c + kl).mean()


class CUP(OnPolicyAlgorithm):
    """CUP: a PPO improvement step, then a KL-regularised projection against the cost."""

    name = "cup"
    Config = CUPConfig
    config: CUPConfig
    critics_in_actor_update = True
    checkpointed = ("actor_optim", "multiplier")

    def setup(self) -> None:
        cfg = self.config
        self.actor_optim = ActorAdam.of(self.actor.parameters(), cfg)
        self.multiplier = cfg.multiplier()

    def set_schedule(self, epochs: int) -> None:
        self.actor_optim.set_schedule(epochs)

    def update_actor(self, batch: Batch) -> dict[str, float]:
        cfg = self.config
        lr = self.actor_optim.lr
        nu = self.multiplier.update(batch.ep_cost, self.cost_limit)

        def improve(idx: Tensor, pi: PolicyHead) -> tuple[Tensor, dict[str, float]]:
            ratio = pi.ratio()
            value = clipped_surrogate(ratio, batch.adv_r[idx], cfg.clip)
            return value, {"loss_pi": float(value.detach())}

        info = clipped_epoch(self, batch, self.actor_optim, improve)

        half = frozen_distribution(self.actor, batch.obs)  # π_{k+½}
        coef = (1.0 - cfg.gamma * cfg.cup_lambda) / (1.0 - cfg.gamma)

        def project(idx: Tensor, pi: PolicyHead) -> tuple[Tensor, dict[str, float]]:
            ratio = pi.ratio()
            kl = pi.kl(half)
            value = cup_projection_loss(ratio * batch.adv_c[idx], kl, nu, coef)
            return value, {"loss_projection": float(value.detach())}

        projection = clipped_epoch(
            self,
            batch,
            self.actor_optim,
            project,
            fit_critics=False,
            kl_reference=half,
        )
        self.actor_optim.end_epoch()
        return {
            **info,
            "loss_projection": projection["loss_projection"],
            "projection_kl": projection["kl"],
            "projection_passes": projection["update_passes"],
            "lagrangian": nu,
            "actor_lr": lr,
            "ep_cost_estimate": batch.ep_cost,
        }
