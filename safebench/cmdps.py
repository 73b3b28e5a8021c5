r"""Small built-in constrained MDPs whose constrained optimum is known exactly.

They exist to test safe-RL algorithms end to end in seconds: each environment is pure NumPy/Python
(a few µs per step), follows the Safety-Gymnasium CMDP API

    reset(seed=None, options=None) -> (obs, info)
    step(action) -> (obs, reward, cost, terminated, truncated, info)

and has a method ``optimum(cost_limit)`` returning the expected *undiscounted* episode return and
cost of the optimal policy under the episodic constraint E[Σ_t c_t] ≤ cost_limit. A learned policy
can therefore be scored against a ground truth instead of against another algorithm. (An
algorithm that discounts with γ < 1 optimises a slightly different objective; the optima here are
for the undiscounted episode sums that safe-RL benchmarks report.)

``BUILTIN_CMDPS`` maps the environment ids to the classes; each class carries ``default_kwargs``
(constructor arguments of the registered version) and ``default_cost_limit`` (a limit at which the
constraint binds for those arguments).
"""

from __future__ import annotations

import abc
import bisect
import math
import operator
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import linprog

__all__ = ["BUILTIN_CMDPS", "BuiltinCMDP", "ContinuousTarget", "Optimum", "TabularCMDP"]


@dataclass(frozen=True)
class Optimum:
    """The optimal constrained policy of a built-in CMDP for one episodic cost limit.

    Attributes:
        ret: expected undiscounted episode return E[Σ_t r_t] of the optimal policy.
        cost: its expected undiscounted episode cost E[Σ_t c_t]; equals the cost limit when the
            constraint binds.
        multiplier: optimal Lagrange multiplier ν* ≥ 0 of the cost constraint, which is also the
            slope d ret / d cost_limit (0 when the constraint is slack).
        description: short human-readable description of the optimal policy.
        policy: for tabular CMDPs the optimal stationary policy π(a|s), shape (S, A), read-only;
            None for continuous-action CMDPs (see ``description``).
    """

    ret: float
    cost: float
    multiplier: float
    description: str
    policy: NDArray[np.float64] | None = field(default=None, compare=False, repr=False)


class BuiltinCMDP(gym.Env, abc.ABC):
    """Interface shared by the built-in CMDPs: Safety-Gymnasium 6-tuple ``step`` plus optimum.

    Class attributes:
        default_kwargs: constructor arguments of the registered ``safebench/<Name>-v0`` version.
        default_cost_limit: episodic cost limit at which the constraint binds for those arguments.
    """

    metadata = {"render_modes": []}  # noqa: RUF012  (gymnasium declares it as a plain dict)
    default_kwargs: ClassVar[Mapping[str, Any]]
    default_cost_limit: ClassVar[float]

    @abc.abstractmethod
    def step(  # type: ignore[override]  # CMDP API: the 6-tuple adds the cost
        self, action: Any
    ) -> tuple[NDArray[np.float32], float, float, bool, bool, dict[str, Any]]:
        """Apply an action; return (obs, reward, cost, terminated, truncated, info)."""

    @abc.abstractmethod
    def optimum(self, cost_limit: float) -> Optimum:
        """Optimal expected undiscounted episode return/cost under E[Σ_t c_t] ≤ cost_limit."""


def _check_cost_limit(cost_limit: float) -> float:
    cost_limit = float(cost_limit)
    if math.isnan(cost_limit) or cost_limit < 0.0:
        raise ValueError(f"cost_limit must be >= 0 (math.inf for unconstrained), got {cost_limit}")
    return cost_limit


