"""IPO (Liu, Ding and Liu, 2020): interior-point policy optimisation with a log barrier.

The C-TRPO authors' implementation, which the published runs trained (milosen/ctrpo
``algorithms/baselines/ipo.py``, docs/algorithms.md#ipo; SafePO has no IPO). No multiplier: the
mode is fixed per epoch by the cost estimate of the rollout just collected. Per minibatch,
with ε the ratio clip and t the barrier parameter:

    feasible (Ĵc < d):  L_π = −mean(min(ρ·Â_r, clip(ρ)·Â_r)) + s·mean(ρ·Â_c) / (t·|Ĵc − d|)
    recovery (Ĵc ≥ d):  L_π = mean(max(ρ·Â_c, clip(ρ)·Â_c))        (the reward is dropped)

The barrier max L_r + (1/t)·log(d − J_c) contributes +mean(ρ·Â_c)/(t·(d − Ĵc)) to the loss
(s = +1, ``barrier_sign: paper``). The official code divides by (Ĵc − d) < 0 (s = −1,
``barrier_sign: official``), so while feasible its gradient *raises* the cost surrogate — the
published runs end slightly above d on 7 of 8 tasks. ``official`` keeps that sign, as those
runs trained; ``paper`` is the corrected method.

Variant ``omnisafe``: OmniSafe 0.5.0's IPO is a different method — PPO on (Â_r − p·Â_c)/(1 + p)
with p = κ/(d − Ĵc + 1e-8), reset to p_max when p < 0 or p > p_max, 10 passes (its reward and
cost normalisation are not carried here).
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
    pessimistic_cost_surrogate,
)
from safebench.core.onpolicy import Batch, OnPolicyAlgorithm

__all__ = ["IPO", "IPOConfig", "barrier_coefficient", "omnisafe_penalty"]

_C = "[H] milosen/ctrpo ipo.py"
_O = "[H] OmniSafe 0.5.0 IPO.yaml"


class IPOConfig(ClippedUpdateFields, OnPolicyConfig):
    """IPO hyperparameters: the published runs' (``config.json`` t = 20, ε = 0.2)."""

    VARIANTS: ClassVar[dict[str, dict[str, Any]]] = {
        "paper": {"barrier_sign": "paper"},
        "omnisafe": {**OMNISAFE_CLIPPED, "form": "penalty", "update_iters": 10},
    }
    variant: Literal["official", "paper", "omnisafe"] = Field(
        "official",
        description=(
            "[H] official: milosen/ctrpo ipo.py (flipped barrier sign); paper: the barrier "
            "of Liu et al. 2020; omnisafe: OmniSafe 0.5.0's advantage penalty"
        ),
    )
    form: Literal["barrier", "penalty"] = Field(
        "barrier", description=f"{_C}: barrier + recovery mode; penalty: OmniSafe ipo.py"
    )
    barrier_t: float = Field(20.0, gt=0, description=f"{_C} runs' config.json t = 20")
    barrier_sign: Literal["official", "paper"] = Field(
        "official", description=f"{_C}: divides by (Ĵc − d), the sign flipped while feasible"
    )
    kappa: float = Field(0.01, gt=0, description=f"{_O} algo_cfgs.kappa (penalty form)")
    penalty_max: float = Field(1.0, gt=0, description=f"{_O} algo_cfgs.penalty_max")


def barrier_coefficient(ep_cost: float, limit: float, t: float, sign: str) -> float:
    """The weight of mean(ρ·Â_c) in the feasible-mode loss: ``±1/(t·(d − Ĵc))``.

    ``paper``: +1/(t·(d − Ĵc)) (the log barrier's gradient); ``official``: 1/(t·(Ĵc − d)).
    """
    coef = 1.0 / (t * (limit - ep_cost))
    return coef if sign == "paper" else -coef


def omnisafe_penalty(ep_cost: float, limit: float, kappa: float, penalty_max: float) -> float:
    """OmniSafe's p = κ/(d − Ĵc + 1e-8), set to ``penalty_max`` when negative or above it."""
    p = kappa / (limit - ep_cost + 1e-8)
    return penalty_max if p < 0 or p > penalty_max else p


class IPO(OnPolicyAlgorithm):
    """IPO: PPO with a log-barrier cost term while feasible and a pure cost step when not."""

    name = "ipo"
    Config = IPOConfig
    config: IPOConfig
    critics_in_actor_update = True
    checkpointed = ("actor_optim",)

    def setup(self) -> None:
        cfg = self.config
        self.actor_optim = ActorAdam.of(self.actor.parameters(), cfg)

    def set_schedule(self, epochs: int) -> None:
        self.actor_optim.set_schedule(epochs)

    def update_actor(self, batch: Batch) -> dict[str, float]:
        cfg = self.config
        lr = self.actor_optim.lr
        d = self.cost_limit
        feasible = batch.ep_cost < d
        diag: dict[str, float] = {"feasible_mode": float(feasible)}
        coef = 0.0
        if cfg.form == "penalty":
            p = omnisafe_penalty(batch.ep_cost, d, cfg.kappa, cfg.penalty_max)
            adv = lagrangian_advantage(batch.adv_r, batch.adv_c, p)
            diag["penalty"] = p
        else:
            if feasible:
                coef = barrier_coefficient(batch.ep_cost, d, cfg.barrier_t, cfg.barrier_sign)
            diag["barrier_coef"] = coef

        def loss(idx: Tensor, pi: PolicyHead) -> tuple[Tensor, dict[str, float]]:
            ratio = pi.ratio()
            if cfg.form == "penalty":
                value = clipped_surrogate(ratio, adv[idx], cfg.clip)
            elif feasible:
                value = clipped_surrogate(ratio, batch.adv_r[idx], cfg.clip)
                value = value + coef * (ratio * batch.adv_c[idx]).mean()
            else:
                value = pessimistic_cost_surrogate(ratio, batch.adv_c[idx], cfg.clip)
            return value, {"loss_pi": float(value.detach())}

        info = clipped_epoch(self, batch, self.actor_optim, loss)
        self.actor_optim.end_epoch()
        return {**info, **diag, "actor_lr": lr, "ep_cost_estimate": batch.ep_cost}
