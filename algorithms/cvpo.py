"""Constrained Variational Policy Optimization (Liu et al., ICML 2022), as in the official code.

Reference: ``liuzuxin/cvpo-safe-rl`` ``safe_rl/policy/cvpo.py`` and ``model/mlp_ac.py``
(docs/algorithms.md#cvpo). One gradient update on a minibatch of B states (shapes: K samples per
state, n = act_dim):

    critics   y_r = r + γ(1 − max(terminated, goal_met))·min_j Q̄_j(s', a'),
              y_c = c + γ(1 − terminated)·Q̄_c(s', a''),
              a', a'' ~ π_θ(·|s') (current actor); loss Σ_j MSE(Q_j, y_r) and MSE(Q_c, y_c).
              Reaching a goal ends only the reward bootstrap (official worker); a true
              termination ends both; time-outs mask neither.
    E-step    a_kb ~ π̄(·|s_b) (target actor),  Q_r = min_j Q̄_j(s, a),  Q_c = Q̄_c(s, a)
              (η, λ) = argmin g(η, λ) over the box [1e-6, 1e5]², SLSQP warm-started, where
              g(η, λ) = ηε + λĉ + mean_b η·log mean_k exp((Q_r − λQ_c)_kb / η)
              q_kb = softmax_k((Q_r − λQ_c)_kb / η)
    M-step    mstep_iteration_num Adam steps (grad-norm clip 0.01) on
              L = −mean_kb q_kb[log N(a_kb; μ, Σ̄) + log N(a_kb; μ̄, Σ)]
                  − α_μ(ε_μ − KL_μ) − α_Σ(ε_Σ − KL_Σ),
              α ← clip(α − scale·(ε − KL), 0, α_max) before each step (KLs: :func:`decoupled_kl`)
    targets   p̄ ← polyak·p̄ + (1 − polyak)·p for both critics and the actor.

ĉ = C(1 − γ^T)/((1 − γ)T) turns the episodic cost limit C into a per-state budget for the
discounted Q_c (T = the env's fixed episode length). Because the cost target bootstraps
through time-outs, Q_c estimates an infinite-horizon discounted cost and the budget is right
when γ^T ≪ 1 (official T = 400, γ = 0.99: γ^T ≈ 0.02).

What the env receives: the actor's sample as is (its mean lies in the box by construction;
the official worker passes ``policy.act`` straight to ``env.step`` and Safety-Gym clips into
the actuators), the same unclipped protocol as every on-policy method (``clip_actions``).

Differences from the official code, each equivalent on the official tasks or outside its
defaults:

* the dual is given its analytic gradient (∂g/∂η = ε − mean KL(q‖U), ∂g/∂λ = ĉ − mean E_q[Q_c])
  instead of SLSQP's finite differences — same optimum, fewer dual evaluations;
* KLs and log-densities are computed from the Cholesky factors (triangular solves, log-det
  from the diagonal) instead of ``det``/``inverse``/``pinv`` with determinants clamped at 1e-6;
  the clamp changes the KL whenever det Σ < 1e-6 (σ < 0.03 per dimension in 2-D);
* the official cost target is never masked (``_update_qc``: ``backup = cost + γ·Q̄_c``); its
  Safety-Gym tasks never terminate, so there this is the same. Here a true termination masks
  it (``cost_terminal_mask``), as a terminal state has no future cost — the velocity tasks
  terminate (an unhealthy Hopper, Walker2d, Ant or Humanoid), and an unmasked target would
  bootstrap Q_c from the post-terminal observation. ``cost_terminal_mask=False`` restores the
  official target;
* the optional cost-limit decay schedule (``use_cost_decay``, False in the official config) is
  not implemented.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from pydantic import Field
from scipy.optimize import minimize
from torch import Tensor, nn

from safebench.core.offpolicy import OffPolicyAlgorithm, OffPolicyConfig, polyak_update
from safebench.core.policies import build_mlp
from safebench.core.replay import ReplayBuffer

__all__ = [
    "CVPO",
    "CVPOConfig",
    "CholeskyGaussianActor",
    "QEnsemble",
    "cost_threshold",
    "decoupled_kl",
    "dual_function",
    "e_step_weights",
    "m_step_terms",
    "mvn_log_prob",
    "solve_dual",
    "td_targets",
]

_LOG_2PI = math.log(2.0 * math.pi)
M = TypeVar("M", bound=nn.Module)


class CVPOConfig(OffPolicyConfig):
    """CVPO hyperparameters: ``script/config/config_cvpo.yaml`` of the official repository."""

    hidden_sizes: tuple[int, ...] = Field((256, 256), description="[H] config hidden_sizes")
    actor_lr: float = Field(0.002, gt=0, description="[H] config actor_lr (class default 0.003)")
    critic_lr: float = Field(0.001, gt=0, description="[H] config critic_lr (reward and cost Q)")
    polyak: float = Field(0.995, ge=0, lt=1, description="[H] config polyak (critics and actor)")
    num_q: int = Field(2, ge=1, description="[H] config num_q: reward Q ensemble, min for targets")
    num_qc: int = Field(1, ge=1, description="[H] config num_qc: cost Q ensemble")
    dual_constraint: float = Field(0.1, gt=0, description="[H] config dual_constraint ε (E-step)")
    kl_mean_constraint: float = Field(
        0.001, gt=0, description="[H] config kl_mean_constraint ε_μ (class default 0.01)"
    )
    kl_var_constraint: float = Field(
        0.001,
        gt=0,
        description="[H] config kl_var_constraint ε_Σ (class default and paper 1e-4, issue #7)",
    )
    mstep_iteration_num: int = Field(6, ge=1, description="[H] config mstep_iteration_num")
    alpha_mean_scale: float = Field(1.0, ge=0, description="[H] config alpha_mean_scale")
    alpha_var_scale: float = Field(100.0, ge=0, description="[H] config alpha_var_scale")
    alpha_mean_max: float = Field(0.1, ge=0, description="[H] config alpha_mean_max")
    alpha_var_max: float = Field(10.0, ge=0, description="[H] config alpha_var_max")
    sample_action_num: int = Field(32, ge=2, description="[H] config sample_action_num K")
    eta_init: float = Field(0.1, gt=0, description="[H] cvpo.py self.eta = 0.1")
    lam_init: float = Field(0.1, ge=0, description="[H] cvpo.py self.lam = 0.1")
    dual_bounds: tuple[float, float] = Field(
        (1e-6, 1e5), description="[H] cvpo.py SLSQP bounds for η and λ"
    )
    dual_maxiter: int = Field(10, ge=1, description="[H] cvpo.py SLSQP options maxiter")
    dual_ftol: float = Field(1e-3, gt=0, description="[H] cvpo.py SLSQP tol / options ftol")
    actor_max_grad_norm: float = Field(
        0.01, gt=0, description="[H] cvpo.py clip_grad_norm_(actor, 0.01) in the M-step"
    )
    cost_terminal_mask: bool = Field(
        True,
        description="[L] y_c = c + γ(1 − terminated)·Q̄_c: no cost after a true termination. "
        "The official _update_qc never masks (backup = cost + γ·q_pi_targ), which only matters "
        "on envs that terminate (its Safety-Gym tasks do not); false reproduces it",
    )


# --------------------------------------------------------------------------------------------
# Pure math
# --------------------------------------------------------------------------------------------


def cost_threshold(cost_limit: float, gamma: float, horizon: int) -> float:
    """ĉ = C(1 − γ^T)/((1 − γ)T) = Σ_{t<T} γ^t · C/T: the discounted per-step budget."""
    return cost_limit * (1.0 - gamma**horizon) / ((1.0 - gamma) * horizon)


def td_targets(
    reward: Tensor,
    cost: Tensor,
    terminated: Tensor,
    goal_met: Tensor,
    q_r_next: Tensor,
    q_c_next: Tensor,
    gamma: float,
    cost_mask: bool = True,
) -> tuple[Tensor, Tensor]:
    """The critics' targets, all ``(B,)`` (flags 0.0/1.0)::

        y_r = r + γ(1 − max(terminated, goal_met))·Q̄_r(s', a')
        y_c = c + γ(1 − terminated)·Q̄_c(s', a'')      (cost_mask; else c + γ·Q̄_c(s', a''))

    The reward bootstrap stops at a true termination and at a step that reached a goal (the
    official worker stores ``done = True`` for ``info['goal_met']`` and only the reward backup
    reads it); the cost bootstrap stops only at a true termination. Time-outs are never
    stored as terminations, so neither target is masked there.
    """
    done_r = torch.maximum(terminated, goal_met)
    y_c = cost + gamma * ((1.0 - terminated) if cost_mask else 1.0) * q_c_next
    return reward + gamma * (1.0 - done_r) * q_r_next, y_c


def dual_function(
    x: npt.ArrayLike, q_r: np.ndarray, q_c: np.ndarray, eps: float, c_hat: float
) -> tuple[float, np.ndarray]:
    """The E-step dual and its gradient.

    ``g(η, λ) = ηε + λĉ + mean_b η·log mean_k exp(z_kb/η)`` with ``z = Q_r − λQ_c``, evaluated
    with the per-state maximum subtracted (log-sum-exp). With ``q = softmax_k(z/η)``:
    ``∂g/∂η = ε − mean_b KL(q_b‖Uniform_K)`` and ``∂g/∂λ = ĉ − mean_b Σ_k q_kb Q_c,kb``, so a
    stationary point satisfies the KKT conditions KL = ε and E_q[Q_c] = ĉ.

    Args:
        x: ``(η, λ)``.
        q_r, q_c: ``(K, B)`` reward and cost Q of K sampled actions at each of B states.
    """
    eta, lam = (float(v) for v in np.asarray(x, dtype=np.float64))
    z = q_r - lam * q_c
    top = z.max(axis=0)
    y = (z - top) / eta  # ≤ 0
    w = np.exp(y)
    total = w.sum(axis=0)
    log_mean = np.log(total / z.shape[0])  # log mean_k exp(y)
    q = w / total
    value = eta * eps + lam * c_hat + float(np.mean(top)) + eta * float(np.mean(log_mean))
    kl = np.sum(q * y, axis=0) - log_mean  # KL(q‖U) = Σ q log(qK)
    grad = np.array([eps - np.mean(kl), c_hat - np.mean(np.sum(q * q_c, axis=0))])
    return value, grad


def solve_dual(
    q_r: np.ndarray,
    q_c: np.ndarray,
    eps: float,
    c_hat: float,
    x0: tuple[float, float],
    bounds: tuple[float, float] = (1e-6, 1e5),
    maxiter: int = 10,
    ftol: float = 1e-3,
) -> tuple[float, float]:
    """``argmin g(η, λ)`` over ``bounds²`` with SciPy SLSQP from ``x0`` (the previous solution).

    The official budget is 10 iterations at ftol 1e-3; warm-starting from the previous update
    makes that enough in training. Returns ``(η, λ)`` clipped to the bounds.
    """
    res = minimize(
        dual_function,
        np.asarray(x0, dtype=np.float64),
        args=(q_r, q_c, eps, c_hat),
        jac=True,
        method="SLSQP",
        bounds=[bounds, bounds],
        tol=ftol,
        options={"ftol": ftol, "maxiter": maxiter},
    )
    x = np.asarray(res.x, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        x = np.asarray(x0, dtype=np.float64)  # a failed solve keeps the previous multipliers
    eta, lam = np.clip(x, bounds[0], bounds[1])
    return float(eta), float(lam)


def e_step_weights(q_r: Tensor, q_c: Tensor, eta: float, lam: float) -> Tensor:
    """Non-parametric ``q_kb = softmax_k((Q_r − λQ_c)_kb / η)``: ``(K, B)``, columns sum to 1."""
    return torch.softmax((q_r - lam * q_c) / eta, dim=0)


def mvn_log_prob(actions: Tensor, mean: Tensor, tril: Tensor) -> Tensor:
    """``log N(a; μ, LLᵀ) = −½‖L⁻¹(a − μ)‖² − Σ_i log L_ii − (n/2) log 2π``.

    Shapes: ``actions (K, B, n)``, ``mean (B, n)``, ``tril (B, n, n)`` -> ``(K, B)``.
    """
    n = mean.shape[-1]
    eye = torch.eye(n, dtype=tril.dtype, device=tril.device).expand_as(tril)
    tril_inv = torch.linalg.solve_triangular(tril, eye, upper=False)
    z = torch.einsum("bij,kbj->kbi", tril_inv, actions - mean)
    log_det = torch.log(torch.diagonal(tril, dim1=-2, dim2=-1)).sum(-1)
    return -0.5 * (z * z).sum(-1) - log_det - 0.5 * n * _LOG_2PI


def decoupled_kl(
    mean_old: Tensor, tril_old: Tensor, mean: Tensor, tril: Tensor
) -> tuple[Tensor, Tensor]:
    """MPO's decoupled KL, averaged over the B states (``mean (B, n)``, ``tril (B, n, n)``).

    ``KL_μ = ½(μ − μ̄)ᵀΣ̄⁻¹(μ − μ̄) = KL(N(μ̄, Σ̄) ‖ N(μ, Σ̄))`` and
    ``KL_Σ = ½[log|Σ|/|Σ̄| − n + tr(Σ⁻¹Σ̄)] = KL(N(μ̄, Σ̄) ‖ N(μ̄, Σ))``, with Σ = LLᵀ, so
    ``tr(Σ⁻¹Σ̄) = ‖L⁻¹L̄‖²_F``. If only the mean (covariance) moved, KL_μ (KL_Σ) is the full
    KL(π̄‖π) and the other term is 0.
    """
    n = mean.shape[-1]
    eye = torch.eye(n, dtype=tril.dtype, device=tril.device).expand_as(tril)
    old_inv = torch.linalg.solve_triangular(tril_old, eye, upper=False)
    d = torch.einsum("bij,bj->bi", old_inv, mean - mean_old)
    kl_mean = 0.5 * (d * d).sum(-1).mean()
    ratio = torch.linalg.solve_triangular(tril, tril_old, upper=False)  # L⁻¹L̄
    log_det = 2.0 * (
        torch.log(torch.diagonal(tril, dim1=-2, dim2=-1))
        - torch.log(torch.diagonal(tril_old, dim1=-2, dim2=-1))
    ).sum(-1)
    kl_var = 0.5 * (log_det - n + (ratio * ratio).sum((-2, -1))).mean()
    return kl_mean, kl_var


def m_step_terms(
    actions: Tensor,
    weights: Tensor,
    mean_old: Tensor,
    tril_old: Tensor,
    mean: Tensor,
    tril: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(L_mle, KL_μ, KL_Σ)`` of the M-step for ``actions (K, B, n)``, ``weights (K, B)``.

    ``L_mle = −mean_kb q_kb[log N(a_kb; μ_b, Σ̄_b) + log N(a_kb; μ̄_b, Σ_b)]``: the new mean is
    fitted under the old covariance and vice versa, so each is pulled only by its own KL
    bound. The mean over all K·B entries (not a sum over k) is the official scaling.
    """
    log_p = mvn_log_prob(actions, mean, tril_old) + mvn_log_prob(actions, mean_old, tril)
    kl_mean, kl_var = decoupled_kl(mean_old, tril_old, mean, tril)
    return -(weights * log_p).mean(), kl_mean, kl_var


