"""safebench: a benchmark suite for safe (constrained) reinforcement learning.

Reading results from Python (docs/python-api.md): :func:`load_runs` (every run of a results
folder, one row per run and epoch), :func:`load_metrics` (one run's ``metrics.parquet``),
:func:`load_evaluations` (the records of ``safebench eval``), and the statistics in
:mod:`safebench.analysis`. The loaders are imported on first use, so ``import safebench``
stays light.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

with contextlib.redirect_stderr(io.StringIO()):
    # gymnasium loads its plugins (gymnasium-robotics) at import, and farama-notifications then
    # prints a notice about Adroit envs to stderr; safebench never uses those envs. Importing
    # gymnasium here, first, keeps every entry point into safebench quiet.
    import gymnasium  # noqa: F401

if TYPE_CHECKING:
    import pandas as pd

    from safebench.results.store import load_evaluations, load_runs

try:
    __version__ = version("safebench")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"

__all__ = ["__version__", "load_evaluations", "load_metrics", "load_runs"]

_FROM_STORE = ("load_evaluations", "load_runs")


def __getattr__(name: str) -> Any:
    if name in _FROM_STORE:
        return getattr(importlib.import_module("safebench.results.store"), name)
    raise AttributeError(f"module 'safebench' has no attribute {name!r}")


def load_metrics(run_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """One run's ``metrics.parquet`` as a DataFrame: one row per epoch.

    ``run_dir`` is a run directory (the ``run_dir`` column of :func:`load_runs`) or its
    ``metrics.parquet``. The file is read on the calling thread, as every safebench command
    reads it: pyarrow's threaded reader, which ``pandas.read_parquet`` uses, can abort the
    interpreter at exit ("terminate called without an active exception"). Raises
    ``FileNotFoundError`` when the run has no metrics yet (it has not finished an epoch) and
    ``ValueError`` naming the reason when the file is damaged (truncated, not parquet,
    without its ``epoch`` / ``steps`` columns).
    """
    from safebench.results.store import RunDir

    path = Path(run_dir)
    if RunDir(path.parent).metrics == path and path.is_file():
        path = path.parent
    if not path.is_dir():
        raise NotADirectoryError(f"{path} is not a run directory")
    run = RunDir(path)
    check = run.check(deep=False)
    damage = [d for d in check.damage if d.file == run.metrics.name]
    if damage:
        raise ValueError(f"{run.metrics}: {damage[0].reason}")
    if check.metrics is None:
        raise FileNotFoundError(f"{run.metrics} does not exist (no epoch finished)")
    return check.metrics
