"""Layer 2: write a new layout into an already-compiled ``MjModel`` instead of recompiling it.

Stock Safety-Gymnasium turns every layout into an XML document and compiles a new model on
every reset. Between two layouts of one task only the placements change (the agent's and every
object's x, y and heading), so :class:`LayoutWriter` writes exactly the model fields the
compiler derives from them:

* static bodies (hazards, buttons, pillars, goal, sigwalls, circle): ``body_pos``/``body_quat``;
  bodies without mass (goal, circle, sigwalls: their geom groups are outside MuJoCo's
  inertia group range) also carry their pose in ``body_ipos``/``body_iquat``, a compiler quirk
  reproduced here;
* free bodies (vases, push box, gremlin boxes, Car/Racecar/Doggo/Ant agents): the same plus
  ``qpos0`` and ``qpos_spring`` of their free joint, the initial state MuJoCo starts from;
* the Point agent (slide/slide/hinge joints): heading and position through its body pose;
* gremlins' mocap bodies sit at the origin; their geom carries the pose (``geom_pos``/
  ``geom_quat``, mirrored into the body's inertial frame), and the weld constraint that ties
  each one to its box stores the box's pose relative to it in ``eq_data``.

Everything derived from those (``dof_M0``, ``actuator_acc0``, inverse weights, the mean
inertia the solver scales its tolerance with, ...) is recomputed by ``mj_setConst``. Cameras
are not written: their poses matter only for rendering, and any ``render_mode`` takes the
stock path.

The compiler normalises every quaternion it reads (``q / sqrt(sum q_i^2)``); the same
arithmetic is done here so that the written values are the compiler's bits. Whether they are
is not assumed: :meth:`LayoutWriter.verify` checks every written field against the model the
compiler produced for the first layout, and the fast path falls back to full rebuilds when it
does not match (a MuJoCo build with different floating-point contraction, say).

Layouts this writer does not handle, each answered with a full rebuild (``None`` from
:meth:`LayoutWriter.create`, or ``False`` from :meth:`LayoutWriter.matches`), per task family:

* Goal, Button, Push, Circle (levels 0-2) and Run0, with Point, Car, Racecar, Doggo and Ant
  agents: written in place on every reset after the first; a rebuild only after a
  **config change** (a world config that differs from the compiled one in anything but
  positions and headings: objects added or removed, sizes, colours, floor), after which the
  new model is written in place again;
* any task with **mesh objects** (``type: mesh``: the ``is_meshed`` variants of goal, hazards,
  apples, oranges), whose pose is given as Euler angles: a rebuild on every reset;
* the Race tasks' **yaml-defined static geoms** (``configs/race.yaml`` scenery, meshes on a
  village floor): a rebuild on every reset. (safebench lists no Race or vision ids, and
  :func:`safebench.envs.fastnav.supports` sends them to stock anyway.)
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import mujoco
import numpy as np

__all__ = ["LayoutWriter"]

# Per-layout entries of a world config: everything else must stay as compiled.
_LAYOUT_KEYS = frozenset({"pos", "rot"})
_FREE = int(mujoco.mjtJoint.mjJNT_FREE)
_WELD = int(mujoco.mjtEq.mjEQ_WELD)


def compiler_quat(theta: float) -> tuple[float, float, float, float]:
    """``rot2quat(theta)`` as the MuJoCo compiler stores it (normalised).

    Safety-Gymnasium writes ``[cos(t/2), 0, 0, sin(t/2)]`` with ``str()`` (a lossless round
    trip for doubles); the compiler divides by the Euclidean norm, summed in index order.
    """
    w = float(np.cos(theta / 2))
    z = float(np.sin(theta / 2))
    norm = math.sqrt(w * w + 0.0 + 0.0 + z * z)
    return (w / norm, 0.0 / norm, 0.0 / norm, z / norm)


@dataclass(frozen=True)
class _Placed:
    """One placed thing: where its pose goes in the model."""

    name: str  # config key ('agent' for the agent)
    body: int
    geom: int  # mocap geoms carry the pose; -1 otherwise
    qposadr: int  # free joint's qpos address; -1 if none
    massless: bool  # ipos/iquat mirror the body pose
    weld: int  # weld (mocap -> box) whose relative pose must follow; -1 if none


def _signature(value: Any) -> Any:
    """A comparable, hashable form of a world config without its per-layout entries."""
    if isinstance(value, dict):
        return tuple(
            (k, _signature(v))
            for k, v in sorted(value.items())
            if k not in _LAYOUT_KEYS and k not in ("agent_xy", "agent_rot")
        )
    if isinstance(value, np.ndarray):
        return ("array", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, list | tuple):
        return tuple(_signature(v) for v in value)
    return value


def _has_mesh(config: dict[str, Any]) -> bool:
    groups = ("geoms", "free_geoms", "mocaps")
    return any(obj.get("type") == "mesh" for g in groups for obj in config[g].values())


class LayoutWriter:
    """Writes the placements of one world config into the model compiled for its structure."""

    def __init__(self, model: mujoco.MjModel, config: dict[str, Any], z_height: float) -> None:
        self.model = model
        self.z_height = float(z_height)
        self.signature = _signature(config)
        self.placed = list(self._index(model, config))

    @classmethod
    def create(
        cls, model: mujoco.MjModel, config: dict[str, Any], z_height: float
    ) -> LayoutWriter | None:
        """A writer for ``model`` (compiled from ``config``), or None where layouts need XML."""
        if _has_mesh(config):
            return None
        writer = cls(model, config, z_height)
        return writer if writer.verify(config) else None

    @staticmethod
    def _index(model: mujoco.MjModel, config: dict[str, Any]) -> Iterator[_Placed]:
        welds = {int(model.eq_obj1id[i]): i for i in range(model.neq) if model.eq_type[i] == _WELD}
        names = ["agent", *config["geoms"], *config["free_geoms"], *config["mocaps"]]
        mocaps = set(config["mocaps"])
        for name in names:
            body = model.body(name).id
            jnt = int(model.body_jntadr[body])
            free = model.body_jntnum[body] == 1 and model.jnt_type[jnt] == _FREE
            yield _Placed(
                name=name,
                body=body,
                geom=model.geom(name).id if name in mocaps else -1,
                qposadr=int(model.jnt_qposadr[jnt]) if free else -1,
                massless=bool(model.body_mass[body] == 0.0),
                weld=welds.get(body, -1) if name in mocaps else -1,
            )

    def matches(self, config: dict[str, Any]) -> bool:
        """Whether ``config`` differs from the compiled one in placements only."""
        return _signature(config) == self.signature

    def _poses(self, config: dict[str, Any]) -> Iterator[tuple[_Placed, np.ndarray, tuple]]:
        groups = {**config["geoms"], **config["free_geoms"], **config["mocaps"]}
        for placed in self.placed:
            if placed.name == "agent":
                xy = config["agent_xy"]
                pos = np.array([xy[0], xy[1], self.z_height], dtype=np.float64)
                yield placed, pos, compiler_quat(config["agent_rot"])
            else:
                obj = groups[placed.name]
                pos = np.asarray(obj["pos"], dtype=np.float64)
                yield placed, pos, compiler_quat(obj["rot"])

    def write(self, config: dict[str, Any]) -> None:
        """Write ``config``'s placements into the model (then ``mj_setConst`` is due)."""
        m = self.model
        for placed, pos, quat in self._poses(config):
            if placed.geom >= 0:  # mocap: the geom carries the pose, the body stays at 0
                m.geom_pos[placed.geom] = pos
                m.geom_quat[placed.geom] = quat
                m.body_ipos[placed.body] = pos
                m.body_iquat[placed.body] = quat
                continue
            m.body_pos[placed.body] = pos
            m.body_quat[placed.body] = quat
            if placed.massless:
                m.body_ipos[placed.body] = pos
                m.body_iquat[placed.body] = quat
            if placed.qposadr >= 0:
                adr = placed.qposadr
                m.qpos0[adr : adr + 3] = pos
                m.qpos0[adr + 3 : adr + 7] = quat
                m.qpos_spring[adr : adr + 7] = m.qpos0[adr : adr + 7]
        self._write_welds()

    def _write_welds(self) -> None:
        """Each weld's ``relpose``: body2's compiled pose in body1's frame (mocap -> box)."""
        m = self.model
        for placed in self.placed:
            if placed.weld < 0:
                continue
            eq = placed.weld
            b1, b2 = int(m.eq_obj1id[eq]), int(m.eq_obj2id[eq])
            neg = np.empty(4)
            mujoco.mju_negQuat(neg, m.body_quat[b1])
            rel = np.empty(3)
            mujoco.mju_rotVecQuat(rel, m.body_pos[b2] - m.body_pos[b1], neg)
            quat = np.empty(4)
            mujoco.mju_mulQuat(quat, neg, m.body_quat[b2])
            m.eq_data[eq, 3:6] = rel
            m.eq_data[eq, 6:10] = quat

    def verify(self, config: dict[str, Any]) -> bool:
        """Whether writing ``config`` reproduces the compiler's bits for the compiled layout."""
        m = self.model
        fields = ("body_pos", "body_quat", "body_ipos", "body_iquat", "geom_pos", "geom_quat")
        saved = {f: getattr(m, f).copy() for f in (*fields, "qpos0", "qpos_spring", "eq_data")}
        try:
            self.write(config)
            return all(np.array_equal(getattr(m, f), v) for f, v in saved.items())
        finally:
            for f, v in saved.items():
                getattr(m, f)[:] = v