# --------------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------------


def _xavier(module: nn.Module) -> None:
    """The official init (``mlp_ac.py`` INIT_METHOD "normal"): xavier-normal W, zero bias."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.xavier_normal_(layer.weight)
            nn.init.zeros_(layer.bias)


class CholeskyGaussianActor(nn.Module):
    """π(a|s) = N(μ(s), L(s)L(s)ᵀ), the official ``CholeskyGaussianActor``.

    ReLU trunk; ``μ = low + (high − low)·sigmoid(clamp(W_μh, −5, 5))``; the n(n+1)/2 entries of
    the lower-triangular L are ``clamp(W_Lh, −5, 20)``, the diagonal passed through
    ``softplus(·) + 1e-4``. ``forward(obs (B, obs_dim)) -> (μ (B, n), L (B, n, n))``.
    """

    low: Tensor  # (1, n) action bounds
    high: Tensor
    rows: Tensor  # row / column of each of the n(n+1)/2 entries of L
    cols: Tensor
    diag: Tensor  # which of them are on the diagonal

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        low: np.ndarray,
        high: np.ndarray,
        hidden_sizes: Sequence[int],
    ) -> None:
        super().__init__()
        self.act_dim = act_dim
        self.trunk = nn.Sequential(
            *build_mlp(obs_dim, hidden_sizes[:-1], hidden_sizes[-1], "relu"), nn.ReLU()
        )
        self.mean_layer = nn.Linear(hidden_sizes[-1], act_dim)
        self.tril_layer = nn.Linear(hidden_sizes[-1], act_dim * (act_dim + 1) // 2)
        _xavier(self)
        self.register_buffer("low", torch.as_tensor(low, dtype=torch.float32).reshape(1, -1))
        self.register_buffer("high", torch.as_tensor(high, dtype=torch.float32).reshape(1, -1))
        rows, cols = torch.tril_indices(act_dim, act_dim)
        self.register_buffer("rows", rows)
        self.register_buffer("cols", cols)
        self.register_buffer("diag", rows == cols)

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        h = self.trunk(obs)
        unit = torch.sigmoid(torch.clamp(self.mean_layer(h), -5.0, 5.0))
        mean = self.low + (self.high - self.low) * unit
        v = torch.clamp(self.tril_layer(h), -5.0, 20.0)
        v = torch.where(self.diag, F.softplus(v) + 1e-4, v)
        tril = v.new_zeros(obs.shape[0], self.act_dim, self.act_dim)
        tril[:, self.rows, self.cols] = v
        return mean, tril

    def numpy_policy(self) -> NumpyCholeskyPolicy:
        def arrays(layer: nn.Linear) -> tuple[np.ndarray, np.ndarray]:
            w = layer.weight.detach().cpu().numpy().T.astype(np.float32)
            return np.ascontiguousarray(w), layer.bias.detach().cpu().numpy().astype(np.float32)

        trunk = tuple(arrays(m) for m in self.trunk if isinstance(m, nn.Linear))
        return NumpyCholeskyPolicy(
            trunk=trunk,
            mean_layer=arrays(self.mean_layer),
            tril_layer=arrays(self.tril_layer),
            low=self.low.cpu().numpy()[0],
            high=self.high.cpu().numpy()[0],
            rows=self.rows.cpu().numpy(),
            cols=self.cols.cpu().numpy(),
        )


@dataclass(frozen=True)
class NumpyCholeskyPolicy:
    """NumPy copy of :class:`CholeskyGaussianActor` for env stepping (a torch call on a batch
    of one costs more than the forward itself)."""

    trunk: tuple[tuple[np.ndarray, np.ndarray], ...]
    mean_layer: tuple[np.ndarray, np.ndarray]
    tril_layer: tuple[np.ndarray, np.ndarray]
    low: np.ndarray
    high: np.ndarray
    rows: np.ndarray
    cols: np.ndarray

    def mean_and_tril(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h = np.asarray(obs, dtype=np.float32).reshape(len(obs), -1)
        for w, b in self.trunk:
            h = np.maximum(h @ w + b, np.float32(0.0))
        x = np.clip(h @ self.mean_layer[0] + self.mean_layer[1], -5.0, 5.0)
        mean = self.low + (self.high - self.low) / (1.0 + np.exp(-x))
        v = np.clip(h @ self.tril_layer[0] + self.tril_layer[1], -5.0, 20.0)
        diag = self.rows == self.cols
        v[:, diag] = np.logaddexp(0.0, v[:, diag]) + 1e-4
        n = len(self.low)
        tril = np.zeros((len(h), n, n), dtype=np.float32)
        tril[:, self.rows, self.cols] = v
        return mean.astype(np.float32), tril

    def mode(self, obs: np.ndarray) -> np.ndarray:
        return self.mean_and_tril(obs)[0]

    def sample(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``a = μ + Lε``, ``ε ~ N(0, I)``: ``(B, n)`` float32."""
        mean, tril = self.mean_and_tril(obs)
        noise = rng.standard_normal(mean.shape, dtype=np.float32)
        return (mean + np.einsum("bij,bj->bi", tril, noise)).astype(np.float32)