class ContinuousTarget(BuiltinCMDP):
    r"""Continuous-action CMDP: hit a random target, but large actions are costly.

    Episode of fixed length H (``horizon``; never ``terminated``, ``truncated`` on the H-th step).
    At every step t = 0, …, H−1 a target s_t ~ U[0.5, 1.5] is drawn i.i.d. (independent of all
    actions) and observed before acting.

    * Observation: o_t = (s_t, t/H), float32, shape (2,), ``Box([0.5, 0], [1.5, 1])``. The time
      feature keeps the value function Markov under the fixed horizon; the optimal policy ignores
      it. After the last step the observation is (fresh target, 1).
    * Action: a ∈ ℝ, ``Box(-2, 2, shape=(1,))``; values outside are clipped to [-2, 2] (NaN is
      rejected).
    * Reward: r_t = 1 − (a_t − s_t)².   Cost: c_t = k·a_t² (``cost_scale`` k > 0, default 1).

    Optimum (constraint E[Σ_t c_t] ≤ d). The targets are exogenous, so any policy, whatever it
    conditions on, only induces per-step joint laws of (s_t, a_t) with s_t ~ U[0.5, 1.5], and
    return and cost are linear in those laws. The Lagrangian Σ_t E[1 − (a−s)² − ν k a²] + ν d
    is strictly concave in a and is maximised pointwise by

        a*(s) = s / (1 + ν k) = κ s,    κ ∈ [0, 1].

    With m₂ = E[s²] = (1.5³ − 0.5³) / 3 = 13/12 the episode cost of a* is H k κ² m₂, so

        κ = min(1, √(d / (H k m₂))),   J_r* = H (1 − (1 − κ)² m₂),   J_c* = H k κ² m₂,
        ν* = (1/κ − 1) / k = dJ_r*/dd,

    and strong duality holds (a ≡ 0 is strictly feasible for d > 0). Randomising never helps: an
    action law with mean μ and variance σ² at target s gives E[r] = 1 − (μ − s)² − σ² and
    E[c] = k(μ² + σ²), so its mean is better on both counts. In particular a Gaussian policy
    N(μ(s), σ²) loses σ² per step in reward *and* spends kσ² per step of budget; its best value
    is ``optimum(d, action_std=σ)`` (κ = √((d/(Hk) − σ²)/m₂), J_r = H(1 − σ² − (1 − κ)² m₂)),
    and J_r* is the supremum approached as σ → 0.

    Defaults: H = 20, d = 5 (budget 0.25 per step against the unconstrained 13/12): κ = √(3/13)
    ≈ 0.4804, ν* ≈ 1.0817, J_r* = (10/3)(√39 − 2) ≈ 14.150 at cost 5, versus J_r = 20 at cost
    65/3 ≈ 21.67 without the constraint.
    """

    default_kwargs: ClassVar[Mapping[str, Any]] = MappingProxyType({"horizon": 20})
    #: Binds for the default horizon (0.25 per step); scale with the horizon for other lengths.
    default_cost_limit: ClassVar[float] = 5.0

    target_low: ClassVar[float] = 0.5
    target_high: ClassVar[float] = 1.5
    action_bound: ClassVar[float] = 2.0

    def __init__(self, horizon: int = 20, cost_scale: float = 1.0) -> None:
        """Create the environment.

        Args:
            horizon: episode length H (number of steps), >= 1.
            cost_scale: k > 0 in the cost c = k·a² (other cost units than the default's).
        """
        if int(horizon) != horizon or horizon < 1:
            raise ValueError(f"horizon must be a positive integer, got {horizon}")
        if not (math.isfinite(cost_scale) and cost_scale > 0):
            raise ValueError(f"cost_scale must be a positive number, got {cost_scale}")
        self.horizon = int(horizon)
        self.cost_scale = float(cost_scale)
        self.observation_space = spaces.Box(
            low=np.array([self.target_low, 0.0], dtype=np.float32),
            high=np.array([self.target_high, 1.0], dtype=np.float32),
            dtype=np.float32,
        )
        self.action_space = spaces.Box(
            low=-self.action_bound, high=self.action_bound, shape=(1,), dtype=np.float32
        )
        self._t = -1  # -1 until the first reset
        self._target = 0.0

    @property
    def max_episode_steps(self) -> int:
        """Episode length (= horizon); every episode is truncated after exactly this many steps."""
        return self.horizon

    @classmethod
    def second_moment(cls) -> float:
        """m₂ = E[s²] for s ~ U[target_low, target_high]."""
        lo, hi = cls.target_low, cls.target_high
        return (hi**3 - lo**3) / (3.0 * (hi - lo))

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[NDArray[np.float32], dict[str, Any]]:
        """Start an episode; ``options`` is accepted for API compatibility and ignored."""
        super().reset(seed=seed)
        self._t = 0
        self._target = self.target_low + (self.target_high - self.target_low) * float(
            self.np_random.random()
        )
        return np.array((self._target, 0.0), dtype=np.float32), {}

    def step(  # type: ignore[override]  # 6-tuple CMDP API, as in BuiltinCMDP
        self, action: Any
    ) -> tuple[NDArray[np.float32], float, float, bool, bool, dict[str, Any]]:
        """Apply action a (shape (1,) or scalar); return (obs, r, c, terminated, truncated, {})."""
        if self._t < 0:
            raise RuntimeError("call reset() before step()")
        # .item() covers NumPy arrays/scalars and torch tensors of size 1 without copying.
        item = getattr(action, "item", None)
        a = float(item()) if item is not None else float(action)
        if a != a:
            raise ValueError("action is NaN")
        bound = self.action_bound
        if a > bound:
            a = bound
        elif a < -bound:
            a = -bound
        err = a - self._target
        reward = 1.0 - err * err
        cost = self.cost_scale * a * a
        self._t += 1
        truncated = self._t >= self.horizon
        self._target = self.target_low + (self.target_high - self.target_low) * float(
            self.np_random.random()
        )
        obs = np.array((self._target, min(self._t / self.horizon, 1.0)), dtype=np.float32)
        return obs, reward, cost, False, truncated, {}

    def optimal_gain(self, cost_limit: float, action_std: float = 0.0) -> float:
        """Slope κ of the optimal (mean) action a*(s) = κ s; see the class docstring.

        Args:
            cost_limit: episodic cost limit d >= 0 (math.inf: unconstrained).
            action_std: standard deviation σ of Gaussian action noise around the mean action.

        Raises:
            ValueError: if d < H σ², i.e. the noise alone exceeds the budget.
        """
        d = _check_cost_limit(cost_limit)
        var = float(action_std) ** 2
        if action_std < 0.0 or not math.isfinite(var):
            raise ValueError(f"action_std must be finite and >= 0, got {action_std}")
        per_step = d / (self.horizon * self.cost_scale) - var
        if per_step < 0.0:
            raise ValueError(
                f"infeasible: Gaussian noise with std {action_std} alone costs "
                f"{self.horizon * self.cost_scale * var:g} > cost_limit {d:g}"
            )
        return min(1.0, math.sqrt(per_step / self.second_moment()))

    def optimum(self, cost_limit: float, action_std: float = 0.0) -> Optimum:
        """Optimal expected undiscounted episode return/cost under E[Σ c_t] ≤ cost_limit.

        Args:
            cost_limit: episodic cost limit d >= 0 (math.inf: unconstrained).
            action_std: 0 (default) for the optimum over all policies. σ > 0 gives the best
                policy of the form a = μ(s) + σ ε, ε ~ N(0, 1), ignoring the clipping at ±2
                (accurate while max_s |μ(s)| + 4σ < 2, e.g. σ <= 0.3 at the default limit).
        """
        kappa = self.optimal_gain(cost_limit, action_std)
        m2 = self.second_moment()
        var = float(action_std) ** 2
        h = self.horizon
        ret = h * (1.0 - var - (1.0 - kappa) ** 2 * m2)
        cost = h * self.cost_scale * (kappa**2 * m2 + var)
        multiplier = math.inf if kappa == 0.0 else (1.0 / kappa - 1.0) / self.cost_scale
        noise = f" + N(0, {action_std:g}²)" if action_std > 0 else ""
        return Optimum(
            ret=ret,
            cost=cost,
            multiplier=multiplier,
            description=f"a*(s) = {kappa:.6g}·s{noise} (ν* = {multiplier:.6g})",
        )


