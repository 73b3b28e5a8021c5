"""The Gaussian MLP actor's half of a clipped-ratio minibatch step, written by hand.

This module exists for speed only. The PPO family (:func:`safebench.core.first_order.
clipped_epoch`) takes about 12 500 minibatch steps of 64 samples per epoch; at that size
autograd's per-operation overhead (graph recording, one backward node per op, ``.grad``
allocation, a norm per parameter tensor in the clip) costs several times the arithmetic of a
64-64 actor. Here the network, the log-ratio and their derivatives are a fixed sequence of
tensor operations writing into preallocated buffers, and autograd only differentiates the
algorithm's loss with respect to a few small leaves:

    by hand    μ = f_φ(s),  ρ = π_θ(a|s) / π_k(a|s)          (b, obs_dim) → (b, act_dim), (b,)
    autograd   L(ρ̂, μ̂, ℓ̂, K̂L) on leaves ρ̂ = ρ, μ̂ = μ, ℓ̂ = log σ and K̂L = KL(π_θ ‖ π_ref)
               per state (the algorithm's loss: the clipped surrogate, a KL penalty, …
               written with ordinary torch ops on a small graph)
    by hand    ∂L/∂ℓ and ∂L/∂μ from ∂L/∂ρ̂, ∂L/∂μ̂, ∂L/∂ℓ̂, ∂L/∂K̂L, then ∂L/∂φ through f_φ

The actor's parameter gradients live in one flat buffer whose views are the parameters'
``.grad``, so the joint gradient clip takes one norm and the actor's Adam steps as usual.
The update is autograd's up to float rounding (``tests/core/test_actor_fast.py``). With it
(and :meth:`~safebench.core.first_order.ActorAdam.bound_step`) a whole minibatch step of
PPO-Lag or FOCOPS — actor, both critics, joint clip, Adam — takes 1.5× less time on one CPU
core than with autograd (17-dim states, 6-dim actions, 64-64 networks, minibatch 64).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TypeGuard

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Normal

from safebench.core.critic_fast import _activation_backward_op, _activation_op
from safebench.core.policies import GaussianActor

__all__ = ["GaussianActorStep", "GaussianHead"]

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


@dataclass(frozen=True)
class _Workspace:
    """Buffers and prebuilt operation lists of :class:`GaussianActorStep` for one batch size b.

    Activations are row-major ``a_k`` (b, H_k), ``a_0`` the gathered states. The ``forward``,
    ``chain`` and ``backward`` calls take no argument: they are bound to these buffers and to
    the parameter and gradient views, so a step runs them without re-resolving any argument.
    """

    obs: Tensor  # (b, obs_dim) the minibatch's states
    act: Tensor  # (b, act_dim) its actions
    log_ratio: Tensor  # (b,) receives −log π_k(a|s) − act_dim·½ log 2π, then holds log ρ
    mean: Tensor  # μ (b, act_dim)
    ratio: Tensor  # ρ (b,)
    z_scaled: Tensor  # (a − μ)/σ² (b, act_dim)
    z2_minus_1: Tensor  # z² − 1 = (a − μ)²/σ² − 1 (b, act_dim)
    weight: Tensor  # ∂L/∂log ρ = ∂L/∂ρ · ρ (b,)
    grad_mean: Tensor  # ∂L/∂μ (b, act_dim)
    forward: tuple[Callable[[], object], ...]  # μ, then ρ
    chain: tuple[Callable[[], object], ...]  # ∂L/∂μ, ∂L/∂ℓ through ρ, from ``weight``
    backward: tuple[Callable[[], object], ...]  # ∂L/∂φ from ∂L/∂μ


class GaussianHead:
    """π_θ on one minibatch as leaves of a small autograd graph (:class:`GaussianActorStep`).

    :meth:`ratio` hands out ρ̂ ``(b,)``, :meth:`distribution` a Normal on μ̂ ``(b, act_dim)``
    and ℓ̂ = log σ ``(act_dim,)``, :meth:`kl` the KL to a frozen policy K̂L ``(b,)``; each is a
    leaf that requires grad, made on first use (``kl`` once per head). The
    loss is written on them and :meth:`GaussianActorStep.backward` carries its gradient into
    the actor's parameters.
    """

    def __init__(self, ws: _Workspace, log_std: Tensor, idx: Tensor) -> None:
        self.ws = ws
        self.log_std = log_std
        self.idx = idx
        self.ratio_leaf: Tensor | None = None
        self.mean_leaf: Tensor | None = None
        self.log_std_leaf: Tensor | None = None
        self.kl_leaf: Tensor | None = None
        self.kl_grad_mean: Tensor | None = None  # ∂KL_b/∂μ_b (b, act_dim)
        self.kl_grad_log_std: Tensor | None = None  # ∂KL_b/∂ℓ (b, act_dim)

    def ratio(self) -> Tensor:
        """``ρ = π_θ(a|s) / π_k(a|s)`` ``(b,)``."""
        if self.ratio_leaf is None:
            self.ratio_leaf = self.ws.ratio.detach().requires_grad_()
        return self.ratio_leaf

    def distribution(self) -> Normal:
        """``Normal(μ̂, exp(ℓ̂))`` with batch shape ``(b, act_dim)``, as ``actor.distribution``."""
        if self.mean_leaf is None or self.log_std_leaf is None:
            self.mean_leaf = self.ws.mean.detach().requires_grad_()
            self.log_std_leaf = self.log_std.detach().requires_grad_()
        return Normal(self.mean_leaf, torch.exp(self.log_std_leaf), validate_args=False)

    def kl(self, reference: Distribution) -> Tensor:
        """``KL(π_θ(·|s) ‖ π_ref(·|s))`` summed over action dims ``(b,)``, as a leaf.

        ``reference`` is a frozen batched Normal over the whole batch (its rows ``idx`` are taken
        here). Per dimension, with ``r = σ²/σ_ref²`` (torch's ``kl_normal_normal``, op for op, so
        the value is bit-identical to ``kl_divergence``)::

            KL = ½ (r + (μ − μ_ref)²/σ_ref² − 1 − log r),
            ∂KL/∂μ = (μ − μ_ref)/σ_ref²,   ∂KL/∂ℓ = r − 1

        The two derivatives are kept for :meth:`GaussianActorStep.backward`, which carries
        ``∂L/∂KL`` into μ and ℓ by hand: the loss's own graph then has a handful of nodes.
        """
        if not isinstance(reference, Normal):
            raise TypeError(f"the hand-written KL needs a Normal reference, got {reference}")
        ref_loc, ref_scale = reference.loc[self.idx], reference.scale[self.idx]
        var_ratio = (self.log_std.exp() / ref_scale).pow(2)
        diff = self.ws.mean - ref_loc
        t1 = (diff / ref_scale).pow(2)
        kl = (0.5 * (var_ratio + t1 - 1 - var_ratio.log())).sum(-1)
        self.kl_grad_mean = diff / ref_scale.pow(2)
        self.kl_grad_log_std = var_ratio.sub_(1.0)
        self.kl_leaf = kl.requires_grad_()
        return self.kl_leaf


class GaussianActorStep:
    """The hand-written forward and backward of a :class:`GaussianActor` over one batch.

    Built once per epoch (per call of ``clipped_epoch``) on the batch's states, actions and
    rollout log-probabilities; for a minibatch ``idx`` (b,), :meth:`head` runs the forward and
    returns the leaves, and :meth:`backward` fills the gradient of the loss with respect to
    every actor parameter. With ``W_k`` (out_k, in_k), ``b_k`` the layers of ``mean_net``, σ
    the hidden activation, ``a_0 = s_idx``, ℓ = log σ and ``σ⁻² = exp(−2ℓ)``:

        z_k = a_k W_kᵀ + b_k,   a_{k+1} = σ(z_k),   μ = z_{L-1}                 (b, out_k)
        log ρ = −½ Σ_i (a_i − μ_i)² σ_i⁻² − Σ_i ℓ_i − act_dim·½ log 2π − log π_k     (b,)

    and backward, with ``w = ∂L/∂ρ̂ · ρ`` (b,) and ``e_k = ∂L/∂z_k``:

        e_{L-1} = w ⊙ (a − μ) σ⁻² + ∂L/∂μ̂,      ∂L/∂ℓ = (z² − 1)ᵀ w + ∂L/∂ℓ̂     (z² = (a − μ)² σ⁻²)
        ∂L/∂W_k = e_kᵀ a_k,   ∂L/∂b_k = Σ_b e_k,
        e_{k-1} = (e_k W_k) ⊙ σ'(z_{k-1}),   σ' = 1 − a_k² (tanh), [a_k > 0] (relu)

    The gradients are written into :attr:`grad` ``(P,)``, in ``actor.parameters()`` order,
    whose views are installed as the parameters' ``.grad`` (overwritten, never accumulated:
    no ``zero_grad`` is needed between steps).
    """

    def __init__(self, actor: GaussianActor, obs: Tensor, act: Tensor, logp: Tensor) -> None:
        if not self.supports(actor):
            raise TypeError("the hand-written step needs a GaussianActor with an MLP mean")
        self.actor = actor
        self.obs, self.act = obs, act
        # −log π_k − act_dim·½ log 2π: the part of log ρ fixed for the epoch, gathered per step.
        self.log_ratio_offset = -logp - actor.act_dim * _LOG_SQRT_2PI
        params = list(actor.parameters())
        self.grad = torch.zeros(
            sum(p.numel() for p in params), dtype=params[0].dtype, device=params[0].device
        )
        views = []
        offset = 0
        for p in params:
            view = self.grad[offset : offset + p.numel()].view_as(p)
            p.grad = view
            views.append(view)
            offset += p.numel()
        self._log_std = actor.log_std.detach()
        self._grad_log_std = views[0]
        linears = [m for m in actor.mean_net if isinstance(m, nn.Linear)]
        # (W_k, b_k, ∂L/∂W_k, ∂L/∂b_k); detached, so out= ops may read them.
        self._layers = [
            (lin.weight.detach(), lin.bias.detach(), views[1 + 2 * k], views[2 + 2 * k])
            for k, lin in enumerate(linears)
        ]

        def scalar(shape: tuple[int, ...] = ()) -> Tensor:
            return torch.empty(shape, dtype=self.grad.dtype, device=self.grad.device)

        self._inv_var = scalar((actor.act_dim,))  # σ⁻², refilled every step
        self._log_std_sum = scalar()  # Σ ℓ, refilled every step
        self._one = scalar().fill_(1.0)
        self._workspaces: dict[int, _Workspace] = {}

    @staticmethod
    def supports(actor: nn.Module) -> TypeGuard[GaussianActor]:
        """Whether ``actor`` is a plain :class:`GaussianActor` this step reproduces.

        That is: exactly the class (a subclass may redefine the distribution), a ``mean_net``
        of alternating ``nn.Linear`` and the configured activation (:func:`build_mlp`), every
        parameter trainable and of one floating dtype and device, ``log_std`` first.
        """
        if type(actor) is not GaussianActor:
            return False
        act_cls = nn.Tanh if actor.activation == "tanh" else nn.ReLU
        modules = list(actor.mean_net)
        if len(modules) % 2 != 1:
            return False
        for j, m in enumerate(modules):
            if not isinstance(m, nn.Linear if j % 2 == 0 else act_cls):
                return False
            if isinstance(m, nn.Linear) and m.bias is None:
                return False
        params = list(actor.parameters())
        first = params[0]
        return (
            first is actor.log_std
            and first.dtype in (torch.float32, torch.float64)
            and all(
                p.requires_grad and p.dtype == first.dtype and p.device == first.device
                for p in params
            )
        )

    def _workspace(self, batch: int) -> _Workspace:
        """The buffers for minibatches of ``batch`` rows (an epoch has at most two sizes)."""
        ws = self._workspaces.get(batch)
        if ws is None:
            ws = self._workspaces[batch] = self._allocate(batch)
        return ws

    def _allocate(self, batch: int) -> _Workspace:
        def empty(*shape: int) -> Tensor:
            return torch.empty(shape, dtype=self.grad.dtype, device=self.grad.device)

        activation = self.actor.activation
        act_dim = self.actor.act_dim
        last = len(self._layers) - 1
        obs = empty(batch, self.obs.shape[1])
        hidden = [empty(batch, w.shape[0]) for w, _, _, _ in self._layers[:-1]]
        errs = [empty(batch, w.shape[0]) for w, _, _, _ in self._layers[:-1]]
        mean, grad_mean = empty(batch, act_dim), empty(batch, act_dim)
        inputs, outputs = [obs, *hidden], [*hidden, mean]
        errs.append(grad_mean)
        act, diff, z_scaled, z2_minus_1 = (empty(batch, act_dim) for _ in range(4))
        log_ratio, sq, ratio, weight = (empty(batch) for _ in range(4))

        forward: list[Callable[[], object]] = []
        for k, (w, b, _, _) in enumerate(self._layers):
            forward.append(partial(torch.addmm, b, inputs[k], w.T, out=outputs[k]))
            if k < last:
                forward.append(_activation_op(activation, hidden[k]))
        forward += [
            partial(torch.mul, self._log_std, -2.0, out=self._inv_var),
            self._inv_var.exp_,
            partial(torch.sum, self._log_std, 0, out=self._log_std_sum),
            partial(torch.sub, act, mean, out=diff),
            partial(torch.mul, diff, self._inv_var, out=z_scaled),
            partial(torch.mul, diff, z_scaled, out=z2_minus_1),
            partial(torch.sum, z2_minus_1, -1, out=sq),
            partial(z2_minus_1.sub_, self._one),
            partial(log_ratio.sub_, self._log_std_sum),
            partial(log_ratio.sub_, sq, alpha=0.5),
            partial(torch.exp, log_ratio, out=ratio),
        ]
        chain: list[Callable[[], object]] = [
            partial(torch.mul, z_scaled, weight.view(batch, 1), out=grad_mean),
            partial(torch.mv, z2_minus_1.T, weight, out=self._grad_log_std),
        ]
        backward: list[Callable[[], object]] = []
        for k in range(last, -1, -1):
            w, _, grad_w, grad_b = self._layers[k]
            backward.append(partial(torch.mm, errs[k].T, inputs[k], out=grad_w))
            backward.append(partial(torch.sum, errs[k], 0, out=grad_b))
            if k > 0:
                backward.append(partial(torch.mm, errs[k], w, out=errs[k - 1]))
                backward.append(_activation_backward_op(activation, errs[k - 1], hidden[k - 1]))
        return _Workspace(
            obs=obs,
            act=act,
            log_ratio=log_ratio,
            mean=mean,
            ratio=ratio,
            z_scaled=z_scaled,
            z2_minus_1=z2_minus_1,
            weight=weight,
            grad_mean=grad_mean,
            forward=tuple(forward),
            chain=tuple(chain),
            backward=tuple(backward),
        )

    def head(self, idx: Tensor) -> GaussianHead:
        """The forward on the rows ``idx`` ``(b,)``: μ, ρ and the leaves a loss is written on."""
        ws = self._workspace(idx.shape[0])
        torch.index_select(self.obs, 0, idx, out=ws.obs)
        torch.index_select(self.act, 0, idx, out=ws.act)
        torch.index_select(self.log_ratio_offset, 0, idx, out=ws.log_ratio)
        for op in ws.forward:
            op()
        return GaussianHead(ws, self._log_std, idx)

    def backward(self, loss: Tensor, head: GaussianHead) -> None:
        """Write ``∂loss/∂θ`` for every actor parameter into :attr:`grad` (and so ``.grad``)."""
        ws = head.ws
        leaves = [
            t
            for t in (head.ratio_leaf, head.mean_leaf, head.log_std_leaf, head.kl_leaf)
            if t is not None
        ]
        grads = iter(torch.autograd.grad(loss, leaves, allow_unused=True, materialize_grads=True))
        if head.ratio_leaf is not None:
            torch.mul(next(grads), ws.ratio, out=ws.weight)
        else:
            ws.weight.zero_()
        for op in ws.chain:
            op()
        if head.mean_leaf is not None:
            ws.grad_mean.add_(next(grads))
            self._grad_log_std.add_(next(grads))
        if head.kl_grad_mean is not None and head.kl_grad_log_std is not None:
            grad_kl = next(grads).unsqueeze(1)  # ∂L/∂KL_b (b, 1)
            ws.grad_mean.addcmul_(head.kl_grad_mean, grad_kl)
            self._grad_log_std.add_(head.kl_grad_log_std.mul_(grad_kl).sum(0))
        for op in ws.backward:
            op()
