"""Config evolution keeps run ids: results written before a config field existed still match.

Two fixtures were written by safebench before the baselines' config fields (``cost_estimate``,
``joint_grad_clip``, P3O's ``variant`` and ``cost_form``) existed and before the trust-region
fields moved into one shared block:

* ``fixtures/run_ids_main.json`` — the run id of every run of every experiment in
  ``experiments/`` as that version expanded them;
* ``fixtures/main-root`` (+ ``main-root.yaml``) — a results root that version trained (one tiny
  run per algorithm it had; checkpoints removed to keep it small).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from safebench.cli.app import app
from safebench.schema.spec import expand, load_experiment

FIXTURES = Path(__file__).parents[1] / "fixtures"
REPO = Path(__file__).parents[2]


# Runs whose experiment file itself changed the method since (not a config field's doing):
# the C-TRPO table now runs P3O as the paper's runs did (variant: official).
CHANGED_ON_PURPOSE = {("experiments/ctrpo_table.yaml", "p3o")}


def test_every_experiment_keeps_the_run_ids_of_the_earlier_version() -> None:
    before: dict[str, dict[str, str]] = json.loads((FIXTURES / "run_ids_main.json").read_text())
    assert sum(len(ids) for ids in before.values()) > 900
    for path, ids in before.items():
        now = {s.run_id for s in expand(load_experiment(REPO / path))}
        # An experiment may have gained runs (new algorithms); no old id may change.
        changed = {
            run: what
            for run, what in ids.items()
            if run not in now and (path, what.split()[0]) not in CHANGED_ON_PURPOSE
        }
        assert not changed, (
            f"{path}: {len(changed)} run ids changed, e.g. {next(iter(changed.values()))}"
        )


def test_a_results_root_written_before_is_recognised_as_done(tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(FIXTURES / "main-root", root)
    metrics_before = {
        p.relative_to(root): pd.read_parquet(p) for p in root.rglob("metrics.parquet")
    }
    assert len(metrics_before) == 6
    result = CliRunner().invoke(
        app,
        ["run", str(FIXTURES / "main-root.yaml"), "--output", str(root), "--backend", "local"],
    )
    assert result.exit_code == 0, result.output
    # Nothing trained again, nothing new: the same six run directories, untouched metrics.
    after = {p.relative_to(root) for p in root.rglob("metrics.parquet")}
    assert after == set(metrics_before)
    for rel, frame in metrics_before.items():
        pd.testing.assert_frame_equal(pd.read_parquet(root / rel), frame)


@pytest.mark.parametrize(
    ("algo", "config"),
    [("cpo", {}), ("p3o", {}), ("ctrpo", {}), ("p3o", {"variant": "omnisafe"})],
)
def test_new_fields_at_their_default_leave_the_spec_as_it_was(
    algo: str, config: dict[str, str]
) -> None:
    from safebench import registry

    spec = registry.resolve_config(algo, config).spec_dump()
    for key in (
        "cost_estimate",
        "joint_grad_clip",
        "variant",
        "cost_form",
        "obs_normalizer",
        "truncation_bootstrap",
    ):
        assert key not in spec
