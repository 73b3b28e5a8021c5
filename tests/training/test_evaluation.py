"""``safebench eval``: a trained run's checkpoint on fresh episodes, its MP4s, the report's
evaluation table and video links, and bad input (exit 2, one line)."""

from __future__ import annotations

import ctypes.util
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from safebench import registry
from safebench.cli import app as cli_module
from safebench.cli.app import main
from safebench.envs.factory import episode_seed
from safebench.errors import UserError
from safebench.report import ReportConfig, build_report
from safebench.results.store import atomic_write_json, read_evaluations, run_path, write_status
from safebench.schema.spec import EvalSpec, RunSpec
from safebench.training.evaluation import EVAL_STREAM, EvalOptions, _film_env, evaluate_path
from safebench.training.runner import run
from tests.learning import torch_threads

ENV = "SafetyHopperVelocity-v1"  # MuJoCo, renders; an untrained hopper falls in ~50 steps
EPOCHS = 3


def hopper_spec() -> RunSpec:
    return RunSpec(
        algo="cpo",
        config=registry.resolve_config("cpo", {}).model_dump(mode="json"),
        env_id=ENV,
        seed=0,
        budget=EPOCHS * 200,
        steps_per_epoch=200,
        cost_limit=25.0,
        eval=EvalSpec(episodes=1, every_epochs=2),
        device="cpu",
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A results root holding one done quickstart-like run (cpo on HopperVelocity)."""
    root = tmp_path_factory.mktemp("trained") / "results"
    torch.set_num_threads(torch_threads())
    run(hopper_spec(), root)
    return root


@pytest.fixture
def root(trained: Path, tmp_path: Path) -> Path:
    """A copy of the trained results root, for one test to write into."""
    shutil.copytree(trained, tmp_path / "results")
    return tmp_path / "results"


def run_dir_of(root: Path) -> Path:
    return hopper_spec().run_dir(root)


def digests(run_dir: Path) -> dict[str, str]:
    """Every file of the run outside eval/, by content."""
    return {
        str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and "eval" not in p.relative_to(run_dir).parts
    }


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "safebench.cli", *args], capture_output=True, text=True
    )


def run_main(monkeypatch: pytest.MonkeyPatch, *argv: str) -> int:
    """``safebench ARGV`` in this process; its exit code."""
    monkeypatch.setattr(sys, "argv", ["safebench", *argv])
    monkeypatch.setattr(cli_module.console, "width", 200)
    try:
        main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_eval_writes_per_episode_results_and_leaves_training_untouched(root: Path) -> None:
    run_dir = run_dir_of(root)
    before = digests(run_dir)
    out = cli("eval", str(run_dir), "--episodes", "4")
    assert out.returncode == 0, out.stderr
    assert "1 evaluation(s) written" in out.stdout
    assert digests(run_dir) == before  # metrics.parquet, checkpoint.pt, status.json, ...
    path = run_dir / "eval" / f"epoch{EPOCHS}-deterministic-seed0-4ep.json"
    record = json.loads(path.read_text())
    episodes = record["episodes"]
    assert [e["episode"] for e in episodes] == [0, 1, 2, 3]
    for e in episodes:
        assert math.isfinite(e["return"]) and math.isfinite(e["cost"]) and e["cost"] >= 0
        assert isinstance(e["length"], int) and 0 < e["length"] <= 1000
        assert e["video"] is None
    # fresh episodes: stream 2, never a training (0) or periodic-evaluation (1) episode
    seeds = [e["seed"] for e in episodes]
    assert seeds == [episode_seed(0, 0, i, EVAL_STREAM) for i in range(4)]
    used = {episode_seed(0, 0, k, s) for k in range(50) for s in (0, 1)}
    assert not used & set(seeds)
    assert record["protocol"] == {
        "episodes": 4, "deterministic": True, "seed": 0, "stream": 2,
        "action_scale": False,  # Hopper's box is [-1, 1]: the affine map is the identity
        "clip_actions": False, "obs_normalize": True, "device": "cpu",
    }  # fmt: skip
    assert record["checkpoint"] == {
        "path": "checkpoint.pt", "epoch": EPOCHS, "epochs": EPOCHS, "steps": EPOCHS * 200
    }  # fmt: skip
    mean = sum(e["return"] for e in episodes) / 4
    assert math.isclose(record["summary"]["return"], mean)
    assert record["run_id"] == json.loads((run_dir / "spec.json").read_text())["run_id"]
    # The same evaluation again: the same file, the same numbers (in this process this time).
    again = evaluate_path(run_dir, EvalOptions(episodes=4))
    assert again.outcomes[0].file == str(path)
    assert json.loads(path.read_text())["episodes"] == episodes
    # Another seed and sampled actions: another file, other episodes.
    other = evaluate_path(run_dir, EvalOptions(episodes=4, deterministic=False, seed=7))
    record7 = json.loads(Path(other.outcomes[0].file).read_text())
    assert Path(other.outcomes[0].file).name == f"epoch{EPOCHS}-stochastic-seed7-4ep.json"
    assert [e["seed"] for e in record7["episodes"]] != seeds
    assert len(read_evaluations(run_dir)) == 2
    assert digests(run_dir) == before


def _headless_gl() -> bool:
    return bool(
        os.environ.get("MUJOCO_GL")
        or ctypes.util.find_library("EGL")
        or ctypes.util.find_library("OSMesa")
    )


@pytest.mark.skipif(
    not _headless_gl(),
    reason="no headless OpenGL library (EGL: apt-get install libegl1; or libosmesa6)",
)
def test_eval_video_mp4_frames_and_report_links(root: Path, tmp_path: Path) -> None:
    import imageio.v2 as imageio

    run_dir = run_dir_of(root)
    plain = evaluate_path(run_dir, EvalOptions(episodes=3)).outcomes[0]
    plain_episodes = json.loads(Path(plain.file).read_text())["episodes"]
    videos = tmp_path / "videos"
    out = cli(
        "eval", str(root), "--episodes", "3", "--video", str(videos), "--video-episodes", "2",
        "--camera", "track",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "2 video(s)" in out.stdout
    record = json.loads(Path(plain.file).read_text())  # the same evaluation, now filmed
    episodes = record["episodes"]
    assert [(e["return"], e["cost"], e["length"]) for e in episodes] == [
        (e["return"], e["cost"], e["length"]) for e in plain_episodes
    ]  # rendering changes nothing
    files = sorted(videos.rglob("*.mp4"))
    expected = [
        videos / "cpo" / ENV / run_dir.name / f"epoch{EPOCHS}-deterministic-seed0-3ep-ep{i}.mp4"
        for i in range(2)
    ]
    assert files == expected
    assert episodes[2]["video"] is None
    assert record["video"]["camera"] == "track" and record["video"]["frame_shape"] == [256, 256, 3]
    for episode, path in zip(episodes, files):
        assert (run_dir / episode["video"]).resolve() == path.resolve()
        frames = imageio.mimread(path, format="FFMPEG", memtest=False)
        # the reset frame and one frame per step
        assert len(frames) == episode["length"] + 1, path
        assert all(frame.shape == (256, 256, 3) for frame in frames)
        assert len({float(f.mean()) for f in frames}) > 1  # the picture moves

    # The report: an evaluation table, and links (not embeds) that reach the videos.
    config = ReportConfig(reps=10, table_reps=10, curve_reps=10, formats=("png",))
    report = build_report(root, config=config)
    table = report.tables["evaluation"]
    assert len(table) == 1 and table["n_runs"].iloc[0] == 1
    assert math.isclose(table["ret"].iloc[0], record["summary"]["return"])
    assert table["videos"].iloc[0] == 2
    html = (report.out / "report.html").read_text()
    assert "Evaluation of the final checkpoints" in html and "<video" not in html
    hrefs = re.findall(r'<a href="([^"]+\.mp4)"', html)
    assert len(hrefs) == 2 and all(not Path(h).is_absolute() for h in hrefs)
    assert sorted((report.out / h).resolve() for h in hrefs) == [p.resolve() for p in files]
    md = (report.out / "report.md").read_text()
    assert all(f"]({h})" in md for h in hrefs)


def test_eval_results_root_skips_what_it_cannot_evaluate(root: Path) -> None:
    spec = json.loads((run_dir_of(root) / "spec.json").read_text())
    # an OmniSafe-backend run, an imported run and a queued run beside the done one
    for label, extra, status in (
        ("omnisafe-cpo", {"algo": "omnisafe:CPO"}, "done"),
        ("imported", {"source": {"kind": "omnisafe"}}, "done"),
        ("cpo-queued", {}, "queued"),
    ):
        fake = run_path(root, label, ENV, 0, "f" * 64)
        # its own run id: a spec.json naming another run's is damage (tests/results/test_damage.py)
        record = {**spec, "label": label, "run_id": "f" * 64, **extra}
        atomic_write_json(fake / "spec.json", record)
        write_status(fake, status)  # type: ignore[arg-type]
    batch = evaluate_path(root, EvalOptions(episodes=2))
    assert [o.label for o in batch.outcomes] == ["cpo"]
    reasons = {Path(d).parts[-3]: why for d, why in batch.skipped}
    assert "OmniSafe-backend run" in reasons["omnisafe-cpo"]
    assert "omnisafe eval" in reasons["omnisafe-cpo"]
    assert "imported from omnisafe" in reasons["imported"]
    assert reasons["cpo-queued"] == "it is queued, not done"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{root}/nowhere"], "does not exist"),
        (["{empty}"], "neither a run directory"),
        (["{run}", "--checkpoint", "{root}/nope.pt"], "checkpoint {root}/nope.pt does not exist"),
        (["{run}", "--checkpoint", "{run}/spec.json"], "is not a checkpoint of"),
        (["{root}", "--checkpoint", "{run}/checkpoint.pt"], "give that run's directory"),
        (["{run}", "--episodes", "0"], "--episodes must be at least 1"),
        (["{run}", "--camera", "track"], "--camera only applies to videos"),
        (["{run}", "--video", "{root}/v", "--video-episodes", "5", "--episodes", "2"], "between 1"),
        (["{omnisafe}"], "OmniSafe-backend run"),
        (["{queued}"], "has no checkpoint.pt yet (status: queued)"),
    ],
)
def test_eval_bad_input_one_line_exit_2(
    root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    message: str,
) -> None:
    run_dir = run_dir_of(root)
    spec = json.loads((run_dir / "spec.json").read_text())
    omnisafe = run_path(root, "omnisafe-cpo", ENV, 0, "e" * 64)
    atomic_write_json(omnisafe / "spec.json", {**spec, "algo": "omnisafe:CPO", "run_id": "e" * 64})
    queued = run_path(root, "cpo-q", ENV, 1, "d" * 64)
    atomic_write_json(queued / "spec.json", {**spec, "seed": 1, "run_id": "d" * 64})
    (tmp_path / "empty").mkdir()
    names = {"root": root, "run": run_dir, "empty": tmp_path / "empty", "omnisafe": omnisafe}
    names["queued"] = queued
    argv = [a.format(**names) for a in args]
    assert run_main(monkeypatch, "eval", *argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert message.format(**names) in err and "Traceback" not in err
    assert not list(run_dir.glob("eval/*.json"))  # nothing written


@pytest.mark.skipif(
    not _headless_gl(),
    reason="no headless OpenGL library (EGL: apt-get install libegl1; or libosmesa6)",
)
def test_eval_bad_camera_is_refused_before_mujoco_aborts(root: Path, tmp_path: Path) -> None:
    """A camera id the model lacks makes MuJoCo abort the process; eval refuses it first
    (in the rendering child), with exit 2 and the cameras the model has."""
    out = cli("eval", str(run_dir_of(root)), "--video", str(tmp_path), "--camera", "7")
    assert out.returncode == 2, out.stderr
    assert "camera id 7 does not exist" in out.stderr and "track" in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.rglob("*.mp4"))
    # a camera name it lacks (checked before any frame is rendered, so in this process)
    options = EvalOptions(video_dir=str(tmp_path), camera="top")
    with pytest.raises(UserError, match=r"has no camera 'top'; its cameras: track"):
        _film_env(hopper_spec(), options)
