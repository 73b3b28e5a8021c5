"""The experiment-file reference, ``docs/experiment-yaml.md``, rendered from the schema.

Every key, type, default, constraint and description comes from the pydantic models of
:mod:`safebench.schema.spec` (:class:`~safebench.schema.spec.Experiment` and the models of its
sections), the worked example from that module's docstring, and the short forms from what
validation makes of the example's values, so a field added to the schema appears in the
reference the next time it is generated. ``scripts/tools/gen_docs.py`` writes the file; a test
fails when the committed file differs from :func:`experiment_reference`.
"""

from __future__ import annotations

import inspect
import re
import textwrap
import types
import typing
from collections.abc import Iterator
from typing import Annotated, Any, Literal

import annotated_types
import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from safebench.schema import spec
from safebench.schema.spec import ID_PACKAGES, NAME_RULE, Experiment, RunSpec

__all__ = [
    "CHECKS",
    "CHECK_BASE",
    "GENERATE",
    "GRID_KEYS",
    "RUN_ID_EXCLUDES",
    "Check",
    "experiment_reference",
    "keys_outside_run_id",
    "worked_example",
]

GENERATE = ".venv/bin/python scripts/tools/gen_docs.py"
"""The command that regenerates the reference (from the repository root)."""

GRID_KEYS = ("algorithms", "environments", "seeds")
"""The experiment keys that make the grid: each run takes one entry of each."""

RUN_ID_EXCLUDES = ("experiment", "logging")
"""The fields of a run's spec that :attr:`RunSpec.run_id` leaves out."""


class Check(typing.NamedTuple):
    """A rule of :func:`safebench.schema.spec.parse_experiment` beyond the types of single keys.

    ``cases``: keys that, put over :data:`CHECK_BASE`, break the rule, each with the dotted
    field the error names (the test suite checks every one).
    """

    rule: str
    cases: tuple[tuple[dict[str, Any], str], ...]


CHECK_BASE: dict[str, Any] = {
    "name": "checks",
    "algorithms": ["ppo"],
    "environments": ["safebench/ContinuousTarget-v0"],
    "seeds": 2,
    "budget": 400,
    "steps_per_epoch": 200,
}
"""A small valid experiment: the starting point of every case of :data:`CHECKS`."""

_ENV = "safebench/ContinuousTarget-v0"

CHECKS: tuple[Check, ...] = (
    Check(
        "Every `name` in `algorithms` is a registered algorithm (`safebench list algorithms`), "
        "and every key of its `config` is one of that algorithm's settings, with a valid "
        "value (`safebench list algorithms --config NAME` lists them with their defaults).",
        (
            ({"algorithms": ["no-such-algo"]}, "algorithms[0].name"),
            (
                {"algorithms": [{"name": "ppo", "config": {"no_such_key": 1}}]},
                "algorithms[0].config",
            ),
        ),
    ),
    Check(
        "Labels are unique. An entry without a `label` is labelled by its name (`omnisafe:NAME` "
        "by `omnisafe-name`), so a second entry of the same algorithm needs a label of its own.",
        (({"algorithms": ["ppo", "ppo"]}, "algorithms[1]"),),
    ),
    Check(
        "Every entry of `ours` is the label of one of the `algorithms`.",
        (({"ours": ["no-such-label"]}, "ours[0]"),),
    ),
    Check(
        "Each environment is listed once, and each is created once before anything is "
        "written: an unknown id, a module that does not import or a constructor that raises is "
        "reported at its entry.",
        (
            ({"environments": [_ENV, _ENV]}, "environments[1]"),
            ({"environments": ["NoSuchEnv-v0"]}, "environments[0]"),
        ),
    ),
    Check("Seeds are distinct.", (({"seeds": [1, 1]}, "seeds[1]"),)),
    Check(
        "`steps_per_epoch` is at most `budget`, and at most the `budget` of every environment "
        "that sets its own.",
        (
            ({"steps_per_epoch": 500}, "steps_per_epoch"),
            ({"environments": [{"id": _ENV, "budget": 100}]}, "environments[0].budget"),
        ),
    ),
    Check(
        "The limits of a `cost_limit` list (a sweep), at the top level or in an environment "
        "entry, are distinct.",
        (
            ({"cost_limit": [5, 8, 5.0]}, "cost_limit"),
            ({"environments": [{"id": _ENV, "cost_limit": [1, 1]}]}, "environments[0].cost_limit"),
        ),
    ),
    Check(
        "`device: cuda` needs a GPU per run: `resources.gpus` above 0.",
        (({"device": "cuda"}, "device"),),
    ),
    Check(
        "A GPU share above 1 is a whole number of GPUs (`gpus: 2`, not `gpus: 1.5`).",
        (({"resources": {"gpus": 1.5}}, "resources.gpus"),),
    ),
    Check(
        f"The experiment's name and every label become directory names: {NAME_RULE}.",
        (
            ({"name": "my/experiment"}, "name"),
            ({"algorithms": [{"name": "ppo", "label": "my ppo"}]}, "algorithms[0].label"),
        ),
    ),
    Check(
        "Nothing is guessed: an unknown key is an error (with the nearest allowed key as a "
        "suggestion), and so is a key given twice.",
        (({"budgett": 400}, "budgett"),),
    ),
)


