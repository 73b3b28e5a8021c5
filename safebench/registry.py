"""Algorithm registry: name -> (Algorithm class, Config class).

Built-in algorithms live in the top-level ``algorithms`` package, one file each. Third-party
packages add their own through the ``safebench.algorithms`` entry-point group::

    [project.entry-points."safebench.algorithms"]
    myalgo = "mypkg.myalgo:MyAlgo"      # a subclass of safebench.core.base.Algorithm
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import entry_points
from typing import Any

from pydantic import ValidationError

from safebench.backends import OMNISAFE_PREFIX, is_omnisafe, omnisafe_config
from safebench.core.base import AlgoConfig, Algorithm
from safebench.errors import UserError

__all__ = [
    "OMNISAFE_PREFIX",
    "AlgoEntry",
    "available",
    "config_error_message",
    "get",
    "is_omnisafe",
    "is_registered",
    "resolve_config",
]

BUILTIN: dict[str, str] = {
    "cpo": "algorithms.cpo:CPO",
    "pcpo": "algorithms.pcpo:PCPO",
    "p3o": "algorithms.p3o:P3O",
    "kfcpo": "algorithms.kfcpo:KFCPO",
    "ctrpo": "algorithms.ctrpo:CTRPO",
    "cvpo": "algorithms.cvpo:CVPO",
    "ppo": "algorithms.ppo:PPO",
    "ppo-lag": "algorithms.ppo_lag:PPOLag",
    "trpo-lag": "algorithms.trpo_lag:TRPOLag",
    "cppo-pid": "algorithms.cppo_pid:CPPOPID",
    "focops": "algorithms.focops:FOCOPS",
    "cup": "algorithms.cup:CUP",
    "ipo": "algorithms.ipo:IPO",
}
ENTRY_POINT_GROUP = "safebench.algorithms"


@dataclass(frozen=True)
class AlgoEntry:
    name: str
    cls: type[Algorithm]
    source: str

    @property
    def kind(self) -> str:
        return self.cls.kind

    @property
    def config_cls(self) -> type[AlgoConfig]:
        return self.cls.Config


def _load(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


@lru_cache(maxsize=1)
def available() -> dict[str, AlgoEntry]:
    """Every registered algorithm: built-ins first, then entry-point plug-ins."""
    out = {name: AlgoEntry(name, _load(target), "built-in") for name, target in BUILTIN.items()}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in out:
            continue  # a plug-in cannot shadow a built-in
        cls = ep.load()
        if not (isinstance(cls, type) and issubclass(cls, Algorithm)):
            raise UserError(
                f"entry point {ep.name!r} ({ep.value}) in group {ENTRY_POINT_GROUP!r} is not a "
                "subclass of safebench.core.base.Algorithm"
            )
        out[ep.name] = AlgoEntry(ep.name, cls, f"plug-in ({ep.value})")
    return out


def get(name: str) -> AlgoEntry:
    """The entry for ``name``; an unknown name is a :class:`UserError` with suggestions."""
    algos = available()
    if name not in algos:
        near = difflib.get_close_matches(name, list(algos), n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(near)}?" if near else ""
        raise UserError(
            f"unknown algorithm {name!r}.{hint} Known algorithms: {', '.join(sorted(algos))}; "
            f"OmniSafe's own as {OMNISAFE_PREFIX}<NAME>, e.g. {OMNISAFE_PREFIX}CPO"
        )
    return algos[name]


def is_registered(name: str) -> bool:
    """Whether ``name`` is a registered algorithm or an OmniSafe algorithm safebench runs."""
    if is_omnisafe(name):
        return omnisafe_config.is_supported(name)
    return name in available()


def config_error_message(exc: ValidationError, where: str, known: Sequence[str] = ()) -> str:
    """One line per problem, each naming the config key and what is wrong with it; an unknown
    key gets the closest of the ``known`` keys as a suggestion."""
    parts = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(config)"
        if err["type"] == "extra_forbidden":
            near = difflib.get_close_matches(key, list(known), n=2, cutoff=0.6)
            hint = f" (did you mean {' or '.join(repr(k) for k in near)}?)" if near else ""
            parts.append(f"{where}: unknown config key {key!r}{hint}")
        else:
            parts.append(f"{where}: config key {key!r}: {err['msg']} (got {err.get('input')!r})")
    return "; ".join(parts)


def resolve_config(name: str, overrides: dict[str, Any] | None = None) -> AlgoConfig:
    """The algorithm's config with ``overrides`` applied and validated."""
    if is_omnisafe(name):  # OmniSafe's config overrides, checked against its YAML
        return omnisafe_config.resolve_config(name, overrides)
    entry = get(name)
    try:
        return entry.config_cls(**(overrides or {}))
    except ValidationError as exc:
        keys = ", ".join(sorted(entry.config_cls.model_fields))
        raise UserError(
            f"{config_error_message(exc, name, list(entry.config_cls.model_fields))}. "
            f"Valid keys for {name}: {keys}"
        ) from None
