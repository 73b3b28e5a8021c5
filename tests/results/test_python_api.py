"""The Python API for results: ``safebench.load_runs`` / ``load_metrics`` / ``load_evaluations``,
and docs/python-api.md, whose code blocks run in order against a small synthetic results folder.

The folder has the quick-start grid's shape (five labels × two envs × two seeds, ten epochs of
2000 steps, an evaluation every five epochs), written as the store lays runs out, plus one
older run of a cell (superseded by a later re-run) and one run that never finished an epoch:
what a real folder holds after an edited experiment file and an interrupted launch.
"""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import safebench
from safebench.results import store
from safebench.schema.spec import EvalSpec, RunSpec

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "python-api.md"
LABELS = {"cpo": 30.0, "pcpo": 26.0, "p3o": 22.0, "kfcpo": 28.0, "ctrpo": 24.0}  # final cost
ENVS = {"SafetyHopperVelocity-v1": 25.0, "safebench/ContinuousTarget-v0": 5.0}  # cost limit
EPOCHS, STEPS = 10, 2000


def _spec(label: str, env: str, seed: int, budget: int = EPOCHS * STEPS) -> RunSpec:
    return RunSpec(
        experiment="quickstart",
        algo=label,
        env_id=env,
        seed=seed,
        budget=budget,
        steps_per_epoch=STEPS,
        cost_limit=ENVS[env],
        eval=EvalSpec(episodes=5, every_epochs=5),
    )


def _rows(spec: RunSpec, rng: np.random.Generator) -> list[dict[str, float]]:
    scale = 1000.0 if spec.env_id.startswith("Safety") else 20.0
    final_cost = LABELS[spec.algo] * spec.cost_limit / 25.0
    rows = []
    for epoch in range(spec.epochs):
        progress = (epoch + 1) / spec.epochs
        ret = scale * progress * (1.0 + 0.02 * len(spec.algo)) + rng.normal(0, scale / 50)
        cost = final_cost * (2.0 - progress) + rng.normal(0, spec.cost_limit / 10)
        evaluated = (epoch + 1) % spec.eval.every_epochs == 0
        rows.append(
            {
                "epoch": epoch,
                "steps": (epoch + 1) * STEPS,
                "episodes": (epoch + 1) * 2,
                "ep_ret": ret,
                "ep_cost": max(cost, 0.0),
                "ep_len": 1000.0,
                "epoch_episodes": 2,
                "eval_ret": ret * 1.05 if evaluated else float("nan"),
                "eval_cost": max(cost, 0.0) if evaluated else float("nan"),
                "eval_len": 1000.0 if evaluated else float("nan"),
                "algo/kl": 0.01,
                "time_rollout": 1.0,
                "time_update": 0.5,
                "time_eval": 0.1 if evaluated else 0.0,
                "wall_time": 1.6 * (epoch + 1),
            }
        )
    return rows


