"""Many runs: expand an experiment, write every spec, then train what is not done yet.

``launch(experiment)`` (docs/architecture.md#many-runs):

1. expands the experiment into RunSpecs and refuses a results directory that holds other
   specs under the same run directories;
2. takes the results directory's lock (a second ``safebench run`` on it fails at once);
3. writes ``experiment.yaml``/``experiment.json`` and every run's ``spec.json`` before any run
   starts, marks runs left ``running`` by a dead launcher as ``queued`` (they resume from their
   checkpoints), and skips runs that are ``done`` (and ``failed`` ones unless
   ``retry_failed``);
4. trains the rest, either as Ray tasks (``backend="ray"``: a local Ray instance, or the
   cluster at ``address`` / ``RAY_ADDRESS``; each task asks for ``resources.cpus`` CPUs and
   ``resources.gpus`` GPUs and pins torch to that many threads) or in this process one after
   another (``backend="local"``);
5. shows live progress (runs done / running / failed, env steps per second, ETA).

A run that raises or goes non-finite is recorded as ``failed`` by the runner (status.json +
traceback.txt) and the grid goes on; a worker that dies (segfault, out of memory) is recorded
by the launcher. Ctrl-C (or SIGTERM) cancels the outstanding runs; their checkpoints stay, and
running the same command again resumes them. A launcher killed outright (SIGKILL, a crash)
takes its Ray workers with it; the next launch finds their runs still marked ``running``,
makes sure no leftover worker on this host still writes to them, and resumes them from their
checkpoints. With Ray, the results directory must be visible
at the same path on every node (a shared file system), because each task writes its own run
directory and the launcher follows progress there.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any, Literal

from rich.console import Console

from safebench.errors import UserError, WriteError
from safebench.results.store import (
    RunCheck,
    RunDir,
    RunRecord,
    as_write_error,
    experiment_lock,
    lock_holder,
    read_status,
    set_aside,
    write_experiment,
)
from safebench.schema.spec import Experiment, RunSpec, expand, same_run
from safebench.training.progress import Display, LaunchResult, RunOutcome, read_steps
from safebench.util import procs

__all__ = ["Backend", "LaunchResult", "RunOutcome", "launch", "prepare_runs"]

Backend = Literal["ray", "local"]
# How long cancelled Ray tasks get to checkpoint-and-stop before their workers are killed.
CANCEL_GRACE_S = 15.0
# The launcher shares the cores with the runs: it looks at their progress once a second.
POLL_S = 1.0
# How long a re-run waits for a killed launcher's leftover worker to exit.
STALE_WORKER_WAIT_S = 30.0


# ---------------------------------------------------------------------------------------------
# Writing the grid
# ---------------------------------------------------------------------------------------------


def _spec_record(spec: RunSpec) -> dict[str, Any]:
    # Exactly what the runner writes and compares against (runner._check_spec).
    return {**spec.model_dump(mode="json"), "run_id": spec.run_id}


def _check_conflicts(specs: list[RunSpec], root: Path) -> None:
    for spec in specs:
        run = RunDir(spec.run_dir(root))
        if run.spec.exists():
            old = run.check(deep=False).spec
            if old is not None and not same_run(old, spec):  # a damaged one is set aside
                raise UserError(
                    f"{run.path} already holds a run of experiment "
                    f"{old.get('experiment')!r} with a different spec; give this experiment "
                    "its own output directory (output: in the YAML, or --output)"
                )


def prepare_runs(
    specs: list[RunSpec],
    root: Path,
    *,
    retry_failed: bool = False,
    on_damage: Callable[[RunCheck, Path], None] | None = None,
) -> tuple[list[RunSpec], int, int]:
    """Write every spec and pick the runs to train: ``(todo, already_done, failed_kept)``.

    Call with the results directory's lock held: a run still marked ``running`` is then known
    to be left over by a launcher that died, and is queued again (it resumes from its
    checkpoint). Failed runs are queued again only with ``retry_failed``. A damaged run
    (``store.check_run``) has its damaged files moved aside (``store.set_aside``, reported
    through ``on_damage(check, folder)``) and is trained again.
    """
    todo: list[RunSpec] = []
    done = failed = 0
    for spec in specs:
        run = RunDir(spec.run_dir(root))
        if run.path.is_dir():
            check = run.check()
            aside = set_aside(check)
            if aside is not None and on_damage is not None:
                on_damage(check, aside)
        if not run.spec.exists():
            run.write_spec(_spec_record(spec))
        status = run.read_status()
        state = status.get("status")
        if state == "done":
            done += 1
            continue
        if state == "failed" and not retry_failed:
            failed += 1
            continue
        if state == "failed":
            run.record.queued(note=f"retrying after: {status.get('error')}")
        elif state == "running":
            _wait_for_stale_worker(run.path)
            run.record.queued(note="its launcher stopped; resumes from checkpoint")
        elif not run.status.exists():
            run.record.queued()
        todo.append(spec)
    return todo, done, failed


def _wait_for_stale_worker(run_dir: Path, timeout: float = STALE_WORKER_WAIT_S) -> None:
    """Wait until the process that last trained ``run_dir`` (on this host) has exited.

    When a launcher is killed, its local Ray instance goes down with it, but a worker can go
    on for a moment and write one more epoch; resuming the run meanwhile would race it.
    """
    try:
        placement = RunDir(run_dir).read_placement()
    except (OSError, ValueError):
        return
    pid = placement.get("pid")
    if placement.get("hostname") != socket.gethostname() or not isinstance(pid, int):
        return  # another node: Ray ends a dead driver's tasks there
    if pid == os.getpid():
        return
    deadline = time.monotonic() + timeout
    while procs.pid_alive(pid):
        if time.monotonic() > deadline:
            raise UserError(
                f"{run_dir} is still being written by process {pid} (a worker of a launcher "
                "that stopped); wait for it to exit, or end it, then run again"
            )
        time.sleep(0.2)


def _write_experiment(experiment: Experiment, specs: list[RunSpec], root: Path, text: str) -> None:
    record = {
        "experiment": experiment.model_dump(mode="json"),
        "runs": [str(s.run_dir(root).relative_to(root)) for s in specs],
    }
    write_experiment(root, record, text)


# ---------------------------------------------------------------------------------------------
# One run, in whichever process executes it
# ---------------------------------------------------------------------------------------------


def _placement(backend: str, cpus: int, launch_id: str) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "backend": backend,
        "launch_id": launch_id,
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "cpus": cpus,
        "torch_threads": torch.get_num_threads(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "gpu_ids": [],
        "node_id": None,
        "started": time.time(),
    }
    if backend == "ray":
        import ray

        info["gpu_ids"] = [str(g) for g in ray.get_gpu_ids()]
        info["node_id"] = ray.get_runtime_context().get_node_id()
    return info


def _exit_with_driver(driver: tuple[str, int]) -> None:
    """End this Ray worker as soon as the launcher ``(hostname, pid)`` is gone.

    A killed launcher takes its local Ray instance down, but the workers notice only seconds
    later and meanwhile go on training and writing. Exiting at once leaves each run at its
    last checkpoint for the next launch to resume. Workers on other hosts are left to Ray,
    which ends a dead driver's tasks.
    """
    host, pid = driver
    if host == socket.gethostname():
        procs.exit_when_gone(pid, name="safebench-exit-with-driver")


def _execute(
    spec_data: dict[str, Any],
    root: str,
    run_id: str,
    cpus: int,
    backend: str,
    launch_id: str,
    progress: Callable[[dict[str, Any]], None] | None = None,
    driver: tuple[str, int] | None = None,
) -> dict[str, Any]:
    """Train one run here; never raises for a failed run, returns ``{state, error}``.

    The runner records a failure itself (status.json, traceback.txt); ``recorded`` tells the
    launcher whether it still has to. A run killed from outside (Ctrl-C, ``ray.cancel``)
    leaves its checkpoint and ``state="interrupted"``. ``driver`` (hostname, pid) is the
    launcher a Ray worker must not outlive.
    """
    from safebench.errors import RunInterrupted
    from safebench.training.runner import run, set_threads

    spec = RunSpec.model_validate(spec_data)
    set_threads(cpus)
    start = time.perf_counter()
    if spec.run_id != run_id:
        # The run id hashes package versions: a node with other versions would train
        # something else than the launcher asked for, into another directory.
        from safebench.results.store import package_versions

        return {
            "state": "failed",
            "recorded": False,
            "error": f"{socket.gethostname()} computes run id {spec.run_id[:8]} instead of "
            f"{run_id[:8]}: its package versions differ from the launcher's "
            f"({package_versions()}); install the same environment on every node",
        }
    if driver is not None:
        _exit_with_driver(driver)
        # ray.cancel() interrupts a running task through SIGINT, which does nothing where
        # SIGINT is ignored, as it is for everything a launcher started in the background
        # (`nohup`, `cmd &` in a script) spawns: restore Python's handler in this worker.
        with contextlib.suppress(ValueError):  # not the main thread
            signal.signal(signal.SIGINT, signal.default_int_handler)
    run_dir = spec.run_dir(Path(root))
    placement = _placement(backend, cpus, launch_id)
    RunDir(run_dir).write_placement(placement)
    state: str = "done"
    error: str | None = None
    try:
        run(spec, Path(root), progress=progress)
    except (RunInterrupted, KeyboardInterrupt):
        state = "interrupted"
    except Exception as exc:
        if isinstance(exc, OSError) and (unwritable := as_write_error(exc)) is not None:
            raise unwritable from exc  # no run can be written: stop, exit 2, resume later
        if isinstance(exc, WriteError):
            raise
        state, error = "failed", f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - start
    RunDir(run_dir).write_placement({**placement, "finished": time.time(), "state": state})
    recorded = read_status(run_dir).get("status") == "failed"
    return {"state": state, "error": error, "recorded": recorded, "seconds": seconds}


# ---------------------------------------------------------------------------------------------
# Backends
# ---------------------------------------------------------------------------------------------


def _run_local(
    todo: list[RunSpec],
    root: Path,
    cpus: int,
    launch_id: str,
    display: Display,
    result: LaunchResult,
) -> None:
    """One run after another in this process (debugging, tests, machines without Ray)."""
    import torch

    threads = torch.get_num_threads()
    try:
        for spec in todo:
            rid = spec.run_id
            display.running.add(rid)

            def on_epoch(row: dict[str, Any], rid: str = rid) -> None:
                display.set_steps(rid, int(row["steps"]))
                display.refresh()

            out = _execute(
                spec.model_dump(mode="json"), str(root), rid, cpus, "local", launch_id, on_epoch
            )
            _conclude(spec, out, root, result, display)
            display.refresh()
    finally:
        torch.set_num_threads(threads)


def _conclude(
    spec: RunSpec, out: dict[str, Any], root: Path, result: LaunchResult, display: Display
) -> None:
    """One run's end, the same for both backends: an interruption stops the launch; any other
    outcome is recorded (for a run nobody recorded, its status) and shown."""
    if out["state"] == "interrupted":
        raise KeyboardInterrupt
    outcome = RunOutcome(spec, out["state"], out["error"], out.get("seconds", 0.0))
    _record(outcome, out, root)
    result.outcomes.append(outcome)
    display.finish(outcome)


def _record(outcome: RunOutcome, out: dict[str, Any], root: Path) -> None:
    if outcome.state == "failed" and not out.get("recorded"):
        RunRecord(outcome.spec.run_dir(root)).failed(RuntimeError(outcome.error))


def _ray_init(address: str | None, num_cpus: int | None, num_gpus: int | None) -> None:
    import ray

    common: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,  # runs write their own files; worker chatter stays out
        "logging_level": logging.ERROR,
    }
    if address:
        if num_cpus is not None or num_gpus is not None:
            raise UserError(
                "--num-cpus/--num-gpus size a local Ray instance; a cluster at --address "
                "(or RAY_ADDRESS) brings its own resources: drop them"
            )
        try:
            ray.init(address=address, **common)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise UserError(
                f"cannot connect to the Ray cluster at {address!r} ({exc}); start one with "
                "'ray start --head' or drop --address to use a local Ray instance"
            ) from None
    else:
        ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, **common)


def _check_resources(experiment: Experiment) -> None:
    import ray

    have = ray.cluster_resources()
    res = experiment.resources
    cpus, gpus = have.get("CPU", 0.0), have.get("GPU", 0.0)
    if res.cpus > cpus:
        raise UserError(
            f"each run asks for resources.cpus={res.cpus} but the Ray cluster has {cpus:g} "
            "CPUs; lower resources.cpus or add nodes"
        )
    if res.gpus > gpus:
        raise UserError(
            f"each run asks for resources.gpus={res.gpus:g} but the Ray cluster has {gpus:g} "
            "GPUs; set resources.gpus: 0 or run on GPU nodes (--num-gpus declares GPUs for "
            "a local instance)"
        )


def _run_ray(
    todo: list[RunSpec],
    root: Path,
    experiment: Experiment,
    launch_id: str,
    display: Display,
    result: LaunchResult,
) -> None:
    """Every run as a Ray task; follow progress through the run directories."""
    import ray

    res = experiment.resources
    task = ray.remote(_execute).options(
        num_cpus=res.cpus,
        num_gpus=res.gpus,
        max_retries=0,  # a crash is reported as failed; --retry-failed resumes it explicitly
        name="safebench-run",
    )
    driver = (socket.gethostname(), os.getpid())
    pending = {
        task.remote(
            s.model_dump(mode="json"), str(root), s.run_id, res.cpus, "ray", launch_id, None, driver
        ): s
        for s in todo
    }
    started = {s.run_id: time.perf_counter() for s in todo}
    mtimes: dict[str, int] = {}
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=POLL_S)
            for ref in ready:
                spec = pending.pop(ref)
                try:
                    out = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    cause = getattr(exc, "cause", None)  # what the task raised, if it did
                    if isinstance(cause, WriteError):  # nothing can be written: stop all
                        _cancel(pending, root)
                        raise cause from None
                    # The worker itself died (segfault, OOM kill, node lost): nobody recorded it.
                    out = {"state": "failed", "recorded": False, "error": _ray_error(exc)}
                    out["seconds"] = time.perf_counter() - started[spec.run_id]
                _conclude(spec, out, root, result, display)
            for spec in pending.values():
                run_dir = spec.run_dir(root)
                waiting = spec.run_id not in display.running
                if waiting and read_status(run_dir).get("status") == "running":
                    display.running.add(spec.run_id)
                with contextlib.suppress(OSError):
                    mtime = RunDir(run_dir).metrics.stat().st_mtime_ns
                    if mtimes.get(spec.run_id) != mtime:
                        mtimes[spec.run_id] = mtime
                        steps = read_steps(run_dir)
                        if steps is not None:
                            display.set_steps(spec.run_id, steps)
            display.refresh()
    except KeyboardInterrupt:
        _cancel(pending, root)
        raise


def _ray_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else 'the worker died'}"


def _cancel(pending: dict[Any, RunSpec], root: Path) -> None:
    """Ask the running tasks to stop (KeyboardInterrupt in them), then kill stragglers."""
    import ray

    if not pending:
        return
    refs = list(pending)
    for ref in refs:
        with contextlib.suppress(Exception):
            ray.cancel(ref)
    _, left = ray.wait(refs, num_returns=len(refs), timeout=CANCEL_GRACE_S)
    for ref in left:
        with contextlib.suppress(Exception):
            ray.cancel(ref, force=True)
    for spec in pending.values():
        run_dir = spec.run_dir(root)
        record = RunRecord(run_dir)
        if record.status == "running":
            record.queued(note="interrupted; resumes from checkpoint")


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """``kill PID`` stops a launch as cleanly as Ctrl-C does (only in the main thread)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# ---------------------------------------------------------------------------------------------
# The entry point
# ---------------------------------------------------------------------------------------------


