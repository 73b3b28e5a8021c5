"""docs/experiment-yaml.md: generated from the experiment schema, and true to it.

The committed file must equal what ``scripts/tools/gen_docs.py`` renders now (a field added to
``safebench.schema.spec`` makes this fail until the file is regenerated), and the claims it makes
beyond the tables are checked against the code: the worked example loads, every rule under
"Checks beyond single keys" rejects its cases at the key it names, and the keys it says are
outside the run id leave every run id unchanged while all the others change them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from safebench.schema import specdoc
from safebench.schema.spec import Experiment, ExperimentError, expand, parse_experiment

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "experiment-yaml.md"
REGENERATE = specdoc.GENERATE


def test_committed_reference_is_up_to_date() -> None:
    committed = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
    assert committed == specdoc.experiment_reference(), (
        f"{DOC.relative_to(REPO)} differs from the schema in safebench/schema/spec.py; regenerate "
        f"it with `{REGENERATE}` and commit it"
    )


def test_gen_docs_check_mode() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "tools" / "gen_docs.py"), "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_key_of_every_section_has_a_row() -> None:
    text = specdoc.experiment_reference()
    sections: list[tuple[str, type[BaseModel]]] = [("Top-level keys", Experiment)]
    sections += [(heading, model) for _, heading, model in specdoc._sections()]
    for heading, model in sections:
        body = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
        for key, field in model.model_fields.items():
            row = next((r for r in body.splitlines() if r.startswith(f"| `{key}` |")), None)
            assert row is not None, f"{model.__name__}.{key} has no row under {heading!r}"
            assert field.description is None or field.description.split()[0] in row


def test_worked_example_is_valid() -> None:
    exp = parse_experiment(specdoc.worked_example(), "example", check_envs=False)
    assert exp.name and exp.algorithms and exp.environments


def test_short_forms_cover_the_grid_keys() -> None:
    example = yaml.safe_load(specdoc.worked_example())
    forms = {key: (written, read) for key, written, read in specdoc._short_forms(example)}
    assert {"algorithms", "environments", "seeds"} <= set(forms)
    assert forms["seeds"] == (3, [0, 1, 2])
    assert forms["algorithms"] == (["cpo"], [{"name": "cpo"}])


def test_a_key_given_twice_is_refused() -> None:
    text = _text(specdoc.CHECK_BASE) + "budget: 600\n"
    with pytest.raises(ExperimentError, match="duplicate key"):
        parse_experiment(text, "twice", check_envs=False)


def _text(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False)


def test_check_base_is_valid() -> None:
    parse_experiment(_text(specdoc.CHECK_BASE), "base")


@pytest.mark.parametrize(
    ("rule", "override", "field"),
    [
        pytest.param(check.rule, override, field, id=field)
        for check in specdoc.CHECKS
        for override, field in check.cases
    ],
)
def test_each_documented_check_is_enforced(rule: str, override: dict[str, Any], field: str) -> None:
    with pytest.raises(ExperimentError) as caught:
        parse_experiment(_text({**specdoc.CHECK_BASE, **override}), "case")
    assert caught.value.field == field, (rule, str(caught.value))


# One change per key of the experiment file (a new key needs one here too).
CHANGES: dict[str, Any] = {
    "name": "renamed",
    "description": "another description",
    "ours": ["ppo"],
    "algorithms": [{"name": "ppo", "config": {"gamma": 0.98}}],
    "environments": [{"id": "safebench/ContinuousTarget-v0", "cost_limit": 3.0}],
    "seeds": [5, 6],
    "budget": 600,
    "steps_per_epoch": 100,
    "cost_limit": 10.0,
    "eval": {"episodes": 3},
    "resources": {"cpus": 2},
    "logging": {"tensorboard": True},
    "num_envs": 2,
    "device": "cpu",
    "output": "somewhere-else",
}


def test_run_ids_depend_on_exactly_the_documented_keys() -> None:
    missing = set(Experiment.model_fields) - set(CHANGES)
    assert not missing, f"add a change of {sorted(missing)} to CHANGES in this test"
    outside = specdoc.keys_outside_run_id()
    base = [s.run_id for s in expand(parse_experiment(_text(specdoc.CHECK_BASE), check_envs=False))]
    for key, value in CHANGES.items():
        exp = parse_experiment(_text({**specdoc.CHECK_BASE, key: value}), check_envs=False)
        ids = [s.run_id for s in expand(exp)]
        if key in outside:
            assert ids == base, f"changing {key!r} changed run ids; the reference says it does not"
        else:
            assert set(ids).isdisjoint(base), f"changing {key!r} kept a run id"
