"""Bring runs trained elsewhere (OmniSafe, SafePO) into a safebench results store.

Both libraries write one folder per run holding ``progress.csv`` (one row per epoch) and
``config.json``:

* **OmniSafe** (0.5.0): ``<log_dir>/<Algo>-{<env_id>}/seed-<NNN>-<time>/``; the config has
  ``algo``, ``env_id``, ``seed``, ``train_cfgs.total_steps`` / ``train_cfgs.epochs``,
  ``algo_cfgs.steps_per_epoch`` and the cost limit under ``algo_cfgs`` or
  ``lagrange_cfgs`` (none for unconstrained algorithms); ``progress.csv`` has
  ``Metrics/EpRet``, ``Metrics/EpCost``, ``Metrics/EpLen``, ``Train/Epoch`` (from 0) and
  ``TotalEnvSteps``.
* **SafePO** (and the C-TRPO code built on it): ``<log_dir>/<env_id>/<algo>/seed-<NNN>-<time>/``;
  the config has ``task``, ``seed``, ``cost_limit``, ``total_steps``, ``steps_per_epoch``
  and ``exp_name`` = ``<task>-<algo>-seed-<seed>``; ``progress.csv`` has ``Metrics/EpRet``,
  ``Metrics/EpCost``, ``Metrics/EpLen``, ``Train/Epoch`` (from 1) and ``Train/TotalSteps``.

Each imported run becomes an ordinary run directory
``<into>/<label>/<env>/seed<k>-<runid8>/`` with ``spec.json`` (marked ``source`` with the
original folder), ``manifest.json``, ``metrics.parquet`` (``epoch, steps, ep_ret, ep_cost,
ep_len``, evaluation columns when the source logged them, every other source column as
``source/<name>``), ``status.json`` and a copy of the source ``config.json``, so that
``load_runs`` and ``safebench report`` treat it like a native run.

* Status: ``done`` when the run logged its configured number of epochs or reached its
  configured total steps, otherwise ``running`` (partial: the source run may still be going
  or may have stopped early; the report keeps it out of aggregates and says so).
* Run id: sha256 over the source kind, label, env, seed, the run folder's name (which
  carries its start time) and ``config.json`` without its ``log_dir``. It does not depend on
  where the folder lies or how far the run got, so importing again never duplicates a run:
  an unchanged run is left alone and a run that progressed is updated in place.
* Atomicity: a new run is assembled in a staging directory, renamed into place, and its
  ``spec.json`` (which makes it visible to ``load_runs``) is written last, atomically. An
  update rewrites ``metrics.parquet`` and then ``status.json``, each atomically.
* Malformed or partial folders (no ``progress.csv``, no rows, unreadable JSON/CSV,
  missing columns, non-numeric values, steps going backwards, no cost limit) are skipped
  and listed with the reason; they never abort the import.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from safebench.errors import UserError
from safebench.results.store import RunDir, RunStatus, package_versions

__all__ = [
    "SOURCES",
    "ImportResult",
    "ImportedRun",
    "MalformedRun",
    "SkippedFolder",
    "find_run_folders",
    "import_runs",
    "progress_metrics",
    "read_progress",
    "read_run_folder",
]

Source = Literal["omnisafe", "safepo"]
SOURCES: tuple[str, ...] = ("omnisafe", "safepo")

PROGRESS = "progress.csv"
CONFIG = "config.json"

# progress.csv column -> safebench metrics column, first match wins.
_RET = ("Metrics/EpRet",)
_COST = ("Metrics/EpCost",)
_LEN = ("Metrics/EpLen",)
_STEPS = ("TotalEnvSteps", "Train/TotalSteps", "Train/TotalEnvSteps")
_EVAL_RET = ("Metrics/TestEpRet", "Metrics/EvalEpRet", "Eval/EpRet")
_EVAL_COST = ("Metrics/TestEpCost", "Metrics/EvalEpCost", "Eval/EpCost")
_EVAL_LEN = ("Metrics/TestEpLen", "Metrics/EvalEpLen", "Eval/EpLen")


class MalformedRun(Exception):
    """A run folder that cannot be imported; the message says why."""


@dataclass(frozen=True)
class SourceRun:
    """One source run folder, read and mapped onto safebench's vocabulary."""

    source: Source
    folder: Path
    algo: str
    env_id: str
    seed: int
    cost_limit: float
    total_steps: int | None
    epochs_planned: int | None
    steps_per_epoch: int | None
    config: dict[str, Any]
    metrics: pd.DataFrame
    notes: tuple[str, ...] = ()

    @property
    def finished(self) -> bool:
        """Whether the run reached its configured length (epochs or total steps)."""
        if self.metrics.empty:
            return False
        if self.epochs_planned is not None and len(self.metrics) >= self.epochs_planned:
            return True
        last = float(self.metrics["steps"].iloc[-1])
        return self.total_steps is not None and last >= self.total_steps