def _plan(
    experiment: Experiment,
    specs: list[RunSpec],
    root: Path,
    source_text: str,
    retry_failed: bool,
    console: Console,
) -> tuple[list[RunSpec], int, int]:
    """Write the grid (the experiment's files and every run's spec) and pick the runs to
    train: ``(todo, already_done, failed_kept)`` (see :func:`prepare_runs`), each damaged run
    reported as it is set aside. Call with the results directory's lock held."""
    # Again under the lock: the check before it may have raced another launcher (or found
    # no results directory yet).
    _check_conflicts(specs, root)
    _write_experiment(experiment, specs, root, source_text)

    def damaged(check: RunCheck, aside: Path) -> None:
        start = "its checkpoint" if check.checkpoint == "ok" else "scratch"
        console.print(
            f"[yellow]damaged:[/yellow] {check.run_dir}: {check.files()}; moved into "
            f"{aside.name}/, re-training from {start}",
            highlight=False,
            soft_wrap=True,
        )

    return prepare_runs(specs, root, retry_failed=retry_failed, on_damage=damaged)


@contextlib.contextmanager
def _ray_running(
    address: str | None,
    num_cpus: int | None,
    num_gpus: int | None,
    experiment: Experiment,
    timings: dict[str, float],
) -> Iterator[None]:
    """Ray (a local instance, or the cluster at ``address``) for the length of a launch, its
    start-up and shutdown timed into ``timings``; refused when it lacks a run's resources."""
    import ray

    t0 = time.perf_counter()
    _ray_init(address, num_cpus, num_gpus)
    timings["startup"] = time.perf_counter() - t0
    try:
        _check_resources(experiment)
        yield
    finally:
        t0 = time.perf_counter()
        ray.shutdown()
        timings["shutdown"] = time.perf_counter() - t0


