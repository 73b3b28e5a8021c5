"""The rollout collector: env steps, observation normalisation, episode accounting, GAE.

One :class:`Collector` serves every algorithm, which is what makes a comparison fair by
construction: the same env stepping, the same normaliser, the same episode statistics.

Episode statistics follow OmniSafe's logger: EpRet / EpCost / EpLen are means over the last
``window`` finished episodes (undiscounted), and Ĵc (the estimate every algorithm compares
with the cost limit) is that window's mean EpCost.

What the env receives is decided by one :class:`ActionMap` per run, used in training and in
evaluation alike: the policy's action, rescaled affinely from [-1, 1] to the env's box when
``action_scale`` (OmniSafe's ``ActionScale``), and clipped to the box when ``clip_actions``.
The stored action (and its log-probability) is always the policy's own sample.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

import gymnasium
import numpy as np

from safebench.core.gae import gae
from safebench.core.normalize import ObsNormalizer, ObsNormalizerKind, make_normalizer
from safebench.core.onpolicy import OnPolicyAlgorithm, Rollout
from safebench.envs.factory import VectorCMDP

__all__ = ["ActionMap", "Collector", "EpisodeStats", "EpisodeTracker", "evaluate", "scale_action"]


def scale_action(action: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """OmniSafe's ``ActionScale`` from [-1, 1] to the box [low, high], in float32::

        a_env = low + (high − low)·(a − (−1)) / (1 − (−1))

    evaluated in the same order and precision as ``omnisafe/envs/wrapper.py``
    ``ActionScale.step`` (float32 tensors), so the result is bit-identical to it. Affine and
    unclipped: a sample outside [-1, 1] lands outside the box by the same proportion, as
    there. Shapes: ``action (N, *box)``, ``low``/``high`` ``box`` -> ``(N, *box)``.
    """
    lo = np.asarray(low, dtype=np.float32)
    span = np.asarray(high, dtype=np.float32) - lo
    centred = np.asarray(action, dtype=np.float32) - np.float32(-1.0)
    return lo + span * centred / np.float32(2.0)


@dataclass(frozen=True)
class ActionMap:
    """What the env receives for a batch of policy actions ``(N, *box_shape)``.

    ``scale``: the policy acts in [-1, 1] and :func:`scale_action` maps that affinely to the
    env's box (OmniSafe ``ActionScale``, SafePO / C-TRPO ``SafeRescaleAction``); ``clip``: the
    result is clipped to the box (Gymnasium ``ClipAction``; off in the field's protocol, where
    the env gets the affine image unclipped and applies its own actuator limits). Neither
    applies to a discrete space or to a box with a non-finite bound (no affine map onto an
    unbounded interval exists). Where the box is [-1, 1] in every dimension the affine map is
    the identity and is skipped: OmniSafe's float32 formula computes it as −1 + (a + 1), which
    can differ from ``a`` in the last bits; the identity keeps such runs exactly as they were.
    """

    low: np.ndarray | None
    high: np.ndarray | None
    scale: bool
    clip: bool

    @classmethod
    def for_space(cls, space: gymnasium.Space[Any], *, scale: bool, clip: bool) -> ActionMap:
        """The map for ``space`` (a Box, or anything else, which gets the identity)."""
        if not isinstance(space, gymnasium.spaces.Box):
            return cls(None, None, False, False)
        low = np.asarray(space.low, dtype=np.float32)
        high = np.asarray(space.high, dtype=np.float32)
        if not (np.isfinite(low).all() and np.isfinite(high).all()):
            return cls(None, None, False, False)
        unit = bool((low == -1.0).all() and (high == 1.0).all())
        return cls(low, high, scale and not unit, clip)

    def __call__(self, action: np.ndarray) -> np.ndarray:
        if self.low is None or self.high is None:
            return action
        out = scale_action(action, self.low, self.high) if self.scale else action
        return np.minimum(np.maximum(out, self.low), self.high) if self.clip else out


@dataclass(frozen=True)
class EpisodeStats:
    """Window means of the last ``window`` finished episodes, and this collection's counts."""

    ep_ret: float
    ep_cost: float
    ep_len: float
    episodes: int  # episodes finished during this collection
    steps: int = 0  # env steps taken during this collection


