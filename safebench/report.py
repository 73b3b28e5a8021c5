"""``safebench report``: tables, plots and one report page from a results directory.

``build_report(results_dir)`` loads every run (``store.load_runs``), reduces it to final
scores and writes into ``--out`` (default ``<results_dir>/report``)::

    report.md  report.html  .safebench-report
    tables/  per_env, aggregate, feasibility, [gain], [poi], runs_matrix, excluded
             (each as .md, .csv and .tex) and runs.csv (every run's final scores)
    figures/ curves_<env>, aggregate_iqm, return_vs_cost, profiles
             (each as .png and .svg)

``report.md`` links the figures (``figures/*.png``); ``report.html`` is self-contained:
the PNGs are embedded as base64 data URIs, so the single file can be mailed or attached.
Both start with the protocol used (final-score mode, bootstrap repetitions, confidence,
cost limits, reference algorithm, run counts and every run that was left out and why).

Partial results: runs that are not ``done`` (running, queued, failed) and done runs with
no final score (``no-score``: no episode finished in the scored epochs, or never evaluated
under ``--final eval``) are excluded from every statistic, counted in the protocol and
listed by name with their status; the curve figures say how many runs they leave out.

Everything is written into a staging directory next to ``--out`` that replaces ``--out``
only once complete, so a reader never sees a half-written report. ``--out`` is only
replaced if it is empty or a previous report (it holds ``.safebench-report``).

Numbers come from ``safebench.analysis`` (rliable IQM and stratified bootstrap); this
module only chooses the inputs, runs the functions and formats their output.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import re
import shutil
import struct
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from safebench import __version__, analysis, plots
from safebench.errors import UserError
from safebench.store import env_slug, load_runs

__all__ = ["MARKER", "NO_SCORE", "Report", "ReportConfig", "build_report"]

MARKER = ".safebench-report"
"""File that marks a directory as a safebench report (so it may be replaced)."""

NO_SCORE = "no-score"
"""Status given to done runs whose final return or cost is undefined (NaN)."""

SUPERSEDED = "superseded"
"""Status given to a run when a newer run of the same algo label, env and seed is present."""

_METRIC_COLUMNS = ("epoch", "steps", "ep_ret", "ep_cost", "ep_len", "eval_ret", "eval_cost")
_FINAL_TEXT = {
    "last": "training-time EpRet / EpCost of the last logged epoch (C-TRPO protocol)",
    "last-k": "mean training-time EpRet / EpCost over the last {k} logged epochs",
    "eval": "evaluation return / cost of the last evaluated epoch",
}


@dataclass(frozen=True)
class ReportConfig:
    """What the report computes; every field is stated in the report's protocol section.

    Bootstrap repetitions: rliable runs one Python-level iteration per repetition, so the
    cost is repetitions × rliable calls (aggregate: algos × 3 metrics; per-env table: one
    call per distinct run count; curves: 3 per env). The defaults keep a report of 1,000
    runs × 500 epochs under a minute on two cores (``scripts/bench_report.py``): 10,000
    for both tables (the Monte-Carlo standard error of a 95 % percentile endpoint is then
    about 0.7 % of the interval width for a roughly normal bootstrap distribution; 0.3 %
    at 50,000), 500 for the descriptive pointwise curve bands and performance-profile
    bands. ``reps=50_000`` is the C-TRPO protocol and costs five times the aggregate time.
    Probability of improvement is the slowest product (a Mann-Whitney statistic per env
    per repetition) and is computed only when asked.
    """

    final: analysis.FinalMode = "last"
    k: int = 10
    reference: str | None = None
    regret_reference: str | None = None
    ours: str | None = None
    reps: int = 10_000
    table_reps: int = 10_000
    curve_reps: int = 500
    poi: bool = False
    poi_reps: int = 2_000
    confidence: float = 0.95
    seed: int = 0
    curve_points: int = 100
    dpi: int = 100
    formats: tuple[str, ...] = ("png", "svg")

    def check(self) -> None:
        """Raise ``UserError`` on values that cannot produce a report."""
        if self.final not in ("last", "last-k", "eval"):
            raise UserError(f"--final must be last, last-k or eval (got {self.final!r})")
        if self.k < 1:
            raise UserError(f"-k must be >= 1 (got {self.k})")
        for name in ("reps", "table_reps", "curve_reps", "poi_reps"):
            if getattr(self, name) < 10:
                raise UserError(f"--{name.replace('_', '-')} must be >= 10")
        if not 0.5 <= self.confidence < 1.0:
            raise UserError(f"--confidence must be in [0.5, 1) (got {self.confidence})")
        if self.curve_points < 2:
            raise UserError("curve points must be >= 2")
        if "png" not in self.formats:
            raise UserError("the report page embeds PNGs: formats must include 'png'")


@dataclass
class Report:
    """What ``build_report`` wrote and computed (the frames are those behind the tables)."""

    out: Path
    files: list[Path]
    tables: dict[str, pd.DataFrame]
    figures: dict[str, tuple[int, int]]
    notes: list[str]
    seconds: float


# --------------------------------------------------------------------------- formatting


def _num(x: Any) -> str:
    """A number with precision that suits its size; '–' for missing."""
    if x is None or (isinstance(x, float) and math.isnan(x)) or x is pd.NA:
        return "–"
    value = float(x)
    if value != 0 and abs(value) < 0.01:
        return f"{value:.2e}"
    if abs(value) >= 100:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _ci(point: Any, low: Any, high: Any) -> str:
    return f"{_num(point)} [{_num(low)}, {_num(high)}]"


def _pct_ci(rate: Any, low: Any, high: Any) -> str:
    if rate is None or (isinstance(rate, float) and math.isnan(rate)):
        return "–"
    return f"{100 * rate:.0f}% [{100 * low:.0f}, {100 * high:.0f}]"


_INLINE = re.compile(r"(\*\*[^*]+\*\*|`[^`]+`)")


def _inline_html(text: str) -> str:
    """Markdown's **bold** and `code` spans as HTML; everything else escaped."""
    parts = []
    for piece in _INLINE.split(text):
        if piece.startswith("**") and piece.endswith("**") and len(piece) > 4:
            parts.append(f"<strong>{html.escape(piece[2:-2])}</strong>")
        elif piece.startswith("`") and piece.endswith("`") and len(piece) > 2:
            parts.append(f"<code>{html.escape(piece[1:-1])}</code>")
        else:
            parts.append(html.escape(piece))
    return "".join(parts)


_LATEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "–": "--",
    "−": "$-$",
    "≤": r"$\le$",
    "±": r"$\pm$",
    "✓": r"\checkmark",
}


def _inline_latex(text: str) -> str:
    def escape(s: str) -> str:
        return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in s)

    parts = []
    for piece in _INLINE.split(text):
        if piece.startswith("**") and piece.endswith("**") and len(piece) > 4:
            parts.append(rf"\textbf{{{escape(piece[2:-2])}}}")
        elif piece.startswith("`") and piece.endswith("`") and len(piece) > 2:
            parts.append(rf"\texttt{{{escape(piece[1:-1])}}}")
        else:
            parts.append(escape(piece))
    return "".join(parts)


def _md_table(display: pd.DataFrame) -> str:
    def cell(value: Any) -> str:
        return str(value).replace("|", r"\|").replace("\n", " ")

    header = "| " + " | ".join(cell(c) for c in display.columns) + " |"
    rule = "|" + "|".join("---" for _ in display.columns) + "|"
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in display.to_numpy()]
    return "\n".join([header, rule, *rows])


def _html_table(display: pd.DataFrame) -> str:
    head = "".join(f"<th>{_inline_html(str(c))}</th>" for c in display.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_inline_html(str(v))}</td>" for v in row) + "</tr>"
        for row in display.to_numpy()
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _latex_table(display: pd.DataFrame, caption: str) -> str:
    align = "l" * min(2, display.shape[1]) + "r" * max(0, display.shape[1] - 2)
    lines = [
        "% generated by safebench report; needs \\usepackage{booktabs} (and amssymb for ✓)",
        "\\begin{table}[ht]",
        "\\centering",
        f"\\caption{{{_inline_latex(caption)}}}",
        f"\\begin{{tabular}}{{{align}}}",
        "\\toprule",
        " & ".join(_inline_latex(str(c)) for c in display.columns) + r" \\",
        "\\midrule",
        *(" & ".join(_inline_latex(str(v)) for v in row) + r" \\" for row in display.to_numpy()),
        "\\bottomrule",
        "\\end{tabular}",
        "\\end{table}",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- page model


@dataclass
class _Page:
    """The report as blocks, rendered both to Markdown and to self-contained HTML."""

    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def heading(self, level: int, text: str) -> None:
        self.blocks.append((f"h{level}", text))

    def para(self, text: str) -> None:
        self.blocks.append(("p", text))

    def items(self, items: Sequence[str]) -> None:
        if items:
            self.blocks.append(("ul", list(items)))

    def table(self, display: pd.DataFrame) -> None:
        self.blocks.append(("table", display))

    def image(self, path: str, alt: str) -> None:
        self.blocks.append(("img", (path, alt)))

    def markdown(self) -> str:
        out: list[str] = []
        for kind, value in self.blocks:
            if kind.startswith("h"):
                out.append("#" * int(kind[1:]) + " " + value)
            elif kind == "p":
                out.append(value)
            elif kind == "ul":
                out.append("\n".join(f"- {item}" for item in value))
            elif kind == "table":
                out.append(_md_table(value))
            elif kind == "img":
                out.append(f"![{value[1]}]({value[0]})")
        return "\n\n".join(out) + "\n"

    def html(self, root: Path, title: str) -> str:
        body: list[str] = []
        for kind, value in self.blocks:
            if kind.startswith("h"):
                body.append(f"<{kind}>{_inline_html(value)}</{kind}>")
            elif kind == "p":
                body.append(f"<p>{_inline_html(value)}</p>")
            elif kind == "ul":
                body.append(
                    "<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in value) + "</ul>"
                )
            elif kind == "table":
                body.append(_html_table(value))
            elif kind == "img":
                data = base64.b64encode((root / value[0]).read_bytes()).decode("ascii")
                body.append(
                    f'<figure><img src="data:image/png;base64,{data}" '
                    f'alt="{html.escape(value[1])}"><figcaption>{html.escape(value[1])}'
                    "</figcaption></figure>"
                )
        style = (
            "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;"
            "padding:0 1em;color:#222}table{border-collapse:collapse;margin:1em 0;"
            "font-size:0.9em}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}"
            "th{background:#f3f3f3}td:first-child,td:nth-child(2){text-align:left}"
            "img{max-width:100%}figure{margin:1em 0}figcaption{color:#555;font-size:0.85em}"
            "code{background:#f3f3f3;padding:0 3px}"
        )
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title><style>{style}</style></head><body>\n"
            + "\n".join(body)
            + "\n</body></html>\n"
        )


# --------------------------------------------------------------------------- inputs


def _load(results_dir: Path) -> pd.DataFrame:
    if not results_dir.is_dir():
        raise UserError(f"report: {results_dir} is not a directory")
    df = load_runs(results_dir)
    if df.empty:
        raise UserError(
            f"report: no runs under {results_dir} (no run directory with a spec.json); "
            "train some with 'safebench run' or bring some with 'safebench import'"
        )
    for column in _METRIC_COLUMNS:
        if column not in df.columns:
            # a store whose runs have not logged yet: no metric columns at all
            df[column] = math.nan
    return _mark_superseded(df)


