"""``safebench eval``: a trained run's checkpoint on fresh evaluation episodes, and its videos.

For a run directory (or every done run under a results root) this loads the checkpoint the
runner wrote — the algorithm's whole state and the observation normaliser — and plays
``episodes`` episodes through the runner's own evaluation path
(:func:`safebench.training.runner.evaluate_policy`: same action handling, same normalisation as
training and as the periodic evaluation), deterministic (the mean / arg-max action) unless
``stochastic``. The episodes come from a seed stream of their own (stream 2 of the
evaluation seed, the run's seed unless ``seed`` is given): they never coincide with training
episodes (stream 0) nor with the runner's periodic evaluations (stream 1).

Results go next to the run, never into its training metrics::

    <run>/eval/epoch<E>-<deterministic|stochastic>-seed<S>-<N>ep.json

with every episode's return, cost, length and reset seed, the protocol and the checkpoint
used (the same evaluation again rewrites the same file with the same numbers). With
``video_dir`` the first ``video_episodes`` episodes are filmed with MuJoCo's offscreen
renderer (one MP4 per episode, every frame from the reset to the last step, camera
selectable) into ``<video_dir>/<label>/<env>/seed<k>-<runid8>/<name>-ep<i>.mp4``.

Rendering runs in a child process. MuJoCo picks its OpenGL platform when it is imported
(``MUJOCO_GL``), and safebench imports it at start-up (through gymnasium's plug-ins), before
anyone could ask for a headless one; and with ``MUJOCO_GL=egl``, loading triton (which torch
does when it builds an optimiser) after MuJoCo's EGL crashes the process. The child sets
``MUJOCO_GL`` (``egl``, else ``osmesa``, unless the user set it) and imports torch's
compiler stack before anything else.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from pickle import UnpicklingError
from typing import Any

import numpy as np

from safebench.backends import is_omnisafe
from safebench.core.base import Algorithm
from safebench.core.rollout import Collector
from safebench.envs.factory import CMDPEnv, EnvError, SyncVectorCMDP, episode_seed, make_env
from safebench.errors import UserError
from safebench.results.store import RunDir, check_run, iter_run_dirs, package_versions
from safebench.schema.spec import RunSpec
from safebench.training.recording import Recorder, check_camera, headless_gl
from safebench.training.runner import evaluate_policy, load_policy

__all__ = [
    "EVAL_STREAM",
    "EvalBatch",
    "EvalOptions",
    "EvalOutcome",
    "Target",
    "evaluate_path",
    "evaluate_run",
    "find_targets",
]

EVAL_STREAM = 2  # episode-seed stream: 0 = training, 1 = the runner's periodic evaluation
DEFAULT_CAMERA = "track"  # Safety-Gymnasium's tracking camera (navigation and velocity tasks)
Progress = Callable[[str], None]


@dataclass(frozen=True)
class EvalOptions:
    """How to evaluate (the flags of ``safebench eval``)."""

    episodes: int = 10
    deterministic: bool = True
    checkpoint: str = "final"  # or the path of a checkpoint file of the run
    seed: int | None = None  # evaluation seed; None = the run's seed
    video_dir: str | None = None
    camera: str | None = None  # a camera name, or an integer id as text; None = "track"
    video_episodes: int = 1
    width: int = 256
    height: int = 256

    def check(self) -> None:
        """Raise ``UserError`` for options that cannot make an evaluation."""
        if self.episodes < 1:
            raise UserError(f"--episodes must be at least 1 (got {self.episodes})")
        if self.seed is not None and self.seed < 0:
            raise UserError(f"--seed must be >= 0 (got {self.seed})")
        if self.video_dir is None:
            if self.camera is not None:
                raise UserError("--camera only applies to videos: add --video DIR")
            return
        if not 1 <= self.video_episodes <= self.episodes:
            raise UserError(
                f"--video-episodes must be between 1 and --episodes ({self.episodes}); "
                f"got {self.video_episodes}"
            )
        for name, size in (("width", self.width), ("height", self.height)):
            # H.264 encodes blocks of 16 pixels: other sizes would be resized by the encoder
            if size < 16 or size % 16:
                raise UserError(f"video {name} must be a multiple of 16 (got {size})")

    @property
    def camera_kwargs(self) -> dict[str, Any]:
        camera = self.camera if self.camera is not None else DEFAULT_CAMERA
        with contextlib.suppress(ValueError):
            return {"camera_id": int(camera)}
        return {"camera_name": camera}


@dataclass(frozen=True)
class Target:
    """One run to evaluate: its directory, spec, checkpoint file, and a note if not done."""

    run_dir: Path
    spec: RunSpec
    checkpoint: Path
    note: str = ""


@dataclass
class EvalOutcome:
    """What one run's evaluation wrote: the file, episode means, videos, notes."""

    run_dir: str
    label: str
    env_id: str
    seed: int
    file: str
    episodes: int
    ret: float
    cost: float
    length: float
    cost_limit: float
    videos: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class EvalBatch:
    """Every evaluation of one ``safebench eval`` call, and the runs it left out (and why)."""

    outcomes: list[EvalOutcome]
    skipped: list[tuple[str, str]]