# ---------------------------------------------------------------------------------------------
# What the schema says
# ---------------------------------------------------------------------------------------------


def worked_example() -> str:
    """The example experiment of :mod:`safebench.schema.spec`'s docstring, as YAML text."""
    doc = spec.__doc__ or ""
    lines = doc.splitlines()
    start = next((i for i, line in enumerate(lines) if line.rstrip().endswith("::")), None)
    if start is None:
        raise ValueError(
            "safebench.schema.spec's docstring has no example block (a line ending '::')"
        )
    block: list[str] = []
    for line in lines[start + 1 :]:
        if line.strip() and not line.startswith(" "):
            break
        block.append(line)
    return textwrap.dedent("\n".join(block)).strip("\n") + "\n"


def _models(annotation: Any) -> Iterator[type[BaseModel]]:
    """The pydantic models an annotation holds (``Model``, ``list[Model]``, ``Model | None``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        return
    for arg in typing.get_args(annotation):
        yield from _models(arg)


def _sections() -> list[tuple[str, str, type[BaseModel]]]:
    """``(key, heading, model)`` of every nested section, in the order of the top level."""
    out = []
    for key, field in Experiment.model_fields.items():
        for model in _models(field.annotation):
            is_list = typing.get_origin(field.annotation) is list
            out.append((key, f"`{key}` entries" if is_list else f"`{key}`", model))
    return out


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.lower())
    return text.replace(" ", "-")


def _links() -> dict[type[BaseModel], str]:
    return {model: f"#{_anchor(heading)}" for _, heading, model in _sections()}


_PLAIN = {str: "string", int: "integer", float: "number", bool: "boolean"}


def _type(annotation: Any, links: dict[type[BaseModel], str], *, plural: bool = False) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Annotated:
        return _type(args[0], links, plural=plural)
    if origin in (typing.Union, types.UnionType):
        parts = [_type(a, links, plural=plural) for a in args if a is not type(None)]
        if type(None) in args:
            parts.append("null")
        return " or ".join(parts)
    if origin is Literal:
        return "one of " + ", ".join(f"`{_flow(v)}`" for v in args)
    if origin is list:
        return f"list of {_type(args[0], links, plural=True)}"
    if origin is dict:
        return "mappings" if plural else "mapping"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        name = "entries" if plural else "mapping"
        return f"[{name}]({links[annotation]})" if annotation in links else name
    if annotation is Any:
        return "any value"
    name = _PLAIN.get(annotation, getattr(annotation, "__name__", str(annotation)))
    return f"{name}s" if plural else name


def _bounds(metadata: list[Any], *, is_list: bool) -> list[str]:
    out = []
    for item in metadata:
        if isinstance(item, FieldInfo):
            out += _bounds(item.metadata, is_list=is_list)
        elif isinstance(item, annotated_types.Ge):
            out.append(f"≥ {item.ge}")
        elif isinstance(item, annotated_types.Gt):
            out.append(f"> {item.gt}")
        elif isinstance(item, annotated_types.Le):
            out.append(f"≤ {item.le}")
        elif isinstance(item, annotated_types.Lt):
            out.append(f"< {item.lt}")
        elif isinstance(item, annotated_types.MinLen):
            n = item.min_length
            if is_list:
                out.append(f"at least {n} item" + ("s" if n != 1 else ""))
            else:
                out.append("not empty" if n == 1 else f"at least {n} characters")
        elif isinstance(item, annotated_types.MaxLen):
            unit = "items" if is_list else "characters"
            out.append(f"at most {item.max_length} {unit}")
    return out


def _arm_bounds(annotation: Any, metadata: list[Any]) -> list[str]:
    """The bounds of one type (``metadata``: the field's own, or an ``Annotated`` arm's)."""
    if typing.get_origin(annotation) is Annotated:
        args = typing.get_args(annotation)
        return _arm_bounds(args[0], [*metadata, *annotation.__metadata__])
    is_list = typing.get_origin(annotation) is list
    parts = _bounds(metadata, is_list=is_list)
    if is_list:
        item = typing.get_args(annotation)[0]
        if typing.get_origin(item) is Annotated:
            parts += [f"each {b}" for b in _bounds(list(item.__metadata__), is_list=False)]
    return parts


def _constraints(field: FieldInfo) -> str:
    annotation = field.annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        # a number or a list of numbers: each arm's bounds, the list's marked as such
        arms = [a for a in typing.get_args(annotation) if a is not type(None)]
        parts = []
        for arm in arms:
            bounds = _arm_bounds(arm, list(field.metadata))
            plain = typing.get_args(arm)[0] if typing.get_origin(arm) is Annotated else arm
            if bounds and len(arms) > 1 and typing.get_origin(plain) is list:
                parts.append("a list: " + ", ".join(bounds))
            else:
                parts += bounds
        return "; ".join(parts)
    return "; ".join(_arm_bounds(annotation, list(field.metadata)))


def _flow(value: Any) -> str:
    """``value`` as one line of YAML flow style (``{episodes: 10}``, ``[0, 1]``, ``true``)."""
    text = yaml.safe_dump(
        value, default_flow_style=True, sort_keys=False, width=1_000_000, allow_unicode=True
    ).strip()
    return text.removesuffix("...").strip()


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "**required**"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if value is None:
        return "not set"
    return f"`{_flow(value)}`"


def _cell(text: str) -> str:
    """One table cell: on one line, ``<=``/``>=`` as signs, no ``<word`` read as an HTML tag."""
    text = " ".join(text.split()).replace(">=", "≥").replace("<=", "≤")
    return re.sub(r"<(?=[A-Za-z/!?])", "&lt;", text).replace("|", "\\|")


def _table(model: type[BaseModel], links: dict[type[BaseModel], str]) -> list[str]:
    out = [
        "| key | type | default | constraints | description |",
        "|---|---|---|---|---|",
    ]
    for key, field in model.model_fields.items():
        out.append(
            f"| `{key}` | {_type(field.annotation, links)} | {_default(field)} | "
            f"{_cell(_constraints(field))} | {_cell(field.description or '')} |"
        )
    return out


def _summary(model: type[BaseModel]) -> str:
    """The first paragraph of a model's docstring, with its reST markup made plain."""
    doc = inspect.getdoc(model) or ""
    first = " ".join(doc.split("\n\n")[0].split())
    first = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", first)
    return first.replace("``", "`")


