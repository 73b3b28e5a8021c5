"""The clipped-ratio (PPO-family) epoch update, written once
(docs/algorithms.md#the-clipped-ratio-epoch).

PPO, PPO-Lag, CPPO-PID, FOCOPS, CUP, IPO and P3O share one epoch loop and differ only in the
actor loss of a minibatch. As the code behind the published C-TRPO runs (milosen/ctrpo
``algorithms/baselines/*.py``) runs it, for one epoch with π_k the rollout policy:

    for pass in 1 … update_iters:                       (40)
        for each minibatch b of a fresh shuffle:         (64 samples; the last may be short)
            total = L_π(b) + L_Vr(b) + L_Vc(b)            (critic losses with the L2 term)
            one backward; ONE clip_grad_norm_ over actor + both critics (40)
            Adam steps of the critics and of the actor
        stop if KL̄(π_k ‖ π_θ) > target_kl               (summed over action dims, all states)
    actor learning rate ← LinearLR step                  (3e-4 · (1 − e/epochs))

OmniSafe 0.5.0 clips actor and each critic separately (``joint_grad_clip: false``). With
joint clipping a large critic gradient also shrinks the actor step, so the two are not the
same update; the published runs used the joint one.

:class:`ClippedUpdateFields` holds the settings (mixed into an algorithm's config),
:class:`ActorAdam` the actor optimiser with its schedule, :func:`clipped_epoch` the loop and
:func:`clipped_surrogate` the PPO objective. A minibatch loss sees π_θ through a
:class:`PolicyHead` (ρ and π_θ(·|s) on its rows), so the Gaussian MLP actor's step can be
computed by hand (:mod:`safebench.core.actor_fast`) and any other actor's by autograd.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch
from pydantic import BaseModel, Field
from torch import Tensor
from torch.distributions import Distribution, kl_divergence
from torch.optim.adam import adam
from torch.optim.lr_scheduler import LinearLR

from safebench.core.actor_fast import GaussianActorStep, GaussianHead
from safebench.core.base import added_field
from safebench.core.onpolicy import Batch, OnPolicyAlgorithm
from safebench.core.optim import distribution_rows, frozen_distribution, kl_sum_dims

__all__ = [
    "OMNISAFE_CLIPPED",
    "ActorAdam",
    "ActorSchedule",
    "ClippedUpdateFields",
    "PolicyHead",
    "clip_grad_norm",
    "clipped_epoch",
    "clipped_surrogate",
    "lagrangian_advantage",
    "lr_decay_epochs_field",
    "pessimistic_cost_surrogate",
]

_C = "milosen/ctrpo algorithms/baselines"


def lr_decay_epochs_field() -> Any:
    """The ``lr_decay_epochs`` setting of every method with :class:`ActorAdam` (one wording)."""
    return added_field(
        None,
        ge=1,
        description=(
            f"[H] {_C}/*.py LinearLR(total_iters=epochs), epochs = total_steps // "
            "steps_per_epoch of the run (500 for the published 1e7-step runs); null: this "
            "run's own epochs. A run stopped short of the official budget (fidelity at 1 M "
            "steps) sets 500 to train at the official learning rates"
        ),
    )


class ClippedUpdateFields(BaseModel):
    """Settings of the clipped-ratio epoch update, at the published runs' values.

    Mixed in before :class:`~safebench.core.base.OnPolicyConfig` (its defaults win over the
    OmniSafe ones there): ``class PPOConfig(ClippedUpdateFields, OnPolicyConfig)``.
    """

    batch_size: int = Field(64, ge=1, description=f"[H] {_C} runs' config.json batch_size")
    update_iters: int = Field(
        40, ge=1, description=f"[H] {_C} runs' config.json learning_iters (passes per epoch)"
    )
    critic_lr: float = Field(3e-4, gt=0, description=f"[H] {_C}/ppo_lag.py critic Adam lr")
    actor_lr: float = Field(3e-4, gt=0, description=f"[H] {_C}/ppo_lag.py actor Adam lr")
    linear_lr_decay: bool = Field(
        True, description=f"[H] {_C}/ppo_lag.py LinearLR(1 → 0, total_iters=epochs), per epoch"
    )
    lr_decay_epochs: int | None = lr_decay_epochs_field()
    clip: float = Field(0.2, gt=0, description=f"[H] {_C}/ppo_lag.py ratio clip ε (hard-coded)")
    target_kl: float = Field(
        0.02, gt=0, description=f"[H] {_C} runs' config.json target_kl (stop after a pass)"
    )
    kl_early_stop: bool = Field(True, description=f"[H] {_C}/ppo_lag.py KL check after a pass")
    joint_grad_clip: bool = Field(
        True, description=f"[H] {_C}/ppo_lag.py one clip_grad_norm_ over actor and critics"
    )
    cost_estimate: Literal["window", "official"] = Field(
        "official",
        description=f"[H] {_C}: Ĵc as logged (docs/algorithms.md#cost-estimate), 0.0 at epoch 0",
    )


OMNISAFE_CLIPPED: dict[str, Any] = {
    # OmniSafe 0.5.0 policy_gradient.py: actor and each critic clipped on their own; Ĵc the
    # window mean at the epoch's end (docs/baselines.md#the-protocol-they-share). Its other
    # protocol differences (one env, reset every epoch, its observation normaliser) are the
    # experiment's settings.
    "joint_grad_clip": False,
    "cost_estimate": "window",
}
"""The defaults an ``omnisafe`` variant of a clipped-ratio method changes."""


def lagrangian_advantage(adv_r: Tensor, adv_c: Tensor, lam: float) -> Tensor:
    """``(Â_r − λ·Â_c) / (1 + λ)`` ``(B,)``: the advantage of the Lagrangian, rescaled so its
    size does not grow with λ (PPO-Lag, TRPO-Lag, CPPO-PID, FOCOPS; official code)."""
    return (adv_r - lam * adv_c) / (1.0 + lam)


def clipped_surrogate(ratio: Tensor, adv: Tensor, clip: float) -> Tensor:
    """PPO's clipped objective as a loss, ``−mean(min(ρ·A, clip(ρ, 1−ε, 1+ε)·A))``.

    Args:
        ratio: ``ρ = π_θ(a|s)/π_k(a|s)`` ``(B,)`` (differentiable); adv: advantages ``(B,)``;
        clip: ε.
    """
    return -torch.min(ratio * adv, torch.clamp(ratio, 1.0 - clip, 1.0 + clip) * adv).mean()


def pessimistic_cost_surrogate(ratio: Tensor, adv_c: Tensor, clip: float) -> Tensor:
    """The clipped cost surrogate read pessimistically, ``mean(max(ρ·A_c, clip(ρ)·A_c))``.

    The cost counterpart of :func:`clipped_surrogate` (P3O's and IPO's recovery term, official
    code); shapes ``(B,)``.
    """
    return torch.max(ratio * adv_c, torch.clamp(ratio, 1.0 - clip, 1.0 + clip) * adv_c).mean()


@dataclass(frozen=True)
class _AdamLists:
    """The arguments ``torch.optim.Adam.step`` gathers for ``torch.optim.adam.adam``."""

    params: list[Tensor]
    grads: list[Tensor]
    exp_avgs: list[Tensor]
    exp_avg_sqs: list[Tensor]
    max_exp_avg_sqs: list[Tensor]
    state_steps: list[Tensor]

    def args(
        self,
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
        """The six lists in the order ``adam`` and ``torch._fused_adam_`` take them."""
        return (
            self.params,
            self.grads,
            self.exp_avgs,
            self.exp_avg_sqs,
            self.max_exp_avg_sqs,
            self.state_steps,
        )


class ActorSchedule(Protocol):
    """The config settings :meth:`ActorAdam.of` reads (read-only: configs are frozen)."""

    @property
    def actor_lr(self) -> float: ...
    @property
    def linear_lr_decay(self) -> bool: ...
    @property
    def lr_decay_epochs(self) -> int | None: ...


class ActorAdam:
    """The actor's Adam and its linear learning-rate decay over the run.

    The official code and OmniSafe build ``LinearLR(start_factor=1, end_factor=0,
    total_iters=epochs)`` and step it after every epoch's update, so epoch ``e`` (0-based)
    trains at ``lr·(1 − e/E)``. ``E`` is ``decay_epochs`` where given, else the run length
    from the runner (``Algorithm.set_schedule``); without either the rate stays constant.
    ``E`` matters when a run is compared with longer ones at a matched step: the published
    runs decay over 500 epochs (1e7 steps), so at 1 M steps they still train at 0.9·lr, where
    a 1 M-step run scheduled over its own 50 epochs has reached 0.
    """

    def __init__(
        self,
        params: Any,
        lr: float,
        decay: bool,
        *,
        fused: bool = True,
        decay_epochs: int | None = None,
    ) -> None:
        self.base_lr = lr
        self.decay = decay
        self.decay_epochs = decay_epochs
        # fused: one kernel for every parameter, the same update as the per-tensor loop up
        # to float rounding and 13% less time per minibatch step on one CPU core (measured
        # on a 64-64 actor); P3O keeps the per-tensor loop its existing runs were made with.
        self.optim = torch.optim.Adam(params, lr=lr, fused=fused)
        self.scheduler: LinearLR | None = None
        self.total_epochs: int | None = None

    @classmethod
    def of(cls, params: Any, cfg: ActorSchedule, *, fused: bool = True) -> ActorAdam:
        """The actor optimiser a config's ``actor_lr`` / ``linear_lr_decay`` /
        ``lr_decay_epochs`` describe."""
        return cls(
            params, cfg.actor_lr, cfg.linear_lr_decay, fused=fused, decay_epochs=cfg.lr_decay_epochs
        )

    @property
    def lr(self) -> float:
        """The learning rate the next step uses."""
        return float(self.optim.param_groups[0]["lr"])

    def bound_step(self) -> Callable[[], None]:
        """``optim.step()`` as a zero-argument call, for ``.grad`` tensors that stay the same
        tensors from step to step (the views of :class:`~safebench.core.actor_fast.
        GaussianActorStep`).

        The first call is ``optim.step()`` itself, which creates any missing state; later
        calls run the function it runs, ``torch.optim.adam.adam`` with the group's settings,
        on the parameter, gradient and state lists gathered after that first call: the same
        update, without ``Optimizer.step``'s per-step bookkeeping (gathering those lists,
        profiling hooks), which at a 64-64 actor is about half of the step's time. A fused
        group (one device, a float learning rate) goes one level further: the two kernels
        ``adam`` would launch, the step count's increment and ``torch._fused_adam_``.
        """
        optim = self.optim
        (group,) = optim.param_groups
        lists: _AdamLists | None = None
        direct_fused = bool(group["fused"]) and not (
            group["capturable"] or group["differentiable"] or group["decoupled_weight_decay"]
        )

        def step() -> None:
            nonlocal lists
            if lists is None:
                optim.step()
                params = [p for p in group["params"] if p.grad is not None]
                states = [optim.state[p] for p in params]
                lists = _AdamLists(
                    params=params,
                    grads=[p.grad for p in params],
                    exp_avgs=[st["exp_avg"] for st in states],
                    exp_avg_sqs=[st["exp_avg_sq"] for st in states],
                    max_exp_avg_sqs=(
                        [st["max_exp_avg_sq"] for st in states] if group["amsgrad"] else []
                    ),
                    state_steps=[st["step"] for st in states],
                )
                return
            # the group's settings, the learning rate (scheduled per epoch) read at each step
            hyper = {
                "amsgrad": group["amsgrad"],
                "beta1": group["betas"][0],
                "beta2": group["betas"][1],
                "lr": group["lr"],
                "weight_decay": group["weight_decay"],
                "eps": group["eps"],
                "maximize": group["maximize"],
            }
            with torch.no_grad():
                if direct_fused and isinstance(group["lr"], float):
                    # What ``adam`` runs for a fused group on one device, kernel for kernel (so
                    # bit-identical), without its per-call argument checks and tensor grouping,
                    # which at a 64-64 actor take longer than the two kernels themselves.
                    torch._foreach_add_(lists.state_steps, 1)
                    torch._fused_adam_(*lists.args(), **hyper, grad_scale=None, found_inf=None)
                else:
                    adam(
                        *lists.args(),
                        **hyper,
                        foreach=group["foreach"],
                        capturable=group["capturable"],
                        differentiable=group["differentiable"],
                        fused=group["fused"],
                        decoupled_weight_decay=group["decoupled_weight_decay"],
                    )

        return step

    def set_schedule(self, epochs: int) -> None:
        """Schedule the decay over ``decay_epochs`` if set, else over the run's ``epochs``."""
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        self.total_epochs = int(self.decay_epochs or epochs)
        self.scheduler = None
        if self.decay:
            for group in self.optim.param_groups:
                group["lr"] = self.base_lr
                group.pop("initial_lr", None)
            self.scheduler = LinearLR(
                self.optim, start_factor=1.0, end_factor=0.0, total_iters=self.total_epochs
            )

    def end_epoch(self) -> None:
        if self.scheduler is not None:
            self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        return {
            "optim": self.optim.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "total_epochs": self.total_epochs,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["scheduler"] is not None:
            if self.scheduler is None:
                self.set_schedule(state["total_epochs"])
            assert self.scheduler is not None
            self.scheduler.load_state_dict(state["scheduler"])
        else:
            self.scheduler = None
        self.total_epochs = state["total_epochs"]
        # Loaded last: the optimiser's param groups carry the scheduled learning rate.
        self.optim.load_state_dict(state["optim"])


class AutogradHead:
    """π_θ on one minibatch through the actor module: autograd all the way to the parameters.

    The loss of :func:`clipped_epoch` sees π_θ as a :data:`PolicyHead`: ``ratio()`` gives
    ``ρ = π_θ(a|s) / π_k(a|s)`` ``(b,)``, ``distribution()`` π_θ(·|s) on the minibatch's
    states and ``kl(reference)`` the KL from it to a frozen policy ``(b,)``, all differentiable.
    """

    def __init__(self, algo: OnPolicyAlgorithm, batch: Batch, idx: Tensor) -> None:
        self.algo, self.batch, self.idx = algo, batch, idx

    def ratio(self) -> Tensor:
        return self.algo.ratio(self.batch, self.idx)

    def distribution(self) -> Distribution:
        return self.algo.actor.distribution(self.batch.obs[self.idx])

    def kl(self, reference: Distribution) -> Tensor:
        """``KL(π_θ(·|s) ‖ π_ref(·|s))`` ``(b,)``, summed over action dims; ``reference`` is a
        frozen distribution over the whole batch, its rows ``idx`` taken here."""
        dist = self.distribution()
        kl = kl_divergence(dist, distribution_rows(reference, self.idx))
        return kl.reshape(len(self.idx), -1).sum(-1)


PolicyHead = AutogradHead | GaussianHead
"""π_θ on one minibatch as the actor loss sees it: through autograd, or the Gaussian MLP
actor's hand-written step (:class:`~safebench.core.actor_fast.GaussianHead`)."""

MinibatchLoss = Callable[[Tensor, PolicyHead], tuple[Tensor, dict[str, float]]]
"""``(idx (b,), π_θ on those rows) -> (actor loss, its diagnostics)`` for one minibatch."""


def clip_grad_norm(grads: list[Tensor], max_norm: float) -> None:
    """``torch.nn.utils.clip_grad_norm_`` on the gradient tensors themselves, op for op.

    With ``G = ‖(‖g_1‖₂, …, ‖g_n‖₂)‖₂`` every ``g_i`` is scaled in place by
    ``min(1, max_norm / (G + 1e-6))`` — the same kernels in the same order as torch's CPU/CUDA
    foreach path, so the result is bit-identical. Written out because the library function's
    Python around those four kernels (parameter grouping by device and dtype, the ``no_grad``
    wrapper, re-listing ``.grad`` each call) costs about as much as a 64-row actor step's
    arithmetic, and the PPO family calls it ~12 500 times an epoch. ``grads`` must share one
    device and dtype (one actor's gradients do).
    """
    with torch.no_grad():
        total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2.0)), 2.0)
        torch._foreach_mul_(grads, torch.clamp(max_norm / (total + 1e-6), max=1.0))


