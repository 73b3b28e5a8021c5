"""PPO-Lagrangian (Ray et al., 2019): PPO on the Lagrangian of the constrained problem.

The code behind the published C-TRPO runs (milosen/ctrpo ``algorithms/baselines/ppo_lag.py``,
docs/algorithms.md#ppo-lag). Per epoch, with Ĵc the cost estimate of the rollout just collected and
Â_r, Â_c the standardised reward / centred cost advantages (B,):

    λ ← max(0, λ̃),  λ̃ ← clamp(Adam(λ̃, d − Ĵc), 0, λ_max)     (first, from this rollout)
    A = (Â_r − λ·Â_c) / (1 + λ)                                (B,)
    L_π = −mean(min(ρ·A, clip(ρ, 1−ε, 1+ε)·A))                 per minibatch

inside the shared clipped-ratio epoch (:func:`safebench.core.first_order.clipped_epoch`).
The 1/(1+λ) keeps the advantage's scale as λ grows.

Variant ``omnisafe``: OmniSafe 0.5.0's PPOLag (separate gradient clips, window Ĵc).
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
    lagrangian_advantage,
)
from safebench.core.lagrange import LagrangeFields
from safebench.core.onpolicy import Batch, OnPolicyAlgorithm

__all__ = ["PPOLag", "PPOLagConfig"]


class PPOLagConfig(ClippedUpdateFields, LagrangeFields, OnPolicyConfig):
    """PPO-Lag hyperparameters: the published runs' (``config.json`` and the script)."""

    VARIANTS: ClassVar[dict[str, dict[str, Any]]] = {"omnisafe": OMNISAFE_CLIPPED}
    variant: Literal["official", "omnisafe"] = Field(
        "official",
        description="[H] official: milosen/ctrpo ppo_lag.py; omnisafe: OmniSafe 0.5.0 PPOLag.yaml",
    )


class PPOLag(OnPolicyAlgorithm):
    """PPO on (Â_r − λÂ_c)/(1 + λ) with λ by projected Adam ascent on the dual."""

    name = "ppo-lag"
    Config = PPOLagConfig
    config: PPOLagConfig
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
        lam = self.multiplier.update(batch.ep_cost, self.cost_limit)
        adv = lagrangian_advantage(batch.adv_r, batch.adv_c, lam)

        def loss(idx: Tensor, pi: PolicyHead) -> tuple[Tensor, dict[str, float]]:
            ratio = pi.ratio()
            value = clipped_surrogate(ratio, adv[idx], cfg.clip)
            return value, {"loss_pi": float(value.detach())}

        info = clipped_epoch(self, batch, self.actor_optim, loss)
        self.actor_optim.end_epoch()
        return {**info, "lagrangian": lam, "actor_lr": lr, "ep_cost_estimate": batch.ep_cost}
