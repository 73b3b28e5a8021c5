"""Enough seeds? How the IQM intervals narrow with the number of seeds, and how many seeds
would separate the methods the verdict could not tell apart.

:func:`seeds_section` is the report's section; :func:`plan` computes the same section
straight from a results root (``safebench plan RESULTS``). The numbers come from
``analysis.ci_width_by_seeds``, ``analysis.closest_pairs`` and
``analysis.seeds_to_separate``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from safebench import analysis
from safebench.errors import UserError
from safebench.report.aggregate import AggregateStats, aggregate_stats
from safebench.report.format import ci, num
from safebench.report.inputs import ReportConfig, ReportInputs, load
from safebench.report.model import Paragraph, Section, Table, failed
from safebench.report.per_env import per_env_stats

__all__ = [
    "EXTRAPOLATE_TO",
    "MAX_SEEDS",
    "MIN_SEEDS",
    "POWER",
    "headline_widths",
    "plan",
    "seeds_section",
]

EXTRAPOLATE_TO = (10, 20)
"""Seed counts the widths are extrapolated to (by 1/√n from the seeds at hand)."""
POWER = 0.8
"""The power a pair's seed count is chosen for."""
MIN_SEEDS = 5
"""The smallest seed count searched (``analysis.seeds_to_separate``: below it the percentile
bootstrap's intervals are too narrow to count)."""
MAX_SEEDS = 50
"""The largest seed count searched for a pair."""
TITLE = "Enough seeds?"


def _widths(inputs: ReportInputs, stats: AggregateStats | None) -> pd.DataFrame:
    """Per env (raw scores) and, with several envs, across envs (the aggregate's scores)."""
    c = inputs.config

    def widths(scores: pd.DataFrame, metrics: tuple[str, ...], across: bool) -> pd.DataFrame:
        return analysis.ci_width_by_seeds(
            scores,
            metrics,
            across_envs=across,
            extrapolate_to=EXTRAPOLATE_TO,
            confidence=c.confidence,
            seed=c.seed,
        )

    frames = [widths(inputs.scores, ("ret", "cost"), False)]
    notes = list(frames[0].attrs["notes"])
    if stats is not None and len(inputs.envs) > 1:
        for metric, frame in stats.frames.items():
            if metric in ("ret", "cost"):
                frames.append(widths(frame, (metric,), True))
                notes.extend(n for n in frames[-1].attrs["notes"] if n not in notes)
    out = pd.concat([f for f in frames if not f.empty] or frames[:1], ignore_index=True)
    out.attrs.update(frames[0].attrs)
    out.attrs["notes"] = notes
    return out


def _separations(
    inputs: ReportInputs, per_env: pd.DataFrame, stats: AggregateStats | None
) -> pd.DataFrame:
    """The verdict's closest pairs and the seeds each would need."""
    c = inputs.config
    across = stats.tables.get("ret") if stats is not None and len(inputs.envs) > 1 else None
    pairs = analysis.closest_pairs(analysis.verdict(per_env, across))

    def separate(scores: pd.DataFrame, triples: list[tuple[str, str, str]]) -> pd.DataFrame:
        return analysis.seeds_to_separate(
            scores,
            triples,
            "ret",
            power=POWER,
            min_seeds=MIN_SEEDS,
            max_seeds=MAX_SEEDS,
            confidence=c.confidence,
            seed=c.seed,
        )

    frames = []
    for overall in (False, True):
        chosen = pairs.loc[(pairs["scope"] == analysis.ACROSS) == overall]
        if chosen.empty:
            continue
        scores = stats.frames["ret"] if overall and stats is not None else inputs.scores
        triples = [
            (str(a), str(b), str(c)) for a, b, c in chosen[["scope", "higher", "lower"]].to_numpy()
        ]
        frames.append(separate(scores, triples))
    if not frames:
        return separate(inputs.scores, [])
    out = pd.concat(frames, ignore_index=True)
    out = out.merge(pairs, on=["scope", "higher", "lower"], how="left", suffixes=("", "_verdict"))
    out.attrs.update(frames[0].attrs)
    return out


