"""Fixed-capacity ring buffer of transitions for off-policy methods (CVPO)."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

_FIELDS = ("obs", "act", "reward", "cost", "next_obs", "terminated", "goal_met")


class ReplayBuffer:
    """Transitions ``(s, a, r, c, s', terminated, goal_met)`` in preallocated float32 arrays.

    Storage shapes: ``obs``/``next_obs`` ``(capacity, obs_dim)``, ``act`` ``(capacity, act_dim)``,
    ``reward``/``cost``/``terminated``/``goal_met`` ``(capacity,)``; the two flags are stored as
    0.0/1.0 so that ``1 - flag`` can enter a TD target directly. Once full, the oldest
    transition is overwritten first. ``next_obs`` must be the true successor (the final
    observation at a time-out) and ``terminated`` only set for terminal states, so that
    truncated episodes still bootstrap. ``goal_met`` marks steps that reached a goal (the
    episode goes on; CVPO's reward backup treats them as terminal, its cost backup does not).
    """

    def __init__(self, obs_dim: int, act_dim: int, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.obs_dim = obs_dim
        self.act_dim = act_dim
        self.capacity = capacity
        self._data: dict[str, npt.NDArray[np.float32]] = {
            "obs": np.zeros((capacity, obs_dim), dtype=np.float32),
            "act": np.zeros((capacity, act_dim), dtype=np.float32),
            "reward": np.zeros(capacity, dtype=np.float32),
            "cost": np.zeros(capacity, dtype=np.float32),
            "next_obs": np.zeros((capacity, obs_dim), dtype=np.float32),
            "terminated": np.zeros(capacity, dtype=np.float32),
            "goal_met": np.zeros(capacity, dtype=np.float32),
        }
        self._ptr = 0  # next slot to write
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add_batch(
        self,
        obs: npt.ArrayLike,
        act: npt.ArrayLike,
        reward: npt.ArrayLike,
        cost: npt.ArrayLike,
        next_obs: npt.ArrayLike,
        terminated: npt.ArrayLike,
        goal_met: npt.ArrayLike | None = None,
    ) -> None:
        """Append one transition from each of ``N`` envs.

        Shapes: ``obs``/``next_obs`` ``(N, obs_dim)``, ``act`` ``(N, act_dim)``,
        ``reward``/``cost``/``terminated``/``goal_met`` ``(N,)`` (``goal_met`` None: all
        False). Rows are written in order, so with ``N > capacity`` only the last ``capacity``
        rows remain.
        """
        batch = {
            "obs": np.asarray(obs, dtype=np.float32).reshape(-1, self.obs_dim),
            "act": np.asarray(act, dtype=np.float32).reshape(-1, self.act_dim),
            "reward": np.asarray(reward, dtype=np.float32).reshape(-1),
            "cost": np.asarray(cost, dtype=np.float32).reshape(-1),
            "next_obs": np.asarray(next_obs, dtype=np.float32).reshape(-1, self.obs_dim),
            "terminated": np.asarray(terminated, dtype=np.float32).reshape(-1),
        }
        batch["goal_met"] = (
            np.zeros_like(batch["terminated"])
            if goal_met is None
            else np.asarray(goal_met, dtype=np.float32).reshape(-1)
        )
        n = batch["obs"].shape[0]
        for key, arr in batch.items():
            if arr.shape[0] != n:
                raise ValueError(f"{key} has {arr.shape[0]} rows, obs has {n}")
        start = 0
        if n > self.capacity:
            # Earlier rows would be overwritten within this very call. Writing only the survivors
            # keeps the slot indices unique: NumPy does not define which value wins when a fancy
            # assignment repeats an index.
            start = n - self.capacity
        idx = (self._ptr + np.arange(start, n)) % self.capacity
        for key, arr in batch.items():
            self._data[key][idx] = arr[start:]
        self._ptr = (self._ptr + n) % self.capacity
        self._size = min(self._size + n, self.capacity)

    def sample(
        self, batch_size: int, rng: np.random.Generator
    ) -> dict[str, npt.NDArray[np.float32]]:
        """``batch_size`` transitions drawn uniformly with replacement (copies, not views)."""
        if self._size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        idx = rng.integers(0, self._size, size=batch_size)
        return {key: arr[idx] for key, arr in self._data.items()}

    def state_dict(self) -> dict[str, Any]:
        """Contents and write position; arrays are copies of the filled part only."""
        state: dict[str, Any] = {
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
            "capacity": self.capacity,
            "ptr": self._ptr,
            "size": self._size,
        }
        # Until the buffer wraps, the filled slots are exactly [0, size).
        for key in _FIELDS:
            state[key] = self._data[key][: self._size].copy()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        dims = (state["obs_dim"], state["act_dim"], state["capacity"])
        if dims != (self.obs_dim, self.act_dim, self.capacity):
            raise ValueError(
                f"state is for (obs_dim, act_dim, capacity) = {dims}, buffer has "
                f"{(self.obs_dim, self.act_dim, self.capacity)}"
            )
        size = int(state["size"])
        for key in _FIELDS:
            self._data[key][:] = 0.0
            # checkpoints written before goal_met was stored hold no goal steps
            self._data[key][:size] = state.get(key, 0.0)
        self._ptr = int(state["ptr"])
        self._size = size
