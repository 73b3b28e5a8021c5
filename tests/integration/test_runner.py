"""One run end to end: determinism, exact resume after interruption and after SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from safebench import registry
from safebench.errors import RunInterrupted
from safebench.results.store import read_metrics, read_status, write_metrics, write_status
from safebench.schema.spec import EvalSpec, RunSpec
from safebench.training.runner import metrics_frame, run
from tests.learning import torch_threads

ENV = "safebench/ContinuousTarget-v0"
TIMING = ["time_rollout", "time_update", "time_eval", "wall_time"]


def spec(
    algo: str = "cpo", seed: int = 1, epochs: int = 6, env: str = ENV, **cfg: object
) -> RunSpec:
    config = registry.resolve_config(algo, cfg).model_dump(mode="json")
    return RunSpec(
        algo=algo,
        config=config,
        env_id=env,
        seed=seed,
        budget=epochs * 400,
        steps_per_epoch=400,
        cost_limit=5.0,
        eval=EvalSpec(episodes=3, every_epochs=2),
        num_envs=2,
        device="cpu",
    )


def numbers(run_dir: Path) -> pd.DataFrame:
    return metrics_frame(run_dir).drop(columns=TIMING)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(torch_threads())


def test_same_seed_identical_metrics_and_layout(tmp_path: Path) -> None:
    s = spec()
    a = run(s, tmp_path / "a")
    b = run(s, tmp_path / "b")
    pd.testing.assert_frame_equal(numbers(a), numbers(b))
    assert a.relative_to(tmp_path / "a") == Path("cpo/safebench_ContinuousTarget-v0") / (
        f"seed1-{s.run_id[:8]}"
    )
    for name in ("spec.json", "manifest.json", "metrics.parquet", "checkpoint.pt", "status.json"):
        assert (a / name).is_file(), name
    assert read_status(a)["status"] == "done"
    frame = numbers(a)
    assert list(frame["epoch"]) == list(range(6))
    assert list(frame["steps"]) == [400 * (i + 1) for i in range(6)]
    assert frame["eval_ret"].notna().tolist() == [False, True, False, True, False, True]
    # A different seed gives different numbers (the seed is really used).
    c = run(spec(seed=2), tmp_path / "c")
    assert not numbers(c)["ep_ret"].equals(frame["ep_ret"])


def test_done_run_is_not_repeated(tmp_path: Path) -> None:
    s = spec(epochs=2)
    d = run(s, tmp_path)
    mtime = (d / "metrics.parquet").stat().st_mtime_ns
    run(s, tmp_path)
    assert (d / "metrics.parquet").stat().st_mtime_ns == mtime


def test_killed_between_checkpoint_and_metrics_write_resumes_complete(tmp_path: Path) -> None:
    """A process killed after an epoch's checkpoint but before its metrics write: the rerun
    finds the checkpoint at the last epoch and still leaves every epoch's row, once."""
    s = spec(epochs=3)
    full = numbers(run(s, tmp_path / "full"))
    d = run(s, tmp_path / "killed")
    behind = read_metrics(d / "metrics.parquet").iloc[:-1]
    write_metrics(d / "metrics.parquet", behind.to_dict("records"))
    write_status(d, "running")  # as left by the killed process
    run(s, tmp_path / "killed")
    assert read_status(d)["status"] == "done"
    pd.testing.assert_frame_equal(numbers(d), full)


@pytest.mark.parametrize("algo", ["cpo", "pcpo", "p3o"])
def test_interrupt_and_resume_is_identical(tmp_path: Path, algo: str) -> None:
    s = spec(algo)
    full = run(s, tmp_path / "full")
    epochs_seen = []

    def stop() -> bool:
        epochs_seen.append(1)
        return len(epochs_seen) == 3

    with pytest.raises(RunInterrupted):
        run(s, tmp_path / "part", should_stop=stop)
    part_dir = s.run_dir(tmp_path / "part")
    assert len(metrics_frame(part_dir)) == 3
    assert read_status(part_dir)["status"] == "queued"
    resumed = run(s, tmp_path / "part")
    pd.testing.assert_frame_equal(numbers(full), numbers(resumed))