@dataclass(frozen=True)
class ImportedRun:
    """A run now in the store: ``action`` is ``imported``, ``updated`` or ``unchanged``."""

    source_folder: Path
    run_dir: Path
    run_id: str
    label: str
    env_id: str
    seed: int
    status: str
    epochs: int
    steps: float
    action: Literal["imported", "updated", "unchanged"]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class SkippedFolder:
    """A folder that looked like a run but could not be imported, and why."""

    folder: Path
    reason: str


@dataclass
class ImportResult:
    """What ``import_runs`` did with every run folder it found."""

    runs: list[ImportedRun] = field(default_factory=list)
    skipped: list[SkippedFolder] = field(default_factory=list)

    def count(self, action: str) -> int:
        return sum(r.action == action for r in self.runs)


# --------------------------------------------------------------------------- discovery


def find_run_folders(path: Path) -> list[Path]:
    """Folders under ``path`` (itself included) that hold ``progress.csv`` or ``config.json``.

    A folder with only ``config.json`` is returned too, so that a run which never logged
    an epoch is reported as skipped instead of vanishing. Folders nested inside a run
    folder (OmniSafe's ``torch_save/``, notebook checkpoints) are not separate runs.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"import: {path} does not exist")
    if path.is_file():
        raise UserError(f"import: {path} is a file; pass the folder holding the run(s)")
    logged = {p.parent for p in path.rglob(PROGRESS) if p.is_file()}
    configured = {p.parent for p in path.rglob(CONFIG) if p.is_file()}

    def inside_run(folder: Path) -> bool:
        return any(parent in logged for parent in folder.parents)

    runs = {f for f in logged if not inside_run(f)}
    # A config-only folder is a run that never logged, unless runs lie beneath it (then it
    # is an experiment-level config, not a run).
    unlogged = {
        f
        for f in configured - logged
        if not inside_run(f) and not any(f in r.parents for r in runs)
    }
    return sorted(runs | unlogged)


# --------------------------------------------------------------------------- reading


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG
    if not path.is_file():
        raise MalformedRun(f"no {CONFIG} (algorithm, env and seed are unknown)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedRun(f"{CONFIG} is not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise MalformedRun(f"{CONFIG} does not hold a JSON object")
    return config


def read_progress(folder: Path) -> tuple[pd.DataFrame, list[str]]:
    """``progress.csv`` as floats; a partially written last line is dropped with a note."""
    path = folder / PROGRESS
    if not path.is_file():
        raise MalformedRun(f"no {PROGRESS} (the run never logged an epoch)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MalformedRun(f"{PROGRESS} cannot be read ({exc})") from None
    rows = list(csv.reader(io.StringIO(text)))
    rows = [r for r in rows if r]
    if not rows:
        raise MalformedRun(f"{PROGRESS} is empty")
    header, body = rows[0], rows[1:]
    notes: list[str] = []
    # A run killed while writing leaves its last line short (or unterminated); that epoch
    # is incomplete, everything before it is intact.
    if body and (len(body[-1]) != len(header) or not text.endswith("\n")):
        body = body[:-1]
        notes.append(f"dropped a partially written last line of {PROGRESS}")
    bad = [i + 2 for i, r in enumerate(body) if len(r) != len(header)]
    if bad:
        raise MalformedRun(
            f"{PROGRESS} line(s) {bad[:5]} have a different number of fields than the header"
        )
    if not body:
        raise MalformedRun(f"{PROGRESS} has a header but no epochs")
    # float() semantics: loggers write NaN as "nan" (an epoch without a finished episode)
    # and an empty field means the same
    try:
        values = np.array([[v.strip() or "nan" for v in r] for r in body], dtype=float)
    except ValueError as exc:
        raise MalformedRun(f"{PROGRESS} holds non-numeric values ({exc})") from None
    return pd.DataFrame(values, columns=header), notes


def _first(frame: pd.DataFrame, names: tuple[str, ...]) -> str | None:
    return next((n for n in names if n in frame.columns), None)


def _find_key(config: Mapping[str, Any], key: str, sections: tuple[str, ...]) -> Any:
    """``config[key]`` at the top level or in one of ``sections`` (first found), else None."""
    if key in config:
        return config[key]
    for section in sections:
        sub = config.get(section)
        if isinstance(sub, Mapping) and key in sub:
            return sub[key]
    return None


def _as_int(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def progress_metrics(progress: pd.DataFrame, steps_per_epoch: int | None) -> pd.DataFrame:
    """safebench's metrics columns from a progress frame (source columns kept as source/*)."""
    missing = [names[0] for names in (_RET, _COST) if _first(progress, names) is None]
    if missing:
        raise MalformedRun(f"{PROGRESS} lacks column(s) {missing}")
    steps_col = _first(progress, _STEPS)
    if steps_col is not None:
        steps = progress[steps_col].to_numpy(float)
    elif steps_per_epoch:
        steps = (np.arange(len(progress)) + 1.0) * steps_per_epoch
    else:
        raise MalformedRun(f"{PROGRESS} has no step column {list(_STEPS)} and no steps_per_epoch")
    if np.isnan(steps).any():
        raise MalformedRun(f"{PROGRESS}: {steps_col} has empty entries")
    if (np.diff(steps) <= 0).any():
        raise MalformedRun(f"{PROGRESS}: {steps_col} does not increase from epoch to epoch")
    out = pd.DataFrame({"epoch": np.arange(len(progress)), "steps": steps})
    nan = np.full(len(progress), math.nan)
    for target, names in (
        ("ep_ret", _RET),
        ("ep_cost", _COST),
        ("ep_len", _LEN),
        ("eval_ret", _EVAL_RET),
        ("eval_cost", _EVAL_COST),
        ("eval_len", _EVAL_LEN),
    ):
        column = _first(progress, names)
        out[target] = progress[column].to_numpy(float) if column is not None else nan
    for column in progress.columns:
        out[f"source/{column}"] = progress[column].to_numpy(float)
    return out