class QEnsemble(nn.Module):
    """``num`` independent ReLU MLPs ``Q_j(s, a)`` on ``[s, a]``; ``forward -> (num, B)``."""

    def __init__(self, obs_dim: int, act_dim: int, hidden_sizes: Sequence[int], num: int) -> None:
        super().__init__()
        self.obs_dim = obs_dim
        self.nets = nn.ModuleList(
            build_mlp(obs_dim + act_dim, hidden_sizes, 1, "relu") for _ in range(num)
        )
        _xavier(self)
        for module in self.modules():
            if isinstance(module, nn.ReLU):
                # Every ReLU follows a Linear, whose backward does not need its output: in
                # place is safe and saves a large copy in the E-step's K·B-row forward.
                module.inplace = True

    def forward(self, obs: Tensor, act: Tensor) -> Tensor:
        x = torch.cat([obs, act], dim=-1)
        return torch.stack([net(x)[:, 0] for net in self.nets])

    def forward_samples(self, obs: Tensor, actions: Tensor) -> Tensor:
        """``Q_j(s_b, a_kb)`` for ``obs (B, obs_dim)``, ``actions (K, B, n)`` -> ``(num, K, B)``.

        The K actions of a state share its half of the first layer, ``W_s s + b``, so that
        half is computed once per state instead of once per sample.
        """
        k, b = actions.shape[:2]
        out = []
        for module in self.nets:
            net = cast(nn.Sequential, module)  # built by build_mlp
            first = cast(nn.Linear, net[0])
            w_s, w_a = first.weight[:, : self.obs_dim], first.weight[:, self.obs_dim :]
            h = F.linear(obs, w_s, first.bias) + F.linear(actions, w_a)  # (K, B, hidden)
            out.append(net[1:](h.reshape(k * b, -1)).reshape(k, b))
        return torch.stack(out)


