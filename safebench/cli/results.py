"""The results commands of the ``safebench`` command line: status, report, plan, eval,
import and reproduce. Plain functions with typer annotations; :mod:`safebench.cli.app` registers
them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import typer
from rich import box
from rich.table import Table

from safebench.errors import UserError
from safebench.util.console import ago, console, err_console, short_env_ids

__all__ = [
    "AddressOpt",
    "BackendOpt",
    "NumCpusOpt",
    "NumGpusOpt",
    "doctor_results",
    "eval_",
    "import_",
    "plan",
    "report",
    "reproduce",
    "status",
]

# Options shared by `run` and `reproduce` (both launch a grid).
BackendOpt = Annotated[
    str, typer.Option(help="ray (parallel, default) or local (in-process, one by one).")
]
AddressOpt = Annotated[
    str | None,
    typer.Option(help="Ray cluster address; default RAY_ADDRESS, else a local Ray instance."),
]
NumCpusOpt = Annotated[
    int | None, typer.Option(min=1, help="CPUs of the local Ray instance (default: all).")
]
NumGpusOpt = Annotated[
    int | None,
    typer.Option(min=0, help="GPUs the local Ray instance declares (default: detected)."),
]


def status(
    results: Annotated[str, typer.Argument(help="Results directory of an experiment.")],
    only: Annotated[
        str | None,
        typer.Option(help="Show only runs in this state (queued/running/done/failed/damaged)."),
    ] = None,
) -> None:
    """Table of an experiment's runs: state, epochs and steps done, last update, error."""
    import time
    from pathlib import Path

    from safebench.results.store import iter_run_dirs, lock_holder, run_summary

    root = Path(results)
    if not root.is_dir():
        raise UserError(f"results directory {results!r} does not exist")
    if only is not None and only not in ("queued", "running", "done", "failed", "damaged"):
        raise UserError(f"--only must be queued, running, done, failed or damaged (got {only!r})")
    runs = [run_summary(d) for d in iter_run_dirs(root)]
    if not runs:
        raise UserError(f"{results!r} holds no runs (no spec.json below it)")
    holder = lock_holder(root)
    colour = {
        "done": "green", "failed": "red", "running": "cyan", "queued": "yellow",
        "damaged": "magenta",
    }  # fmt: skip
    short = short_env_ids([r["env"] for r in runs])
    limits: dict[str, set[float]] = {}
    for r in runs:
        if isinstance(r["cost_limit"], int | float):
            limits.setdefault(r["env"], set()).add(float(r["cost_limit"]))

    def env_of(r: dict[str, Any]) -> str:  # a cost-limit sweep: each run's limit after its env
        name = short[r["env"]]
        limit = r["cost_limit"]
        swept = len(limits.get(r["env"], ())) > 1 and isinstance(limit, int | float)
        return f"{name} @ d={limit:g}" if swept else name

    # Readable at 80 columns: short env ids, one line per run (no cell wraps), no vertical
    # rules; errors and notes, which can be long, go below the table, one per run.
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0))
    for name, justify in (
        ("algorithm", "left"), ("env", "left"), ("seed", "right"), ("run", "left"),
        ("status", "left"), ("epochs", "right"), ("updated", "right"),
    ):  # fmt: skip
        table.add_column(name, justify=justify, no_wrap=True, overflow="ellipsis")  # type: ignore[arg-type]
    notes: list[str] = []
    counts: dict[str, int] = {}
    now = time.time()
    for r in runs:
        state = r["status"]
        counts[state] = counts.get(state, 0) + 1
        if only is not None and state != only:
            continue
        shown = f"[{colour.get(state, 'white')}]{state}[/]"
        note = r["error"] or r["note"] or ""
        if state == "damaged":
            note = f"{r['damage']}; 'safebench run' {r['action']} ({r['run_dir']})"
        if state == "running" and holder is None:
            note = "its launcher is gone; the next 'safebench run' resumes it"
        table.add_row(
            r["label"], env_of(r), str(r["seed"]), r["run_id"][:8], shown,
            f"{r['epochs_done']}/{r['epochs']}", ago(now - r["updated"]) if r["updated"] else "",
        )  # fmt: skip
        if note:
            who = f"{r['label']} {env_of(r)} seed {r['seed']} ({r['run_id'][:8]})"
            notes.append(f"[{colour.get(state, 'white')}]{state}[/] {who}: {note}")
    console.print(table)
    for line in notes:
        console.print(line, highlight=False)
    order = ("done", "running", "queued", "failed", "damaged")
    summary = ", ".join(f"{counts[k]} {k}" for k in order if k in counts)
    active = (
        f"a launcher is active (pid {holder.get('pid')} on {holder.get('hostname')})"
        if holder is not None
        else "no launcher active"
    )
    console.print(f"{len(runs)} runs: {summary}; {active}", highlight=False)