def _mark_superseded(df: pd.DataFrame) -> pd.DataFrame:
    """Only the newest run (by its ``spec.json`` time) of each (algo, env, seed) counts.

    A results folder keeps the runs of earlier versions of an experiment (another budget or
    config, a safebench upgrade that changed a default): their run ids differ, their labels
    do not. Counting both would mix two protocols in one cell, so the older ones are listed
    as excluded with status ``superseded`` — nothing is deleted.
    """
    runs = df.drop_duplicates("run_id")[["run_id", "algo", "env", "seed", "run_dir"]].copy()
    runs["created"] = [
        (Path(d) / "spec.json").stat().st_mtime_ns if (Path(d) / "spec.json").exists() else 0
        for d in runs["run_dir"]
    ]
    runs = runs.sort_values(["created", "run_id"])
    older = runs.duplicated(["algo", "env", "seed"], keep="last")
    stale = set(runs.loc[older, "run_id"])
    if not stale:
        return df
    out = df.copy()
    out.loc[out["run_id"].isin(stale), "status"] = SUPERSEDED
    return out


def _sources(df: pd.DataFrame) -> dict[str, int]:
    """Runs per origin: ``safebench`` or the ``source.kind`` recorded by the importer."""
    counts: dict[str, int] = {}
    for run_dir in df["run_dir"].drop_duplicates():
        kind = "safebench"
        try:
            spec = json.loads((Path(run_dir) / "spec.json").read_text())
            if isinstance(spec.get("source"), dict):
                kind = str(spec["source"].get("kind", "imported"))
        except (OSError, json.JSONDecodeError):
            kind = "unreadable spec.json"
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def _mark_no_score(scores: pd.DataFrame) -> pd.DataFrame:
    missing = (scores["status"] == analysis.DONE) & (scores["ret"].isna() | scores["cost"].isna())
    out = scores.copy()
    out.loc[missing, "status"] = NO_SCORE
    return out


def _check_algo(name: str | None, option: str, algos: Sequence[str]) -> None:
    if name is not None and name not in algos:
        raise UserError(f"report: {option} {name!r} is not an algorithm label here; have {algos}")


# --------------------------------------------------------------------------- the report