def _width_cells(rows: pd.DataFrame) -> tuple[str, str]:
    """``2: w; 3: w; **N: w**`` (measured) and ``10: w; 20: w`` (extrapolated)."""
    measured = rows.loc[~rows["extrapolated"]]
    parts = [
        f"**{int(r.n)}: {num(r.width)}**" if r.n == r.n_available else f"{int(r.n)}: {num(r.width)}"
        for r in measured.itertuples()
    ]
    beyond = rows.loc[rows["extrapolated"]]
    more = "; ".join(f"{int(r.n)}: {num(r.width)}" for r in beyond.itertuples())
    return "; ".join(parts) or "–", more or "–"


def _seeds_cell(r: dict[str, Any]) -> str:
    """``23 (82%)``, ``≤ 5 (91%)`` (the smallest count searched), or why there is none."""
    if r["reason"] or pd.isna(r["seeds"]):
        return str(r["reason"]) or "–"
    n = int(r["seeds"])
    return f"{'≤ ' if n == MIN_SEEDS else ''}{n} ({float(r['power_at_seeds']):.0%})"


def _side(r: dict[str, Any], side: str) -> str:
    return f"{r[side]} {ci(r[f'{side}_ret'], r[f'{side}_ret_low'], r[f'{side}_ret_high'])}"


def _power_now(r: dict[str, Any]) -> str:
    p = float(r["power_now"])
    return "–" if math.isnan(p) else f"{p:.0%} at {int(r['n_now'])}"


def _reading(widths: pd.DataFrame, sep: pd.DataFrame, n_pairs: int) -> str:
    measured = widths.loc[~widths["extrapolated"]]
    seeds_at_hand = sorted({int(n) for n in measured["n_available"]})
    text = []
    if seeds_at_hand:
        n_min = seeds_at_hand[0]
        shrink = "; ".join(
            f"{n} seeds to {math.sqrt(n_min / n):.0%}" for n in EXTRAPOLATE_TO if n > n_min
        )
        at_hand = ", ".join(str(n) for n in seeds_at_hand)
        text.append(
            f"Seeds at hand per cell: {at_hand}. By the 1/√n law an interval from {n_min} seeds "
            f"narrows to √({n_min}/n) of its width: {shrink or 'no extrapolation needed'}."
        )
    if n_pairs == 0:
        text.append(
            "No two admissible methods adjacent in IQM return have overlapping intervals: "
            "every order the verdict states is already separated (or a task has fewer than "
            "two admissible methods)."
        )
    else:
        found = sep["seeds"].notna()
        within = int((found & (sep["seeds"] <= max(EXTRAPOLATE_TO[0], 1))).sum())
        never = int(sep["reason"].str.startswith("not separable").sum())
        text.append(
            f"Of the {n_pairs} closest pair(s) (admissible neighbours in IQM return whose "
            f"intervals overlap), {within} would separate with {POWER:.0%} power at ≤ "
            f"{EXTRAPOLATE_TO[0]} seeds per method, {int(found.sum()) - within} need more, "
            f"{never} are not separable at the observed effect within {MAX_SEEDS} seeds."
        )
    text.append(
        "Both estimates take the observed runs as the truth. The re-drawn runs spread as the "
        "observed ones do, (N−1)/N of their sample variance (2/3 at 3 runs), so from few runs "
        "the seed counts come out low, and rough (from 3 runs, an order of magnitude). Widths "
        "at n ≤ 3 are narrowed by the percentile bootstrap itself — for normal runs 0.38 "
        "(n = 2) and 0.74 (n = 3) of the 1/√n law's width, within ±10 % of it from 4 on "
        "(tests/report/test_seeds.py): read them as a floor, not an estimate."
    )
    if seeds_at_hand and seeds_at_hand[0] <= 3:
        text.append(
            f"Cells with {seeds_at_hand[0]} seeds anchor their extrapolation on such a width: "
            "their widths at 10 and 20 seeds are optimistic by as much (a quarter at 3 seeds)."
        )
    return " ".join(text)


