"""The ``safebench`` command line. Thin: parse, call library functions, print with rich.

Every user error (:class:`safebench.errors.UserError`) becomes one red line on stderr and
exit code 2, never a traceback.
"""

from __future__ import annotations

import os
import platform
import re
import sys
from collections import Counter
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from safebench import __version__
from safebench.errors import UserError

app = typer.Typer(
    name="safebench",
    help="Benchmark suite for safe (constrained) reinforcement learning.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
list_app = typer.Typer(help="List environments or algorithms.", no_args_is_help=True)
app.add_typer(list_app, name="list")

console = Console()
err_console = Console(stderr=True)


def _version_callback(value: bool) -> None:
    if value:
        console.print(f"safebench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version_callback, is_eager=True, help="Show version."),
    ] = False,
) -> None:
    """Benchmark suite for safe (constrained) reinforcement learning."""


@list_app.command("envs")
def list_envs(
    sizes: Annotated[
        bool, typer.Option("--sizes", help="Also create each env and show obs/action sizes.")
    ] = False,
) -> None:
    """Environment ids, grouped (built-in CMDPs, Safety-Gymnasium navigation and velocity)."""
    from safebench.envs import env_groups, make_env

    for group, ids in env_groups().items():
        table = Table(title=group, title_justify="left", show_header=sizes)
        table.add_column("env id")
        if sizes:
            table.add_column("obs", justify="right")
            table.add_column("action", justify="right")
            table.add_column("episode", justify="right")
        for env_id in ids:
            if sizes:
                env = make_env(env_id)
                act = env.action_space
                act_desc = str(getattr(act, "n", None) or act.shape[0])  # type: ignore[index]
                if hasattr(act, "n"):
                    act_desc = f"{act_desc} (discrete)"
                table.add_row(env_id, str(env.obs_dim), act_desc, str(env.max_episode_steps or "-"))
                env.close()
            else:
                table.add_row(env_id)
        console.print(table)


@list_app.command("algorithms")
def list_algorithms(
    config: Annotated[
        str | None,
        typer.Option("--config", help="Show this algorithm's config keys, defaults and sources."),
    ] = None,
) -> None:
    """Registered algorithms (built-in and plug-ins); ``--config NAME`` shows one's defaults."""
    from safebench import registry

    if config is not None:
        entry = registry.get(config)
        table = Table("key", "default", "source / confidence", title=f"{config} config")
        for key, field in entry.config_cls.model_fields.items():
            table.add_row(key, repr(field.default), field.description or "")
        console.print(table)
        return
    table = Table("name", "kind", "config", "source")
    for name, entry in registry.available().items():
        table.add_row(name, entry.kind, entry.config_cls.__name__, entry.source)
    console.print(table)
    from safebench.backends import omnisafe_config as omnisafe

    try:
        types = omnisafe.algorithm_types()
    except UserError as exc:  # omnisafe not installed: say how to get the reference backend
        console.print(f"omnisafe:<NAME>: {exc}")
        return
    for kind in omnisafe.SUPPORTED_TYPES:
        names = ", ".join(sorted(n for n, t in types.items() if t == kind))
        console.print(f"omnisafe:<NAME>, OmniSafe's own {kind} implementations: {names}")


def _parse_kv(pairs: list[str], what: str) -> dict[str, object]:
    """``key=value`` pairs with YAML-typed values (``3`` -> int, ``[64,64]`` -> list)."""
    import yaml

    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise UserError(f"{what} {pair!r} must look like key=value")
        try:
            out[key] = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise UserError(f"{what} {pair!r}: the value is not valid YAML") from None
    return out