def _omnisafe_meta(folder: Path, config: dict[str, Any]) -> dict[str, Any]:
    algo = config.get("algo")
    env_id = config.get("env_id")
    if not algo or not env_id:
        raise MalformedRun(
            f"{CONFIG} lacks 'algo' / 'env_id' (is this an OmniSafe run? try 'safepo')"
        )
    epochs = _as_int(_find_key(config, "epochs", ("train_cfgs",)))
    return {
        "algo": str(algo),
        "env_id": str(env_id),
        "total_steps": _as_int(_find_key(config, "total_steps", ("train_cfgs",))),
        "steps_per_epoch": _as_int(_find_key(config, "steps_per_epoch", ("algo_cfgs",))),
        "epochs": epochs,
        "cost_limit": _find_key(config, "cost_limit", ("algo_cfgs", "lagrange_cfgs")),
    }


def _safepo_meta(folder: Path, config: dict[str, Any]) -> dict[str, Any]:
    env_id = config.get("task") or config.get("env_id") or config.get("env_name")
    if not env_id:
        raise MalformedRun(f"{CONFIG} lacks 'task' (is this a SafePO run? try 'omnisafe')")
    algo = config.get("algo")
    exp_name = str(config.get("exp_name", ""))
    seed = config.get("seed")
    prefix, suffix = f"{env_id}-", f"-seed-{seed}"
    if not algo and exp_name.startswith(prefix) and exp_name.endswith(suffix):
        algo = exp_name[len(prefix) : -len(suffix)]
    if not algo:
        # SafePO's own layout: .../<task>/<algo>/seed-<NNN>-<time>/
        algo = folder.parent.name
    total = _as_int(config.get("total_steps"))
    per_epoch = _as_int(config.get("steps_per_epoch"))
    return {
        "algo": str(algo),
        "env_id": str(env_id),
        "total_steps": total,
        "steps_per_epoch": per_epoch,
        "epochs": total // per_epoch if total and per_epoch else None,
        "cost_limit": config.get("cost_limit"),
    }


