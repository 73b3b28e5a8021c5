"""CPPO-PID (Stooke, Achiam and Abbeel, 2020): PPO-Lag with a PID-controlled multiplier.

The code behind the published C-TRPO runs (milosen/ctrpo ``algorithms/baselines/cppo_pid.py``
with ``common/lagrange.py``'s ``PIDLagrangian`` at its constructor defaults,
docs/algorithms.md#cppo-pid).
Per epoch, with Δ = Ĵc − d from the rollout just collected:

    λ ← PID(Δ):  I ← max(0, I + K_i·Δ);  P ← EMA_αp(Δ);  C ← EMA_αd(Ĵc);
                 λ = max(0, K_p·P + I + K_d·max(0, C − C_{τ epochs ago}))
    A = (Â_r − λ·Â_c) / (1 + λ)                                (B,)
    L_π = −mean(min(ρ·A, clip(ρ, 1−ε, 1+ε)·A))                 per minibatch

(:class:`safebench.core.lagrange.PIDLagrangian`; the proportional and derivative terms damp
the oscillation of a pure integral — Lagrangian — controller.)

Variant ``omnisafe``: OmniSafe 0.5.0's CPPOPID (same controller and gains; separate gradient
clips, window Ĵc).
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
from safebench.core.lagrange import PIDLagrangian
from safebench.core.onpolicy import Batch, OnPolicyAlgorithm

__all__ = ["CPPOPID", "CPPOPIDConfig"]

_L = "[H] milosen/ctrpo common/lagrange.py PIDLagrangian default"


class CPPOPIDConfig(ClippedUpdateFields, OnPolicyConfig):
    """CPPO-PID hyperparameters: the published runs' (the gains are not in their config.json;
    cppo_pid.py passes only the limit and the initial multiplier)."""

    VARIANTS: ClassVar[dict[str, dict[str, Any]]] = {"omnisafe": OMNISAFE_CLIPPED}
    variant: Literal["official", "omnisafe"] = Field(
        "official",
        description="[H] official: milosen/ctrpo cppo_pid.py; omnisafe: OmniSafe CPPOPID.yaml",
    )
    lagrangian_init: float = Field(
        0.001, ge=0, description="[H] runs' config.json lagrangian_multiplier_init (I_0)"
    )
    pid_kp: float = Field(0.1, ge=0, description=f"{_L} pid_kp")
    pid_ki: float = Field(0.01, ge=0, description=f"{_L} pid_ki")
    pid_kd: float = Field(0.01, ge=0, description=f"{_L} pid_kd")
    pid_delay: int = Field(10, ge=1, description=f"{_L} pid_d_delay (epochs)")
    pid_alpha_p: float = Field(0.95, ge=0, lt=1, description=f"{_L} pid_delta_p_ema_alpha")
    pid_alpha_d: float = Field(0.95, ge=0, lt=1, description=f"{_L} pid_delta_d_ema_alpha")
    penalty_max: float | None = Field(
        None, gt=0, description=f"{_L}: sum_norm=True leaves λ uncapped (penalty_max unused)"
    )


class CPPOPID(OnPolicyAlgorithm):
    """PPO on (Â_r − λÂ_c)/(1 + λ) with λ from a PID controller on the episode cost."""

    name = "cppo-pid"
    Config = CPPOPIDConfig
    config: CPPOPIDConfig
    critics_in_actor_update = True
    checkpointed = ("actor_optim", "pid")

    def setup(self) -> None:
        cfg = self.config
        self.actor_optim = ActorAdam.of(self.actor.parameters(), cfg)
        self.pid = PIDLagrangian(
            cfg.lagrangian_init,
            cfg.pid_kp,
            cfg.pid_ki,
            cfg.pid_kd,
            cfg.pid_delay,
            cfg.pid_alpha_p,
            cfg.pid_alpha_d,
            cfg.penalty_max,
        )

    def set_schedule(self, epochs: int) -> None:
        self.actor_optim.set_schedule(epochs)

    def update_actor(self, batch: Batch) -> dict[str, float]:
        cfg = self.config
        lr = self.actor_optim.lr
        lam = self.pid.update(batch.ep_cost, self.cost_limit)
        adv = lagrangian_advantage(batch.adv_r, batch.adv_c, lam)

        def loss(idx: Tensor, pi: PolicyHead) -> tuple[Tensor, dict[str, float]]:
            ratio = pi.ratio()
            value = clipped_surrogate(ratio, adv[idx], cfg.clip)
            return value, {"loss_pi": float(value.detach())}

        info = clipped_epoch(self, batch, self.actor_optim, loss)
        self.actor_optim.end_epoch()
        return {
            **info,
            "lagrangian": lam,
            "pid_integral": self.pid.integral,
            "actor_lr": lr,
            "ep_cost_estimate": batch.ep_cost,
        }
