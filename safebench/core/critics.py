"""The reward and cost value functions of the on-policy methods, as one stacked module.

Conventions follow OmniSafe's on-policy critics: two independent MLPs ``obs -> scalar``
(layers initialised as :func:`safebench.core.policies.build_mlp`), fitted by minibatch MSE
regression with a squared-weight penalty and per-network gradient clipping. The fast
minibatch step is :mod:`safebench.core.critic_fast`.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import torch
from torch import Tensor, nn

from safebench.core.critic_fast import CriticAdam, LayerViews, fit_minibatch_fast
from safebench.core.policies import Activation, _activation_module, _linear_layers, build_mlp

__all__ = ["CriticPair"]

# Caches rebuilt by ``CriticPair._bind_flat``; left out of pickles and deep copies.
_CRITIC_CACHE_ATTRS = ("_flat", "_flat_2d", "_grad", "_grad_2d", "_layers", "_workspaces")
_MAX_WORKSPACES = 4


def _rebind_after_load(module: nn.Module, incompatible_keys: object) -> None:
    """``load_state_dict(..., assign=True)`` replaces parameters: re-point them at a flat buffer."""
    assert isinstance(module, CriticPair)
    module._bind_flat()


class CriticPair(nn.Module):
    """Reward and cost value functions ``V_r, V_c : (B, obs_dim) -> (B,)`` in one module.

    The two MLPs are stored stacked: layer ``k`` has ``weights[k]`` of shape
    ``(2, in_k, out_k)`` and ``biases[k]`` of shape ``(2, 1, out_k)``, head 0 = reward,
    head 1 = cost, and a forward pass is one ``baddbmm`` per layer:

        h_{k+1}[j] = σ(h_k[j] @ W_k[j] + b_k[j]),   j ∈ {r, c}.

    This is the same function as two independent :func:`build_mlp` critics: the heads share no
    parameters, each head is initialised as an independent ``build_mlp`` (reward head first,
    then cost head, from the torch RNG), Adam acts elementwise, and :meth:`fit_minibatch` clips
    each head's gradient norm and adds each head's weight penalty separately.

    All parameters are views into one contiguous flat buffer laid out head-major,
    ``flat.view(2, P)[j] = [vec(W_0[j]), b_0[j], vec(W_1[j]), b_1[j], …]`` with ``P`` the
    parameter count of one head, so a parameter such as ``weights[k]`` is a strided view
    (strides ``(P, out_k, 1)``). Head j's parameters (and gradients) are then row ``j`` of a
    ``(2, P)`` matrix: its weight penalty and gradient norm are one reduction each, and Adam
    is one update of the whole buffer (:class:`CriticAdam`). The views are re-established after
    ``.to()`` / ``.cuda()`` / dtype casts, ``copy.deepcopy``, unpickling and
    ``load_state_dict(assign=True)`` (a plain ``load_state_dict`` copies into them in place);
    assigning ``p.data`` directly detaches a parameter from the buffer and is not supported.
    """

    def __init__(
        self,
        obs_dim: int,
        hidden: Sequence[int] = (64, 64),
        activation: Activation = "tanh",
    ) -> None:
        super().__init__()
        self.obs_dim = obs_dim
        self.hidden = tuple(hidden)
        self.activation: Activation = activation
        self._act = _activation_module(activation)()
        net_r = build_mlp(obs_dim, hidden, 1, activation)
        net_c = build_mlp(obs_dim, hidden, 1, activation)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for lin_r, lin_c in zip(_linear_layers(net_r), _linear_layers(net_c), strict=True):
            w = torch.stack([lin_r.weight.detach().T, lin_c.weight.detach().T]).contiguous()
            b = torch.stack([lin_r.bias.detach(), lin_c.bias.detach()]).unsqueeze(1)
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(b.contiguous()))
        self._flat: Tensor
        self._flat_2d: Tensor
        self._grad: Tensor
        self._grad_2d: Tensor
        self._layers: tuple[LayerViews, ...]
        self._workspaces: dict[int, Any]
        self._bind_flat()
        self.register_load_state_dict_post_hook(_rebind_after_load)

    # ---- flat parameter buffer ----------------------------------------------------------

    @property
    def head_numel(self) -> int:
        """``P``: the number of parameters of one head."""
        sizes = [self.obs_dim, *self.hidden, 1]
        return sum((n_in + 1) * n_out for n_in, n_out in pairwise(sizes))

    @property
    def flat_parameters(self) -> Tensor:
        """The flat buffer ``(2 · P,)`` that every parameter is a view of (shares storage)."""
        return self._flat

    @property
    def flat_gradient(self) -> Tensor:
        """``(2 · P,)`` gradient of the last fast :meth:`fit_minibatch` step, after clipping.

        Same layout as :attr:`flat_parameters`; zeros before the first fast step.
        """
        return self._grad

    def _bind_flat(self) -> None:
        """Copy the current parameter values into a new flat buffer and make them views of it.

        Also (re)creates the flat gradient buffer of the same layout, the per-layer views the
        fast path uses, and drops the per-batch-size workspaces (they may be on the old
        device).
        """
        ref = self.weights[0]
        p = self.head_numel
        flat = torch.empty(2 * p, dtype=ref.dtype, device=ref.device)
        grad = torch.zeros_like(flat)
        flat_2d, grad_2d = flat.view(2, p), grad.view(2, p)
        layers = []
        offset = 0
        with torch.no_grad():
            for w_param, b_param in zip(self.weights, self.biases, strict=True):
                n_in, n_out = w_param.shape[1], w_param.shape[2]
                end = offset + (n_in + 1) * n_out
                wb = flat_2d[:, offset:end].view(2, n_in + 1, n_out)
                w, b = wb[:, :n_in], wb[:, n_in:]
                w.copy_(w_param)
                b.copy_(b_param)
                w_param.data = w
                b_param.data = b
                layers.append(
                    LayerViews(
                        w=w,
                        wb_t=wb.transpose(1, 2),
                        grad_wb=grad_2d[:, offset:end].view(2, n_in + 1, n_out),
                    )
                )
                offset = end
        self._flat, self._flat_2d = flat, flat_2d
        self._grad, self._grad_2d = grad, grad_2d
        self._layers = tuple(layers)
        self._workspaces = {}

    def _apply(self, fn: Any, recurse: bool = True) -> CriticPair:
        # ``.to(device)`` and dtype casts give each parameter its own new storage.
        super()._apply(fn, recurse)
        self._bind_flat()
        return self

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in _CRITIC_CACHE_ATTRS}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Unpickling and ``copy.deepcopy`` copy each parameter on its own.
        super().__setstate__(state)
        self._bind_flat()

    # ---- construction helpers -----------------------------------------------------------

    @classmethod
    def from_mlps(
        cls, net_r: nn.Sequential, net_c: nn.Sequential, activation: Activation = "tanh"
    ) -> CriticPair:
        """Stack two existing ``build_mlp(obs_dim, hidden, 1)`` networks (weights copied)."""
        lins_r = _linear_layers(net_r)
        hidden = [lin.out_features for lin in lins_r[:-1]]
        # The throw-away initialisation must not advance the caller's torch RNG.
        with torch.random.fork_rng(devices=[]):
            pair = cls(lins_r[0].in_features, hidden, activation)
        pair.load_heads(net_r, net_c)
        return pair

    def load_heads(self, net_r: nn.Sequential, net_c: nn.Sequential) -> None:
        """Overwrite the two heads with the weights of ``net_r`` and ``net_c``."""
        lins = zip(_linear_layers(net_r), _linear_layers(net_c), strict=True)
        with torch.no_grad():
            for k, (lin_r, lin_c) in enumerate(lins):
                self.weights[k].copy_(torch.stack([lin_r.weight.T, lin_c.weight.T]))
                self.biases[k].copy_(torch.stack([lin_r.bias, lin_c.bias]).unsqueeze(1))

    def to_mlps(self) -> tuple[nn.Sequential, nn.Sequential]:
        """Independent ``nn.Sequential`` copies of the reward and cost heads."""
        nets = []
        for head in range(2):
            with torch.random.fork_rng(devices=[]):
                net = build_mlp(self.obs_dim, self.hidden, 1, self.activation)
            with torch.no_grad():
                for k, lin in enumerate(_linear_layers(net)):
                    lin.weight.copy_(self.weights[k][head].T)
                    lin.bias.copy_(self.biases[k][head, 0])
            nets.append(net)
        return nets[0], nets[1]

    def forward(self, obs: Tensor) -> Tensor:
        """``[V_r(s), V_c(s)]``: ``(B, obs_dim) -> (B, 2)``."""
        h = obs.unsqueeze(0).expand(2, *obs.shape)
        last = len(self.weights) - 1
        for k, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = torch.baddbmm(b, h, w)
            if k < last:
                h = self._act(h)
        return h.squeeze(-1).T

    # ---- training -----------------------------------------------------------------------

    def make_optimizer(
        self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
    ) -> CriticAdam:
        """The fast Adam for :meth:`fit_minibatch`: same update as ``torch.optim.Adam``."""
        return CriticAdam(lr, betas, eps)

    def fit_minibatch(
        self,
        obs: Tensor,
        target_r: Tensor,
        target_c: Tensor,
        optimizer: torch.optim.Optimizer | CriticAdam,
        max_grad_norm: float | None = 40.0,
        norm_coef: float = 0.001,
        joint_grads: Sequence[Tensor] | None = None,
    ) -> tuple[float, float]:
        """One optimiser step on both heads; returns ``(loss_r, loss_c)`` before the step.

        Per head ``j``:  ``L_j = mean_B (V_j(s) - target_j)² + norm_coef · Σ_{p ∈ head j} ‖p‖²``
        (OmniSafe ``use_critic_norm``). Since the heads share nothing, ``∇(L_r + L_c)`` gives
        each head exactly ``∇L_j``. Each head's gradient is then rescaled as
        ``torch.nn.utils.clip_grad_norm_`` would rescale it on its own:

            g_j ← g_j · min(1, max_grad_norm / (‖g_j‖₂ + 1e-6)),

        with ``‖g_j‖₂`` the 2-norm over all of head j's parameters (skipped when
        ``max_grad_norm`` is ``None``), and the optimiser takes one step.

        With a :class:`CriticAdam` (:meth:`make_optimizer`) this runs the hand-written
        forward/backward of :meth:`_fit_minibatch_fast` and does not touch ``p.grad``; with a
        ``torch.optim.Optimizer`` over ``self.parameters()`` (elementwise, e.g. Adam) it goes
        through autograd. Both compute the same update.

        Args:
            obs: ``(B, obs_dim)``.
            target_r, target_c: value targets ``(B,)``.
            optimizer: :class:`CriticAdam`, or a ``torch.optim.Optimizer`` over
                ``self.parameters()``.
            max_grad_norm: per-head gradient-norm bound, or ``None`` for no clipping.
            norm_coef: weight of the squared-parameter penalty.
            joint_grads: other gradients to clip together with both heads as one set (the
                official PPO family's single ``clip_grad_norm_``); fast path only.
        """
        if isinstance(optimizer, CriticAdam):
            return fit_minibatch_fast(
                self, obs, target_r, target_c, optimizer, max_grad_norm, norm_coef, joint_grads
            )
        if joint_grads is not None:
            raise ValueError("joint clipping needs the fast optimiser (make_optimizer)")
        optimizer.zero_grad()
        pred = self.forward(obs)
        target = torch.stack([target_r, target_c], dim=1)
        losses = ((pred - target) ** 2).mean(0)  # (2,)
        if norm_coef:
            penalty = sum(p.pow(2).flatten(1).sum(1) for p in self.parameters())
            losses = losses + norm_coef * penalty
        losses.sum().backward()
        if max_grad_norm is not None:
            grads = [p.grad for p in self.parameters() if p.grad is not None]
            per_param = torch.stack([g.flatten(1).norm(dim=1) for g in grads])  # (P, 2)
            head_norm = per_param.norm(dim=0)  # (2,)
            coef = torch.clamp(max_grad_norm / (head_norm + 1e-6), max=1.0)
            for g in grads:
                g.mul_(coef.view(2, *([1] * (g.ndim - 1))))
        optimizer.step()
        loss_r, loss_c = losses.detach().tolist()
        return float(loss_r), float(loss_c)