def _write(root: Path, spec: RunSpec, rows: list[dict[str, float]] | None, status: str) -> Path:
    run_dir = spec.run_dir(root)
    store.atomic_write_json(
        run_dir / "spec.json", {**spec.model_dump(mode="json"), "run_id": spec.run_id}
    )
    if rows is not None:
        store.write_metrics(run_dir / "metrics.parquet", rows)
    store.write_status(run_dir, status)  # type: ignore[arg-type]
    return run_dir


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working directory holding ``results/quickstart``."""
    cwd = tmp_path_factory.mktemp("api")
    root = cwd / "results" / "quickstart"
    rng = np.random.default_rng(0)
    # An earlier version of the experiment (half the budget): superseded by the re-run below.
    old = _spec("cpo", "SafetyHopperVelocity-v1", 0, budget=EPOCHS * STEPS // 2)
    old_dir = _write(root, old, _rows(old, rng), "done")
    past = (old_dir / "spec.json").stat().st_mtime_ns - 3_600 * 10**9
    os.utime(old_dir / "spec.json", ns=(past, past))
    for label in LABELS:
        for env in ENVS:
            for seed in (0, 1):
                spec = _spec(label, env, seed)
                _write(root, spec, _rows(spec, rng), "done")
    # A third seed that was queued but never finished an epoch.
    _write(root, _spec("ctrpo", "SafetyHopperVelocity-v1", 2), None, "queued")
    return cwd


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_doc_code_runs_as_a_script(workdir: Path, tmp_path: Path) -> None:
    blocks = python_blocks(DOC.read_text(encoding="utf-8"))
    assert len(blocks) >= 8
    script = tmp_path / "python_api.py"
    script.write_text("\n".join(blocks), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)], cwd=workdir, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, (
        f"the code of {DOC.name} failed (exit {done.returncode}):\n{done.stderr[-4000:]}"
    )
    # 20 runs of the grid, the older re-run and the queued one; then the doc keeps the newest
    assert done.stdout.startswith("22 runs\n"), done.stdout[:500]


def test_load_runs_and_the_newest_runs_of_the_doc(workdir: Path) -> None:
    runs = safebench.load_runs(workdir / "results" / "quickstart")
    assert runs["run_id"].nunique() == 22
    assert {"algo", "algo_name", "env", "seed", "status", "run_dir", "created_ns"} <= set(runs)
    queued = runs[runs["status"] == "queued"]
    assert len(queued) == 1 and queued["epoch"].isna().all()
    newest = (
        runs.drop_duplicates("run_id")
        .sort_values("created_ns")
        .drop_duplicates(["algo", "env", "seed"], keep="last")
    )
    assert len(newest) == 21
    old = _spec("cpo", "SafetyHopperVelocity-v1", 0, budget=EPOCHS * STEPS // 2).run_id
    assert old in set(runs["run_id"]) and old not in set(newest["run_id"])


def test_load_metrics(workdir: Path, tmp_path: Path) -> None:
    spec = _spec("pcpo", "safebench/ContinuousTarget-v0", 1)
    run_dir = spec.run_dir(workdir / "results" / "quickstart")
    frame = safebench.load_metrics(run_dir)
    assert len(frame) == EPOCHS and list(frame["epoch"]) == list(range(EPOCHS))
    pd.testing.assert_frame_equal(frame, safebench.load_metrics(str(run_dir / "metrics.parquet")))
    pd.testing.assert_frame_equal(frame, store.read_metrics(run_dir / "metrics.parquet"))

    queued = _spec("ctrpo", "SafetyHopperVelocity-v1", 2).run_dir(
        workdir / "results" / "quickstart"
    )
    with pytest.raises(FileNotFoundError, match="no epoch finished"):
        safebench.load_metrics(queued)
    with pytest.raises(NotADirectoryError):
        safebench.load_metrics(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "metrics.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(ValueError, match="not a parquet file"):
        safebench.load_metrics(broken)
    no_steps = tmp_path / "no-steps"
    store.write_metrics(no_steps / "metrics.parquet", [{"epoch": 0, "ep_ret": 1.0}])
    with pytest.raises(ValueError, match=r"wrong columns \(no steps\)"):
        safebench.load_metrics(no_steps)


def test_loaders_are_exported_and_imported_on_first_use() -> None:
    assert safebench.load_runs is store.load_runs
    assert safebench.load_evaluations is store.load_evaluations
    assert set(safebench.__all__) >= {"load_runs", "load_metrics", "load_evaluations"}
    with pytest.raises(AttributeError, match="no attribute 'load_everything'"):
        _ = safebench.load_everything
    code = (
        "import sys, safebench; light = 'safebench.results.store' not in sys.modules; "
        "from safebench import load_runs; print(light, 'safebench.results.store' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["True", "True"]


def test_doc_lists_every_function_of_analysis() -> None:
    from safebench import analysis

    text = DOC.read_text(encoding="utf-8").split("## Everything in `safebench.analysis`", 1)[1]
    listed = {
        name
        for row in text.splitlines()
        if row.startswith("| `")
        for name in re.findall(r"`(\w+)", row.split("|")[1])
    }
    public = {n for n in analysis.__all__ if inspect.isfunction(getattr(analysis, n))}
    assert listed == public, (
        f"docs/python-api.md: add {sorted(public - listed)}, drop {sorted(listed - public)}"
    )