# ---------------------------------------------------------------------------------------------
# Which runs, which checkpoint
# ---------------------------------------------------------------------------------------------


def _not_evaluable(run_dir: Path, data: dict[str, Any]) -> str | None:
    """Why a run has no safebench checkpoint to evaluate (None when it has one)."""
    source = data.get("source")
    if isinstance(source, dict):
        kind = source.get("kind", "another tool")
        return (
            f"it was imported from {kind} (metrics only, no safebench checkpoint); evaluate it "
            f"with {kind}'s own tools where it was trained"
        )
    if is_omnisafe(str(data.get("algo", ""))):
        logs = RunDir(run_dir).omnisafe_logs
        saved = sorted(logs.rglob("torch_save"))
        where = saved[0].parent if saved else logs
        return (
            f"it is an OmniSafe-backend run ({data['algo']}): OmniSafe trains it and keeps "
            f"its own policy, not a safebench checkpoint; evaluate it with OmniSafe "
            f"('omnisafe eval {where}')"
        )
    return None


def _damage(run_dir: Path) -> str | None:
    """Why the run cannot be evaluated as it is on disk (``store.check_run``), or None."""
    check = check_run(run_dir)
    if not check.damaged:
        return None
    return (
        f"it is damaged ({check.files()}); 'safebench run' sets those files aside and "
        "re-trains it, 'safebench status' lists the damaged runs"
    )


def _spec(run_dir: Path) -> tuple[dict[str, Any], RunSpec | None]:
    data = RunDir(run_dir).read_spec()
    if _not_evaluable(run_dir, data) is not None:
        return data, None
    return data, RunSpec.from_record(data)


def find_targets(
    path: Path, checkpoint: str = "final"
) -> tuple[list[Target], list[tuple[str, str]]]:
    """The runs ``path`` names: itself (a run directory) or every done run below it, and
    the runs of a results root that are left out, with the reason.

    Raises ``UserError`` when ``path`` is neither, when a single run cannot be evaluated
    (or its checkpoint does not exist), or when a results root holds no run that can.
    """
    if not path.exists():
        raise UserError(f"eval: {path} does not exist; give a run directory or a results root")
    if RunDir(path).spec.is_file():
        return [_single(path, checkpoint)], []
    if not path.is_dir():
        raise UserError(
            f"eval: {path} is not a run directory (no spec.json in it) nor a results root; "
            "give the folder 'safebench run' or 'safebench train' wrote"
        )
    run_dirs = iter_run_dirs(path)
    if not run_dirs:
        raise UserError(
            f"eval: {path} is neither a run directory (no spec.json) nor a results root (no run "
            "below it); give the folder 'safebench run' or 'safebench train' wrote"
        )
    if checkpoint != "final":
        raise UserError(
            "eval: --checkpoint PATH chooses the checkpoint of one run; give that run's "
            f"directory instead of the results root {path}"
        )
    targets: list[Target] = []
    skipped: list[tuple[str, str]] = []
    for run_dir in run_dirs:
        damage = _damage(run_dir)
        if damage is not None:
            skipped.append((str(run_dir), damage))
            continue
        data, spec = _spec(run_dir)
        run = RunDir(run_dir)
        status = run.read_status().get("status", "queued")
        if spec is None:
            skipped.append((str(run_dir), str(_not_evaluable(run_dir, data))))
        elif status != "done":
            skipped.append((str(run_dir), f"it is {status}, not done"))
        elif not run.has_checkpoint():
            skipped.append((str(run_dir), f"it has no {run.checkpoint.name}"))
        else:
            targets.append(Target(run_dir, spec, run.checkpoint))
    if not targets:
        reasons = sorted({reason for _, reason in skipped})
        raise UserError(
            f"eval: no run under {path} can be evaluated ({len(skipped)} left out: "
            f"{'; '.join(reasons)})"
        )
    return targets, skipped


