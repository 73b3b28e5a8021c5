"""The aggregate across envs: which runs and envs can enter it, its statistics, its table.

:func:`aggregate_stats` chooses the inputs (envs where the reference ran, algos that ran on
every one of them), normalises them and runs ``analysis.aggregate`` per metric; the
aggregate section, the probability-of-improvement section and the summary figures all
read the :class:`AggregateStats` it returns.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import pandas as pd

from safebench import analysis
from safebench.report.format import ci
from safebench.report.inputs import ReportInputs
from safebench.report.model import Items, Paragraph, Section, Table

__all__ = [
    "METRIC_NAMES",
    "SCALE_LABELS",
    "AggregateStats",
    "aggregate_section",
    "aggregate_stats",
]

METRIC_NAMES = {"ret": "return", "cost": "cost", "regret": "regret"}


@dataclass(frozen=True, eq=False)
class AggregateStats:
    """The aggregate's result; ``data`` is None when no algorithm covers every env.

    ``frames[metric]``: the normalised scores that entered ``metric``'s aggregate (envs
    where its normalisation is undefined left out); ``tables[metric]``: its
    ``analysis.aggregate`` table; ``data``: all metrics side by side, one row per algo.
    """

    data: pd.DataFrame | None
    method: analysis.NormMethod = "none"
    ret_stats: tuple[analysis.Statistic, ...] = ()
    notes: tuple[str, ...] = ()
    frames: Mapping[str, pd.DataFrame] = field(default_factory=dict)
    tables: Mapping[str, pd.DataFrame] = field(default_factory=dict)


def _normalised(
    inputs: ReportInputs, notes: list[str]
) -> tuple[pd.DataFrame, analysis.NormMethod] | None:
    """Normalised scores of the runs that can enter a cross-env aggregate, or None."""
    c, used = inputs.config, inputs.used
    envs = sorted(used["env"].unique())
    if c.reference:
        refs = {c.reference, c.regret_reference or c.reference}
        ok = [e for e in envs if all(((used.env == e) & (used.algo == r)).any() for r in refs)]
        if len(ok) < len(envs):
            notes.append(
                f"env(s) {sorted(set(envs) - set(ok))} left out of the aggregate: the "
                f"reference {sorted(refs)} has no used run there"
            )
        envs = ok
        method: analysis.NormMethod = "reference"
    else:
        method = "minmax" if len(envs) > 1 else "none"
    frame = used.loc[used["env"].isin(envs)]
    covered = frame.groupby("algo")["env"].nunique()
    complete = sorted(covered.index[covered == len(envs)])
    partial = sorted(set(covered.index) - set(complete))
    if partial:
        notes.append(
            f"algo(s) {partial} left out of the aggregate: no used run on some of the "
            f"{len(envs)} env(s) (aggregates over different env sets are not comparable)"
        )
    frame = frame.loc[frame["algo"].isin(complete)]
    if frame.empty:
        return None
    norm = analysis.normalize_scores(
        frame, reference=c.reference, regret_reference=c.regret_reference, method=method
    )
    notes.extend(norm.attrs.get("notes", []))
    return norm, method


def aggregate_stats(inputs: ReportInputs) -> AggregateStats:
    """IQM (and mean, median, optimality gap of return) per algo across envs, with CIs."""
    c = inputs.config
    notes: list[str] = []
    chosen = _normalised(inputs, notes)
    if chosen is None:
        return AggregateStats(None, notes=tuple(notes))
    norm, method = chosen
    ret_stats: list[analysis.Statistic] = ["iqm", "mean", "median"]
    if method != "none":
        ret_stats.append("optimality_gap")  # threshold 1 = reference mean / best run
    only_iqm: list[analysis.Statistic] = ["iqm"]
    data = pd.DataFrame({"algo": sorted(norm["algo"].unique())})
    data.insert(1, "normalization", method)
    frames: dict[str, pd.DataFrame] = {}
    tables: dict[str, pd.DataFrame] = {}
    for metric, stats in (("ret", ret_stats), ("cost", only_iqm), ("regret", only_iqm)):
        # A normalisation that is undefined on an env (e.g. reference mean return <= 0)
        # gives NaN there; that env leaves this metric's aggregate, not the others.
        bad = sorted(norm.loc[norm[metric].isna(), "env"].unique())
        frame = norm.loc[~norm["env"].isin(bad)]
        name = METRIC_NAMES[metric]
        if bad:
            notes.append(
                f"{name} aggregate leaves out env(s) {bad}: the normalised {name} is "
                "undefined there"
            )
        if frame.empty:
            notes.append(f"no {name} aggregate: undefined on every env")
            continue
        table = analysis.aggregate(
            frame,
            metric,
            reps=c.reps,
            confidence=c.confidence,
            seed=c.seed,
            statistics=stats,
            ragged="truncate",
        )
        notes.extend(n for n in table.attrs["notes"] if n not in notes)
        frames[metric] = frame
        tables[metric] = table
        renamed = table.drop(columns=["n_partial"]).rename(
            columns={col: f"{metric}_{col}" for col in table.columns if col != "algo"}
        )
        data = data.merge(renamed, on="algo", how="left")
    return AggregateStats(
        data,
        method,
        tuple(ret_stats),
        tuple(notes),
        MappingProxyType(frames),
        MappingProxyType(tables),
    )


SCALE_LABELS: dict[str, dict[str, str]] = {
    "reference": {"ret": "÷ reference mean", "cost": "Ĵc/d − 1", "regret": "÷ reference IQM"},
    "minmax": {"ret": "min–max per env", "cost": "Ĵc/d − 1", "regret": "min–max per env"},
    "none": {"ret": "raw", "cost": "raw", "regret": "raw"},
}
"""The short name of each metric's scale, per normalisation: every axis and caption that
shows a normalised score says it this way, and it matches :func:`_scale_text`'s table text."""


