"""The critic pair's minibatch step written by hand: forward, backward and Adam, no autograd.

This module exists for speed only. A whole on-policy epoch update (``CPO.update`` on 20000
HalfCheetah-sized steps: CG actor step plus 10 × 157 critic minibatch steps) takes 2.6× less
CPU time with it than with autograd and ``torch.optim.Adam(fused=True)`` on the same module
(3.6× against ``foreach=True``, 3.8× against two plain ``nn.Sequential`` critics):
``scripts/bench/update.py``. No library offers a fused MLP step at this size, so it is written
here; :meth:`safebench.core.critics.CriticPair.fit_minibatch` computes the same update through
autograd for any ``torch.optim.Optimizer``, and ``tests/core/test_networks.py`` holds the two
equal.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from safebench.core.critics import CriticPair

__all__ = ["CriticAdam", "LayerViews", "fit_minibatch_fast"]


@dataclass(frozen=True)
class _AdamScratch:
    """:class:`CriticAdam`'s buffers for one parameter tensor: moments, denominator, constants.

    Scalars are held as 0-dim tensors: an in-place op with a Python float pays for wrapping
    and converting the number on every call, which at ~10⁴ elements costs as much as the
    arithmetic.
    """

    param: Tensor  # the tensor these buffers were placed for
    hyper: tuple[tuple[float, float], float]  # (betas, eps) the constants were made from
    exp_avg: Tensor
    exp_avg_sq: Tensor
    denom: Tensor  # √v / √(1 - β₂ᵗ) + ε
    one_minus_beta1: Tensor
    beta2: Tensor
    eps: Tensor
    bias_correction2_sqrt: Tensor  # refilled every step


class CriticAdam:
    """Adam over one flat parameter tensor: the fast optimiser of :meth:`CriticPair.fit_minibatch`.

    The update of ``torch.optim.Adam`` (its single-tensor implementation; no weight decay, no
    AMSGrad) for parameters θ with gradient g, at step t = 1, 2, …:

        m_t = β₁ m_{t-1} + (1 - β₁) g              (as ``m.lerp_(g, 1 - β₁)``)
        v_t = β₂ v_{t-1} + (1 - β₂) g ⊙ g
        θ  ← θ - lr / (1 - β₁ᵗ) · m_t / (√v_t / √(1 - β₂ᵗ) + ε)

    in the same operation order. Adam is elementwise, so one update of the flat vector holding
    every parameter equals ``torch.optim.Adam`` over the separate parameter tensors, at the cost
    of a fixed 7 tensor operations per step however many parameter tensors there are.

    The moments ``exp_avg`` (m) and ``exp_avg_sq`` (v) are created at the first :meth:`step`
    (as in ``torch.optim.Adam``) on the parameter's device and dtype, and follow the parameter
    if a different tensor (e.g. one moved to another device) is passed later. ``lr``,
    ``betas`` and ``eps`` may be changed between steps.
    """

    def __init__(
        self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
    ) -> None:
        if not lr >= 0.0:
            raise ValueError(f"invalid learning rate {lr}")
        if not eps >= 0.0:
            raise ValueError(f"invalid epsilon {eps}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"invalid betas {betas}")
        self.lr = float(lr)
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = float(eps)
        self.step_count = 0
        self._exp_avg: Tensor | None = None
        self._exp_avg_sq: Tensor | None = None
        self._scratch: _AdamScratch | None = None

    @property
    def exp_avg(self) -> Tensor | None:
        """First moment m (``None`` before the first step)."""
        return self._exp_avg

    @property
    def exp_avg_sq(self) -> Tensor | None:
        """Second moment v (``None`` before the first step)."""
        return self._exp_avg_sq

    def _prepare(self, param: Tensor) -> _AdamScratch:
        """The buffers for ``param``: created, or moved next to it, when it is a new tensor."""
        s = self._scratch
        hyper = (self.betas, self.eps)
        if s is not None and s.param is param and s.hyper == hyper:
            return s
        m, v = self._exp_avg, self._exp_avg_sq
        if m is None or v is None:
            m, v = torch.zeros_like(param), torch.zeros_like(param)
        if m.shape != param.shape or v.shape != param.shape:
            raise ValueError(
                f"optimizer state of shape {tuple(m.shape)} does not fit a parameter of "
                f"shape {tuple(param.shape)}"
            )
        m = m.to(device=param.device, dtype=param.dtype).contiguous()
        v = v.to(device=param.device, dtype=param.dtype).contiguous()
        self._exp_avg, self._exp_avg_sq = m, v

        def scalar(value: float) -> Tensor:
            return torch.tensor(value, dtype=param.dtype, device=param.device)

        s = _AdamScratch(
            param=param,
            hyper=hyper,
            exp_avg=m,
            exp_avg_sq=v,
            denom=torch.empty_like(v),
            one_minus_beta1=scalar(1.0 - self.betas[0]),
            beta2=scalar(self.betas[1]),
            eps=scalar(self.eps),
            bias_correction2_sqrt=scalar(1.0),
        )
        self._scratch = s
        return s

    def step(self, param: Tensor, grad: Tensor) -> None:
        """Update ``param`` in place from ``grad`` (same shape as ``param``, left unchanged)."""
        s = self._prepare(param)
        beta1, beta2 = self.betas
        self.step_count += 1
        s.exp_avg.lerp_(grad, s.one_minus_beta1)
        s.exp_avg_sq.mul_(s.beta2).addcmul_(grad, grad, value=1.0 - beta2)
        bias_correction1 = 1.0 - beta1**self.step_count
        s.bias_correction2_sqrt.fill_((1.0 - beta2**self.step_count) ** 0.5)
        # ε + √v / √(1 - β₂ᵗ) in one op, rounded as torch's ``(√v / √(1 - β₂ᵗ)).add_(ε)``.
        torch.sqrt(s.exp_avg_sq, out=s.denom)
        torch.addcdiv(s.eps, s.denom, s.bias_correction2_sqrt, out=s.denom)
        param.addcdiv_(s.exp_avg, s.denom, value=-self.lr / bias_correction1)

    def state_dict(self) -> dict[str, Any]:
        """Hyper-parameters, step count and copies of the moments (``None`` before step 1)."""
        m, v = self._exp_avg, self._exp_avg_sq
        return {
            "lr": self.lr,
            "betas": self.betas,
            "eps": self.eps,
            "step": self.step_count,
            "exp_avg": None if m is None else m.clone(),
            "exp_avg_sq": None if v is None else v.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; training then continues exactly as it would have."""
        m, v = state["exp_avg"], state["exp_avg_sq"]
        if (m is None) != (v is None):
            raise ValueError("exp_avg and exp_avg_sq must be both present or both None")
        self.lr = float(state["lr"])
        self.betas = (float(state["betas"][0]), float(state["betas"][1]))
        self.eps = float(state["eps"])
        self.step_count = int(state["step"])
        self._exp_avg = None if m is None else m.detach().clone()
        self._exp_avg_sq = None if v is None else v.detach().clone()
        self._scratch = None  # placed next to the parameter at the next step


