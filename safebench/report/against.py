"""``--against OTHER``: every (algorithm, env) shared with another results root, compared at
the same env-step count (``analysis.against``), with both sides' learning curves overlaid.

:func:`load_against` reads and checks the other root and the ``--map`` renaming before
anything is computed or written (bad input is a ``UserError``: exit 2, one line);
:func:`against_section` is the pure section function.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from safebench import analysis
from safebench.errors import UserError
from safebench.report.format import ci, short_env_ids
from safebench.report.inputs import ReportInputs, load
from safebench.report.model import Block, Paragraph, Plot, Section, Table, failed
from safebench.results.store import env_slug

__all__ = ["Against", "against_section", "against_window", "load_against", "parse_map"]

_HINT = "give a results root (e.g. one made by 'safebench import safepo PATH --into ROOT')"


def parse_map(entries: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """``["c-trpo-hyst=ctrpo", ...]`` → ``(("c-trpo-hyst", "ctrpo"), ...)``; UserError if bad."""
    pairs: dict[str, str] = {}
    for entry in entries:
        theirs, sep, ours = (part.strip() for part in entry.partition("="))
        if not sep or not theirs or not ours or "=" in ours:
            raise UserError(
                f"report: --map {entry!r} must look like THEIRS=OURS (their algorithm label = "
                "ours), e.g. --map c-trpo-hyst=ctrpo"
            )
        if theirs in pairs and pairs[theirs] != ours:
            raise UserError(f"report: --map names {theirs!r} twice ({pairs[theirs]!r}, {ours!r})")
        pairs[theirs] = ours
    return tuple(pairs.items())


@dataclass(frozen=True, eq=False)
class Against:
    """The other root's runs (labels mapped onto ours) and what is compared.

    ``runs``: every run of the other root, one row per (run, epoch), ``algo`` mapped through
    ``mapping`` (``label_orig``: their label); ``cells``: ``analysis.matched_cells``;
    ``scores``: ``analysis.matched_scores`` (both sides' runs at each cell's matched step).
    """

    root: Path
    runs: pd.DataFrame
    mapping: tuple[tuple[str, str], ...]
    cells: pd.DataFrame
    scores: pd.DataFrame
    n_not_done: int


def _load_other(root: Path) -> pd.DataFrame:
    if not root.is_dir():
        raise UserError(f"report: --against {root} is not a directory; {_HINT}")
    try:
        return load(root)
    except UserError:
        raise UserError(
            f"report: --against {root} holds no runs (no run directory with a spec.json "
            f"below it); {_HINT}"
        ) from None


def _check_map(mapping: dict[str, str], theirs: list[str], ours: list[str]) -> None:
    for their_label, our_label in mapping.items():
        if their_label not in theirs:
            raise UserError(
                f"report: --map {their_label}={our_label}: {their_label!r} is no algorithm "
                f"label of the --against root; it has {theirs}"
            )
        if our_label not in ours:
            raise UserError(
                f"report: --map {their_label}={our_label}: {our_label!r} is no algorithm "
                f"label of the results being reported; they have {ours}"
            )
    targets = [mapping.get(label, label) for label in theirs]
    clash = sorted({t for t in targets if targets.count(t) > 1})
    if clash:
        raise UserError(
            f"report: --map makes several --against labels into {clash}; map only one of "
            "their algorithms onto each of ours"
        )


def against_window(inputs: ReportInputs) -> int:
    """Epochs a run's score averages: ``-k`` under ``--final last-k``, else 1 (the last
    epoch at or before the matched step). ``--final eval`` has no counterpart in another
    root's training logs, so it compares the last epoch too."""
    c = inputs.config
    return c.k if c.final == "last-k" else 1