class _Builder:
    """Computes every table and figure for one report; ``run`` returns the page."""

    def __init__(
        self,
        df: pd.DataFrame,
        config: ReportConfig,
        stage: Path,
        title: str,
        say: Callable[[str], None],
    ) -> None:
        self.config = config
        self.say = say
        self.stage = stage
        self.title = title
        self.notes: list[str] = []
        self.tables: dict[str, pd.DataFrame] = {}
        self.figures: dict[str, tuple[int, int]] = {}
        self.files: list[Path] = []
        self.page = _Page()
        self.sources = _sources(df)
        raw_scores = analysis.final_scores(df, config.final, config.k)
        self.scores = _mark_no_score(raw_scores)
        status = dict(zip(self.scores["run_id"], self.scores["status"]))
        # curves must leave out exactly the runs the tables leave out
        self.df = df.assign(status=df["run_id"].map(status))
        self.used = self.scores.loc[self.scores["status"] == analysis.DONE]
        self.excluded = self.scores.loc[self.scores["status"] != analysis.DONE]
        self.algos = sorted(self.scores["algo"].unique())
        self.envs = sorted(self.scores["env"].unique())
        self.colors = plots.algo_colors(self.algos)
        self.metric_frames: dict[str, pd.DataFrame] = {}
        self.aggregates: dict[str, pd.DataFrame] = {}
        (stage / "tables").mkdir(parents=True)
        (stage / "figures").mkdir(parents=True)

    # ------------------------------------------------------------------ output helpers

    def _write_text(self, relative: str, text: str) -> None:
        path = self.stage / relative
        path.write_text(text, encoding="utf-8")
        self.files.append(path)

    def _emit_table(
        self, name: str, data: pd.DataFrame, display: pd.DataFrame, caption: str
    ) -> None:
        """CSV with full precision, Markdown and LaTeX of the formatted view, and the page."""
        self.tables[name] = data
        self._write_text(f"tables/{name}.csv", data.to_csv(index=False))
        self._write_text(f"tables/{name}.md", f"{caption}\n\n{_md_table(display)}\n")
        self._write_text(f"tables/{name}.tex", _latex_table(display, caption))
        self.page.para(caption)
        self.page.table(display)

    def _emit_figure(
        self,
        name: str,
        fig: Figure,
        caption: str,
        rect: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0),
    ) -> None:
        fig.tight_layout(rect=rect)
        for fmt in self.config.formats:
            path = self.stage / "figures" / f"{name}.{fmt}"
            # no creation date in SVG metadata, so equal reports give equal files
            metadata = {"Date": None} if fmt == "svg" else None
            fig.savefig(path, format=fmt, dpi=self.config.dpi, metadata=metadata)
            self.files.append(path)
        # the PNG's own header (IHDR: width, height), exactly what a viewer will show
        header = (self.stage / "figures" / f"{name}.png").read_bytes()[16:24]
        width, height = struct.unpack(">II", header)
        self.figures[name] = (int(width), int(height))
        self.page.image(f"figures/{name}.png", caption)

    def _section_failed(self, what: str, exc: Exception) -> None:
        message = f"{what} not computed: {exc}"
        self.notes.append(message)
        self.page.para(f"**{what} not computed**: {exc}")

    # ------------------------------------------------------------------ sections

    def protocol(self) -> None:
        c = self.config
        page = self.page
        page.heading(1, f"safebench report: {self.title}")
        others = [f.upper() for f in c.formats if f != "png"]
        page.para(
            f"Generated {time.strftime('%Y-%m-%d %H:%M:%S %Z')} by safebench {__version__}. "
            "Figures: `report.html` embeds them (base64 PNG, self-contained); `report.md` "
            "links `figures/*.png`"
            + (f" ({', '.join(others)} versions next to them)" if others else "")
            + ". Tables: `tables/*.csv` (full precision), `.md`, `.tex`; `tables/runs.csv` "
            "holds every run's final scores and status."
        )
        page.heading(2, "Protocol")
        limits = self.scores.groupby("env")["cost_limit"].unique()
        limit_values = sorted({float(v) for values in limits for v in values})
        if len(limit_values) == 1:
            limit_text = f"cost limit d = {_num(limit_values[0])} on every env"
        else:
            per_env = "; ".join(
                f"{env}: {', '.join(_num(v) for v in values)}" for env, values in limits.items()
            )
            limit_text = f"cost limits d per env: {per_env}"
        final = _FINAL_TEXT[c.final].format(k=c.k)
        n_done = int((self.scores["status"] == analysis.DONE).sum())
        by_status = self.excluded["status"].value_counts()
        excluded_text = (
            ", ".join(f"{n} {s}" for s, n in sorted(by_status.items()))
            if len(by_status)
            else "none"
        )
        sources = ", ".join(f"{n} {k}" for k, n in sorted(self.sources.items()))
        reference = (
            f"`{c.reference}` (return ÷ its mean final return per env; cost as Ĵc/d − 1; "
            f"regret ÷ IQM regret of `{c.regret_reference or c.reference}`)"
            if c.reference
            else "none"
        )
        page.items(
            [
                f"**Final score** (`--final {c.final}`"
                + (f", k = {c.k}" if c.final == "last-k" else "")
                + f"): {final}. Cost regret = Σ over logged epochs of max(0, EpCost − d).",
                f"**Cost limit**: {limit_text}. Feasible = final cost ≤ d; admissible "
                "(per-env table) = IQM final cost < d.",
                f"**Reference algorithm**: {reference}.",
                f"**Statistics**: IQM = 25 % trimmed mean over runs; {c.confidence:.0%} "
                "percentile stratified-bootstrap intervals from rliable (runs resampled "
                "within each env); rates with Wilson score intervals.",
                f"**Bootstrap repetitions**: aggregate table {c.reps:,}; per-env table "
                f"{c.table_reps:,}; curve bands (pointwise) and performance profiles "
                f"{c.curve_reps:,}; probability of improvement "
                + (f"{c.poi_reps:,}" if c.poi else "not computed (`--poi`)")
                + f"; bootstrap seed {c.seed}.",
                f"**Runs**: {len(self.scores)} found ({sources}); {n_done} done and used; "
                f"excluded: {excluded_text}. Non-done runs (running, queued, failed) and "
                f"done runs without a final score (`{NO_SCORE}`) enter no statistic.",
            ]
        )
        self._write_text("tables/runs.csv", self.scores.to_csv(index=False))
        self.tables["runs"] = self.scores
        self._runs_matrix()
        if not self.excluded.empty:
            self._excluded_table()

    def _runs_matrix(self) -> None:
        data = self.scores.groupby(["algo", "env", "status"]).size().rename("n_runs").reset_index()
        cells: dict[tuple[str, str], dict[str, int]] = {}
        for r in data.itertuples():
            cells.setdefault((str(r.algo), str(r.env)), {})[str(r.status)] = int(r.n_runs)
        rows = []
        for algo in self.algos:
            row: dict[str, Any] = {"algo": algo}
            for env in self.envs:
                cell = cells.get((algo, env), {})
                others = [f"+{n} {s}" for s, n in sorted(cell.items()) if s != analysis.DONE]
                row[env] = str(cell.get(analysis.DONE, 0)) + (
                    f" ({', '.join(others)})" if others else ""
                )
            rows.append(row)
        display = pd.DataFrame(rows, columns=["algo", *self.envs])
        self._emit_table(
            "runs_matrix",
            data,
            display,
            "Runs per algorithm × env: done runs used, (+ excluded runs by status).",
        )

    def _excluded_table(self) -> None:
        ex = self.excluded.sort_values(["algo", "env", "seed", "run_id"])
        data = ex[["algo", "env", "seed", "status", "run_id", "epochs", "steps", "ret", "cost"]]
        display = pd.DataFrame(
            {
                "algo": ex["algo"],
                "env": ex["env"],
                "seed": ex["seed"].astype(int),
                "status": ex["status"],
                "epochs logged": ex["epochs"].astype(int),
                "env steps": [_num(s) for s in ex["steps"]],
                "run": [f"`{r[:8]}`" for r in ex["run_id"]],
            }
        )
        self._emit_table(
            "excluded",
            data.reset_index(drop=True),
            display,
            "Runs left out of every statistic (partial, failed, without a final score, or "
            f"`{SUPERSEDED}`: a newer run of the same algo, env and seed is in the folder).",
        )

    def _aggregate_inputs(self) -> tuple[pd.DataFrame, str, list[str]] | None:
        """Normalised scores of the runs that can enter a cross-env aggregate, or None."""
        c = self.config
        notes: list[str] = []
        used = self.used
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
            self.notes.extend(notes)
            return None
        norm = analysis.normalize_scores(
            frame,
            reference=c.reference,
            regret_reference=c.regret_reference,
            method=method,
        )
        notes.extend(norm.attrs.get("notes", []))
        self.notes.extend(notes)
        return norm, method, notes

    def aggregate(self) -> pd.DataFrame | None:
        c = self.config
        self.page.heading(2, "Aggregate across envs")
        inputs = self._aggregate_inputs()
        if inputs is None:
            self.page.para("No algorithm has used runs on every env: no aggregate.")
            return None
        norm, method, notes = inputs
        ret_stats: list[analysis.Statistic] = ["iqm", "mean", "median"]
        if method != "none":
            ret_stats.append("optimality_gap")  # threshold 1 = reference mean / best run
        only_iqm: list[analysis.Statistic] = ["iqm"]
        names = {"ret": "return", "cost": "cost", "regret": "regret"}
        data = pd.DataFrame({"algo": sorted(norm["algo"].unique())})
        data.insert(1, "normalization", method)
        for metric, stats in (("ret", ret_stats), ("cost", only_iqm), ("regret", only_iqm)):
            # A normalisation that is undefined on an env (e.g. reference mean return <= 0)
            # gives NaN there; that env leaves this metric's aggregate, not the others.
            bad = sorted(norm.loc[norm[metric].isna(), "env"].unique())
            frame = norm.loc[~norm["env"].isin(bad)]
            if bad:
                notes.append(
                    f"{names[metric]} aggregate leaves out env(s) {bad}: the normalised "
                    f"{names[metric]} is undefined there"
                )
            if frame.empty:
                notes.append(f"no {names[metric]} aggregate: undefined on every env")
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
            self.metric_frames[metric] = frame
            self.aggregates[metric] = table
            renamed = table.drop(columns=["n_partial"]).rename(
                columns={col: f"{metric}_{col}" for col in table.columns if col != "algo"}
            )
            data = data.merge(renamed, on="algo", how="left")
        self.notes.extend(n for n in notes if n not in self.notes)
        scale = {
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

        def cells(metric: str, stat: str) -> list[str]:
            columns = [f"{metric}_{stat}", f"{metric}_{stat}_low", f"{metric}_{stat}_high"]
            if columns[0] not in data.columns:
                return ["–"] * len(data)
            return [_ci(*r) for r in data[columns].to_numpy()]

        def counts(column: str) -> list[str]:
            present = [f"{m}_{column}" for m in names if f"{m}_{column}" in data.columns]
            out = []
            for row in data[present].to_numpy():
                values = {int(v) for v in row if not pd.isna(v)}
                out.append(
                    str(values.pop())
                    if len(values) == 1
                    else "/".join("–" if pd.isna(v) else str(int(v)) for v in row)
                )
            return out

        display = pd.DataFrame(
            {
                "algo": data["algo"],
                "runs/env": counts("n_runs"),
                "envs": counts("n_envs"),
                "IQM return": cells("ret", "iqm"),
                "mean return": cells("ret", "mean"),
                "median return": cells("ret", "median"),
                "IQM cost": cells("cost", "iqm"),
                "IQM regret": cells("regret", "iqm"),
            }
        )
        if "optimality_gap" in ret_stats:
            display.insert(6, "optimality gap", cells("ret", "optimality_gap"))
        differs = any("/" in v for v in [*display["runs/env"], *display["envs"]])
        self._emit_table(
            "aggregate",
            data,
            display,
            f"Aggregate across envs, {c.confidence:.0%} CIs ({c.reps:,} reps): {scale[0]}; "
            f"{scale[1]}; {scale[2]}."
            + (" Counts shown as return/cost/regret where they differ." if differs else ""),
        )
        self.page.items(notes)
        return data

    def per_env(self) -> None:
        c = self.config
        self.page.heading(2, "Per env")
        table = analysis.per_env_table(
            self.scores, reps=c.table_reps, seed=c.seed, confidence=c.confidence
        )
        table = table.sort_values(["env", "algo"], ignore_index=True)
        cost_cells = []
        for r in table.itertuples():
            text = _ci(r.cost, r.cost_low, r.cost_high)
            cost_cells.append(f"**{text}**" if r.admissible else text)
        display = pd.DataFrame(
            {
                "env": table["env"],
                "algo": table["algo"],
                "runs": [
                    f"{n}" + (f" (+{x} excl.)" if x else "")
                    for n, x in zip(table["n_runs"], table["n_excluded"])
                ],
                "IQM return": [_ci(*r) for r in table[["ret", "ret_low", "ret_high"]].to_numpy()],
                "IQM cost": cost_cells,
                "IQM regret": [
                    _ci(*r) for r in table[["regret", "regret_low", "regret_high"]].to_numpy()
                ],
                "admissible": ["✓" if a else "" for a in table["admissible"]],
            }
        )
        self._emit_table(
            "per_env",
            table,
            display,
            f"Per env: IQM over runs of raw final return, final cost and cost regret, "
            f"{c.confidence:.0%} CIs ({c.table_reps:,} reps). **Bold** cost / ✓ = "
            "admissible (IQM cost < d).",
        )

    def feasibility(self) -> None:
        c = self.config
        self.page.heading(2, "Feasibility and constraint violations")
        table = analysis.feasibility_table(self.scores, confidence=c.confidence)
        table = table.sort_values(["env", "algo"], ignore_index=True)
        display = pd.DataFrame(
            {
                "env": table["env"],
                "algo": table["algo"],
                "runs": table["n_runs"],
                "feasible runs": [
                    f"{int(k)}/{int(n)} = " + _pct_ci(rate, lo, hi)
                    for k, n, rate, lo, hi in table[
                        [
                            "feasible_k",
                            "feasible_n",
                            "feasible_rate",
                            "feasible_low",
                            "feasible_high",
                        ]
                    ].to_numpy()
                ],
                "violating epochs": [
                    f"{int(k)}/{int(n)} = " + _pct_ci(rate, lo, hi)
                    for k, n, rate, lo, hi in table[
                        [
                            "violation_k",
                            "violation_n",
                            "violation_rate",
                            "violation_low",
                            "violation_high",
                        ]
                    ].to_numpy()
                ],
                "mean per-run violation rate": [
                    f"{100 * v:.0f}%" if not math.isnan(v) else "–"
                    for v in table["mean_run_violation_rate"]
                ],
            }
        )
        self._emit_table(
            "feasibility",
            table,
            display,
            f"Feasible runs (final cost ≤ d) and epochs with EpCost > d, pooled over runs, "
            f"with {c.confidence:.0%} Wilson intervals (epochs of one run are correlated: "
            "read the epoch interval as descriptive).",
        )

    def gain(self) -> None:
        c = self.config
        assert c.ours is not None
        self.page.heading(2, f"Return of {c.ours} over the best cost-respecting baseline")
        baselines = [a for a in self.algos if a != c.ours]
        try:
            table = analysis.gain_over_best_feasible_baseline(self.scores, c.ours, baselines)
        except ValueError as exc:
            self._section_failed("gain table", exc)
            return
        display = pd.DataFrame(
            {
                "env": table["env"],
                f"{c.ours} mean return": [_num(v) for v in table["algo_ret"]],
                f"{c.ours} mean cost": [_num(v) for v in table["algo_cost"]],
                f"{c.ours} feasible": [
                    "–" if pd.isna(v) else ("yes" if v else "no") for v in table["algo_feasible"]
                ],
                "best feasible baseline": [b or "–" for b in table["best_baseline"]],
                "its mean return": [_num(v) for v in table["best_baseline_ret"]],
                "gain %": ["–" if math.isnan(v) else f"{v:+.1f}%" for v in table["gain_pct"]],
                "why no gain": table["reason"],
            }
        )
        self._emit_table(
            "gain",
            table,
            display,
            f"KFCPO-style headline: 100·(mean return of {c.ours} − R*)/|R*|, R* = best mean "
            "return among baselines whose mean cost ≤ d (raw means over used runs; no CI).",
        )

    def poi(self) -> None:
        c = self.config
        self.page.heading(2, "Probability of improvement")
        frames = []
        for metric in ("ret", "cost"):
            if metric not in self.metric_frames:
                continue
            scores = self.metric_frames[metric]
            algos = sorted(scores["algo"].unique())
            if c.ours and c.ours in algos:
                pairs = [(c.ours, b) for b in algos if b != c.ours]
            else:
                pairs = [(a, b) for i, a in enumerate(algos) for b in algos[i + 1 :]]
            if not pairs:
                continue
            table = analysis.probability_of_improvement(
                scores,
                pairs,
                reps=c.poi_reps,
                seed=c.seed,
                metric=metric,
                confidence=c.confidence,
                ragged="truncate",
            )
            frames.append(table)
        if not frames:
            self.page.para("Fewer than two algorithms in the aggregate: nothing to compare.")
            return
        data = pd.concat(frames, ignore_index=True)
        display = pd.DataFrame(
            {
                "X": data["x"],
                "Y": data["y"],
                "metric": [
                    "return (higher better)" if m == "ret" else "cost (lower better)"
                    for m in data["metric"]
                ],
                "P(X better than Y)": [_ci(*r) for r in data[["prob", "low", "high"]].to_numpy()],
                "envs": data["n_envs"],
            }
        )
        self._emit_table(
            "poi",
            data,
            display,
            f"Probability that a run of X beats a run of Y on the same env, averaged over "
            f"envs ({c.confidence:.0%} CIs, {c.poi_reps:,} reps).",
        )

    def throughput(self) -> pd.DataFrame | None:
        c = self.config
        if "wall_time" not in self.df.columns or self.df["wall_time"].isna().all():
            return None  # imported runs without timings
        self.page.heading(2, "Throughput")
        try:
            table = analysis.throughput_table(
                self.df, reps=c.table_reps, seed=c.seed, confidence=c.confidence
            )
        except ValueError as exc:
            self._section_failed("throughput table", exc)
            return None
        table = table.sort_values(["env", "algo"], ignore_index=True)

        def share(v: float) -> str:
            return "–" if math.isnan(v) else f"{100 * v:.0f}%"

        display = pd.DataFrame(
            {
                "env": table["env"],
                "algo": table["algo"],
                "runs": table["n_runs"],
                "env steps/s": [
                    _ci(*r)
                    for r in table[
                        ["steps_per_s", "steps_per_s_low", "steps_per_s_high"]
                    ].to_numpy()
                ],
                "rollout": [share(v) for v in table["rollout_share"]],
                "update": [share(v) for v in table["update_share"]],
                "eval": [share(v) for v in table["eval_share"]],
            }
        )
        self._emit_table(
            "throughput",
            table.drop(columns=["rates"]),
            display,
            f"Training throughput: env steps ÷ training wall time of each finished run (env "
            f"and agent construction excluded), mean over runs with {c.confidence:.0%} "
            "bootstrap CIs, and the share of wall time in collection / update / evaluation. "
            "Only comparable between runs launched together on the same machine.",
        )
        return table

    def crosscheck(self, throughput: pd.DataFrame | None) -> None:
        """Each safebench algorithm next to its OmniSafe reference, env by env."""
        c = self.config
        names = self.df.groupby("algo")["algo_name"].first().astype(str).to_dict()
        pairs = analysis.reference_pairs(names)
        per_env = self.tables.get("per_env")
        if not pairs or per_env is None:
            return
        self.page.heading(2, "Cross-check against the reference implementation")
        cells = per_env.set_index(["algo", "env"])
        rates = throughput.set_index(["algo", "env"])["rates"] if throughput is not None else None
        rows: list[dict[str, Any]] = []
        for env in self.envs:
            for ours, ref in pairs:
                if (ours, env) not in cells.index or (ref, env) not in cells.index:
                    continue
                a, b = cells.loc[(ours, env)], cells.loc[(ref, env)]
                row: dict[str, Any] = {"env": env, "algo": ours, "reference": ref}
                for metric in ("ret", "cost"):
                    for side, cell in (("", a), ("ref_", b)):
                        for suffix in ("", "_low", "_high"):
                            row[f"{side}{metric}{suffix}"] = float(cell[f"{metric}{suffix}"])
                # per env, so that a pair is judged on each task on its own
                here = self.used.loc[self.used["env"] == env]
                for metric in ("ret", "cost"):
                    poi = analysis.probability_of_improvement(
                        here,
                        [(ours, ref)],
                        reps=c.poi_reps,
                        seed=c.seed,
                        metric=metric,
                        confidence=c.confidence,
                    ).iloc[0]
                    row.update(
                        {
                            f"poi_{metric}": float(poi["prob"]),
                            f"poi_{metric}_low": float(poi["low"]),
                            f"poi_{metric}_high": float(poi["high"]),
                        }
                    )
                row.update(ratio=math.nan, ratio_low=math.nan, ratio_high=math.nan)
                if rates is not None and (ours, env) in rates.index and (ref, env) in rates.index:
                    ratio = analysis.ratio_of_means(
                        rates.loc[(ours, env)],
                        rates.loc[(ref, env)],
                        reps=c.table_reps,
                        seed=c.seed,
                        confidence=c.confidence,
                    )
                    row.update(ratio=ratio[0], ratio_low=ratio[1], ratio_high=ratio[2])
                rows.append(row)
        if not rows:
            self.page.para("No env has runs of both an algorithm and its reference.")
            return
        data = pd.DataFrame(rows)

        def ci(prefix: str) -> list[str]:
            cols = [prefix, f"{prefix}_low", f"{prefix}_high"]
            return [_ci(*r) for r in data[cols].to_numpy()]

        display = pd.DataFrame(
            {
                "env": data["env"],
                "safebench": data["algo"],
                "reference": data["reference"],
                "IQM return": ci("ret"),
                "reference IQM return": ci("ref_ret"),
                "IQM cost": ci("cost"),
                "reference IQM cost": ci("ref_cost"),
                "P(return higher)": ci("poi_ret"),
                "P(cost lower)": ci("poi_cost"),
                "throughput ratio": [
                    "–" if math.isnan(r[0]) else f"{r[0]:.2f}× [{r[1]:.2f}, {r[2]:.2f}]"
                    for r in data[["ratio", "ratio_low", "ratio_high"]].to_numpy()
                ],
            }
        )
        self._emit_table(
            "crosscheck",
            data,
            display,
            "Each safebench algorithm next to the reference implementation of the same "
            f"method (`{analysis.REFERENCE_PREFIX}NAME`), same envs, seeds and budget: IQM "
            f"final return and cost with {c.confidence:.0%} CIs (as in the per-env table); "
            "the probability that a safebench run has the higher return / the lower cost "
            f"than a reference run on that env (0.5 = no difference; {c.poi_reps:,} reps); "
            "and the throughput ratio safebench ÷ reference (mean env steps/s, bootstrap CI "
            "over runs of both).",
        )

    def figures_section(self, aggregate: pd.DataFrame | None) -> None:
        c = self.config
        self.page.heading(2, "Figures")
        curve_kw: dict[str, Any] = {
            "reps": c.curve_reps,
            "n_points": c.curve_points,
            "seed": c.seed,
            "confidence": c.confidence,
            "colors": self.colors,
        }
        for env in self.envs:
            self.say(f"curves on {env}")
            frame = self.df.loc[self.df["env"] == env]
            # one figure per env (return, cost, regret): a third of the layout and save time
            # of three separate figures, and the three read best side by side
            n_algos = frame["algo"].nunique()
            rows = -(-(n_algos + 1) // 6)  # legend rows below the panels, 6 entries per row
            legend_height = 0.1 + 0.28 * rows
            fig = Figure(figsize=(15.0, 4.0 + legend_height))
            ax_ret, ax_cost, ax_regret = fig.subplots(1, 3)
            try:
                plots.plot_return_curves(frame, ax_ret, **curve_kw)
                plots.plot_cost_curves(frame, ax_cost, **curve_kw)
                plots.plot_regret_curves(frame, ax_regret, **curve_kw)
            except ValueError as exc:
                self._section_failed(f"curves on {env}", exc)
                continue
            # one shared legend instead of three copies covering the curves
            handles, labels = ax_cost.get_legend_handles_labels()
            for ax in (ax_ret, ax_cost, ax_regret):
                legend = ax.get_legend()
                if legend is not None:
                    legend.remove()
            fig.legend(handles, labels, loc="lower center", ncol=6, fontsize="small")
            self._emit_figure(
                f"curves_{env_slug(env)}",
                fig,
                f"{env}: training return, cost (limit dashed) and cumulative cost regret "
                f"Σ max(0, EpCost − d) vs env steps; IQM over used runs with pointwise "
                f"{c.confidence:.0%} bootstrap bands.",
                rect=(0.0, legend_height / (4.0 + legend_height), 1.0, 1.0),
            )
        if aggregate is None or not self.aggregates:
            return
        self.say("aggregate figures and performance profiles")
        names = {"ret": "return", "cost": "cost", "regret": "regret"}
        method = str(aggregate["normalization"].iloc[0])
        fig = Figure(figsize=(4.0 * len(self.aggregates), 1.2 + 0.45 * len(aggregate)))
        axes = np.atleast_1d(fig.subplots(1, len(self.aggregates)))
        for ax, (metric, table) in zip(axes, self.aggregates.items()):
            plots.plot_interval_estimates(
                table, ax, xlabel=f"IQM {names[metric]} ({method})", colors=self.colors
            )
        self._emit_figure(
            "aggregate_iqm",
            fig,
            f"Aggregate IQM with {c.confidence:.0%} stratified-bootstrap intervals "
            f"({c.reps:,} reps; {method} normalisation).",
        )
        if "ret" in self.metric_frames and "cost" in self.metric_frames:
            envs = set(self.metric_frames["ret"]["env"]) & set(self.metric_frames["cost"]["env"])
            both = self.metric_frames["ret"].loc[self.metric_frames["ret"]["env"].isin(envs)]
            if not both.empty:
                fig = Figure(figsize=(6.5, 4.5))
                plots.plot_return_cost_scatter(both, fig.add_subplot(), colors=self.colors)
                self._emit_figure(
                    "return_vs_cost",
                    fig,
                    "Final return vs final cost, one dot per used run, large markers = algo "
                    f"means ({method} normalisation); the shaded side of the dashed line is "
                    "feasible.",
                )
        profiled = [m for m in ("ret", "cost") if m in self.metric_frames]
        fig = Figure(figsize=(5.5 * len(profiled), 4.0))
        axes = np.atleast_1d(fig.subplots(1, len(profiled)))
        for ax, metric in zip(axes, profiled):
            scores = self.metric_frames[metric]
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
                profile, ax, xlabel=f"{names[metric]} threshold τ ({method})", colors=self.colors
            )
        self._emit_figure(
            "profiles",
            fig,
            "Performance profiles: share of (run, env) scores above τ (return) and at most τ "
            f"(cost), with {c.confidence:.0%} bootstrap bands ({c.curve_reps:,} reps).",
        )

    def run(self) -> _Page:
        self.protocol()
        if self.used.empty:
            self.page.heading(2, "No results")
            self.page.para(
                "No run is done with a final score yet, so there is nothing to aggregate; "
                "the runs found are listed above with their status."
            )
            return self.page
        self.say("aggregate table")
        aggregate = self.aggregate()
        self.say("per-env table")
        self.per_env()
        self.say("feasibility and gain tables")
        self.feasibility()
        if self.config.ours:
            self.gain()
        if self.config.poi:
            self.say("probability of improvement")
            self.poi()
        self.say("throughput")
        throughput = self.throughput()
        self.crosscheck(throughput)
        self.figures_section(aggregate)
        if self.notes:
            self.page.heading(2, "Notes")
            self.page.items(list(dict.fromkeys(self.notes)))
        return self.page


# --------------------------------------------------------------------------- entry point


def _replaceable(out: Path) -> bool:
    return not out.exists() or (
        out.is_dir() and (not any(out.iterdir()) or (out / MARKER).exists())
    )


def _publish(stage: Path, out: Path) -> None:
    """Put the finished staging directory at ``out``, replacing a previous report."""
    if not out.exists():
        os.rename(stage, out)
        return
    old = out.parent / f".{out.name}.old-{os.getpid()}-{time.time_ns()}"
    os.rename(out, old)
    try:
        os.rename(stage, out)
    except BaseException:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def build_report(
    results_dir: Path | str,
    out: Path | str | None = None,
    config: ReportConfig | None = None,
    *,
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Write the report of every run under ``results_dir`` into ``out``; see module doc.

    ``progress`` (if given) is called with a short description as each stage starts.
    Raises ``UserError`` for a missing/empty results directory, an unknown ``reference`` /
    ``regret_reference`` / ``ours`` label, or an ``out`` that is neither empty nor a
    previous report.
    """
    start = time.perf_counter()
    config = config or ReportConfig()
    config.check()
    results_dir = Path(results_dir)
    out_dir = Path(out) if out is not None else results_dir / "report"
    if not _replaceable(out_dir):
        raise UserError(
            f"report: {out_dir} exists and is not a safebench report (no {MARKER}); "
            "choose another --out or empty it"
        )
    say = progress or (lambda _: None)
    say("loading runs")
    df = _load(results_dir)
    algos = sorted(df["algo"].unique())
    _check_algo(config.reference, "--reference", algos)
    _check_algo(config.regret_reference, "--regret-reference", algos)
    _check_algo(config.ours, "--ours", algos)
    if config.regret_reference and not config.reference:
        raise UserError("report: --regret-reference needs --reference")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(
        tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".staging", dir=out_dir.parent)
    )
    stage.chmod(0o755)  # mkdtemp makes it private; the published report is an ordinary folder
    try:
        say("final scores")
        builder = _Builder(df, config, stage, results_dir.resolve().name or str(results_dir), say)
        page = builder.run()
        say("writing the report page")
        (stage / "report.md").write_text(page.markdown(), encoding="utf-8")
        (stage / "report.html").write_text(
            page.html(stage, f"safebench report: {builder.title}"), encoding="utf-8"
        )
        (stage / MARKER).write_text(f"safebench {__version__}\n", encoding="utf-8")
        _publish(stage, out_dir)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    files = [out_dir / p.relative_to(stage) for p in builder.files]
    files += [out_dir / "report.md", out_dir / "report.html"]
    return Report(
        out=out_dir,
        files=files,
        tables=builder.tables,
        figures=builder.figures,
        notes=list(dict.fromkeys(builder.notes)),
        seconds=time.perf_counter() - start,
    )