# Default TabularCMDP instance: 5 states, 3 actions. Action 0 is free everywhere (so every cost
# limit >= 0 is feasible); actions 1 and 2 earn more but cost. Rounded random tables, kept because
# the resulting LP is non-degenerate at the default limit: a unique optimum that mixes actions 0/1
# in state 0 (≈ 0.40/0.60) and plays action 0 elsewhere, far from both the unconstrained optimum
# (return ≈ 8.22 at cost ≈ 3.26) and the zero-cost optimum (return ≈ 3.01).
_DEFAULT_TRANSITIONS = (  # P[s, a, s']
    (
        (0.03, 0.00, 0.00, 0.78, 0.19),
        (0.55, 0.29, 0.01, 0.14, 0.01),
        (0.17, 0.24, 0.38, 0.03, 0.18),
    ),
    (
        (0.33, 0.41, 0.00, 0.03, 0.23),
        (0.27, 0.32, 0.05, 0.02, 0.34),
        (0.48, 0.09, 0.04, 0.01, 0.38),
    ),
    (
        (0.30, 0.58, 0.02, 0.01, 0.09),
        (0.33, 0.46, 0.01, 0.19, 0.01),
        (0.00, 0.77, 0.03, 0.18, 0.02),
    ),
    (
        (0.64, 0.28, 0.02, 0.01, 0.05),
        (0.14, 0.09, 0.01, 0.62, 0.14),
        (0.02, 0.00, 0.04, 0.48, 0.46),
    ),
    (
        (0.03, 0.05, 0.88, 0.03, 0.01),
        (0.18, 0.52, 0.08, 0.12, 0.10),
        (0.08, 0.00, 0.71, 0.00, 0.21),
    ),
)
_DEFAULT_REWARDS = (  # R[s, a]
    (0.2, 0.8, 0.7),
    (0.8, 0.9, 0.8),
    (0.8, 0.5, 0.5),
    (0.0, 0.2, 0.2),
    (0.0, 0.8, 1.0),
)
_DEFAULT_COSTS = (  # C[s, a]
    (0.0, 0.4, 0.7),
    (0.0, 0.1, 0.8),
    (0.0, 0.7, 0.7),
    (0.0, 0.6, 1.0),
    (0.0, 0.5, 0.5),
)