# --------------------------------------------------------------------------------------------
# Algorithm
# --------------------------------------------------------------------------------------------


def _frozen_copy(module: M) -> M:
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


class CVPO(OffPolicyAlgorithm):
    """CVPO: twin reward Q + cost Q critics, constrained E-step, decoupled-KL M-step."""

    name = "cvpo"
    Config = CVPOConfig
    config: CVPOConfig

    def setup(self) -> None:
        cfg, seed, action_space = self.config, self.seed, self.action_space
        low = np.asarray(action_space.low, dtype=np.float32)  # type: ignore[attr-defined]
        high = np.asarray(action_space.high, dtype=np.float32)  # type: ignore[attr-defined]
        self.actor = CholeskyGaussianActor(self.obs_dim, self.act_dim, low, high, cfg.hidden_sizes)
        self.critic = QEnsemble(self.obs_dim, self.act_dim, cfg.hidden_sizes, cfg.num_q)
        self.cost_critic = QEnsemble(self.obs_dim, self.act_dim, cfg.hidden_sizes, cfg.num_qc)
        for net in (self.actor, self.critic, self.cost_critic):
            net.to(self.device)
        self.actor_targ = _frozen_copy(self.actor)
        self.critic_targ = _frozen_copy(self.critic)
        self.cost_critic_targ = _frozen_copy(self.cost_critic)
        self.actor_optim = torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_lr)
        self.critic_optim = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr)
        self.cost_critic_optim = torch.optim.Adam(self.cost_critic.parameters(), lr=cfg.critic_lr)
        # Action samples of the updates (critic targets, E-step) come from an own generator so
        # that they are checkpointed with the algorithm.
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(seed)
        self._act_rng = np.random.default_rng(np.random.SeedSequence([seed, 11]))
        self.eta, self.lam = cfg.eta_init, cfg.lam_init
        self.alpha_mean = self.alpha_var = 0.0
        self._policy: NumpyCholeskyPolicy | None = None

    # ---- acting -------------------------------------------------------------------------

    def policy(self) -> NumpyCholeskyPolicy:
        """NumPy snapshot of the actor, refreshed after each update."""
        if self._policy is None:
            self._policy = self.actor.numpy_policy()
        return self._policy

    def explore(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.policy().sample(obs, rng)

    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        if deterministic:
            return self.policy().mode(obs)
        return self.policy().sample(obs, self._act_rng)

    # ---- updating -----------------------------------------------------------------------

    @property
    def cost_threshold(self) -> float:
        """ĉ for the run's cost limit and the env's episode length."""
        return cost_threshold(self.cost_limit, self.config.gamma, self.episode_length)

    def _sample(self, mean: Tensor, tril: Tensor, k: int) -> Tensor:
        """``k`` draws of ``μ + Lε`` per state: ``(k, B, n)``."""
        noise = torch.randn((k, *mean.shape), generator=self.generator).to(self.device)
        return mean + (tril @ noise.unsqueeze(-1)).squeeze(-1)

    def update_step(self, data: ReplayBuffer) -> dict[str, float]:
        cfg = self.config
        raw = data.sample(cfg.batch_size, self.rng)
        batch = {k: torch.as_tensor(v, device=self.device) for k, v in raw.items()}
        info = self._update_critics(batch)
        info.update(self._update_actor(batch["obs"]))
        polyak_update(self.critic_targ, self.critic, cfg.polyak)
        polyak_update(self.cost_critic_targ, self.cost_critic, cfg.polyak)
        polyak_update(self.actor_targ, self.actor, cfg.polyak)
        self._policy = None
        return info

    @torch.no_grad()
    def critic_targets(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """:func:`td_targets` of a replay minibatch ``(B,)`` each, with a', a'' ~ π_θ(·|s')
        (the current actor, one draw per backup, as official) and the target critics."""
        cfg, next_obs = self.config, batch["next_obs"]
        mean, tril = self.actor(next_obs)
        act_r, act_c = self._sample(mean, tril, 2)
        return td_targets(
            batch["reward"],
            batch["cost"],
            batch["terminated"],
            batch["goal_met"],
            self.critic_targ(next_obs, act_r).min(0).values,
            self.cost_critic_targ(next_obs, act_c).min(0).values,
            cfg.gamma,
            cfg.cost_terminal_mask,
        )

    def _update_critics(self, batch: dict[str, Tensor]) -> dict[str, float]:
        obs, act = batch["obs"], batch["act"]
        y_r, y_c = self.critic_targets(batch)
        losses = []
        for net, optim, y in (
            (self.critic, self.critic_optim, y_r),
            (self.cost_critic, self.cost_critic_optim, y_c),
        ):
            loss = ((net(obs, act) - y) ** 2).mean(-1).sum()  # Σ_j MSE_j
            optim.zero_grad()
            loss.backward()
            optim.step()
            losses.append(loss.item())
        return {"loss_q": losses[0], "loss_qc": losses[1]}

    def _update_actor(self, obs: Tensor) -> dict[str, float]:
        cfg = self.config
        c_hat = self.cost_threshold
        with torch.no_grad():
            mean_old, tril_old = self.actor_targ(obs)
            actions = self._sample(mean_old, tril_old, cfg.sample_action_num)  # (K, B, n)
            q_r = self.critic_targ.forward_samples(obs, actions).min(0).values  # (K, B)
            q_c = self.cost_critic_targ.forward_samples(obs, actions).min(0).values
        q_r64, q_c64 = q_r.double().cpu().numpy(), q_c.double().cpu().numpy()
        self.eta, self.lam = solve_dual(
            q_r64,
            q_c64,
            cfg.dual_constraint,
            c_hat,
            (self.eta, self.lam),
            cfg.dual_bounds,
            cfg.dual_maxiter,
            cfg.dual_ftol,
        )
        _, grad = dual_function((self.eta, self.lam), q_r64, q_c64, cfg.dual_constraint, c_hat)
        weights = e_step_weights(q_r, q_c, self.eta, self.lam)

        params = list(self.actor.parameters())
        for _ in range(cfg.mstep_iteration_num):
            mean, tril = self.actor(obs)
            loss_mle, kl_mean, kl_var = m_step_terms(
                actions, weights, mean_old, tril_old, mean, tril
            )
            if not (torch.isfinite(kl_mean) and torch.isfinite(kl_var)):
                raise FloatingPointError("CVPO M-step: the actor's KL became non-finite")
            # Projected gradient descent on the M-step multipliers (official, before the step).
            self.alpha_mean = float(
                np.clip(
                    self.alpha_mean
                    - cfg.alpha_mean_scale * (cfg.kl_mean_constraint - kl_mean.item()),
                    0.0,
                    cfg.alpha_mean_max,
                )
            )
            self.alpha_var = float(
                np.clip(
                    self.alpha_var - cfg.alpha_var_scale * (cfg.kl_var_constraint - kl_var.item()),
                    0.0,
                    cfg.alpha_var_max,
                )
            )
            loss = (
                loss_mle
                - self.alpha_mean * (cfg.kl_mean_constraint - kl_mean)
                - self.alpha_var * (cfg.kl_var_constraint - kl_var)
            )
            self.actor_optim.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(params, cfg.actor_max_grad_norm)
            self.actor_optim.step()
        return {
            "eta": self.eta,
            "lam": self.lam,
            "estep_kl": cfg.dual_constraint - float(grad[0]),  # mean KL(q‖U) at the solution
            "estep_qc": c_hat - float(grad[1]),  # mean E_q[Q_c] at the solution
            "qc_thres": c_hat,
            "q_r": float(q_r.mean()),
            "q_c": float(q_c.mean()),
            "loss_mle": loss_mle.item(),
            "loss_actor": loss.item(),
            "kl_mean": kl_mean.item(),
            "kl_var": kl_var.item(),
            "alpha_mean": self.alpha_mean,
            "alpha_var": self.alpha_var,
        }

    def diagnostics(self) -> dict[str, float]:
        return {
            "eta": self.eta,
            "lam": self.lam,
            "alpha_mean": self.alpha_mean,
            "alpha_var": self.alpha_var,
        }

    # ---- checkpointing ------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "nets": {
                name: getattr(self, name).state_dict()
                for name in (
                    "actor",
                    "actor_targ",
                    "critic",
                    "critic_targ",
                    "cost_critic",
                    "cost_critic_targ",
                    "actor_optim",
                    "critic_optim",
                    "cost_critic_optim",
                )
            },
            "generator": self.generator.get_state(),
            "rng": self.rng.bit_generator.state,
            "act_rng": self._act_rng.bit_generator.state,
            "multipliers": (self.eta, self.lam, self.alpha_mean, self.alpha_var),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, value in state["nets"].items():
            getattr(self, name).load_state_dict(value)
        self.generator.set_state(state["generator"])
        self.rng.bit_generator.state = state["rng"]
        self._act_rng.bit_generator.state = state["act_rng"]
        self.eta, self.lam, self.alpha_mean, self.alpha_var = state["multipliers"]
        self._policy = None
