"""A navigation task that compiles its world once and writes each new layout in place.

:func:`fast_task_class` derives, from a stock task class (``GoalLevel1``, ``ButtonLevel2``,
...), a class whose reset builds the simulation the fast way (:class:`FastTaskMixin`: the
training assets, the batched exact sampler, the in-place layout writer) and whose step runs
:class:`~safebench.envs.fastnav.step.FastStepMixin`. Everything else (what is sampled and in which
order, the world config, goals, rewards, costs, observations) is the stock code.

Each reset runs as many ``mj_forward`` calls as stock's. A stock env's first reset compiles a
fresh model (twice) and runs one forward on its fresh data; every later reset compiles again
and runs two (``World.rebuild`` adds one). ``mj_forward`` leaves its accelerations as the
solver's next warm start (``qacc_warmstart``), so a stock env's first episode differs from a
later one with the same seed (by ~1e-14 in ``qacc`` at reset on CarGoal0; by up to ~30 in the
observations of RacecarCircle1 within its first steps). Here the first reset compiles and runs
one forward, and every later one (in place or rebuilt) runs two from a reset ``MjData``: **a
fresh fast env is bit-identical to a fresh stock env**, first episode included, and a used one
to a used one. Replaying an episode into a fresh env (how safebench resumes runs) therefore
has to know which kind of reset began it: :meth:`safebench.envs.factory.VectorCMDP.restore`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, Any

import mujoco

from safebench.envs.fastnav.assets import training_assets
from safebench.envs.fastnav.inplace import LayoutWriter
from safebench.envs.fastnav.sampler import LayoutSampler, uniform_is_reproducible
from safebench.envs.fastnav.step import FastStepMixin

__all__ = ["FastTaskMixin", "fast_task_class"]


class FastTaskMixin:
    """Overrides ``Underlying._build`` of a stock Safety-Gymnasium task (mixed in first).

    Each reset takes one of three routes:

    * first reset: compile the world with the training assets (:mod:`.assets`), one build
      and one forward, as stock's first reset;
    * later resets whose world config differs from the compiled one in placements only:
      write the layout into the compiled model (:class:`.inplace.LayoutWriter`);
    * anything else (mesh objects, a changed world config) or a writer that failed its
      self-check: a full stock rebuild, with the training assets.
    """

    # Attributes of the stock task this mixin uses (typed here for mypy).
    world: Any
    world_info: Any
    placements_conf: Any
    random_generator: Any
    agent: Any
    _obstacles: Any
    model: Any
    data: Any

    _layout_writer: LayoutWriter | None = None
    _layout_sampler: LayoutSampler | None = None
    #: How each reset was served: counts of 'compile', 'inplace', 'rebuild' (for tests/bench).
    build_counts: dict[str, int]

    if TYPE_CHECKING:  # methods of the stock task class this is mixed into
        _build_placements_dict: Callable[[], None]
        _build_world_config: Callable[[dict[str, Any]], dict[str, Any]]

    def _build(self) -> None:
        """Sample a layout and bring the simulation to its initial state (stock semantics)."""
        if self.placements_conf.placements is None:  # once per env, as in stock
            self._build_placements_dict()
            self.random_generator.set_placements_info(
                self.placements_conf.placements,
                self.placements_conf.extents,
                self.placements_conf.margin,
            )
        self.world_info.layout = self._sample_layout()
        config = self._build_world_config(self.world_info.layout)
        self.world_info.world_config_dict = config
        if not hasattr(self, "build_counts"):
            self.build_counts = {"compile": 0, "inplace": 0, "rebuild": 0}
        writer = self._layout_writer
        if self.world is None:
            self._compile(config)
        elif writer is not None and writer.model is self.model and writer.matches(config):
            self._write_in_place(writer, config)
        else:
            self._rebuild(config)

    def _sample_layout(self) -> dict[str, Any]:
        generator = self.random_generator
        if not uniform_is_reproducible():
            layout: dict[str, Any] = generator.build_layout()
            return layout
        sampler = self._layout_sampler
        if sampler is None or not sampler.serves(generator):
            sampler = self._layout_sampler = LayoutSampler(generator)
        return sampler.build_layout()

    def _compile(self, config: dict[str, Any]) -> None:
        from safety_gymnasium.world import World

        with training_assets():
            self.world = World(self.agent, self._obstacles, config)
            self.world.build()  # fresh model and data, one forward: stock's first reset
        self._layout_writer = LayoutWriter.create(self.model, config, self.agent.z_height)
        self.build_counts["compile"] += 1

    def _rebuild(self, config: dict[str, Any]) -> None:
        with training_assets():
            self.world.rebuild(config, state=False)  # fresh model and data, two forwards
        self._layout_writer = LayoutWriter.create(self.model, config, self.agent.z_height)
        self.build_counts["rebuild"] += 1

    def _write_in_place(self, writer: LayoutWriter, config: dict[str, Any]) -> None:
        model, data = self.model, self.data
        writer.write(config)
        # A fresh MjData is a reset one: qpos = qpos0, mocap bodies at their model pose (the
        # gremlins moved theirs), zero velocities, warm start, time and controls. mj_setConst
        # then recomputes what the compiler derives from qpos0 (it runs kinematics on ``data``,
        # hence the resets on both sides of it).
        mujoco.mj_resetData(model, data)
        mujoco.mj_setConst(model, data)
        mujoco.mj_resetData(model, data)
        mujoco.mj_forward(model, data)
        mujoco.mj_forward(model, data)
        self.build_counts["inplace"] += 1


@cache
def fast_task_class(stock: Any) -> type:
    """``stock`` with the fast build (and, where it reproduces the stock one, step) in front.

    The class keeps the stock name: static geoms are looked up by it (``GoalLevel1`` ->
    ``goal.yaml``, level 1). Each step-path method replaces only the stock method it was
    written against; a task class that overrides one of them keeps its own.
    """
    from safety_gymnasium.bases.base_task import BaseTask
    from safety_gymnasium.bases.underlying import Underlying
    from safety_gymnasium.tasks.safe_navigation.button.button_level0 import ButtonLevel0

    namespace: dict[str, Any] = {"__module__": __name__}
    if stock.obs not in (BaseTask.obs, ButtonLevel0.obs):
        namespace["obs"] = stock.obs
    namespace["_button_obs"] = stock.obs is ButtonLevel0.obs
    for name in ("calculate_cost", "dist_goal"):
        if getattr(stock, name) is not getattr(BaseTask, name):
            namespace[name] = getattr(stock, name)
    if stock.simulation_forward is not Underlying.simulation_forward:
        namespace["simulation_forward"] = stock.simulation_forward
    if stock.goal_achieved is ButtonLevel0.goal_achieved:
        namespace["goal_achieved"] = FastStepMixin._button_goal_achieved
    return type(stock.__name__, (FastStepMixin, FastTaskMixin, stock), namespace)
