"""Policy and value networks shared by every algorithm.

Conventions follow OmniSafe's on-policy models:

* every affine layer is ``nn.Linear`` followed by ``kaiming_uniform_(W, a=√5)`` on the weight,
  bias left at ``nn.Linear``'s default ``U(-1/√fan_in, 1/√fan_in)``;
* the Gaussian actor has an MLP mean and a *state-independent* ``log_std`` parameter;
* reward and cost critics are two independent MLPs ``obs -> scalar``.

Shapes: ``B`` = batch, ``obs_dim`` / ``act_dim`` = observation / action sizes.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import pairwise
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution, Normal

Activation = Literal["tanh", "relu"]

FloatArray = npt.NDArray[np.float32]

_ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU}
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def _activation_module(activation: str) -> type[nn.Module]:
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
    return _ACTIVATIONS[activation]


def _init_linear(in_dim: int, out_dim: int) -> nn.Linear:
    """One affine layer initialised as OmniSafe's ``kaiming_uniform`` mode.

    ``nn.Linear`` draws W then b; W is then redrawn by ``kaiming_uniform_(a=√5)``, i.e.
    ``W ~ U(-1/√in, 1/√in)`` and ``b ~ U(-1/√in, 1/√in)``. Keeping that exact sequence of
    random draws makes a network built here from a given torch seed bit-identical to the one
    OmniSafe builds from the same seed.
    """
    layer = nn.Linear(in_dim, out_dim)
    nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5))
    return layer


def build_mlp(
    in_dim: int,
    hidden: Sequence[int],
    out_dim: int,
    activation: Activation = "tanh",
    output_gain: float | None = None,
) -> nn.Sequential:
    """Multi-layer perceptron ``y = L_K(σ(L_{K-1}(… σ(L_1(x)))))`` with identity output.

    Args:
        in_dim: input size; the network maps ``(B, in_dim) -> (B, out_dim)``.
        hidden: hidden layer sizes, e.g. ``(64, 64)``.
        out_dim: output size.
        activation: hidden non-linearity σ, ``"tanh"`` or ``"relu"``.
        output_gain: if given, the output layer's weight and bias are multiplied by it after
            initialisation (``1.0`` is the same as ``None``; a small gain such as 0.01 starts a
            policy with near-zero mean).

    Returns:
        ``nn.Sequential(Linear, σ, …, Linear)``; module indices ``0, 2, 4, …`` are the linear
        layers, so parameter names match OmniSafe's ``build_mlp_network``.
    """
    act_cls = _activation_module(activation)
    sizes = [in_dim, *hidden, out_dim]
    layers: list[nn.Module] = []
    for j in range(len(sizes) - 1):
        layers.append(_init_linear(sizes[j], sizes[j + 1]))
        if j < len(sizes) - 2:
            layers.append(act_cls())
    if output_gain is not None:
        last = layers[-1]
        assert isinstance(last, nn.Linear)
        with torch.no_grad():
            last.weight.mul_(output_gain)
            last.bias.mul_(output_gain)
    return nn.Sequential(*layers)


def _linear_layers(net: nn.Sequential) -> list[nn.Linear]:
    return [m for m in net if isinstance(m, nn.Linear)]


# --------------------------------------------------------------------------------------------
# NumPy snapshots used in the rollout loop
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NumpyMLP:
    """Frozen float32 copy of a :func:`build_mlp` network evaluated with NumPy.

    ``weights[k]`` has shape ``(in_k, out_k)`` (the transpose of ``nn.Linear.weight``) so that
    a batch is one ``h @ W + b`` per layer.
    """

    weights: tuple[FloatArray, ...]
    biases: tuple[FloatArray, ...]
    activation: str

    @classmethod
    def from_module(cls, net: nn.Sequential, activation: str) -> NumpyMLP:
        """Copy the weights of ``net`` out of torch (later training does not affect the copy)."""
        linears = _linear_layers(net)
        weights = tuple(
            np.ascontiguousarray(lin.weight.detach().cpu().numpy().T, dtype=np.float32)
            for lin in linears
        )
        biases = tuple(
            np.array(lin.bias.detach().cpu().numpy(), dtype=np.float32) for lin in linears
        )
        return cls(weights=weights, biases=biases, activation=activation)

    def __call__(self, obs: npt.ArrayLike) -> FloatArray:
        """Network output: ``(B, in) -> (B, out)``; a single ``(in,)`` gives ``(out,)``."""
        h = np.asarray(obs, dtype=np.float32)
        single = h.ndim == 1
        if single:
            h = h[None, :]
        last = len(self.weights) - 1
        for k, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = h @ w + b
            if k < last:
                h = np.tanh(h) if self.activation == "tanh" else np.maximum(h, np.float32(0.0))
        return h[0] if single else h


class NumpyPolicy(Protocol):
    """What the rollout loop needs from a policy snapshot."""

    def __call__(self, obs: npt.ArrayLike) -> FloatArray:
        """Raw network output (Gaussian mean or categorical logits)."""
        ...

    def sample(self, obs: npt.ArrayLike, rng: np.random.Generator) -> tuple[np.ndarray, FloatArray]:
        """Sampled actions and their log-probabilities ``(B,)``."""
        ...

    def mode(self, obs: npt.ArrayLike) -> np.ndarray:
        """Deterministic action (Gaussian mean, categorical arg-max)."""
        ...


@dataclass(frozen=True)
class NumpyGaussianPolicy:
    """Snapshot of :class:`GaussianActor`: ``a = μ(s) + σ ⊙ ε``, ``ε ~ N(0, I)``."""

    mean_net: NumpyMLP
    log_std: FloatArray  # (act_dim,)

    @property
    def std(self) -> FloatArray:
        return np.exp(self.log_std).astype(np.float32)

    def __call__(self, obs: npt.ArrayLike) -> FloatArray:
        """Mean action ``μ(s)``: ``(B, obs_dim) -> (B, act_dim)``."""
        return self.mean_net(obs)

    def mode(self, obs: npt.ArrayLike) -> FloatArray:
        return self.mean_net(obs)

    def log_prob(self, obs: npt.ArrayLike, act: npt.ArrayLike) -> FloatArray:
        """``log π(a|s) = Σ_i [-(a_i-μ_i)²/(2σ_i²) - log σ_i - ½ log 2π]`` -> ``(B,)``.

        Evaluated in float64 and rounded once, so it agrees with the torch ``log_prob`` of the
        same float32 action to float32 precision.
        """
        mean = self.mean_net(obs).astype(np.float64)
        a = np.asarray(act, dtype=np.float32).astype(np.float64)
        log_std = self.log_std.astype(np.float64)
        z = (a - mean) * np.exp(-log_std)
        return np.asarray((-0.5 * z * z - log_std - _LOG_SQRT_2PI).sum(-1), dtype=np.float32)

    def sample(self, obs: npt.ArrayLike, rng: np.random.Generator) -> tuple[FloatArray, FloatArray]:
        """Sample ``a ~ π(·|s)``; returns ``(act (B, act_dim) float32, logp (B,) float32)``."""
        mean = self.mean_net(obs)
        noise = rng.standard_normal(mean.shape, dtype=np.float32)
        act = (mean + self.std * noise).astype(np.float32)
        return act, self.log_prob(obs, act)


@dataclass(frozen=True)
class NumpyCategoricalPolicy:
    """Snapshot of :class:`CategoricalActor`: ``π(a|s) = softmax(logits(s))_a``."""

    logits_net: NumpyMLP

    def __call__(self, obs: npt.ArrayLike) -> FloatArray:
        """Logits ``(B, obs_dim) -> (B, n_actions)``."""
        return self.logits_net(obs)

    def mode(self, obs: npt.ArrayLike) -> npt.NDArray[np.int64]:
        return np.asarray(np.argmax(self.logits_net(obs), axis=-1), dtype=np.int64)

    def _log_softmax(self, obs: npt.ArrayLike) -> npt.NDArray[np.float64]:
        logits = self.logits_net(obs).astype(np.float64)
        shifted = logits - logits.max(axis=-1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))

    def log_prob(self, obs: npt.ArrayLike, act: npt.ArrayLike) -> FloatArray:
        """``log π(a|s)`` for integer actions ``(B,)`` -> ``(B,)``."""
        logp_all = self._log_softmax(obs)
        a = np.asarray(act, dtype=np.int64)
        return np.asarray(np.take_along_axis(logp_all, a[..., None], -1)[..., 0], np.float32)

    def sample(
        self, obs: npt.ArrayLike, rng: np.random.Generator
    ) -> tuple[npt.NDArray[np.int64], FloatArray]:
        """Inverse-CDF sampling, one uniform per state; returns ``(act (B,), logp (B,))``."""
        logp_all = self._log_softmax(obs)
        cdf = np.cumsum(np.exp(logp_all), axis=-1)
        # u is scaled by the last CDF entry (1 up to rounding) so that u < cdf[-1] always holds
        # and the index below can never run past the last action.
        u = rng.random((*cdf.shape[:-1], 1)) * cdf[..., -1:]
        act = np.asarray((cdf <= u).sum(axis=-1), dtype=np.int64)
        logp = np.take_along_axis(logp_all, act[..., None], -1)[..., 0]
        return act, np.asarray(logp, dtype=np.float32)


# --------------------------------------------------------------------------------------------
# Actors
# --------------------------------------------------------------------------------------------


class Actor(nn.Module, ABC):
    """Stochastic policy π_θ(a|s) with the interface the algorithms rely on."""

    @abstractmethod
    def distribution(self, obs: Tensor) -> Distribution:
        """π_θ(·|s) for a batch ``(B, obs_dim)``."""

    @abstractmethod
    def log_prob(self, obs: Tensor, act: Tensor) -> Tensor:
        """``log π_θ(a|s)`` of shape ``(B,)`` (summed over action dimensions)."""

    @abstractmethod
    def sample(self, obs: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One action per state."""

    @abstractmethod
    def numpy_policy(self) -> NumpyPolicy:
        """Frozen NumPy copy of the current policy for cheap single-step inference."""


