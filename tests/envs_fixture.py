"""Small custom environments used by the env-factory tests (imported as module:Class)."""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np


class _Base(gymnasium.Env):
    """A 1-D walk: reward = action, cost = 1 when |position| > 1; 10-step episodes."""

    def __init__(self, length: int = 10) -> None:
        self.observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (1,), np.float32)
        self.action_space = gymnasium.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.length = length
        self.pos = 0.0
        self.t = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        super().reset(seed=seed)
        self.pos, self.t = 0.0, 0
        return np.array([self.pos], np.float32), {}

    def _advance(self, action: Any) -> tuple[np.ndarray, float, float, bool]:
        a = float(np.clip(np.asarray(action).reshape(-1)[0], -1, 1))
        self.pos += a
        self.t += 1
        return np.array([self.pos], np.float32), a, float(abs(self.pos) > 1), self.t >= self.length


class SixTupleWalk(_Base):
    """Safety-Gymnasium step API: (obs, reward, cost, terminated, truncated, info)."""

    def step(self, action: Any) -> Any:
        obs, r, c, trunc = self._advance(action)
        return obs, r, c, False, trunc, {}


class FiveTupleWalk(_Base):
    """Gymnasium step API with the cost in info['cost']."""

    def step(self, action: Any) -> Any:
        obs, r, c, trunc = self._advance(action)
        return obs, r, False, trunc, {"cost": c}


class NoCostWalk(_Base):
    """Gymnasium step API that never reports a cost."""

    def step(self, action: Any) -> Any:
        obs, r, _, trunc = self._advance(action)
        return obs, r, False, trunc, {}


class NotAnEnv:
    """Has no step/reset/spaces."""


class ControlCost(gymnasium.Env):
    """One-step episodes charging a velocity-task style control cost on the *received* action.

    reward = -a², cost = 1 when |a| > 1: the cost tells whether an out-of-box action arrived.
    """

    def __init__(self) -> None:
        self.observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (1,), np.float32)
        self.action_space = gymnasium.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {}

    def step(self, action: Any) -> Any:
        a = float(np.asarray(action).reshape(-1)[0])
        return np.zeros(1, np.float32), -(a**2), float(abs(a) > 1), False, True, {}


class GoalWalk(gymnasium.Env):
    """Reports Safety-Gymnasium style ``info['goal_met']`` every third step (the episode goes
    on); an episode drawn to end early terminates after step 7, any other is truncated after
    step 8. Observation ``(t, ends early)``; reward 1 and cost 0.5 per step."""

    def __init__(self) -> None:
        self.observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = gymnasium.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.t = 0
        self.early = False

    def _obs(self) -> np.ndarray:
        return np.array([self.t, float(self.early)], np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        super().reset(seed=seed)
        self.t = 0
        self.early = bool(self.np_random.random() < 0.5)
        return self._obs(), {}

    def step(self, action: Any) -> Any:
        self.t += 1
        info = {"goal_met": True} if self.t % 3 == 0 else {}
        terminated = self.early and self.t == 7
        truncated = not self.early and self.t == 8
        return self._obs(), 1.0, 0.5, terminated, truncated, info
