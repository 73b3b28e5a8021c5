"""Experiments and runs: the YAML schema, its validation, and ``expand()`` into RunSpecs.

An experiment file declares a grid — algorithms (with config overrides and named variants) ×
environments × seeds — plus the budget and protocol every run of the grid shares::

    name: quickstart
    algorithms: [cpo, {name: pcpo, label: pcpo-slow, config: {target_kl: 0.005}}]
    ours: [pcpo-slow]        # the method(s) under test: the report opens with them vs the rest
    environments: [SafetyPointGoal1-v0, {id: "mypkg.envs:MyEnv", kwargs: {size: 3}, cost_limit: 5}]
    seeds: 3                 # or an explicit list [0, 1000, 2000]
    budget: 1000000          # env steps per run (an env entry may set its own budget)
    steps_per_epoch: 20000
    cost_limit: 25           # for every env without a cost_limit of its own; a list such as
                             # [15, 25, 35] sweeps it: one run per limit (an env entry too)
    eval: {episodes: 10, deterministic: true, every_epochs: 10}
    resources: {cpus: 1, gpus: 0}
    logging: {tensorboard: true} # live curves in <run>/tb/ (default off; wandb: true = offline W&B)
    output: results/quickstart   # default: results/<name>, relative to the working directory

:func:`load_experiment` reads such a file safely (plain YAML only, no object tags), checks
every field, every algorithm name and config key, and creates every environment once, so that
anything wrong is reported before a single file is written: one line that names the file, the
line, the field, the problem and the fix (:class:`ExperimentError`). :func:`expand` turns the
experiment into frozen :class:`RunSpec` objects, each with a content-addressed run id.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import math
import re
import types
import typing
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core.core_schema import SerializerFunctionWrapHandler

from safebench import registry
from safebench.backends import is_omnisafe, omnisafe_label
from safebench.errors import UserError
from safebench.results.store import package_versions, run_path
from safebench.schema.yamldoc import ExperimentError, Path_, YamlDocument

__all__ = [
    "SMOKE_EPOCHS",
    "SMOKE_STEPS_PER_EPOCH",
    "AlgorithmEntry",
    "EnvironmentEntry",
    "EvalSpec",
    "Experiment",
    "ExperimentError",
    "LoggingProtocol",
    "LoggingSpec",
    "Resources",
    "RunSpec",
    "cost_limits",
    "expand",
    "load_experiment",
    "parse_experiment",
    "same_run",
]

# Versions whose change can change a run's numbers: part of the run id.
ID_PACKAGES = ("safebench", "torch", "numpy", "safety-gymnasium", "mujoco", "gymnasium")


class EvalSpec(BaseModel):
    """Periodic evaluation protocol.

    Evaluation uses its own env instance and its own episode-seed stream (derived from the run
    seed with a separate stream index), so evaluation episodes never coincide with training
    episodes, and every evaluation of a run sees the same episodes.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    episodes: int = Field(10, ge=0, description="episodes per evaluation (0 = no evaluation)")
    deterministic: bool = Field(True, description="evaluate the mean / arg-max action")
    every_epochs: int = Field(10, ge=1, description="evaluate every this many epochs and last")


