"""``safebench reproduce NAME``: a paper's experiment end to end — train, report, compare.

``NAME`` is an experiment of the ``experiments/`` folder — ``ctrpo-table`` finds
``experiments/ctrpo_table.yaml`` (``-`` and ``_`` are interchangeable, and an experiment's
``name:`` works too) — or the path of an experiment YAML. :func:`reproduce` trains the grid as
``safebench run`` does (runs already done are skipped, partial ones resume), writes the report
as ``safebench report`` does, and, where the paper's numbers are stored next to the experiment
(``experiments/published/<stem>.yaml`` + its CSV), compares them with safebench's: for every
published (algo, env, metric) the published value and interval against safebench's estimate of
the same statistic with its bootstrap confidence interval, and whether the published value lies
inside that interval. The comparison is written beside the report
(``published_comparison.md`` / ``.csv``) and printed.

The metadata file (``published/<stem>.yaml``) names the experiment, the CSV with the values,
the report settings under which the numbers are comparable (final-score mode, reference
algorithms, bootstrap repetitions), which algorithm divides each normalised aggregate in the
paper, and every source (paper, repository, commit, file, and how the numbers were read off
it). An experiment whose paper publishes no usable table says so in ``unavailable`` instead
of naming a CSV.

The CSV has one row per published number, with the columns of :data:`PUBLISHED_COLUMNS`:

* ``algo``: the safebench label where safebench has the algorithm, else the paper's name;
* ``env``: an env id; ``aggregate`` for a normalised cross-env aggregate; ``*`` for a
  statement over all envs;
* ``metric``: ``ret``, ``cost``, ``regret`` (raw final return, final cost, cost regret per env);
  ``norm_ret``, ``norm_cost``, ``norm_regret`` (aggregates, normalised as the report does:
  return ÷ a reference algorithm's mean return, cost as Ĵc/d − 1, regret ÷ a reference's IQM
  regret); ``gain_pct`` (return gain over the best cost-respecting baseline, in %);
* ``statistic``: ``iqm`` or ``mean`` (``value`` is the point estimate, ``ci_low``/``ci_high``
  its interval when the source publishes one) or ``range`` (``ci_low``..``ci_high`` is a range
  over envs, ``value`` empty);
* ``spread``: a published "±" whose meaning the source leaves undefined — shown, never used
  as an interval;
* ``source``: a key of the metadata file's ``sources``; ``note``: free text.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from safebench.errors import UserError
from safebench.experiment.launch import Backend, LaunchResult, launch
from safebench.experiment.published import (
    Published,
    ReportSettings,
    compare,
    load_published,
    published_path,
)
from safebench.report import Report, ReportConfig, build_report
from safebench.report.format import flag, md_table, num, with_ci
from safebench.results.store import iter_run_dirs
from safebench.schema.spec import Experiment, load_experiment

__all__ = [
    "ReproduceResult",
    "available_experiments",
    "comparison_markdown",
    "find_experiment",
    "reproduce",
]  # the published numbers and their comparison: safebench.experiment.published

# ---------------------------------------------------------------------------------------------
# Finding experiments
# ---------------------------------------------------------------------------------------------


def _experiment_dirs() -> list[Path]:
    """``./experiments`` first (a user's own copy wins), then the source checkout's."""
    here = Path.cwd() / "experiments"
    checkout = Path(__file__).resolve().parent.parent / "experiments"
    dirs = [here] if here.is_dir() else []
    if checkout.is_dir() and checkout.resolve() not in {d.resolve() for d in dirs}:
        dirs.append(checkout)
    return dirs


def _declared_name(path: Path) -> str | None:
    """The ``name:`` of an experiment file, without validating the rest of it."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    name = data.get("name") if isinstance(data, dict) else None
    return name if isinstance(name, str) else None


def available_experiments() -> dict[str, Path]:
    """Every experiment that ``reproduce`` can find by name: its ``name:`` -> its file."""
    found: dict[str, Path] = {}
    for folder in _experiment_dirs():
        for path in sorted(folder.glob("*.yaml")):
            name = _declared_name(path)
            if name is not None:
                found.setdefault(name, path)
    return found


def find_experiment(name: str) -> Path:
    """The experiment file for ``name``: a YAML path, a file stem or a ``name:``."""
    as_path = Path(name)
    if as_path.suffix in (".yaml", ".yml") or len(as_path.parts) > 1:
        if not as_path.is_file():
            raise UserError(f"reproduce: experiment file {name!r} does not exist")
        return as_path
    stems = dict.fromkeys([name, name.replace("-", "_"), name.replace("_", "-")])
    for folder in _experiment_dirs():
        for stem in stems:
            path = folder / f"{stem}.yaml"
            if path.is_file():
                return path
    known = available_experiments()
    if name in known:
        return known[name]
    where = ", ".join(str(d) for d in _experiment_dirs()) or "no experiments/ folder found"
    listed = ", ".join(sorted(known)) or "none"
    raise UserError(
        f"reproduce: no experiment named {name!r} (looked in {where}); known: {listed}; "
        "or give the path of an experiment YAML"
    )


# ---------------------------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------------------------


def _display(comparison: pd.DataFrame) -> pd.DataFrame:
    """The comparison as strings: one column per published / safebench estimate."""
    return pd.DataFrame(
        {
            "algo": comparison["algo"],
            "env": comparison["env"],
            "metric": [f"{m} ({s})" for m, s in zip(comparison["metric"], comparison["statistic"])],
            "published": [
                with_ci(*r)
                for r in comparison[
                    ["published", "published_low", "published_high", "spread"]
                ].to_numpy(float)
            ],
            "safebench": [
                with_ci(*r)
                for r in comparison[["safebench", "safebench_low", "safebench_high"]].to_numpy(
                    float
                )
            ],
            "runs": [str(n) if n else "–" for n in comparison["n"]],
            "difference": [num(d) for d in comparison["difference"]],
            "published in CI": [flag(v) for v in comparison["published_in_ci"]],
            "CIs overlap": [flag(v) for v in comparison["intervals_overlap"]],
            "status": [
                status + (f": {note}" if note else "")
                for status, note in zip(comparison["status"], comparison["note"])
            ],
        }
    )


def _smoke_text(experiment: Experiment, full_budget: int) -> str:
    return (
        f"SMOKE RUN: {experiment.budget:,} env steps per run instead of the protocol's "
        f"{full_budget:,}. It only shows that the pipeline runs end to end: at this budget "
        "any comparison with published numbers is far off by construction."
    )


def comparison_markdown(
    comparison: pd.DataFrame,
    published: Published,
    title: str,
    smoke_note: str = "",
    confidence: float = 0.95,
) -> str:
    """The comparison page: header, the smoke warning if any, counts, the table, sources."""
    compared = comparison.loc[comparison["status"] == "compared"]
    inside = int(compared["published_in_ci"].fillna(False).sum())
    with_value = int(compared["published_in_ci"].notna().sum())
    lines = [f"# {title}: safebench vs published numbers", ""]
    if smoke_note:
        lines += [f"**{smoke_note}**", ""]
    if published.meta.protocol:
        lines += [published.meta.protocol.strip(), ""]
    counts = comparison["status"].value_counts()
    lines += [
        f"{len(comparison)} published numbers: "
        + ", ".join(f"{n} {s}" for s, n in counts.items())
        + f". Published value inside safebench's {confidence:.0%} CI: {inside} of "
        f"{with_value} compared point estimates.",
        "",
        "safebench: the same statistic over safebench's runs, with its percentile bootstrap "
        "CI. Published: value [published CI] ± published spread (a '±' whose meaning the "
        "source does not define; never used as an interval).",
        "",
    ]
    lines.append(md_table(_display(comparison)))
    lines += ["", "## Sources", ""]
    for key, source in published.meta.sources.items():
        lines.append(f"- `{key}`: {published.citation(key)}")
        if source.extracted:
            lines.append(f"  ({source.extracted.strip()})")
    return "\n".join(lines) + "\n"


def _print_comparison(console: Console, comparison: pd.DataFrame, smoke_note: str) -> None:
    compared = comparison.loc[comparison["status"] == "compared"]
    if smoke_note:
        console.print(f"[bold yellow]{escape(smoke_note)}[/]", highlight=False)
    if compared.empty:
        console.print("no published number could be compared (see the status column)")
    else:
        display = _display(compared).drop(columns=["status"])
        table = Table(title="safebench vs published", title_justify="left")
        for column in display.columns:
            table.add_column(column, overflow="fold")
        for row in display.to_numpy():
            table.add_row(*(escape(str(v)) for v in row))
        console.print(table)
    counts = comparison["status"].value_counts()
    inside = int(compared["published_in_ci"].fillna(False).sum())
    with_value = int(compared["published_in_ci"].notna().sum())
    console.print(
        f"{len(comparison)} published numbers: "
        + ", ".join(f"{n} {s}" for s, n in counts.items())
        + f"; published value inside safebench's CI: {inside}/{with_value}",
        highlight=False,
    )


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------


@dataclass
class ReproduceResult:
    """What ``reproduce`` did: the experiment, the launch, the report and the comparison."""

    experiment_file: Path
    experiment: Experiment
    smoke: bool
    launch: LaunchResult | None
    report: Report | None = None
    published: Published | None = None
    comparison: pd.DataFrame | None = None
    files: tuple[Path, ...] = ()

    @property
    def interrupted(self) -> bool:
        return self.launch is not None and self.launch.interrupted

    @property
    def failed(self) -> int:
        """Runs that failed (in this launch, or earlier and not retried)."""
        if self.launch is None:
            return 0
        return len(self.launch.failed) + self.launch.skipped_failed


def _published_numbers(path: Path, experiment: Experiment) -> tuple[Path, Published | None]:
    """Where the paper's numbers for the experiment file ``path`` are kept, and the numbers
    if they are there (refused when they belong to another experiment than ``experiment``)."""
    pub_file = published_path(path)
    published = load_published(pub_file) if pub_file.is_file() else None
    if published is not None and published.meta.experiment != experiment.name:
        raise UserError(
            f"published numbers {pub_file} are for experiment {published.meta.experiment!r}, "
            f"but {path} is {experiment.name!r}"
        )
    return pub_file, published


def _report(experiment: Experiment, config: ReportConfig, console: Console) -> Report:
    """Stage 2: the experiment's report, as ``safebench report`` writes it; its notes and
    where it went are printed."""
    with console.status("report") as spinner:
        report = build_report(
            experiment.output_dir,
            None,
            config,
            progress=lambda stage: spinner.update(f"report: {stage}"),
        )
    for note in report.notes:
        console.print(f"[yellow]note:[/yellow] {escape(note)}", highlight=False)
    console.print(f"report: {report.out / 'report.md'} ({report.out / 'report.html'})")
    return report


def _compare(
    result: ReproduceResult,
    config: ReportConfig,
    pub_file: Path,
    full_name: str,
    smoke_note: str,
    console: Console,
) -> None:
    """Stage 3: compare the published numbers with the report's, write the comparison beside
    the report and print it (kept in ``result``); where none are stored or usable, say so.

    ``full_name`` is the experiment's own (unsmoked) name, ``pub_file`` where its published
    numbers are kept.
    """
    published, report = result.published, result.report
    assert report is not None  # stage 2 ran
    if published is None:
        console.print(
            f"no published numbers are stored for {full_name} ({pub_file} does not exist): "
            "nothing to compare"
        )
        return
    if published.values.empty:
        console.print(
            f"no published numbers to compare for {full_name}: "
            f"{published.meta.unavailable.strip()}",
            highlight=False,
        )
        return
    result.comparison = compare(published, report.tables, config)
    md = report.out / "published_comparison.md"
    csv = report.out / "published_comparison.csv"
    title = f"{result.experiment.name}" + (" (smoke run)" if result.smoke else "")
    page = comparison_markdown(result.comparison, published, title, smoke_note, config.confidence)
    md.write_text(page, encoding="utf-8")
    result.comparison.to_csv(csv, index=False)
    result.files = (md, csv)
    _print_comparison(console, result.comparison, smoke_note)
    console.print(f"comparison: {md} ({csv})")


def reproduce(
    name: str,
    *,
    smoke: bool = False,
    train: bool = True,
    backend: Backend = "ray",
    address: str | None = None,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    output: str | None = None,
    reps: int | None = None,
    console: Console | None = None,
) -> ReproduceResult:
    """Train experiment ``name`` (unless ``train=False``), report it, compare with the paper.

    ``smoke`` shrinks the grid as ``safebench run --smoke`` does (results in
    ``<output>-smoke``) and lowers the bootstrap repetitions; every printed and written
    comparison then says it is a smoke run. ``reps`` sets every bootstrap repetition count.
    ``output`` overrides the experiment's results directory. The other arguments are those
    of :func:`safebench.experiment.launch.launch`. Stops after training when interrupted (the result
    says so); failed runs are reported as excluded, and counted in ``result.failed``.
    """
    console = console or Console()
    path = find_experiment(name)
    full = load_experiment(path)
    experiment = full.smoke() if smoke else full
    if output is not None:
        experiment = experiment.model_copy(update={"output": output})
    pub_file, published = _published_numbers(path, full)
    smoke_note = _smoke_text(experiment, full.budget) if smoke else ""
    result = ReproduceResult(path, experiment, smoke, None, published=published)
    if smoke_note:
        console.print(f"[bold yellow]{escape(smoke_note)}[/]", highlight=False)
    # Stage 1: train the grid as `safebench run` does (skipped with train=False).
    if train:
        result.launch = launch(
            experiment,
            backend=backend,
            address=address,
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            source_text=path.read_text(encoding="utf-8"),
            console=console,
        )
        done, total = result.launch.done, len(result.launch.specs)
        console.print(f"{done}/{total} runs done -> {result.launch.output}", highlight=False)
        if result.interrupted:
            return result
    elif not experiment.output_dir.is_dir() or not iter_run_dirs(experiment.output_dir):
        raise UserError(
            f"reproduce: {experiment.output_dir} holds no runs; drop --no-train to train them"
        )
    settings = published.meta.report if published is not None else ReportSettings()
    config = settings.config(smoke=smoke, reps=reps)
    result.report = _report(experiment, config, console)
    _compare(result, config, pub_file, full.name, smoke_note, console)
    return result