def test_system_exit_mid_run_is_an_interrupt_not_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Ray worker whose launcher died gets SIGTERM, which Ray turns into ``SystemExit`` in
    the middle of an epoch: the run is left ``queued`` at its last checkpoint, and resumes to
    what an uninterrupted run gives."""
    import safebench.training.runner as runner

    s = spec("cpo")
    full = run(s, tmp_path / "full")
    epoch = runner._epoch
    calls = []

    def terminated(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 3:
            raise SystemExit("The process receives a SIGTERM.")
        return epoch(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(runner, "_epoch", terminated)
    with pytest.raises(SystemExit):
        run(s, tmp_path / "part")
    monkeypatch.setattr(runner, "_epoch", epoch)
    part_dir = s.run_dir(tmp_path / "part")
    status = read_status(part_dir)
    assert status["status"] == "queued" and "interrupted" in status["note"], status
    assert not (part_dir / "traceback.txt").exists()
    assert len(metrics_frame(part_dir)) == 2
    pd.testing.assert_frame_equal(numbers(full), numbers(run(s, tmp_path / "part")))


def test_official_ctrpo_protocol_options_resume_identically(tmp_path: Path) -> None:
    """``obs_normalizer: gymnasium`` and ``truncation_bootstrap: raw`` (the official C-TRPO
    code's protocol): stated in the spec, a run of their own, and the Gymnasium normaliser's
    state is in the checkpoint, so an interrupted run resumes bit for bit."""
    options = {"obs_normalizer": "gymnasium", "truncation_bootstrap": "raw"}
    s = spec("cpo", obs_normalizer="gymnasium", truncation_bootstrap="raw")
    assert s.run_id != spec("cpo").run_id
    assert registry.resolve_config("cpo", options).spec_dump().items() >= options.items()
    full = run(s, tmp_path / "full")
    state = torch.load(full / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert state["collector"]["normalizer"]["kind"] == "gymnasium"
    stops = []

    def stop() -> bool:
        stops.append(1)
        return len(stops) == 3

    with pytest.raises(RunInterrupted):
        run(s, tmp_path / "part", should_stop=stop)
    resumed = run(s, tmp_path / "part")
    pd.testing.assert_frame_equal(numbers(full), numbers(resumed))
    # and the options change what is trained (ContinuousTarget truncates every 20 steps)
    default = numbers(run(spec("cpo"), tmp_path / "default"))
    assert not numbers(full)["ep_ret"].equals(default["ep_ret"])


def test_sigkill_mid_run_then_resume_matches_uninterrupted(tmp_path: Path) -> None:
    args = [
        sys.executable, "-m", "safebench.cli", "train", "cpo", ENV, "--seed", "3",
        "--steps", "12000", "--steps-per-epoch", "400", "--cost-limit", "5",
        "--eval-episodes", "2", "--eval-every", "3", "--num-envs", "2", "--device", "cpu",
    ]  # fmt: skip
    killed = tmp_path / "killed"
    proc = subprocess.Popen([*args, "--out", str(killed)], stdout=subprocess.DEVNULL)
    deadline = time.time() + 120
    ckpts: list[Path] = []
    while time.time() < deadline and proc.poll() is None:
        ckpts = list(killed.rglob("metrics.parquet"))
        if ckpts and len(read_metrics(ckpts[0])) >= 4:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    run_dir = ckpts[0].parent
    assert read_status(run_dir)["status"] == "running"  # killed: never got to write anything
    n_before = len(read_metrics(run_dir / "metrics.parquet"))
    assert n_before < 30
    subprocess.run([*args, "--out", str(killed)], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([*args, "--out", str(tmp_path / "clean")], check=True, stdout=subprocess.DEVNULL)
    clean_dir = next((tmp_path / "clean").rglob("metrics.parquet")).parent
    pd.testing.assert_frame_equal(numbers(run_dir), numbers(clean_dir))
    assert read_status(run_dir)["status"] == "done"