def read_run_folder(source: Source, folder: Path, *, cost_limit: float | None = None) -> SourceRun:
    """Read one OmniSafe / SafePO run folder; raises ``MalformedRun`` with the reason.

    ``cost_limit`` is used when the config has none (e.g. unconstrained PPO, whose runs
    still need the env's limit to compute costs against); a limit in the config wins.
    """
    if source not in SOURCES:
        raise UserError(f"import: source must be one of {list(SOURCES)}, got {source!r}")
    folder = Path(folder)
    config = _read_config(folder)
    meta = _omnisafe_meta(folder, config) if source == "omnisafe" else _safepo_meta(folder, config)
    seed = _as_int(config.get("seed"))
    if seed is None or seed < 0:
        raise MalformedRun(f"{CONFIG} lacks a non-negative integer 'seed'")
    limit = meta["cost_limit"] if meta["cost_limit"] is not None else cost_limit
    try:
        limit_value = float(limit) if limit is not None else math.nan
    except (TypeError, ValueError):
        limit_value = math.nan
    if not math.isfinite(limit_value) or limit_value < 0:
        raise MalformedRun(
            f"{CONFIG} has no usable cost_limit ({limit!r}); pass --cost-limit for runs of "
            "unconstrained algorithms"
        )
    progress, notes = read_progress(folder)
    metrics = progress_metrics(progress, meta["steps_per_epoch"])
    return SourceRun(
        source=source,
        folder=folder,
        algo=meta["algo"],
        env_id=meta["env_id"],
        seed=seed,
        cost_limit=limit_value,
        total_steps=meta["total_steps"],
        epochs_planned=meta["epochs"],
        steps_per_epoch=meta["steps_per_epoch"],
        config=config,
        metrics=metrics,
        notes=tuple(notes),
    )


# --------------------------------------------------------------------------- writing


def _without_log_dir(value: Any) -> Any:
    """``value`` with every ``log_dir`` key removed, at any depth."""
    if isinstance(value, Mapping):
        return {k: _without_log_dir(v) for k, v in value.items() if k != "log_dir"}
    if isinstance(value, list):
        return [_without_log_dir(v) for v in value]
    return value


def _run_id(run: SourceRun, label: str) -> str:
    # log_dir is where the run happened to be written, not what it is.
    config = _without_log_dir(run.config)
    payload = {
        "source": run.source,
        "label": label,
        "env_id": run.env_id,
        "seed": run.seed,
        "folder": run.folder.name,
        "config": config,
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _spec(run: SourceRun, label: str, run_id: str, experiment: str) -> dict[str, Any]:
    budget = run.total_steps or int(run.metrics["steps"].iloc[-1])
    return {
        "run_id": run_id,
        "experiment": experiment,
        "algo": run.algo,
        "label": label,
        "config": run.config,
        "env_id": run.env_id,
        "env_kwargs": {},
        "seed": run.seed,
        "budget": budget,
        "steps_per_epoch": run.steps_per_epoch or 0,
        "cost_limit": run.cost_limit,
        "source": {
            "kind": run.source,
            "path": str(run.folder.resolve()),
            "folder": run.folder.name,
            "epochs_planned": run.epochs_planned,
            "total_steps": run.total_steps,
        },
    }


def _status_extra(run: SourceRun) -> dict[str, Any]:
    steps = float(run.metrics["steps"].iloc[-1])
    extra: dict[str, Any] = {"steps": steps, "imported_from": run.source}
    if not run.finished:
        target = run.total_steps if run.total_steps is not None else "unknown"
        extra["note"] = (
            f"partial: imported at {steps:.0f} of {target} steps "
            f"({len(run.metrics)} epoch(s)); the source run may still be going or may have stopped"
        )
    return extra


def _write_new(run: SourceRun, dest: RunDir, spec: dict[str, Any]) -> None:
    """Stage every file, rename the directory into place, then publish ``spec.json``."""
    final = dest.path
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = RunDir(
        Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".staging", dir=final.parent))
    )
    staging.path.chmod(0o755)  # mkdtemp makes it private; it becomes an ordinary run directory
    try:
        staging.write_metrics(run.metrics)
        shutil.copyfile(run.folder / CONFIG, staging.source_config)
        staging.write_manifest(
            {
                "imported": True,
                "source": run.source,
                "source_path": str(run.folder.resolve()),
                "import_time": time.time(),
                "versions": package_versions(("safebench", "omnisafe", "safety-gymnasium")),
            }
        )
        staging.write_status("done" if run.finished else "running", **_status_extra(run))
        os.rename(staging.path, final)
    except BaseException:
        shutil.rmtree(staging.path, ignore_errors=True)
        raise
    # Written last: load_runs only sees directories that hold spec.json.
    dest.write_spec(spec)