@dataclass(frozen=True)
class LayerViews:
    """Views of one stacked affine layer ``k`` into the flat parameter and gradient buffers.

    ``W̃_k = [W_k; b_k]`` of shape ``(2, in_k + 1, out_k)`` is one contiguous block per head
    of the flat layout (the bias is the last row).
    """

    w: Tensor  # W_k, (2, in_k, out_k)
    wb_t: Tensor  # W̃_kᵀ, (2, out_k, in_k + 1)
    grad_wb: Tensor  # ∂L/∂W̃_k, (2, in_k + 1, out_k)


# torch's CPU tanh kernel is not vectorised: at (2, 64, 128) it is about 5x slower than
# NumPy's, so the fast critic step applies NumPy's tanh to CPU float buffers in place.
_CPU_NUMPY_TANH = True


def _activation_op(activation: str, x: Tensor) -> Callable[[], object]:
    """In-place ``x ← σ(x)`` as a zero-argument call."""
    if activation == "relu":
        return x.relu_
    if _CPU_NUMPY_TANH and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64):
        arr = x.numpy()  # shares the tensor's memory
        return partial(np.tanh, arr, out=arr)
    return x.tanh_


def _activation_backward_op(activation: str, err: Tensor, act: Tensor) -> Callable[[], object]:
    """In-place ``err ← err ⊙ σ'(z)`` as a zero-argument call, σ' written through ``act = σ(z)``.

    These are the fused ATen kernels autograd itself uses: ``tanh_backward`` computes
    ``err · (1 - act²)`` and ``threshold_backward(·, 0)`` computes ``err · [act > 0]``.
    """
    if activation == "relu":
        return partial(torch.ops.aten.threshold_backward.grad_input, err, act, 0, grad_input=err)
    return partial(torch.ops.aten.tanh_backward.grad_input, err, act, grad_input=err)


