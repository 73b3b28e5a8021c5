"""The results store: run-directory layout, atomic writes, status and manifests.

Layout (DESIGN.md "One run")::

    <root>/<label>/<env>/seed<k>-<runid8>/
        spec.json  manifest.json  metrics.parquet  checkpoint.pt  status.json

Every file is written atomically (temp file in the same directory, fsync, rename), so a
reader or a crash never sees a half-written file.
"""

from __future__ import annotations

import io
import json
import os
import platform
import socket
import subprocess
import tempfile
import time
import traceback
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

import pandas as pd

__all__ = [
    "RunStatus",
    "atomic_write",
    "atomic_write_json",
    "manifest",
    "read_status",
    "write_metrics",
    "write_status",
]

RunStatus = Literal["queued", "running", "done", "failed"]

RESULT_PACKAGES = ("safebench", "torch", "numpy", "safety-gymnasium", "mujoco", "gymnasium")


def atomic_write(path: Path, write: Callable[[io.BufferedWriter], object]) -> None:
    """Write ``path`` through ``write(fileobj)`` into a temp file, fsync, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    data = json.dumps(obj, indent=2, sort_keys=True, default=str).encode()
    atomic_write(path, lambda f: f.write(data))


def write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    """All epochs so far as one parquet file (rewritten whole: a few hundred rows at most)."""
    frame = pd.DataFrame(rows)
    atomic_write(path, lambda f: frame.to_parquet(f, index=False))


def write_status(
    run_dir: Path, status: RunStatus, error: BaseException | None = None, **extra: Any
) -> None:
    """``status.json``; a failure also writes ``traceback.txt`` next to it."""
    payload: dict[str, Any] = {"status": status, "time": time.time(), **extra}
    if error is not None:
        payload["error"] = f"{type(error).__name__}: {error}"
        tb = "".join(traceback.format_exception(error))
        atomic_write(run_dir / "traceback.txt", lambda f: f.write(tb.encode()))
    atomic_write_json(run_dir / "status.json", payload)


def read_status(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "status.json"
    if not path.exists():
        return {"status": "queued"}
    status: dict[str, Any] = json.loads(path.read_text())
    return status


def package_versions(names: tuple[str, ...] = RESULT_PACKAGES) -> dict[str, str]:
    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def _git(*args: str) -> str | None:
    try:
        here = Path(__file__).resolve().parent
        res = subprocess.run(
            ["git", *args], cwd=here, capture_output=True, text=True, timeout=5, check=True
        )
        return res.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def manifest() -> dict[str, Any]:
    """Where and with what a run was produced: git, versions, hardware, threads, host."""
    import torch

    sha = _git("rev-parse", "HEAD")
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return {
        "git_sha": sha,
        "git_dirty": bool(dirty) if dirty is not None else None,
        "versions": {**package_versions(), "python": platform.python_version()},
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "gpus": [torch.cuda.get_device_name(i) for i in range(gpus)],
        "torch_threads": torch.get_num_threads(),
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
    }