def _single(run_dir: Path, checkpoint: str) -> Target:
    damage = _damage(run_dir)
    if damage is not None:
        raise UserError(f"eval: {run_dir} cannot be evaluated: {damage}")
    data, spec = _spec(run_dir)
    if spec is None:
        raise UserError(f"eval: {run_dir} cannot be evaluated: {_not_evaluable(run_dir, data)}")
    run = RunDir(run_dir)
    status = run.read_status().get("status", "queued")
    if checkpoint == "final":
        path = run.checkpoint
        if not run.has_checkpoint():
            raise UserError(
                f"eval: {run_dir} has no {path.name} yet (status: {status}); train it first "
                "('safebench run' or 'safebench train' resumes it)"
            )
    else:
        path = Path(checkpoint)
        if not path.is_file():
            raise UserError(
                f"eval: checkpoint {checkpoint} does not exist; give 'final' (the run's "
                f"{run.checkpoint.name}) or the path of a checkpoint file"
            )
    note = "" if status == "done" else f"the run is {status}, not done: its latest checkpoint"
    return Target(run_dir, spec, path, note)


# ---------------------------------------------------------------------------------------------
# One run
# ---------------------------------------------------------------------------------------------


def _eval_name(epoch: int, options: EvalOptions, seed: int, checkpoint: Path, own: bool) -> str:
    mode = "deterministic" if options.deterministic else "stochastic"
    name = f"epoch{epoch}-{mode}-seed{seed}-{options.episodes}ep"
    if not own:  # a checkpoint file from elsewhere: its own name
        digest = hashlib.sha256(str(checkpoint.resolve()).encode()).hexdigest()[:8]
        name += f"-ckpt{digest}"
    return name


def _film_env(spec: RunSpec, options: EvalOptions) -> tuple[CMDPEnv, list[str]]:
    """The eval env set up to render frames, or a plain one (and a note) if it cannot."""
    if options.video_dir is None:
        return make_env(spec.env_id, **spec.env_kwargs), []
    render = {"render_mode": "rgb_array", "width": options.width, "height": options.height}
    try:
        env = make_env(spec.env_id, **spec.env_kwargs, **render, **options.camera_kwargs)
    except EnvError:
        note = f"{spec.env_id} does not render frames (no rgb_array render mode): no video"
        return make_env(spec.env_id, **spec.env_kwargs), [note]
    try:
        check_camera(env, options.camera_kwargs)
    except UserError:
        env.close()
        raise
    return env, []


def _recorder(
    spec: RunSpec, options: EvalOptions, video_path: Callable[[int], Path]
) -> tuple[Recorder, list[str]]:
    """The eval env inside the recorder of its episodes, filming the first
    ``options.video_episodes`` when videos are asked for and the env renders (else a note)."""
    env, notes = _film_env(spec, options)
    filming = options.video_dir is not None and not notes  # (a note here: cannot render)
    fps = float(env.env.metadata.get("render_fps") or 30) if filming else 30.0
    return Recorder(env, options.video_episodes if filming else 0, video_path, fps), notes


def _load_checkpoint(
    target: Target, venv: SyncVectorCMDP
) -> tuple[Algorithm, Collector, dict[str, Any]]:
    """The target checkpoint's ``(algorithm, collector, state)`` on ``venv``; a file that
    does not load as a checkpoint of this run is the user's mistake (``UserError``)."""
    try:
        return load_policy(target.spec, target.checkpoint, venv)
    except (KeyError, RuntimeError, ValueError, EOFError, OSError, UnpicklingError) as exc:
        raise UserError(
            f"eval: {target.checkpoint} is not a checkpoint of {target.run_dir} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            "give 'final' or a checkpoint.pt this run wrote"
        ) from None


