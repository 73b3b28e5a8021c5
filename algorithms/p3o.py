"""Penalized Proximal Policy Optimization (Zhang et al., 2022) as implemented in OmniSafe 0.5.0.

PPO's clipped objective plus an exact (ReLU) penalty on the linearised constraint
(ALGORITHMS.md §2.4). Per minibatch, with ρ = π_θ(a|s)/π_k(a|s):

    L_clip = −mean(min(ρ·A_r, clip(ρ, 1−ε, 1+ε)·A_r))
    L_pen  = κ·ReLU(mean(ρ·A_c) + (Ĵc − d))          (cost term not clipped)
    θ ← Adam(θ, ∇(L_clip + L_pen)) with gradient-norm clipping

The epoch update follows OmniSafe's ``PolicyGradient._update``: ``update_iters`` passes over
shuffled minibatches; each minibatch first fits both critics, then takes the actor step; after
each pass the KL(π_k ‖ π_θ) on the whole batch (summed over action dimensions, averaged over
states) stops the passes once it exceeds ``target_kl``. The actor learning rate decays
linearly to 0 over the run's epochs (OmniSafe ``LinearLR``, stepped once per epoch).
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import Tensor
from torch.nn.functional import relu
from torch.optim.lr_scheduler import LinearLR

from safebench.core.base import OnPolicyConfig
from safebench.core.onpolicy import Batch, OnPolicyAlgorithm
from safebench.core.optim import frozen_distribution, kl_sum_dims

__all__ = ["P3O", "P3OConfig", "p3o_loss"]


class P3OConfig(OnPolicyConfig):
    """P3O hyperparameters (OmniSafe ``configs/on-policy/P3O.yaml``)."""

    batch_size: int = Field(64, ge=1, description="[H] OmniSafe P3O.yaml algo_cfgs.batch_size")
    critic_lr: float = Field(3e-4, gt=0, description="[H] OmniSafe P3O.yaml model_cfgs.critic.lr")
    actor_lr: float = Field(3e-4, gt=0, description="[H] OmniSafe P3O.yaml model_cfgs.actor.lr")
    linear_lr_decay: bool = Field(
        True, description="[H] OmniSafe P3O.yaml model_cfgs.linear_lr_decay (actor, 1 → 0)"
    )
    kappa: float = Field(20.0, ge=0, description="[H] OmniSafe P3O.yaml algo_cfgs.kappa")
    clip: float = Field(0.2, gt=0, description="[H] OmniSafe P3O.yaml algo_cfgs.clip")
    target_kl: float = Field(0.02, gt=0, description="[H] OmniSafe P3O.yaml algo_cfgs.target_kl")
    kl_early_stop: bool = Field(True, description="[H] OmniSafe P3O.yaml algo_cfgs.kl_early_stop")
    entropy_coef: float = Field(
        0.0, ge=0, description="[H] OmniSafe P3O.yaml algo_cfgs.entropy_coef"
    )


def p3o_loss(
    logp: Tensor,
    logp_old: Tensor,
    adv_r: Tensor,
    adv_c: Tensor,
    violation: float,
    kappa: float,
    clip: float,
) -> tuple[Tensor, Tensor]:
    """The two terms of P3O's actor loss on a minibatch of ``B`` samples; returns scalars.

        ρ      = exp(logp − logp_old)                                       (B,)
        L_clip = −mean(min(ρ·A_r, clip(ρ, 1−clip, 1+clip)·A_r))
        L_pen  = κ · max(0, mean(ρ·A_c) + violation)

    Args:
        logp: ``log π_θ(a|s)`` ``(B,)`` (differentiable).
        logp_old: ``log π_k(a|s)`` ``(B,)`` at collection.
        adv_r: standardised reward advantages ``(B,)``; adv_c: centred cost advantages ``(B,)``.
        violation: ``Ĵc − d`` (mean episode cost of the window minus the limit).
        kappa: penalty factor κ; clip: PPO ratio clip ε.
    """
    ratio = torch.exp(logp - logp_old)
    clipped = torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    loss_clip = -torch.min(ratio * adv_r, clipped * adv_r).mean()
    loss_pen = kappa * relu((ratio * adv_c).mean() + violation)
    return loss_clip, loss_pen


class P3O(OnPolicyAlgorithm):
    """P3O: first-order clipped policy step with an exact ReLU cost penalty."""

    name = "p3o"
    Config = P3OConfig
    config: P3OConfig
    critics_in_actor_update = True  # one critic step per actor minibatch, as OmniSafe

    def setup(self) -> None:
        self.actor_optim = torch.optim.Adam(self.actor.parameters(), lr=self.config.actor_lr)
        self.scheduler: LinearLR | None = None
        self.total_epochs: int | None = None

    def set_schedule(self, epochs: int) -> None:
        """Decay the actor learning rate linearly from ``actor_lr`` to 0 over ``epochs``.

        OmniSafe builds ``LinearLR(start_factor=1, end_factor=0, total_iters=epochs)`` from the
        run length and steps it after every epoch's update, so epoch ``e`` (0-based) trains at
        ``actor_lr·(1 − e/epochs)``. The algorithm cannot know the run length, so the runner
        calls this once before the first update; without the call the rate stays constant.
        Call it before :meth:`load_state_dict` when resuming (the saved schedule then wins).
        """
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        self.total_epochs = int(epochs)
        self.scheduler = None
        if self.config.linear_lr_decay:
            for group in self.actor_optim.param_groups:
                group["lr"] = self.config.actor_lr
                group.pop("initial_lr", None)
            self.scheduler = LinearLR(
                self.actor_optim, start_factor=1.0, end_factor=0.0, total_iters=self.total_epochs
            )

    @property
    def actor_lr(self) -> float:
        """Learning rate the next actor step uses."""
        return float(self.actor_optim.param_groups[0]["lr"])

    def update_actor(self, batch: Batch) -> dict[str, float]:
        """The epoch's minibatch passes; fits the critics too, interleaved as in OmniSafe."""
        cfg = self.config
        violation = batch.ep_cost - self.cost_limit
        old_dist = frozen_distribution(self.actor, batch.obs)
        lr = self.actor_lr
        sums = {"loss_pi_clip": 0.0, "loss_pi_cost": 0.0, "loss_v_r": 0.0, "loss_v_c": 0.0}
        steps = passes = 0
        kl = 0.0
        for _ in range(cfg.update_iters):
            for idx in self.minibatches(len(batch), cfg.batch_size):
                # OmniSafe's order within a minibatch: reward critic, cost critic, actor.
                loss_v_r, loss_v_c = self.critic_step(batch, idx)
                loss_clip, loss_pen = self._actor_step(batch, idx, violation)
                sums["loss_pi_clip"] += loss_clip
                sums["loss_pi_cost"] += loss_pen
                sums["loss_v_r"] += loss_v_r
                sums["loss_v_c"] += loss_v_c
                steps += 1
            passes += 1
            with torch.no_grad():
                kl = float(kl_sum_dims(self.actor, batch.obs, old_dist))
            if cfg.kl_early_stop and kl > cfg.target_kl:
                break
        info = {k: v / max(steps, 1) for k, v in sums.items()}
        info.update(
            kl=kl,
            update_passes=float(passes),
            critic_steps=float(steps),
            actor_lr=lr,
            violation=violation,
        )
        if self.scheduler is not None:  # OmniSafe steps its LinearLR after every epoch's update
            self.scheduler.step()
        return info

    def _actor_step(self, batch: Batch, idx: Tensor, violation: float) -> tuple[float, float]:
        """One Adam step on ``L_clip + L_pen − entropy_coef·H`` for the minibatch ``idx``."""
        cfg = self.config
        logp = self.actor.log_prob(batch.obs[idx], batch.act[idx])
        loss_clip, loss_pen = p3o_loss(
            logp,
            batch.logp[idx],
            batch.adv_r[idx],
            batch.adv_c[idx],
            violation,
            cfg.kappa,
            cfg.clip,
        )
        loss = loss_clip + loss_pen
        if cfg.entropy_coef:
            entropy = self.actor.distribution(batch.obs[idx]).entropy().mean()
            loss = loss - cfg.entropy_coef * entropy
        self.actor_optim.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.actor.parameters(), cfg.max_grad_norm)
        self.actor_optim.step()
        return float(loss_clip.detach()), float(loss_pen.detach())

    def extra_state(self) -> dict[str, Any]:
        return {
            "actor_optim": self.actor_optim.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "total_epochs": self.total_epochs,
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if state["scheduler"] is not None:
            if self.scheduler is None:
                self.set_schedule(state["total_epochs"])
            assert self.scheduler is not None
            self.scheduler.load_state_dict(state["scheduler"])
        else:
            self.scheduler = None
        self.total_epochs = state["total_epochs"]
        # Loaded last: the optimiser's param groups carry the scheduled learning rate.
        self.actor_optim.load_state_dict(state["actor_optim"])