def _dump(value: Any) -> Any:
    """A validated value as the plain data it stands for (defaults left out)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_defaults=True)
    if isinstance(value, list):
        return [_dump(v) for v in value]
    return value


def _short_forms(example: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(key, written, read as)`` for every key whose validation rewrites a short form.

    The keys are those with a validator that runs before the type check; the short form is
    found by trying values taken from the worked example (a list's items alone, the list,
    its first item), then a generic string or number, and keeping the first one that
    validates into something else.
    """
    before = {
        key
        for decorator in Experiment.__pydantic_decorators__.field_validators.values()
        if decorator.info.mode == "before"
        for key in decorator.info.fields
    }
    out = []
    for key in Experiment.model_fields:
        if key not in before:
            continue
        value = example.get(key)
        candidates: list[Any] = []
        if isinstance(value, list):
            candidates += [[v] for v in value if isinstance(v, str | int)]
            candidates += [value, value[0]] if value else []
        elif value is not None:
            candidates.append(value)
        candidates += [["name"], "name", 3]
        for candidate in candidates:
            try:
                exp = Experiment.model_validate({**example, key: candidate})
            except ValidationError:
                continue
            read = _dump(getattr(exp, key))
            if read != candidate:
                out.append((key, candidate, read))
                break
    return out


def keys_outside_run_id() -> list[str]:
    """The experiment keys that no run id depends on (changing them keeps every run)."""
    in_id = set(RunSpec.model_fields) - set(RUN_ID_EXCLUDES)
    return [k for k in Experiment.model_fields if k not in in_id and k not in GRID_KEYS]