def _scale_text(inputs: ReportInputs, method: str) -> tuple[str, str, str]:
    c = inputs.config
    return {
        "reference": (
            f"return ÷ mean return of `{c.reference}`",
            "cost Ĵc/d − 1 (0 = at the limit, < 0 safe)",
            f"regret ÷ IQM regret of `{c.regret_reference or c.reference}`",
        ),
        "minmax": (
            "return min–max scaled per env over all used runs",
            "cost Ĵc/d − 1 (0 = at the limit, < 0 safe)",
            "regret min–max scaled per env",
        ),
        "none": ("raw return", "raw cost", "raw regret"),
    }[method]


def _counts(data: pd.DataFrame, column: str) -> list[str]:
    """Run or env counts per algo: one number, or return/cost/regret where they differ."""
    present = [f"{m}_{column}" for m in METRIC_NAMES if f"{m}_{column}" in data.columns]
    out = []
    for row in data[present].to_numpy():
        values = {int(v) for v in row if not pd.isna(v)}
        out.append(
            str(values.pop())
            if len(values) == 1
            else "/".join("–" if pd.isna(v) else str(int(v)) for v in row)
        )
    return out


def aggregate_section(inputs: ReportInputs, stats: AggregateStats) -> Section:
    """The aggregate table with its normalisation stated, and what it left out."""
    c, data = inputs.config, stats.data
    title = "Aggregate across envs"
    if data is None:
        no = "No algorithm has used runs on every env: no aggregate."
        return Section(title, (Paragraph(no),), stats.notes)

    def cells(metric: str, stat: str) -> list[str]:
        columns = [f"{metric}_{stat}", f"{metric}_{stat}_low", f"{metric}_{stat}_high"]
        if columns[0] not in data.columns:
            return ["–"] * len(data)
        return [ci(*r) for r in data[columns].to_numpy()]

    display = pd.DataFrame(
        {
            "algo": data["algo"],
            "runs/env": _counts(data, "n_runs"),
            "envs": _counts(data, "n_envs"),
            "IQM return": cells("ret", "iqm"),
            "mean return": cells("ret", "mean"),
            "median return": cells("ret", "median"),
            "IQM cost": cells("cost", "iqm"),
            "IQM regret": cells("regret", "iqm"),
        }
    )
    if "optimality_gap" in stats.ret_stats:
        display.insert(6, "optimality gap", cells("ret", "optimality_gap"))
    differs = any("/" in v for v in [*display["runs/env"], *display["envs"]])
    scale = _scale_text(inputs, stats.method)
    table = Table(
        "aggregate",
        data,
        display,
        f"Aggregate across envs, {c.confidence:.0%} CIs ({c.reps:,} reps): {scale[0]}; "
        f"{scale[1]}; {scale[2]}."
        + (" Counts shown as return/cost/regret where they differ." if differs else ""),
    )
    return Section(title, (table, Items(stats.notes)), stats.notes)