def load_against(inputs: ReportInputs, root: Path) -> Against:
    """Read ``root`` (``--against``), rename through ``--map``, find the shared cells.

    Raises ``UserError`` naming the flag and the fix when ``root`` is not a results root,
    a ``--map`` entry names no algorithm, or no (algorithm, env) is shared at a matched step.
    """
    c = inputs.config
    other = _load_other(root)
    mapping = dict(c.against_map)
    theirs_labels = sorted(str(a) for a in other["algo"].unique())
    _check_map(mapping, theirs_labels, list(inputs.algos))
    runs = analysis.rename_labels(other, mapping)
    ours = inputs.runs
    cells = analysis.matched_cells(ours, runs, c.at_steps)
    if cells.empty:
        shared = sorted(
            set(zip(ours["algo"], ours["env"], strict=True))
            & set(zip(runs["algo"], runs["env"], strict=True))
        )
        if c.at_steps is not None and shared:
            why = (
                "no shared (algorithm, env) has finished runs that reached --at-steps "
                f"{c.at_steps:.0f} on both sides; lower it or leave it out"
            )
        else:
            why = (
                "no (algorithm, env) has finished runs on both sides; theirs: "
                f"{theirs_labels} on {sorted(other['env'].unique())}, ours: {list(inputs.algos)} "
                f"on {list(inputs.envs)}; map their labels onto ours with --map THEIRS=OURS"
            )
        raise UserError(f"report: --against {root}: {why}")
    scores = analysis.matched_scores(ours, runs, cells, window=against_window(inputs))
    scores.attrs["notes"] = cells.attrs["notes"] + scores.attrs["notes"]
    per_run = other.drop_duplicates("run_id")
    return Against(
        root=root,
        runs=runs,
        mapping=tuple(mapping.items()),
        cells=cells,
        scores=scores,
        n_not_done=int((per_run["status"] != analysis.DONE).sum()),
    )


def _steps(row: pd.Series) -> str:
    text = f"{row['matched_steps']:,.0f}"
    used = []
    for side in analysis.SIDES:
        low, high = row[f"steps_{side}_min"], row[f"steps_{side}_max"]
        if low != row["matched_steps"] or high != row["matched_steps"]:
            span = f"{low:,.0f}" if low == high else f"{low:,.0f}–{high:,.0f}"
            used.append(f"{side} at {span}")
    return text + (f" ({'; '.join(used)})" if used else "")


def _display(data: pd.DataFrame) -> pd.DataFrame:
    def cis(prefix: str) -> list[str]:
        return [ci(*r) for r in data[[prefix, f"{prefix}_low", f"{prefix}_high"]].to_numpy()]

    short = short_env_ids(list(data["env"].unique()))
    return pd.DataFrame(
        {
            "env": [short[e] for e in data["env"]],
            "algo": data["algo"],
            "theirs": data["their_label"],
            "env steps": [_steps(row) for _, row in data.iterrows()],
            "runs": [f"{a} / {b}" for a, b in zip(data["n_ours"], data["n_theirs"], strict=True)],
            "IQM return": cis("ret"),
            "their IQM return": cis("their_ret"),
            "P(return higher)": cis("poi_ret"),
            "IQM cost": cis("cost"),
            "their IQM cost": cis("their_cost"),
            "P(cost lower)": cis("poi_cost"),
        }
    )


def _draw(ax: Axes, curves: pd.DataFrame, colors: dict[str, Any], labels: dict[str, str]) -> None:
    for (algo, side), curve in curves.groupby(["algo", "side"], sort=True):
        color = colors.get(str(algo), "0.3")
        n = int(curve["n_runs"].iloc[0])
        name = f"{algo} (ours, n={n})"
        if side != "ours":
            name = f"{labels.get(str(algo), algo)} (theirs, n={n})"
        style = "-" if side == "ours" else "--"
        ax.plot(curve["steps"], curve["estimate"], style, color=color, label=name)
        ax.fill_between(curve["steps"], curve["low"], curve["high"], color=color, alpha=0.15)
    ax.set_xlabel("env steps")


