"""The results store: run-directory layout, atomic writes, status, manifests and the lock.

Layout (DESIGN.md "One run")::

    <root>/experiment.yaml  experiment.json  .lock
    <root>/<label>/<env>/seed<k>-<runid8>/
        spec.json  manifest.json  metrics.parquet  checkpoint.pt  status.json
        placement.json (where the launcher ran it)  traceback.txt (failed runs)
        eval/<name>.json (``safebench eval``: per-episode results, never the training metrics)
        tb/ (TensorBoard event files)  wandb/ (offline W&B runs), when live logging is on

The layout is made here and nowhere else (:func:`env_slug`, :func:`run_path`), and so is every
write of a run's state: :class:`RunRecord` is the one writer of ``status.json`` /
``traceback.txt`` that the runner, the launcher and the OmniSafe backend use.

Every file is written atomically (temp file in the same directory, fsync, rename), so a
reader or a crash never sees a half-written file. ``<root>/.lock`` is held (``flock``) by
the one ``safebench run`` that may write into ``<root>``; the kernel releases it when that
process dies in any way, so a run left ``running`` by a killed driver is known to be stale.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import platform
import re
import socket
import subprocess
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

__all__ = [
    "EVAL_DIR",
    "LOCK_FILE",
    "RunRecord",
    "RunStatus",
    "atomic_write",
    "atomic_write_json",
    "cpu_model",
    "env_slug",
    "experiment_lock",
    "iter_run_dirs",
    "load_evaluations",
    "load_runs",
    "lock_holder",
    "manifest",
    "read_evaluations",
    "read_status",
    "run_path",
    "run_summary",
    "write_evaluation",
    "write_metrics",
    "write_status",
]

RunStatus = Literal["queued", "running", "done", "failed"]

RESULT_PACKAGES = ("safebench", "torch", "numpy", "safety-gymnasium", "mujoco", "gymnasium")
LOCK_FILE = ".lock"
EVAL_DIR = "eval"
EVAL_FORMAT = "safebench-eval/1"


def env_slug(env_id: str) -> str:
    """A file-system-safe directory name for an env id (``/`` and ``:`` replaced)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", env_id)


def run_path(root: Path, label: str, env_id: str, seed: int, run_id: str) -> Path:
    """A run's directory: ``root/<label>/<env>/seed<k>-<runid8>``."""
    return Path(root) / label / env_slug(env_id) / f"seed{seed}-{run_id[:8]}"


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


def read_metrics(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """A ``metrics.parquet`` (or any parquet file) as a DataFrame, read on the calling thread.

    pyarrow's default parquet read (``use_threads`` and ``pre_buffer``) starts background
    I/O threads that can still be alive when the interpreter exits; their destruction then
    aborts the process (SIGABRT, "terminate called without an active exception";
    apache/arrow#34314), which turned finished CLI commands into exit code -6 about once in
    eight runs here. Metrics files are a few hundred rows: one thread reads them as fast.
    """
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=columns, use_threads=False, pre_buffer=False)
    return table.to_pandas(use_threads=False)


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


