"""Head-to-head comparisons: each method under test against each other one (the page's
opening when the experiment names ``ours``), the gain of ours over the best cost-respecting
baseline (KFCPO-style headline) and the probability of improvement between algorithms."""

from __future__ import annotations

import math

import pandas as pd

from safebench import analysis
from safebench.report.aggregate import AggregateStats
from safebench.report.format import ci, flag, num
from safebench.report.inputs import ALL_TASKS, ReportInputs
from safebench.report.model import Paragraph, Section, Table, failed

__all__ = ["gain_section", "ours_section", "poi_section"]


def gain_section(inputs: ReportInputs) -> Section:
    """Per env: 100·(mean return of ours − R*)/|R*| against the best feasible baseline."""
    c = inputs.config
    assert c.ours
    title = f"Return of {', '.join(c.ours)} over the best cost-respecting baseline"
    frames, displays = [], []
    for ours in c.ours:
        baselines = [a for a in inputs.algos if a not in c.ours]
        try:
            table = analysis.gain_over_best_feasible_baseline(inputs.scores, ours, baselines)
        except ValueError as exc:
            paragraph, note = failed(f"gain table of {ours}", exc)
            return Section(title, (paragraph,), (note,))
        frames.append(table.assign(ours=ours))
        displays.append(
            pd.DataFrame(
                {
                    "ours": ours,
                    "env": table["env"],
                    "mean return": [num(v) for v in table["algo_ret"]],
                    "mean cost": [num(v) for v in table["algo_cost"]],
                    "feasible": [flag(v) for v in table["algo_feasible"]],
                    "best feasible baseline": [b or "–" for b in table["best_baseline"]],
                    "its mean return": [num(v) for v in table["best_baseline_ret"]],
                    "gain %": ["–" if math.isnan(v) else f"{v:+.1f}%" for v in table["gain_pct"]],
                    "why no gain": table["reason"],
                }
            )
        )
    data = pd.concat(frames, ignore_index=True)
    display = pd.concat(displays, ignore_index=True)
    caption = (
        "KFCPO-style headline: 100·(mean return of ours − R*)/|R*|, R* = best mean "
        "return among the other methods (not under test) whose mean cost ≤ d (raw means over "
        "used runs; no CI)."
    )
    return Section(title, (Table("gain", data, display, caption),))


def _pair_cell(p: float, low: float, high: float) -> str:
    return f"{p:.2f} [{low:.2f}, {high:.2f}]"


def ours_section(inputs: ReportInputs, per_env: pd.DataFrame) -> Section:
    """The question the experiment asks: is each method under test better than each other?

    One row per (ours, baseline, env) and across envs: P(return higher), P(cost lower)
    with bootstrap CIs, both methods' admissibility and the answer
    (``analysis.head_to_head``). Its ``summary`` is what the terminal shows.
    """
    c = inputs.config
    title = f"Is {' / '.join(c.ours)} better?"
    try:
        data = analysis.head_to_head(
            inputs.scores,
            per_env,
            c.ours,
            reps=c.poi_reps,
            seed=c.seed,
            confidence=c.confidence,
        )
    except ValueError as exc:
        paragraph, note = failed("the head-to-head table", exc)
        return Section(title, (paragraph,), (note,))
    notes = tuple(data.attrs.get("notes", ()))
    if data.empty:
        text = "No method under test has used runs next to another algorithm's: nothing to compare."
        return Section(title, (Paragraph(text),), notes, summary=(text,))

    def admissible(column: str) -> list[str]:
        return ["✓" if ok else "✗ over d" for ok in data[column]]

    across = ALL_TASKS if inputs.sweeps else analysis.ACROSS  # a sweep: its limits are tasks

    display = pd.DataFrame(
        {
            "ours": data["ours"],
            "baseline": data["baseline"],
            "task": data["scope"].replace(analysis.ACROSS, across),
            "P(return higher)": [
                _pair_cell(*r) for r in data[["p_ret", "p_ret_low", "p_ret_high"]].to_numpy()
            ],
            "P(cost lower)": [
                _pair_cell(*r) for r in data[["p_cost", "p_cost_low", "p_cost_high"]].to_numpy()
            ],
            "ours admissible": admissible("ours_admissible"),
            "baseline admissible": admissible("base_admissible"),
            "better?": [f"**{a}**: {w}" for a, w in zip(data["answer"], data["why"], strict=True)],
        }
    )
    caption = (
        "P(return higher) = probability that a run of ours ends with a higher final return "
        "than a run of the baseline on the same env (ties count ½; across envs: the mean over "
        "the envs both ran on); P(cost lower) likewise for a lower final cost. "
        f"{c.confidence:.0%} stratified independent bootstrap CIs ({c.poi_reps:,} reps). "
        "**Admissible** = IQM final cost < d (across envs: on every env). **better?** — yes "
        "when ours is admissible and the baseline is not, or both are and the return CI lies "
        "above ½; no when ours is not admissible or the return CI lies below ½; open when the "
        "return CI holds ½ (more seeds, or no difference)."
    )
    headline = data.loc[(data["scope"] == analysis.ACROSS) | (data["n_envs"] == 1)]
    headline = headline.drop_duplicates(["ours", "baseline"], keep="last")
    summary = tuple(
        f"{r.ours} vs {r.baseline} ({across if r.scope == analysis.ACROSS else r.scope}): "
        f"{r.answer.upper()} — {r.why}; "
        f"P(return higher) {_pair_cell(r.p_ret, r.p_ret_low, r.p_ret_high)}, "
        f"P(cost lower) {_pair_cell(r.p_cost, r.p_cost_low, r.p_cost_high)}"
        for r in headline.itertuples()
    )
    return Section(title, (Table("ours", data, display, caption),), notes, summary=summary)


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
        mine = [o for o in c.ours if o in algos]
        if mine:
            pairs = [(o, b) for o in mine for b in algos if b != o]
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
