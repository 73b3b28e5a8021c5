"""The console script: version, listings, doctor (subprocesses, as a user runs them)."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest

import safebench
from safebench import registry
from safebench.results.store import (
    RunStatus,
    atomic_write_json,
    run_path,
    write_metrics,
    write_status,
)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "safebench.cli", *args], capture_output=True, text=True
    )


def test_version() -> None:
    out = cli("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"safebench {safebench.__version__}"


def test_list_envs_groups_and_sizes() -> None:
    out = cli("list", "envs")
    assert out.returncode == 0, out.stderr
    for group in ("built-in", "navigation/Goal", "navigation/Button", "velocity"):
        assert group in out.stdout
    assert "SafetyPointGoal1-v0" in out.stdout and "SafetyHopperVelocity-v1" in out.stdout


def test_list_algorithms() -> None:
    out = cli("list", "algorithms")
    assert out.returncode == 0, out.stderr
    # every registered algorithm, as a row of the table's name column
    names = {line.split("│")[1].strip() for line in out.stdout.splitlines() if line[:1] == "│"}
    assert set(registry.available()) <= names, names
    # the reference backend's algorithms, as experiment files name them (omnisafe:<NAME>)
    text = " ".join(out.stdout.split())  # rich wraps long lines at the terminal width
    on_policy = text.split("on-policy implementations:")[1].split("omnisafe:")[0]
    listed = {n.strip() for n in on_policy.split(",")}
    assert {"CPO", "PCPO", "P3O", "PPOLag", "TRPOLag"} <= listed, listed
    detail = cli("list", "algorithms", "--config", "cpo")
    assert detail.returncode == 0, detail.stderr
    assert "target_kl" in detail.stdout and "0.01" in detail.stdout and "[H]" in detail.stdout


def test_doctor_reports_versions() -> None:
    out = cli("doctor")
    assert out.returncode == 0, out.stdout + out.stderr
    for part in ("torch", "mujoco", "safety-gymnasium", "ray", "all good"):
        assert part in out.stdout


@pytest.mark.parametrize("command", ["report", "plan"])
def test_report_and_plan_reject_a_bad_final_mode_alike(command: str, tmp_path: Path) -> None:
    """The options the two commands share are declared once; both check --final the same way,
    before reading anything."""
    out = cli(command, str(tmp_path), "--final", "median")
    assert out.returncode == 2
    assert "--final must be last, last-k or eval (got 'median')" in out.stderr
    assert "Traceback" not in out.stderr


def test_unknown_command_and_bad_flag_exit_2() -> None:
    assert cli("no-such-command").returncode == 2
    bad = cli("train", "cpo", "safebench/ContinuousTarget-v0", "--steps", "-5")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_train_rejects_unknown_config_key_and_algorithm() -> None:
    out = cli("train", "cpo", "safebench/ContinuousTarget-v0", "--set", "target_kll=0.1")
    assert out.returncode == 2
    assert "unknown config key 'target_kll'" in out.stderr and "Traceback" not in out.stderr
    assert "did you mean 'target_kl'?" in out.stderr
    out = cli("train", "cpoo", "safebench/ContinuousTarget-v0")
    assert out.returncode == 2 and "Did you mean: cpo" in out.stderr


def test_train_refuses_an_epoch_longer_than_the_budget(tmp_path: Path) -> None:
    """The rule ``run`` applies to an experiment file: steps_per_epoch ≤ budget."""
    out = cli(
        "train", "cpo", "safebench/ContinuousTarget-v0", "--steps", "500",
        "--steps-per-epoch", "1000", "--out", str(tmp_path / "r"),
    )  # fmt: skip
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "--steps-per-epoch 1000 is larger than --steps 500" in out.stderr
    assert not (tmp_path / "r").exists()  # nothing written


def test_status_fits_80_columns_one_line_per_run(tmp_path: Path) -> None:
    """``safebench status`` at 80 columns: short env ids, every run on one whole line,
    errors and notes below the table (long env ids and labels used to wrap over 4 lines)."""
    envs = {
        "SafetyRacecarButton2-v0": "RacecarButton2",
        "SafetyHalfCheetahVelocity-v1": "HalfCheetahVelocity",
        "safebench/ContinuousTarget-v0": "ContinuousTarget",
    }
    runs = []
    for i, (label, env, seed) in enumerate(
        itertools.product(["omnisafe-trpolag", "ctrpo-slow"], envs, [0, 1])
    ):
        run_id = f"{i:08x}" + "ab" * 28
        run_dir = run_path(tmp_path, label, env, seed, run_id)
        run_dir.mkdir(parents=True)
        spec = {"run_id": run_id, "algo": label, "label": label, "env_id": env, "seed": seed}
        spec.update(budget=2_000_000, steps_per_epoch=20_000, cost_limit=25.0)
        atomic_write_json(run_dir / "spec.json", spec)
        state: RunStatus = ("done", "failed", "queued")[i % 3]
        error = RuntimeError("non-finite values at epoch 17: algo/kl, ep_ret; it diverged")
        write_status(run_dir, state, error=error if state == "failed" else None)
        if state == "done":
            rows = [{"epoch": e, "steps": 20_000 * (e + 1)} for e in range(100)]
            write_metrics(run_dir / "metrics.parquet", rows)
        runs.append((label, envs[env], seed, run_id[:8], state))
    out = subprocess.run(
        [sys.executable, "-m", "safebench.cli", "status", str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "80"},
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, out.stdout
    for label, env, _seed, run8, state in runs:
        # the run's row holds all of it, unabbreviated, on one line
        row = [line for line in lines if run8 in line and line.startswith(label)]
        assert len(row) == 1, (run8, out.stdout)
        assert env in row[0].split() and state in row[0] and "…" not in row[0], row[0]
        assert ("100/100" if state == "done" else "0/100") in row[0]
    failed = [r for r in runs if r[4] == "failed"]
    notes = [line for line in lines if line.startswith("failed ")]
    text = " ".join(out.stdout.split())  # the notes wrap at the width, as prose does
    assert len(notes) == len(failed) and text.count("non-finite values at epoch 17") == 4
    assert f"{len(runs)} runs: 4 done, 4 queued, 4 failed; no launcher active" in out.stdout
