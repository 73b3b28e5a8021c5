"""rliable aggregates: IQM and stratified-bootstrap intervals, per-env tables, probability of
improvement, performance profiles, learning-curve estimates.

See :mod:`safebench.analysis` for the input conventions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from rliable import library as rly
from rliable import metrics as rlm
from scipy import stats

from safebench.analysis.common import (
    _STATISTICS,
    DONE,
    Ragged,
    Statistic,
    _column_iqm,
    _column_mean,
    _columnwise_bootstrap,
    _count_by,
    _iqm,
    _orientation,
    _raw,
    _require_columns,
    _score_matrices,
    _seeded_numpy,
    is_admissible,
    split_partial,
)

# --------------------------------------------------------------------------- rliable aggregates


def aggregate(
    scores: pd.DataFrame,
    metric: str = "ret",
    reps: int = 50000,
    confidence: float = 0.95,
    seed: int = 0,
    *,
    threshold: float = 1.0,
    statistics: Sequence[Statistic] = ("iqm", "mean", "median", "optimality_gap"),
    include_partial: bool = False,
    ragged: Ragged = "raise",
) -> pd.DataFrame:
    """Aggregate ``metric`` across all runs and envs per algo, with bootstrap CIs (rliable).

    For each algo, the (n_runs, n_envs) score matrix X gives (rliable.metrics):

    * ``iqm``: interquartile mean, the 25 %-trimmed mean of all entries of X;
    * ``mean``: mean over envs of the per-env mean over runs;
    * ``median``: median over envs of the per-env mean over runs;
    * ``optimality_gap``: threshold − mean(min(X, threshold)) (meaningful for
      normalised higher-is-better scores, e.g. ret with ``threshold=1`` = reference).

    ``<stat>_low`` / ``<stat>_high`` are percentile stratified-bootstrap intervals
    (``rliable.library.get_interval_estimates``: runs resampled with replacement
    within each env) with ``reps`` replications at ``confidence``. Each algo is
    bootstrapped from the same ``seed``, so its interval does not depend on which
    other algos are in the frame; an algo's numbers are exactly those of
    ``get_interval_estimates({algo: X}, ...)`` after ``np.random.seed(seed)``. Only the
    requested ``statistics`` are computed (each one costs time in every replication;
    the IQM costs most). Scores must be on comparable scales across envs
    (see ``normalize_scores``) for the aggregate to mean anything.

    Rectangular matrices: see ``ragged`` in ``_score_matrices`` — by default an algo with
    unequal run counts across envs raises; ``ragged="truncate"`` keeps the minimum
    common number of lowest-seed runs, reported in ``n_dropped`` and ``attrs["notes"]``.
    Different algos may have different run counts (separate bootstraps).
    Columns: ``algo, n_runs`` (per env), ``n_envs, n_excluded, n_partial, n_dropped``, stats.
    """
    where = "aggregate"
    used, excluded, notes = split_partial(scores, include_partial, where)
    matrices, envs, dropped, ragged_notes = _score_matrices(used, metric, ragged, where)
    notes += ragged_notes

    names = list(dict.fromkeys(statistics))
    unknown = [n for n in names if n not in _STATISTICS]
    if unknown or not names:
        raise ValueError(f"{where}: statistics must be among {list(_STATISTICS)}, got {unknown}")
    estimators: dict[str, Callable[[np.ndarray], Any]] = {
        "iqm": _iqm,
        "mean": rlm.aggregate_mean,
        "median": rlm.aggregate_median,
        "optimality_gap": lambda x: rlm.aggregate_optimality_gap(x, threshold),
    }
    chosen = [estimators[n] for n in names]

    def statistic_vector(x: np.ndarray) -> np.ndarray:
        return np.array([f(x) for f in chosen])

    rows: list[dict[str, Any]] = []
    for algo, matrix in matrices.items():
        with _seeded_numpy(seed):
            point, interval = rly.get_interval_estimates(
                {algo: matrix}, statistic_vector, reps=reps, confidence_interval_size=confidence
            )
        row: dict[str, Any] = {
            "algo": algo,
            "n_runs": matrix.shape[0],
            "n_envs": matrix.shape[1],
            "n_partial": int((used.loc[used["algo"] == algo, "status"] != DONE).sum()),
            "n_dropped": dropped[algo],
        }
        for i, name in enumerate(names):
            row[name] = float(point[algo][i])
            row[f"{name}_low"] = float(interval[algo][0, i])
            row[f"{name}_high"] = float(interval[algo][1, i])
        rows.append(row)
    out = pd.DataFrame(rows)
    out.insert(3, "n_excluded", _count_by(excluded, ["algo"], pd.Index(out["algo"])))
    out.attrs.update(
        metric=metric,
        reps=reps,
        confidence=confidence,
        seed=seed,
        envs=envs,
        notes=notes,
        n_excluded=len(excluded),
    )
    return out


def per_env_table(
    scores: pd.DataFrame,
    reps: int = 50000,
    seed: int = 0,
    confidence: float = 0.95,
    *,
    metrics: Sequence[str] = ("ret", "cost", "regret"),
    include_partial: bool = False,
) -> pd.DataFrame:
    """Per (algo, env): IQM over runs of each metric with a bootstrap CI over runs.

    ``<metric>`` is the 25 %-trimmed mean over the cell's runs (as
    ``rliable.metrics.aggregate_iqm`` on a one-column matrix) and ``<metric>_low`` /
    ``<metric>_high`` its percentile bootstrap interval from
    ``rliable.library.get_interval_estimates``. Cells with the same number of runs share
    one rliable call (one column per cell and metric, see ``_columnwise_bootstrap``);
    each column's interval is distributed exactly as its own one-column bootstrap. The
    time is set by the number of such calls (distinct run counts) × ``reps``: each
    replication evaluates one column-wise trimmed mean per call.

    ``admissible`` marks cells whose IQM of the raw final cost is < cost_limit (strict,
    as the C-TRPO tables bold them). Also ``n_runs, n_excluded, n_partial``.
    """
    where = "per_env_table"
    metric_list = list(metrics)
    _require_columns(scores, ["algo", "env", "seed", "run_id", "cost_limit", *metric_list], where)
    used, excluded, notes = split_partial(scores, include_partial, where)
    if used.empty:
        raise ValueError(f"{where}: no runs to tabulate")
    keys = ["algo", "env"]
    used = used.sort_values([*keys, "seed", "run_id"])
    cells = {key: cell for key, cell in used.groupby(keys, sort=True)}
    for cell in cells.values():
        values = cell[metric_list].to_numpy(dtype=float)
        if np.isnan(values).any():
            bad = list(cell["run_id"].to_numpy()[np.isnan(values).any(axis=1)])
            raise ValueError(f"{where}: NaN in {metric_list} for run(s) {bad}")

    blocks = {key: cell[metric_list].to_numpy(dtype=float) for key, cell in cells.items()}
    estimates = _columnwise_bootstrap(blocks, _column_iqm, reps, confidence, seed)
    results: dict[tuple[Any, ...], dict[str, float]] = {}
    for key, (point, low, high) in estimates.items():
        entry = results.setdefault(key, {})
        for j, m in enumerate(metric_list):
            entry.update({m: point[j], f"{m}_low": low[j], f"{m}_high": high[j]})

    rows: list[dict[str, Any]] = []
    for key, cell in cells.items():
        limit = float(cell["cost_limit"].iloc[0])
        raw_cost = _raw(cell, "cost").to_numpy(dtype=float)
        rows.append(
            {
                "algo": key[0],
                "env": key[1],
                "n_runs": len(cell),
                "n_partial": int((cell["status"] != DONE).sum()),
                **results[key],
                "cost_limit": limit,
                "admissible": bool(is_admissible(float(stats.trim_mean(raw_cost, 0.25)), limit)),
            }
        )
    out = pd.DataFrame(rows)
    index = pd.MultiIndex.from_frame(out[keys])
    out.insert(3, "n_excluded", _count_by(excluded, keys, index))
    out.attrs.update(
        metrics=metric_list,
        reps=reps,
        confidence=confidence,
        seed=seed,
        notes=notes,
        n_excluded=len(excluded),
    )
    return out


def probability_of_improvement(
    scores: pd.DataFrame,
    pairs: Sequence[tuple[str, str]],
    reps: int = 2000,
    seed: int = 0,
    *,
    metric: str = "ret",
    higher_is_better: bool | None = None,
    confidence: float = 0.95,
    include_partial: bool = False,
    ragged: Ragged = "raise",
) -> pd.DataFrame:
    """P(X > Y) for each pair (X, Y), averaged over envs, with a bootstrap CI (rliable).

    ``prob`` = mean over envs m of P(X_m > Y_m) (+ ½ P(X_m = Y_m)), estimated by the
    Mann–Whitney U statistic / (n_x · n_y) over the runs of X and Y on env m
    (``rliable.metrics.probability_of_improvement``); ``[low, high]`` is rliable's
    stratified *independent* bootstrap interval (X and Y runs resampled separately,
    so they may have different run counts). Envs are those covered by the two algos
    (both must cover the same ones). For metrics in ``LOWER_IS_BETTER`` (unless
    ``higher_is_better`` says otherwise) "improvement" means a *lower* value, computed
    on negated scores. Every pair is bootstrapped from the same ``seed``.
    """
    where = "probability_of_improvement"
    used, excluded, notes = split_partial(scores, include_partial, where)
    sign = 1.0 if _orientation(metric, higher_is_better) else -1.0
    rows: list[dict[str, Any]] = []
    for x, y in pairs:
        pair = used.loc[used["algo"].isin([x, y])]
        for name in (x, y):
            if name not in set(pair["algo"]):
                raise ValueError(f"{where}: algo {name!r} has no used runs")
        matrices, envs, _, ragged_notes = _score_matrices(pair, metric, ragged, where)
        notes += [n for n in ragged_notes if n not in notes]
        key = f"{x} > {y}"
        with _seeded_numpy(seed):
            point, interval = rly.get_interval_estimates(
                {key: [sign * matrices[x], sign * matrices[y]]},
                rlm.probability_of_improvement,
                reps=reps,
                confidence_interval_size=confidence,
            )
        rows.append(
            {
                "x": x,
                "y": y,
                "metric": metric,
                "n_runs_x": matrices[x].shape[0],
                "n_runs_y": matrices[y].shape[0],
                "n_envs": len(envs),
                "prob": float(point[key]),
                "low": float(np.ravel(interval[key])[0]),
                "high": float(np.ravel(interval[key])[1]),
            }
        )
    out = pd.DataFrame(rows)
    out.attrs.update(
        reps=reps,
        confidence=confidence,
        seed=seed,
        notes=notes,
        n_excluded=len(excluded),
        higher_is_better=sign > 0,
    )
    return out


def performance_profiles(
    scores: pd.DataFrame,
    taus: Sequence[float] | np.ndarray,
    metric: str = "ret",
    *,
    higher_is_better: bool | None = None,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    include_partial: bool = False,
    ragged: Ragged = "raise",
) -> pd.DataFrame:
    """Run-score distributions (performance profiles) with bootstrap bands (rliable).

    For each algo and threshold τ: ``fraction`` = share of all (run, env) scores > τ
    (``rliable.library.create_performance_profile`` with score distributions), or
    ≤ τ for lower-is-better metrics (e.g. normalised cost: the share of runs whose
    cost is within τ of the limit); ``[low, high]`` is the stratified bootstrap band.
    One row per (algo, tau). Each algo is bootstrapped from the same ``seed``.
    """
    where = "performance_profiles"
    used, excluded, notes = split_partial(scores, include_partial, where)
    matrices, envs, _, ragged_notes = _score_matrices(used, metric, ragged, where)
    notes += ragged_notes
    tau_list = np.asarray(taus, dtype=float)
    higher = _orientation(metric, higher_is_better)

    def at_most(x: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
        return np.array([np.mean(x <= t) for t in thresholds])

    rows: list[pd.DataFrame] = []
    for algo, matrix in matrices.items():
        with _seeded_numpy(seed):
            profile, band = rly.create_performance_profile(
                {algo: matrix},
                tau_list,
                custom_profile_func=None if higher else at_most,
                reps=reps,
                confidence_interval_size=confidence,
            )
        rows.append(
            pd.DataFrame(
                {
                    "algo": algo,
                    "tau": tau_list,
                    "fraction": np.asarray(profile[algo], dtype=float),
                    "low": band[algo][0],
                    "high": band[algo][1],
                    "n_runs": matrix.shape[0],
                }
            )
        )
    out = pd.concat(rows, ignore_index=True)
    out.attrs.update(
        metric=metric,
        higher_is_better=higher,
        reps=reps,
        confidence=confidence,
        seed=seed,
        envs=envs,
        notes=notes,
        n_excluded=len(excluded),
    )
    return out


def _on_common_grid(
    d: pd.DataFrame, x: str, column: str, n_points: int, notes: list[str]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per algo of ``d`` (rows sorted by run and ``x``): a grid of ``n_points`` values of ``x``
    over the range every one of its runs covers, and its runs' ``column`` interpolated onto
    it (runs × points). An algo whose runs share no range gets a note in ``notes`` instead."""
    grids: dict[str, np.ndarray] = {}
    blocks: dict[str, np.ndarray] = {}
    for algo, group in d.groupby("algo", sort=True):
        per_run = [
            (run[x].to_numpy(float), run[column].to_numpy(float))
            for _, run in group.groupby("run_id")
        ]
        # from the largest first value to the smallest last one: no run is extrapolated
        start = max(xs[0] for xs, _ in per_run)
        stop = min(xs[-1] for xs, _ in per_run)
        if stop <= start:
            span = "step" if x == "steps" else repr(x)
            notes.append(f"{algo}: runs share no {span} range; curve skipped")
            continue
        grids[str(algo)] = np.linspace(start, stop, n_points)
        blocks[str(algo)] = np.stack([np.interp(grids[str(algo)], xs, y) for xs, y in per_run])
    return grids, blocks


