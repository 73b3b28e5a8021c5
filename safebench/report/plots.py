"""Matplotlib figures for benchmark results.

Every function draws on the ``ax`` it is given (or on a new ``Figure`` when
``ax=None``) and returns that Axes; save with ``ax.figure.savefig(...)``. New figures
are built with ``matplotlib.figure.Figure`` rather than ``pyplot`` so that no GUI
backend or global figure state is involved (safe under Agg, in threads, in tests).
The statistics come from ``safebench.analysis``; this module only draws them.
Algos get the same colour in every plot (sorted labels mapped onto ``tab10``, or ``tab20``
beyond 10 algos).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from safebench import analysis

__all__ = [
    "CurveX",
    "algo_colors",
    "plot_cost_curves",
    "plot_interval_estimates",
    "plot_learning_curves",
    "plot_performance_profiles",
    "plot_regret_curves",
    "plot_return_cost_scatter",
    "plot_return_curves",
    "time_unit",
]

DEFAULT_FIGSIZE = (6.0, 4.0)


def _axes(ax: Axes | None) -> Axes:
    if ax is not None:
        return ax
    return Figure(figsize=DEFAULT_FIGSIZE).add_subplot()


def algo_colors(algos: Iterable[str]) -> dict[str, Any]:
    """Stable colour per algo label: sorted labels mapped onto ``tab10``.

    More than 10 algos (a paper table compares a dozen) would repeat ``tab10`` colours, so
    they get ``tab20``'s 20 distinct colours instead (cycled beyond 20).
    """
    labels = sorted(set(algos))
    palette = colormaps["tab10" if len(labels) <= 10 else "tab20"]
    return {algo: palette(i % palette.N) for i, algo in enumerate(labels)}


def _note_excluded(ax: Axes, n_excluded: int) -> None:
    # Leaving runs out changes the picture, so the figure itself says so.
    if n_excluded:
        ax.text(
            0.01,
            0.01,
            f"{n_excluded} non-done run(s) excluded",
            transform=ax.transAxes,
            fontsize="x-small",
            color="0.4",
            va="bottom",
        )


def _single_cost_limit(frame: pd.DataFrame) -> float:
    limits = frame["cost_limit"].dropna().unique()
    if len(limits) != 1:
        raise ValueError(
            f"expected one cost_limit in the data, got {sorted(limits)}; pass cost_limit= "
            "or plot normalised scores (limit 0)"
        )
    return float(limits[0])


CurveX = Literal["steps", "time"]
"""The x axis of a learning curve: env steps, or the run's training wall-clock time."""

# (unit, seconds per unit, the largest span, in seconds, drawn in that unit)
_TIME_UNITS = (("s", 1.0, 120.0), ("min", 60.0, 2 * 3600.0), ("h", 3600.0, math.inf))


def time_unit(seconds: float) -> tuple[str, float]:
    """The unit a wall-clock axis spanning ``seconds`` reads best in, and its length in
    seconds: seconds up to 2 minutes, minutes up to 2 hours, hours beyond."""
    return next((name, size) for name, size, top in _TIME_UNITS if seconds <= top)


def plot_learning_curves(
    df: pd.DataFrame,
    column: str,
    ax: Axes | None = None,
    *,
    env: str | None = None,
    estimator: Literal["iqm", "mean"] = "iqm",
    n_points: int = 100,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    include_partial: bool = False,
    cost_limit: float | None = None,
    colors: Mapping[str, Any] | None = None,
    ylabel: str | None = None,
    x: CurveX = "steps",
) -> Axes:
    """Per-algo ``column`` vs env steps: IQM (or mean) line with a bootstrap CI band.

    Statistics from ``analysis.curve_estimates`` (runs interpolated onto a common step
    grid, pointwise CI across runs). ``df`` must hold one env, or pass ``env``. With
    ``cost_limit`` a dashed horizontal line marks the limit.

    ``x="time"``: over each run's training wall-clock time instead (its ``wall_time``
    column, cumulative seconds of collection, update and evaluation; env and agent
    construction left out), in seconds, minutes or hours (:func:`time_unit` of the
    longest run); epochs without a ``wall_time`` are left out.
    """
    if x not in ("steps", "time"):
        raise ValueError(f"plot_learning_curves: x must be 'steps' or 'time', got {x!r}")
    ax = _axes(ax)
    frame = df if env is None else df.loc[df["env"] == env]
    grid = "steps"
    if x == "time":
        if "wall_time" not in frame.columns:
            raise ValueError("plot_learning_curves: no wall_time column to plot over time")
        grid = "wall_time"
    curves = analysis.curve_estimates(
        frame,
        column,
        estimator=estimator,
        n_points=n_points,
        reps=reps,
        confidence=confidence,
        seed=seed,
        include_partial=include_partial,
        x=grid,
    )
    scale, xlabel = 1.0, "env steps"
    if x == "time":
        unit, scale = time_unit(float(curves[grid].max()))
        xlabel = f"training wall-clock time ({unit})"
    palette = dict(colors) if colors is not None else algo_colors(curves["algo"])
    for algo, curve in curves.groupby("algo", sort=True):
        color = palette[str(algo)]
        n_runs = int(curve["n_runs"].iloc[0])
        xs = curve[grid] / scale
        ax.plot(xs, curve["estimate"], color=color, label=f"{algo} (n={n_runs})")
        ax.fill_between(xs, curve["low"], curve["high"], color=color, alpha=0.2)
    if cost_limit is not None:
        ax.axhline(cost_limit, color="black", linestyle="--", linewidth=1.0, label="cost limit")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel or column)
    ax.set_title(
        f"{curves.attrs['env']}: {estimator.upper() if estimator == 'iqm' else 'mean'} "
        f"± {confidence:.0%} CI"
    )
    ax.legend(fontsize="small")
    _note_excluded(ax, int(curves.attrs["n_excluded"]))
    return ax


