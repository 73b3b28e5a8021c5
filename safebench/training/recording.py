"""Filming evaluation episodes: the recording env wrapper, camera checks, headless OpenGL.

:class:`Recorder` wraps the evaluation env inside the vector env, so it sees every episode
from its reset to its last step: it keeps each episode's return, cost, length and reset seed
and streams the frames of the first episodes into one MP4 each (imageio's FFMPEG writer,
written under a temporary name and renamed when complete).

Headless OpenGL: :func:`headless_gl` picks the ``MUJOCO_GL`` platform a rendering process
uses, and :func:`probe_gl` tries one in a child process (MuJoCo fixes its platform when it is
imported) by rendering a frame.
"""

from __future__ import annotations

import ctypes.util
import os
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from safebench.envs.factory import CMDPEnv
from safebench.errors import UserError

__all__ = [
    "GL_INSTALL",
    "Recorder",
    "cameras",
    "check_camera",
    "gl_platforms",
    "headless_gl",
    "probe_gl",
]

GL_INSTALL = (
    "install EGL (Debian/Ubuntu: apt-get install libegl1 libgl1-mesa-dri) or OSMesa "
    "(apt-get install libosmesa6), or set MUJOCO_GL"
)
# MuJoCo's headless platforms, in the order they are chosen, and the library each loads
_GL_LIBRARIES = {"egl": "EGL", "osmesa": "OSMesa"}