class RunRecord:
    """The one writer of a run's state (``status.json``; ``traceback.txt`` on failure).

    The runner and the OmniSafe backend wrap training in :meth:`training`; the launcher
    queues runs and records what its workers could not (a worker that died, a cancelled task).
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)

    @property
    def status(self) -> str:
        return str(read_status(self.run_dir).get("status", "queued"))

    def queued(self, note: str | None = None) -> None:
        if note is None:
            write_status(self.run_dir, "queued")
        else:
            write_status(self.run_dir, "queued", note=note)

    def running(self, **extra: Any) -> None:
        write_status(self.run_dir, "running", **extra)

    def done(self, **extra: Any) -> None:
        write_status(self.run_dir, "done", **extra)

    def failed(self, error: BaseException) -> None:
        write_status(self.run_dir, "failed", error=error)

    @contextlib.contextmanager
    def training(self, *, on_interrupt: str, **running: Any) -> Iterator[RunRecord]:
        """``running`` for the block; an interrupt leaves it ``queued`` (note ``on_interrupt``),
        any other exception ``failed`` with its traceback. The block calls :meth:`done`."""
        from safebench.errors import RunInterrupted

        self.running(**running)
        try:
            yield self
        except (RunInterrupted, KeyboardInterrupt):
            self.queued(note=f"interrupted; {on_interrupt}")
            raise
        except BaseException as exc:
            self.failed(exc)
            raise


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
        "versions": {
            **package_versions((*RESULT_PACKAGES, "ray")),
            "python": platform.python_version(),
        },
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "gpus": [torch.cuda.get_device_name(i) for i in range(gpus)],
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
    }


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, where ``platform`` gives none)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def _holder_text() -> str:
    return json.dumps({"pid": os.getpid(), "hostname": socket.gethostname(), "since": time.time()})


@contextlib.contextmanager
def experiment_lock(root: Path) -> Iterator[None]:
    """Hold ``root/.lock`` exclusively for the block, or fail at once if someone else does.

    ``flock`` locks belong to the open file and vanish when the holder exits or is killed,
    so a crashed ``safebench run`` never leaves a stale lock behind. The holder's pid and
    host are written into the file for the error message of a second, refused launcher.
    """
    from safebench.errors import UserError

    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = lock_holder(root) or {}
            who = f" (pid {holder.get('pid')} on {holder.get('hostname')})" if holder else ""
            raise UserError(
                f"another 'safebench run' is writing to {root}{who}; wait for it to finish or "
                "stop it (Ctrl-C) before starting this one"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, _holder_text().encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def lock_holder(root: Path) -> dict[str, Any] | None:
    """Who holds ``root/.lock`` right now (pid, hostname, since), or None if nobody does."""
    path = Path(root) / LOCK_FILE
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder: dict[str, Any] = json.loads(os.pread(fd, 4096, 0) or b"{}")
            except ValueError:  # the holder is between truncate and write
                holder = {}
            return holder or {"pid": None, "hostname": None}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def iter_run_dirs(root: Path) -> list[Path]:
    """Every run directory under ``root`` (a directory holding ``spec.json``), sorted."""
    return sorted(p.parent for p in Path(root).rglob("spec.json"))


def load_runs(root: Path) -> pd.DataFrame:
    """All runs under ``root`` as one tidy frame, one row per (run, epoch).

    Columns: ``run_id, experiment, algo`` (the run's label), ``algo_name`` (registry name),
    ``env, seed, status, cost_limit, run_dir``, ``origin`` (``safebench``, or the
    ``source.kind`` an importer recorded: ``omnisafe``, ``safepo``), ``created_ns`` (the
    ``spec.json`` modification time, ns: which of two runs of a cell is newer) followed by
    the metrics columns (``epoch, steps, ep_ret, ep_cost, ep_len, eval_ret, eval_cost,
    ...``). A run without metrics yet
    (queued, or failed before its first epoch) contributes one row with NaN metrics and its
    status, so it is reported rather than silently dropped.
    """
    frames = []
    for run_dir in iter_run_dirs(root):
        spec_path = run_dir / "spec.json"
        spec = json.loads(spec_path.read_text())
        source = spec.get("source") if isinstance(spec.get("source"), dict) else None
        meta = {
            "run_id": spec.get("run_id", run_dir.name),
            "experiment": spec.get("experiment", ""),
            "algo": spec.get("label") or spec["algo"],
            "algo_name": spec["algo"],
            "env": spec["env_id"],
            "seed": int(spec["seed"]),
            "status": read_status(run_dir).get("status", "queued"),
            "cost_limit": float(spec["cost_limit"]),
            "run_dir": str(run_dir),
            "origin": str(source.get("kind", "imported")) if source else "safebench",
            "created_ns": spec_path.stat().st_mtime_ns,
        }
        metrics_path = run_dir / "metrics.parquet"
        frame = read_metrics(metrics_path) if metrics_path.exists() else pd.DataFrame()
        if frame.empty:
            frame = pd.DataFrame({"epoch": [np.nan]})
        for key, value in reversed(meta.items()):
            frame.insert(0, key, value)
        frames.append(frame)
    if not frames:
        return pd.DataFrame(
            columns=["run_id", "experiment", "algo", "algo_name", "env", "seed", "status"]
        )
    return pd.concat(frames, ignore_index=True)


def run_summary(run_dir: Path) -> dict[str, Any]:
    """One run's state for status tables: names, status, epochs and steps done, error."""
    spec = json.loads((run_dir / "spec.json").read_text())
    status = read_status(run_dir)
    budget, per_epoch = int(spec["budget"]), int(spec["steps_per_epoch"])
    epochs_done, steps = 0, 0
    updated = status.get("time")
    metrics = run_dir / "metrics.parquet"
    if metrics.exists():
        updated = max(updated or 0.0, metrics.stat().st_mtime)
        with contextlib.suppress(OSError, ValueError, KeyError):
            column = read_metrics(metrics, columns=["steps"])["steps"]
            epochs_done = len(column)
            steps = int(column.iloc[-1]) if epochs_done else 0
    return {
        "run_id": spec.get("run_id", ""),
        "label": spec.get("label") or spec["algo"],
        "algo": spec["algo"],
        "env": spec["env_id"],
        "seed": int(spec["seed"]),
        "status": status.get("status", "queued"),
        "error": status.get("error"),
        "note": status.get("note"),
        "epochs_done": epochs_done,
        "epochs": -(-budget // per_epoch),
        "steps": steps,
        "budget": budget,
        "updated": updated,  # the last status change or finished epoch
        "run_dir": str(run_dir),
    }


# ---------------------------------------------------------------------------------------------
# Evaluations (``safebench eval``): beside the run, never inside its training metrics
# ---------------------------------------------------------------------------------------------


def write_evaluation(run_dir: Path, name: str, record: dict[str, Any]) -> Path:
    """``<run>/eval/<name>.json``, atomically; the same evaluation again replaces its file."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", name):
        raise ValueError(f"evaluation name {name!r} is not a safe file name")
    path = Path(run_dir) / EVAL_DIR / f"{name}.json"
    atomic_write_json(path, {**record, "format": EVAL_FORMAT})
    return path


def read_evaluations(run_dir: Path) -> list[dict[str, Any]]:
    """A run's evaluation records, oldest first (each with ``file``: its path)."""
    records = []
    for path in sorted((Path(run_dir) / EVAL_DIR).glob("*.json")):
        with contextlib.suppress(OSError, ValueError):
            record = json.loads(path.read_text())
            if isinstance(record, dict) and record.get("format") == EVAL_FORMAT:
                records.append({**record, "file": str(path)})
    return sorted(records, key=lambda r: (r.get("created", ""), r["file"]))


def load_evaluations(root: Path) -> pd.DataFrame:
    """Every evaluation of every run under ``root``: one row per (run, evaluation file).

    Columns: ``run_id, algo`` (the label), ``env, seed, status, cost_limit, run_dir, file,
    created, checkpoint_epoch, checkpoint_epochs`` (the checkpoint's epoch and the run's
    epochs), ``deterministic, eval_seed, n_episodes, ret, cost, length``
    (episode means), ``violations`` (episodes with cost > cost limit) and ``videos``: a
    list of ``(episode, absolute path, return, cost)`` of the episodes that were filmed.
    """
    rows = []
    for run_dir in iter_run_dirs(root):
        for record in read_evaluations(run_dir):
            episodes = record.get("episodes") or []
            protocol = record.get("protocol") or {}
            limit = float(record.get("cost_limit", float("nan")))
            videos = [
                (int(e["episode"]), str((run_dir / e["video"]).resolve()), e["return"], e["cost"])
                for e in episodes
                if e.get("video")
            ]
            rows.append(
                {
                    "run_id": record.get("run_id", ""),
                    "algo": record.get("label", ""),
                    "env": record.get("env_id", ""),
                    "seed": int(record.get("run_seed", -1)),
                    "status": read_status(run_dir).get("status", "queued"),
                    "cost_limit": limit,
                    "run_dir": str(run_dir),
                    "file": record["file"],
                    "created": record.get("created", ""),
                    "checkpoint_epoch": (record.get("checkpoint") or {}).get("epoch"),
                    "checkpoint_epochs": (record.get("checkpoint") or {}).get("epochs"),
                    "deterministic": bool(protocol.get("deterministic", True)),
                    "eval_seed": protocol.get("seed"),
                    "n_episodes": len(episodes),
                    "ret": float(np.mean([e["return"] for e in episodes])) if episodes else np.nan,
                    "cost": float(np.mean([e["cost"] for e in episodes])) if episodes else np.nan,
                    "length": float(np.mean([e["length"] for e in episodes]))
                    if episodes
                    else np.nan,
                    "violations": int(sum(e["cost"] > limit for e in episodes)),
                    "videos": videos,
                }
            )
    columns = [
        "run_id", "algo", "env", "seed", "status", "cost_limit", "run_dir", "file", "created",
        "checkpoint_epoch", "checkpoint_epochs", "deterministic", "eval_seed", "n_episodes",
        "ret", "cost", "length", "violations", "videos",
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)
