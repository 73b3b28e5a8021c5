"""The on-policy machinery every on-policy algorithm shares (docs/algorithms.md#the-epoch).

:class:`OnPolicyAlgorithm` owns the actor, the reward and cost critics, the critic optimiser
and the update RNG. Subclasses implement only :meth:`OnPolicyAlgorithm.update_actor` (the
algorithm's math); the epoch update is then

    batch  = prepare(rollout)          # advantages: reward standardised, cost centred
    info   = update_actor(batch)       # algorithm-specific
    info  |= update_critics(batch)     # update_iters passes of minibatch regression

which is OmniSafe's order for the second-order methods (critics fitted after the actor).
Methods that fit the critics inside their own minibatch loop, interleaved with actor steps
(OmniSafe's first-order P3O, KFCPO's minibatch K-FAC steps), declare
``critics_in_actor_update = True`` and the last step is skipped.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from safebench.core.base import Algorithm, OnPolicyConfig
from safebench.core.critics import CriticPair
from safebench.core.gae import centre, standardize
from safebench.core.policies import Actor, CategoricalActor, GaussianActor, NumpyPolicy

__all__ = ["Batch", "OnPolicyAlgorithm", "Rollout"]


@dataclass(frozen=True)
class Rollout:
    """One epoch of on-policy data, flattened over time and envs (``T·N = B`` rows).

    Attributes:
        obs: ``(B, obs_dim)`` normalised observations.
        act: ``(B, act_dim)`` sampled (unclipped) actions, or ``(B,)`` integers.
        logp: ``(B,)`` log π_old(a|s) at collection time.
        adv_r, adv_c: ``(B,)`` raw GAE advantages of reward and cost.
        target_r, target_c: ``(B,)`` value targets (GAE returns).
        ep_cost: Ĵc, the mean undiscounted cost of the last ``ep_cost_window`` finished
            episodes (NaN before the first episode finishes).
        ep_ret: the same window's mean undiscounted return.
        ep_cost_epoch: the official C-TRPO code's Ĵc: the window's mean cost taken after each
            episode that ended during this collection, averaged (NaN if none ended).
    """

    obs: np.ndarray
    act: np.ndarray
    logp: np.ndarray
    adv_r: np.ndarray
    adv_c: np.ndarray
    target_r: np.ndarray
    target_c: np.ndarray
    ep_cost: float
    ep_ret: float
    ep_cost_epoch: float = float("nan")


@dataclass(frozen=True)
class Batch:
    """A :class:`Rollout` as tensors on the algorithm's device, advantages normalised."""

    obs: Tensor
    act: Tensor
    logp: Tensor
    adv_r: Tensor
    adv_c: Tensor
    target_r: Tensor
    target_c: Tensor
    ep_cost: float

    def __len__(self) -> int:
        return int(self.obs.shape[0])


