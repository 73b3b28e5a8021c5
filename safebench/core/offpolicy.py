"""The off-policy machinery: shared config, algorithm base class and the collection loop.

An off-policy run interleaves env steps and gradient updates on a replay buffer. The schedule
is the one of the official CVPO runner (``liuzuxin/cvpo-safe-rl`` ``runner.py``,
``off_policy_worker.py``; docs/algorithms.md#cvpo-training-schedule), expressed in env steps
so that it does not depend on the runner's epoch length:

    warm-up:  the first ``warmup_steps`` env steps take uniformly random actions; when they are
              done, ``warmup_steps // 2`` updates run.
    rounds:   after the warm-up, every ``sample_episode_num × T`` env steps (T = episode
              length; the official code collects 20 episodes of exactly T steps per epoch)
              one round of ``episode_rerun_num · n // batch_size`` updates runs, n being the
              env steps collected since the previous round.

The update-to-data ratio is therefore ``episode_rerun_num / batch_size`` gradient updates per
env step (official: 40 / 300 ≈ 0.133, i.e. 1066 updates per 8000-step epoch), each on
``batch_size`` transitions drawn uniformly with replacement, so every transition is replayed
``episode_rerun_num`` times in expectation. Warm-up steps count towards the run's budget
(the official runner does not count them in ``TotalEnvInteracts``).

:class:`OffPolicyCollector` hands the runner one :class:`Replay` round at a time (the
transitions collected until the next round is due, and the number of updates owed for them),
and ``OffPolicyAlgorithm.update`` runs that round's updates: the runner's loop is the same for
both kinds. The collector owns the replay buffer, so a checkpoint of the collector holds
everything the future of the run depends on: with ``checkpoint_replay=True`` (default) a
resumed run is bit-identical to an uninterrupted one. ``checkpoint_replay=False`` keeps
checkpoints small (a full official buffer of a 60-dimensional task is ~40 MB) at the price of
an **inexact** resume: the buffer restarts empty and the next update round waits for a full
round of fresh steps.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium
import numpy as np
import torch
from pydantic import Field
from torch import nn

from safebench.core.base import AlgoConfig, Algorithm, EnvProtocol
from safebench.core.replay import ReplayBuffer
from safebench.core.rollout import Collector, EpisodeStats
from safebench.envs.factory import VectorCMDP
from safebench.errors import UserError

__all__ = [
    "OffPolicyAlgorithm",
    "OffPolicyCollector",
    "OffPolicyConfig",
    "Replay",
    "episode_length",
    "polyak_update",
]


class OffPolicyConfig(AlgoConfig):
    """Settings every off-policy algorithm shares (official CVPO ``config_cvpo.yaml``)."""

    obs_normalize: bool = Field(
        False,
        description="[H] official CVPO code feeds raw observations (no normaliser); with True the "
        "buffer stores observations normalised with the statistics of their collection time",
    )
    gamma: float = Field(0.99, gt=0, lt=1, description="[H] config_cvpo.yaml cvpo.gamma")
    batch_size: int = Field(
        300, ge=1, description="[H] config_cvpo.yaml cvpo.worker_config.batch_size"
    )
    buffer_size: int = Field(
        80_000, ge=1, description="[H] config_cvpo.yaml cvpo.worker_config.buffer_size"
    )
    warmup_steps: int = Field(
        0,
        ge=0,
        description="[H] config_cvpo.yaml worker_config.warmup_steps: 0 (the paper's Ray scripts "
        "button.py/goal.py use 4000, circle.py 2000); warmup_steps // 2 updates follow it",
    )
    sample_episode_num: int = Field(
        20,
        ge=1,
        description="[H] config_cvpo.yaml sample_episode_num: an update round every this many "
        "episode lengths of env steps",
    )
    episode_rerun_num: float = Field(
        40.0,
        gt=0,
        description="[H] config_cvpo.yaml episode_rerun_num: a round of n new env steps runs "
        "episode_rerun_num·n // batch_size updates",
    )
    checkpoint_replay: bool = Field(
        True,
        description="[L] store the replay buffer in checkpoints (exact resume); False = smaller "
        "checkpoints, the buffer restarts empty on resume (resume is then NOT exact)",
    )
    ep_cost_window: int = Field(
        100, ge=1, description="[L] episodes in the Ĵc / EpRet window (safebench convention)"
    )
    clip_actions: bool = Field(
        False,
        description="[H] official CVPO off_policy_worker.py work(): env.step(action) with the "
        "policy's sample as is (the buffer keeps the same sample); its Safety-Gym engine.py "
        "clips into the actuators (np.clip(action, actuator_ctrlrange)), as Safety-Gymnasium "
        "does. Unclipped is also every on-policy method's protocol (OmniSafe ActionScale), so "
        "velocity tasks, which charge ctrl_cost on the received action, give every algorithm "
        "the same reward. true clips to the box first (training and evaluation)",
    )
    goal_met_terminal: bool = Field(
        True,
        description="[H] official off_policy_worker.py work(): done = True if info['goal_met'] "
        "(after clearing done at the time-out), and only the reward backup reads done "
        "(cvpo.py _update_critic; _update_qc ignores it): a step that reaches a goal ends the "
        "reward bootstrap, the episode and the cost bootstrap go on. Needs the env's "
        "info['goal_met'] (Safety-Gymnasium Goal/Button/Push tasks); no effect elsewhere",
    )
    timeout_steps: int | None = Field(
        None,
        ge=1,
        description="[H] official timeout_steps (400 in config_cvpo.yaml) = the env's fixed "
        "episode length T; None = the env's max_episode_steps",
    )

    def protocol(self) -> EnvProtocol:
        """The actor acts in the env's box (nothing to rescale); observations through
        OmniSafe's normaliser where ``obs_normalize``; time-outs bootstrap inside the update
        from the stored next observation (the replay buffer's own), as normalised."""
        return EnvProtocol(
            action_scale=False,
            clip_actions=self.clip_actions,
            normalize_obs=self.obs_normalize,
            obs_normalizer="omnisafe",
            truncation_bootstrap="normalized",
            ep_cost_window=self.ep_cost_window,
        )


def polyak_update(target: nn.Module, source: nn.Module, polyak: float) -> None:
    """``p̄ ← polyak·p̄ + (1 − polyak)·p`` for every parameter (in place, no autograd)."""
    with torch.no_grad():
        for p_targ, p in zip(target.parameters(), source.parameters(), strict=True):
            p_targ.mul_(polyak).add_(p, alpha=1.0 - polyak)


def episode_length(venv: VectorCMDP) -> int | None:
    """The fixed episode length (``max_episode_steps``) of a vector env's members, if known."""
    envs: Sequence[Any] = getattr(venv, "envs", ())
    steps = getattr(envs[0], "max_episode_steps", None) if envs else None
    return int(steps) if steps else None


@dataclass(frozen=True)
class Replay:
    """One update round for :meth:`OffPolicyAlgorithm.update`: the buffer and the updates owed.

    ``updates`` is 0 for a round that only collected (the end of an epoch before the next
    round is due).
    """

    buffer: ReplayBuffer
    updates: int


class OffPolicyAlgorithm(Algorithm):
    """Base of off-policy algorithms: ``update(Replay)`` runs a round of gradient updates.

    Subclasses provide :meth:`explore` (actions for data collection, sampled with the
    collector's RNG so that the collector's checkpoint covers them), :meth:`act`,
    :meth:`update_step` (ONE gradient update) and the state dicts. The base class holds the
    minibatch RNG and the episode length.
    """

    kind = "off-policy"
    config: OffPolicyConfig

    def _build(self) -> None:
        if not isinstance(self.action_space, gymnasium.spaces.Box):
            raise UserError(
                f"{type(self).__name__} needs a continuous (Box) action space, "
                f"got {self.action_space}"
            )
        self.act_dim = int(np.prod(self.action_space.shape or (1,)))
        # Network initialisation draws from torch's global RNG: seed it so a run's initial
        # weights depend on its seed only.
        torch.manual_seed(self.seed)
        # Minibatch indices: an own generator, checkpointed with the algorithm.
        self.rng = np.random.default_rng(np.random.SeedSequence([self.seed, 13]))
        self._episode_length = self.config.timeout_steps

    @property
    def episode_length(self) -> int:
        """T, the env's fixed episode length (config ``timeout_steps`` or the env's)."""
        if self._episode_length is None:
            raise UserError(
                f"{type(self).__name__} needs the episode length: the environment does not "
                "declare max_episode_steps, so set the config key timeout_steps"
            )
        return self._episode_length

    def set_episode_length(self, steps: int | None) -> None:
        """Called by the collector with the env's episode length; the config value wins."""
        if self.config.timeout_steps is None and steps is not None:
            self._episode_length = int(steps)

    def updates_for(self, new_steps: int) -> int:
        """Gradient updates owed for ``new_steps`` env steps: ``rerun·n // batch_size``."""
        cfg = self.config
        return int(cfg.episode_rerun_num * new_steps // cfg.batch_size)

    @abstractmethod
    def explore(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Exploration actions ``(N, act_dim)`` for data collection, drawn with ``rng``."""

    @abstractmethod
    def update_step(self, data: ReplayBuffer) -> dict[str, float]:
        """One gradient update on a minibatch of ``data``; returns diagnostics."""

    def update(self, data: Replay) -> dict[str, float]:
        """``data.updates`` gradient updates; the mean of each diagnostic and ``updates``."""
        sums: dict[str, float] = {}
        for _ in range(data.updates):
            for key, value in self.update_step(data.buffer).items():
                sums[key] = sums.get(key, 0.0) + value
        n = data.updates
        return {**{k: v / n for k, v in sums.items()}, "updates": float(n)}

    def epoch_info(self, infos: list[dict[str, float]]) -> dict[str, float]:
        """The mean of each diagnostic over the epoch's updates (weighted by each round's
        count) and ``updates``, their number; :meth:`diagnostics` when there were none."""
        total = sum(info["updates"] for info in infos)
        if total == 0:
            return {**self.diagnostics(), "updates": 0.0}
        out: dict[str, float] = {}
        for info in infos:
            weight = info["updates"] / total
            for key, value in info.items():
                if key != "updates":
                    out[key] = out.get(key, 0.0) + weight * value
        out["updates"] = float(total)
        return out

    def diagnostics(self) -> dict[str, float]:
        """State worth logging in an epoch without updates (multipliers etc.)."""
        return {}


class OffPolicyCollector(Collector):
    """Env steps into the replay buffer, handed out one update round at a time.

    Reuses :class:`~safebench.core.rollout.Collector` for the env, observation normaliser,
    exploration RNG and episode accounting, and adds the buffer and the update schedule to
    its state. Transitions are stored as ``(s, a, r, c, s', terminated, goal_met)`` with ``s'``
    the final observation at an episode end, ``terminated`` only for true terminations, so
    time-outs are never treated as terminal, and ``goal_met`` the env's ``info['goal_met']``
    (tracked when the config's ``goal_met_terminal``; the episode goes on after a goal).
    """

    def __init__(
        self,
        venv: VectorCMDP,
        seed: int,
        algo: OffPolicyAlgorithm,
        *,
        normalize_obs: bool = False,
        window: int = 100,
        clip_actions: bool = False,
    ) -> None:
        super().__init__(
            venv, seed, normalize_obs=normalize_obs, window=window, clip_actions=clip_actions
        )
        algo.set_episode_length(episode_length(venv))
        if algo.config.goal_met_terminal:
            venv.track_info_flags(("goal_met",))
        self.keep_replay = algo.config.checkpoint_replay
        self.buffer = ReplayBuffer(algo.obs_dim, algo.act_dim, algo.config.buffer_size)
        space = algo.action_space
        assert isinstance(space, gymnasium.spaces.Box)  # checked by OffPolicyAlgorithm
        self._box = (space.low.astype(np.float32), space.high.astype(np.float32))
        self.since_update = 0  # env steps after the warm-up not yet paid for by updates

    def _explore(self, algo: OffPolicyAlgorithm, obs: np.ndarray) -> np.ndarray:
        if self.total_steps < algo.config.warmup_steps:
            # Uniform over the action box, as gym's action_space.sample() in the official code.
            low, high = self._box
            shape = (self.num_envs, algo.act_dim)
            return self.rng.uniform(low.reshape(-1), high.reshape(-1), shape).astype(np.float32)
        return algo.explore(obs, self.rng)

    def _updates_due(self, algo: OffPolicyAlgorithm, before: int) -> int:
        """Updates owed after the vector step that took the run from ``before`` env steps to
        ``total_steps`` (the official schedule, module docstring); 0 while none is due."""
        cfg = algo.config
        if before < cfg.warmup_steps:
            return cfg.warmup_steps // 2 if self.total_steps >= cfg.warmup_steps else 0
        self.since_update += self.num_envs
        if self.since_update < cfg.sample_episode_num * algo.episode_length:
            return 0
        due = algo.updates_for(self.since_update)
        self.since_update = 0
        return due

    def collect(  # type: ignore[override]
        self, algo: OffPolicyAlgorithm, steps: int
    ) -> tuple[Replay, EpisodeStats]:
        """Env steps into the buffer until an update round is due, at most ``steps`` in total
        (``max(1, steps // num_envs)`` vector steps); the round and the episode statistics.

        The stored action is the sampled one; the env gets it as is (the official worker's
        behaviour), or clipped to its box when ``clip_actions``. The actor's mean lies in the
        box by construction, so there is no [-1, 1] rescaling off-policy.
        """
        episodes = vector_steps = due = 0
        for _ in range(max(1, steps // self.num_envs)):
            obs = self._obs
            action = self._explore(algo, obs)
            raw, rew, cost, term, trunc, final = self.venv.step(self.action_map(action))
            goal_met = self.venv.info_flags.get("goal_met")
            next_obs = self._normalize(raw, update=True)
            done = term | trunc
            successor = next_obs.copy()
            for i in np.flatnonzero(done):
                successor[i] = self.normalize(final[i : i + 1])[0]
            self.buffer.add_batch(obs, action, rew, cost, successor, term, goal_met)
            episodes += len(self.episodes.add(rew, cost, done))
            self._obs = next_obs
            before = self.total_steps
            self.total_steps += self.num_envs
            vector_steps += 1
            due = self._updates_due(algo, before)
            if due:
                break
        self.total_episodes += episodes
        stats = self.stats(episodes, steps=vector_steps * self.num_envs)
        return Replay(self.buffer, due), stats

    def diagnostics(self) -> dict[str, float]:
        return {"buffer": float(len(self.buffer))}

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["replay"] = self.buffer.state_dict() if self.keep_replay else None
        state["since_update"] = self.since_update
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if state["replay"] is not None:
            self.buffer.load_state_dict(state["replay"])
            self.since_update = int(state["since_update"])
        else:
            # No stored transitions: start a fresh round so the next updates sample from a
            # round's worth of new data rather than from the few steps collected so far.
            self.buffer = ReplayBuffer(
                self.buffer.obs_dim, self.buffer.act_dim, self.buffer.capacity
            )
            self.since_update = 0
