"""OmniSafe's algorithm names and configs, checked without importing OmniSafe.

The light half of the OmniSafe backend (:mod:`safebench.backends.omnisafe` trains): which
``omnisafe:<NAME>`` exist and can run, OmniSafe's own defaults (its
``configs/<type>/<ALGO>.yaml``), and :class:`OmniSafeConfig`, the typed, checked overrides of
them. The registry and the experiment schema use it to validate an experiment before anything
trains; the mapping of a run spec onto this config is documented in
:mod:`safebench.backends.omnisafe`.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
from collections.abc import Mapping
from functools import cache, lru_cache
from importlib.metadata import version
from pathlib import Path
from typing import Any, ClassVar

import yaml
from pydantic import ConfigDict, Field, ValidationError, create_model, model_validator

from safebench.backends import OMNISAFE_PREFIX as PREFIX
from safebench.core.base import AlgoConfig
from safebench.errors import UserError

__all__ = [
    "LIMIT_KEYS",
    "MANAGED",
    "OmniSafeConfig",
    "algorithm_name",
    "algorithm_types",
    "config_class",
    "default_config",
    "is_supported",
    "resolve_config",
]

SUPPORTED_TYPES = ("on-policy", "off-policy")

# The keys of OmniSafe's config that safebench sets from the run spec, and where they come from.
MANAGED: dict[tuple[str, ...], str] = {
    ("seed",): "the experiment's seeds",
    ("exp_name",): "OmniSafe itself (from the algorithm and env)",
    ("env_id",): "the experiment's environments",
    ("algo",): "the algorithm name after 'omnisafe:'",
    ("train_cfgs", "total_steps"): "the experiment's budget",
    ("train_cfgs", "torch_threads"): "resources.cpus",
    ("train_cfgs", "device"): "the experiment's device",
    ("train_cfgs", "vector_env_nums"): "num_envs",
    ("train_cfgs", "parallel"): (
        "safebench (always 1: OmniSafe's multi-process mode re-launches the calling program)"
    ),
    ("algo_cfgs", "steps_per_epoch"): "the experiment's steps_per_epoch",
    ("algo_cfgs", "obs_normalize"): "the config key obs_normalize (top level)",
    ("logger_cfgs", "log_dir"): "safebench (OmniSafe logs inside the run directory)",
    ("logger_cfgs", "use_wandb"): "safebench (always off: results go to the run directory)",
}
# Per-algorithm names of the episodic cost limit; every section holding one gets the spec's.
LIMIT_KEYS = ("cost_limit", "safety_budget")


# --------------------------------------------------------------------------- OmniSafe's YAML


@lru_cache(maxsize=1)
def _configs_dir() -> Path:
    # find_spec locates the package without importing it: OmniSafe's import pulls in
    # Safety-Gymnasium (which needs safebench's Python 3.11 shim first), torch and wandb.
    spec = importlib.util.find_spec("omnisafe")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("omnisafe is not installed; 'omnisafe:' algorithms need omnisafe==0.5.0")
    return Path(next(iter(spec.submodule_search_locations))) / "configs"


@lru_cache(maxsize=1)
def algorithm_types() -> dict[str, str]:
    """Every OmniSafe algorithm and its type (``on-policy``, ``off-policy``, ...)."""
    return {path.stem: path.parent.name for path in sorted(_configs_dir().glob("*/*.yaml"))}


@cache
def default_config(algo: str) -> dict[str, Any]:
    """The ``defaults`` section of OmniSafe's YAML for ``algo``."""
    path = _configs_dir() / algorithm_types()[algo] / f"{algo}.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    defaults: dict[str, Any] = data["defaults"]
    return defaults


def algorithm_name(name: str) -> str:
    """OmniSafe's name in ``omnisafe:<NAME>``, checked; a :class:`UserError` if unusable."""
    if not name.startswith(PREFIX):
        raise UserError(f"{name!r} is not an OmniSafe algorithm name (omnisafe:<NAME>)")
    algo = name[len(PREFIX) :]
    types = algorithm_types()
    usable = sorted(a for a, t in types.items() if t in SUPPORTED_TYPES)
    if algo not in types:
        near = difflib.get_close_matches(algo, list(types), n=3, cutoff=0.5)
        near += [a for a in types if a.lower() == algo.lower() and a not in near]
        hint = f" Did you mean: {', '.join(PREFIX + n for n in near)}?" if near else ""
        raise UserError(
            f"unknown OmniSafe algorithm {algo!r} in {name!r} (names are case-sensitive).{hint} "
            f"OmniSafe {version('omnisafe')} has: {', '.join(usable)}"
        )
    if types[algo] not in SUPPORTED_TYPES:
        raise UserError(
            f"{name!r} is an OmniSafe {types[algo]} algorithm; safebench runs OmniSafe's "
            f"{' and '.join(SUPPORTED_TYPES)} algorithms only (an env-step budget does not "
            f"apply to it): {', '.join(usable)}"
        )
    return algo


def is_supported(name: str) -> bool:
    """Whether ``name`` is ``omnisafe:<NAME>`` of an OmniSafe algorithm safebench can run."""
    try:
        algorithm_name(name)
    except UserError:
        return False
    return True