class LoggingSpec(BaseModel):
    """Live logging of a run's metrics rows (:mod:`safebench.training.live`); never part of its id.

    Logging does not change what a run computes, so neither its run id nor the identity
    check of an existing run directory looks at it, and at its default (all off) it is left
    out of ``spec.json`` altogether: experiments written before it existed keep their ids.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    tensorboard: bool = Field(False, description="TensorBoard event files in <run>/tb/")
    wandb: bool = Field(False, description="an offline W&B run in <run>/wandb/")


class RunSpec(BaseModel):
    """One run: algorithm + resolved config, env, seed, budget, cost limit, eval protocol."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    experiment: str = "adhoc"
    algo: str
    label: str = ""
    config: dict[str, Any] = Field(default_factory=dict, description="resolved algorithm config")
    env_id: str
    env_kwargs: dict[str, Any] = Field(default_factory=dict)
    seed: int = Field(ge=0)
    budget: int = Field(gt=0, description="env steps for the whole run")
    steps_per_epoch: int = Field(gt=0)
    cost_limit: float = Field(ge=0)
    eval: EvalSpec = EvalSpec()
    num_envs: int = Field(1, ge=1, description="envs stepped in lock-step in the run's process")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    logging: LoggingSpec = LoggingSpec()

    @model_validator(mode="after")
    def _defaults(self) -> RunSpec:
        if not self.label:
            object.__setattr__(self, "label", self.algo)
        return self

    @model_serializer(mode="wrap")
    def _omit_default_logging(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # logging off = the spec.json (and run id) of a spec from before the switch existed
        data: dict[str, Any] = handler(self)
        if self.logging == LoggingSpec():
            data.pop("logging", None)
        return data

    @property
    def epochs(self) -> int:
        return -(-self.budget // self.steps_per_epoch)

    @cached_property
    def run_id(self) -> str:
        """sha256 over the resolved spec and the versions that change results (hex)."""
        payload = {
            "spec": self.model_dump(mode="json", exclude={"experiment", "logging"}),
            "versions": package_versions(ID_PACKAGES),
        }
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> RunSpec:
        """The spec a run's ``spec.json`` record holds: its fields, less the ``run_id`` the
        runner writes beside them (which :attr:`run_id` recomputes)."""
        return cls.model_validate({k: v for k, v in record.items() if k != "run_id"})

    def run_dir(self, root: Path) -> Path:
        """The run's directory under ``root`` (layout: :func:`safebench.results.store.run_path`)."""
        return run_path(root, self.label, self.env_id, self.seed, self.run_id)


# Keys of a spec.json that do not decide what a run computes.
_NOT_IDENTITY = ("run_id", "logging")


def same_run(record: Mapping[str, Any], spec: RunSpec) -> bool:
    """Whether a run directory's ``spec.json`` (``record``) holds the run ``spec`` describes.

    Live logging is not compared: switching TensorBoard on for an existing experiment
    resumes its runs (and backfills their curves) instead of refusing them.
    """
    mine = {k: v for k, v in spec.model_dump(mode="json").items() if k not in _NOT_IDENTITY}
    theirs = {k: v for k, v in record.items() if k not in _NOT_IDENTITY}
    return mine == theirs


# ---------------------------------------------------------------------------------------------
# The experiment schema
# ---------------------------------------------------------------------------------------------

# Names become directory names: no separators, no leading dot (so never "." or "..").
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
NAME_RULE = "letters, digits and . _ - +, starting with a letter or digit"

# ``--smoke``: every cell of the grid, at most two seeds, two tiny epochs each.
SMOKE_EPOCHS = 2
SMOKE_STEPS_PER_EPOCH = 200
SMOKE_SEEDS = 2


def _safe_name(value: str, what: str) -> str:
    if not NAME_RE.match(value):
        raise ValueError(f"{what} {value!r} is not a valid name: use {NAME_RULE}")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


CostLimit = Annotated[StrictFloat, Field(ge=0)]
CostLimits = CostLimit | Annotated[list[CostLimit], Field(min_length=1)]
"""A cost limit, or a list of them: a sweep, one run of each grid cell per limit."""


def _check_limits(value: Any) -> Any:
    """A cost limit or a non-empty list of distinct ones, each a number >= 0 (one message for
    every way to get it wrong: pydantic's union errors would name both arms)."""
    what = "a number >= 0, or a non-empty list of distinct numbers >= 0 (a sweep)"

    def number(v: Any) -> bool:  # NaN is not >= 0; .inf (no limit) is
        return isinstance(v, int | float) and not isinstance(v, bool) and v >= 0

    if isinstance(value, list):
        if not value:
            raise ValueError(f"an empty list of cost limits; expected {what}")
        bad = [v for v in value if not number(v)]
        if bad:
            raise ValueError(f"cost limit {bad[0]!r} in {value!r} is not a number >= 0")
        twice = sorted({float(v) for v in value if [float(w) for w in value].count(float(v)) > 1})
        if twice:
            raise ValueError(
                f"cost limit {twice[0]:g} is listed twice in {value!r}; every limit of a sweep "
                "must be distinct"
            )
        return value
    if not number(value):
        raise ValueError(f"got {value!r}; expected {what}")
    return value


def cost_limits(value: float | list[float]) -> list[float]:
    """The limits of a ``cost_limit`` value: ``[value]`` for one, the list for a sweep."""
    return list(value) if isinstance(value, list) else [value]


class AlgorithmEntry(_Strict):
    """One algorithm of the grid; several entries of one algorithm are its named variants."""

    name: StrictStr = Field(description="a registered algorithm (safebench list algorithms)")
    label: StrictStr | None = Field(
        None, description=f"unique name of this variant in results and reports ({NAME_RULE})"
    )
    config: dict[StrictStr, Any] = Field(
        default_factory=dict, description="config overrides, a mapping such as {target_kl: 0.01}"
    )

    @field_validator("label")
    @classmethod
    def _label(cls, value: str | None) -> str | None:
        return None if value is None else _safe_name(value, "label")

    @property
    def run_label(self) -> str:
        """The label, else the name (``omnisafe:<NAME>`` -> ``omnisafe-<name>``)."""
        if self.label:
            return self.label
        return omnisafe_label(self.name) if is_omnisafe(self.name) else self.name


class EnvironmentEntry(_Strict):
    """One environment of the grid: an id and its constructor kwargs."""

    id: StrictStr = Field(
        min_length=1,
        description="a Safety-Gymnasium id, a safebench/... built-in or package.module:Class",
    )
    kwargs: dict[StrictStr, Any] = Field(
        default_factory=dict, description="constructor kwargs, a mapping such as {size: 3}"
    )
    cost_limit: CostLimits | None = Field(
        None,
        description="this env's cost limit, >= 0, or a list of distinct limits to sweep "
        "(default: the experiment's)",
    )
    budget: StrictInt | None = Field(
        None,
        gt=0,
        description="this env's budget in env steps, a positive integer (default: the "
        "experiment's); e.g. fewer steps on the slow navigation tasks",
    )

    @field_validator("cost_limit", mode="before")
    @classmethod
    def _cost_limit(cls, value: Any) -> Any:
        return None if value is None else _check_limits(value)


class EvalProtocol(_Strict):
    """The YAML form of :class:`EvalSpec` (strict types: ``"10"`` for a number is an error; YAML
    reads ``yes`` / ``no`` as booleans)."""

    episodes: StrictInt = Field(
        10, ge=0, description="episodes per evaluation, an integer >= 0 (0 = no evaluation)"
    )
    deterministic: StrictBool = Field(
        True, description="true to evaluate the mean / arg-max action, false to sample"
    )
    every_epochs: StrictInt = Field(
        10, ge=1, description="evaluate every this many epochs (and after the last), >= 1"
    )

    def to_spec(self) -> EvalSpec:
        return EvalSpec(**self.model_dump())


class LoggingProtocol(_Strict):
    """The YAML form of :class:`LoggingSpec`: live curves while the grid trains."""

    tensorboard: StrictBool = Field(
        False,
        description="true to write TensorBoard event files (OmniSafe's metric names) into "
        "each run's tb/ folder: tensorboard --logdir <output>",
    )
    wandb: StrictBool = Field(
        False,
        description="true to log each run to an offline W&B run in its wandb/ folder "
        "(upload later with 'wandb sync')",
    )

    def to_spec(self) -> LoggingSpec:
        return LoggingSpec(**self.model_dump())


class Resources(_Strict):
    """What one run asks Ray for: CPUs (= torch threads) and a GPU share."""

    cpus: StrictInt = Field(1, ge=1, description="CPUs per run, an integer >= 1")
    gpus: StrictFloat = Field(
        0.0, ge=0, description="GPUs per run: 0, a fraction below 1 (shared GPU) or a whole number"
    )

    @field_validator("gpus")
    @classmethod
    def _gpus(cls, value: float) -> float:
        if value > 1 and not float(value).is_integer():
            raise ValueError(f"a GPU share above 1 must be a whole number of GPUs (got {value})")
        return value


def _seed_list(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ValueError(f"a seed count must be at least 1 (got {value})")
        return list(range(value))
    return value


def _entries(value: Any, key: str) -> Any:
    # Shorthand: a bare string is an entry with only its name / id.
    if isinstance(value, list):
        return [{key: v} if isinstance(v, str) else v for v in value]
    return value


class Experiment(_Strict):
    """An experiment file: the grid, the budget and protocol shared by its runs, the output."""

    name: StrictStr = Field(description=f"the experiment's name ({NAME_RULE})")
    description: StrictStr = Field("", description="free text shown in reports")
    ours: list[StrictStr] = Field(
        default_factory=list,
        description="labels of the method(s) under test: the report opens with each of them "
        "against every other algorithm (probability of higher return and of lower cost)",
    )
    algorithms: list[AlgorithmEntry] = Field(
        min_length=1, description="a list of algorithm names or {name, label, config} entries"
    )
    environments: list[EnvironmentEntry] = Field(
        min_length=1,
        description="a list of env ids or {id, kwargs, cost_limit, budget} entries",
    )
    seeds: list[Annotated[StrictInt, Field(ge=0)]] = Field(
        min_length=1, description="a seed count such as 3, or a list of seeds >= 0"
    )
    budget: StrictInt = Field(gt=0, description="env steps per run, a positive integer")
    steps_per_epoch: StrictInt = Field(
        20_000, gt=0, description="env steps per epoch, a positive integer <= budget"
    )
    cost_limit: CostLimits = Field(
        25.0,
        description="the episodic cost limit d of every env without its own, >= 0; a list of "
        "distinct limits such as [15, 25, 35] sweeps it: one run per limit",
    )
    eval: EvalProtocol = Field(default_factory=EvalProtocol, description="evaluation protocol")
    resources: Resources = Field(default_factory=Resources, description="resources per run")
    logging: LoggingProtocol = Field(
        default_factory=LoggingProtocol, description="live logging: {tensorboard, wandb}"
    )
    num_envs: StrictInt = Field(1, ge=1, description="envs stepped in lock-step per run, >= 1")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto, cpu or cuda")
    output: StrictStr | None = Field(
        None, min_length=1, description="results directory (default results/<name>)"
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _safe_name(value, "experiment name")

    @field_validator("algorithms", mode="before")
    @classmethod
    def _algorithms(cls, value: Any) -> Any:
        return _entries(value, "name")

    @field_validator("ours", mode="before")
    @classmethod
    def _ours(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value  # `ours: mine` = `ours: [mine]`

    @field_validator("environments", mode="before")
    @classmethod
    def _environments(cls, value: Any) -> Any:
        return _entries(value, "id")

    @field_validator("seeds", mode="before")
    @classmethod
    def _seeds(cls, value: Any) -> Any:
        return _seed_list(value)

    @field_validator("cost_limit", mode="before")
    @classmethod
    def _cost_limit(cls, value: Any) -> Any:
        return _check_limits(value)

    @property
    def output_dir(self) -> Path:
        """Where the runs go: ``output`` or ``results/<name>`` (relative to the working dir)."""
        return Path(self.output) if self.output else Path("results") / self.name

    @property
    def labels(self) -> list[str]:
        return [a.run_label for a in self.algorithms]

    def smoke(self) -> Experiment:
        """The same grid (at most two seeds) shrunk to a tiny budget, in its own directory.

        Every algorithm × environment cell still runs — with two epochs of
        ``SMOKE_STEPS_PER_EPOCH`` steps and one evaluation episode per epoch — so a smoke run
        exercises the whole pipeline in seconds per run. The name and output get ``-smoke`` so
        smoke results never mix with real ones.
        """
        steps = min(self.steps_per_epoch, SMOKE_STEPS_PER_EPOCH)
        episodes = min(self.eval.episodes, 1)
        return self.model_copy(
            update={
                "name": f"{self.name}-smoke",
                "seeds": self.seeds[:SMOKE_SEEDS],
                "budget": SMOKE_EPOCHS * steps,
                "environments": [e.model_copy(update={"budget": None}) for e in self.environments],
                "steps_per_epoch": steps,
                "eval": EvalProtocol(
                    episodes=episodes, deterministic=self.eval.deterministic, every_epochs=1
                ),
                "output": f"{self.output_dir}-smoke",
            }
        )


# ---------------------------------------------------------------------------------------------
# Loading with line numbers
# ---------------------------------------------------------------------------------------------

EXAMPLES: dict[str, str] = {
    "name": "name: my-experiment",
    "algorithms": "algorithms: [cpo, pcpo]",
    "environments": "environments: [SafetyPointGoal1-v0]",
    "seeds": "seeds: 3",
    "budget": "budget: 1000000",
    "id": "id: SafetyPointGoal1-v0",
}


def _model_at(loc: Path_) -> type[BaseModel] | None:
    """The model class that owns the last element of ``loc`` (for listing allowed keys)."""
    cls: Any = Experiment
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)):
            return None
        field = cls.model_fields.get(part)
        if field is None:
            return None
        cls = field.annotation
        while typing.get_origin(cls) in (list, typing.Union, types.UnionType, Annotated):
            args = [a for a in typing.get_args(cls) if a is not type(None)]
            cls = args[0]
    return cls if isinstance(cls, type) and issubclass(cls, BaseModel) else None


def _describe(err: Mapping[str, Any], loc: Path_) -> str:
    """One problem of a pydantic error, phrased for the YAML author, with the fix."""
    kind = err["type"]
    if kind == "extra_forbidden":
        field_loc = loc
    else:  # a list item is described by its list's field
        field_loc = loc
        while field_loc and isinstance(field_loc[-1], int):
            field_loc = field_loc[:-1]
    key = str(field_loc[-1]) if field_loc else ""
    owner = _model_at(field_loc) if field_loc else Experiment
    allowed = list(owner.model_fields) if owner is not None else []
    if kind == "extra_forbidden":
        near = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        hint = f"did you mean {near[0]!r}? " if near else ""
        return f"unknown key; {hint}allowed keys here: {', '.join(allowed)}"
    description = ""
    if owner is not None and key in owner.model_fields:
        description = owner.model_fields[key].description or ""
    if kind == "missing":
        example = EXAMPLES.get(key, f"{key}: ...")
        return f"missing required key; add it, e.g. '{example}'" + (
            f" ({description})" if description else ""
        )
    got = err.get("input")
    if kind in ("model_type", "dict_type") and isinstance(got, list | str | int | float):
        return f"expected a mapping of keys, got {got!r}" + (
            f"; {description}" if description else ""
        )
    msg = str(err["msg"])
    if msg.startswith("Value error, "):
        return msg.removeprefix("Value error, ")
    msg = re.sub(r"^(Input|List|String|Value) should", "must", msg)
    fix = f"; expected {description}" if description else ""
    if kind == "int_type" and isinstance(got, float | str):
        # A non-numeric string gets no integer hint.
        with contextlib.suppress(ValueError):
            value = float(got)
            if math.isfinite(value) and value.is_integer():
                fix += f" (write {int(value)})"
    return f"{msg} (got {got!r}){fix}"


def _validate(doc: YamlDocument) -> Experiment:
    if not isinstance(doc.data, dict):
        raise doc.error(
            (), f"the experiment must be a mapping of keys (name, algorithms, environments, "
            f"seeds, budget, ...), got a {type(doc.data).__name__}"
        )  # fmt: skip
    try:
        return Experiment.model_validate(doc.data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc: Path_ = tuple(err["loc"])
            problems.append(doc.error(loc, _describe(err, loc)))
        problems.sort(key=lambda p: p.line or 0)
        first = problems[0]
        if len(problems) > 1:
            rest = "; ".join(f"line {p.line}: {p.field}: {p.problem}" for p in problems[1:])
            raise ExperimentError(
                first.source, first.line, first.field, f"{first.problem}; {rest}"
            ) from None
        raise first from None


_ENV_CHECKED: set[str] = set()


def _check_env(env_id: str, kwargs: dict[str, Any]) -> None:
    """Create and close the env once per (id, kwargs) in this process: unknown ids fail here."""
    from safebench.envs.factory import make_env

    key = json.dumps([env_id, kwargs], sort_keys=True, default=repr)
    if key in _ENV_CHECKED:
        return
    make_env(env_id, **kwargs).close()
    _ENV_CHECKED.add(key)


def _check(exp: Experiment, doc: YamlDocument, *, check_envs: bool) -> None:
    """The checks beyond types: registry names and configs, unique names, envs that exist."""
    labels: dict[str, int] = {}
    for i, algo in enumerate(exp.algorithms):
        try:
            registry.resolve_config(algo.name, algo.config)
        except UserError as exc:
            field = "name" if not registry.is_registered(algo.name) else "config"
            raise doc.error(("algorithms", i, field), str(exc)) from None
        label = algo.run_label
        if label in labels:
            first = labels[label]
            raise doc.error(
                ("algorithms", i),
                f"the label {label!r} is already used by algorithms[{first}] (line "
                f"{doc.line(('algorithms', first))}); give each variant its own label, e.g. "
                f"{{name: {algo.name}, label: {algo.name}-v2, config: {{...}}}}",
            )
        _safe_name_or_error(doc, ("algorithms", i, "name"), label)
        labels[label] = i
    for i, name in enumerate(exp.ours):
        if name not in labels:
            raise doc.error(
                ("ours", i),
                f"{name!r} is not one of this experiment's algorithm labels {list(labels)}; "
                "'ours' names the label of a listed algorithm",
            )
    env_seen: dict[str, int] = {}
    for i, env in enumerate(exp.environments):
        if env.id in env_seen:
            first = env_seen[env.id]
            raise doc.error(
                ("environments", i),
                f"the env {env.id!r} is already listed as environments[{first}] (line "
                f"{doc.line(('environments', first))}); list each env once",
            )
        env_seen[env.id] = i
        if check_envs:
            try:
                _check_env(env.id, env.kwargs)
            except UserError as exc:
                raise doc.error(("environments", i), str(exc)) from None
            except Exception as exc:  # a custom env's constructor raised
                raise doc.error(
                    ("environments", i),
                    f"creating {env.id!r} with kwargs {env.kwargs} failed: "
                    f"{type(exc).__name__}: {exc}",
                ) from None
    seen: dict[int, int] = {}
    for i, seed in enumerate(exp.seeds):
        if seed in seen:
            raise doc.error(
                ("seeds", i), f"seed {seed} is listed twice (also seeds[{seen[seed]}]); "
                "every seed must be distinct"
            )  # fmt: skip
        seen[seed] = i
    if exp.steps_per_epoch > exp.budget:
        raise doc.error(
            ("steps_per_epoch",),
            f"{exp.steps_per_epoch} is larger than the budget ({exp.budget}); lower "
            "steps_per_epoch or raise budget",
        )
    for i, env in enumerate(exp.environments):
        if env.budget is not None and exp.steps_per_epoch > env.budget:
            raise doc.error(
                ("environments", i, "budget"),
                f"{env.budget} is smaller than steps_per_epoch ({exp.steps_per_epoch}); raise "
                "this env's budget or lower steps_per_epoch",
            )
    if exp.device == "cuda" and exp.resources.gpus == 0:
        raise doc.error(
            ("device",),
            "device 'cuda' needs a GPU per run; set resources.gpus (e.g. 1 or 0.5) or use "
            "device: auto",
        )


def _safe_name_or_error(doc: YamlDocument, path: Path_, name: str) -> None:
    if not NAME_RE.match(name):
        raise doc.error(path, f"{name!r} cannot be a directory name: give a label ({NAME_RULE})")


def parse_experiment(
    text: str, source: str = "<experiment>", *, smoke: bool = False, check_envs: bool = True
) -> Experiment:
    """Validate experiment YAML ``text`` completely; raise :class:`ExperimentError` if bad.

    ``check_envs`` creates every environment once (Safety-Gymnasium ones take a second or
    two); turn it off only where the envs are known to exist.
    """
    doc = YamlDocument(text, source)
    exp = _validate(doc)
    _check(exp, doc, check_envs=check_envs)
    return exp.smoke() if smoke else exp


def load_experiment(path: str | Path, *, smoke: bool = False) -> Experiment:
    """Read and validate an experiment file (see :func:`parse_experiment`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"experiment file {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise UserError(f"{str(path)!r} is a directory; give an experiment .yaml file") from None
    except UnicodeDecodeError:
        raise UserError(f"{str(path)!r} is not a UTF-8 text file") from None
    return parse_experiment(text, str(path), smoke=smoke)


def expand(experiment: Experiment) -> list[RunSpec]:
    """Every run of the grid (algorithm-major, then env, then cost limit, then seed) as a
    frozen RunSpec.

    A ``cost_limit`` list (the experiment's, or an env entry's own) sweeps the limit: each
    (algorithm, env, seed) cell runs once per limit. A run's limit is part of its spec, so
    the runs of one cell get distinct run ids (and run directories); a single limit gives
    exactly the spec, and the run id, it always gave.
    """
    root = experiment.output_dir.resolve()
    specs = []
    for algo in experiment.algorithms:
        config = registry.resolve_config(algo.name, algo.config).spec_dump()
        for env in experiment.environments:
            limits = experiment.cost_limit if env.cost_limit is None else env.cost_limit
            for limit in cost_limits(limits):
                for seed in experiment.seeds:
                    spec = RunSpec(
                        experiment=experiment.name,
                        algo=algo.name,
                        label=algo.run_label,
                        config=config,
                        env_id=env.id,
                        env_kwargs=env.kwargs,
                        seed=seed,
                        budget=experiment.budget if env.budget is None else env.budget,
                        steps_per_epoch=experiment.steps_per_epoch,
                        cost_limit=limit,
                        eval=experiment.eval.to_spec(),
                        num_envs=experiment.num_envs,
                        device=experiment.device,
                        logging=experiment.logging.to_spec(),
                    )
                    # Labels and env slugs are single safe path components; this guards it.
                    if root not in spec.run_dir(root).resolve().parents:
                        raise UserError(f"run {spec.label}/{spec.env_id} would leave {root}")
                    specs.append(spec)
    return specs