def doctor_results(results: str) -> None:
    """``safebench doctor RESULTS``: every run healthy / damaged (file, why) / incomplete and
    what the next ``safebench run`` does to it; reads everything, changes nothing; exit 1
    when a run is damaged."""
    from pathlib import Path

    from safebench.results.store import check_run, iter_run_dirs

    root = Path(results)
    if not root.is_dir():
        raise UserError(f"results directory {results!r} does not exist")
    run_dirs = iter_run_dirs(root)
    if not run_dirs:
        raise UserError(f"{results!r} holds no runs (no spec.json below it)")
    colour = {"healthy": "green", "damaged": "red", "incomplete": "yellow"}
    counts: dict[str, int] = {}
    for run_dir in run_dirs:
        check = check_run(run_dir)  # every byte of every file, checkpoints included
        health = check.health
        counts[health] = counts.get(health, 0) + 1
        where = run_dir.relative_to(root)
        state = "" if health == "damaged" else f" ({check.state})"
        console.print(
            f"[{colour[health]}]{health}[/]{state} {where}", highlight=False, soft_wrap=True
        )
        for damage in check.damage:
            console.print(f"  {damage}", highlight=False, soft_wrap=True)
        if health != "healthy":
            console.print(f"  'safebench run' {check.action()}", highlight=False, soft_wrap=True)
    order = ("healthy", "incomplete", "damaged")
    summary = ", ".join(f"{counts[k]} {k}" for k in order if k in counts)
    console.print(f"{len(run_dirs)} runs: {summary}; nothing was changed", highlight=False)
    if counts.get("damaged"):
        raise typer.Exit(1)


# The options `report` and `plan` share, typed once (the two must read the runs alike).
ResultsDir = Annotated[str, typer.Argument(help="Results root (what 'run' wrote into).")]
Final = Annotated[
    str, typer.Option(help="Final score: last | last-k | eval (last logged epoch, ...).")
]
LastK = Annotated[
    int,
    typer.Option(
        "-k",
        min=1,
        help="Epochs averaged by --final last-k (with --against: each run's last K epochs "
        "at or before the matched step, on both sides).",
    ),
]
Reps = Annotated[int, typer.Option(min=10, help="Bootstrap reps, aggregate table.")]
TableReps = Annotated[int, typer.Option(min=10, help="Bootstrap reps, per-env table.")]
Confidence = Annotated[float, typer.Option(help="Confidence level of all intervals.")]
Seed = Annotated[int, typer.Option(help="Bootstrap seed.")]


def _final_mode(final: str) -> Literal["last", "last-k", "eval"]:
    """``--final`` checked: one of the three modes, else the one-line error."""
    if final not in ("last", "last-k", "eval"):
        raise UserError(f"--final must be last, last-k or eval (got {final!r})")
    return final  # type: ignore[return-value]  # one of the three, checked just above