class GaussianActor(Actor):
    """Diagonal Gaussian policy ``π_θ(a|s) = N(μ_φ(s), diag(exp(2·log_std)))``.

    ``μ_φ`` is an MLP ``(B, obs_dim) -> (B, act_dim)``; ``log_std`` is a state-independent
    parameter of shape ``(act_dim,)`` (OmniSafe ``gaussian_learning`` actor).
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: Sequence[int] = (64, 64),
        activation: Activation = "tanh",
        log_std_init: float = 0.0,
    ) -> None:
        super().__init__()
        self.obs_dim = obs_dim
        self.act_dim = act_dim
        self.activation: Activation = activation
        self.mean_net = build_mlp(obs_dim, hidden, act_dim, activation)
        self.log_std = nn.Parameter(torch.full((act_dim,), float(log_std_init)))

    def forward(self, obs: Tensor) -> Tensor:
        """Mean action ``μ_φ(s)``: ``(B, obs_dim) -> (B, act_dim)``."""
        out: Tensor = self.mean_net(obs)
        return out

    def distribution(self, obs: Tensor) -> Normal:
        """Per-dimension ``Normal(μ_φ(s), exp(log_std))`` with batch shape ``(B, act_dim)``.

        Argument validation is off: it costs a constraint check per call, and non-finite
        parameters are handled where they matter (the line search rejects non-finite losses).
        """
        return Normal(self.forward(obs), torch.exp(self.log_std), validate_args=False)

    def log_prob(self, obs: Tensor, act: Tensor) -> Tensor:
        """``Σ_i log N(a_i; μ_i(s), σ_i²)``: ``(B, act_dim) -> (B,)``."""
        return self.distribution(obs).log_prob(act).sum(-1)

    def sample(self, obs: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Reparameterised sample ``μ_φ(s) + σ ⊙ ε``, ``ε ~ N(0, I)`` drawn from ``generator``."""
        mean = self.forward(obs)
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        return mean + torch.exp(self.log_std) * noise

    def numpy_policy(self) -> NumpyGaussianPolicy:
        return NumpyGaussianPolicy(
            mean_net=NumpyMLP.from_module(self.mean_net, self.activation),
            log_std=np.array(self.log_std.detach().cpu().numpy(), dtype=np.float32),
        )