def plot_return_curves(df: pd.DataFrame, ax: Axes | None = None, **kwargs: Any) -> Axes:
    """Training return (``ep_ret``) vs env steps (``x="time"``: wall-clock time); keyword
    arguments as ``plot_learning_curves``."""
    kwargs.setdefault("ylabel", "episode return")
    return plot_learning_curves(df, "ep_ret", ax, **kwargs)


def plot_cost_curves(
    df: pd.DataFrame, ax: Axes | None = None, *, env: str | None = None, **kwargs: Any
) -> Axes:
    """Training cost (``ep_cost``) vs env steps (or time) with the limit as a dashed line."""
    frame = df if env is None else df.loc[df["env"] == env]
    kwargs.setdefault("ylabel", "episode cost")
    kwargs.setdefault("cost_limit", _single_cost_limit(frame))
    return plot_learning_curves(frame, "ep_cost", ax, **kwargs)


def plot_regret_curves(
    df: pd.DataFrame, ax: Axes | None = None, *, env: str | None = None, **kwargs: Any
) -> Axes:
    """Cumulative cost regret Σ max(0, ep_cost − limit) vs env steps or time
    (``analysis.regret_curve``)."""
    frame = df if env is None else df.loc[df["env"] == env]
    kwargs.setdefault("ylabel", "cumulative cost regret")
    return plot_learning_curves(analysis.regret_curve(frame), "regret", ax, **kwargs)


def plot_interval_estimates(
    table: pd.DataFrame,
    ax: Axes | None = None,
    *,
    stat: str = "iqm",
    xlabel: str | None = None,
    colors: Mapping[str, Any] | None = None,
) -> Axes:
    """Point estimate and CI per algo as horizontal bars (output of ``analysis.aggregate``).

    Reads columns ``algo``, ``<stat>``, ``<stat>_low``, ``<stat>_high``; one row per algo,
    top to bottom in the table's order.
    """
    for column in ("algo", stat, f"{stat}_low", f"{stat}_high"):
        if column not in table.columns:
            raise ValueError(f"plot_interval_estimates: missing column {column!r}")
    ax = _axes(ax)
    algos = [str(a) for a in table["algo"]]
    palette = dict(colors) if colors is not None else algo_colors(algos)
    positions = np.arange(len(algos))[::-1]
    for y, (_, row) in zip(positions, table.iterrows(), strict=True):
        color = palette[str(row["algo"])]
        low, high = float(row[f"{stat}_low"]), float(row[f"{stat}_high"])
        ax.barh(y, high - low, left=low, height=0.6, color=color, alpha=0.5)
        ax.plot([row[stat]] * 2, [y - 0.3, y + 0.3], color="black", linewidth=1.5)
    # bars pin autoscaling to their edges (sticky edges), so pad the x range explicitly
    lows, highs = table[f"{stat}_low"].to_numpy(float), table[f"{stat}_high"].to_numpy(float)
    span = float(np.nanmax(highs) - np.nanmin(lows)) or 1.0
    ax.set_xlim(float(np.nanmin(lows)) - 0.08 * span, float(np.nanmax(highs)) + 0.08 * span)
    ax.set_yticks(positions, algos)
    metric = table.attrs.get("metric", "")
    ax.set_xlabel(xlabel or f"{stat.upper() if stat == 'iqm' else stat} {metric}".strip())
    ax.grid(axis="x", alpha=0.3)
    _note_excluded(ax, int(table.attrs.get("n_excluded", 0)))
    return ax