def _figure(inputs: ReportInputs, against: Against, data: pd.DataFrame, env: str) -> Plot:
    """Return and cost curves of both sides on ``env`` (raises ValueError)."""
    c = inputs.config
    kw: dict[str, Any] = {
        "n_points": c.curve_points,
        "reps": c.curve_reps,
        "confidence": c.confidence,
        "seed": c.seed,
    }
    ours, theirs, scores = inputs.runs, against.runs, against.scores
    here = data.loc[data["env"] == env]
    labels = dict(zip(here["algo"], here["their_label"], strict=True))
    fig = Figure(figsize=(12.0, 4.8))
    ax_ret, ax_cost = fig.subplots(1, 2)
    for ax, column, name in ((ax_ret, "ep_ret", "return"), (ax_cost, "ep_cost", "cost")):
        curves = analysis.against_curves(ours, theirs, scores, env, column, **kw)
        _draw(ax, curves, dict(inputs.colors), labels)
        ax.set_ylabel(f"episode {name}")
    for limit in sorted(set(here["cost_limit"].dropna())):
        ax_cost.axhline(limit, color="black", linestyle=":", linewidth=1.0, label="cost limit")
    ax_ret.set_title(f"{env}: IQM ± {c.confidence:.0%} CI")
    handles, names = ax_cost.get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=4, fontsize="small")
    rows = -(-len(names) // 4)
    fig.tight_layout(rect=(0.0, 0.06 * rows + 0.02, 1.0, 1.0))
    return Plot(
        f"against_{env_slug(env)}",
        fig,
        f"{env}: training return and cost vs env steps up to the matched step, ours solid, "
        f"theirs dashed ({against.root.name}); IQM over the compared runs with pointwise "
        f"{c.confidence:.0%} bootstrap bands ({c.curve_reps:,} reps); cost limit dotted.",
    )


def _not_compared(inputs: ReportInputs, data: pd.DataFrame) -> str:
    """``kfcpo on HalfCheetahVelocity, HopperVelocity; ...``: our cells left out of ``data``."""
    compared = set(zip(data["algo"], data["env"], strict=True))
    ours = set(zip(inputs.used["algo"], inputs.used["env"], strict=True))
    short = short_env_ids(list(inputs.envs))
    by_algo: dict[str, list[str]] = {}
    for algo, env in sorted(ours - compared):
        by_algo.setdefault(str(algo), []).append(short[str(env)])
    return "; ".join(f"{algo} on {', '.join(envs)}" for algo, envs in by_algo.items())


def _score_text(window: int) -> str:
    if window == 1:
        return (
            "A run's score is its training EpRet / EpCost at its last logged epoch at or before "
            "that step (not interpolated; the table names the steps used where they differ)."
        )
    return (
        f"A run's score is the mean of its training EpRet / EpCost over its **last {window} "
        "logged epochs** at or before that step (`--final last-k`; the table names the last "
        "epoch's steps where they differ)."
    )


def _text(inputs: ReportInputs, against: Against) -> Paragraph:
    c = inputs.config
    mapped = ", ".join(f"`{a}` → `{b}`" for a, b in against.mapping)
    when = (
        f"at **{c.at_steps:,.0f} env steps** (`--at-steps`)"
        if c.at_steps is not None
        else "at the **same env-step count S**: the largest step count that every compared "
        "run of both sides reached"
    )
    return Paragraph(
        f"Each algorithm and env with finished runs both here and in `{against.root}`"
        + (f" (their labels mapped: {mapped})" if mapped else "")
        + f", compared {when}. "
        + _score_text(against_window(inputs))
        + f" IQM over runs with {c.confidence:.0%} percentile "
        f"bootstrap CIs ({c.table_reps:,} reps) on each side; P(return higher) is the "
        "probability that a run here has the higher return than a run there, P(cost lower) "
        "the lower cost (Mann–Whitney; 0.5 = no difference) with bootstrap CIs "
        f"({c.poi_reps:,} reps). Their other runs are not used."
    )


def against_section(
    inputs: ReportInputs, against: Against, progress: Callable[[str], None] | None = None
) -> Section:
    """The matched-budget table and one figure per env; ``progress`` hears each stage."""
    say = progress or (lambda _: None)
    c = inputs.config
    title = f"Against {against.root.name}: matched env steps"
    notes = list(against.scores.attrs.get("notes", []))
    if against.n_not_done:
        notes.append(f"--against: {against.n_not_done} of their runs are not done; left out")
    say("matched-budget table")
    data = analysis.against_table(
        against.scores, c.table_reps, c.poi_reps, seed=c.seed, confidence=c.confidence
    )
    differ = data.loc[data["cost_limit"] != data["their_cost_limit"]]
    notes += [
        f"{r.algo} on {r.env}: cost limit {r.cost_limit:g} here, {r.their_cost_limit:g} there"
        for r in differ.itertuples()
    ]
    caption = (
        f"Ours against `{against.root.name}` at matched env steps: IQM return and cost with "
        f"{c.confidence:.0%} CIs on each side, runs (ours / theirs), P(ours higher return), "
        "P(ours lower cost)."
    )
    blocks: list[Block] = [_text(inputs, against), Table("against", data, _display(data), caption)]
    alone = _not_compared(inputs, data)
    if alone:
        blocks.append(Paragraph(f"Not compared (no counterpart there): {alone}."))
    for env in sorted(data["env"].unique()):
        say(f"curves against {against.root.name} on {env}")
        try:
            blocks.append(_figure(inputs, against, data, env))
        except ValueError as exc:
            paragraph, note = failed(f"curves against {against.root.name} on {env}", exc)
            blocks.append(paragraph)
            notes.append(note)
    return Section(title, tuple(blocks), tuple(dict.fromkeys(notes)))