class CategoricalActor(Actor):
    """Softmax policy ``π_θ(a|s) = softmax(f_θ(s))_a`` over ``n_actions`` discrete actions."""

    def __init__(
        self,
        obs_dim: int,
        n_actions: int,
        hidden: Sequence[int] = (64, 64),
        activation: Activation = "tanh",
    ) -> None:
        super().__init__()
        self.obs_dim = obs_dim
        self.n_actions = n_actions
        self.activation: Activation = activation
        self.logits_net = build_mlp(obs_dim, hidden, n_actions, activation)

    def forward(self, obs: Tensor) -> Tensor:
        """Logits ``(B, obs_dim) -> (B, n_actions)``."""
        out: Tensor = self.logits_net(obs)
        return out

    def distribution(self, obs: Tensor) -> Categorical:
        return Categorical(logits=self.forward(obs), validate_args=False)

    def log_prob(self, obs: Tensor, act: Tensor) -> Tensor:
        """``log π(a|s)`` for integer actions ``(B,)`` (a trailing size-1 axis is accepted)."""
        if act.ndim == obs.ndim:
            act = act.squeeze(-1)
        return self.distribution(obs).log_prob(act.long())

    def sample(self, obs: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Integer actions ``(B,)`` drawn from ``generator``."""
        probs = torch.softmax(self.forward(obs), dim=-1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)

    def numpy_policy(self) -> NumpyCategoricalPolicy:
        return NumpyCategoricalPolicy(NumpyMLP.from_module(self.logits_net, self.activation))


# --------------------------------------------------------------------------------------------
# Critics
# --------------------------------------------------------------------------------------------


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
class _LayerViews:
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
        layers: Sequence[_LayerViews],
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
        self._layers: tuple[_LayerViews, ...]
        self._workspaces: dict[int, _Workspace]
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
                    _LayerViews(
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
        """
        if isinstance(optimizer, CriticAdam):
            return self._fit_minibatch_fast(
                obs, target_r, target_c, optimizer, max_grad_norm, norm_coef
            )
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

    def _workspace(self, batch: int) -> _Workspace:
        ws = self._workspaces.get(batch)
        if ws is None:
            if len(self._workspaces) >= _MAX_WORKSPACES:
                self._workspaces.clear()
            ws = _Workspace.allocate(batch, self.obs_dim, self._layers, self.activation, self._flat)
            self._workspaces[batch] = ws
        return ws

    @torch.no_grad()
    def _fit_minibatch_fast(
        self,
        obs: Tensor,
        target_r: Tensor,
        target_c: Tensor,
        optimizer: CriticAdam,
        max_grad_norm: float | None,
        norm_coef: float,
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
        """
        batch = obs.shape[0]
        ws = self._workspace(batch)
        if (
            obs.shape != ws.obs_rows.shape
            or target_r.shape != (batch,)
            or target_c.shape != (batch,)
        ):
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