def _train(
    todo: list[RunSpec],
    root: Path,
    experiment: Experiment,
    backend: Backend,
    launch_id: str,
    console: Console,
    result: LaunchResult,
) -> None:
    """Train the runs to do on ``backend`` behind the live display, their outcomes and the
    time it took into ``result``; Ctrl-C ends the training and marks it interrupted."""
    display = Display(console, result, todo)
    t0 = time.perf_counter()
    try:
        with display.live():
            if backend == "local":
                _run_local(todo, root, experiment.resources.cpus, launch_id, display, result)
            else:
                _run_ray(todo, root, experiment, launch_id, display, result)
    except KeyboardInterrupt:
        result.interrupted = True
    result.timings["train"] = time.perf_counter() - t0


def launch(
    experiment: Experiment,
    *,
    backend: Backend = "ray",
    address: str | None = None,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    retry_failed: bool = False,
    source_text: str = "",
    console: Console | None = None,
) -> LaunchResult:
    """Train every run of ``experiment`` that is not done; see the module docstring.

    ``address`` (or ``RAY_ADDRESS``) connects to an existing Ray cluster; otherwise a local
    Ray instance is started with ``num_cpus``/``num_gpus`` (default: this machine's; declared
    GPUs need not exist, which is how GPU placement is tested). ``source_text`` (the YAML)
    is kept beside the results as ``experiment.yaml``. Ctrl-C sets ``result.interrupted``.
    """
    console = console or Console()
    if backend not in ("ray", "local"):
        raise UserError(f"--backend must be 'ray' or 'local' (got {backend!r})")
    if backend == "local" and (address or num_cpus is not None or num_gpus is not None):
        raise UserError(
            "--address, --num-cpus and --num-gpus are Ray options; drop them with --backend local"
        )
    if backend == "ray":
        address = address or os.environ.get("RAY_ADDRESS") or None
    root = experiment.output_dir.resolve()
    specs = expand(experiment)
    if root.exists():
        holder = lock_holder(root)
        if holder is not None:  # fail before paying for Ray's start-up
            raise UserError(
                f"another 'safebench run' is writing to {root} (pid {holder.get('pid')} on "
                f"{holder.get('hostname')}); wait for it to finish or stop it first"
            )
        _check_conflicts(specs, root)
    result = LaunchResult(output=root, specs=specs)
    launch_id = uuid.uuid4().hex
    ray_session: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    if backend == "ray":
        ray_session = _ray_running(address, num_cpus, num_gpus, experiment, result.timings)
    with ray_session, experiment_lock(root), _sigterm_as_interrupt():
        todo, result.skipped_done, result.skipped_failed = _plan(
            experiment, specs, root, source_text, retry_failed, console
        )
        where = "in this process" if backend == "local" else (
            f"on the Ray cluster at {address}" if address else "on a local Ray instance"
        )  # fmt: skip
        console.print(
            f"{experiment.name}: {len(specs)} runs -> {root} ({result.skipped_done} done, "
            f"{result.skipped_failed} failed kept, {len(todo)} to train {where})",
            highlight=False,
        )
        _train(todo, root, experiment, backend, launch_id, console, result)
    return result