def seeds_section(
    inputs: ReportInputs, per_env: pd.DataFrame, stats: AggregateStats | None = None
) -> Section:
    """CI width by number of seeds per cell (and across envs), and the seeds that would
    separate the verdict's closest pairs.

    ``per_env``: :func:`per_env.per_env_stats`; ``stats``: :func:`aggregate_stats` (its
    normalised scores give the across-env rows; None: per env only). ``summary``: one line
    per closest pair, what ``safebench plan`` prints.
    """
    c = inputs.config
    try:
        widths = _widths(inputs, stats)
        sep = _separations(inputs, per_env, stats)
    except ValueError as exc:
        paragraph, note = failed("the seeds estimate", exc)
        return Section(TITLE, (paragraph,), (note,))
    notes = tuple(dict.fromkeys([*widths.attrs["notes"], *sep.attrs["notes"]]))
    order = {e: i for i, e in enumerate([*inputs.envs, analysis.ACROSS])}
    width_rows: list[dict[str, Any]] = []
    groups = widths.groupby(["scope", "algo"], sort=False)
    for (scope, algo), group in sorted(groups, key=lambda g: (order.get(str(g[0][0]), -1), g[0])):
        row: dict[str, Any] = {"task": scope, "algo": algo}
        row["seeds"] = int(group["n_available"].iloc[0])
        for metric, name in (("ret", "return"), ("cost", "cost")):
            cells = _width_cells(group.loc[group["metric"] == metric])
            row[f"IQM {name}: CI width at n seeds"] = cells[0]
            row[f"{name}, extrapolated"] = cells[1]
        width_rows.append(row)
    width_display = pd.DataFrame(width_rows)
    method = stats.method if stats is not None else "none"
    width_caption = (
        f"Width of the {c.confidence:.0%} percentile-bootstrap interval of the IQM for n seeds "
        f"(n: width): the mean over subsamples of n of the cell's N runs, drawn without "
        f"replacement (every subset when there are ≤ {widths.attrs['subsamples']}, else "
        f"{widths.attrs['subsamples']} random ones), {widths.attrs['reps']:,} bootstrap "
        f"replications each (as many in all at every n); **bold**: n = N, the seeds at hand. "
        f"**Extrapolated** (not measured): width(N)·√(N/n), the 1/√n law anchored at N. "
        f"Return and cost raw per env; all envs: the aggregate's {method}-normalised scores, "
        "runs resampled within each env. `tables/seeds_width.csv`: every number, with the "
        "spread over subsamples."
    )
    blocks: list[Paragraph | Table] = [
        Table("seeds_width", widths, width_display, width_caption),
    ]
    n_pairs = len(sep)
    records: list[dict[str, Any]] = [
        {str(k): v for k, v in r.items()} for r in sep.to_dict("records")
    ]
    if n_pairs:
        sep_display = pd.DataFrame(
            {
                "task": sep["scope"],
                "closest pair: IQM return [CI]": [
                    f"{_side(r, 'higher')} vs {_side(r, 'lower')}" for r in records
                ],
                "difference": [num(r["effect"]) for r in records],
                "power now": [_power_now(r) for r in records],
                f"seeds per method for {POWER:.0%} power": [_seeds_cell(r) for r in records],
            }
        )
        sep_caption = (
            "Closest pairs: per task, the admissible methods adjacent in IQM return whose "
            "intervals overlap (the verdict could not order them). **Seeds**: the smallest n "
            f"(searched {MIN_SEEDS}–{MAX_SEEDS}) at which {POWER:.0%} of "
            f"{int(sep['experiments'].iloc[0])} simulated experiments separate the pair — n "
            "runs per method re-drawn with replacement from the observed runs, both IQM "
            f"intervals computed ({int(sep['reps'].iloc[0])} bootstrap reps), the higher one "
            "wholly above the lower one — with that power in brackets; the observed effect "
            "and spread are taken as the truth. "
            f"≤ {MIN_SEEDS}: {MIN_SEEDS} seeds already suffice (fewer are not searched: there "
            "the percentile bootstrap's intervals are too narrow to count). **Power now**: the "
            "same at the seeds at hand. All envs: the aggregate's normalised return."
        )
        blocks.append(Table("seeds_separate", sep, sep_display, sep_caption))
    blocks.insert(0, Paragraph(_reading(widths, sep, n_pairs)))
    summary = tuple(f"{r['scope']}: {_pair_line(r)}" for r in records)
    return Section(TITLE, tuple(blocks), notes, summary=summary)