class OnPolicyAlgorithm(Algorithm):
    """Actor + critic pair + critic optimiser; subclasses write the actor update."""

    kind = "on-policy"
    config: OnPolicyConfig
    critics_in_actor_update: ClassVar[bool] = False
    """True: :meth:`update_actor` fits the critics itself (one step per actor minibatch)."""
    checkpointed: ClassVar[tuple[str, ...]] = ()
    """Attributes made in :meth:`setup` (optimisers, multipliers) whose ``state_dict()`` the
    checkpoint keeps under their names; :meth:`extra_state` is for state of another shape."""

    def _build(self) -> None:
        cfg, seed, action_space = self.config, self.seed, self.action_space
        # Network initialisation draws from torch's global RNG: seed it here so a run's
        # initial weights depend on its seed only, whatever ran before in the process.
        torch.manual_seed(seed)
        self.actor: Actor
        if self.discrete:
            n = int(action_space.n)  # type: ignore[attr-defined]
            self.actor = CategoricalActor(self.obs_dim, n, cfg.hidden_sizes, cfg.activation)
        else:
            act_dim = int(np.prod(action_space.shape or (1,)))
            self.actor = GaussianActor(
                self.obs_dim, act_dim, cfg.hidden_sizes, cfg.activation, cfg.log_std_init
            )
        self.critics = CriticPair(self.obs_dim, cfg.hidden_sizes, cfg.activation)
        self.actor.to(self.device)
        self.critics.to(self.device)
        # Hand-written step and Adam over one flat buffer (safebench.core.critic_fast): the
        # same update as autograd + torch.optim.Adam, 2.6x less CPU per epoch update.
        self.critic_optim = self.critics.make_optimizer(cfg.critic_lr)
        # Minibatch shuffling has its own generator so it is checkpointed with the algorithm.
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(seed)
        self._policy: NumpyPolicy | None = None
        # Only used by act(deterministic=False); the runner samples with its own RNG.
        self._act_rng = np.random.default_rng(np.random.SeedSequence([seed, 11]))
        self.updates = 0  # epochs updated so far (the official Ĵc is 0.0 at the first)

    # ---- acting -------------------------------------------------------------------------

    def rollout_policy(self) -> NumpyPolicy:
        """A NumPy snapshot of the actor (``sample``/``mode``), refreshed after each update.

        A torch forward on a batch of one costs more than many env steps; the snapshot is
        the same function evaluated with NumPy.
        """
        if self._policy is None:
            if self.device.type == "cpu":
                self._policy = self.actor.numpy_policy()
            else:
                self._policy = self.actor.cpu().numpy_policy()
                self.actor.to(self.device)
        return self._policy

    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        policy = self.rollout_policy()
        if deterministic:
            return np.asarray(policy.mode(obs))
        return np.asarray(policy.sample(obs, self._act_rng)[0])

    @torch.no_grad()
    def log_prob(self, obs: np.ndarray, act: np.ndarray) -> np.ndarray:
        """``log π_θ(a|s)`` ``(B,)`` for a batch, with the torch actor (float32)."""
        dtype = torch.long if self.discrete else torch.float32
        logp = self.actor.log_prob(
            torch.as_tensor(obs, dtype=torch.float32, device=self.device),
            torch.as_tensor(act, dtype=dtype, device=self.device),
        )
        return logp.cpu().numpy()

    @torch.no_grad()
    def values(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(V_r(s), V_c(s))`` for ``(B, obs_dim)`` observations, as float64 arrays."""
        out = self.critics(torch.as_tensor(obs, dtype=torch.float32, device=self.device))
        out = out.double().cpu().numpy()
        return out[:, 0], out[:, 1]

    # ---- updating -----------------------------------------------------------------------

    def prepare(self, rollout: Rollout) -> Batch:
        """Tensors on the device; A_r standardised, A_c centred (OmniSafe conventions).

        ``Batch.ep_cost`` is the Ĵc of ``config.cost_estimate`` (0.0 where undefined).
        """
        cfg = self.config
        adv_r = standardize(rollout.adv_r) if cfg.standardize_reward_adv else rollout.adv_r
        adv_c = centre(rollout.adv_c) if cfg.centre_cost_adv else rollout.adv_c

        def t(x: np.ndarray, dtype: torch.dtype = torch.float32) -> Tensor:
            return torch.as_tensor(np.asarray(x), dtype=dtype, device=self.device)

        if cfg.cost_estimate == "official":
            ep_cost = rollout.ep_cost_epoch if self.updates > 0 else 0.0
        else:
            ep_cost = rollout.ep_cost
        return Batch(
            obs=t(rollout.obs),
            act=t(rollout.act, torch.long if self.discrete else torch.float32),
            logp=t(rollout.logp),
            adv_r=t(adv_r),
            adv_c=t(adv_c),
            target_r=t(rollout.target_r),
            target_c=t(rollout.target_c),
            ep_cost=float(ep_cost) if np.isfinite(ep_cost) else 0.0,
        )

    def update(self, data: Rollout) -> dict[str, float]:
        batch = self.prepare(data)
        info = self.update_actor(batch)
        if not self.critics_in_actor_update:
            info.update(self.update_critics(batch))
        self._policy = None
        self.updates += 1
        return info

    @abstractmethod
    def update_actor(self, batch: Batch) -> dict[str, float]:
        """The algorithm's policy update; returns diagnostics."""

    def ratio(self, batch: Batch, idx: Tensor) -> Tensor:
        """``ρ = π_θ(a|s) / π_k(a|s)`` ``(b,)`` on the minibatch ``idx`` (differentiable)."""
        return torch.exp(self.actor.log_prob(batch.obs[idx], batch.act[idx]) - batch.logp[idx])

    def minibatches(self, n: int, size: int) -> list[Tensor]:
        """A fresh random partition of ``range(n)`` into minibatches (last may be short)."""
        perm = torch.randperm(n, generator=self.generator).to(self.device)
        return list(perm.split(size))

    def critic_step(
        self, batch: Batch, idx: Tensor, joint_grads: Sequence[Tensor] | None = None
    ) -> tuple[float, float]:
        """One optimiser step of both critics on the minibatch ``idx``: ``(loss_r, loss_c)``.

        ``joint_grads`` (e.g. the actor's gradients of the same minibatch) are clipped with
        the critics' as one set and left scaled in place for the caller's own step.
        """
        cfg = self.config
        return self.critics.fit_minibatch(
            batch.obs[idx],
            batch.target_r[idx],
            batch.target_c[idx],
            self.critic_optim,
            cfg.max_grad_norm,
            cfg.critic_norm_coef,
            joint_grads,
        )

    def update_critics(self, batch: Batch) -> dict[str, float]:
        """``update_iters`` passes of minibatch MSE regression of V_r, V_c on GAE returns."""
        cfg = self.config
        loss_r = loss_c = 0.0
        steps = 0
        joint: list[Tensor] | None = [] if cfg.joint_grad_clip else None  # both heads as one
        for _ in range(cfg.update_iters):
            for idx in self.minibatches(len(batch), cfg.batch_size):
                loss_r, loss_c = self.critic_step(batch, idx, joint)
                steps += 1
        return {"loss_v_r": loss_r, "loss_v_c": loss_c, "critic_steps": float(steps)}

    # ---- checkpointing ------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "actor": self.actor.state_dict(),
            "critics": self.critics.state_dict(),
            "critic_optim": self.critic_optim.state_dict(),
            "generator": self.generator.get_state(),
            "act_rng": self._act_rng.bit_generator.state,
            "updates": self.updates,
            "extra": self.extra_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.actor.load_state_dict(state["actor"])
        self.critics.load_state_dict(state["critics"])
        self.critic_optim.load_state_dict(state["critic_optim"])
        self.generator.set_state(state["generator"])
        self._act_rng.bit_generator.state = state["act_rng"]
        self.updates = int(state.get("updates", 0))  # absent in checkpoints before the counter
        self.load_extra_state(state["extra"])
        self._policy = None

    def extra_state(self) -> dict[str, Any]:
        """Subclass state beyond nets/optimiser/RNG: by default each :attr:`checkpointed`
        attribute's ``state_dict()`` under its name."""
        return {name: getattr(self, name).state_dict() for name in self.checkpointed}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`extra_state`."""
        for name in self.checkpointed:
            getattr(self, name).load_state_dict(state[name])