class TabularCMDP(BuiltinCMDP):
    r"""Finite CMDP with geometric episode termination, solved exactly by an occupancy LP.

    Tables: transition kernel P (S, A, S), reward R (S, A), cost C (S, A), initial law μ₀ (S,).
    Defaults: S = 5, A = 3, the tables ``_DEFAULT_*`` above, μ₀ = one-hot(0).

    Per step in state s with action a: r = R[s, a], c = C[s, a], s' ~ P[s, a, ·]; then the
    episode ends with probability p_end (``terminated=True``), else continues from s'. A safety
    ``truncated=True`` is emitted after ``max_episode_steps`` steps (if not terminated).

    * Observation: one-hot(s), float32, shape (S,), ``Box(0, 1)``.
    * Action: ``Discrete(A)`` (Python/NumPy integers, or size-1 integer arrays/tensors).

    Optimum. The episode length T is geometric, Pr(T > t) = γ'^t with γ' = 1 − p_end, so

        E[Σ_{t<T} r_t] = Σ_t γ'^t E[R(s_t, a_t)] = Σ_{s,a} ρ(s, a) R(s, a),
        ρ(s, a) = Σ_t γ'^t Pr(s_t = s, a_t = a)   (occupancy measure, shape (S, A)),

    and likewise for the cost. The achievable ρ are exactly the solutions of

        Σ_a ρ(s', a) = μ₀(s') + γ' Σ_{s,a} P(s'|s, a) ρ(s, a)  ∀s',   ρ >= 0,

    each realised by the stationary policy π(a|s) = ρ(s, a) / Σ_b ρ(s, b). The constrained
    optimum is therefore the linear program

        max_ρ Σ ρ R   s.t. the flow constraints and Σ ρ C <= d,

    solved with HiGHS; the multiplier is the dual of the cost row. A basic optimal solution (the
    kind HiGHS returns) has at most one positive entry more than there are visited states, so the
    optimal policy randomises in at most one state. Truncation
    at L = ``max_episode_steps`` drops the steps t >= L, changing return and cost by at most
    γ'^L / p_end · max|R| (resp. max|C|), 7.1e-9 for the defaults (p_end = 0.1, L = 200).

    Defaults: d = 1: J_r* ≈ 4.9395 at cost 1, π*(·|0) ≈ (0.402, 0.598, 0), action 0 in states
    1–4, ν* ≈ 1.931; unconstrained: J_r ≈ 8.221 at cost ≈ 3.265.
    """

    default_kwargs: ClassVar[Mapping[str, Any]] = MappingProxyType(
        {"p_end": 0.1, "max_episode_steps": 200}
    )
    #: Binds for the default tables and p_end (unconstrained optimum costs ≈ 3.26).
    default_cost_limit: ClassVar[float] = 1.0

    def __init__(
        self,
        p_end: float = 0.1,
        max_episode_steps: int = 200,
        *,
        transitions: ArrayLike | None = None,
        rewards: ArrayLike | None = None,
        costs: ArrayLike | None = None,
        initial_distribution: ArrayLike | None = None,
    ) -> None:
        """Create the environment (default tables unless all of P, R, C are given).

        Args:
            p_end: per-step termination probability, in (0, 1].
            max_episode_steps: safety truncation length L >= 1.
            transitions: P[s, a, s'], shape (S, A, S), rows summing to 1.
            rewards: R[s, a], shape (S, A).
            costs: C[s, a], shape (S, A).
            initial_distribution: μ₀, shape (S,); default one-hot(0).
        """
        if not 0.0 < p_end <= 1.0:
            raise ValueError(f"p_end must be in (0, 1], got {p_end}")
        if int(max_episode_steps) != max_episode_steps or max_episode_steps < 1:
            raise ValueError(
                f"max_episode_steps must be a positive integer, got {max_episode_steps}"
            )
        given = [x is not None for x in (transitions, rewards, costs)]
        if any(given) and not all(given):
            raise ValueError("give all of transitions, rewards and costs, or none")
        p = np.array(_DEFAULT_TRANSITIONS if transitions is None else transitions, dtype=np.float64)
        r = np.array(_DEFAULT_REWARDS if rewards is None else rewards, dtype=np.float64)
        c = np.array(_DEFAULT_COSTS if costs is None else costs, dtype=np.float64)
        if p.ndim != 3 or p.shape[0] != p.shape[2] or r.shape != p.shape[:2] or c.shape != r.shape:
            raise ValueError(f"inconsistent shapes P {p.shape}, R {r.shape}, C {c.shape}")
        n_states, n_actions = r.shape
        mu0 = (
            np.eye(n_states)[0]
            if initial_distribution is None
            else np.array(initial_distribution, dtype=np.float64)
        )
        for name, dist in (("transitions", p), ("initial_distribution", mu0)):
            if dist.shape[-1] != n_states or (dist < 0).any():
                raise ValueError(f"{name} must be non-negative over {n_states} states")
            if not np.allclose(dist.sum(-1), 1.0, rtol=0.0, atol=1e-9):
                raise ValueError(f"{name} must sum to 1 over states")
        if not (np.isfinite(r).all() and np.isfinite(c).all()):
            raise ValueError("rewards and costs must be finite")

        self.p_end = float(p_end)
        self.max_episode_steps = int(max_episode_steps)
        self.transitions = p
        self.rewards = r
        self.costs = c
        self.initial_distribution = mu0
        for arr in (p, r, c, mu0):
            arr.flags.writeable = False  # the stepping caches below are derived from them
        self.n_states = n_states
        self.n_actions = n_actions

        self.observation_space = spaces.Box(low=0.0, high=1.0, shape=(n_states,), dtype=np.float32)
        self.action_space = spaces.Discrete(n_actions)

        # Python-level caches: list indexing and bisect on short lists are several times faster
        # per step than NumPy indexing and rng.choice. The last cumulative entry is forced to 1 so
        # that a uniform u < 1 always maps to a valid state.
        def cumulative(dist: NDArray[np.float64]) -> list[float]:
            cum = np.cumsum(dist)
            cum[-1] = 1.0
            return [float(x) for x in cum]

        self._cum_p = [[cumulative(p[s, a]) for a in range(n_actions)] for s in range(n_states)]
        self._cum_mu0 = cumulative(mu0)
        self._r = r.tolist()
        self._c = c.tolist()
        self._onehot = np.eye(n_states, dtype=np.float32)
        self._state = -1  # -1 until the first reset
        self._t = 0

    @property
    def gamma(self) -> float:
        """Effective discount γ' = 1 − p_end (undiscounted episode sum = γ'-discounted value)."""
        return 1.0 - self.p_end

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[NDArray[np.float32], dict[str, Any]]:
        """Start an episode in s₀ ~ μ₀; ``options`` is accepted for API compatibility, ignored."""
        super().reset(seed=seed)
        self._t = 0
        self._state = bisect.bisect_right(self._cum_mu0, float(self.np_random.random()))
        return self._onehot[self._state].copy(), {}

    def step(  # type: ignore[override]  # 6-tuple CMDP API, as in BuiltinCMDP
        self, action: Any
    ) -> tuple[NDArray[np.float32], float, float, bool, bool, dict[str, Any]]:
        """Apply action index a and return (obs, r, c, terminated, truncated, info)."""
        s = self._state
        if s < 0:
            raise RuntimeError("call reset() before step()")
        try:
            a = operator.index(action)
        except TypeError:
            arr = np.asarray(action)
            if arr.size != 1 or arr.dtype.kind not in "biu":
                raise ValueError(f"expected one integer action, got {action!r}") from None
            a = int(arr.item())
        if not 0 <= a < self.n_actions:
            raise ValueError(f"action {a} outside Discrete({self.n_actions})")
        rng = self.np_random
        s_next = bisect.bisect_right(self._cum_p[s][a], float(rng.random()))
        terminated = float(rng.random()) < self.p_end
        self._state = s_next
        self._t += 1
        truncated = not terminated and self._t >= self.max_episode_steps
        return self._onehot[s_next].copy(), self._r[s][a], self._c[s][a], terminated, truncated, {}

    def evaluate(self, policy: ArrayLike) -> tuple[float, float]:
        """Exact expected undiscounted episode (return, cost) of a stationary policy.

        Solves (I − γ' P_π) v = x_π for x ∈ {R, C}, with P_π[s, s'] = Σ_a π(a|s) P[s, a, s'] and
        x_π[s] = Σ_a π(a|s) x[s, a], and returns μ₀ · v (ignoring the negligible truncation).

        Args:
            policy: π(a|s), shape (S, A), rows summing to 1.
        """
        pi = np.asarray(policy, dtype=np.float64)
        if pi.shape != self.rewards.shape:
            raise ValueError(f"policy must have shape {self.rewards.shape}, got {pi.shape}")
        if (pi < 0).any() or not np.allclose(pi.sum(1), 1.0, rtol=0.0, atol=1e-9):
            raise ValueError("policy rows must be probability distributions over actions")
        p_pi = np.einsum("sa,sat->st", pi, self.transitions)
        rhs = np.stack([(pi * self.rewards).sum(1), (pi * self.costs).sum(1)], axis=1)
        values = np.linalg.solve(np.eye(self.n_states) - self.gamma * p_pi, rhs)
        ret, cost = self.initial_distribution @ values
        return float(ret), float(cost)

    def optimum(self, cost_limit: float) -> Optimum:
        """Optimal expected undiscounted episode return/cost under E[Σ c_t] ≤ cost_limit.

        Args:
            cost_limit: episodic cost limit d >= 0 (math.inf: unconstrained).

        Raises:
            ValueError: if no policy satisfies the limit.
        """
        d = _check_cost_limit(cost_limit)
        n_s, n_a = self.n_states, self.n_actions
        # Flow constraints on the flattened ρ[s·A + a]: row s' = 1{s = s'} − γ' P[s, a, s'].
        a_eq = (
            np.repeat(np.eye(n_s), n_a, axis=1)
            - self.gamma * self.transitions.reshape(n_s * n_a, n_s).T
        )
        constrained = math.isfinite(d)
        res = linprog(
            -self.rewards.reshape(-1),
            A_ub=self.costs.reshape(1, -1) if constrained else None,
            b_ub=[d] if constrained else None,
            A_eq=a_eq,
            b_eq=self.initial_distribution,
            bounds=(0.0, None),
            method="highs",
        )
        if res.status == 2:
            raise ValueError(f"infeasible: no policy has expected episode cost <= {d:g}")
        if res.status != 0:
            raise RuntimeError(f"occupancy LP failed: {res.message}")
        rho = np.clip(res.x.reshape(n_s, n_a), 0.0, None)
        occupancy = rho.sum(1, keepdims=True)
        # States the optimal policy never visits may use any action; uniform keeps π a valid law.
        policy = np.where(occupancy > 0.0, rho / np.where(occupancy > 0.0, occupancy, 1.0), 1 / n_a)
        policy.flags.writeable = False
        multiplier = max(0.0, -float(res.ineqlin.marginals[0])) if constrained else 0.0
        rows = []
        for s in range(n_s):
            support = np.flatnonzero(policy[s] > 1e-9)
            if support.size == 1:
                rows.append(f"s{s}: a{support[0]}")
            else:
                mix = ", ".join(f"a{a} {policy[s, a]:.3f}" for a in support)
                rows.append(f"s{s}: {{{mix}}}")
        return Optimum(
            ret=float(self.rewards.reshape(-1) @ res.x),
            cost=float(self.costs.reshape(-1) @ res.x),
            multiplier=multiplier,
            description="π*: " + "; ".join(rows),
            policy=policy,
        )


BUILTIN_CMDPS: dict[str, type[BuiltinCMDP]] = {
    "safebench/ContinuousTarget-v0": ContinuousTarget,
    "safebench/TabularCMDP-v0": TabularCMDP,
}