# ---------------------------------------------------------------------------------------------
# The document
# ---------------------------------------------------------------------------------------------


def _codes(names: list[str] | tuple[str, ...], last: str = "and") -> str:
    quoted = [f"`{n}`" for n in names]
    return ", ".join(quoted[:-1]) + f" {last} {quoted[-1]}" if len(quoted) > 1 else quoted[0]


def _para(text: str) -> str:
    """A paragraph, wrapped (a code span may wrap: Markdown reads its newline as a space)."""
    return textwrap.fill(
        " ".join(text.split()), width=92, break_long_words=False, break_on_hyphens=False
    )


def _bullet(text: str) -> str:
    return textwrap.fill(
        " ".join(text.split()),
        width=92,
        initial_indent="* ",
        subsequent_indent="  ",
        break_long_words=False,
        break_on_hyphens=False,
    )


def _lead(key: str) -> str:
    """A section's opening line: its key's description, as a sentence."""
    text = (Experiment.model_fields[key].description or "").strip().rstrip(".")
    return _cell(text[:1].upper() + text[1:] + ".") if text else ""


def _opening() -> list[str]:
    """The title, the generated-file notice, and what an experiment file is and how it is read."""
    return [
        "# The experiment file",
        "",
        f"<!-- Generated from safebench/schema/spec.py by `{GENERATE}`; do not edit by hand. -->",
        "",
        _para(
            "An experiment file declares a grid — algorithms (with config overrides and named "
            "variants) × environments × seeds — and the budget and protocol that every run of "
            "the grid shares. `safebench run FILE` trains the grid; `safebench run FILE "
            "--dry-run` checks the file and lists its runs, with their run ids, without "
            "writing anything."
        ),
        "",
        _para(
            "The file is plain YAML: mappings, lists, strings, numbers and booleans, no tags. "
            'Types are strict: `"10"` in quotes is a string, and `10.0` is not an integer; an '
            "integer is accepted where a number is expected. The whole file is checked before "
            "anything is written, and a problem is reported on one line that names the file, "
            "the line, the key and the fix (exit code 2)."
        ),
    ]


def _short_forms_section(example: dict[str, Any]) -> list[str]:
    """The section "Short forms": every key that takes one, as written and as it is read."""
    out = [
        "## Short forms",
        "",
        "Some keys also take a shorter form, which is read as the long one:",
        "",
    ]
    forms = _short_forms(example)
    for key, written, read in forms:
        out.append(f"* `{key}: {_flow(written)}` is read as `{key}: {_flow(read)}`")
    if any(isinstance(read, list) and isinstance(read[0], dict) for _, _, read in forms):
        out += ["", "Within one list the short and the long form mix, as in the example above."]
    return out


