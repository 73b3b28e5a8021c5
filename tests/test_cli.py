"""The console script: version, listings, doctor (subprocesses, as a user runs them)."""

from __future__ import annotations

import subprocess
import sys

import safebench


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
    for name in ("cpo", "pcpo", "p3o", "kfcpo", "ctrpo", "cvpo"):
        assert name in out.stdout
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


def test_unknown_command_and_bad_flag_exit_2() -> None:
    assert cli("no-such-command").returncode == 2
    bad = cli("train", "cpo", "safebench/ContinuousTarget-v0", "--steps", "-5")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_train_rejects_unknown_config_key_and_algorithm() -> None:
    out = cli("train", "cpo", "safebench/ContinuousTarget-v0", "--set", "target_kll=0.1")
    assert out.returncode == 2
    assert "unknown config key 'target_kll'" in out.stderr and "Traceback" not in out.stderr
    out = cli("train", "cpoo", "safebench/ContinuousTarget-v0")
    assert out.returncode == 2 and "Did you mean: cpo" in out.stderr