@app.command("check-env")
def check_env(
    env_id: Annotated[str, typer.Argument(help="Env id, built-in id or package.module:Class.")],
    kwarg: Annotated[
        list[str] | None, typer.Option("--kwarg", "-k", help="Constructor kwarg key=value.")
    ] = None,
    steps: Annotated[int, typer.Option(min=1, help="Random steps to take.")] = 200,
    seed: int = 0,
) -> None:
    """Create an env, take random steps, and print its spaces, cost and step rate."""
    import time

    from safebench.envs import make_env

    env = make_env(env_id, **_parse_kv(kwarg or [], "--kwarg"))
    env.action_space.seed(seed)
    env.reset(seed=seed)
    ret = cost = 0.0
    episodes = 0
    start = time.perf_counter()
    for _ in range(steps):
        _, r, c, term, trunc, _ = env.step(env.action_space.sample())
        ret += r
        cost += c
        if term or trunc:
            episodes += 1
            env.reset()
    rate = steps / (time.perf_counter() - start)
    env.close()
    console.print(
        f"{env_id}: obs {env.observation_space.shape}, action {env.action_space}, "
        f"{steps} random steps, {episodes} episodes ended, reward {ret:.3f}, cost {cost:.3f}, "
        f"{rate:.0f} steps/s"
    )