def _same_metrics(dest: RunDir, metrics: pd.DataFrame) -> bool:
    if not dest.metrics.is_file():
        return False
    try:
        old = dest.read_metrics()
    except Exception:  # an unreadable file is rewritten, whatever pyarrow raised
        return False
    return old.shape == metrics.shape and bool(
        old.columns.equals(metrics.columns) and old.equals(metrics)
    )


def import_runs(
    source: Source,
    path: Path,
    into: Path,
    *,
    cost_limit: float | None = None,
    label: str = "{algo}",
    experiment: str = "imported",
) -> ImportResult:
    """Import every run folder under ``path`` into the results store ``into``.

    ``label`` names the runs' algorithm in reports; ``{algo}`` stands for the source's
    algorithm name (e.g. ``"omnisafe-{algo}"`` keeps imported runs apart from native ones).
    Returns what happened to each folder; malformed folders are in ``result.skipped``.
    """
    if source not in SOURCES:
        raise UserError(f"import: source must be one of {list(SOURCES)}, got {source!r}")
    if "{algo}" not in label and "{" in label:
        raise UserError(f"import: --label {label!r} may only use the placeholder {{algo}}")
    into = Path(into)
    folders = find_run_folders(path)
    if not folders:
        raise UserError(
            f"import: no run folder under {path} (a folder holding {PROGRESS} or {CONFIG})"
        )
    result = ImportResult()
    for folder in folders:
        try:
            run = read_run_folder(source, folder, cost_limit=cost_limit)
        except MalformedRun as exc:
            result.skipped.append(SkippedFolder(folder, str(exc)))
            continue
        run_label = label.replace("{algo}", run.algo)
        run_id = _run_id(run, run_label)
        dest = RunDir.at(into, run_label, run.env_id, run.seed, run_id)
        status: RunStatus = "done" if run.finished else "running"
        if dest.spec.is_file():
            if _same_metrics(dest, run.metrics):
                action: Literal["imported", "updated", "unchanged"] = "unchanged"
            else:
                # The source run progressed since the last import: same run, more epochs.
                dest.write_metrics(run.metrics)
                dest.write_status(status, **_status_extra(run))
                action = "updated"
        else:
            if dest.path.exists():
                # A directory without spec.json is an import that died between rename and
                # publish; its contents are rebuilt from the source.
                shutil.rmtree(dest.path)
            _write_new(run, dest, _spec(run, run_label, run_id, experiment))
            action = "imported"
        result.runs.append(
            ImportedRun(
                source_folder=folder,
                run_dir=dest.path,
                run_id=run_id,
                label=run_label,
                env_id=run.env_id,
                seed=run.seed,
                status=status,
                epochs=len(run.metrics),
                steps=float(run.metrics["steps"].iloc[-1]),
                action=action,
                notes=run.notes,
            )
        )
    return result
