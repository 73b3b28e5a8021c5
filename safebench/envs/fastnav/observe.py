"""The flat observation of a navigation task, assembled the stock way without the stock detours.

:class:`ObsPlan` resolves once per compiled model where every entry of the stock observation
dict lands in the flat vector (``gymnasium.spaces.utils.flatten`` concatenates the entries in
the observation space's order) and which sensor rows it copies. :func:`pseudo_lidar` is stock
``BaseTask._obs_lidar_pseudo`` with the agent pose read once and each position's arithmetic
unchanged: the same ``np.matmul`` of a fresh 3-vector by the agent's rotation, the same
``np.abs``/``np.angle`` of the same complex number, the same binning and aliasing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from safebench.envs.fastnav.step import _Ids

__all__ = ["ObsPlan", "pseudo_lidar"]


def pseudo_lidar(
    positions: np.ndarray, agent_pos: np.ndarray, agent_mat: np.ndarray, conf: Any
) -> np.ndarray:
    """Stock pseudo-lidar of ``positions`` (rows: x, y[, z]) seen from the agent's pose."""
    num_bins = conf.num_bins
    max_dist, exp_gain, alias_on = conf.max_dist, conf.exp_gain, conf.alias
    obs = [0.0] * num_bins  # no negative zeros arise, so a list holds the same values
    ax, ay, az = agent_pos.tolist()
    bin_size = (np.pi * 2) / num_bins
    for row in positions.tolist():
        # stock _ego_xy: concatenate([pos[:2], [0]]) - agent, then matmul by the rotation
        ego = np.matmul(np.array([row[0] - ax, row[1] - ay, 0.0 - az]), agent_mat).tolist()
        z = complex(ego[0], ego[1])
        dist = np.abs(z)
        angle = np.angle(z) % (np.pi * 2)
        bin_ = int(angle / bin_size)
        bin_angle = bin_size * bin_
        if max_dist is None:
            sensor = np.exp(-exp_gain * dist)
        else:
            sensor = max(0, max_dist - dist) / max_dist
        obs[bin_] = max(obs[bin_], sensor)
        if alias_on:
            alias = (angle - bin_angle) / bin_size
            assert 0 <= alias <= 1, f"bad alias {alias}, dist {dist}, angle {angle}, bin {bin_}"
            bin_plus = (bin_ + 1) % num_bins
            bin_minus = (bin_ - 1) % num_bins
            obs[bin_plus] = max(obs[bin_plus], alias * sensor)
            obs[bin_minus] = max(obs[bin_minus], (1 - alias) * sensor)
    return np.array(obs, dtype=np.float64)


@dataclass
class ObsPlan:
    """Where each stock observation entry goes in the flat vector, resolved once per model."""

    supported: bool
    size: int = 0
    # (flat slice, sensordata start, length): sensors copied as they are
    copies: list[tuple[slice, int, int]] = field(default_factory=list)
    hinges: list[tuple[slice, int]] = field(default_factory=list)  # -> [sin, cos]
    ballquats: list[tuple[slice, int]] = field(default_factory=list)  # -> 3x3 matrix
    # (obstacle, lidar slice or None, compass slice or None), in obstacle order
    objects: list[tuple[Any, slice | None, slice | None]] = field(default_factory=list)
    low: np.ndarray = field(default_factory=lambda: np.empty(0))
    high: np.ndarray = field(default_factory=lambda: np.empty(0))

    @classmethod
    def create(cls, task: Any, ids: _Ids) -> ObsPlan:
        """The plan for ``task``'s current model, or an unsupported one (stock ``obs`` runs)."""
        agent = task.agent
        if not (
            task.observation_flatten
            and not task.observe_vision
            and task.lidar_conf.type == "pseudo"
            and agent.sensor_conf.sensors_angle_components
        ):
            return cls(supported=False)
        space = task.obs_info.obs_space_dict.spaces
        offsets, start = {}, 0
        for key, box in space.items():
            size = int(np.prod(box.shape))
            offsets[key] = slice(start, start + size)
            start += size
        plan = cls(supported=True, size=start)
        plan._add_sensors(task, offsets)
        for obstacle in task._obstacles:
            lidar = offsets.get(f"{obstacle.name}_lidar") if obstacle.is_lidar_observed else None
            comp_on = getattr(obstacle, "is_comp_observed", False)
            comp = offsets.get(f"{obstacle.name}_comp") if comp_on else None
            if lidar is not None or comp is not None:
                plan.objects.append((obstacle, lidar, comp))
        plan.low = np.concatenate([np.asarray(b.low, np.float64).ravel() for b in space.values()])
        plan.high = np.concatenate([np.asarray(b.high, np.float64).ravel() for b in space.values()])
        return plan

    def _add_sensors(self, task: Any, offsets: dict[str, slice]) -> None:
        """Stock ``BaseAgent.obs_sensor``: later lists overwrite earlier keys, as in a dict."""
        agent, model = task.agent, task.model
        info = agent.sensor_info
        entries: dict[str, tuple[str, int, int]] = {}  # key -> (kind, start, length)

        def adr(name: str) -> tuple[int, int]:
            sid = model.sensor(name).id
            return int(model.sensor_adr[sid]), int(model.sensor_dim[sid])

        plain = [*agent.sensor_conf.sensors, *info.hinge_vel_names, *info.ballangvel_names]
        for name in plain:
            entries[name] = ("copy", *adr(name))
        if info.freejoint_pos_name:
            a, d = adr(info.freejoint_pos_name)
            entries[info.freejoint_pos_name] = ("copy", a + 2, d - 2)  # stock: [2:]
        if info.freejoint_qvel_name:
            entries[info.freejoint_qvel_name] = ("copy", *adr(info.freejoint_qvel_name))
        for name in info.hinge_pos_names:
            entries[name] = ("hinge", *adr(name))
        for name in info.ballquat_names:
            entries[name] = ("ballquat", *adr(name))
        for key, (kind, start, length) in entries.items():
            if kind == "copy":
                self.copies.append((offsets[key], start, length))
            elif kind == "hinge":
                self.hinges.append((offsets[key], start))
            else:
                self.ballquats.append((offsets[key], start))

    def write_sensors(self, sensordata: np.ndarray, out: np.ndarray) -> None:
        for dst, start, length in self.copies:
            out[dst] = sensordata[start : start + length]
        for dst, start in self.hinges:
            theta = float(sensordata[start])  # stock: float() of the 1-element reading
            out[dst] = np.array([np.sin(theta), np.cos(theta)])
        if self.ballquats:
            from safety_gymnasium.utils.task_utils import quat2mat  # stock's conversion

            for dst, start in self.ballquats:
                out[dst] = quat2mat(sensordata[start : start + 4].copy()).ravel()

    def check(self, flat: np.ndarray) -> None:
        """Stock's per-step ``obs_space_dict.contains`` assert, on the flat vector."""
        if not (bool(np.all(flat >= self.low)) and bool(np.all(flat <= self.high))):
            raise AssertionError(f"Bad obs {flat} (outside the observation space)")