def curve_estimates(
    df: pd.DataFrame,
    column: str,
    *,
    estimator: Literal["iqm", "mean"] = "iqm",
    n_points: int = 100,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    include_partial: bool = False,
    x: str = "steps",
) -> pd.DataFrame:
    """Per-algo curve of ``column`` vs env steps across runs, with pointwise bootstrap CIs.

    ``df`` is one row per (run, epoch) with ``steps`` and ``column`` (e.g. the input
    frame with ``ep_ret`` / ``ep_cost``, or ``regret_curve(df)`` with ``regret``) for a
    single env: raw values on different envs are on different scales, so several envs
    raise. Each run is linearly interpolated onto a grid of ``n_points`` step values
    spanning the range every run of that algo covers (from the largest first logged step
    to the smallest last one), so no run is extrapolated; a shorter (partial) run,
    when included, shortens its algo's curve. At each grid point, ``estimate`` is the
    IQM (25 %-trimmed mean) or the mean over runs and ``[low, high]`` its percentile
    bootstrap interval over runs from ``rliable.library.get_interval_estimates`` (each
    grid column is a stratum, so the band is pointwise; algos with equal run counts share
    one rliable call, see ``_columnwise_bootstrap``). One row per (algo, step).

    ``x``: the column the runs are interpolated on, increasing within a run — ``steps``, or
    e.g. the cumulative training ``wall_time`` (curves over wall-clock time); the output's
    grid column is named after it, and rows where it is missing are left out.
    """
    where = "curve_estimates"
    _require_columns(df, ["run_id", "algo", "env", "status", x, column], where)
    if estimator not in ("iqm", "mean"):
        raise ValueError(f"{where}: estimator must be 'iqm' or 'mean', got {estimator!r}")
    if n_points < 2:
        raise ValueError(f"{where}: n_points must be >= 2, got {n_points}")
    envs = sorted(df["env"].unique())
    if len(envs) != 1:
        raise ValueError(f"{where}: expected one env, got {envs}; filter the frame first")
    runs = df.drop_duplicates("run_id")
    _, excluded, notes = split_partial(runs, include_partial, where)
    d = df.loc[~df["run_id"].isin(excluded["run_id"])]
    d = d.loc[d[column].notna() & d[x].notna()].sort_values(["run_id", x])
    if d.empty:
        what = f"{column!r}" + (f" with a {x!r}" if x != "steps" else "")
        raise ValueError(f"{where}: no values of {what} in the used runs")

    grids, blocks = _on_common_grid(d, x, column, n_points, notes)
    statistic = _column_iqm if estimator == "iqm" else _column_mean
    estimates = _columnwise_bootstrap(blocks, statistic, reps, confidence, seed)
    frames = [
        pd.DataFrame(
            {
                "algo": algo,
                x: grids[algo],
                "estimate": point,
                "low": low,
                "high": high,
                "n_runs": blocks[algo].shape[0],
            }
        )
        for algo, (point, low, high) in estimates.items()
    ]
    if not frames:
        raise ValueError(f"{where}: no algo has a curve to draw")
    out = pd.concat(frames).sort_values(["algo", x], kind="stable", ignore_index=True)
    out.attrs.update(column=column, x=x, env=envs[0], estimator=estimator, reps=reps)
    out.attrs.update(confidence=confidence, seed=seed, notes=notes, n_excluded=len(excluded))
    return out
