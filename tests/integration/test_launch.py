"""Many runs: the launcher's grid, skip/resume, failures, the lock, Ctrl-C, SIGKILL, Ray.

The envs below are custom ``module:Class`` envs that the launched runs import by name
(``tests.integration.test_launch:FlakyWalk``), in this process or in Ray workers.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import pandas as pd
import pytest
from rich.console import Console

import safebench.cli.app as cli_module
from safebench.cli.app import main
from safebench.errors import UserError
from safebench.experiment.launch import _check_resources, launch, prepare_runs
from safebench.results.store import experiment_lock, iter_run_dirs, lock_holder, read_status
from safebench.schema.spec import Experiment, RunSpec, expand, parse_experiment
from safebench.training.runner import metrics_frame, run, set_threads

REPO = Path(__file__).resolve().parents[2]
TIMING = ["time_rollout", "time_update", "time_eval", "wall_time"]
FAST_ENVS = ["safebench/ContinuousTarget-v0", "safebench/TabularCMDP-v0"]


class FlakyWalk(gymnasium.Env):
    """A 1-D walk whose ``step`` raises after ``after`` steps while the file ``marker`` exists."""

    def __init__(self, marker: str = "", after: int = 100) -> None:
        self.observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (1,), np.float32)
        self.action_space = gymnasium.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.marker, self.after, self.n, self.t = marker, after, 0, 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def reward(self) -> float:
        return 0.1

    def step(self, action: Any) -> Any:
        self.n += 1
        self.t += 1
        if self.marker and self.n > self.after and os.path.exists(self.marker):
            raise RuntimeError("boom: the marker file exists")
        a = float(np.asarray(action).reshape(-1)[0])
        return np.array([a], np.float32), self.reward(), 0.0, False, self.t >= 10, {}


class NaNWalk(FlakyWalk):
    """The 5th reward of every episode is NaN: the run's numbers go non-finite, every time."""

    def reward(self) -> float:
        return float("nan") if self.t == 5 else 0.1


class RendezvousWalk(FlakyWalk):
    """Each env's first ``reset`` marks its process in ``rendezvous`` and waits (up to 120 s)
    until ``count`` processes are marked: runs that use it finish only if they ran together."""

    def __init__(self, rendezvous: str = "", count: int = 2) -> None:
        super().__init__()
        self.rendezvous, self.count, self.met = Path(rendezvous), count, False

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        if not self.met:
            (self.rendezvous / str(os.getpid())).touch()
            deadline = time.monotonic() + 120.0
            while len(list(self.rendezvous.iterdir())) < self.count:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"rendezvous: fewer than {self.count} processes met")
                time.sleep(0.05)
            self.met = True
        return super().reset(seed=seed, options=options)


class CrashWalk(FlakyWalk):
    """Kills its own process on the 50th step, as a segfault or an OOM kill would."""

    def reward(self) -> float:
        if self.n == 50:
            os._exit(3)
        return 0.1


def yaml_text(
    output: Path,
    *,
    algorithms: str = "[cpo, pcpo]",
    environments: list[str] | None = None,
    seeds: int = 2,
    epochs: int = 4,
    steps: int = 400,
    extra: str = "",
) -> str:
    envs = ", ".join(environments or FAST_ENVS)
    return (
        f"name: grid\nalgorithms: {algorithms}\nenvironments: [{envs}]\nseeds: {seeds}\n"
        f"budget: {epochs * steps}\nsteps_per_epoch: {steps}\ncost_limit: 5\nnum_envs: 2\n"
        f"device: cpu\neval: {{episodes: 2, every_epochs: 2}}\noutput: {output}\n{extra}"
    )


