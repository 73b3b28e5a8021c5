"""Proximal Policy Optimization (Schulman et al., 2017): the unconstrained reference.

The code behind the published C-TRPO runs (milosen/ctrpo ``algorithms/baselines/ppo.py``,
docs/algorithms.md#ppo). It ignores the cost; the cost critic is still trained, and with the
official joint gradient clip its gradient shares the actor's norm budget. Per minibatch, with
ρ = π_θ(a|s)/π_k(a|s) and Â_r the standardised reward advantage (B,):

    L_π = −mean(min(ρ·Â_r, clip(ρ, 1−ε, 1+ε)·Â_r))

inside the shared clipped-ratio epoch (:func:`safebench.core.first_order.clipped_epoch`:
40 passes of minibatch 64, KL̄ early stop at 0.02, linear learning-rate decay).

Variant ``omnisafe``: OmniSafe 0.5.0's PPO — separate gradient clips and the window Ĵc (the
cost is unused either way, so only the clip matters).
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
from safebench.core.onpolicy import Batch, OnPolicyAlgorithm

__all__ = ["PPO", "PPOConfig"]


class PPOConfig(ClippedUpdateFields, OnPolicyConfig):
    """PPO hyperparameters: the published runs' (``config.json`` and the script's constants)."""

    VARIANTS: ClassVar[dict[str, dict[str, Any]]] = {"omnisafe": OMNISAFE_CLIPPED}
    variant: Literal["official", "omnisafe"] = Field(
        "official",
        description="[H] official: milosen/ctrpo ppo.py; omnisafe: OmniSafe 0.5.0 PPO.yaml",
    )


class PPO(OnPolicyAlgorithm):
    """PPO-Clip; the cost is observed and its critic fitted, never optimised against."""

    name = "ppo"
    Config = PPOConfig
    config: PPOConfig
    critics_in_actor_update = True  # fitted inside the minibatch loop
    checkpointed = ("actor_optim",)

    def setup(self) -> None:
        cfg = self.config
        self.actor_optim = ActorAdam.of(self.actor.parameters(), cfg)

    def set_schedule(self, epochs: int) -> None:
        self.actor_optim.set_schedule(epochs)

    def update_actor(self, batch: Batch) -> dict[str, float]:
        cfg = self.config
        lr = self.actor_optim.lr

        def loss(idx: Tensor, pi: PolicyHead) -> tuple[Tensor, dict[str, float]]:
            ratio = pi.ratio()
            value = clipped_surrogate(ratio, batch.adv_r[idx], cfg.clip)
            return value, {"loss_pi": float(value.detach())}

        info = clipped_epoch(self, batch, self.actor_optim, loss)
        self.actor_optim.end_epoch()
        return {**info, "actor_lr": lr, "ep_cost_estimate": batch.ep_cost}
