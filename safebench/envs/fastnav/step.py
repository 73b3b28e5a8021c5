"""Layer 4: the per-step observation, cost and goal-distance code without its Python overhead.

Most of a stock navigation step is not physics but Python around it: every position is fetched
by name (``data.body('hazard3')``), every contact's geoms are named and sorted to test prefixes,
and the observation dict is checked against its ``gymnasium.spaces.Dict`` on every step.
:class:`FastStepMixin` keeps every floating-point operation of the stock code, in the same
order and through the same NumPy/MuJoCo calls on the same shapes, and removes the rest:

* body, geom and sensor ids are looked up once per compiled model, not by name per step;
* contact costs test precomputed per-geom categories (the same name tests, done once);
* the flat observation is written straight into one array in the observation space's order,
  and the per-step ``obs_space.contains`` assert becomes the equivalent bounds check on that
  array (same failure: an ``AssertionError``, e.g. on NaN);
* the pseudo-lidar reads all positions of a group in one gather and the agent's pose once.

Where a task or config is outside what this reproduces (natural lidar, no flattening, vision,
unknown obstacle types' costs, static-geom costs, raw-angle sensors), the stock method runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, Any

import mujoco
import numpy as np

from safebench.envs.fastnav.observe import ObsPlan, pseudo_lidar

__all__ = ["FastStepMixin"]


class _Ids:
    """Name -> id tables of one compiled model, and per-geom contact categories."""

    def __init__(self, model: mujoco.MjModel, agent_geom_names: list[str]) -> None:
        self.model = model
        self.body = {model.body(i).name: i for i in range(model.nbody)}
        names = [model.geom(i).name for i in range(model.ngeom)]
        self.geom = {n: i for i, n in enumerate(names)}
        self.geom_names = names
        # stock: ``n in self.agent.body_info.geom_names`` for each contact geom name
        self.agent_geom = [n in agent_geom_names for n in names]
        self.agent_body = self.body["agent"]
        self._prefix: dict[str, list[bool]] = {}
        self._bodies: dict[tuple[str, int], list[int]] = {}
        self.moves: list[Any] | None = None  # the mocaps' per-physics-step moves

    def prefix(self, prefix: str) -> list[bool]:
        """Per geom: whether its name starts with ``prefix`` (stock's ``n.startswith``)."""
        kind = self._prefix.get(prefix)
        if kind is None:
            kind = self._prefix[prefix] = [n.startswith(prefix) for n in self.geom_names]
        return kind

    def bodies(self, pattern: str, num: int) -> list[int]:
        """Ids of the bodies ``pattern.format(i=i)`` for ``i < num``."""
        ids = self._bodies.get((pattern, num))
        if ids is None:
            ids = [self.body[pattern.format(i=i)] for i in range(num)]
            self._bodies[(pattern, num)] = ids
        return ids


def _contacts(data: Any) -> list[tuple[int, int]]:
    ncon = data.ncon
    return list(zip(data.contact.geom1[:ncon].tolist(), data.contact.geom2[:ncon].tolist()))


def _touching(
    contacts: list[tuple[int, int]], ids: _Ids, kind: list[bool], exclude: int = -1
) -> int:
    """Contacts between an agent geom and a geom of ``kind`` (not ``exclude``)."""
    agent = ids.agent_geom
    return sum(
        1
        for g1, g2 in contacts
        if (kind[g1] or kind[g2]) and (agent[g1] or agent[g2]) and exclude not in (g1, g2)
    )


class FastStepMixin:
    """The step-path methods of a stock task (mixed in first): ``obs``, ``calculate_cost``,
    ``dist_goal``, ``simulation_forward`` and, for Button tasks, ``goal_achieved``
    (:func:`safebench.envs.fastnav.task.fast_task_class` keeps any the stock class overrides)."""

    if TYPE_CHECKING:  # attributes of the stock task this is mixed into
        model: Any
        data: Any
        agent: Any
        goal: Any
        buttons: Any
        debug: bool
        action_noise: float
        random_generator: Any
        sim_conf: Any
        _mocaps: dict[str, Any]
        lidar_conf: Any
        obs_info: Any
        _obstacles: list[Any]
        _obs_compass: Callable[[np.ndarray], np.ndarray]

    #: set by :func:`safebench.envs.fastnav.task.fast_task_class`: the stock obs adds Button's timer
    _button_obs: bool = False
    _ids_cache: _Ids | None = None
    _obs_plan: ObsPlan | None = None

    def _ids(self) -> _Ids:
        ids = self._ids_cache
        if ids is None or ids.model is not self.model:
            ids = self._ids_cache = _Ids(self.model, self.agent.body_info.geom_names)
            self._obs_plan = None
        return ids

    def _positions(self, ids: _Ids, obstacle: Any) -> np.ndarray:
        """``np.array(obstacle.pos, ndmin=2)`` by id for the stock objects, else stock."""
        names = _tables()[0].get(type(obstacle))
        if names is None:
            return np.array(obstacle.pos, ndmin=2, dtype=np.float64)
        return self.data.xpos[ids.bodies(names, getattr(obstacle, "num", 1))]

    def dist_goal(self) -> float:
        """Stock ``agent.dist_xy(goal.pos)``: ``sqrt(sum(square(goal[:2] - agent[:2])))``."""
        ids = self._ids()
        xpos = self.data.xpos
        goal, agent = xpos[ids.body["goal"]], xpos[ids.agent_body]
        dx, dy = float(goal[0] - agent[0]), float(goal[1] - agent[1])
        # two terms: NumPy's sum is exactly dx*dx + dy*dy, and sqrt is correctly rounded
        return np.float64(math.sqrt(dx * dx + dy * dy))  # type: ignore[return-value]

    def simulation_forward(self, action: np.ndarray) -> bool:
        """Stock ``Underlying.simulation_forward``, the gremlins' mocaps moved by id.

        Stock ``Gremlins.move`` builds ``r_[[sin t, cos t] * travel, [size]]`` for each
        gremlin before every physics step and writes it by body name: the same numbers go
        to every gremlin's ``mocap_pos`` row.
        """
        rng = self.random_generator
        if self.debug:
            self.agent.debug()
        else:
            nu = self.agent.body_info.nu
            noise = self.action_noise * rng.randn(nu) if self.action_noise else None
            self.agent.apply_action(action, noise)
        model, data = self.model, self.data
        ids = self._ids()
        if ids.moves is None:
            ids.moves = self._mocap_moves(ids)
        conf = self.sim_conf
        for _ in range(rng.binomial(conf.frameskip_binom_n, conf.frameskip_binom_p)):
            try:
                for move in ids.moves:
                    move()
                mujoco.mj_step(model, data)
            except _mujoco_exception() as exc:  # stock: report, end the step, truncate
                print("MujocoException", exc)
                return True
        mujoco.mj_forward(model, data)
        return False

    def _mocap_moves(self, ids: _Ids) -> list[Any]:
        """A callable per mocap object, run before every physics step (stock ``move``)."""
        from safety_gymnasium.assets.mocaps import Gremlins

        moves: list[Any] = []
        for mocap in self._mocaps.values():
            if type(mocap) is not Gremlins:
                moves.append(mocap.move)
                continue
            bodies = ids.bodies("gremlin{i}mocap", mocap.num)
            rows = [int(self.model.body_mocapid[b]) for b in bodies]
            moves.append(_GremlinMove(self.data, rows, mocap))
        return moves

    @property
    def _button_goal_achieved(self) -> bool:
        """Stock ``ButtonLevel0.goal_achieved``: a contact of the goal button with the agent."""
        ids = self._ids()
        goal = ids.geom.get(f"button{self.buttons.goal_button}", -1)
        agent = ids.agent_geom
        return any(goal in (g1, g2) and (agent[g1] or agent[g2]) for g1, g2 in _contacts(self.data))

    def obs(self) -> Any:
        ids = self._ids()
        plan = self._obs_plan
        if plan is None:
            plan = self._obs_plan = ObsPlan.create(self, ids)
        if not plan.supported:
            return super().obs()  # type: ignore[misc]
        mujoco.mj_forward(self.model, self.data)  # stock: sensors must see this state
        out = np.empty(plan.size)
        plan.write_sensors(self.data.sensordata, out)
        agent_pos = self.data.xpos[ids.agent_body].copy()
        agent_mat = self.data.xmat[ids.agent_body].copy().reshape(3, -1)
        for obstacle, lidar, comp in plan.objects:
            pos = self._positions(ids, obstacle)
            if lidar is not None:
                view = out[lidar]
                if self._button_obs and obstacle.name == "buttons" and obstacle.timer != 0:
                    view[:] = 0.0  # stock ButtonLevel0.obs blanks the buttons while they wait
                else:
                    view[:] = pseudo_lidar(pos, agent_pos, agent_mat, self.lidar_conf)
            if comp is not None:
                single = pos[0] if len(pos) == 1 else obstacle.pos
                out[comp] = self._obs_compass(single)
        plan.check(out)
        return out

    def calculate_cost(self) -> dict[str, Any]:
        if getattr(self, "_is_load_static_geoms", False):
            return super().calculate_cost()  # type: ignore[misc]
        mujoco.mj_forward(self.model, self.data)  # stock: positions and contacts up to date
        ids = self._ids()
        contacts = _contacts(self.data)
        cost: dict[str, Any] = {}
        for obstacle in self._obstacles:
            fast = _tables()[1].get(type(obstacle))
            cost.update(
                fast(self, ids, obstacle, contacts) if fast is not None else obstacle.cal_cost()
            )
        cost["cost_sum"] = sum(v for k, v in cost.items() if k.startswith("cost_"))
        return cost

    # --- the stock cal_cost of each object, by id -------------------------------------------

    def _hazards_cost(self, ids: _Ids, hazards: Any, contacts: Any) -> dict[str, Any]:
        if not hazards.is_constrained:
            return {}
        total: Any = 0
        agent = self.data.xpos[ids.agent_body]
        ax, ay = float(agent[0]), float(agent[1])
        for h in self._positions(ids, hazards).tolist():
            dx, dy = h[0] - ax, h[1] - ay
            h_dist = np.float64(math.sqrt(dx * dx + dy * dy))  # stock agent.dist_xy
            if h_dist <= hazards.size:
                total += hazards.cost * (hazards.size - h_dist)
        return {"cost_hazards": total}

    def _vases_cost(self, ids: _Ids, vases: Any, contacts: Any) -> dict[str, Any]:
        if not vases.is_constrained:
            return {}
        if vases.displace_cost:  # stock reads attributes vases do not have: let it fail as stock
            stock: dict[str, Any] = vases.cal_cost()
            return stock
        cost: dict[str, Any] = {"cost_vases_contact": 0}
        if vases.contact_cost:
            for _ in range(_touching(contacts, ids, ids.prefix("vase"))):
                cost["cost_vases_contact"] += vases.contact_cost
        if vases.velocity_cost:
            cost["cost_vases_velocity"] = 0
            nv = self.model.nv
            for i in range(vases.num):
                jacp = np.zeros(3 * nv).reshape(3, nv)  # stock get_body_xvelp, by id
                mujoco.mj_jacBody(self.model, self.data, jacp, None, ids.body[f"vase{i}"])
                vel = np.sqrt(np.sum(np.square(np.dot(jacp, self.data.qvel))))
                if vel >= vases.velocity_threshold:
                    cost["cost_vases_velocity"] += vel * vases.velocity_cost
        return cost

    def _contact_cost(self, ids: _Ids, obj: Any, contacts: Any) -> dict[str, Any]:
        """Pillars and gremlins: a fixed cost per contact between the agent and the object."""
        key, prefix, each = _tables()[2][type(obj)]
        if not obj.is_constrained:
            return {}
        total: Any = 0
        for _ in range(_touching(contacts, ids, ids.prefix(prefix))):
            total += getattr(obj, each)
        return {key: total}

    def _buttons_cost(self, ids: _Ids, buttons: Any, contacts: Any) -> dict[str, Any]:
        assert buttons.goal_button is not None, (
            "Please make sure this method can get information about goal button."
        )
        if not buttons.is_constrained or buttons.timer != 0:
            return {}
        goal = ids.geom.get(f"button{buttons.goal_button}", -1)
        total: Any = 0
        for _ in range(_touching(contacts, ids, ids.prefix("button"), exclude=goal)):
            total += buttons.cost
        return {"cost_buttons": total}


class _GremlinMove:
    """Stock ``Gremlins.move`` for all gremlins: one position, computed as stock does."""

    def __init__(self, data: Any, rows: list[int], gremlins: Any) -> None:
        self.data, self.rows, self.gremlins = data, rows, gremlins

    def __call__(self) -> None:
        phase = float(self.data.time)
        travel = self.gremlins.travel
        # stock: np.array([np.sin(phase), np.cos(phase)]) * travel, one IEEE product each
        x = float(np.sin(phase)) * travel
        y = float(np.cos(phase)) * travel
        self.data.mocap_pos[self.rows] = (x, y, self.gremlins.size)


def _mujoco_exception() -> type[Exception]:
    from safety_gymnasium.utils.common_utils import MujocoException

    return MujocoException


@cache
def _tables() -> tuple[dict[type, str], dict[type, Any], dict[type, tuple[str, str, str]]]:
    """Per stock object class (exact type: a subclass may change ``pos`` or ``cal_cost``):
    the body names of its ``pos`` property, its fast ``cal_cost``, and contact-cost fields."""
    from safety_gymnasium.assets import free_geoms, geoms, mocaps

    body_names = {
        geoms.Hazards: "hazard{i}",
        free_geoms.Vases: "vase{i}",
        geoms.Pillars: "pillar{i}",
        geoms.Buttons: "button{i}",
        mocaps.Gremlins: "gremlin{i}obj",
        geoms.Apples: "apple{i}",
        geoms.Oranges: "orange{i}",
        geoms.Goal: "goal",
        free_geoms.PushBox: "push_box",
    }
    costs = {
        geoms.Hazards: FastStepMixin._hazards_cost,
        free_geoms.Vases: FastStepMixin._vases_cost,
        geoms.Pillars: FastStepMixin._contact_cost,
        mocaps.Gremlins: FastStepMixin._contact_cost,
        geoms.Buttons: FastStepMixin._buttons_cost,
    }
    contact_costs = {
        geoms.Pillars: ("cost_pillars", "pillar", "cost"),
        mocaps.Gremlins: ("cost_gremlins", "gremlin", "contact_cost"),
    }
    return body_names, costs, contact_costs
