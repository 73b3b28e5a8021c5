"""The store owns every run directory (issue 28): no module of the package but
``safebench/results/store.py`` names a file or folder of a run directory (or of a results root).

Every ``.py`` file under ``safebench/`` is parsed and its string literals are looked at
(f-string parts included; docstrings and prose that merely mention a file are not paths):

* a literal that *is* a run file's name, or a path ending in one (``"metrics.parquet"``,
  ``"sub/spec.json"``), is a path built by hand;
* a run folder's name (``eval``, ``tb``, ``wandb``, ``omnisafe``) is a path built by hand where
  it is joined onto a path (``run_dir / "tb"``, ``.joinpath("eval")``) or kept in an
  upper-case constant (``TB_DIR = "tb"``): elsewhere these words mean other things (the
  ``eval`` command, the ``omnisafe`` import source).

Such code asks :class:`safebench.results.store.RunDir` (or the store's functions) instead. The names
below are the layout of docs/architecture.md#one-run; a test keeps them complete: every path
:class:`~safebench.results.store.RunDir` names is one of them. The last tests are RunDir's own: its
paths and its reads and writes (damaged runs, ``check_run`` and ``set_aside``: test_damage.py).
"""

from __future__ import annotations

import ast
import dataclasses
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "safebench"
OWNER = PACKAGE / "results" / "store.py"

RUN_FILES = {
    "spec.json",
    "status.json",
    "traceback.txt",
    "manifest.json",
    "metrics.parquet",
    "checkpoint.pt",
    "placement.json",
    "omnisafe.log",
    "omnisafe_error.json",
    "source_config.json",
    "DAMAGE.txt",
}
ROOT_FILES = {"experiment.yaml", "experiment.json", ".lock"}
RUN_FOLDERS = {"eval", "tb", "wandb", "omnisafe"}
FILE_NAME = re.compile(
    r"(?:^|/)(?:" + "|".join(re.escape(n) for n in sorted(RUN_FILES | ROOT_FILES)) + r")$"
)


def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _is_path_use(node: ast.Constant, parents: dict[ast.AST, ast.AST]) -> bool:
    """``x / "tb"``, ``x.joinpath("tb")`` or ``TB_DIR = "tb"``."""
    parent = parents.get(node)
    if isinstance(parent, ast.BinOp) and isinstance(parent.op, ast.Div):
        return True
    if isinstance(parent, ast.Call) and isinstance(parent.func, ast.Attribute):
        return parent.func.attr == "joinpath"
    if isinstance(parent, (ast.Assign, ast.AnnAssign)):
        targets = parent.targets if isinstance(parent, ast.Assign) else [parent.target]
        return any(isinstance(t, ast.Name) and t.id.isupper() for t in targets)
    return False


