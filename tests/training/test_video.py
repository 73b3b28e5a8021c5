"""Videos of a navigation task (its cameras exist only once its world is built, at the first
reset), the MP4s' file mode, and ``safebench doctor``'s offscreen-rendering check."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from safebench import registry
from safebench.cli import app as cli_module
from safebench.cli.app import main
from safebench.errors import UserError
from safebench.schema.spec import EvalSpec, RunSpec
from safebench.training import recording
from safebench.training.evaluation import DEFAULT_CAMERA, EvalOptions, _film_env, evaluate_path
from safebench.training.recording import (
    GL_INSTALL,
    cameras,
    check_camera,
    gl_platforms,
    headless_gl,
    probe_gl,
)
from safebench.training.runner import run
from tests.learning import torch_threads

ENV = "SafetyPointGoal1-v0"
STEPS = 20  # episode length (max_episode_steps): a film of 21 frames, seconds to render
NAV_CAMERAS = "fixednear, fixedfar, vision, track"  # Safety-Gymnasium's, in model order


def nav_spec() -> RunSpec:
    return RunSpec(
        algo="cpo",
        config=registry.resolve_config("cpo", {}).model_dump(mode="json"),
        env_id=ENV,
        env_kwargs={"max_episode_steps": STEPS},
        seed=0,
        budget=200,
        steps_per_epoch=200,
        cost_limit=25.0,
        eval=EvalSpec(episodes=0),
        device="cpu",
    )


@pytest.fixture(scope="module")
def nav_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run directory of one done one-epoch run of cpo on SafetyPointGoal1-v0."""
    root = tmp_path_factory.mktemp("nav") / "results"
    torch.set_num_threads(torch_threads())
    run(nav_spec(), root)
    return nav_spec().run_dir(root)


@pytest.fixture(scope="module")
def gl() -> str:
    """The headless OpenGL platform ``eval --video`` uses; skips where it cannot render."""
    try:
        platform = headless_gl()
    except UserError as exc:
        pytest.skip(f"eval --video cannot film on this machine (no EGL or OSMesa library): {exc}")
    why = probe_gl(platform)
    if why is not None:
        pytest.skip(f"offscreen rendering with MUJOCO_GL={platform} fails ({why}): {GL_INSTALL}")
    return platform


def cli(*args: str, umask: int = 0o022) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "safebench.cli", *args], capture_output=True, text=True, umask=umask
    )


def test_eval_films_a_navigation_task_with_named_cameras(
    gl: str, nav_run: Path, tmp_path: Path
) -> None:
    """The default camera and another named one film a navigation task: playable MP4s of
    the reset frame and one frame per step, ordinary files (0666 less the umask), and the
    same episodes as without filming."""
    import imageio.v2 as imageio

    plain = evaluate_path(nav_run, EvalOptions(episodes=1)).outcomes[0]
    plain_episodes = json.loads(Path(plain.file).read_text())["episodes"]
    first_frames = {}
    for camera, umask in ((None, 0o022), ("fixednear", 0o027)):
        videos = tmp_path / (camera or "default")
        chosen = ["--camera", camera] if camera else []
        out = cli(
            "eval", str(nav_run), "--episodes", "1", "--video", str(videos), *chosen, umask=umask
        )
        assert out.returncode == 0, out.stderr
        record = json.loads(Path(plain.file).read_text())  # the same evaluation, now filmed
        assert record["video"]["camera"] == (camera or DEFAULT_CAMERA)
        assert record["video"]["frame_shape"] == [256, 256, 3]
        episodes = record["episodes"]
        assert [(e["return"], e["cost"], e["length"]) for e in episodes] == [
            (e["return"], e["cost"], e["length"]) for e in plain_episodes
        ]  # rendering (and the reset that builds the world to list its cameras) changes nothing
        (path,) = videos.rglob("*.mp4")
        assert (nav_run / episodes[0]["video"]).resolve() == path.resolve()
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600
        assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp left
        frames = imageio.mimread(path, format="FFMPEG", memtest=False)
        assert episodes[0]["length"] == STEPS
        assert len(frames) == STEPS + 1, path  # the reset frame and one frame per step
        assert all(frame.shape == (256, 256, 3) for frame in frames)
        assert len({float(f.mean()) for f in frames}) > 1  # the picture moves
        first_frames[camera] = frames[0]
    assert (first_frames[None] != first_frames["fixednear"]).any()  # two points of view


def test_eval_unknown_camera_on_a_navigation_task_names_the_cameras(
    gl: str, nav_run: Path, tmp_path: Path
) -> None:
    """Checked once the world (and its cameras) is built: exit 2, one line, no video."""
    out = cli("eval", str(nav_run), "--video", str(tmp_path), "--camera", "nope")
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    message = " ".join(out.stderr.split())  # rich wraps at the terminal width
    assert f"{ENV} has no camera 'nope'; its cameras: {NAV_CAMERAS}" in message
    assert not list(tmp_path.rglob("*.mp4"))


