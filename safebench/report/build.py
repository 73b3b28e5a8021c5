"""``build_report``: load the runs once, compute every section, render, publish."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from safebench import __version__
from safebench.errors import UserError
from safebench.report import (
    against,
    aggregate,
    comparisons,
    crosscheck,
    evaluations,
    figures,
    per_env,
    protocol,
    render,
    seeds,
    verdict,
)
from safebench.report.inputs import MARKER, ReportConfig, ReportInputs, load
from safebench.report.model import Items, Section
from safebench.results.store import load_evaluations, read_experiment

__all__ = ["Report", "build_report", "sections"]


@dataclass
class Report:
    """What ``build_report`` wrote and computed (the frames are those behind the tables)."""

    out: Path
    files: list[Path]
    summary: list[str]
    tables: dict[str, pd.DataFrame]
    figures: dict[str, tuple[int, int]]
    notes: list[str]
    seconds: float


def sections(
    inputs: ReportInputs,
    progress: Callable[[str], None] | None = None,
    *,
    evals: pd.DataFrame | None = None,
    out: Path | None = None,
    other: against.Against | None = None,
) -> list[Section]:
    """Every section of the page, in page order, ending with the notes they collected.

    ``evals`` (``store.load_evaluations``) adds the evaluation table, with video links
    relative to the report folder ``out``; ``other`` (``against.load_against``) the
    matched-budget comparison with another results root.

    The shared statistics (aggregate, per-env table, throughput) are computed once here
    and passed to the sections that show them; each section is a pure function of its
    arguments, so their order is only the page's.
    """
    say = progress or (lambda _: None)
    c = inputs.config
    page = [protocol.header(inputs), protocol.protocol(inputs)]
    if inputs.used.empty:
        page.append(protocol.no_results())
        if inputs.damaged:
            page.append(Section("Notes", (Items(inputs.damaged),)))
        return page
    say("aggregate table")
    stats = aggregate.aggregate_stats(inputs)
    say("per-env table")
    per_env_table = per_env.per_env_stats(inputs)
    # the answer opens the page, right below the title: ours against each other method
    # when the experiment names a method under test, else the ranking of every method
    opening = [verdict.verdict_section(inputs, per_env_table, stats)]
    if c.ours:
        say("ours against each baseline")
        opening.insert(0, comparisons.ours_section(inputs, per_env_table))
    page[1:1] = opening
    page.append(aggregate.aggregate_section(inputs, stats))
    say("enough seeds?")
    page.append(seeds.seeds_section(inputs, per_env_table, stats))
    page.append(per_env.per_env_section(inputs, per_env_table))
    say("feasibility and gain tables")
    page.append(per_env.feasibility_section(inputs))
    if c.ours:
        page.append(comparisons.gain_section(inputs))
    if c.poi and not c.ours:  # with ours, its section holds these probabilities
        say("probability of improvement")
        page.append(comparisons.poi_section(inputs, stats))
    if evals is not None and not evals.empty:
        say("evaluation table")
        evaluated = evaluations.evaluation_section(inputs, evals, out or Path("."))
        if evaluated is not None:
            page.append(evaluated)
    say("throughput")
    throughput = crosscheck.throughput_stats(inputs)
    for optional in (
        crosscheck.throughput_section(inputs, throughput),
        crosscheck.crosscheck_section(inputs, per_env_table, throughput),
    ):
        if optional is not None:
            page.append(optional)
    if other is not None:
        page.append(against.against_section(inputs, other, say))
    page.append(figures.figures_section(inputs, stats, say))
    notes = list(dict.fromkeys([*inputs.damaged, *(n for s in page for n in s.notes)]))
    if notes:
        page.append(Section("Notes", (Items(tuple(notes)),)))
    return page


def _with_experiment_ours(
    config: ReportConfig, experiment: dict[str, object], labels: set[str]
) -> ReportConfig:
    """``config`` with the experiment file's ``ours`` when ``--ours`` named none.

    Labels of the file that have no runs here (yet) are dropped: the comparison covers
    the methods under test that have results.
    """
    if config.ours:
        return config
    named = experiment.get("ours") or []
    mine = tuple(str(o) for o in named if str(o) in labels) if isinstance(named, list) else ()
    return replace(config, ours=mine) if mine else config


def build_report(
    results_dir: Path | str,
    out: Path | str | None = None,
    config: ReportConfig | None = None,
    *,
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Write the report of every run under ``results_dir`` into ``out``; see the package doc.

    ``progress`` (if given) is called with a short description as each stage starts.
    Raises ``UserError`` for a missing/empty results directory, an unknown ``reference`` /
    ``regret_reference`` / ``ours`` label, an ``out`` that is neither empty nor a
    previous report, or a ``config.against`` root that is not one, a ``--map`` entry that
    names no algorithm or no (algorithm, env) shared with it (all before anything is written).
    """
    start = time.perf_counter()
    config = config or ReportConfig()
    config.check()
    results_dir = Path(results_dir)
    out_dir = Path(out) if out is not None else results_dir / "report"
    if not render.replaceable(out_dir):
        raise UserError(
            f"report: {out_dir} exists and is not a safebench report (no {MARKER}); "
            "choose another --out or empty it"
        )
    say = progress or (lambda _: None)
    say("loading runs")
    df = load(results_dir)
    experiment, damaged = read_experiment(results_dir)
    if damaged:
        df.attrs["damaged"] = [
            *df.attrs.get("damaged", []),
            f"{damaged}: the report is titled "
            "with the folder's name and names no method under test",
        ]
    config = _with_experiment_ours(config, experiment, set(df["algo"]))
    config.check_labels(sorted(df["algo"].unique()))
    title = str(experiment.get("name") or results_dir.resolve().name or results_dir)
    say("final scores")
    inputs = ReportInputs.make(
        df,
        config,
        title,
        time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        description=str(experiment.get("description") or ""),
    )
    other = None
    if config.against is not None:
        say("loading the --against runs")
        other = against.load_against(inputs, Path(config.against))
    evals = load_evaluations(results_dir)
    evals = evals.loc[evals["run_dir"].isin(set(df["run_dir"]))]  # not those of damaged runs
    page = sections(inputs, say, evals=evals, out=out_dir, other=other)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(
        tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".staging", dir=out_dir.parent)
    )
    stage.chmod(0o755)  # mkdtemp makes it private; the published report is an ordinary folder
    try:
        written = render.write_sections(stage, page, config.formats, config.dpi)
        say("writing the report page")
        (stage / "report.md").write_text(render.page_markdown(page), encoding="utf-8")
        html = render.page_html(page, stage, f"safebench report: {title}")
        (stage / "report.html").write_text(html, encoding="utf-8")
        (stage / MARKER).write_text(f"safebench {__version__}\n", encoding="utf-8")
        render.publish(stage, out_dir)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    files = [out_dir / p.relative_to(stage) for p in written.files]
    files += [out_dir / "report.md", out_dir / "report.html"]
    notes = [*inputs.damaged, *(n for s in page for n in s.notes)]
    summary = next((list(s.summary) for s in page if s.summary), [])
    return Report(
        out=out_dir,
        files=files,
        summary=summary,
        tables=written.tables,
        figures=written.figures,
        notes=list(dict.fromkeys(notes)),
        seconds=time.perf_counter() - start,
    )