ENV_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")
"""Marker shapes of the envs in a return-vs-cost scatter of several envs (in env order)."""


def plot_return_cost_scatter(
    scores: pd.DataFrame,
    ax: Axes | None = None,
    *,
    env: str | None = None,
    cost_limit: float | None = None,
    include_partial: bool = False,
    colors: Mapping[str, Any] | None = None,
) -> Axes:
    """Final return vs final cost, one dot per run and a large marker per algo mean.

    With several envs (normalised scores), each env's runs get their own marker shape
    (:data:`ENV_MARKERS`), listed in the legend.

    The feasible region (cost ≤ limit) is shaded. The limit is ``cost_limit`` if given,
    0 for normalised scores (cost/limit − 1), else the single ``cost_limit`` in the data.
    """
    frame = scores if env is None else scores.loc[scores["env"] == env]
    used, excluded, _ = analysis.split_partial(frame, include_partial, "plot_return_cost_scatter")
    if used.empty:
        raise ValueError("plot_return_cost_scatter: no runs to plot")
    normalised = "cost_raw" in used.columns
    if not normalised and used["env"].nunique() > 1:
        raise ValueError(
            "plot_return_cost_scatter: raw scores of several envs are on different scales; "
            "pass env= or normalised scores"
        )
    if cost_limit is None:
        cost_limit = 0.0 if normalised else _single_cost_limit(used)
    ax = _axes(ax)
    palette = dict(colors) if colors is not None else algo_colors(used["algo"])
    envs = [str(e) for e in sorted(used["env"].unique())]
    # several envs: each env gets a marker shape, so runs of one task can be told apart
    shapes = {name: ENV_MARKERS[i % len(ENV_MARKERS)] for i, name in enumerate(envs)}
    for algo, group in used.groupby("algo", sort=True):
        color = palette[str(algo)]
        for task, runs in group.groupby("env", sort=True):
            marker = shapes[str(task)] if len(envs) > 1 else "o"
            ax.scatter(runs["cost"], runs["ret"], color=color, s=14, alpha=0.55, marker=marker)
        ax.scatter(
            group["cost"].mean(),
            group["ret"].mean(),
            color=color,
            s=80,
            edgecolors="black",
            label=f"{algo} (n={len(group)})",
        )
    if len(envs) > 1:
        for name in envs:  # legend entries for the shapes, in grey (colour is the algo's)
            ax.scatter([], [], color="grey", marker=shapes[name], s=20, label=name)
    left, right = ax.get_xlim()
    left = min(left, cost_limit - 0.05 * (right - left))
    ax.axvspan(left, cost_limit, color="tab:green", alpha=0.1, label="feasible (cost ≤ limit)")
    ax.axvline(cost_limit, color="black", linestyle="--", linewidth=1.0)
    ax.set_xlim(left, max(right, cost_limit))
    ax.set_xlabel("final cost Ĵc/d − 1" if normalised else "final cost")
    ax.set_ylabel("normalised return" if normalised else "final return")
    ax.legend(fontsize="small")
    _note_excluded(ax, len(excluded))
    return ax


def plot_performance_profiles(
    profiles: pd.DataFrame,
    ax: Axes | None = None,
    *,
    xlabel: str | None = None,
    colors: Mapping[str, Any] | None = None,
) -> Axes:
    """Performance profiles with bootstrap bands (output of ``analysis.performance_profiles``)."""
    for column in ("algo", "tau", "fraction", "low", "high"):
        if column not in profiles.columns:
            raise ValueError(f"plot_performance_profiles: missing column {column!r}")
    ax = _axes(ax)
    palette = dict(colors) if colors is not None else algo_colors(profiles["algo"])
    for algo, curve in profiles.groupby("algo", sort=True):
        color = palette[str(algo)]
        ax.plot(curve["tau"], curve["fraction"], color=color, label=str(algo))
        ax.fill_between(curve["tau"], curve["low"], curve["high"], color=color, alpha=0.2)
    metric = profiles.attrs.get("metric", "score")
    higher = profiles.attrs.get("higher_is_better", True)
    ax.set_xlabel(xlabel or f"{metric} threshold τ")
    ax.set_ylabel(f"fraction of runs with {metric} {'>' if higher else '≤'} τ")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize="small")
    _note_excluded(ax, int(profiles.attrs.get("n_excluded", 0)))
    return ax