def test_navigation_cameras_are_checked_once_the_world_is_built(tmp_path: Path) -> None:
    """No OpenGL needed: the check only reads the model, which the first reset builds."""
    spec = nav_spec()
    env, notes = _film_env(spec, EvalOptions(video_dir=str(tmp_path)))  # the default: track
    assert notes == []
    try:
        assert cameras(env) == NAV_CAMERAS.split(", ")
        for camera in ("fixednear", "-1", "3"):
            check_camera(env, EvalOptions(video_dir=str(tmp_path), camera=camera).camera_kwargs)
        for camera, message in (
            ("top", f"{ENV} has no camera 'top'; its cameras: {NAV_CAMERAS}"),
            ("4", f"camera id 4 does not exist in {ENV} (ids -1 [free camera] to 3; named "),
        ):
            kwargs = EvalOptions(video_dir=str(tmp_path), camera=camera).camera_kwargs
            with pytest.raises(UserError) as info:
                check_camera(env, kwargs)
            assert message in str(info.value)
    finally:
        env.close()


def test_probe_gl_says_why_a_platform_cannot_render() -> None:
    assert "cannot render" in str(probe_gl("no-such-platform"))


# ---------------------------------------------------------------------------------------------
# safebench doctor
# ---------------------------------------------------------------------------------------------


def table_row(stdout: str, name: str) -> str:
    (row,) = [line for line in stdout.splitlines() if f" {name} " in line]
    return row


def test_doctor_reports_the_offscreen_rendering_that_works() -> None:
    out = cli("doctor")
    assert out.returncode == 0, out.stdout + out.stderr
    row = table_row(out.stdout, "video rendering")
    works = [platform for platform, why in gl_platforms() if why is None]
    if works:
        assert works[0] in row and "none" not in row
        assert "warning" not in out.stderr and "all good" in out.stdout
    else:
        assert "none" in row
        assert GL_INSTALL in " ".join(out.stderr.split())


@pytest.mark.parametrize(
    ("mujoco_gl", "installed", "verdicts", "row", "warning"),
    [
        # nothing renders: say how to install a platform
        ("", set(), {}, "none (egl: libEGL is not installed; osmesa: libOSMesa", GL_INSTALL),
        ("", {"EGL"}, {"egl": "cannot render (x)"}, "none (egl: cannot render (x);", GL_INSTALL),
        # eval --video would pick EGL, which fails, while OSMesa works
        (
            "",
            {"EGL", "OSMesa"},
            {"egl": "cannot render (x)", "osmesa": None},
            "osmesa (egl: cannot render (x))",
            "would use egl, which cannot render here: set MUJOCO_GL=osmesa",
        ),
        ("", {"EGL"}, {"egl": None}, "egl (osmesa: libOSMesa is not installed)", None),
        # the user's MUJOCO_GL is used as it is
        ("osmesa", {"OSMesa"}, {"osmesa": None}, "osmesa (MUJOCO_GL)", None),
        ("glx", set(), {"glx": "cannot render (y)"}, "none (glx: cannot render (y))", GL_INSTALL),
    ],
    ids=["none-installed", "egl-fails", "egl-fails-osmesa-works", "egl", "user-osmesa", "user-glx"],
)
def test_doctor_offscreen_rendering_verdicts(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    mujoco_gl: str,
    installed: set[str],
    verdicts: dict[str, str | None],
    row: str,
    warning: str | None,
) -> None:
    """Each case of the check, with the libraries and the renders faked (no child process):
    a warning with the fix, never a failure (training does not render)."""
    real_probe = recording.probe_gl

    def fake_probe(platform: str, timeout: float = 60.0) -> str | None:
        if platform in verdicts:
            return verdicts[platform]
        return real_probe(platform)  # (an uninstalled library: no child process)

    monkeypatch.setenv("MUJOCO_GL", mujoco_gl)
    monkeypatch.setattr(
        recording.ctypes.util, "find_library", lambda n: n if n in installed else None
    )
    monkeypatch.setattr(recording, "probe_gl", fake_probe)
    monkeypatch.setattr(sys, "argv", ["safebench", "doctor"])
    monkeypatch.setattr(cli_module.console, "width", 200)
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 0  # a warning, not a problem
    out = capsys.readouterr()
    assert row in table_row(out.out, "video rendering")
    if warning is None:
        assert "warning" not in out.err and out.out.rstrip().endswith("all good")
    else:
        assert warning in " ".join(out.err.split())
        assert out.out.rstrip().endswith("all good but for the warning")