def default_sigint() -> None:
    """Popen preexec: Ctrl-C acts in the child even where pytest itself was started in the
    background (``cmd &`` in a script), which leaves SIGINT ignored in everything it spawns."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def run_main(monkeypatch: pytest.MonkeyPatch, *argv: str) -> int:
    """``safebench ARGV`` in this process; its exit code."""
    monkeypatch.setattr(sys, "argv", ["safebench", *argv])
    monkeypatch.setattr(cli_module.console, "width", 250)  # tables unwrapped, for the assertions
    try:
        main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def numbers(run_dir: Path) -> pd.DataFrame:
    return metrics_frame(run_dir).drop(columns=TIMING)


def reference(specs: list[RunSpec], root: Path) -> Path:
    """The same runs, uninterrupted, in this process (one torch thread, as launched)."""
    set_threads(1)
    for spec in specs:
        run(spec, root)
    return root


def cli(*args: str, cwd: Path = REPO, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "safebench.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        **kw,
    )


def assert_grid_complete(exp: Experiment, root: Path) -> None:
    """Every run of the grid exactly once, done, with one metrics row per epoch."""
    specs = expand(exp)
    dirs = iter_run_dirs(root)
    assert sorted(dirs) == sorted(s.run_dir(root) for s in specs)  # none lost, none extra
    for spec in specs:
        run_dir = spec.run_dir(root)
        assert read_status(run_dir)["status"] == "done", run_dir
        assert list(numbers(run_dir)["epoch"]) == list(range(spec.epochs))  # no epoch twice


def assert_identical(specs: list[RunSpec], root: Path, ref_root: Path) -> None:
    for spec in specs:
        pd.testing.assert_frame_equal(numbers(spec.run_dir(root)), numbers(spec.run_dir(ref_root)))


# ---------------------------------------------------------------------------------------------
# Local backend: the grid, skipping, status, failures, retries, the lock
# ---------------------------------------------------------------------------------------------


def test_local_grid_skips_done_runs_and_status_shows_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    exp = parse_experiment(yaml_text(tmp_path / "out", environments=FAST_ENVS[:1], epochs=2))
    result = launch(exp, backend="local", source_text="name: grid\n", console=quiet())
    assert result.complete and not result.failed and len(result.outcomes) == 4
    root = tmp_path / "out"
    assert (root / "experiment.yaml").read_text() == "name: grid\n"
    recorded = json.loads((root / "experiment.json").read_text())
    assert len(recorded["runs"]) == 4 and recorded["experiment"]["name"] == "grid"
    for spec in expand(exp):
        placement = json.loads((spec.run_dir(root) / "placement.json").read_text())
        assert placement["backend"] == "local" and placement["torch_threads"] == 1
        assert placement["state"] == "done"
    mtimes = {d: (d / "metrics.parquet").stat().st_mtime_ns for d in iter_run_dirs(root)}
    again = launch(exp, backend="local", console=quiet())
    assert again.skipped_done == 4 and again.outcomes == [] and again.complete
    assert mtimes == {d: (d / "metrics.parquet").stat().st_mtime_ns for d in iter_run_dirs(root)}

    assert run_main(monkeypatch, "status", str(root)) == 0
    out = capsys.readouterr().out
    assert "4 runs: 4 done; no launcher active" in out
    assert out.count(" done ") == 4 and out.count("2/2") == 4 and "pcpo" in out


def test_failed_and_nan_runs_are_recorded_grid_continues_retry_failed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "boom"
    marker.touch()
    flaky = f'{{id: "tests.integration.test_launch:FlakyWalk", kwargs: {{marker: "{marker}"}}}}'
    nan = "tests.integration.test_launch:NaNWalk"
    text = yaml_text(
        tmp_path / "out", algorithms="[cpo]", environments=[flaky, nan, FAST_ENVS[0]], seeds=1,
        epochs=2,
    )  # fmt: skip
    (tmp_path / "exp.yaml").write_text(text)

    def run_cli(*extra: str) -> int:
        return run_main(
            monkeypatch, "run", str(tmp_path / "exp.yaml"), "--backend", "local", *extra
        )

    assert run_cli() == 1
    err = capsys.readouterr().err
    specs = {s.env_id.rpartition(":")[2]: s for s in expand(parse_experiment(text))}
    root = tmp_path / "out"
    flaky_dir, nan_dir = specs["FlakyWalk"].run_dir(root), specs["NaNWalk"].run_dir(root)
    assert read_status(specs["safebench/ContinuousTarget-v0"].run_dir(root))["status"] == "done"
    assert read_status(flaky_dir)["error"] == "RuntimeError: boom: the marker file exists"
    assert "boom" in (flaky_dir / "traceback.txt").read_text()
    nan_status = read_status(nan_dir)
    assert nan_status["status"] == "failed" and "non-finite" in nan_status["error"]
    assert "boom" in err and "non-finite" in err and "--retry-failed" in err

    # Without --retry-failed a failed run stays failed and is not touched.
    marker.unlink()
    before = read_status(flaky_dir)["time"]
    assert run_cli() == 1
    assert read_status(flaky_dir)["time"] == before
    # With it, the run is trained again (from its checkpoint) and now finishes.
    assert run_cli("--retry-failed") == 1  # the NaN run fails again, deterministically
    assert read_status(flaky_dir)["status"] == "done"
    assert len(metrics_frame(flaky_dir)) == 2
    assert read_status(nan_dir)["status"] == "failed"
    capsys.readouterr()
    assert run_main(monkeypatch, "status", str(root), "--only", "failed") == 0
    out = capsys.readouterr().out
    assert "non-finite" in out and "FlakyWalk" not in out and "2 done, 1 failed" in out


def test_lock_refuses_a_second_launcher_and_other_experiments_in_the_same_dir(
    tmp_path: Path,
) -> None:
    root = tmp_path / "out"
    exp = parse_experiment(yaml_text(root, algorithms="[cpo]", seeds=1, epochs=1))
    with experiment_lock(root):
        holder = lock_holder(root)
        assert holder is not None and holder["pid"] == os.getpid()
        with pytest.raises(UserError, match="another 'safebench run' is writing to"):
            launch(exp, backend="local", console=quiet())
        status = cli("status", str(root))
        assert "no runs" in status.stderr  # nothing was written by the refused launcher
    assert lock_holder(root) is None
    prepare_runs(expand(exp), root)
    other = parse_experiment(yaml_text(root, algorithms="[cpo]", seeds=1, epochs=1).replace(
        "name: grid", "name: other"
    ))  # fmt: skip
    with pytest.raises(UserError, match="already holds a run of experiment 'grid'"):
        launch(other, backend="local", console=quiet())


def test_ctrl_c_stops_cleanly_and_the_same_command_resumes(tmp_path: Path) -> None:
    root = tmp_path / "out"
    text = yaml_text(root, algorithms="[cpo]", environments=FAST_ENVS[:1], seeds=2, epochs=8)
    (tmp_path / "exp.yaml").write_text(text)
    args = [sys.executable, "-m", "safebench.cli", "run", str(tmp_path / "exp.yaml")]
    proc = subprocess.Popen(
        [*args, "--backend", "local"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        preexec_fn=default_sigint,
    )
    first = expand(parse_experiment(text))[0].run_dir(root)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (first / "metrics.parquet").exists() and len(metrics_frame(first)) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the grid finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    states = [read_status(d)["status"] for d in iter_run_dirs(root)]
    assert "running" not in states and "done" not in states
    assert read_status(first)["note"].startswith("interrupted")
    assert (first / "checkpoint.pt").exists()
    partial = len(metrics_frame(first))
    assert 2 <= partial < 8
    done = subprocess.run([*args, "--backend", "local"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert all(read_status(d)["status"] == "done" for d in iter_run_dirs(root))
    assert len(metrics_frame(first)) == 8


# ---------------------------------------------------------------------------------------------
# Ray: SIGKILL of the driver mid-grid, GPU placement, multi-node
# ---------------------------------------------------------------------------------------------


def test_ray_grid_sigkill_driver_then_rerun_completes_identically(tmp_path: Path) -> None:
    root = tmp_path / "grid"
    epochs = 10
    text = yaml_text(root, epochs=epochs, steps=200)
    (tmp_path / "exp.yaml").write_text(text)
    exp = parse_experiment(text)
    specs = expand(exp)
    args = [sys.executable, "-m", "safebench.cli", "run", str(tmp_path / "exp.yaml")]
    proc = subprocess.Popen([*args, "--num-cpus", "2"], cwd=REPO, stdout=subprocess.DEVNULL)
    at_kill: dict[str, int] = {}
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        states = [read_status(s.run_dir(root)).get("status") for s in specs]
        at_kill = {
            s.run_dir(root).name: len(metrics_frame(s.run_dir(root)))
            for s in specs
            if (s.run_dir(root) / "metrics.parquet").exists()
            and read_status(s.run_dir(root))["status"] == "running"
        }
        # Mid-grid: a run done, and one only started (so it cannot finish while dying).
        if "done" in states and any(0 < n <= epochs // 3 for n in at_kill.values()):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the grid finished before the driver could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # The local Ray instance dies with its driver: no worker keeps writing afterwards. What
    # the kill left is read once the files stand still.
    time.sleep(3)
    files = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    time.sleep(2)
    assert files == {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    by_dir = {s.run_dir(root): read_status(s.run_dir(root)).get("status") for s in specs}
    started = {d for d in by_dir if (d / "metrics.parquet").exists()}
    assert any(by_dir[d] == "queued" for d in set(by_dir) - started)  # never started
    # A worker ends either by its watchdog (the run stays "running") or by the SIGTERM its
    # raylet sends (an interrupt: "queued"); a launcher's death never fails a run.
    assert "failed" not in by_dir.values(), by_dir
    killed = [d for d in started if by_dir[d] != "done"]
    snapshot = {d: metrics_frame(d) for d in killed}
    lengths = {d.name: len(f) for d, f in snapshot.items()}
    # At least one was killed part-way, with epochs to keep (at the kill: epochs per run).
    assert any(0 < n < epochs for n in lengths.values()), (at_kill, lengths)
    status = cli("status", str(root), env={**os.environ, "COLUMNS": "250"})
    assert "no launcher active" in status.stdout
    if "running" in by_dir.values():
        assert "its launcher is gone" in status.stdout

    rerun = subprocess.run(
        [*args, "--num-cpus", "2"], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert rerun.returncode == 0, rerun.stderr
    assert "8/8 runs done" in rerun.stdout
    assert_grid_complete(exp, root)
    # Killed runs resumed from their checkpoints: the epochs trained before the kill are kept
    # as they were, timings included (a restart would have re-measured them) ...
    for run_dir, before in snapshot.items():
        pd.testing.assert_frame_equal(metrics_frame(run_dir).iloc[: len(before)], before)
    # ... and they end exactly where uninterrupted runs do.
    resumed = [s for s in specs if s.run_dir(root) in killed]
    assert_identical(resumed, root, reference(resumed, tmp_path / "ref"))


def test_fake_gpus_each_concurrent_run_sees_its_own_device(tmp_path: Path) -> None:
    root = tmp_path / "out"
    meeting = tmp_path / "rendezvous"
    meeting.mkdir()
    # Neither run steps until both runs' processes exist: they overlap by construction (a
    # wall-clock check failed when Ray started the second worker after the first, 0.8 s
    # long, run had finished).
    walk = (
        '{id: "tests.integration.test_launch:RendezvousWalk", '
        f'kwargs: {{rendezvous: "{meeting}"}}}}'
    )
    text = yaml_text(
        root, algorithms="[cpo]", environments=[walk], epochs=2,
        extra="resources: {cpus: 1, gpus: 1}\n",
    ).replace("device: cpu", "device: auto")  # fmt: skip
    exp = parse_experiment(text)
    result = launch(exp, backend="ray", num_cpus=2, num_gpus=2, console=quiet())
    assert result.complete, result.failed
    placements = []
    for spec in expand(exp):
        run_dir = spec.run_dir(root)
        placement = json.loads((run_dir / "placement.json").read_text())
        assert len(placement["gpu_ids"]) == 1 and placement["gpu_ids"][0] in ("0", "1")
        assert placement["cuda_visible_devices"] == placement["gpu_ids"][0]
        # No CUDA here: device 'auto' falls back to the CPU although a GPU was assigned.
        assert json.loads((run_dir / "manifest.json").read_text())["device"] == "cpu"
        placements.append(placement)
    a, b = placements
    assert a["started"] < b["finished"] and b["started"] < a["finished"], "runs did not overlap"
    assert a["gpu_ids"] != b["gpu_ids"]


def test_runs_asking_for_more_than_the_cluster_has_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import ray

    exp = parse_experiment(yaml_text(Path("unused"), extra="resources: {cpus: 2, gpus: 0.5}\n"))
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 4.0})
    with pytest.raises(UserError, match=r"resources.gpus=0.5 but the Ray cluster has 0 GPUs"):
        _check_resources(exp)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 1.0, "GPU": 1.0})
    with pytest.raises(UserError, match=r"resources.cpus=2 but the Ray cluster has 1 CPUs"):
        _check_resources(exp)


@pytest.mark.slow
def test_ctrl_c_on_ray_cancels_runs_and_keeps_checkpoints(tmp_path: Path) -> None:
    root = tmp_path / "out"
    text = yaml_text(root, algorithms="[cpo]", environments=FAST_ENVS[:1], seeds=2, epochs=30)
    (tmp_path / "exp.yaml").write_text(text)
    args = [sys.executable, "-m", "safebench.cli", "run", str(tmp_path / "exp.yaml")]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, preexec_fn=default_sigint)
    dirs = [s.run_dir(root) for s in expand(parse_experiment(text))]
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if all((d / "metrics.parquet").exists() for d in dirs):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    for d in dirs:
        assert read_status(d)["status"] == "queued" and (d / "checkpoint.pt").exists()
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert all(len(metrics_frame(d)) == 30 for d in dirs)


@pytest.mark.slow
def test_grid_on_a_local_multi_node_ray_cluster(tmp_path: Path) -> None:
    from ray.cluster_utils import Cluster

    root = tmp_path / "grid"
    text = yaml_text(root, epochs=4)
    (tmp_path / "exp.yaml").write_text(text)
    exp = parse_experiment(text)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        out = cli("run", str(tmp_path / "exp.yaml"), "--address", cluster.address, timeout=600)
        assert out.returncode == 0, out.stderr
        assert "on the Ray cluster at" in out.stdout
    finally:
        cluster.shutdown()
    nodes = {
        json.loads((s.run_dir(root) / "placement.json").read_text())["node_id"] for s in expand(exp)
    }
    assert len(nodes) == 2  # both nodes trained runs
    assert_grid_complete(exp, root)
    specs = expand(exp)
    assert_identical(specs, root, reference(specs, tmp_path / "ref"))


@pytest.mark.slow
def test_a_worker_that_dies_is_recorded_failed_and_the_grid_goes_on(tmp_path: Path) -> None:
    root = tmp_path / "out"
    crash = "tests.integration.test_launch:CrashWalk"
    text = yaml_text(root, algorithms="[cpo]", environments=[crash, FAST_ENVS[0]], seeds=1)
    exp = parse_experiment(text)
    result = launch(exp, backend="ray", num_cpus=2, console=quiet())
    assert [o.spec.env_id for o in result.failed] == [crash]
    crashed = result.failed[0].spec.run_dir(root)
    status = read_status(crashed)
    assert status["status"] == "failed" and "WorkerCrashedError" in status["error"]
    assert (crashed / "traceback.txt").exists()
    assert result.done == 1