def clipped_epoch(
    algo: OnPolicyAlgorithm,
    batch: Batch,
    actor: ActorAdam,
    actor_loss: MinibatchLoss,
    *,
    fit_critics: bool = True,
    kl_reference: torch.distributions.Distribution | None = None,
    autograd: bool = False,
) -> dict[str, float]:
    """One epoch of minibatch passes (module docstring); returns mean diagnostics.

    The passes, minibatch size and early stop are the config's (``update_iters``,
    ``batch_size``, ``target_kl``, ``kl_early_stop``: :class:`ClippedUpdateFields`); gradients are
    clipped as its ``joint_grad_clip`` says. ``fit_critics=False`` runs
    actor-only passes (CUP's projection phase) with the actor's own
    clip. ``kl_reference`` is the policy the early stop measures from (default π_k, the policy
    at the call). The learning-rate schedule is *not* stepped here: an algorithm with two
    phases steps it once after both (:meth:`ActorAdam.end_epoch`).

    ``actor_loss`` sees π_θ on the minibatch through a :class:`PolicyHead`. Where
    :class:`~safebench.core.actor_fast.GaussianActorStep` supports the actor, the head, the
    actor's gradient and the Adam step are its hand-written ones (the same update up to float
    rounding; a PPO-Lag minibatch step, critics included, takes 1.5× less time on one CPU
    core); otherwise, or with ``autograd=True``, autograd runs through the actor module.
    """
    cfg = algo.config
    # The clipped-ratio settings (ClippedUpdateFields, or P3O's own fields of the same names).
    target_kl: float = getattr(cfg, "target_kl")  # noqa: B009
    kl_early_stop: bool = getattr(cfg, "kl_early_stop")  # noqa: B009
    params = [p for p in algo.actor.parameters() if p.requires_grad]
    reference = kl_reference or frozen_distribution(algo.actor, batch.obs)
    sums: dict[str, float] = {}
    steps = passes = 0
    kl = 0.0
    fast = None
    step: Callable[[], object] = actor.optim.step
    if not autograd and GaussianActorStep.supports(algo.actor):
        fast = GaussianActorStep(algo.actor, batch.obs, batch.act, batch.logp)
        step = actor.bound_step()  # the parameters' .grad stay the views of fast.grad
        views = [p.grad for p in params if p.grad is not None]
    for _ in range(cfg.update_iters):
        for idx in algo.minibatches(len(batch), cfg.batch_size):
            if fast is None:
                loss, parts = actor_loss(idx, AutogradHead(algo, batch, idx))
                actor.optim.zero_grad()
                loss.backward()
                grads = [p.grad for p in params if p.grad is not None]
            else:
                head = fast.head(idx)
                loss, parts = actor_loss(idx, head)
                fast.backward(loss, head)
                grads = [fast.grad]  # the parameters' .grad are views of it
            if fit_critics and cfg.joint_grad_clip:
                parts["loss_v_r"], parts["loss_v_c"] = algo.critic_step(batch, idx, grads)
            else:
                if fit_critics:  # OmniSafe's order: reward critic, cost critic, then the actor
                    parts["loss_v_r"], parts["loss_v_c"] = algo.critic_step(batch, idx)
                # per tensor, as clip_grad_norm_ norms them (the fast path's flat buffer as views)
                clip_grad_norm(grads if fast is None else views, cfg.max_grad_norm)
            step()
            for key, value in parts.items():
                sums[key] = sums.get(key, 0.0) + value
            steps += 1
        passes += 1
        with torch.no_grad():
            kl = float(kl_sum_dims(algo.actor, batch.obs, reference))
        if kl_early_stop and kl > target_kl:
            break
    info = {k: v / max(steps, 1) for k, v in sums.items()}
    info.update(kl=kl, update_passes=float(passes))
    if fit_critics:
        info["critic_steps"] = float(steps)
    return info
