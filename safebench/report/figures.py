"""The figures: learning curves per env (over env steps and/or wall-clock time, ``--x``),
aggregate intervals, return vs cost, profiles."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from safebench import analysis
from safebench.report import plots
from safebench.report.aggregate import METRIC_NAMES, SCALE_LABELS, AggregateStats
from safebench.report.inputs import ReportInputs
from safebench.report.model import Block, Plot, Section, failed
from safebench.results.store import env_slug

__all__ = ["figures_section"]


def _laid_out(
    fig: Figure,
    name: str,
    caption: str,
    rect: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0),
) -> Plot:
    fig.tight_layout(rect=rect)
    return Plot(name, fig, caption)


def _curves(inputs: ReportInputs, env: str, x: plots.CurveX = "steps") -> Plot:
    """Return, cost and regret curves of every algo on ``env`` over env steps, or over
    training wall-clock time (``x="time"``: ``curves_time_<env>``); raises ValueError."""
    c = inputs.config
    curve_kw: dict[str, Any] = {
        "reps": c.curve_reps,
        "n_points": c.curve_points,
        "seed": c.seed,
        "confidence": c.confidence,
        "colors": dict(inputs.colors),
        "x": x,
    }
    frame = inputs.runs.loc[inputs.runs["env"] == env]
    # one figure per env (return, cost, regret): a third of the layout and save time
    # of three separate figures, and the three read best side by side
    n_algos = frame["algo"].nunique()
    rows = -(-(n_algos + 1) // 6)  # legend rows below the panels, 6 entries per row
    legend_height = 0.1 + 0.28 * rows
    fig = Figure(figsize=(15.0, 4.0 + legend_height))
    ax_ret, ax_cost, ax_regret = fig.subplots(1, 3)
    plots.plot_return_curves(frame, ax_ret, **curve_kw)
    plots.plot_cost_curves(frame, ax_cost, **curve_kw)
    plots.plot_regret_curves(frame, ax_regret, **curve_kw)
    # one shared legend instead of three copies covering the curves
    handles, labels = ax_cost.get_legend_handles_labels()
    for ax in (ax_ret, ax_cost, ax_regret):
        legend = ax.get_legend()
        if legend is not None:
            legend.remove()
    fig.legend(handles, labels, loc="lower center", ncol=6, fontsize="small")
    axis = "env steps"
    if x == "time":
        axis = (
            "training wall-clock time (each run's own clock: collection, update and "
            "evaluation, env and agent construction left out; only comparable between runs "
            "on the same machine, see the throughput table)"
        )
    return _laid_out(
        fig,
        f"curves_{'time_' if x == 'time' else ''}{env_slug(env)}",
        f"{env}: training return, cost (limit dashed) and cumulative cost regret "
        f"Σ max(0, EpCost − d) vs {axis}; IQM over used runs with pointwise "
        f"{c.confidence:.0%} bootstrap bands.",
        rect=(0.0, legend_height / (4.0 + legend_height), 1.0, 1.0),
    )


def _summary(inputs: ReportInputs, stats: AggregateStats) -> list[Plot]:
    """Aggregate IQM intervals, return vs cost of every run, performance profiles."""
    c, colors = inputs.config, dict(inputs.colors)
    assert stats.data is not None
    out = []
    method = stats.method
    scale = SCALE_LABELS[method]
    fig = Figure(figsize=(4.0 * len(stats.tables), 1.2 + 0.45 * len(stats.data)))
    axes = np.atleast_1d(fig.subplots(1, len(stats.tables)))
    for ax, (metric, table) in zip(axes, stats.tables.items()):
        plots.plot_interval_estimates(
            table, ax, xlabel=f"IQM {METRIC_NAMES[metric]} ({scale[metric]})", colors=colors
        )
    out.append(
        _laid_out(
            fig,
            "aggregate_iqm",
            f"Aggregate IQM with {c.confidence:.0%} stratified-bootstrap intervals "
            f"({c.reps:,} reps); "
            + "; ".join(f"{METRIC_NAMES[m]} {scale[m]}" for m in stats.tables)
            + ".",
        )
    )
    frames = stats.frames
    if "ret" in frames and "cost" in frames:
        envs = set(frames["ret"]["env"]) & set(frames["cost"]["env"])
        both = frames["ret"].loc[frames["ret"]["env"].isin(envs)]
        if not both.empty:
            fig = Figure(figsize=(6.5, 4.5))
            plots.plot_return_cost_scatter(both, fig.add_subplot(), colors=colors)
            several = both["env"].nunique() > 1
            out.append(
                _laid_out(
                    fig,
                    "return_vs_cost",
                    "Final return vs final cost, one small marker per used run"
                    + (" (its shape = its env)" if several else "")
                    + ", large circles = algo means"
                    + (" over envs" if several else "")
                    + f"; return {scale['ret']}, cost {scale['cost']}; the shaded side of "
                    "the dashed line is feasible.",
                )
            )
    profiled = [m for m in ("ret", "cost") if m in frames]
    fig = Figure(figsize=(5.5 * len(profiled), 4.0))
    axes = np.atleast_1d(fig.subplots(1, len(profiled)))
    for ax, metric in zip(axes, profiled):
        scores = frames[metric]
        values = scores[metric].to_numpy(float)
        profile = analysis.performance_profiles(
            scores,
            np.linspace(values.min(), values.max(), 31),
            metric,
            reps=c.curve_reps,
            confidence=c.confidence,
            seed=c.seed,
            ragged="truncate",
        )
        plots.plot_performance_profiles(
            profile,
            ax,
            xlabel=f"{METRIC_NAMES[metric]} threshold τ ({scale[metric]})",
            colors=colors,
        )
    out.append(
        _laid_out(
            fig,
            "profiles",
            "Performance profiles: share of (run, env) scores above τ (return) and at most τ "
            f"(cost), with {c.confidence:.0%} bootstrap bands ({c.curve_reps:,} reps).",
        )
    )
    return out


def figures_section(
    inputs: ReportInputs,
    stats: AggregateStats,
    progress: Callable[[str], None] | None = None,
) -> Section:
    """Every figure; ``progress`` (if given) hears which one is being drawn."""
    say = progress or (lambda _: None)
    blocks: list[Block] = []
    notes: list[str] = []
    both: tuple[plots.CurveX, ...] = ("steps", "time")
    axes = both if inputs.config.x == "both" else tuple(x for x in both if x == inputs.config.x)
    for env in inputs.envs:
        for x in axes:
            what = f"curves on {env}" + (" over wall-clock time" if x == "time" else "")
            say(what)
            try:
                blocks.append(_curves(inputs, env, x))
            except ValueError as exc:
                paragraph, note = failed(what, exc)
                blocks.append(paragraph)
                notes.append(note)
    if stats.data is not None and stats.tables:
        say("aggregate figures and performance profiles")
        blocks.extend(_summary(inputs, stats))
    return Section("Figures", tuple(blocks), tuple(notes))
