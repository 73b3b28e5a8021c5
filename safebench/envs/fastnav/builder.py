"""The fast navigation env: Safety-Gymnasium's ``Builder`` with the fast task, same wrappers."""

from __future__ import annotations

import dataclasses
from typing import Any

import gymnasium

from safebench.envs.fastnav.task import fast_task_class

__all__ = ["fast_builder_class", "make_fast"]


def fast_builder_class() -> type:
    """``safety_gymnasium.builder.Builder`` whose task is the fast variant of the stock task.

    Defined on first use: ``safety_gymnasium`` must be imported through
    :func:`safebench.envs.factory.import_safety_gymnasium` (Python 3.11 shim) before this runs.
    """
    global _FAST_BUILDER
    if _FAST_BUILDER is None:
        _FAST_BUILDER = _define_fast_builder()
    return _FAST_BUILDER


_FAST_BUILDER: type | None = None


def _define_fast_builder() -> type:
    from safety_gymnasium import tasks
    from safety_gymnasium.builder import Builder
    from safety_gymnasium.utils.task_utils import get_task_class_name

    class FastBuilder(Builder):
        """A stock ``Builder`` except that its task builds worlds the fast way."""

        def _get_task(self) -> Any:
            stock = getattr(tasks, get_task_class_name(self.task_id))
            task = fast_task_class(stock)(config=self.config)
            task.build_observation_space()
            return task

    return FastBuilder


def make_fast(env_id: str, **kwargs: Any) -> gymnasium.Env[Any, Any]:
    """``safety_gymnasium.make(env_id, **kwargs)`` with the fast builder as entry point.

    Going through ``safety_gymnasium.make`` with the registered spec keeps every wrapper
    (passive checker, order enforcing, time limit) and every make option exactly as stock.
    """
    import safety_gymnasium

    entry_point: Any = fast_builder_class()  # a class is a valid env creator
    spec = dataclasses.replace(gymnasium.spec(env_id), entry_point=entry_point)
    env: gymnasium.Env[Any, Any] = safety_gymnasium.make(spec, **kwargs)
    return env