def _run_ids_section() -> list[str]:
    """The section "Run ids, run directories and resuming": what a run id covers, where a run
    lives, and what editing the file between two launches keeps."""
    in_id = [k for k in RunSpec.model_fields if k not in RUN_ID_EXCLUDES]
    free = [k for k in keys_outside_run_id() if k not in ("name", "output")]
    return [
        "## Run ids, run directories and resuming",
        "",
        _para(
            "Each run of the grid (one algorithm entry × one environment × one seed, and × "
            "one cost limit where `cost_limit` lists several) gets a "
            f"run id: the sha256 of its resolved spec — {_codes(in_id)}, as written to the "
            "run's `spec.json`, with every config default filled in — and of the installed "
            f"versions of {_codes(ID_PACKAGES)}. The run lives in "
            "`<output>/<label>/<env>/seed<k>-<id8>/`, where `<id8>` is the first 8 hex digits "
            "of the id and `<env>` the env id with `/` and `:` replaced by `_`. The "
            f"experiment keys {_codes(keys_outside_run_id())} are not part of any run id."
        ),
        "",
        _para(
            "A list of cost limits — `cost_limit: [15, 25, 35]` at the top level, or in an "
            "environment entry for that environment alone — sweeps the limit: every algorithm "
            "× environment × seed runs once per limit. The limit is part of the run id, so the "
            "runs of one limit sit beside those of the others under `<label>/<env>/`, each "
            "with its own `<id8>` (its `spec.json` records its `cost_limit`); a single limit "
            "gives the run id it always gave, so a sweep that includes the limit an experiment "
            "had keeps its runs. `safebench report` treats each environment × limit of a sweep "
            "as a task of its own (`<env> @ d=<limit>`): a verdict per limit, and a line on "
            "whether the ranking of the methods holds across the limits."
        ),
        "",
        _para(
            "`safebench run` first writes the file as given (`<output>/experiment.yaml`), the "
            "validated experiment with the list of its run directories (`experiment.json`) "
            "and every run's `spec.json`, then trains. Running the same command again skips "
            "the runs that are done, resumes unfinished ones from their last checkpoint, and "
            "leaves failed runs alone unless given `--retry-failed`. Editing the file between "
            "two launches:"
        ),
        "",
        _bullet("adding an algorithm, environment or seed adds runs; the existing ones are kept;"),
        _bullet(
            "changing a value that enters the run id (a config key, the budget, a cost limit, "
            "the evaluation protocol, ...) gives new run ids, so those runs train from scratch "
            "in new directories; the old ones stay on disk, and `safebench report` counts only "
            "the newest run of each label, env and seed — of each limit, where the experiment "
            "sweeps the limit — and lists the older ones as superseded;"
        ),
        _bullet(
            "upgrading one of the packages above changes every run id, and so trains the whole "
            "grid again beside the old runs;"
        ),
        _bullet(
            f"changing {_codes(free, 'or')} keeps every run: none of them changes what a run "
            "computes;"
        ),
        _bullet("changing `output` starts the grid afresh in the new folder;"),
        _bullet(
            "the name is not part of the run id, but every run records it in its `spec.json`: "
            "with the default `output` a renamed experiment trains into `results/<new name>`, "
            "and a renamed experiment that keeps an explicit `output` is refused there (give "
            "it a folder of its own)."
        ),
        "",
        _para(
            "`--output DIR` on the command line overrides `output`. `--smoke` runs the same "
            "grid tiny (at most two seeds, two short epochs) as `<name>-smoke` in "
            "`<output>-smoke`, so smoke results never mix with real ones."
        ),
    ]


def experiment_reference() -> str:
    """``docs/experiment-yaml.md``: the experiment file, key by key, from the schema."""
    links = _links()
    example_text = worked_example()
    example = yaml.safe_load(example_text)
    Experiment.model_validate(example)  # the example is a valid experiment
    out = [
        *_opening(),
        "",
        "## A worked example",
        "",
        "```yaml",
        example_text.rstrip("\n"),
        "```",
        "",
        "## Top-level keys",
        "",
        _summary(Experiment),
        "",
        *_table(Experiment, links),
        "",
        *_short_forms_section(example),
    ]
    for key, heading, model in _sections():
        out += ["", f"## {heading}", "", _lead(key), "", *_table(model, links)]
    out += [
        "",
        "## Checks beyond single keys",
        "",
        "Besides the type and range of each key, loading an experiment checks:",
        "",
        *[_bullet(check.rule) for check in CHECKS],
        "",
        *_run_ids_section(),
        "",  # the file ends with a newline
    ]
    return "\n".join(out)