def report(
    results_dir: ResultsDir,
    reference: Annotated[
        str | None,
        typer.Option(help="Normalise by this algo label (return ÷ its mean; C-TRPO uses PPO)."),
    ] = None,
    regret_reference: Annotated[
        str | None,
        typer.Option(help="Divide regret by this algo's IQM regret (default: --reference)."),
    ] = None,
    ours: Annotated[
        list[str] | None,
        typer.Option(
            help="A method under test (repeat for several; default: the experiment file's "
            "'ours'): the report opens with it against every other algorithm."
        ),
    ] = None,
    final: Final = "last",
    k: LastK = 10,
    reps: Reps = 10_000,
    table_reps: TableReps = 10_000,
    curve_reps: Annotated[
        int, typer.Option(min=10, help="Bootstrap reps, curve and profile bands.")
    ] = 500,
    poi: Annotated[bool, typer.Option(help="Also compute probability of improvement.")] = False,
    poi_reps: Annotated[int, typer.Option(min=10, help="Bootstrap reps, --poi.")] = 2_000,
    confidence: Confidence = 0.95,
    seed: Seed = 0,
    out: Annotated[
        str | None, typer.Option(help="Output folder (default RESULTS_DIR/report).")
    ] = None,
    against: Annotated[
        str | None,
        typer.Option(help="Compare with another results root at matched env steps."),
    ] = None,
    map_: Annotated[
        list[str] | None,
        typer.Option("--map", help="THEIRS=OURS: an --against label as one of ours (repeat)."),
    ] = None,
    at_steps: Annotated[
        float | None,
        typer.Option(help="--against at this env-step count (default: the largest both reached)."),
    ] = None,
    x: Annotated[
        str,
        typer.Option(
            "--x",
            help="Learning curves over: steps (env steps) | time (training wall-clock time) | "
            "both (a figure of each per env).",
        ),
    ] = "steps",
) -> None:
    """Tables (Markdown, CSV, LaTeX), plots (PNG, SVG) and report.md/.html of a results root."""
    from safebench.report import ReportConfig, build_report
    from safebench.report.against import parse_map

    if x not in ("steps", "time", "both"):
        raise UserError(f"--x must be steps, time or both (got {x!r})")
    config = ReportConfig(
        final=_final_mode(final),
        k=k,
        reference=reference,
        regret_reference=regret_reference,
        ours=tuple(ours or ()),
        reps=reps,
        table_reps=table_reps,
        curve_reps=curve_reps,
        poi=poi,
        poi_reps=poi_reps,
        confidence=confidence,
        seed=seed,
        against=against,
        against_map=parse_map(map_ or []),
        at_steps=at_steps,
        x=x,  # type: ignore[arg-type]  # checked just above
    )
    with console.status("report") as spinner:
        result = build_report(
            results_dir, out, config, progress=lambda stage: spinner.update(f"report: {stage}")
        )
    for note in result.notes:
        console.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    for line in result.summary:  # the answer the page opens with
        console.print(line, highlight=False, markup=False)
    console.print(
        f"wrote {len(result.files)} files in {result.seconds:.1f} s: "
        f"{result.out / 'report.html'} (self-contained), {result.out / 'report.md'}",
        highlight=False,
    )


def plan(
    results_dir: ResultsDir,
    final: Final = "last",
    k: LastK = 10,
    reference: Annotated[
        str | None, typer.Option(help="Normalise the across-env rows as 'report --reference'.")
    ] = None,
    reps: Reps = 10_000,
    table_reps: TableReps = 10_000,
    confidence: Confidence = 0.95,
    seed: Seed = 0,
) -> None:
    """Enough seeds? How each IQM interval narrows with more seeds, and how many seeds per
    method would separate the methods the verdict cannot order (the report's section)."""
    from safebench.report import ReportConfig
    from safebench.report.model import Paragraph
    from safebench.report.seeds import EXTRAPOLATE_TO, headline_widths
    from safebench.report.seeds import plan as seeds_plan

    config = ReportConfig(
        final=_final_mode(final),
        k=k,
        reference=reference,
        reps=reps,
        table_reps=table_reps,
        confidence=confidence,
        seed=seed,
    )
    with console.status("plan: per-env table, aggregate, seeds"):
        section, seconds = seeds_plan(results_dir, config)
    console.print(f"[bold]{section.title}[/bold] {results_dir}", highlight=False)
    for block in section.blocks:
        if isinstance(block, Paragraph):
            console.print(block.text.replace("**", ""), highlight=False, markup=False)
    widths = section.tables.get("seeds_width")
    if widths is not None and not widths.data.empty:
        envs = [str(e) for e in dict.fromkeys(widths.data["scope"])]
        brief = headline_widths(widths.data, envs)
        short = short_env_ids(envs)
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0))
        for column in brief.columns:  # short headers: 80 columns hold long env names
            left = column in ("task", "algo")
            header = {"seeds": "N", "ret now": "return", "cost now": "cost"}.get(column, column)
            header = header.removeprefix("ret").removeprefix("cost") if "@" in header else header
            table.add_column(header, justify="left" if left else "right", no_wrap=True)
        for row in brief.to_numpy():
            table.add_row(short.get(str(row[0]), str(row[0])), *(str(v) for v in row[1:]))
        console.print(
            f"Width of the {confidence:.0%} IQM interval at the N seeds at hand and at "
            f"{' and '.join(str(n) for n in EXTRAPOLATE_TO)} seeds (~ extrapolated by 1/√n; "
            "every n in the report's section and tables/seeds_width.csv):",
            highlight=False,
        )
        console.print(table)
    if section.summary:
        console.print("Closest pairs (the verdict's overlapping neighbours):", highlight=False)
    for line in section.summary:
        console.print(f"  {line}", highlight=False, markup=False, soft_wrap=True)
    for note in section.notes:
        console.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    console.print(f"computed in {seconds:.1f} s", highlight=False)