# --------------------------------------------------------------------------- config


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return type(value).__name__


def _problems(
    overrides: Mapping[str, Any], defaults: Mapping[str, Any], path: tuple[str, ...]
) -> list[str]:
    """What is wrong with ``overrides`` against OmniSafe's ``defaults`` (one line each)."""
    problems = []
    for key, value in overrides.items():
        where = (*path, str(key))
        dotted = ".".join(where)
        if where in MANAGED:
            problems.append(f"{dotted!r} is set from {MANAGED[where]}; remove it from the config")
            continue
        if len(path) == 1 and key in LIMIT_KEYS and key in defaults:
            problems.append(
                f"{dotted!r} is set from the experiment's cost_limit (or the environment's own); "
                "remove it from the config"
            )
            continue
        if key not in defaults:
            near = difflib.get_close_matches(str(key), list(defaults), n=1, cutoff=0.6)
            hint = f"did you mean {'.'.join((*path, near[0]))!r}? " if near else ""
            problems.append(
                f"unknown OmniSafe config key {dotted!r}; {hint}keys here: "
                f"{', '.join(map(str, defaults))}"
            )
            continue
        default = defaults[key]
        if default is None:
            continue  # OmniSafe's "unset" (e.g. a TRPO actor's lr): any value
        if isinstance(default, Mapping):
            if not isinstance(value, Mapping):
                problems.append(f"{dotted!r} must be a mapping of keys (got {value!r})")
            elif key != "env_cfgs":  # env kwargs are free-form, as in OmniSafe's own check
                problems.extend(_problems(value, default, where))
        elif _kind(value) != _kind(default) and not (
            isinstance(default, float) and _kind(value) == "an integer"  # 1 for 1.0: converted
        ):
            problems.append(
                f"{dotted!r} must be {_kind(default)} like OmniSafe's default {default!r} "
                f"(got {value!r})"
            )
    return problems


class OmniSafeConfig(AlgoConfig):
    """Overrides of OmniSafe's own config for one algorithm, as nested mappings.

    Any key of the algorithm's OmniSafe YAML may be given in its section, e.g. ``{algo_cfgs:
    {target_kl: 0.02}}``; the keys safebench sets from the run spec may not (see the module
    docstring). ``obs_normalize`` is the algorithm's ``algo_cfgs.obs_normalize``.
    """

    model_config = ConfigDict(frozen=True, extra="allow", validate_default=True)

    omnisafe_algo: ClassVar[str] = ""

    @model_validator(mode="after")
    def _check_overrides(self) -> OmniSafeConfig:
        if not self.omnisafe_algo:
            raise ValueError("build OmniSafe configs with config_class(<ALGO>) or resolve_config")
        problems = _problems(self.model_extra or {}, default_config(self.omnisafe_algo), ())
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def overrides(self) -> dict[str, Any]:
        """The OmniSafe config keys given (nested mappings), ``obs_normalize`` in its place.

        Integers given where OmniSafe's default is a float become floats: OmniSafe asserts
        ``isinstance(value, float)`` for e.g. ``algo_cfgs.gamma``, and YAML reads ``1`` as 1.
        """
        out = _as_floats(self.model_extra or {}, default_config(self.omnisafe_algo))
        out.setdefault("algo_cfgs", {})["obs_normalize"] = self.obs_normalize
        return out


def _as_floats(values: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of ``values`` with ints turned into floats where ``defaults`` has a float."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        default = defaults.get(key)
        if isinstance(value, Mapping):
            out[key] = _as_floats(value, default if isinstance(default, Mapping) else {})
        elif isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            out[key] = float(value)
        else:
            out[key] = json.loads(json.dumps(value))
    return out


@cache
def config_class(algo: str) -> type[OmniSafeConfig]:
    """The config class of OmniSafe's ``algo``: its ``obs_normalize`` default is OmniSafe's."""
    default = bool(default_config(algo)["algo_cfgs"].get("obs_normalize", False))
    cls = create_model(
        f"OmniSafe{algo}Config",
        __base__=OmniSafeConfig,
        __doc__=f"Overrides of OmniSafe's {algo} config (configs/.../{algo}.yaml).",
        obs_normalize=(
            bool,
            Field(default, description=f"[H] OmniSafe {algo}.yaml algo_cfgs.obs_normalize"),
        ),
    )
    cls.omnisafe_algo = algo
    return cls


def resolve_config(name: str, overrides: Mapping[str, Any] | None = None) -> OmniSafeConfig:
    """The checked config of ``omnisafe:<NAME>`` with ``overrides``; a UserError if bad."""
    algo = algorithm_name(name)
    try:
        return config_class(algo)(**dict(overrides or {}))
    except ValidationError as exc:
        parts = []
        for err in exc.errors():
            if err["type"] == "value_error":
                parts.append(str(err["ctx"]["error"]))
            else:
                key = ".".join(str(p) for p in err["loc"])
                parts.append(f"config key {key!r}: {err['msg']} (got {err.get('input')!r})")
        raise UserError(f"{name}: {'; '.join(parts)}") from None