def run_file_literals(path: Path) -> Iterator[str]:
    """``line: literal`` of every string literal of ``path`` that names a run file by hand."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    parents = _parents(tree)
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
            continue
        text = node.value
        if FILE_NAME.search(text) or (text in RUN_FOLDERS and _is_path_use(node, parents)):
            yield f"{node.lineno}: {text!r}"


def test_no_module_but_the_store_names_a_run_file() -> None:
    """The package and the scripts (benchmarks and analyses build results folders too)."""
    assert OWNER.is_file()
    sources = [*sorted(PACKAGE.rglob("*.py")), *sorted((REPO / "scripts").rglob("*.py"))]
    found = {
        str(path.relative_to(REPO)): hits
        for path in sources
        if path != OWNER and (hits := list(run_file_literals(path)))
    }
    assert not found, (
        "run files named outside safebench/results/store.py (ask store.RunDir instead):\n"
        + "\n".join(f"{name}:{hit}" for name, hits in found.items() for hit in hits)
    )


def test_the_scan_sees_paths_built_by_hand(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        'from pathlib import Path\nTB_DIR = "tb"\nd = Path("r")\n'
        'a = d / "metrics.parquet"\nb = f"{d}/spec.json"\nc = d.joinpath("eval")\n'
        'e = d / "eval" / "x.json"\n'
        '"""A docstring about spec.json."""\n'
        'cmd = "eval"\nsource = ("omnisafe", "safepo")\nmsg = f"no spec.json in {d}"\n'
    )
    hits = sorted(run_file_literals(source), key=lambda hit: int(hit.split(":")[0]))
    assert hits == ["2: 'tb'", "4: 'metrics.parquet'", "5: '/spec.json'", "6: 'eval'", "7: 'eval'"]


def test_the_names_cover_everything_rundir_names() -> None:
    """Every path property of RunDir is a file or folder this test looks for."""
    from safebench.results.store import EXPERIMENT_RECORD, LOCK_FILE, RunDir

    run = RunDir(Path("root/label/env/seed0-0123abcd"))
    names = {
        getattr(run, attr).name
        for attr, value in vars(RunDir).items()
        if isinstance(value, property) and isinstance(getattr(run, attr), Path)
    }
    assert names, "RunDir names no file"
    assert names <= RUN_FILES | RUN_FOLDERS, names - (RUN_FILES | RUN_FOLDERS)
    assert {EXPERIMENT_RECORD, LOCK_FILE} <= ROOT_FILES


# --- RunDir: the layout, and its reads and writes (check_run / set_aside: test_damage.py) -----

RUN_ID = "0123abcd" + "0" * 56


def test_rundir_is_the_layout(tmp_path: Path) -> None:
    from safebench.results.store import RunDir, run_path

    run = RunDir.at(tmp_path, "cpo", "safebench/ContinuousTarget-v0", 3, RUN_ID)
    assert run.path == tmp_path / "cpo" / "safebench_ContinuousTarget-v0" / "seed3-0123abcd"
    assert run.path == run_path(tmp_path, "cpo", "safebench/ContinuousTarget-v0", 3, RUN_ID)
    as_text = RunDir(str(run.path))  # type: ignore[arg-type]  # a load_runs run_dir column
    assert as_text == run and isinstance(as_text.path, Path)
    files = {
        "spec": "spec.json",
        "status": "status.json",
        "traceback": "traceback.txt",
        "manifest": "manifest.json",
        "metrics": "metrics.parquet",
        "checkpoint": "checkpoint.pt",
        "placement": "placement.json",
        "evaluations": "eval",
        "tensorboard": "tb",
        "wandb": "wandb",
        "omnisafe_logs": "omnisafe",
        "omnisafe_console": "omnisafe.log",
        "omnisafe_error": "omnisafe_error.json",
        "source_config": "source_config.json",
    }
    for attr, name in files.items():
        assert getattr(run, attr) == run.path / name, attr
    assert run.evaluation("epoch5-deterministic-seed0-10ep") == (
        run.path / "eval" / "epoch5-deterministic-seed0-10ep.json"
    )
    videos = tmp_path / "videos"
    assert run.video(videos, "cpo", "safebench/ContinuousTarget-v0", "e", 2) == (
        videos / "cpo" / "safebench_ContinuousTarget-v0" / "seed3-0123abcd" / "e-ep2.mp4"
    )
    with pytest.raises(ValueError, match="not a safe file name"):
        run.evaluation("../elsewhere")
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.path = tmp_path  # type: ignore[misc]
    assert not run.path.exists()  # naming a file writes nothing


def test_spec_manifest_and_placement_round_trip(tmp_path: Path) -> None:
    from safebench.results.store import RunDir

    run = RunDir(tmp_path / "run")
    with pytest.raises(OSError):
        run.read_spec()
    with pytest.raises(OSError):
        run.read_placement()
    assert run.read_manifest() is None
    run.write_spec({"algo": "cpo", "seed": 1, "run_id": RUN_ID})
    run.write_manifest({"hostname": "h", "cpu": "c"})
    run.write_placement({"pid": 7})
    assert run.read_spec() == {"algo": "cpo", "seed": 1, "run_id": RUN_ID}
    assert json.loads(run.spec.read_text()) == run.read_spec()  # plain JSON, as before
    assert run.read_manifest() == {"hostname": "h", "cpu": "c"}
    assert run.read_placement() == {"pid": 7}
    run.spec.write_text("{trunc")
    with pytest.raises(ValueError):
        run.read_spec()
    run.manifest.write_text("[1, 2]")
    assert run.read_manifest() is None
    assert sorted(p.name for p in run.path.iterdir()) == [
        "manifest.json",
        "placement.json",
        "spec.json",
    ]  # atomic writes leave no temporary file behind


def test_status_reads_and_writes_through_the_record(tmp_path: Path) -> None:
    from safebench.results.store import RunDir, read_status, write_status

    run = RunDir(tmp_path / "run")
    assert run.read_status() == {"status": "queued"}  # absent
    run.record.running(pid=3)
    assert run.read_status()["status"] == "running" and run.read_status()["pid"] == 3
    assert run.record.status == "running"
    run.record.failed(RuntimeError("boom"))
    assert run.read_status()["error"] == "RuntimeError: boom"
    assert "RuntimeError: boom" in run.traceback.read_text()
    write_status(run.path, "done", steps=10)  # the module function is the same write
    assert read_status(run.path) == run.read_status()
    assert run.read_status()["steps"] == 10
    run.status.write_text("")
    assert run.read_status() == {"status": "queued", "damaged": "empty"}


def test_metrics_from_rows_or_a_frame_are_the_same_bytes(tmp_path: Path) -> None:
    from safebench.results.store import RunDir, write_metrics

    rows = [{"epoch": i, "steps": 100 * (i + 1), "ep_ret": 0.5 * i} for i in range(3)]
    a, b = RunDir(tmp_path / "a"), RunDir(tmp_path / "b")
    with pytest.raises(OSError):
        a.read_metrics()
    a.write_metrics(rows)
    b.write_metrics(pd.DataFrame(rows))
    assert a.metrics.read_bytes() == b.metrics.read_bytes()
    write_metrics(tmp_path / "c.parquet", rows)  # the module function: any parquet path
    assert (tmp_path / "c.parquet").read_bytes() == a.metrics.read_bytes()
    pd.testing.assert_frame_equal(a.read_metrics(), pd.DataFrame(rows))
    assert a.read_metrics(columns=["steps"])["steps"].tolist() == [100, 200, 300]


def test_evaluations_and_checkpoint(tmp_path: Path) -> None:
    from safebench.results.store import RunDir, read_evaluations, write_evaluation

    run = RunDir(tmp_path / "run")
    assert run.read_evaluations() == [] and not run.has_checkpoint()
    second = run.write_evaluation("b", {"created": "2026-01-02", "x": 2})
    first = write_evaluation(run.path, "a", {"created": "2026-01-01", "x": 1})
    assert (first, second) == (run.evaluation("a"), run.evaluation("b"))
    (run.evaluations / "foreign.json").write_text('{"format": "other"}')
    (run.evaluations / "broken.json").write_text("{")
    records = run.read_evaluations()
    assert [r["x"] for r in records] == [1, 2]  # oldest first; foreign and broken files left out
    assert records[0]["file"] == str(first) and records[0]["format"] == "safebench-eval/1"
    assert read_evaluations(run.path) == records
    run.checkpoint.mkdir()
    assert not run.has_checkpoint()  # a folder is no checkpoint
    run.checkpoint.rmdir()
    run.checkpoint.write_bytes(b"PK")
    assert run.has_checkpoint()


def test_a_run_written_through_rundir_checks_healthy(tmp_path: Path) -> None:
    from safebench.results.store import RunDir, iter_run_dirs, load_runs

    run = RunDir.at(tmp_path, "cpo", "safebench/ContinuousTarget-v0", 3, RUN_ID)
    spec = {"algo": "cpo", "env_id": "safebench/ContinuousTarget-v0", "seed": 3}
    run.write_spec({**spec, "cost_limit": 5.0, "run_id": RUN_ID, "label": "cpo"})
    run.write_manifest({"hostname": "h"})
    run.write_metrics([{"epoch": 0, "steps": 10, "ep_ret": 1.0, "ep_cost": 2.0}])
    run.record.done()
    check = run.check()
    assert check.health == "healthy" and check.checkpoint == "missing"
    assert iter_run_dirs(tmp_path) == [run.path]
    runs = load_runs(tmp_path)
    assert runs["run_dir"].tolist() == [str(run.path)] and runs["ep_ret"].tolist() == [1.0]
    run.metrics.write_bytes(b"garbage")
    assert [d.file for d in run.check().damage] == [run.metrics.name]


def test_experiment_record_round_trip(tmp_path: Path) -> None:
    from safebench.results.store import EXPERIMENT_RECORD, read_experiment, write_experiment

    write_experiment(tmp_path, {"experiment": {"name": "x"}, "runs": []})
    assert read_experiment(tmp_path) == ({"name": "x"}, None)
    assert sorted(p.name for p in tmp_path.iterdir()) == [EXPERIMENT_RECORD]
    write_experiment(tmp_path, {"experiment": {"name": "y"}, "runs": []}, "name: y\n")
    assert read_experiment(tmp_path) == ({"name": "y"}, None)
    assert (tmp_path / "experiment.yaml").read_text() == "name: y\n"
