"""Policy networks shared by every algorithm, and their NumPy snapshots for rollouts.

Conventions follow OmniSafe's on-policy models:

* every affine layer is ``nn.Linear`` followed by ``kaiming_uniform_(W, a=√5)`` on the weight,
  bias left at ``nn.Linear``'s default ``U(-1/√fan_in, 1/√fan_in)``;
* the Gaussian actor has an MLP mean and a *state-independent* ``log_std`` parameter.

The value networks are in :mod:`safebench.core.critics`. Shapes: ``B`` = batch,
``obs_dim`` / ``act_dim`` = observation / action sizes.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

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