def _recorded_episodes(
    recorder: Recorder,
    options: EvalOptions,
    seed: int,
    means: tuple[float, float, float],
    run_dir: Path,
) -> list[dict[str, Any]]:
    """The evaluated episodes as the recorder saw them, each with its video (relative to the
    run) or None, checked against the evaluation's ``(return, cost, length)`` means."""
    episodes = recorder.episodes[: options.episodes]
    ret, cost, _ = means
    # The recorder and the evaluation count the same steps: a mismatch is a bug, not noise.
    assert len(episodes) == options.episodes
    assert math.isclose(float(np.mean([e["return"] for e in episodes])), ret, abs_tol=1e-9)
    assert math.isclose(float(np.mean([e["cost"] for e in episodes])), cost, abs_tol=1e-9)
    for i, e in enumerate(episodes):
        assert e["seed"] == episode_seed(seed, 0, i, EVAL_STREAM)
        video = recorder.videos.get(i)
        e["video"] = os.path.relpath(video, run_dir) if video is not None else None
    return episodes


def _eval_record(
    target: Target,
    options: EvalOptions,
    seed: int,
    state: dict[str, Any],
    collector: Collector,
    recorder: Recorder,
    episodes: list[dict[str, Any]],
    means: tuple[float, float, float],
    notes: list[str],
    wall: float,
) -> dict[str, Any]:
    """One evaluation record: the whole format of ``<run>/eval/<name>.json`` in one literal."""
    spec, run_dir = target.spec, target.run_dir
    ret, cost, length = means
    rows = state.get("rows") or []
    return {
        "run_id": RunDir(run_dir).read_spec().get("run_id", spec.run_id),
        "label": spec.label,
        "algo": spec.algo,
        "env_id": spec.env_id,
        "run_seed": spec.seed,
        "cost_limit": spec.cost_limit,
        "checkpoint": {
            "path": os.path.relpath(target.checkpoint, run_dir),
            "epoch": int(state.get("epoch", 0)),
            "epochs": spec.epochs,
            "steps": int(rows[-1]["steps"]) if rows else 0,
        },
        "protocol": {
            "episodes": options.episodes,
            "deterministic": options.deterministic,
            "seed": seed,
            "stream": EVAL_STREAM,
            "action_scale": bool(collector.action_map.scale),
            "clip_actions": bool(collector.action_map.clip),
            "obs_normalize": collector.normalizer is not None,
            "device": "cpu",
        },
        "episodes": episodes,
        "summary": {
            "return": ret,
            "cost": cost,
            "length": length,
            "violations": int(sum(e["cost"] > spec.cost_limit for e in episodes)),
        },
        "video": (
            {
                "camera": options.camera if options.camera is not None else DEFAULT_CAMERA,
                "width": options.width,
                "height": options.height,
                "fps": recorder.fps,
                "frame_shape": list(recorder.frame_shape or ()),
            }
            if recorder.videos
            else None
        ),
        "notes": notes,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "wall_time": wall,
        "versions": package_versions(),
    }


def evaluate_run(target: Target, options: EvalOptions) -> EvalOutcome:
    """Evaluate one run's checkpoint (see the module doc) and write its evaluation file.

    With ``options.video_dir`` this renders in the calling process: call it where MuJoCo can
    render (:func:`evaluate_path` takes care of that).
    """
    spec, run_dir = target.spec, target.run_dir
    run = RunDir(run_dir)
    seed = spec.seed if options.seed is None else options.seed
    names: dict[str, str] = {}

    def video_path(index: int) -> Path:
        # Called while filming, once the checkpoint's epoch has named the evaluation.
        assert options.video_dir is not None
        return run.video(Path(options.video_dir), spec.label, spec.env_id, names["eval"], index)

    recorder, notes = _recorder(spec, options, video_path)
    if target.note:
        notes.insert(0, target.note)
    venv = SyncVectorCMDP([recorder])
    start = time.perf_counter()
    try:
        algo, collector, state = _load_checkpoint(target, venv)
        own = target.checkpoint.resolve() == run.checkpoint.resolve()
        epoch = int(state.get("epoch", 0))
        names["eval"] = _eval_name(epoch, options, seed, target.checkpoint, own)
        recorder.arm()
        means = evaluate_policy(
            algo, collector, venv, options.episodes, seed, options.deterministic, stream=EVAL_STREAM
        )
    finally:
        venv.close()
    wall = time.perf_counter() - start
    episodes = _recorded_episodes(recorder, options, seed, means, run_dir)
    record = _eval_record(
        target, options, seed, state, collector, recorder, episodes, means, notes, wall
    )
    path = run.write_evaluation(names["eval"], record)
    ret, cost, length = means
    return EvalOutcome(
        run_dir=str(run_dir),
        label=spec.label,
        env_id=spec.env_id,
        seed=spec.seed,
        file=str(path),
        episodes=len(episodes),
        ret=ret,
        cost=cost,
        length=length,
        cost_limit=spec.cost_limit,
        videos=[str(recorder.videos[i]) for i in sorted(recorder.videos)],
        notes=notes,
    )