class Recorder(CMDPEnv):
    """The evaluation env, watched: every episode's return, cost, length and reset seed, and
    the frames of the first ``film`` episodes streamed into one MP4 each.

    It sits inside the vector env, so it sees each episode's last step before the vector
    env's auto-reset: a film holds the reset frame and one frame per step. Nothing is
    recorded before :meth:`arm` (the collector resets the env with training seeds when it
    is built).
    """

    def __init__(self, inner: CMDPEnv, film: int, video_path: Callable[[int], Path], fps: float):
        super().__init__(inner.env, inner.env_id)
        self.film, self.video_path, self.fps = film, video_path, fps
        self.armed = False
        self.episodes: list[dict[str, Any]] = []
        self.videos: dict[int, Path] = {}
        self.frame_shape: tuple[int, ...] | None = None
        self._current: dict[str, Any] | None = None
        self._writer: Any = None
        self._tmp: Path | None = None

    def arm(self) -> None:
        self.armed = True

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        out = super().reset(seed=seed, options=options)
        if self.armed:
            index = len(self.episodes)
            self._current = {"episode": index, "seed": seed, "return": 0.0, "cost": 0.0}
            self._current["length"] = 0
            if index < self.film:
                self._open_video(index)
                self._frame()
        return out

    def step(self, action: np.ndarray) -> Any:
        out = super().step(action)
        if self._current is not None:
            _, reward, cost, terminated, truncated, _ = out
            self._current["return"] += reward
            self._current["cost"] += cost
            self._current["length"] += 1
            if self._writer is not None:
                self._frame()
            if terminated or truncated:
                self._close_video()
                self.episodes.append(self._current)
                self._current = None
        return out

    def _frame(self) -> None:
        frame = np.asarray(self.env.render())
        self.frame_shape = frame.shape
        self._writer.append_data(frame)

    def _open_video(self, index: int) -> None:
        import imageio.v2 as imageio

        path = self.video_path(index)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written under a temporary name and renamed when complete (the encoder needs .mp4).
        # Not mkstemp: its file is private (0600) and the rename would keep that mode; this one
        # is created like any result file (0666 less the umask). O_EXCL: the name is ours.
        tmp = path.with_name(f".{path.stem}.{secrets.token_hex(8)}.mp4")
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        self._tmp = tmp
        self._writer = imageio.get_writer(
            tmp,
            format="FFMPEG",  # imageio's own plug-in name
            fps=self.fps,
            codec="libx264",
            quality=8,
            macro_block_size=16,
            ffmpeg_log_level="error",
        )
        self.videos[index] = path

    def _close_video(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        self._writer = None
        assert self._tmp is not None and self._current is not None
        os.replace(self._tmp, self.videos[self._current["episode"]])
        self._tmp = None

    def close(self) -> None:
        if self._writer is not None:  # an episode cut short: no half video is left behind
            self._writer.close()
            self._writer = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
        super().close()


def cameras(env: CMDPEnv) -> list[str]:
    unwrapped = env.unwrapped
    model = getattr(unwrapped, "model", None)
    if model is None:
        model = getattr(getattr(unwrapped, "task", None), "model", None)
    if model is None:
        return []
    return [model.camera(i).name for i in range(model.ncam)]


def check_camera(env: CMDPEnv, camera_kwargs: dict[str, Any]) -> None:
    """Refuse a camera the model lacks (MuJoCo would abort the process on a bad id): raise
    ``UserError`` naming it and the model's cameras.

    An env whose model has no camera yet is reset first: Safety-Gymnasium's navigation tasks
    build their world (and its cameras) at the first reset. Callers reset it again, with
    their own seed, before they use it.
    """
    names = cameras(env)
    if not names:
        env.reset()
        names = cameras(env)
    kwargs = camera_kwargs
    listed = ", ".join(names) if names else "none"
    if "camera_id" in kwargs and not -1 <= kwargs["camera_id"] < len(names):
        raise UserError(
            f"eval: camera id {kwargs['camera_id']} does not exist in {env.env_id} (ids -1 "
            f"[free camera] to {len(names) - 1}; named cameras: {listed})"
        )
    if "camera_name" in kwargs and kwargs["camera_name"] not in names:
        raise UserError(
            f"eval: {env.env_id} has no camera {kwargs['camera_name']!r}; its cameras: {listed} "
            "(or an id, -1 for the free camera)"
        )


def headless_gl() -> str:
    """The MuJoCo OpenGL platform for rendering without a display: the user's ``MUJOCO_GL``,
    else EGL, else OSMesa, whichever library is installed."""
    chosen = os.environ.get("MUJOCO_GL")
    if chosen:
        return chosen
    for platform, library in _GL_LIBRARIES.items():
        if ctypes.util.find_library(library):
            return platform
    raise UserError(
        f"eval: --video needs a headless OpenGL library and none is installed: {GL_INSTALL}"
    )


# A frame of a one-sphere model through MuJoCo's offscreen renderer; "ok" only if it drew.
_PROBE = """
import mujoco
model = mujoco.MjModel.from_xml_string('<mujoco><worldbody><geom size=".1"/></worldbody></mujoco>')
data = mujoco.MjData(model)
mujoco.mj_forward(model, data)
renderer = mujoco.Renderer(model, 16, 16)
renderer.update_scene(data)
print("ok" if renderer.render().any() else "a black frame", flush=True)
"""


def probe_gl(platform: str, timeout: float = 60.0) -> str | None:
    """None when MuJoCo renders a frame offscreen with ``MUJOCO_GL=platform``, else why not
    (one line). Tried in a child process: MuJoCo fixes its platform when it is imported."""
    library = _GL_LIBRARIES.get(platform.lower())
    if library is not None and not ctypes.util.find_library(library):
        return f"lib{library} is not installed"
    env = {**os.environ, "MUJOCO_GL": platform, "PYOPENGL_PLATFORM": platform}
    try:
        out = subprocess.run(
            [sys.executable, "-c", _PROBE],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return f"rendering one frame took over {timeout:g} s"
    lines = out.stdout.strip().splitlines()
    if lines and lines[-1] == "ok":  # the verdict; EGL's teardown may still complain at exit
        return None
    errors = [line.strip() for line in out.stderr.splitlines() if line.strip()]
    why = lines[-1] if lines else errors[-1] if errors else f"exit {out.returncode}"
    return f"cannot render ({why})"


def gl_platforms() -> list[tuple[str, str | None]]:
    """Each headless platform a rendering process could use, and :func:`probe_gl`'s verdict:
    only ``MUJOCO_GL`` when the user set it (it is then used as it is), else EGL and OSMesa."""
    chosen = os.environ.get("MUJOCO_GL")
    candidates = [chosen] if chosen else list(_GL_LIBRARIES)
    return [(platform, probe_gl(platform)) for platform in candidates]