def _pair_line(r: dict[str, Any]) -> str:
    """One closest pair on one line: what ``safebench plan`` prints."""
    pair = (
        f"{r['higher']} vs {r['lower']} (IQM return {num(r['higher_ret'])} vs "
        f"{num(r['lower_ret'])})"
    )
    now = f"now {_power_now(r)} seeds" if not math.isnan(float(r["power_now"])) else ""
    if r["reason"] or pd.isna(r["seeds"]):
        return f"{pair}: {r['reason']}" + (f"; {now}" if now else "")
    n = int(r["seeds"])
    seeds = f"{'≤ ' if n == MIN_SEEDS else ''}{n} seeds per method"
    return f"{pair}: {seeds} for {POWER:.0%} power ({float(r['power_at_seeds']):.0%}); {now}"


def headline_widths(widths: pd.DataFrame, envs: Sequence[str]) -> pd.DataFrame:
    """The width table in brief, for the terminal: per (task, algo), each metric's width at
    the seeds at hand (``ret now``) and at each n of ``EXTRAPOLATE_TO`` (``ret@10``;
    measured where n ≤ the seeds at hand, else extrapolated, marked ``~``; ``–`` where the
    metric has no width, e.g. an across-env cost the aggregate could not normalise)."""
    order = {e: i for i, e in enumerate([*envs, analysis.ACROSS])}
    rows: list[dict[str, Any]] = []
    for (scope, algo), group in sorted(
        widths.groupby(["scope", "algo"], sort=False),
        key=lambda g: (order.get(str(g[0][0]), -1), g[0]),
    ):
        n_now = int(group["n_available"].iloc[0])
        row: dict[str, Any] = {"task": scope, "algo": algo, "seeds": n_now}
        for metric in ("ret", "cost"):
            by_n = group.loc[group["metric"] == metric].set_index("n")
            for n, label in (
                (n_now, f"{metric} now"),
                *((n, f"{metric}@{n}") for n in EXTRAPOLATE_TO),
            ):
                if n in by_n.index:
                    mark = "~" if bool(by_n.loc[n, "extrapolated"]) else ""
                    row[label] = mark + num(by_n.loc[n, "width"])
        rows.append(row)
    columns = ["task", "algo", "seeds"]
    for metric in ("ret", "cost"):
        columns += [f"{metric} now", *(f"{metric}@{n}" for n in EXTRAPOLATE_TO)]
    return pd.DataFrame(rows).reindex(columns=columns).fillna("–")


def plan(results_dir: Path | str, config: ReportConfig | None = None) -> tuple[Section, float]:
    """:func:`seeds_section` of a results root and the seconds it took (load to section).

    The per-env table and the aggregate are computed with ``config`` as the report does,
    so the closest pairs are the report's.
    """
    start = time.perf_counter()
    config = config or ReportConfig()
    config.check()
    root = Path(results_dir)
    if not root.is_dir():
        raise UserError(f"plan: {root} is not a directory")
    runs = load(root)
    config.check_labels(sorted(runs["algo"].unique()))
    inputs = ReportInputs.make(
        runs, config, root.resolve().name, time.strftime("%Y-%m-%d %H:%M:%S %Z")
    )
    if inputs.used.empty:
        text = "No used (done) runs: nothing to estimate."
        return Section(TITLE, (Paragraph(text),), summary=(text,)), time.perf_counter() - start
    stats = aggregate_stats(inputs)
    section = seeds_section(inputs, per_env_stats(inputs), stats)
    return section, time.perf_counter() - start
