"""Shared constants and helpers of the statistics: column names, score matrices, the seeded
bootstrap.

See :mod:`safebench.analysis` for the input conventions.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from rliable import library as rly
from scipy import stats

DONE = "done"
"""The only status whose runs enter aggregates by default."""

LOWER_IS_BETTER = frozenset({"cost", "regret", "violation_rate", "ep_cost", "eval_cost"})
"""Score columns for which a smaller value is better (used to orient comparisons)."""

FinalMode = Literal["last", "last-k", "eval"]
NormMethod = Literal["reference", "minmax", "none"]
Ragged = Literal["raise", "truncate"]
Statistic = Literal["iqm", "mean", "median", "optimality_gap"]
_STATISTICS = ("iqm", "mean", "median", "optimality_gap")

_RUN_META = ["run_id", "algo", "env", "seed", "status"]
_EPOCH_COLUMNS = [*_RUN_META, "epoch", "steps", "ep_ret", "ep_cost", "cost_limit"]
_NORMALISED = ("ret", "cost", "regret")


# --------------------------------------------------------------------------- the limit


def is_feasible(cost: Any, limit: Any) -> Any:
    """A run (or a mean) **respects** the cost limit: ``cost ≤ d``, the CMDP constraint
    J_c(π) ≤ d as written. Used for one run's final cost (``feasible``, the feasibility
    rates) and for a method's mean cost (the gain over the best feasible baseline).
    Scalars or arrays (elementwise); NaN compares False, callers mark it unknown."""
    return cost <= limit


def is_admissible(iqm_cost: Any, limit: Any) -> Any:
    """A method **is admissible** on a task: the IQM of its runs' final costs ``< d``.

    Strict where :func:`is_feasible` is not, because it is a verdict on a method rather
    than a check of a run: it follows the C-TRPO tables, which bold a method only when its
    cost is below the limit, so a method that merely reaches d on average is not ranked
    above one that respects it. Every report table, the verdict and "Is X better?" use this
    one. Scalars or arrays (elementwise)."""
    return iqm_cost < limit


# --------------------------------------------------------------------------- helpers


def _require_columns(df: pd.DataFrame, columns: Sequence[str], where: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{where}: missing column(s) {missing}; got {list(df.columns)}")


@contextlib.contextmanager
def _seeded_numpy(seed: int) -> Iterator[None]:
    """Seed NumPy's global random state for the block, then restore the caller's state."""
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(saved)


def split_partial(
    scores: pd.DataFrame, include_partial: bool, where: str = "split_partial"
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Split runs into (used, left out, notes): non-done runs are left out unless asked.

    ``notes`` says how many non-done runs were left out, or let in, by status.
    """
    _require_columns(scores, ["status"], where)
    done = scores["status"] == DONE
    not_done = scores.loc[~done]
    notes: list[str] = []
    if not_done.empty:
        return scores, not_done, notes
    by_status = ", ".join(f"{n} {s}" for s, n in not_done["status"].value_counts().items())
    if include_partial:
        notes.append(f"included {len(not_done)} run(s) that are not done ({by_status})")
        return scores, scores.iloc[0:0], notes
    notes.append(
        f"excluded {len(not_done)} run(s) that are not done ({by_status}); "
        "pass include_partial=True to include them"
    )
    return scores.loc[done], not_done, notes


def _count_by(frame: pd.DataFrame, keys: list[str], index: pd.Index) -> np.ndarray:
    """Number of rows of ``frame`` per group ``keys``, aligned to ``index`` (0 where none)."""
    if frame.empty:
        return np.zeros(len(index), dtype=int)
    counts = frame.groupby(keys).size()
    return counts.reindex(index, fill_value=0).to_numpy(dtype=int)


def _raw(scores: pd.DataFrame, column: str) -> pd.Series:
    """The un-normalised score column (``normalize_scores`` keeps originals as ``<col>_raw``)."""
    raw = f"{column}_raw"
    return scores[raw] if raw in scores.columns else scores[column]


def _env_cost_limits(scores: pd.DataFrame) -> pd.Series:
    limits = scores.groupby("env")["cost_limit"]
    mixed = limits.nunique()
    if (mixed > 1).any():
        raise ValueError(
            f"runs on the same env use different cost_limit values: {list(mixed[mixed > 1].index)}"
        )
    return limits.first()


def _orientation(metric: str, higher_is_better: bool | None) -> bool:
    return (metric not in LOWER_IS_BETTER) if higher_is_better is None else higher_is_better