_NONE = np.empty(0, dtype=np.intp)  # no env ended (read-only by convention)


class EpisodeTracker:
    """Undiscounted return, cost and length of each env's running episode, and the window of
    the last ``window`` finished ones (OmniSafe's logger: EpRet / EpCost / EpLen are means over
    that window, and Ĵc is its mean EpCost). Shared by every collector."""

    def __init__(self, num_envs: int, window: int) -> None:
        self.window = window
        self.finished: deque[tuple[float, float, int]] = deque(maxlen=window)
        # The window's mean cost right after each episode ended in this collection (the
        # official C-TRPO scripts log it per episode; their Ĵc is its mean over the epoch).
        self.snapshots: list[float] = []
        self.ret = np.zeros(num_envs)
        self.cost = np.zeros(num_envs)
        self.length = np.zeros(num_envs, dtype=np.int64)

    def add(self, rew: np.ndarray, cost: np.ndarray, done: np.ndarray) -> np.ndarray:
        """Account one vector step; returns the indices of the envs whose episode ended."""
        self.ret += rew
        self.cost += cost
        self.length += 1
        if not done.any():  # most steps: skip the index search (it runs every env step)
            return _NONE
        ended = np.flatnonzero(done)
        for i in ended:
            self.finished.append((float(self.ret[i]), float(self.cost[i]), int(self.length[i])))
            self.snapshots.append(sum(ep[1] for ep in self.finished) / len(self.finished))
            self.ret[i] = self.cost[i] = 0.0
            self.length[i] = 0
        return ended

    def stats(self, episodes: int = 0, steps: int = 0) -> EpisodeStats:
        if not self.finished:
            return EpisodeStats(float("nan"), float("nan"), float("nan"), episodes, steps)
        ret, cost, length = np.asarray(self.finished, dtype=np.float64).mean(0)
        return EpisodeStats(float(ret), float(cost), float(length), episodes, steps)

    def state_dict(self) -> dict[str, Any]:
        return {
            "finished": list(self.finished),
            "cur": (self.ret.copy(), self.cost.copy(), self.length.copy()),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.finished = deque(state["finished"], maxlen=self.window)
        self.ret, self.cost, self.length = (x.copy() for x in state["cur"])


class Collector:
    """Steps a :class:`~safebench.envs.factory.VectorCMDP` with an algorithm's policy.

    Owns the training env, the observation normaliser, the action-noise RNG and the episode
    accounting; :meth:`state_dict` captures all of it (including each env's exact
    mid-episode state through the vector env's seed + action log) for bit-exact resume.

    ``obs_normalizer`` picks the normaliser (:mod:`safebench.core.normalize`); either is
    updated with each vector step's observations (an ended env's reset observation included)
    before they are normalised. ``truncation_bootstrap`` is the observation a time-out's
    bootstrap value is computed from: ``normalized`` (the final observation normalised with the
    current statistics) or ``raw`` (the env's final observation as is, as the official C-TRPO
    code passes it to its critics).
    """

    def __init__(
        self,
        venv: VectorCMDP,
        seed: int,
        *,
        normalize_obs: bool = True,
        window: int = 100,
        action_scale: bool = False,
        clip_actions: bool = False,
        obs_normalizer: ObsNormalizerKind = "omnisafe",
        truncation_bootstrap: Literal["normalized", "raw"] = "normalized",
    ) -> None:
        if truncation_bootstrap not in ("normalized", "raw"):
            raise ValueError(f"unknown truncation_bootstrap {truncation_bootstrap!r}")
        self.venv = venv
        self.raw_bootstrap = truncation_bootstrap == "raw"
        self.action_map = ActionMap.for_space(
            venv.action_space, scale=action_scale, clip=clip_actions
        )
        self.num_envs = venv.num_envs
        shape = venv.observation_space.shape or (1,)
        self.normalizer: ObsNormalizer | None = (
            make_normalizer(obs_normalizer, shape) if normalize_obs else None
        )
        self.rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
        self.episodes = EpisodeTracker(self.num_envs, window)
        self.total_steps = 0
        self.total_episodes = 0
        self._raw_obs = venv.reset(seed)
        self._obs = self._normalize(self._raw_obs, update=True)

    def _normalize(self, raw: np.ndarray, update: bool) -> np.ndarray:
        if self.normalizer is None:
            return raw.astype(np.float32)
        if update:
            self.normalizer.update(raw)
        return self.normalizer.normalize(raw)

    def normalize(self, raw: np.ndarray) -> np.ndarray:
        """Normalise with the current statistics, without updating them (evaluation)."""
        return self._normalize(raw, update=False)

    def stats(self, episodes: int = 0, steps: int = 0) -> EpisodeStats:
        return self.episodes.stats(episodes, steps)

    def diagnostics(self) -> dict[str, float]:
        """The collector's own numbers for the epoch's metrics row (none on-policy)."""
        return {}

    def collect(self, algo: OnPolicyAlgorithm, steps: int) -> tuple[Rollout, EpisodeStats]:
        """Roll out ``steps`` env steps in total (``steps // num_envs`` per env) and run GAE.

        Time-outs bootstrap with V(final observation) (normalised, or raw where
        ``truncation_bootstrap`` is ``raw``); terminations with 0; the rollout's last step with
        V(next observation), as OmniSafe and the official C-TRPO code do.
        """
        # One function on purpose: the per-step loop below keeps every name it touches local
        # (attribute and global lookups cost per env step), which is why it runs past 80 lines.
        n = self.num_envs
        horizon = max(1, steps // n)
        policy = algo.rollout_policy()
        # Gaussian policies are sampled inline (mean + σ·ε); log-probabilities of the whole
        # batch are computed afterwards in one torch call, with the very function the update
        # differentiates, so the importance ratio is exactly 1 at the collecting policy.
        mean_net = getattr(policy, "mean_net", None)
        std = getattr(policy, "std", None)
        obs_buf = np.empty((horizon, n, *self._obs.shape[1:]), dtype=np.float32)
        act_buf: np.ndarray | None = None
        rew_buf = np.empty((horizon, n))
        cost_buf = np.empty((horizon, n))
        term_buf = np.zeros((horizon, n), dtype=bool)
        end_buf = np.zeros((horizon, n), dtype=bool)
        # Observations whose value the GAE needs besides obs_buf: time-out final obs.
        trunc_rows: list[tuple[int, int, np.ndarray]] = []
        episodes = 0
        self.episodes.snapshots.clear()
        # The stored action is always the sampled one (its log-probability is the one the
        # update uses); only what the env receives is rescaled / clipped (self.action_map).
        to_env = self.action_map
        rng = self.rng
        raw_bootstrap = self.raw_bootstrap
        for t in range(horizon):
            obs = self._obs
            if mean_net is not None:
                mean = mean_net(obs)
                action = mean + std * rng.standard_normal(mean.shape, dtype=np.float32)
            else:
                action = policy.sample(obs, rng)[0]
            if act_buf is None:
                act_buf = np.empty((horizon, *action.shape), dtype=action.dtype)
            raw, rew, cost, term, trunc, final = self.venv.step(to_env(action))
            obs_buf[t] = obs
            act_buf[t] = action
            rew_buf[t] = rew
            cost_buf[t] = cost
            term_buf[t] = term
            self._obs = self._normalize(raw, update=True)
            done = term | trunc
            ended = self.episodes.add(rew, cost, done)
            if len(ended):
                end_buf[t] = done
                episodes += len(ended)
                for i in ended:
                    if trunc[i] and not term[i]:
                        last = (
                            final[i].astype(np.float32)  # copied: the critic sees it as is
                            if raw_bootstrap
                            else self.normalize(final[i : i + 1])[0]
                        )
                        trunc_rows.append((t, int(i), last))
        assert act_buf is not None
        self.total_steps += horizon * n
        self.total_episodes += episodes

        # Values in one batched forward: every stored obs, the next obs after the last step,
        # and the time-out final observations.
        flat_obs = obs_buf.reshape(horizon * n, -1)
        flat_act = act_buf.reshape(horizon * n, *act_buf.shape[2:])
        extra = [self._obs] + [row[2][None] for row in trunc_rows]
        v_r_all, v_c_all = algo.values(np.concatenate([flat_obs, *extra]))
        v_r, v_c = (
            v_r_all[: horizon * n].reshape(horizon, n),
            v_c_all[: horizon * n].reshape(horizon, n),
        )
        next_r = np.empty_like(v_r)
        next_c = np.empty_like(v_c)
        next_r[:-1], next_c[:-1] = v_r[1:], v_c[1:]
        next_r[-1] = v_r_all[horizon * n : horizon * n + n]
        next_c[-1] = v_c_all[horizon * n : horizon * n + n]
        for k, (t, i, _) in enumerate(trunc_rows):
            next_r[t, i] = v_r_all[horizon * n + n + k]
            next_c[t, i] = v_c_all[horizon * n + n + k]
        cfg = algo.config
        adv_r, ret_r = gae(rew_buf, v_r, next_r, term_buf, end_buf, cfg.gamma, cfg.lam)
        adv_c, ret_c = gae(cost_buf, v_c, next_c, term_buf, end_buf, cfg.cost_gamma, cfg.lam_c)
        stats = self.stats(episodes, steps=horizon * n)
        rollout = Rollout(
            obs=flat_obs,
            act=flat_act,
            logp=algo.log_prob(flat_obs, flat_act),
            adv_r=adv_r.reshape(-1),
            adv_c=adv_c.reshape(-1),
            target_r=ret_r.reshape(-1),
            target_c=ret_c.reshape(-1),
            ep_cost=stats.ep_cost,
            ep_ret=stats.ep_ret,
            ep_cost_epoch=(
                float(np.mean(self.episodes.snapshots)) if self.episodes.snapshots else math.nan
            ),
        )
        return rollout, stats

    def state_dict(self) -> dict[str, Any]:
        return {
            "venv": self.venv.state(),
            "normalizer": None if self.normalizer is None else self.normalizer.state_dict(),
            "rng": self.rng.bit_generator.state,
            **self.episodes.state_dict(),
            "totals": (self.total_steps, self.total_episodes),
            "obs": self._obs.copy(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raw = self.venv.restore(state["venv"])
        if self.normalizer is not None:
            self.normalizer.load_state_dict(state["normalizer"])
        self.rng.bit_generator.state = state["rng"]
        self.episodes.load_state_dict(state)
        self.total_steps, self.total_episodes = state["totals"]
        # The stored normalised obs is authoritative (it was computed with the statistics of
        # that moment); the replayed raw obs must agree with it.
        self._obs = state["obs"].copy()
        if self.normalizer is None and not np.array_equal(raw, self._obs):
            raise RuntimeError("environment replay diverged: the env is not deterministic")


def evaluate(
    algo: Any,
    venv: VectorCMDP,
    normalize: Any,
    episodes: int,
    seed: int,
    deterministic: bool = True,
    *,
    to_env: ActionMap,
    stream: int = 1,
) -> tuple[float, float, float]:
    """Mean undiscounted (return, cost, length) over ``episodes`` evaluation episodes.

    ``to_env``: what the env receives for the policy's action — the training collector's
    :class:`ActionMap`, so evaluation follows the same action protocol.

    Eval episodes use their own seed stream (``stream=1``; ``safebench eval`` uses 2), so
    they never coincide with training episodes, and the same seeds every evaluation, so
    evaluations are comparable. Each begins with a later reset of its env (``warm``: a
    fresh ``venv`` is reset once first), so every evaluation runs the same episodes, in a
    resumed process as in the first (an env's first reset can differ, see
    :mod:`safebench.envs.fastnav`).
    """
    rets: list[float] = []
    costs: list[float] = []
    lens: list[float] = []
    raw = venv.reset(seed, stream=stream, warm=True)
    n = venv.num_envs
    cur = np.zeros((n, 3))
    while len(rets) < episodes:
        action = algo.act(normalize(raw), deterministic=deterministic)
        raw, rew, cost, term, trunc, _ = venv.step(to_env(action))
        cur[:, 0] += rew
        cur[:, 1] += cost
        cur[:, 2] += 1
        for i in np.flatnonzero(term | trunc):
            rets.append(cur[i, 0])
            costs.append(cur[i, 1])
            lens.append(cur[i, 2])
            cur[i] = 0.0
    return (
        float(np.mean(rets[:episodes])),
        float(np.mean(costs[:episodes])),
        float(np.mean(lens[:episodes])),
    )