# ---------------------------------------------------------------------------------------------
# Many runs, in this process or (videos) in a rendering child
# ---------------------------------------------------------------------------------------------


def evaluate_path(
    path: Path | str, options: EvalOptions, progress: Progress | None = None
) -> EvalBatch:
    """Evaluate the run directory ``path``, or every done run of the results root ``path``.

    Without videos this runs here; with ``options.video_dir`` in a child process that can
    render (see the module doc). Bad input raises ``UserError`` before anything is written.
    """
    options.check()
    targets, skipped = find_targets(Path(path), options.checkpoint)
    if options.video_dir is not None:
        return _in_render_child(Path(path), options, skipped, progress)
    say = progress or (lambda _: None)
    outcomes = []
    for i, target in enumerate(targets):
        spec = target.spec
        say(f"[{i + 1}/{len(targets)}] {spec.label} {spec.env_id} seed {spec.seed}")
        outcomes.append(evaluate_run(target, options))
    return EvalBatch(outcomes, skipped)


# The child imports torch's compiler stack (triton) before MuJoCo's GL (see the module doc).
_CHILD = (
    "import torch._dynamo, sys\n"
    "from safebench.training.evaluation import _child_main\n"
    "sys.exit(_child_main(sys.argv[1]))\n"
)
_PROGRESS = "\x1esafebench-progress "


def _in_render_child(
    path: Path, options: EvalOptions, skipped: list[tuple[str, str]], progress: Progress | None
) -> EvalBatch:
    platform = headless_gl()
    env = {**os.environ, "MUJOCO_GL": platform, "PYOPENGL_PLATFORM": platform}
    with tempfile.TemporaryDirectory(prefix="safebench-eval-") as tmp:
        result = Path(tmp) / "result.json"
        args = json.dumps({"path": str(path), "options": asdict(options), "result": str(result)})
        proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD, args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        other: list[str] = []
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.startswith(_PROGRESS):
                if progress is not None:
                    progress(line.removeprefix(_PROGRESS).rstrip("\n"))
            else:
                other.append(line)
        code = proc.wait()
        if code == 2:
            raise UserError("".join(other).strip().splitlines()[-1])
        if code != 0 or not result.exists():
            tail = "".join(other[-30:])
            raise RuntimeError(f"the rendering evaluation process failed (exit {code}):\n{tail}")
        data = json.loads(result.read_text())
    return EvalBatch([EvalOutcome(**o) for o in data["outcomes"]], skipped)


def _child_main(arg: str) -> int:
    """The rendering child: evaluate in this process, outcomes to the result file."""
    from safebench.training.runner import set_threads

    args = json.loads(arg)
    options = EvalOptions(**args["options"])
    set_threads(1)
    outcomes = []
    try:
        targets, _ = find_targets(Path(args["path"]), options.checkpoint)
        for i, target in enumerate(targets):
            spec = target.spec
            print(
                f"{_PROGRESS}[{i + 1}/{len(targets)}] {spec.label} {spec.env_id} seed {spec.seed}",
                file=sys.stderr,
                flush=True,
            )
            outcomes.append(asdict(evaluate_run(target, options)))
    except UserError as exc:
        print(str(exc), file=sys.stderr, flush=True)
        return 2
    Path(args["result"]).write_text(json.dumps({"outcomes": outcomes}))
    return 0