def _score_matrices(
    scores: pd.DataFrame, metric: str, ragged: Ragged, where: str
) -> tuple[dict[str, np.ndarray], list[str], dict[str, int], list[str]]:
    """Per-algo (n_runs, n_envs) matrices of ``metric`` as rliable expects.

    Columns are the envs in sorted order (the same for every algo); rows are runs
    sorted by (seed, run_id), so row i is the i-th smallest seed of that env. The
    stratified bootstrap resamples runs independently within each env column, so
    alignment only matters for reproducibility, not for the statistics.

    rliable needs a rectangular matrix per algo. When an algo has different run
    counts on different envs, ``ragged="raise"`` raises; ``ragged="truncate"``
    keeps the ``min`` count of lowest-seed runs on every env and says so in a note.
    An algo that has no run on some env always raises: aggregates over different
    env sets are not comparable.
    """
    if ragged not in ("raise", "truncate"):
        raise ValueError(f"{where}: ragged must be 'raise' or 'truncate', got {ragged!r}")
    _require_columns(scores, ["algo", "env", "seed", "run_id", metric], where)
    if scores.empty:
        raise ValueError(f"{where}: no runs to aggregate")
    envs = sorted(scores["env"].unique())
    matrices: dict[str, np.ndarray] = {}
    dropped: dict[str, int] = {}
    notes: list[str] = []
    for algo, group in scores.groupby("algo", sort=True):
        counts = group.groupby("env").size().reindex(envs, fill_value=0)
        missing = list(counts.index[counts == 0])
        if missing:
            raise ValueError(
                f"{where}: algo {algo!r} has no runs on env(s) {missing}; every algo must cover "
                "the same envs (filter the frame to a common set of envs)"
            )
        n_min = int(counts.min())
        if counts.nunique() > 1:
            per_env = {str(e): int(n) for e, n in counts.items()}
            if ragged == "raise":
                raise ValueError(
                    f"{where}: algo {algo!r} has different numbers of runs per env {per_env}; "
                    "rliable needs the same number on every env. Pass ragged='truncate' to keep "
                    f"the {n_min} lowest-seed run(s) on each env"
                )
            notes.append(
                f"{algo}: truncated to {n_min} run(s) per env (lowest seeds) from {per_env}"
            )
        columns = []
        for env in envs:
            cell = group.loc[group["env"] == env].sort_values(["seed", "run_id"])
            columns.append(cell[metric].to_numpy(dtype=float)[:n_min])
            bad = cell["run_id"].to_numpy()[:n_min][np.isnan(columns[-1])]
            if bad.size:
                raise ValueError(f"{where}: {metric!r} is NaN for run(s) {list(bad)}")
        matrices[str(algo)] = np.column_stack(columns)
        dropped[str(algo)] = int(counts.sum()) - n_min * len(envs)
    return matrices, envs, dropped, notes


def _trimmed_mean_last_axis(x: np.ndarray) -> np.ndarray | float:
    """25 %-trimmed mean along the last axis, computed as ``scipy.stats.trim_mean`` does.

    ``trim_mean`` partitions around the cut points and averages the middle slice; its
    ``axis_nan_policy`` wrapper moves the reduced axis last first. Repeating exactly those
    steps gives bit-identical results, minus the wrapper's argument checks, which cost
    10-30x the arithmetic on the small matrices bootstrapped here (tens of thousands of
    calls per table). NaN-free input only: callers reject NaN before bootstrapping.
    """
    n = x.shape[-1]
    low = int(0.25 * n)
    high = n - low
    if n == 0:
        return np.asarray(stats.trim_mean(x, 0.25, axis=-1), dtype=float)
    part = np.partition(x, (low, high - 1), axis=-1)
    return np.mean(part[..., low:high], axis=-1)


def _iqm(x: np.ndarray) -> float:
    """IQM of all entries: equal, bit for bit, to ``rliable.metrics.aggregate_iqm(x)``."""
    return float(_trimmed_mean_last_axis(np.ravel(x)))


def _column_iqm(x: np.ndarray) -> np.ndarray:
    """IQM of every column: the 25 %-trimmed mean that ``rliable.metrics.aggregate_iqm`` uses."""
    return np.asarray(_trimmed_mean_last_axis(np.moveaxis(x, 0, -1)), dtype=float)


def _column_mean(x: np.ndarray) -> np.ndarray:
    return np.asarray(np.mean(x, axis=0), dtype=float)


def _columnwise_bootstrap(
    blocks: dict[Any, np.ndarray],
    statistic: Callable[[np.ndarray], np.ndarray],
    reps: int,
    confidence: float,
    seed: int,
) -> dict[Any, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Point estimate and percentile CI of a column-wise statistic for many (n_runs, k) blocks.

    Returns ``{key: (point, low, high)}``, each of length k. Blocks with the same number
    of runs are stacked side by side and bootstrapped in one
    ``rliable.library.get_interval_estimates`` call: the stratified bootstrap resamples
    runs independently within every column, so each column's interval is distributed
    exactly as if it were bootstrapped alone, while the per-replication Python overhead
    (which dominates for small matrices) is paid once per group instead of per block.
    """
    by_rows: dict[int, list[Any]] = {}
    for key, block in blocks.items():
        by_rows.setdefault(block.shape[0], []).append(key)
    out: dict[Any, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for n_rows in sorted(by_rows):
        keys = by_rows[n_rows]
        widths = [blocks[key].shape[1] for key in keys]
        matrix = np.column_stack([blocks[key] for key in keys])
        with _seeded_numpy(seed):
            point, interval = rly.get_interval_estimates(
                {"x": matrix}, statistic, reps=reps, confidence_interval_size=confidence
            )
        bounds = np.cumsum([0, *widths])
        for key, a, b in zip(keys, bounds[:-1], bounds[1:], strict=True):
            out[key] = (point["x"][a:b], interval["x"][0, a:b], interval["x"][1, a:b])
    return out