def eval_(
    path: Annotated[
        str, typer.Argument(help="A run directory, or a results root (every done run in it).")
    ],
    episodes: Annotated[int, typer.Option(help="Episodes per run.")] = 10,
    stochastic: Annotated[
        bool, typer.Option("--stochastic", help="Sample actions (default: the mean action).")
    ] = False,
    checkpoint: Annotated[
        str, typer.Option(help="final (the run's checkpoint.pt) or the path of a checkpoint.")
    ] = "final",
    seed: Annotated[
        int | None, typer.Option(help="Evaluation seed (default: the run's seed).")
    ] = None,
    video: Annotated[
        str | None, typer.Option(help="Film episodes into MP4 files under this folder.")
    ] = None,
    camera: Annotated[
        str | None, typer.Option(help="Camera name or id for --video (default: track).")
    ] = None,
    video_episodes: Annotated[
        int, typer.Option(help="How many of the episodes --video films (the first ones).")
    ] = 1,
) -> None:
    """Evaluate trained checkpoints on fresh episodes; results in <run>/eval/, optional MP4s.

    The episodes use their own seeds (never a training or periodic-evaluation episode) and
    the runner's own evaluation path; the run's metrics.parquet is not touched.
    """
    from pathlib import Path

    from safebench.training.evaluation import EvalOptions, evaluate_path
    from safebench.training.runner import set_threads

    options = EvalOptions(
        episodes=episodes,
        deterministic=not stochastic,
        checkpoint=checkpoint,
        seed=seed,
        video_dir=video,
        camera=camera,
        video_episodes=video_episodes,
    )
    options.check()
    set_threads(1)  # a small policy network: one thread is the fastest and disturbs no one
    with console.status("eval") as spinner:
        batch = evaluate_path(
            Path(path), options, progress=lambda what: spinner.update(f"eval: {what}")
        )
    short = short_env_ids([o.env_id for o in batch.outcomes])
    table = Table("algorithm", "env", "seed", "episodes", "return", "cost", "length")
    for o in batch.outcomes:
        cost = f"{o.cost:.2f}"
        table.add_row(
            o.label, short[o.env_id], str(o.seed), str(o.episodes), f"{o.ret:.2f}",
            cost if o.cost <= o.cost_limit else f"[red]{cost}[/]", f"{o.length:.0f}",
        )  # fmt: skip
    console.print(table)
    noted: dict[str, list[str]] = {}  # the same note for many runs is said once
    for o in batch.outcomes:
        for note in o.notes:
            noted.setdefault(note, []).append(o.run_dir)
    for note, where in noted.items():
        whom = where[0] if len(where) == 1 else f"{len(where)} runs"
        console.print(f"[yellow]note:[/yellow] {whom}: {note}", highlight=False)
    for run_dir, reason in batch.skipped:
        console.print(f"[yellow]skipped[/yellow] {run_dir}: {reason}", highlight=False)
    files = [o.file for o in batch.outcomes]
    videos = [v for o in batch.outcomes for v in o.videos]
    console.print(
        f"{len(files)} evaluation(s) written"
        + (f" ({files[0]})" if len(files) == 1 else " (eval/ in each run directory)")
        + (f"; {len(videos)} video(s) in {video}" if video is not None else ""),
        highlight=False,
        soft_wrap=True,
    )