@app.command()
def train(
    algo: Annotated[str, typer.Argument(help="Algorithm name (safebench list algorithms).")],
    env: Annotated[str, typer.Argument(help="Env id, built-in id or package.module:Class.")],
    seed: Annotated[int, typer.Option(min=0, help="Run seed.")] = 0,
    steps: Annotated[int, typer.Option(min=1, help="Env-step budget of the run.")] = 1_000_000,
    steps_per_epoch: Annotated[int, typer.Option(min=1, help="Env steps per epoch.")] = 20_000,
    cost_limit: Annotated[float, typer.Option(min=0, help="Episodic cost limit d.")] = 25.0,
    out: Annotated[str, typer.Option(help="Results root; the run goes to a sub-directory.")] = (
        "results/adhoc"
    ),
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Algorithm config override key=value (repeatable)."),
    ] = None,
    env_kwarg: Annotated[
        list[str] | None, typer.Option("--env-kwarg", help="Env constructor kwarg key=value.")
    ] = None,
    eval_episodes: Annotated[int, typer.Option(min=0, help="Episodes per evaluation.")] = 10,
    eval_every: Annotated[int, typer.Option(min=1, help="Evaluate every N epochs.")] = 10,
    num_envs: Annotated[int, typer.Option(min=1, help="Envs stepped in lock-step.")] = 1,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    threads: Annotated[int, typer.Option(min=1, help="torch threads for this run.")] = 1,
    tensorboard: Annotated[
        bool, typer.Option("--tensorboard", help="Live curves: TensorBoard files in <run>/tb/.")
    ] = False,
    wandb: Annotated[
        bool, typer.Option("--wandb", help="Also log to an offline W&B run in <run>/wandb/.")
    ] = False,
) -> None:
    """Train ONE run (resumes it if its directory holds a checkpoint)."""
    from pathlib import Path

    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from safebench import registry
    from safebench.envs import make_env
    from safebench.runner import run, set_threads
    from safebench.spec import EvalSpec, LoggingSpec, RunSpec

    if device not in ("auto", "cpu", "cuda"):
        raise UserError(f"--device must be auto, cpu or cuda (got {device!r})")
    config = registry.resolve_config(algo, _parse_kv(set_ or [], "--set"))
    env_kwargs = _parse_kv(env_kwarg or [], "--env-kwarg")
    make_env(env, **env_kwargs).close()  # a bad env id fails here, before anything is written
    spec = RunSpec(
        algo=algo,
        config=config.model_dump(mode="json"),
        env_id=env,
        env_kwargs=env_kwargs,
        seed=seed,
        budget=steps,
        steps_per_epoch=steps_per_epoch,
        cost_limit=cost_limit,
        eval=EvalSpec(episodes=eval_episodes, every_epochs=eval_every),
        num_envs=num_envs,
        device=device,
        logging=LoggingSpec(tensorboard=tensorboard, wandb=wandb),
    )
    set_threads(threads)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f} steps"),
        TextColumn("{task.fields[info]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as bar:
        task = bar.add_task(f"{algo} {env} seed {seed}", total=steps, info="")

        def on_epoch(row: dict[str, Any]) -> None:
            info = (
                f"EpRet {row['ep_ret']:.2f} EpCost {row['ep_cost']:.2f} "
                f"{row['steps'] / max(row['wall_time'], 1e-9):,.0f} steps/s"
            )
            bar.update(task, completed=row["steps"], info=info)

        run_dir = run(spec, Path(out), progress=on_epoch)
    console.print(f"run directory: {run_dir}")


# Options shared by `run` and `reproduce` (both launch a grid).
_BackendOpt = Annotated[
    str, typer.Option(help="ray (parallel, default) or local (in-process, one by one).")
]
_AddressOpt = Annotated[
    str | None,
    typer.Option(help="Ray cluster address; default RAY_ADDRESS, else a local Ray instance."),
]
_NumCpusOpt = Annotated[
    int | None, typer.Option(min=1, help="CPUs of the local Ray instance (default: all).")
]
_NumGpusOpt = Annotated[
    int | None,
    typer.Option(min=0, help="GPUs the local Ray instance declares (default: detected)."),
]


@app.command("run")
def run_experiment(
    experiment: Annotated[str, typer.Argument(help="Experiment YAML file.", show_default=False)],
    smoke: Annotated[
        bool,
        typer.Option("--smoke", help="Shrink to a tiny budget; results go to <output>-smoke."),
    ] = False,
    backend: _BackendOpt = "ray",
    address: _AddressOpt = None,
    num_cpus: _NumCpusOpt = None,
    num_gpus: _NumGpusOpt = None,
    retry_failed: Annotated[
        bool,
        typer.Option("--retry-failed", help="Train failed runs again, from their checkpoints."),
    ] = False,
    output: Annotated[
        str | None, typer.Option(help="Results directory (overrides 'output:' in the YAML).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate and list the runs; write nothing.")
    ] = False,
) -> None:
    """Train an experiment's grid; re-running resumes partial runs and skips done ones.

    Exit code 0 when every run is done, 1 when some failed, 130 when interrupted, 2 for a bad
    experiment file or option (nothing is written then).
    """
    from pathlib import Path

    from safebench.launch import launch
    from safebench.spec import expand, load_experiment
    from safebench.store import read_status

    exp = load_experiment(experiment, smoke=smoke)
    if output is not None:
        exp = exp.model_copy(update={"output": output})
    if dry_run:
        specs = expand(exp)
        table = Table("algorithm", "env", "seed", "run", "status", title=str(exp.output_dir))
        for spec in specs:
            state = read_status(spec.run_dir(exp.output_dir)).get("status", "queued")
            table.add_row(spec.label, spec.env_id, str(spec.seed), spec.run_id[:8], state)
        console.print(table)
        budgets = sorted({(s.epochs, s.budget) for s in specs})
        each = ", ".join(f"{e} epochs ({b:,} env steps)" for e, b in budgets)
        console.print(
            f"{len(specs)} runs of {each} each"
            if len(budgets) == 1
            else f"{len(specs)} runs: {each}"
        )
        return
    result = launch(
        exp,
        backend=backend,  # type: ignore[arg-type]  # launch() checks the value
        address=address,
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        retry_failed=retry_failed,
        source_text=Path(experiment).read_text(encoding="utf-8"),
        console=console,
    )
    failed = result.failed
    console.print(
        f"{result.done}/{len(result.specs)} runs done, {len(failed) + result.skipped_failed} "
        f"failed -> {result.output}",
        highlight=False,
    )
    for outcome in failed:
        s = outcome.spec
        err_console.print(
            f"[red]failed:[/red] {s.label} {s.env_id} seed {s.seed}: {outcome.error} "
            f"(traceback: {s.run_dir(result.output) / 'traceback.txt'})",
            highlight=False,
            soft_wrap=True,
        )
    if result.interrupted:
        err_console.print("interrupted: checkpoints are kept; run the same command to resume")
        raise typer.Exit(130)
    if failed or result.skipped_failed:
        err_console.print(
            f"see 'safebench status {result.output}'; '--retry-failed' trains failed runs again"
        )
        raise typer.Exit(1)


_ENV_AFFIXES = re.compile(r"^(?:safebench/)?(?:Safety(?=[A-Z]))?(.+?)(?:-v\d+)?$")


def _short_envs(envs: list[str]) -> dict[str, str]:
    """Env ids without ``safebench/``, ``Safety`` and ``-vN`` where they stay distinct
    (``SafetyPointGoal1-v0`` -> ``PointGoal1``): a table of runs fits 80 columns.

    The report's ``short_env_ids`` does the same; importing the report package would cost
    ``status`` seconds (matplotlib, rliable), hence this copy of three lines.
    """
    short = {env: _ENV_AFFIXES.sub(r"\1", env) for env in envs}
    counts = Counter(short.values())
    return {env: name if counts[name] == 1 else env for env, name in short.items()}


def _ago(seconds: float) -> str:
    """``42s``, ``7m``, ``3h``, ``2d``: how long ago, compactly."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{max(seconds, 0):.0f}s"


@app.command()
def status(
    results: Annotated[str, typer.Argument(help="Results directory of an experiment.")],
    only: Annotated[
        str | None, typer.Option(help="Show only runs in this state (queued/running/done/failed).")
    ] = None,
) -> None:
    """Table of an experiment's runs: state, epochs and steps done, last update, error."""
    import time
    from pathlib import Path

    from safebench.store import iter_run_dirs, lock_holder, run_summary

    root = Path(results)
    if not root.is_dir():
        raise UserError(f"results directory {results!r} does not exist")
    if only is not None and only not in ("queued", "running", "done", "failed"):
        raise UserError(f"--only must be queued, running, done or failed (got {only!r})")
    runs = [run_summary(d) for d in iter_run_dirs(root)]
    if not runs:
        raise UserError(f"{results!r} holds no runs (no spec.json below it)")
    holder = lock_holder(root)
    colour = {"done": "green", "failed": "red", "running": "cyan", "queued": "yellow"}
    short = _short_envs([r["env"] for r in runs])
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
        if state == "running" and holder is None:
            note = "its launcher is gone; the next 'safebench run' resumes it"
        table.add_row(
            r["label"], short[r["env"]], str(r["seed"]), r["run_id"][:8], shown,
            f"{r['epochs_done']}/{r['epochs']}", _ago(now - r["updated"]) if r["updated"] else "",
        )  # fmt: skip
        if note:
            who = f"{r['label']} {short[r['env']]} seed {r['seed']} ({r['run_id'][:8]})"
            notes.append(f"[{colour.get(state, 'white')}]{state}[/] {who}: {note}")
    console.print(table)
    for line in notes:
        console.print(line, highlight=False)
    order = ("done", "running", "queued", "failed")
    summary = ", ".join(f"{counts[k]} {k}" for k in order if k in counts)
    active = (
        f"a launcher is active (pid {holder.get('pid')} on {holder.get('hostname')})"
        if holder is not None
        else "no launcher active"
    )
    console.print(f"{len(runs)} runs: {summary}; {active}", highlight=False)


@app.command()
def report(
    results_dir: Annotated[str, typer.Argument(help="Results root (what 'run' wrote into).")],
    reference: Annotated[
        str | None,
        typer.Option(help="Normalise by this algo label (return ÷ its mean; C-TRPO uses PPO)."),
    ] = None,
    regret_reference: Annotated[
        str | None,
        typer.Option(help="Divide regret by this algo's IQM regret (default: --reference)."),
    ] = None,
    ours: Annotated[
        str | None,
        typer.Option(help="Add '% return over the best cost-respecting baseline' for this algo."),
    ] = None,
    final: Annotated[
        str, typer.Option(help="Final score: last | last-k | eval (last logged epoch, ...).")
    ] = "last",
    k: Annotated[int, typer.Option("-k", min=1, help="Epochs averaged by --final last-k.")] = 10,
    reps: Annotated[int, typer.Option(min=10, help="Bootstrap reps, aggregate table.")] = 10_000,
    table_reps: Annotated[
        int, typer.Option(min=10, help="Bootstrap reps, per-env table.")
    ] = 10_000,
    curve_reps: Annotated[
        int, typer.Option(min=10, help="Bootstrap reps, curve and profile bands.")
    ] = 500,
    poi: Annotated[bool, typer.Option(help="Also compute probability of improvement.")] = False,
    poi_reps: Annotated[int, typer.Option(min=10, help="Bootstrap reps, --poi.")] = 2_000,
    confidence: Annotated[float, typer.Option(help="Confidence level of all intervals.")] = 0.95,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
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
) -> None:
    """Tables (Markdown, CSV, LaTeX), plots (PNG, SVG) and report.md/.html of a results root."""
    from safebench.report import ReportConfig, build_report
    from safebench.report.against import parse_map

    if final not in ("last", "last-k", "eval"):
        raise UserError(f"--final must be last, last-k or eval (got {final!r})")
    config = ReportConfig(
        final=final,  # type: ignore[arg-type]  # checked just above
        k=k,
        reference=reference,
        regret_reference=regret_reference,
        ours=ours,
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
    )
    with console.status("report") as spinner:
        result = build_report(
            results_dir, out, config, progress=lambda stage: spinner.update(f"report: {stage}")
        )
    for note in result.notes:
        console.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    console.print(
        f"wrote {len(result.files)} files in {result.seconds:.1f} s: "
        f"{result.out / 'report.html'} (self-contained), {result.out / 'report.md'}",
        highlight=False,
    )


@app.command("eval")
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

    from safebench.evaluation import EvalOptions, evaluate_path
    from safebench.runner import set_threads

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
    short = _short_envs([o.env_id for o in batch.outcomes])
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


@app.command("import")
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

    from safebench.importers import SOURCES, import_runs

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


@app.command()
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
    backend: _BackendOpt = "ray",
    address: _AddressOpt = None,
    num_cpus: _NumCpusOpt = None,
    num_gpus: _NumGpusOpt = None,
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
    from safebench.reproduce import reproduce as reproduce_experiment

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


@app.command()
def doctor() -> None:
    """Check the installation: versions, hardware, threads; exits 1 with a fix if broken."""
    problems: list[str] = []
    table = Table("component", "status", show_header=False)
    table.add_row("safebench", __version__)
    table.add_row("python", platform.python_version())
    if sys.version_info < (3, 10) or sys.version_info >= (3, 12):
        problems.append("Python 3.10 or 3.11 is required: run 'make setup' (uv picks 3.11)")
    try:
        import torch

        table.add_row("torch", torch.__version__)
        table.add_row("torch threads", str(torch.get_num_threads()))
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(gpus))
        table.add_row("CUDA GPUs", f"{gpus}" + (f" ({names})" if names else ""))
    except Exception as exc:
        problems.append(f"torch does not import ({exc}): run 'make setup'")
    try:
        import mujoco

        table.add_row("mujoco", mujoco.__version__)
    except Exception as exc:
        problems.append(f"mujoco does not import ({exc}): run 'make setup'")
    try:
        from safebench.envs import import_safety_gymnasium, make_env

        sg = import_safety_gymnasium()
        table.add_row("safety-gymnasium", sg.__version__)
        env = make_env("SafetyPointGoal1-v0")
        env.reset(seed=0)
        env.step(env.action_space.sample())
        env.close()
        table.add_row("SafetyPointGoal1-v0", "steps")
    except Exception as exc:
        problems.append(
            f"Safety-Gymnasium does not work ({type(exc).__name__}: {exc}); "
            "reinstall with 'make setup' (MuJoCo needs no display for training)"
        )
    try:
        import ray

        table.add_row("ray", ray.__version__)
    except Exception as exc:
        problems.append(f"ray does not import ({exc}): run 'make setup'")
    table.add_row("CPUs", str(os.cpu_count()))
    console.print(table)
    if problems:
        for p in problems:
            err_console.print(f"[red]problem:[/red] {p}")
        raise typer.Exit(1)
    console.print("[green]all good[/green]")


def main() -> None:
    """Console-script entry point: runs the app, turning user errors into exit code 2."""
    try:
        app()
    except UserError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
