"""Matched-budget comparison of two results roots: ours against theirs, at the same env step.

Both inputs are one row per (run, epoch) as ``store.load_runs`` gives it (columns ``run_id,
algo, env, seed, status, epoch, steps, ep_ret, ep_cost, cost_limit``); "theirs" has its
labels already mapped onto ours (:func:`rename_labels`). Only ``done`` runs are used.

Definitions (stated again in the report section):

* **reach** of a side on an (algo, env) cell: the smallest last logged env-step count among
  its runs there — the step every one of its runs reached;
* **matched step** S of a cell: min(reach of ours, reach of theirs), the largest step count
  both sides reached; or a chosen ``at_steps`` (then a run that did not reach it is left out,
  with a note, and a side left with no run drops the cell);
* a run's **score at S**: ``ep_ret`` / ``ep_cost`` of its last logged epoch whose step count
  is ≤ S (the epoch *at or just before* S, never interpolated: an epoch's EpRet / EpCost are
  already window means over finished episodes, and blending two epochs would invent one).
  The step actually used is kept (``steps``), so a table can show how close it came.
  With ``window`` = k > 1 (``report --final last-k -k K``) the score is the mean over the run's
  last k logged epochs at or before S — for a cost that swings by tens from epoch to epoch,
  as on the navigation tasks, one epoch's value is one phase of the swing; ``first_steps``
  is then the step of the window's first epoch.

Statistics per cell (:func:`against_table`): IQM over runs of each side's scores at S with
percentile stratified-bootstrap CIs (rliable, as :func:`~safebench.analysis.per_env_table`),
and the probability of improvement P(ours > theirs) for return and P(ours < theirs) for cost
(rliable's Mann–Whitney estimate with its independent bootstrap CI, as
:func:`~safebench.analysis.probability_of_improvement`; 0.5 = no difference).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import pandas as pd

from safebench.analysis.aggregates import curve_estimates, probability_of_improvement
from safebench.analysis.common import (
    DONE,
    _column_iqm,
    _columnwise_bootstrap,
    _require_columns,
)

__all__ = [
    "SIDES",
    "against_curves",
    "against_table",
    "matched_cells",
    "matched_scores",
    "rename_labels",
]

Side = Literal["ours", "theirs"]
SIDES: tuple[Side, Side] = ("ours", "theirs")

_COLUMNS = ["run_id", "algo", "env", "seed", "status", "steps", "ep_ret", "ep_cost", "cost_limit"]
_TOLERANCE = 1e-6  # steps are counts logged as floats; "at or before" forgives rounding


def rename_labels(runs: pd.DataFrame, mapping: Mapping[str, str]) -> pd.DataFrame:
    """``runs`` with ``algo`` labels renamed through ``mapping`` (theirs → ours).

    The original label is kept in ``label_orig``. Raises ValueError when two labels would
    end up the same (two of their algorithms merged into one cell).
    """
    _require_columns(runs, ["algo"], "rename_labels")
    labels = sorted(str(a) for a in runs["algo"].unique())
    renamed: dict[str, list[str]] = {}
    for label in labels:
        renamed.setdefault(mapping.get(label, label), []).append(label)
    merged = {new: old for new, old in renamed.items() if len(old) > 1}
    if merged:
        raise ValueError(f"rename_labels: several labels would become one: {merged}")
    return runs.assign(label_orig=runs["algo"], algo=runs["algo"].map(lambda a: mapping.get(a, a)))


def _done(runs: pd.DataFrame, where: str) -> pd.DataFrame:
    _require_columns(runs, _COLUMNS, where)
    return runs.loc[(runs["status"] == DONE) & runs["steps"].notna()]


def matched_cells(
    ours: pd.DataFrame, theirs: pd.DataFrame, at_steps: float | None = None
) -> pd.DataFrame:
    """The (algo, env) cells with done runs on both sides, and each cell's matched step.

    One row per cell (sorted by env, algo): ``env, algo, n_ours, n_theirs, reach_ours,
    reach_theirs`` (reach: the smallest last logged step among the side's runs there),
    ``matched_steps`` (S = min of the two reaches, or ``at_steps``). With ``at_steps``, a
    cell where a side has no run that reached it is dropped and named in
    ``attrs["notes"]``. Empty (with the columns) when no cell is shared.
    """
    where = "matched_cells"
    if at_steps is not None and not at_steps > 0:
        raise ValueError(f"{where}: at_steps must be > 0, got {at_steps}")
    per_side = []
    for side, frame in zip(SIDES, (ours, theirs), strict=True):
        last = _done(frame, where).groupby(["env", "algo", "run_id"])["steps"].max()
        by_cell = last.groupby(["env", "algo"])
        per_side.append(
            pd.DataFrame(
                {f"n_{side}": by_cell.size(), f"reach_{side}": by_cell.min(), side: by_cell.max()}
            )
        )
    both = per_side[0].join(per_side[1], how="inner").sort_index().reset_index()
    notes: list[str] = []
    if at_steps is None:
        both["matched_steps"] = both[["reach_ours", "reach_theirs"]].min(axis=1)
    else:
        both["matched_steps"] = float(at_steps)
        short = both[list(SIDES)] < at_steps - _TOLERANCE
        for i in np.flatnonzero(short.any(axis=1).to_numpy()):
            row = both.iloc[i]
            why = "; ".join(f"{s} reached {row[s]:.0f}" for s in SIDES if short.iloc[i][s])
            notes.append(
                f"{row['algo']} on {row['env']}: not compared at {at_steps:.0f} steps ({why})"
            )
        both = both.loc[~short.any(axis=1)]
    columns = ["env", "algo", "n_ours", "n_theirs", "reach_ours", "reach_theirs", "matched_steps"]
    out = both.reindex(columns=columns).reset_index(drop=True)
    out = out.astype({"n_ours": int, "n_theirs": int})
    out.attrs["notes"] = notes
    return out


def _at_step(
    runs: pd.DataFrame, step: float, window: int = 1
) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Per run: its last epoch with steps ≤ ``step``, ``ep_ret`` / ``ep_cost`` averaged over
    the last ``window`` such epochs (NaN epochs skipped); ``first_steps``: the window's first
    step, ``n_window``: how many epochs it holds (fewer than ``window`` near the start).

    Returns (one row per run, ids of runs that stopped before ``step``, ids of runs with no
    epoch at or before it); both kinds of run are left out.
    """
    reached = runs.groupby("run_id")["steps"].max() >= step - _TOLERANCE
    short = sorted(str(r) for r in reached.index[~reached])
    before = runs.loc[runs["run_id"].isin(reached.index[reached])]
    before = before.loc[before["steps"] <= step + _TOLERANCE].sort_values(["run_id", "steps"])
    tail = before.groupby("run_id", sort=True).tail(window)
    by_run = tail.groupby("run_id", sort=True)
    last = by_run.tail(1).set_index("run_id")
    means = by_run[["ep_ret", "ep_cost"]].mean()  # pandas' mean skips NaN epochs
    last = last.assign(
        ep_ret=means["ep_ret"],
        ep_cost=means["ep_cost"],
        first_steps=by_run["steps"].min(),
        n_window=by_run.size(),
    ).reset_index()
    late = sorted(str(r) for r in set(reached.index[reached]) - set(last["run_id"]))
    return last, short, late


def _side_scores(
    side: Side, runs: pd.DataFrame, cells: pd.DataFrame, notes: list[str], window: int
) -> list[pd.DataFrame]:
    done = _done(runs, "matched_scores")
    label = done["label_orig"] if "label_orig" in done.columns else done["algo"]
    done = done.assign(label=label)
    if "epoch" not in done.columns:
        done = done.assign(epoch=math.nan)
    frames = []
    for algo, env, matched in cells[["algo", "env", "matched_steps"]].to_numpy():
        step = float(matched)
        here = done.loc[(done["algo"] == algo) & (done["env"] == env)]
        last, short, late = _at_step(here, step, window)
        where = f"{side} {algo} on {env}"
        if short:
            notes.append(f"{where}: run(s) {short} stopped before {step:.0f} steps")
        if late:
            notes.append(f"{where}: no epoch at or before {step:.0f} steps in run(s) {late}")
        thin = sorted(str(r) for r in last.loc[last["n_window"] < window, "run_id"])
        if thin:
            notes.append(
                f"{where}: fewer than {window} epochs at or before {step:.0f} steps in run(s) "
                f"{thin}; their score averages the epochs there are"
            )
        nan = last["ep_ret"].isna() | last["ep_cost"].isna()
        if nan.any():
            bad = sorted(str(r) for r in last.loc[nan, "run_id"])
            notes.append(f"{where}: no score at {step:.0f} steps (no finished episode) in {bad}")
        last = last.loc[~nan]
        frames.append(
            pd.DataFrame(
                {
                    "side": side,
                    "algo": last["algo"].to_numpy(),
                    "env": last["env"].to_numpy(),
                    "seed": last["seed"].to_numpy(),
                    "run_id": last["run_id"].to_numpy(),
                    "label": last["label"].to_numpy(),
                    "matched_steps": step,
                    "steps": last["steps"].to_numpy(float),
                    "first_steps": last["first_steps"].to_numpy(float),
                    "epoch": last["epoch"].to_numpy(float),
                    "ret": last["ep_ret"].to_numpy(float),
                    "cost": last["ep_cost"].to_numpy(float),
                    "cost_limit": last["cost_limit"].to_numpy(float),
                    "status": DONE,
                }
            )
        )
    return frames


def matched_scores(
    ours: pd.DataFrame, theirs: pd.DataFrame, cells: pd.DataFrame, window: int = 1
) -> pd.DataFrame:
    """Every used run's return and cost at its cell's matched step.

    ``cells``: :func:`matched_cells`. One row per run: ``side, algo, env, seed, run_id,
    label`` (the run's label on its own side, before any mapping), ``matched_steps``,
    ``steps`` (the step of the epoch used: the last one ≤ S), ``first_steps`` (the first
    epoch's step of the ``window`` averaged; = ``steps`` for ``window`` 1), ``epoch, ret,
    cost, cost_limit, status``; ``ret`` / ``cost`` are the mean over the run's last
    ``window`` epochs at or before S. Runs that stopped before S, with no epoch at or
    before S, or whose score there is NaN (no episode finished yet) are left out and named
    in ``attrs["notes"]``. Sorted by side, env, algo, seed.
    """
    _require_columns(cells, ["env", "algo", "matched_steps"], "matched_scores")
    if window < 1:
        raise ValueError(f"matched_scores: window must be >= 1, got {window}")
    notes: list[str] = []
    frames = [
        f
        for side, runs in zip(SIDES, (ours, theirs), strict=True)
        for f in _side_scores(side, runs, cells, notes, window)
    ]
    columns = [
        "side",
        "algo",
        "env",
        "seed",
        "run_id",
        "label",
        "matched_steps",
        "steps",
        "first_steps",
        "epoch",
        "ret",
        "cost",
        "cost_limit",
        "status",
    ]
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    out = out.sort_values(["side", "env", "algo", "seed", "run_id"], ignore_index=True)
    out.attrs["notes"] = notes
    return out


def against_table(
    scores: pd.DataFrame,
    reps: int = 10_000,
    poi_reps: int = 2_000,
    seed: int = 0,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Per (env, algo) with runs on both sides in ``scores`` (:func:`matched_scores`).

    Columns: ``env, algo, their_label`` (their label(s) before mapping), ``matched_steps``,
    ``steps_ours_min/_max`` and ``steps_theirs_min/_max`` (the steps of the epochs used),
    ``n_ours, n_theirs``; ``ret, cost`` with ``_low / _high``: ours, IQM over runs (the
    25 %-trimmed mean, as ``rliable.metrics.aggregate_iqm``) with the percentile bootstrap
    CI over runs of ``rliable.library.get_interval_estimates`` (``reps``); ``their_ret,
    their_cost`` (with theirs) the same for their runs; ``poi_ret`` (with ``_low / _high``)
    = P(a run of ours has the higher return than a run of theirs) and ``poi_cost`` = P(ours
    has the lower cost), :func:`probability_of_improvement` on that cell alone (``poi_reps``);
    ``cost_limit`` (ours; ``their_cost_limit`` theirs). Every cell is bootstrapped from the
    same ``seed``. Sorted by env, algo; empty (with the columns) when no cell has both sides.
    """
    where = "against_table"
    _require_columns(
        scores,
        [
            "side",
            "algo",
            "env",
            "seed",
            "run_id",
            "steps",
            "ret",
            "cost",
            "cost_limit",
            "matched_steps",
            "label",
        ],
        where,
    )
    counts = scores.groupby(["env", "algo"])["side"].nunique()
    keys = [k for k in counts.index if counts[k] == len(SIDES)]
    blocks = {
        (env, algo, side): cell[["ret", "cost"]].to_numpy(float)
        for (env, algo, side), cell in scores.groupby(["env", "algo", "side"], sort=True)
        if (env, algo) in keys
    }
    estimates = _columnwise_bootstrap(blocks, _column_iqm, reps, confidence, seed)
    rows = []
    for env, algo in sorted(keys):
        cell = scores.loc[(scores["env"] == env) & (scores["algo"] == algo)]
        row: dict[str, Any] = {"env": env, "algo": algo}
        theirs = cell.loc[cell["side"] == "theirs"]
        row["their_label"] = ", ".join(sorted(str(x) for x in theirs["label"].unique()))
        row["matched_steps"] = float(cell["matched_steps"].iloc[0])
        for side in SIDES:
            steps = cell.loc[cell["side"] == side, "steps"]
            row[f"steps_{side}_min"], row[f"steps_{side}_max"] = steps.min(), steps.max()
            row[f"n_{side}"] = len(steps)
        for side, prefix in zip(SIDES, ("", "their_"), strict=True):
            point, low, high = estimates[(env, algo, side)]
            for j, metric in enumerate(("ret", "cost")):
                row[f"{prefix}{metric}"] = float(point[j])
                row[f"{prefix}{metric}_low"] = float(low[j])
                row[f"{prefix}{metric}_high"] = float(high[j])
        pair = cell.assign(algo=cell["side"])
        for metric in ("ret", "cost"):
            poi = probability_of_improvement(
                pair, [SIDES], reps=poi_reps, seed=seed, metric=metric, confidence=confidence
            ).iloc[0]
            row[f"poi_{metric}"] = float(poi["prob"])
            row[f"poi_{metric}_low"] = float(poi["low"])
            row[f"poi_{metric}_high"] = float(poi["high"])
        for side, prefix in zip(SIDES, ("", "their_"), strict=True):
            limits = cell.loc[cell["side"] == side, "cost_limit"].unique()
            row[f"{prefix}cost_limit"] = float(limits[0]) if len(limits) == 1 else math.nan
        rows.append(row)
    return pd.DataFrame(rows, columns=_TABLE_COLUMNS)


_TABLE_COLUMNS = [
    "env", "algo", "their_label", "matched_steps",
    "steps_ours_min", "steps_ours_max", "n_ours", "steps_theirs_min", "steps_theirs_max",
    "n_theirs",
    "ret", "ret_low", "ret_high", "cost", "cost_low", "cost_high",
    "their_ret", "their_ret_low", "their_ret_high",
    "their_cost", "their_cost_low", "their_cost_high",
    "poi_ret", "poi_ret_low", "poi_ret_high", "poi_cost", "poi_cost_low", "poi_cost_high",
    "cost_limit", "their_cost_limit",
]  # fmt: skip


def against_curves(
    ours: pd.DataFrame,
    theirs: pd.DataFrame,
    scores: pd.DataFrame,
    env: str,
    column: str,
    *,
    n_points: int = 100,
    reps: int = 500,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Learning curves of ``column`` on ``env``, both sides, up to each cell's matched step.

    The runs are exactly those of ``scores`` (:func:`matched_scores`), their epochs up to
    the cell's matched step; each side's curve is :func:`curve_estimates` (IQM over runs,
    linear interpolation onto a common step grid, pointwise percentile bootstrap bands).
    One row per (side, algo, step) with ``side, algo, steps, estimate, low, high, n_runs``.
    """
    frames = []
    notes: list[str] = []
    here = scores.loc[scores["env"] == env]
    limits = here.groupby("algo")["matched_steps"].first()
    for side, runs in zip(SIDES, (ours, theirs), strict=True):
        used = runs.loc[runs["run_id"].isin(here.loc[here["side"] == side, "run_id"])]
        used = used.loc[used["steps"] <= used["algo"].map(limits) + _TOLERANCE]
        if used.empty:
            continue
        curves = curve_estimates(
            used.assign(status=DONE),
            column,
            n_points=n_points,
            reps=reps,
            confidence=confidence,
            seed=seed,
        )
        notes += [f"{side}: {n}" for n in curves.attrs["notes"]]
        frames.append(curves.assign(side=side))
    if not frames:
        raise ValueError(f"against_curves: no run of {env!r} in the matched scores")
    out = pd.concat(frames, ignore_index=True)
    out = out[["side", "algo", "steps", "estimate", "low", "high", "n_runs"]]
    out.attrs.update(env=env, column=column, notes=notes)
    return out