def import_(
    source: Annotated[str, typer.Argument(help="Where the runs come from: omnisafe | safepo.")],
    path: Annotated[str, typer.Argument(help="A run folder or a folder holding many.")],
    into: Annotated[str, typer.Option(help="Results root to import into.")],
    cost_limit: Annotated[
        float | None,
        typer.Option(min=0, help="Cost limit for runs whose config has none (e.g. PPO)."),
    ] = None,
    label: Annotated[
        str, typer.Option(help="Algorithm label; {algo} = the source's algorithm name.")
    ] = "{algo}",
) -> None:
    """Import OmniSafe / SafePO run folders (progress.csv + config.json) into a results root."""
    from pathlib import Path

    from safebench.results.importers import SOURCES, import_runs

    if source not in SOURCES:
        raise UserError(f"import: source must be one of {', '.join(SOURCES)} (got {source!r})")
    result = import_runs(
        source,  # type: ignore[arg-type]  # checked just above
        Path(path),
        Path(into),
        cost_limit=cost_limit,
        label=label,
    )
    if result.runs:
        table = Table("label", "env", "seed", "status", "epochs", "steps", "action")
        for r in result.runs:
            table.add_row(
                r.label, r.env_id, str(r.seed), r.status, str(r.epochs), f"{r.steps:,.0f}", r.action
            )
        console.print(table)
    for r in result.runs:
        for note in r.notes:
            console.print(f"[yellow]note:[/yellow] {r.source_folder}: {note}", highlight=False)
    for s in result.skipped:
        err_console.print(f"[yellow]skipped[/yellow] {s.folder}: {s.reason}", highlight=False)
    partial = sum(r.status != "done" for r in result.runs)
    console.print(
        f"{result.count('imported')} imported, {result.count('updated')} updated, "
        f"{result.count('unchanged')} unchanged ({partial} partial), "
        f"{len(result.skipped)} skipped, into {into}",
        highlight=False,
    )
    if not result.runs and result.skipped:
        raise typer.Exit(1)


def reproduce(
    name: Annotated[
        str,
        typer.Argument(
            help="Experiment: ctrpo-table, kfcpo-table, cvpo-table, velocity-small, quickstart, "
            "... (a file of experiments/) or a YAML path.",
            show_default=False,
        ),
    ],
    smoke: Annotated[
        bool,
        typer.Option("--smoke", help="Tiny budget (pipeline check); results in <output>-smoke."),
    ] = False,
    train: Annotated[
        bool,
        typer.Option("--train/--no-train", help="--no-train: report and compare existing runs."),
    ] = True,
    backend: BackendOpt = "ray",
    address: AddressOpt = None,
    num_cpus: NumCpusOpt = None,
    num_gpus: NumGpusOpt = None,
    output: Annotated[
        str | None, typer.Option(help="Results directory (overrides 'output:' in the YAML).")
    ] = None,
    reps: Annotated[
        int | None,
        typer.Option(min=10, help="Bootstrap reps of every interval (default: the paper's)."),
    ] = None,
) -> None:
    """Run a paper's experiment, write its report, and compare with the published numbers.

    The published numbers and their sources live in experiments/published/; the comparison
    goes to <output>/report/published_comparison.md and .csv. Exit code 0 when every run is
    done, 1 when some failed (the report leaves them out), 130 when interrupted.
    """
    from safebench.experiment.reproduce import reproduce as reproduce_experiment

    if backend not in ("ray", "local"):
        raise UserError(f"--backend must be 'ray' or 'local' (got {backend!r})")
    result = reproduce_experiment(
        name,
        smoke=smoke,
        train=train,
        backend=backend,  # type: ignore[arg-type]  # checked just above
        address=address,
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        output=output,
        reps=reps,
        console=console,
    )
    if result.interrupted:
        err_console.print("interrupted: checkpoints are kept; run the same command to resume")
        raise typer.Exit(130)
    if result.failed:
        err_console.print(
            f"{result.failed} run(s) failed and are left out of the report; see "
            f"'safebench status {result.experiment.output_dir}'"
        )
        raise typer.Exit(1)
