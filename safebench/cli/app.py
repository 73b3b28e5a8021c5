"""The ``safebench`` command line. Thin: parse, call library functions, print with rich.

Every user error (:class:`safebench.errors.UserError`) becomes one red line on stderr and
exit code 2, never a traceback.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from safebench import __version__
from safebench.cli import results as cli_results
from safebench.cli.results import AddressOpt, BackendOpt, NumCpusOpt, NumGpusOpt
from safebench.errors import UserError
from safebench.util.console import console, err_console

app = typer.Typer(
    name="safebench",
    help="Benchmark suite for safe (constrained) reinforcement learning.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
list_app = typer.Typer(help="List environments or algorithms.", no_args_is_help=True)
app.add_typer(list_app, name="list")

app.command()(cli_results.status)
app.command()(cli_results.report)
app.command()(cli_results.plan)
app.command("eval")(cli_results.eval_)
app.command("import")(cli_results.import_)
app.command()(cli_results.reproduce)


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
    from safebench.envs.factory import env_groups, make_env

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
        from safebench.util.console import config_table

        console.print(config_table(config, registry.get(config).config_cls.model_fields))
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

    from safebench.envs.factory import make_env

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


@app.command("check-algorithm")
def check_algorithm(
    name: Annotated[
        str,
        typer.Argument(help="A registered algorithm (safebench list algorithms), or NAME@VARIANT."),
    ],
    variant: Annotated[
        str | None,
        typer.Option(help="Run the smoke, resume and diagnostics checks on this named variant."),
    ] = None,
    keep: Annotated[
        str | None,
        typer.Option(
            "--keep",
            metavar="DIR",
            help="Keep the contract's runs in DIR (new or empty); default: a temporary "
            "directory, removed at the end.",
        ),
    ] = None,
    threads: Annotated[int, typer.Option(min=1, help="torch threads for the runs.")] = 1,
    show_traceback: Annotated[
        bool, typer.Option("--traceback", help="Print the traceback of a check that raised.")
    ] = False,
) -> None:
    """Check a registered algorithm (built-in or plug-in) against the algorithm contract.

    Six checks on small runs (seconds to a minute): a smoke run, exact resume, source tags on
    config fields, the action protocol, finite diagnostics, the config listing. One line per
    check; exit code 0 when all pass, 1 when one fails, 2 for an unknown name or bad option.
    """
    import tempfile
    from contextlib import ExitStack
    from pathlib import Path

    from rich.markup import escape

    from safebench import registry
    from safebench.experiment import conformance
    from safebench.training.runner import set_threads

    base, variant = conformance.parse_name(name, variant)
    label = base if variant is None else f"{base}@{variant}"
    with ExitStack() as stack:
        if keep is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="safebench-")))
        else:
            workdir = Path(keep)
            if workdir.exists() and (not workdir.is_dir() or any(workdir.iterdir())):
                raise UserError(f"--keep {keep}: give a new or empty directory")
            workdir.mkdir(parents=True, exist_ok=True)
        entry = registry.get(base)
        console.print(
            f"{label}: {entry.kind}, {entry.source}; the algorithm contract on "
            f"{conformance.EPOCHS} epochs × {conformance.STEPS} env steps",
            highlight=False,
            soft_wrap=True,
        )
        width = max(len(check) for check in conformance.CHECKS)

        def show(result: conformance.CheckResult) -> None:
            mark = "[green]PASS[/green]" if result.passed else "[red]FAIL[/red]"
            console.print(
                f"{mark} {result.check:<{width}}  {escape(result.title)}: {escape(result.detail)} "
                f"[dim]({result.seconds:.1f} s)[/dim]",
                highlight=False,
                soft_wrap=True,
            )
            if show_traceback and result.trace:
                console.print(result.trace, highlight=False, markup=False, soft_wrap=True)

        set_threads(threads)
        results = conformance.check_algorithm(base, variant, workdir=workdir, on_result=show)
    failed = [r.check for r in results if not r.passed]
    kept = f"; runs kept in {keep}" if keep is not None else ""
    if failed:
        hint = "" if show_traceback or not any(r.trace for r in results) else " (--traceback)"
        err_console.print(
            f"{label}: {len(failed)} of {len(results)} checks failed: {', '.join(failed)}"
            f"{hint}{kept}",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)
    console.print(f"{label}: all {len(results)} checks passed{kept}", highlight=False)


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
    from safebench.envs.factory import make_env
    from safebench.schema.spec import EvalSpec, LoggingSpec, RunSpec
    from safebench.training.runner import run, set_threads

    if device not in ("auto", "cpu", "cuda"):
        raise UserError(f"--device must be auto, cpu or cuda (got {device!r})")
    if steps_per_epoch > steps:  # the budget rule `run` applies to an experiment file
        raise UserError(
            f"--steps-per-epoch {steps_per_epoch} is larger than --steps {steps}; lower "
            "--steps-per-epoch or raise --steps"
        )
    config = registry.resolve_config(algo, _parse_kv(set_ or [], "--set"))
    env_kwargs = _parse_kv(env_kwarg or [], "--env-kwarg")
    make_env(env, **env_kwargs).close()  # a bad env id fails here, before anything is written
    spec = RunSpec(
        algo=algo,
        config=config.spec_dump(),
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


@app.command("run")
def run_experiment(
    experiment: Annotated[str, typer.Argument(help="Experiment YAML file.", show_default=False)],
    smoke: Annotated[
        bool,
        typer.Option("--smoke", help="Shrink to a tiny budget; results go to <output>-smoke."),
    ] = False,
    backend: BackendOpt = "ray",
    address: AddressOpt = None,
    num_cpus: NumCpusOpt = None,
    num_gpus: NumGpusOpt = None,
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

    from safebench.experiment.launch import launch
    from safebench.results.store import RunDir, read_status
    from safebench.schema.spec import expand, load_experiment

    exp = load_experiment(experiment, smoke=smoke)
    if output is not None:
        exp = exp.model_copy(update={"output": output})
    if dry_run:
        specs = expand(exp)
        table = Table("algorithm", "env", "d", "seed", "run", "status", title=str(exp.output_dir))
        for spec in specs:
            state = read_status(spec.run_dir(exp.output_dir)).get("status", "queued")
            limit = f"{spec.cost_limit:g}"
            table.add_row(spec.label, spec.env_id, limit, str(spec.seed), spec.run_id[:8], state)
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
            f"(traceback: {RunDir(s.run_dir(result.output)).traceback})",
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


@app.command()
def doctor(
    results: Annotated[
        str | None,
        typer.Argument(help="A results root: check its runs instead (nothing is changed)."),
    ] = None,
) -> None:
    """Check the installation: versions, hardware, threads, offscreen rendering; exits 1 with a
    fix if broken (offscreen rendering, which only 'eval --video' needs: a warning and a fix).

    With RESULTS, check every run there instead: healthy, damaged (which file, why) or
    incomplete, and what the next 'safebench run' does to it; exits 1 if any is damaged.
    """
    if results is not None:
        cli_results.doctor_results(results)
        return
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
        from safebench.envs.factory import import_safety_gymnasium, make_env

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
    rendering, warning = _offscreen_rendering()
    table.add_row("video rendering", rendering)
    table.add_row("CPUs", str(os.cpu_count()))
    console.print(table)
    if warning is not None:
        err_console.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    if problems:
        for p in problems:
            err_console.print(f"[red]problem:[/red] {p}")
        raise typer.Exit(1)
    console.print("[green]all good[/green]" + (" but for the warning" if warning else ""))


def _offscreen_rendering() -> tuple[str, str | None]:
    """Doctor's row for the headless OpenGL platforms ``eval --video`` can render with (each
    one tried), and a warning with the fix when the one it would use cannot render."""
    from safebench.training.recording import GL_INSTALL, gl_platforms, headless_gl

    verdicts = gl_platforms()
    failed = "; ".join(f"{p}: {why}" for p, why in verdicts if why is not None)
    works = [p for p, why in verdicts if why is None]
    if not works:
        return f"[red]none[/red] ({escape(failed)})", (
            f"'eval --video' cannot render offscreen ({failed}): {GL_INSTALL}"
        )
    row = ", ".join(works) + (f" ({escape(failed)})" if failed else "")
    if os.environ.get("MUJOCO_GL"):
        return f"{row} (MUJOCO_GL)", None
    picked = headless_gl()  # the first installed: it may be one that cannot render
    if picked in works:
        return row, None
    return row, (
        f"'eval --video' would use {picked}, which cannot render here: set MUJOCO_GL={works[0]}"
    )


def main() -> None:
    """Console-script entry point: runs the app, turning user errors into exit code 2."""
    try:
        app()
    except UserError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except OSError as exc:  # a write the store did not make (report pages, folders)
        from safebench.results.store import as_write_error

        error = as_write_error(exc)
        if error is None:
            raise
        err_console.print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
