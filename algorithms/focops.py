"""FOCOPS (Zhang, Vuong and Ross, 2020): first-order constrained optimisation in policy space.

The code behind the published C-TRPO runs (milosen/ctrpo ``algorithms/baselines/focops.py``,
docs/algorithms.md#focops). Per epoch, ν (the cost multiplier) takes one projected Adam step on the
dual, clamped to [0, ν_max], from the rollout just collected; then, with π_k the rollout
policy, A = (Â_r − ν·Â_c)/(1 + ν) (B,), λ the temperature and η the trust radius, per
minibatch of B samples:

    KL_i = Σ_dims KL(π_θ(·|s_i) ‖ π_k(·|s_i)),    m_i = 1[KL_i ≤ η]               (B,)
    paper / ``per-sample``:  L_π = (1/B)  Σ_i m_i·(KL_i − ρ_i·A_i/λ)
    as coded / ``broadcast``: L_π = (1/B²) Σ_i Σ_j m_i·(KL_i − ρ_j·A_j/λ)
                                  = mean(m·KL) − (1/λ)·mean(m)·mean(ρ·A)

The official code (and OmniSafe) build the loss from a (B, 1) mask and KL against (B,)
surrogate terms, which broadcasts to B × B: the mask then only rescales the surrogate by the
in-region fraction instead of dropping the out-of-region samples. ``broadcast`` is what the
published runs trained; the ``paper`` variant computes the per-sample loss.

Variant ``omnisafe``: OmniSafe 0.5.0's FOCOPS (the same broadcast and values; separate
gradient clips, window Ĵc).
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
    lagrangian_advantage,
)
from safebench.core.lagrange import LagrangeFields
from safebench.core.onpolicy import Batch, OnPolicyAlgorithm
from safebench.core.optim import frozen_distribution

__all__ = ["FOCOPS", "FOCOPSConfig", "focops_loss"]

_C = "[H] milosen/ctrpo focops.py"


class FOCOPSConfig(ClippedUpdateFields, LagrangeFields, OnPolicyConfig):
    """FOCOPS hyperparameters: the published runs' (λ, ν_max are constants of the script)."""

    VARIANTS: ClassVar[dict[str, dict[str, Any]]] = {
        "omnisafe": OMNISAFE_CLIPPED,
        "paper": {"loss_form": "per-sample"},
    }
    variant: Literal["official", "paper", "omnisafe"] = Field(
        "official",
        description=(
            "[H] official: milosen/ctrpo focops.py (broadcast loss); paper: the per-sample "
            "loss of Zhang et al. 2020 eq. 9; omnisafe: OmniSafe 0.5.0 FOCOPS.yaml"
        ),
    )
    focops_lam: float = Field(1.5, gt=0, description=f"{_C} FOCOPS_LAM = 1.5 (temperature λ)")
    focops_eta: float = Field(
        0.02, gt=0, description=f"{_C}: the mask's η is target_kl (0.02 in the runs)"
    )
    lagrangian_max: float | None = Field(2.0, gt=0, description=f"{_C} FOCOPS_NU_MAX = 2.0")
    loss_form: Literal["broadcast", "per-sample"] = Field(
        "broadcast", description=f"{_C}: (B,1) mask against (B,) terms broadcasts to B×B"
    )


def focops_loss(kl: Tensor, ratio_adv: Tensor, temperature: float, eta: float, form: str) -> Tensor:
    """FOCOPS's actor loss on a minibatch (module docstring); a scalar.

    Args:
        kl: ``KL(π_θ ‖ π_k)`` per state, summed over action dims ``(B,)`` (differentiable).
        ratio_adv: ``ρ·A`` ``(B,)`` (differentiable).
        temperature: λ; eta: the trust radius η of the mask; form: ``broadcast`` or
            ``per-sample``.
    """
    mask = (kl.detach() <= eta).to(kl.dtype)
    if form == "broadcast":
        return (mask * kl).mean() - mask.mean() * ratio_adv.mean() / temperature
    return (mask * (kl - ratio_adv / temperature)).mean()


class FOCOPS(OnPolicyAlgorithm):
    """FOCOPS: fit the optimal update policy in the nonparametric space by minibatch steps."""

    name = "focops"
    Config = FOCOPSConfig
    config: FOCOPSConfig
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
        adv = lagrangian_advantage(batch.adv_r, batch.adv_c, nu)
        old = frozen_distribution(self.actor, batch.obs)

        def loss(idx: Tensor, pi: PolicyHead) -> tuple[Tensor, dict[str, float]]:
            ratio = pi.ratio()
            kl = pi.kl(old)
            value = focops_loss(kl, ratio * adv[idx], cfg.focops_lam, cfg.focops_eta, cfg.loss_form)
            return value, {"loss_pi": float(value.detach())}

        info = clipped_epoch(
            self,
            batch,
            self.actor_optim,
            loss,
            kl_reference=old,
        )
        self.actor_optim.end_epoch()
        return {**info, "lagrangian": nu, "actor_lr": lr, "ep_cost_estimate": batch.ep_cost}