@dataclass(frozen=True)
class _Workspace:
    """Buffers and the prebuilt operation lists of :meth:`CriticPair._fit_minibatch_fast`.

    One per batch size B. Activations are stored feature-major with a trailing row of ones,
    ``Ãᵀ_k = [a_kᵀ; 1ᵀ]`` of shape ``(2, in_k + 1, B)``, so that one ``bmm`` with ``W̃_k``
    applies weight and bias and one ``bmm`` gives the gradient of both. ``forward`` and
    ``backward`` are zero-argument calls bound to these buffers and to the layer views, so a
    step runs them without re-resolving any argument.
    """

    obs_rows: Tensor  # (B, obs_dim), receives the batch; its storage holds Ãᵀ_0
    forward: tuple[Callable[[], object], ...]
    backward: tuple[Callable[[], object], ...]
    out_rows: tuple[Tensor, Tensor]  # V_r, V_c, each (B,)
    err: Tensor  # V - y, then ∂L/∂V = (2/B)(V - y); (2, B)
    err_rows: tuple[Tensor, Tensor]  # rows of ``err``
    two_over_batch: Tensor  # 0-dim 2/B
    stats: Tensor  # (6,): ‖V_j - y_j‖₂, ‖θ_j‖₂, ‖g_j‖₂ for j = r, c
    err_norm: Tensor  # stats[0:2]
    param_norm: Tensor  # stats[2:4]
    grad_norm: Tensor  # stats[4:6]

    @classmethod
    def allocate(
        cls,
        batch: int,
        obs_dim: int,
        layers: Sequence[LayerViews],
        activation: str,
        like: Tensor,
    ) -> _Workspace:
        def empty(*shape: int) -> Tensor:
            return torch.empty(shape, dtype=like.dtype, device=like.device)

        last = len(layers) - 1
        # The observation buffer is (B, obs_dim + 1) row-major with a column of ones; its
        # transpose, broadcast over the heads, is Ãᵀ_0 (a bmm operand may be transposed
        # at no cost).
        obs_buf = empty(batch, obs_dim + 1)
        obs_buf[:, obs_dim] = 1.0
        inputs = [obs_buf.T.expand(2, obs_dim + 1, batch)]
        hidden, errs = [], []
        for layer in layers[:-1]:
            n_out = layer.w.shape[2]
            act = empty(2, n_out + 1, batch)
            act[:, n_out] = 1.0
            inputs.append(act)
            hidden.append(act[:, :n_out])  # a_{k+1}ᵀ = σ(z_k)ᵀ, (2, H_k, B)
            errs.append(empty(2, n_out, batch))  # ∂L/∂z_kᵀ, (2, H_k, B)
        out, err = empty(2, 1, batch), empty(2, batch)
        stats = torch.zeros(6, dtype=like.dtype, device=like.device)

        forward: list[Callable[[], object]] = []
        for k, layer in enumerate(layers):
            # z_kᵀ = W̃_kᵀ Ãᵀ_k
            forward.append(
                partial(torch.bmm, layer.wb_t, inputs[k], out=out if k == last else hidden[k])
            )
            if k < last:
                forward.append(_activation_op(activation, hidden[k]))

        # ∂L/∂W̃_L = Ãᵀ_L e_L; the output layer has one unit, so W_L e_Lᵀ is an outer product.
        backward: list[Callable[[], object]] = [
            partial(torch.bmm, inputs[last], err.view(2, batch, 1), out=layers[last].grad_wb)
        ]
        if last > 0:
            backward.append(
                partial(torch.mul, layers[last].w, err.view(2, 1, batch), out=errs[last - 1])
            )
            backward.append(_activation_backward_op(activation, errs[last - 1], hidden[last - 1]))
        for k in range(last - 1, -1, -1):
            backward.append(
                partial(torch.bmm, inputs[k], errs[k].transpose(1, 2), out=layers[k].grad_wb)
            )
            if k > 0:
                backward.append(partial(torch.bmm, layers[k].w, errs[k], out=errs[k - 1]))
                backward.append(_activation_backward_op(activation, errs[k - 1], hidden[k - 1]))

        out_2d = out.view(2, batch)
        return cls(
            obs_rows=obs_buf[:, :obs_dim],
            forward=tuple(forward),
            backward=tuple(backward),
            out_rows=(out_2d[0], out_2d[1]),
            err=err,
            err_rows=(err[0], err[1]),
            two_over_batch=torch.tensor(2.0 / batch, dtype=like.dtype, device=like.device),
            stats=stats,
            err_norm=stats[0:2],
            param_norm=stats[2:4],
            grad_norm=stats[4:6],
        )


