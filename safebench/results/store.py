"""The results store: run-directory layout, atomic writes, status, manifests and the lock.

Layout (docs/architecture.md#one-run)::

    <root>/experiment.yaml  experiment.json  .lock
    <root>/<label>/<env>/seed<k>-<runid8>/
        spec.json  manifest.json  metrics.parquet  checkpoint.pt  status.json
        placement.json (where the launcher ran it)  traceback.txt (failed runs)
        eval/<name>.json (``safebench eval``: per-episode results, never the training metrics)
        tb/ (TensorBoard event files)  wandb/ (offline W&B runs), when live logging is on
        omnisafe/  omnisafe.log  omnisafe_error.json (``omnisafe:NAME`` runs: OmniSafe's own)
        source_config.json (imported runs: the source's config.json)
        damaged-<time>/ (damaged files set aside, with DAMAGE.txt)
    <video_dir>/<label>/<env>/seed<k>-<runid8>/<evaluation>-ep<i>.mp4 (``eval --video``)

The layout is made here and nowhere else (:func:`env_slug`, :func:`run_path`), and so are
the names of a run's files: :class:`RunDir` wraps one run directory, with the path of each
file and its typed reads and writes, and every command, the importers and the OmniSafe
backend go through it. :class:`RunRecord` is the one writer of ``status.json`` /
``traceback.txt`` that the runner, the launcher and the OmniSafe backend use.

Every file is written atomically (temp file in the same directory, fsync, rename), so a
reader or a crash never sees a half-written file. ``<root>/.lock`` is held (``flock``) by
the one ``safebench run`` that may write into ``<root>``; the kernel releases it when that
process dies in any way, so a run left ``running`` by a killed driver is known to be stale.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import json
import os
import platform
import re
import secrets
import socket
import subprocess
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from safebench.errors import WriteError

__all__ = [
    "EVAL_DIR",
    "EXPERIMENT_RECORD",
    "LOCK_FILE",
    "Damage",
    "RunCheck",
    "RunDir",
    "RunRecord",
    "RunStatus",
    "as_write_error",
    "atomic_write",
    "atomic_write_json",
    "check_root",
    "check_run",
    "cpu_model",
    "env_slug",
    "experiment_lock",
    "iter_run_dirs",
    "load_evaluations",
    "load_runs",
    "lock_holder",
    "manifest",
    "read_evaluations",
    "read_experiment",
    "read_status",
    "run_machine",
    "run_path",
    "run_summary",
    "set_aside",
    "write_evaluation",
    "write_experiment",
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


# ---------------------------------------------------------------------------------------------
# One run directory: every name in it is here, and nowhere else
# ---------------------------------------------------------------------------------------------

SPEC_FILE = "spec.json"
STATUS_FILE = "status.json"
TRACEBACK_FILE = "traceback.txt"
MANIFEST_FILE = "manifest.json"
METRICS_FILE = "metrics.parquet"
CHECKPOINT_FILE = "checkpoint.pt"
PLACEMENT_FILE = "placement.json"
TB_DIR = "tb"
WANDB_DIR = "wandb"  # W&B's own name: wandb.init(dir=<run>) writes into <run>/wandb/
OMNISAFE_DIR = "omnisafe"  # OmniSafe's logger root (progress.csv, its own torch_save/)
OMNISAFE_LOG = "omnisafe.log"  # the OmniSafe child's stdout and stderr
OMNISAFE_ERROR = "omnisafe_error.json"  # a config error the OmniSafe child reports
SOURCE_CONFIG = "source_config.json"  # an imported run's config.json, copied
EXPERIMENT_YAML = "experiment.yaml"  # <root>/: the experiment file as given to `run`
VIDEO_SUFFIX = ".mp4"


@dataclass(frozen=True)
class RunDir:
    """One run directory and the files in it: the only code that names them.

    ``RunDir(path)`` wraps any run directory; :meth:`at` makes the layout's path. The
    properties are the paths of the run's files, whether they exist or not; the methods read
    and write them, every write atomic (:func:`atomic_write`). Each read says what it does
    with a file that is absent or does not read; :meth:`check` (:func:`check_run`) classifies
    the whole run, damaged files included.
    """

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @classmethod
    def at(cls, root: Path, label: str, env_id: str, seed: int, run_id: str) -> RunDir:
        """The run directory of the layout: ``root/<label>/<env>/seed<k>-<runid8>``."""
        return cls(run_path(root, label, env_id, seed, run_id))

    # --- the files ---------------------------------------------------------------------------

    @property
    def spec(self) -> Path:
        """``spec.json``: the resolved RunSpec and its ``run_id`` (an importer's, imported)."""
        return self.path / SPEC_FILE

    @property
    def status(self) -> Path:
        """``status.json``: queued / running / done / failed (:class:`RunRecord` writes it)."""
        return self.path / STATUS_FILE

    @property
    def traceback(self) -> Path:
        """``traceback.txt``: the error of a failed run."""
        return self.path / TRACEBACK_FILE

    @property
    def manifest(self) -> Path:
        """``manifest.json``: where and with what the run was produced (:func:`manifest`)."""
        return self.path / MANIFEST_FILE

    @property
    def metrics(self) -> Path:
        """``metrics.parquet``: one row per epoch."""
        return self.path / METRICS_FILE

    @property
    def checkpoint(self) -> Path:
        """``checkpoint.pt``: the latest state, for exact resume and ``safebench eval``."""
        return self.path / CHECKPOINT_FILE

    @property
    def placement(self) -> Path:
        """``placement.json``: where the launcher ran it (host, pid, backend, resources)."""
        return self.path / PLACEMENT_FILE

    @property
    def evaluations(self) -> Path:
        """``eval/``: ``safebench eval`` results, one ``<name>.json`` per evaluation."""
        return self.path / EVAL_DIR

    @property
    def tensorboard(self) -> Path:
        """``tb/``: TensorBoard event files (live logging)."""
        return self.path / TB_DIR

    @property
    def wandb(self) -> Path:
        """``wandb/``: offline W&B runs (live logging)."""
        return self.path / WANDB_DIR

    @property
    def omnisafe_logs(self) -> Path:
        """``omnisafe/``: OmniSafe's own logs of an ``omnisafe:NAME`` run."""
        return self.path / OMNISAFE_DIR

    @property
    def omnisafe_console(self) -> Path:
        """``omnisafe.log``: the console of an ``omnisafe:NAME`` run's child process."""
        return self.path / OMNISAFE_LOG

    @property
    def omnisafe_error(self) -> Path:
        """``omnisafe_error.json``: a config error OmniSafe refused the run with."""
        return self.path / OMNISAFE_ERROR

    @property
    def source_config(self) -> Path:
        """``source_config.json``: an imported run's ``config.json``, as the source wrote it."""
        return self.path / SOURCE_CONFIG

    def evaluation(self, name: str) -> Path:
        """``eval/<name>.json``; ``name`` must be a safe file name."""
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", name):
            raise ValueError(f"evaluation name {name!r} is not a safe file name")
        return self.evaluations / f"{name}.json"

    def video(self, video_dir: Path, label: str, env_id: str, name: str, episode: int) -> Path:
        """Where ``safebench eval --video video_dir`` films ``episode`` of evaluation ``name``:
        ``<video_dir>/<label>/<env>/<this directory's name>/<name>-ep<i>.mp4``."""
        folder = Path(video_dir) / label / env_slug(env_id) / self.path.name
        return folder / f"{name}-ep{episode}{VIDEO_SUFFIX}"

    # --- reads and writes --------------------------------------------------------------------

    def read_spec(self) -> dict[str, Any]:
        """``spec.json`` as written; raises ``OSError`` / ``ValueError`` where it does not read
        (:meth:`check` first where that must not happen)."""
        spec: dict[str, Any] = json.loads(self.spec.read_text())
        return spec

    def write_spec(self, record: dict[str, Any]) -> None:
        atomic_write_json(self.spec, record)

    def read_status(self) -> dict[str, Any]:
        """``status.json``; ``{"status": "queued"}`` when it is absent, and also when it is
        damaged (with ``damaged``: why; :func:`check_run` classifies the whole run)."""
        status, why = _json_object(self.status, ("status",))
        if why is not None:
            return {"status": "queued", "damaged": why}
        return status if isinstance(status, dict) else {"status": "queued"}

    def write_status(
        self, status: RunStatus, error: BaseException | None = None, **extra: Any
    ) -> None:
        """``status.json``; a failure also writes ``traceback.txt`` next to it."""
        payload: dict[str, Any] = {"status": status, "time": time.time(), **extra}
        if error is not None:
            payload["error"] = f"{type(error).__name__}: {error}"
            tb = "".join(traceback.format_exception(error))
            atomic_write(self.traceback, lambda f: f.write(tb.encode()))
        atomic_write_json(self.status, payload)

    @property
    def record(self) -> RunRecord:
        """The run's :class:`RunRecord`: the status transitions of training."""
        return RunRecord(self.path)

    def read_manifest(self) -> dict[str, Any] | None:
        """``manifest.json``; None when it is absent or does not read."""
        record, _ = _json_object(self.manifest)
        return record if isinstance(record, dict) else None

    def write_manifest(self, record: dict[str, Any]) -> None:
        atomic_write_json(self.manifest, record)

    def read_metrics(self, columns: list[str] | None = None) -> pd.DataFrame:
        """``metrics.parquet`` (:func:`read_metrics`); raises where it does not read."""
        return read_metrics(self.metrics, columns)

    def write_metrics(self, rows: list[dict[str, Any]] | pd.DataFrame) -> None:
        """Every epoch so far, the file rewritten whole (:func:`write_metrics`)."""
        write_metrics(self.metrics, rows)

    def has_checkpoint(self) -> bool:
        """Whether ``checkpoint.pt`` is there (a file; :meth:`check` says whether it loads)."""
        return self.checkpoint.is_file()

    def read_placement(self) -> dict[str, Any]:
        """``placement.json``; raises ``OSError`` / ``ValueError`` where it does not read."""
        placement: dict[str, Any] = json.loads(self.placement.read_text())
        return placement

    def write_placement(self, record: dict[str, Any]) -> None:
        atomic_write_json(self.placement, record)

    def write_evaluation(self, name: str, record: dict[str, Any]) -> Path:
        """``eval/<name>.json``, atomically; the same evaluation again replaces its file."""
        path = self.evaluation(name)
        atomic_write_json(path, {**record, "format": EVAL_FORMAT})
        return path

    def read_evaluations(self) -> list[dict[str, Any]]:
        """The run's evaluation records, oldest first (each with ``file``: its path)."""
        records = []
        for path in sorted(self.evaluations.glob("*.json")):
            with contextlib.suppress(OSError, ValueError):
                record = json.loads(path.read_text())
                if isinstance(record, dict) and record.get("format") == EVAL_FORMAT:
                    records.append({**record, "file": str(path)})
        return sorted(records, key=lambda r: (r.get("created", ""), r["file"]))

    def check(self, *, deep: bool = True) -> RunCheck:
        """:func:`check_run` of this run."""
        return check_run(self.path, deep=deep)


_WRITE_FIXES = {
    errno.EACCES: "make the folder writable for you, or choose another output folder",
    errno.EPERM: "make the folder writable for you, or choose another output folder",
    errno.EROFS: "the file system is read-only: choose an output folder on a writable one",
    errno.ENOSPC: "the disk is full: free some space (or choose another output folder) and "
    "run the command again; runs resume from their last checkpoint",
    errno.EDQUOT: "your disk quota is used up: free some space (or choose another output "
    "folder) and run the command again; runs resume from their last checkpoint",
}


def as_write_error(exc: OSError, path: Path | str | None = None) -> WriteError | None:
    """The one-line :class:`~safebench.errors.WriteError` for a write that cannot happen
    (permission denied, read-only file system, disk full, quota), or None for other errors."""
    from safebench.errors import WriteError

    if isinstance(exc, WriteError):
        return exc
    fix = _WRITE_FIXES.get(exc.errno or 0)
    if fix is None:
        return None
    where = path if path is not None else exc.filename
    what = exc.strerror or os.strerror(exc.errno or 0)
    return WriteError(f"cannot write {where or 'a file'}: {what}; {fix}")


def atomic_write(path: Path, write: Callable[[io.BufferedWriter], object]) -> None:
    """Write ``path`` through ``write(fileobj)`` into a temp file, fsync, then rename.

    A write that cannot happen (permission, read-only file system, disk full) raises
    :class:`~safebench.errors.WriteError` naming ``path``; the temp file is removed and
    the old ``path``, if any, is left as it was.
    """
    try:
        _atomic_write(path, write)
    except OSError as exc:
        error = as_write_error(exc, path)
        if error is None or error is exc:
            raise
        raise error from exc


def _temp_beside(path: Path) -> tuple[int, str]:
    """A new hidden file next to ``path``, mode 0666 less the umask (an ordinary result file:
    ``mkstemp`` would make it 0600, readable by its owner only, after the rename too)."""
    for _ in range(100):
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name next to {path}")


def _atomic_write(path: Path, write: Callable[[io.BufferedWriter], object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temp_beside(path)
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


def write_metrics(path: Path, rows: list[dict[str, Any]] | pd.DataFrame) -> None:
    """All epochs so far as one parquet file (rewritten whole: a few hundred rows at most)."""
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
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
    RunDir(run_dir).write_status(status, error, **extra)


class RunRecord:
    """The one writer of a run's state (``status.json``; ``traceback.txt`` on failure).

    The runner and the OmniSafe backend wrap training in :meth:`training`; the launcher
    queues runs and records what its workers could not (a worker that died, a cancelled task).
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self._run = RunDir(self.run_dir)

    @property
    def status(self) -> str:
        return str(self._run.read_status().get("status", "queued"))

    def queued(self, note: str | None = None) -> None:
        if note is None:
            self._run.write_status("queued")
        else:
            self._run.write_status("queued", note=note)

    def running(self, **extra: Any) -> None:
        self._run.write_status("running", **extra)

    def done(self, **extra: Any) -> None:
        self._run.write_status("done", **extra)

    def failed(self, error: BaseException) -> None:
        self._run.write_status("failed", error=error)

    @contextlib.contextmanager
    def training(self, *, on_interrupt: str, **running: Any) -> Iterator[RunRecord]:
        """``running`` for the block; an interrupt leaves it ``queued`` (note ``on_interrupt``),
        any other exception ``failed`` with its traceback. The block calls :meth:`done`.

        ``SystemExit`` counts as an interrupt: it is how a process is told to end from outside
        (a Ray worker turns the SIGTERM its raylet sends when the launcher dies into one), and
        the run resumes from its last checkpoint like any other interrupted run.
        """
        from safebench.errors import RunInterrupted, WriteError

        self.running(**running)
        try:
            yield self
        except (RunInterrupted, KeyboardInterrupt, SystemExit):
            self.queued(note=f"interrupted; {on_interrupt}")
            raise
        except WriteError:
            raise  # nothing can be written: left "running", the next launch resumes it
        except BaseException as exc:
            self.failed(exc)
            raise


def read_status(run_dir: Path) -> dict[str, Any]:
    """``status.json``; ``{"status": "queued"}`` when it is absent, and also when it is damaged
    (with ``damaged``: why; :func:`check_run` classifies the whole run)."""
    return RunDir(run_dir).read_status()


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


def run_machine(run_dir: Path) -> str:
    """The machine a run trained on, from its ``manifest.json`` (:func:`manifest`, written
    when it first started): host, CPU model and count, and the GPUs of a run on CUDA —
    ``host: AMD EPYC 7B13 (16 CPUs)``; ``unknown`` when the run has no readable manifest or
    it names no machine (imported runs)."""
    record = RunDir(run_dir).read_manifest()
    if record is None or not (record.get("hostname") or record.get("cpu")):
        return "unknown"
    text = f"{record.get('hostname') or 'unknown host'}: {record.get('cpu') or 'unknown CPU'}"
    if isinstance(record.get("cpu_count"), int):
        text += f" ({record['cpu_count']} CPUs)"
    gpus = record.get("gpus")
    if str(record.get("device", "")).startswith("cuda") and isinstance(gpus, list) and gpus:
        text += ", GPU " + ", ".join(str(g) for g in gpus)  # the run trained on one of them
    return text


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

    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        error = as_write_error(exc, root / LOCK_FILE)
        if error is None:
            raise
        raise error from exc
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


# ---------------------------------------------------------------------------------------------
# Damage: the one place that reads a run directory and says whether it can be trusted
# ---------------------------------------------------------------------------------------------

RunHealth = Literal["healthy", "damaged", "incomplete"]
DAMAGED_PREFIX = "damaged-"
# Columns every metrics.parquet has (native and imported runs): without them no curve.
METRIC_COLUMNS = ("epoch", "steps")
SPEC_KEYS = ("algo", "env_id", "seed", "cost_limit")  # what every reader of a spec needs
STATUSES = ("queued", "running", "done", "failed")
RUN_FILES = (SPEC_FILE, STATUS_FILE, MANIFEST_FILE, METRICS_FILE, CHECKPOINT_FILE)
# What a run re-trained from scratch would overwrite: set aside with its damaged files.
_RESTART_FILES = [METRICS_FILE, STATUS_FILE, TRACEBACK_FILE]
DAMAGE_LIST = "DAMAGE.txt"  # in a damaged-<time>/ folder: which files and why
_RUN_DIR_NAME = re.compile(r"seed(-?\d+)-([0-9a-f]{8})")


@dataclass(frozen=True)
class Damage:
    """One file of a run that cannot be trusted: its name in the run directory, and why."""

    file: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.reason}"


@dataclass(frozen=True)
class RunCheck:
    """What :func:`check_run` found in one run directory (nothing in it is changed).

    ``health``: ``damaged`` (some file cannot be read or does not belong: ``damage``),
    ``healthy`` (done, every file reads) or ``incomplete`` (queued, running or failed).
    ``spec``/``status``/``metrics`` are the files' contents where they read (``status`` is
    ``{"status": "queued"}`` when absent or damaged); ``checkpoint``: ``ok``, ``missing``
    or ``damaged``.
    """

    run_dir: Path
    damage: tuple[Damage, ...]
    spec: dict[str, Any] | None
    status: dict[str, Any]
    metrics: pd.DataFrame | None
    checkpoint: Literal["ok", "missing", "damaged"]

    @property
    def damaged(self) -> bool:
        return bool(self.damage)

    @property
    def health(self) -> RunHealth:
        if self.damage:
            return "damaged"
        return "healthy" if self.state == "done" else "incomplete"

    @property
    def state(self) -> str:
        """The run's recorded status (``queued`` when none can be read)."""
        return str(self.status.get("status", "queued"))

    def files(self) -> str:
        """The damaged files and why, on one line."""
        return "; ".join(str(d) for d in self.damage)

    def action(self) -> str:
        """What the next ``safebench run`` of its experiment does to this run."""
        if self.damage:
            start = "from its checkpoint" if self.checkpoint == "ok" else "from scratch"
            names = [d.file for d in self.damage]
            if self.checkpoint != "ok":  # re-trained from scratch: these would be overwritten
                names += [n for n in _RESTART_FILES if (self.run_dir / n).exists()]
            listed = ", ".join(dict.fromkeys(names))
            return f"moves {listed} into {DAMAGED_PREFIX}<time>/ and re-trains it {start}"
        if self.state == "done":
            return "nothing (done)"
        if self.state == "failed":
            return "nothing (failed; --retry-failed re-trains it)"
        start = "resumes it from its checkpoint" if self.checkpoint == "ok" else "trains it"
        return start


def _read_bytes(path: Path) -> tuple[bytes | None, str | None]:
    """``(data, None)``, ``(None, None)`` if absent, or ``(None, reason)`` if unreadable."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, None
    except PermissionError:
        return None, "unreadable (permission denied)"
    except IsADirectoryError:
        return None, "is a directory, not a file"
    except OSError as exc:
        return None, f"unreadable ({exc.strerror or exc})"
    if not data:
        return None, "empty"
    return data, None


def _json_object(path: Path, required: tuple[str, ...] = ()) -> tuple[Any, str | None]:
    data, why = _read_bytes(path)
    if data is None:
        return None, why
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None, "not JSON (truncated or garbage)"
    if not isinstance(obj, dict):
        return None, f"wrong schema (a JSON {type(obj).__name__}, not an object)"
    missing = [k for k in required if k not in obj]
    if missing:
        return None, f"wrong schema (no {', '.join(missing)})"
    return obj, None


def _check_spec_record(run_dir: Path, spec: dict[str, Any]) -> str | None:
    try:
        seed = int(spec["seed"])
        float(spec["cost_limit"]), int(spec.get("budget", 0)), int(spec.get("steps_per_epoch", 1))
    except (TypeError, ValueError):
        return "wrong schema (seed, cost_limit, budget or steps_per_epoch is not a number)"
    name = _RUN_DIR_NAME.fullmatch(run_dir.name)
    run_id = str(spec.get("run_id", ""))
    if name and run_id and (run_id[:8] != name.group(2) or seed != int(name.group(1))):
        return f"belongs to another run ({run_id[:8]}, seed {seed}), not to this directory"
    return None


def _check_metrics(path: Path) -> tuple[pd.DataFrame | None, str | None]:
    data, why = _read_bytes(path)
    if data is None:
        return None, why
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(pa.BufferReader(data), use_threads=False, pre_buffer=False)
        frame = table.to_pandas(use_threads=False)
    except (pa.ArrowException, OSError, ValueError):
        return None, "not a parquet file (truncated or garbage)"
    missing = [c for c in METRIC_COLUMNS if c not in frame.columns]
    if missing and len(frame):
        return None, f"wrong columns (no {', '.join(missing)})"
    return frame, None


def _check_checkpoint(path: Path, deep: bool) -> str | None:
    """Why ``checkpoint.pt`` would not load, or None: its zip archive (the format
    ``torch.save`` writes) opens, and with ``deep`` every member's CRC matches; no torch
    import and no unpickling here. The quick check reads only the archive's directory."""
    import zipfile

    try:
        if path.stat().st_size == 0:
            return "empty"
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip() if deep else None
    except FileNotFoundError:
        return None
    except PermissionError:
        return "unreadable (permission denied)"
    except (zipfile.BadZipFile, EOFError, ValueError, OSError):
        return "does not load (truncated or garbage)"
    if bad is not None:
        return f"does not load (corrupt member {bad})"
    return None


def check_run(run_dir: Path, *, deep: bool = True) -> RunCheck:
    """Read every file of ``run_dir`` and classify it (see :class:`RunCheck`).

    Every reader of run files asks here: a file that is truncated, empty, garbage, of the
    wrong schema, unreadable, or that belongs to another run (a ``spec.json`` whose run id
    is not its directory's) makes the run *damaged*, with the file named and why; it never
    raises for what is on disk. ``deep`` also checks every byte of ``checkpoint.pt``
    (otherwise only that its archive opens: what a report of hundreds of runs can afford).
    """
    run = RunDir(run_dir)
    damage: list[Damage] = []
    spec, why = _json_object(run.spec, SPEC_KEYS)
    if spec is None and why is None:
        why = "missing"
    if why is None and spec is not None:
        why = _check_spec_record(run.path, spec)
    if why is not None:
        damage.append(Damage(run.spec.name, why))
        spec = None
    status, why = _json_object(run.status, ("status",))
    if why is None and status is not None and status.get("status") not in STATUSES:
        why = f"wrong schema (status {status.get('status')!r})"
    if why is not None:
        damage.append(Damage(run.status.name, why))
    if status is None or why is not None:
        status = {"status": "queued"}
    _, why = _json_object(run.manifest)
    if why is not None:
        damage.append(Damage(run.manifest.name, why))
    metrics, why = _check_metrics(run.metrics)
    if why is not None:
        damage.append(Damage(run.metrics.name, why))
    why = _check_checkpoint(run.checkpoint, deep)
    if why is not None:
        damage.append(Damage(run.checkpoint.name, why))
    ckpt: Literal["ok", "missing", "damaged"] = (
        "damaged" if why else "ok" if run.checkpoint.exists() else "missing"
    )
    return RunCheck(run.path, tuple(damage), spec, status, metrics, ckpt)


def check_root(root: Path, *, deep: bool = False) -> list[RunCheck]:
    """:func:`check_run` of every run directory under ``root``."""
    return [check_run(d, deep=deep) for d in iter_run_dirs(root)]


def set_aside(check: RunCheck) -> Path | None:
    """Move a damaged run's damaged files into ``<run>/damaged-<time>/`` (never delete them)
    and queue the run again; None if it is not damaged.

    When its checkpoint does not load, the run re-trains from scratch: its metrics and status
    go aside too (they would be overwritten). Otherwise it resumes from the checkpoint, whose
    rows rewrite the metrics.
    """
    if not check.damage:
        return None
    run_dir = check.run_dir
    names = [d.file for d in check.damage]
    if check.checkpoint != "ok":
        names += _RESTART_FILES
    aside = run_dir / time.strftime(f"{DAMAGED_PREFIX}%Y%m%d-%H%M%S")
    n = 1
    while aside.exists():
        n += 1
        aside = aside.with_name(time.strftime(f"{DAMAGED_PREFIX}%Y%m%d-%H%M%S-{n}"))
    aside.mkdir()
    for name in dict.fromkeys(names):
        if (run_dir / name).exists():
            os.replace(run_dir / name, aside / name)
    listing = "".join(f"{d}\n" for d in check.damage).encode()
    atomic_write(aside / DAMAGE_LIST, lambda f: f.write(listing))
    note = f"damaged ({check.files()}); set aside in {aside.name}/ and re-trained"
    write_status(run_dir, "queued", note=note)
    return aside


EXPERIMENT_RECORD = "experiment.json"


def read_experiment(root: Path) -> tuple[dict[str, Any], str | None]:
    """The experiment last launched into ``root`` (its ``experiment.json`` record).

    ``({}, None)`` when the root has none (runs brought by ``import``, a bare ``train``);
    ``({}, reason)`` when the record is damaged — a report still builds from the runs.
    """
    obj, why = _json_object(Path(root) / EXPERIMENT_RECORD, ("experiment",))
    if obj is None or not isinstance(obj["experiment"], dict):
        return {}, (f"{EXPERIMENT_RECORD}: {why or 'wrong schema'}" if obj or why else None)
    return obj["experiment"], None


def write_experiment(root: Path, record: dict[str, Any], text: str = "") -> None:
    """``<root>/experiment.json`` (the validated experiment and its runs, :func:`read_experiment`)
    and, when ``text`` is given, ``<root>/experiment.yaml``: the experiment file as given."""
    root = Path(root)
    if text:
        data = text.encode()
        atomic_write(root / EXPERIMENT_YAML, lambda f: f.write(data))
    atomic_write_json(root / EXPERIMENT_RECORD, record)


def iter_run_dirs(root: Path) -> list[Path]:
    """Every run directory under ``root`` (a directory holding ``spec.json``), sorted; not
    the files a resume set aside (``damaged-*``) nor hidden folders (staging, temp)."""
    root = Path(root)
    return sorted(
        p.parent
        for p in root.rglob(SPEC_FILE)
        if not any(
            part.startswith((DAMAGED_PREFIX, ".")) for part in p.parent.relative_to(root).parts
        )
    )


def load_runs(root: Path, checks: list[RunCheck] | None = None) -> pd.DataFrame:
    """All runs under ``root`` as one tidy frame, one row per (run, epoch); damaged runs
    (:func:`check_run`) are left out: :func:`check_root` names them.

    Columns: ``run_id, experiment, algo`` (the run's label), ``algo_name`` (registry name),
    ``env, seed, status, cost_limit, run_dir``, ``origin`` (``safebench``, or the
    ``source.kind`` an importer recorded: ``omnisafe``, ``safepo``), ``created_ns`` (the
    ``spec.json`` modification time, ns: which of two runs of a cell is newer) followed by
    the metrics columns (``epoch, steps, ep_ret, ep_cost, ep_len, eval_ret, eval_cost,
    ...``). A run without metrics yet
    (queued, or failed before its first epoch) contributes one row with NaN metrics and its
    status, so it is reported rather than silently dropped. ``checks``: the
    :func:`check_root` of ``root`` when the caller has it already.
    """
    frames = []
    for check in check_root(root) if checks is None else checks:
        if check.damaged or check.spec is None:
            continue
        run_dir, spec = check.run_dir, check.spec
        source = spec.get("source") if isinstance(spec.get("source"), dict) else None
        try:
            created_ns = RunDir(run_dir).spec.stat().st_mtime_ns
        except OSError:
            continue  # removed since it was checked
        meta = {
            "run_id": spec.get("run_id", run_dir.name),
            "experiment": spec.get("experiment", ""),
            "algo": spec.get("label") or spec["algo"],
            "algo_name": spec["algo"],
            "env": spec["env_id"],
            "seed": int(spec["seed"]),
            "status": check.state,
            "cost_limit": float(spec["cost_limit"]),
            "run_dir": str(run_dir),
            "origin": str(source.get("kind", "imported")) if source else "safebench",
            "created_ns": created_ns,
        }
        frame = check.metrics.copy() if check.metrics is not None else pd.DataFrame()
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


def run_summary(run_dir: Path, check: RunCheck | None = None) -> dict[str, Any]:
    """One run's state for status tables: names, status, epochs and steps done, error, and
    ``health`` / ``damage`` (:func:`check_run`; names from the directory when ``spec.json``
    is damaged)."""
    check = check or check_run(run_dir, deep=False)
    spec, status = check.spec, check.status
    if spec is None:
        name = _RUN_DIR_NAME.fullmatch(run_dir.name)
        spec = {
            "run_id": name.group(2) if name else run_dir.name,
            "algo": run_dir.parent.parent.name,
            "env_id": run_dir.parent.name,
            "seed": int(name.group(1)) if name else -1,
            "budget": 0,
            "steps_per_epoch": 1,
        }
    budget, per_epoch = int(spec.get("budget", 0)), max(int(spec.get("steps_per_epoch", 1)), 1)
    epochs_done, steps = 0, 0
    updated = status.get("time")
    if check.metrics is not None and "steps" in check.metrics.columns:
        with contextlib.suppress(OSError):
            updated = max(updated or 0.0, RunDir(run_dir).metrics.stat().st_mtime)
        column = check.metrics["steps"]
        epochs_done = len(column)
        steps = int(column.iloc[-1]) if epochs_done else 0
    return {
        "run_id": spec.get("run_id", ""),
        "label": spec.get("label") or spec["algo"],
        "algo": spec["algo"],
        "env": spec["env_id"],
        "seed": int(spec["seed"]),
        "cost_limit": spec.get("cost_limit"),
        "status": "damaged" if check.damaged else status.get("status", "queued"),
        "error": status.get("error"),
        "note": status.get("note"),
        "health": check.health,
        "damage": check.files(),
        "action": check.action(),
        "epochs_done": epochs_done,
        "epochs": max(-(-budget // per_epoch), 0),
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
    return RunDir(run_dir).write_evaluation(name, record)


def read_evaluations(run_dir: Path) -> list[dict[str, Any]]:
    """A run's evaluation records, oldest first (each with ``file``: its path)."""
    return RunDir(run_dir).read_evaluations()


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
