"""Head-to-head comparisons: the gain of ``--ours`` over the best cost-respecting baseline
(KFCPO-style headline) and the probability of improvement between algorithms."""

from __future__ import annotations

import math

import pandas as pd

from safebench import analysis
from safebench.report.aggregate import AggregateStats
from safebench.report.format import ci, flag, num
from safebench.report.inputs import ReportInputs
from safebench.report.model import Paragraph, Section, Table, failed

__all__ = ["gain_section", "poi_section"]


def gain_section(inputs: ReportInputs) -> Section:
    """Per env: 100·(mean return of ours − R*)/|R*| against the best feasible baseline."""
    c = inputs.config
    assert c.ours is not None
    title = f"Return of {c.ours} over the best cost-respecting baseline"
    baselines = [a for a in inputs.algos if a != c.ours]
    try:
        table = analysis.gain_over_best_feasible_baseline(inputs.scores, c.ours, baselines)
    except ValueError as exc:
        paragraph, note = failed("gain table", exc)
        return Section(title, (paragraph,), (note,))
    display = pd.DataFrame(
        {
            "env": table["env"],
            f"{c.ours} mean return": [num(v) for v in table["algo_ret"]],
            f"{c.ours} mean cost": [num(v) for v in table["algo_cost"]],
            f"{c.ours} feasible": [flag(v) for v in table["algo_feasible"]],
            "best feasible baseline": [b or "–" for b in table["best_baseline"]],
            "its mean return": [num(v) for v in table["best_baseline_ret"]],
            "gain %": ["–" if math.isnan(v) else f"{v:+.1f}%" for v in table["gain_pct"]],
            "why no gain": table["reason"],
        }
    )
    caption = (
        f"KFCPO-style headline: 100·(mean return of {c.ours} − R*)/|R*|, R* = best mean "
        "return among baselines whose mean cost ≤ d (raw means over used runs; no CI)."
    )
    return Section(title, (Table("gain", table, display, caption),))


def poi_section(inputs: ReportInputs, stats: AggregateStats) -> Section:
    """P(a run of X beats a run of Y on the same env), averaged over the aggregate's envs.

    Pairs: ``--ours`` against every other algorithm, or every pair when there is no ours.
    """
    c = inputs.config
    title = "Probability of improvement"
    frames = []
    for metric in ("ret", "cost"):
        if metric not in stats.frames:
            continue
        scores = stats.frames[metric]
        algos = sorted(scores["algo"].unique())
        if c.ours and c.ours in algos:
            pairs = [(c.ours, b) for b in algos if b != c.ours]
        else:
            pairs = [(a, b) for i, a in enumerate(algos) for b in algos[i + 1 :]]
        if not pairs:
            continue
        frames.append(
            analysis.probability_of_improvement(
                scores,
                pairs,
                reps=c.poi_reps,
                seed=c.seed,
                metric=metric,
                confidence=c.confidence,
                ragged="truncate",
            )
        )
    if not frames:
        return Section(
            title, (Paragraph("Fewer than two algorithms in the aggregate: nothing to compare."),)
        )
    data = pd.concat(frames, ignore_index=True)
    display = pd.DataFrame(
        {
            "X": data["x"],
            "Y": data["y"],
            "metric": [
                "return (higher better)" if m == "ret" else "cost (lower better)"
                for m in data["metric"]
            ],
            "P(X better than Y)": [ci(*r) for r in data[["prob", "low", "high"]].to_numpy()],
            "envs": data["n_envs"],
        }
    )
    caption = (
        f"Probability that a run of X beats a run of Y on the same env, averaged over "
        f"envs ({c.confidence:.0%} CIs, {c.poi_reps:,} reps)."
    )
    return Section(title, (Table("poi", data, display, caption),))