MAX_WORKSPACES = 4


def _workspace(pair: CriticPair, batch: int) -> _Workspace:
    """The pair's workspace for batch size ``batch`` (a few are kept; rebinding drops them)."""
    ws = pair._workspaces.get(batch)
    if ws is None:
        if len(pair._workspaces) >= MAX_WORKSPACES:
            pair._workspaces.clear()
        ws = _Workspace.allocate(batch, pair.obs_dim, pair._layers, pair.activation, pair._flat)
        pair._workspaces[batch] = ws
    return ws


@torch.no_grad()
def fit_minibatch_fast(
    self: CriticPair,
    obs: Tensor,
    target_r: Tensor,
    target_c: Tensor,
    optimizer: CriticAdam,
    max_grad_norm: float | None,
    norm_coef: float,
    joint_grads: Sequence[Tensor] | None = None,
) -> tuple[float, float]:
    """:meth:`fit_minibatch` with a hand-written backward pass and :class:`CriticAdam`.

    Why by hand: at this size (B = 128, two 64-unit layers) the per-operation overhead of
    autograd (graph recording, one backward node per op, ``.grad`` allocation),
    per-tensor gradient clipping and ``torch.optim.Adam``'s per-parameter loop costs
    several times the arithmetic. Here a step is a fixed sequence of about 30 tensor
    operations writing into preallocated buffers, with one host sync.

    Per head j, with activations stored feature-major and augmented with a row of ones,
    ``Ãᵀ_k = [a_kᵀ; 1ᵀ]`` (in_k + 1, B), and ``W̃_k = [W_k; b_k]`` (in_k + 1, out_k), the
    contiguous block of the flat layout (a_0 = s, L layers, σ on all but the last):

        z_kᵀ = W̃_kᵀ Ãᵀ_k,   a_{k+1} = σ(z_k),   V = z_{L-1}                (out_k, B)

    Backward of ``L_j = (1/B) Σ_b (V_b - y_b)² + c ‖θ_j‖²``, with e_k = ∂L/∂z_k:

        e_{L-1} = (2/B)(V - y)                                              (B, 1)
        ∂L/∂W̃_k = Ãᵀ_k e_k + 2c W̃_k                                        (in_k + 1, out_k)
        e_{k-1}ᵀ = (W_k e_kᵀ) ⊙ σ'(z_{k-1})ᵀ,  σ' = 1 - a_k² (tanh), [a_k > 0] (relu)

    then the per-head clipping of :meth:`fit_minibatch` (norms read on the host in the same
    sync as the losses) and one :meth:`CriticAdam.step` on the flat buffer. Every ``bmm``
    runs both heads; the observation block Ãᵀ_0 is shared by them (a stride-0 view).

    ``joint_grads``: other gradients (the actor's, already computed) clipped *together* with
    both heads, as one ``clip_grad_norm_`` over actor and critics — the code behind the
    published PPO-family runs (docs/algorithms.md#the-clipped-ratio-epoch). With
    ``G = ‖(g_r, g_c, g_other)‖₂`` every one of them is scaled in place by
    ``min(1, max_grad_norm / (G + 1e-6))``; the caller then steps its own optimiser on the
    scaled ``g_other``.
    """
    batch = obs.shape[0]
    ws = _workspace(self, batch)
    if obs.shape != ws.obs_rows.shape or target_r.shape != (batch,) or target_c.shape != (batch,):
        raise ValueError(
            f"expected obs (B, {self.obs_dim}) and targets (B,), got {tuple(obs.shape)}, "
            f"{tuple(target_r.shape)}, {tuple(target_c.shape)}"
        )

    ws.obs_rows.copy_(obs)
    for op in ws.forward:
        op()

    # Loss pieces; the scalar losses are assembled on the host after the one sync below.
    torch.sub(ws.out_rows[0], target_r, out=ws.err_rows[0])
    torch.sub(ws.out_rows[1], target_c, out=ws.err_rows[1])
    torch.linalg.vector_norm(ws.err, dim=1, out=ws.err_norm)
    if norm_coef:
        torch.linalg.vector_norm(self._flat_2d, dim=1, out=ws.param_norm)

    ws.err.mul_(ws.two_over_batch)
    for op in ws.backward:
        op()
    if norm_coef:
        self._grad.add_(self._flat, alpha=2.0 * norm_coef)

    if max_grad_norm is not None:
        torch.linalg.vector_norm(self._grad_2d, dim=1, out=ws.grad_norm)
    if joint_grads is not None and max_grad_norm is not None:
        _clip_jointly(self, ws, joint_grads, max_grad_norm)
        max_grad_norm = None  # clipped already
    err_r, err_c, par_r, par_c, grad_r, grad_c = ws.stats.tolist()
    if max_grad_norm is not None:
        for j, norm in ((0, grad_r), (1, grad_c)):
            coef = max_grad_norm / (norm + 1e-6)
            # min(1, coef): a factor of exactly 1 would leave the gradient unchanged.
            if coef < 1.0:
                self._grad_2d[j].mul_(coef)
    optimizer.step(self._flat, self._grad)

    loss_r, loss_c = err_r * err_r / batch, err_c * err_c / batch
    if norm_coef:
        loss_r += norm_coef * par_r * par_r
        loss_c += norm_coef * par_c * par_c
    return loss_r, loss_c


def _clip_jointly(
    pair: CriticPair, ws: _Workspace, others: Sequence[Tensor], max_grad_norm: float
) -> None:
    """``clip_grad_norm_`` over both critic heads and ``others`` as one parameter set."""
    sq = ws.grad_norm.square().sum()
    if others:
        sq = sq + torch.stack([torch.linalg.vector_norm(g) for g in others]).square().sum()
    coef = torch.clamp(max_grad_norm / (sq.sqrt() + 1e-6), max=1.0)
    pair._grad.mul_(coef)
    for g in others:
        g.mul_(coef)
