"""Penalized Proximal Policy Optimization (Zhang et al., 2022) as implemented in OmniSafe 0.5.0.

PPO's clipped objective plus an exact (ReLU) penalty on the linearised constraint
(docs/algorithms.md#p3o). Per minibatch, with ρ = π_θ(a|s)/π_k(a|s):

    L_clip = −mean(min(ρ·A_r, clip(ρ, 1−ε, 1+ε)·A_r))
    L_pen  = κ·ReLU(mean(ρ·A_c) + (Ĵc − d))          (cost term not clipped)
    θ ← Adam(θ, ∇(L_clip + L_pen)) with gradient-norm clipping

The epoch update follows OmniSafe's ``PolicyGradient._update``: ``update_iters`` passes over
shuffled minibatches; each minibatch first fits both critics, then takes the actor step; after
each pass the KL(π_k ‖ π_θ) on the whole batch (summed over action dimensions, averaged over
states) stops the passes once it exceeds ``target_kl``. The actor learning rate decays
linearly to 0 over the run's epochs (OmniSafe ``LinearLR``, stepped once per epoch).

Variant ``official``: the P3O behind the published C-TRPO runs (milosen/ctrpo
``algorithms/baselines/p3o.py``, docs/algorithms.md#p3o) — κ = 10, the pessimistic clipped cost
surrogate and a (1 − γ)-scaled violation,

    L_pen = κ·max(0, mean(max(ρ·A_c, clip(ρ)·A_c)) + (1 − γ)(Ĵc − d)),

so the hinge's threshold is (1 − γ)(d − Ĵc) in cost-advantage units (about 100× tighter than
OmniSafe's d − Ĵc), in the official clipped-ratio epoch (40 passes, one joint gradient clip,
the official Ĵc).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field
from torch import Tensor
from torch.nn.functional import relu

from safebench.core.base import OnPolicyConfig, added_field
from safebench.core.first_order import (
    ActorAdam,
    PolicyHead,
    clipped_epoch,
    clipped_surrogate,
    lr_decay_epochs_field,
    pessimistic_cost_surrogate,
)
from safebench.core.onpolicy import Batch, OnPolicyAlgorithm

__all__ = ["P3O", "P3OConfig", "p3o_loss"]


class P3OConfig(OnPolicyConfig):
    """P3O hyperparameters (OmniSafe ``configs/on-policy/P3O.yaml``; variant ``official``: the
    P3O of the published C-TRPO runs, milosen/ctrpo ``algorithms/baselines/p3o.py``)."""

    VARIANTS: ClassVar[dict[str, dict[str, Any]]] = {
        # docs/algorithms.md#p3o: κ = 10 in the runs that hold data; the pessimistic clipped
        # cost surrogate with a (1 − γ)-scaled violation; the official clipped-ratio epoch.
        "official": {
            "kappa": 10.0,
            "cost_form": "official",
            "update_iters": 40,
            "joint_grad_clip": True,
            "cost_estimate": "official",
        },
    }
    variant: Literal["omnisafe", "official"] = added_field(
        "omnisafe",
        "[H] omnisafe: OmniSafe 0.5.0 p3o.py / P3O.yaml; official: milosen/ctrpo p3o.py",
    )
    batch_size: int = Field(64, ge=1, description="[H] OmniSafe P3O.yaml algo_cfgs.batch_size")
    critic_lr: float = Field(3e-4, gt=0, description="[H] OmniSafe P3O.yaml model_cfgs.critic.lr")
    actor_lr: float = Field(3e-4, gt=0, description="[H] OmniSafe P3O.yaml model_cfgs.actor.lr")
    linear_lr_decay: bool = Field(
        True, description="[H] OmniSafe P3O.yaml model_cfgs.linear_lr_decay (actor, 1 → 0)"
    )
    lr_decay_epochs: int | None = lr_decay_epochs_field()
    kappa: float = Field(20.0, ge=0, description="[H] OmniSafe P3O.yaml algo_cfgs.kappa")
    clip: float = Field(0.2, gt=0, description="[H] OmniSafe P3O.yaml algo_cfgs.clip")
    target_kl: float = Field(0.02, gt=0, description="[H] OmniSafe P3O.yaml algo_cfgs.target_kl")
    kl_early_stop: bool = Field(True, description="[H] OmniSafe P3O.yaml algo_cfgs.kl_early_stop")
    entropy_coef: float = Field(
        0.0, ge=0, description="[H] OmniSafe P3O.yaml algo_cfgs.entropy_coef"
    )
    cost_form: Literal["omnisafe", "official"] = added_field(
        "omnisafe",
        (
            "[H] omnisafe: OmniSafe p3o.py, κ·ReLU(mean(ρ·A_c) + (Ĵc − d)); official: milosen/"
            "ctrpo p3o.py, κ·max(0, mean(max(ρ·A_c, clip(ρ)·A_c)) + (1 − γ)(Ĵc − d))"
        ),
    )


def p3o_loss(
    ratio: Tensor,
    adv_r: Tensor,
    adv_c: Tensor,
    violation: float,
    kappa: float,
    clip: float,
    cost_form: str = "omnisafe",
) -> tuple[Tensor, Tensor]:
    """The two terms of P3O's actor loss on a minibatch of ``B`` samples; returns scalars.

        L_clip = −mean(min(ρ·A_r, clip(ρ, 1−clip, 1+clip)·A_r))
        omnisafe:  L_pen = κ · max(0, mean(ρ·A_c) + violation)
        official:  L_pen = κ · max(0, mean(max(ρ·A_c, clip(ρ)·A_c)) + violation)

    Args:
        ratio: ``ρ = π_θ(a|s)/π_k(a|s)`` ``(B,)`` (differentiable).
        adv_r: standardised reward advantages ``(B,)``; adv_c: centred cost advantages ``(B,)``.
        violation: ``Ĵc − d`` (omnisafe) or ``(1 − γ)(Ĵc − d)`` (official).
        kappa: penalty factor κ; clip: PPO ratio clip ε; cost_form: which cost term.
    """
    loss_clip = clipped_surrogate(ratio, adv_r, clip)
    if cost_form == "official":
        cost = pessimistic_cost_surrogate(ratio, adv_c, clip)
    else:
        cost = (ratio * adv_c).mean()
    return loss_clip, kappa * relu(cost + violation)


class P3O(OnPolicyAlgorithm):
    """P3O: first-order clipped policy step with an exact ReLU cost penalty."""

    name = "p3o"
    Config = P3OConfig
    config: P3OConfig
    critics_in_actor_update = True  # one critic step per actor minibatch, as OmniSafe

    def setup(self) -> None:
        cfg = self.config
        self.actor_optim = ActorAdam.of(self.actor.parameters(), cfg, fused=False)

    def set_schedule(self, epochs: int) -> None:
        """Decay the actor learning rate linearly to 0 over ``epochs`` (:class:`ActorAdam`)."""
        self.actor_optim.set_schedule(epochs)

    @property
    def actor_lr(self) -> float:
        """Learning rate the next actor step uses."""
        return self.actor_optim.lr

    def update_actor(self, batch: Batch) -> dict[str, float]:
        """The epoch's minibatch passes; fits the critics too, interleaved as in OmniSafe."""
        cfg = self.config
        violation = batch.ep_cost - self.cost_limit
        if cfg.cost_form == "official":
            violation *= 1.0 - cfg.gamma
        lr = self.actor_lr

        def loss(idx: Tensor, pi: PolicyHead) -> tuple[Tensor, dict[str, float]]:
            loss_clip, loss_pen = p3o_loss(
                pi.ratio(),
                batch.adv_r[idx],
                batch.adv_c[idx],
                violation,
                cfg.kappa,
                cfg.clip,
                cfg.cost_form,
            )
            total = loss_clip + loss_pen
            if cfg.entropy_coef:
                entropy = pi.distribution().entropy().mean()
                total = total - cfg.entropy_coef * entropy
            parts = {
                "loss_pi_clip": float(loss_clip.detach()),
                "loss_pi_cost": float(loss_pen.detach()),
            }
            return total, parts

        info = clipped_epoch(
            self,
            batch,
            self.actor_optim,
            loss,
            # The omnisafe variant keeps autograd: its existing runs were made with it, and
            # the hand-written actor step agrees only up to float rounding.
            autograd=cfg.variant == "omnisafe",
        )
        self.actor_optim.end_epoch()  # OmniSafe steps its LinearLR after every epoch's update
        return {**info, "actor_lr": lr, "violation": violation}

    def extra_state(self) -> dict[str, Any]:
        state = self.actor_optim.state_dict()
        return {
            "actor_optim": state["optim"],
            "scheduler": state["scheduler"],
            "total_epochs": state["total_epochs"],
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.actor_optim.load_state_dict(
            {
                "optim": state["actor_optim"],
                "scheduler": state["scheduler"],
                "total_epochs": state["total_epochs"],
            }
        )
