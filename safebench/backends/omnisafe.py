"""OmniSafe 0.5.0 as a reference backend: ``omnisafe:<ALGO>`` trains OmniSafe's own algorithm.

An experiment names such a run like any other algorithm — ``omnisafe:CPO``, whose results label
is ``omnisafe-cpo`` unless the entry gives one (``:`` cannot be part of a directory name) — and
the runner hands it to :func:`run_omnisafe` instead of its own loop. OmniSafe then trains
with its own code, its own defaults (``configs/<type>/<ALGO>.yaml``) and its own logger, in a
child process, and its ``progress.csv`` becomes the run's ``metrics.parquet``.

How the run spec maps onto OmniSafe's config (``custom_cfgs`` of ``omnisafe.Agent``):

=========================  ======================================================================
safebench                  OmniSafe
=========================  ======================================================================
``env_id``                 the env id (OmniSafe knows the Safety-Gymnasium tasks only)
``seed``                   ``seed``
``budget``                 ``train_cfgs.total_steps``
``steps_per_epoch``        ``algo_cfgs.steps_per_epoch``
``cost_limit``             every ``cost_limit`` / ``safety_budget`` the algorithm's YAML has
                           (``algo_cfgs`` for CPO, PCPO, P3O; ``lagrange_cfgs`` for PPOLag,
                           TRPOLag; both for IPO); none for unconstrained PPO, TRPO, ...
``num_envs``               ``train_cfgs.vector_env_nums``
``resources.cpus``         ``train_cfgs.torch_threads`` (the run's torch thread count)
``device``                 ``train_cfgs.device`` (``auto``: CUDA when available)
config ``obs_normalize``   ``algo_cfgs.obs_normalize`` (default: the algorithm's YAML)
other config keys          merged into OmniSafe's config as given, e.g.
                           ``{algo_cfgs: {target_kl: 0.02}, model_cfgs: {actor: {lr: 1e-3}}}``
(fixed)                    ``logger_cfgs.log_dir`` = ``<run dir>/omnisafe``, ``use_wandb`` off,
                           ``use_tensorboard`` = the experiment's ``logging.tensorboard``
                           (or the config's own ``logger_cfgs.use_tensorboard``),
                           ``train_cfgs.parallel`` = 1
=========================  ======================================================================

Config keys are checked against the algorithm's YAML when the experiment is validated (unknown
keys, wrong kinds of values, keys that safebench sets from the spec), and OmniSafe checks them
again when it builds the agent; its complaints become :class:`~safebench.errors.UserError`.

What cannot be mapped, and what happens instead:

* **Resume.** OmniSafe keeps no resumable checkpoint (its ``torch_save/`` holds the policy
  only). A run that did not finish — interrupted, killed, failed — restarts from scratch when
  launched again: its OmniSafe logs and metrics are deleted first, and ``status.json`` says so.
  There is no ``checkpoint.pt``.
* **Evaluation.** OmniSafe's on-policy algorithms do not evaluate; ``eval_*`` columns are NaN
  and the experiment's ``eval`` protocol is ignored (off-policy ones log ``Metrics/TestEp*``
  when their own ``algo_cfgs.eval_episodes`` is set, and those become ``eval_*``).
* **Training statistics.** ``ep_ret`` / ``ep_cost`` / ``ep_len`` are OmniSafe's
  ``Metrics/EpRet`` / ``EpCost`` / ``EpLen``: means over its last 50 finished episodes, the
  same window as safebench's default ``ep_cost_window``. OmniSafe counts no episodes:
  ``episodes`` and ``epoch_episodes`` are NaN.
* **Budget.** OmniSafe trains ``total_steps // steps_per_epoch`` whole epochs, where safebench
  ends with a shorter epoch: a budget that is not a multiple of ``steps_per_epoch`` is refused.
* **Envs.** Env kwargs, safebench's built-in CMDPs and custom ``module:Class`` envs have no
  OmniSafe counterpart and are refused; so are offline and model-based algorithms (they need
  data sets or planners, not an env-step budget).

Timings come from OmniSafe's own clock: ``time_rollout`` = ``Time/Rollout``, ``time_update`` =
``Time/Update``, ``time_eval`` = ``Time/Evaluate`` (0 where absent) and ``wall_time`` =
``Time/Total`` (training only; agent construction excluded, as in safebench's ``wall_time``), so
env steps per second compare directly with native runs. Every other ``progress.csv`` column is
kept as ``algo/<column>`` (e.g. ``algo/Metrics/LagrangeMultiplier``).

OmniSafe runs in a child process (``python -m safebench.backends.omnisafe``) because it sets
process-wide state (torch threads, global seeds, ``atexit`` handlers, console output) that must
not leak into a launcher or a Ray worker that trains other runs afterwards; its console output
goes to ``<run dir>/omnisafe.log``. The child exits on its own when its parent dies, so a killed
launcher leaves no orphan writing into the run directory.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from safebench.backends.omnisafe_config import (
    LIMIT_KEYS,
    algorithm_name,
    default_config,
    resolve_config,
)
from safebench.core.base import resolve_device
from safebench.errors import RunInterrupted, UserError
from safebench.results.importers import MalformedRun, progress_metrics, read_progress
from safebench.results.store import RunDir, manifest
from safebench.schema.spec import RunSpec
from safebench.util import procs

__all__ = ["custom_cfgs", "metrics_from_progress", "run_omnisafe"]

POLL_S = 0.5  # how often the parent looks at progress.csv and at the child
STOP_GRACE_S = 10.0  # how long a stopped child gets before it is killed
RESTART_NOTE = "OmniSafe cannot resume: this run restarts from scratch when launched again"
# progress.csv columns that become safebench's own columns rather than algo/<column>.
_MAPPED_PREFIXES = ("Metrics/EpRet", "Metrics/EpCost", "Metrics/EpLen", "Metrics/TestEp", "Time/")
_MAPPED = ("TotalEnvSteps", "Train/Epoch")

ProgressFn = Callable[[dict[str, Any]], None]


# --------------------------------------------------------------------------- spec -> OmniSafe


def _merge(into: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = json.loads(json.dumps(value))
    return into


def _check_mappable(spec: RunSpec) -> None:
    """Refuse what OmniSafe cannot run as the spec says (see the module docstring)."""
    if spec.env_kwargs:
        raise UserError(
            f"{spec.algo}: env kwargs {spec.env_kwargs} cannot be passed to OmniSafe's envs; "
            "drop them for OmniSafe runs"
        )
    if spec.budget % spec.steps_per_epoch:
        raise UserError(
            f"{spec.algo}: OmniSafe trains whole epochs only, and the budget {spec.budget} is "
            f"not a multiple of steps_per_epoch {spec.steps_per_epoch}; make it one"
        )
    if spec.steps_per_epoch % spec.num_envs:
        raise UserError(
            f"{spec.algo}: OmniSafe needs steps_per_epoch ({spec.steps_per_epoch}) divisible by "
            f"num_envs ({spec.num_envs})"
        )


def custom_cfgs(spec: RunSpec, run_dir: Path, *, threads: int, device: str) -> dict[str, Any]:
    """OmniSafe's ``custom_cfgs`` for ``spec``: the config's overrides, then the spec's keys."""
    algo = algorithm_name(spec.algo)
    config = resolve_config(spec.algo, spec.config)
    cfgs: dict[str, Any] = {"logger_cfgs": {"use_tensorboard": spec.logging.tensorboard}}
    _merge(cfgs, config.overrides())
    limits: dict[str, Any] = {
        section: {key: float(spec.cost_limit) for key in LIMIT_KEYS if key in values}
        for section, values in default_config(algo).items()
        if isinstance(values, Mapping) and any(key in values for key in LIMIT_KEYS)
    }
    _merge(
        cfgs,
        {
            "seed": spec.seed,
            "train_cfgs": {
                "total_steps": spec.budget,
                "torch_threads": threads,
                "vector_env_nums": spec.num_envs,
                "parallel": 1,
                "device": device,
            },
            "algo_cfgs": {"steps_per_epoch": spec.steps_per_epoch},
            "logger_cfgs": {"log_dir": str(RunDir(run_dir).omnisafe_logs), "use_wandb": False},
        },
    )
    return _merge(cfgs, limits)  # merged, not spread: algo_cfgs holds both kinds of keys


# --------------------------------------------------------------------------- progress.csv


def metrics_from_progress(folder: Path, steps_per_epoch: int) -> pd.DataFrame:
    """safebench's metrics rows from an OmniSafe run folder's ``progress.csv``.

    Raises :class:`safebench.results.importers.MalformedRun` while there is no complete epoch yet.
    """
    progress, _ = read_progress(folder)  # drops a last line OmniSafe is still writing
    base = progress_metrics(progress, steps_per_epoch)
    n = len(base)
    nan = np.full(n, math.nan)

    def column(name: str, fill: np.ndarray) -> np.ndarray:
        return progress[name].to_numpy(float) if name in progress.columns else fill

    out = pd.DataFrame(
        {
            "epoch": base["epoch"].to_numpy(np.int64),
            "steps": base["steps"].to_numpy(float).round().astype(np.int64),
            "episodes": nan,
            "ep_ret": base["ep_ret"],
            "ep_cost": base["ep_cost"],
            "ep_len": base["ep_len"],
            "epoch_episodes": nan,
            "eval_ret": base["eval_ret"],
            "eval_cost": base["eval_cost"],
            "eval_len": base["eval_len"],
        }
    )
    for name in progress.columns:
        if name in _MAPPED or name.startswith(_MAPPED_PREFIXES):
            continue
        out[f"algo/{name}"] = progress[name].to_numpy(float)
    out["time_rollout"] = column("Time/Rollout", nan)
    out["time_update"] = column("Time/Update", nan)
    out["time_eval"] = column("Time/Evaluate", np.zeros(n))
    out["wall_time"] = column("Time/Total", nan)
    return out


def _progress_folder(run: RunDir) -> Path | None:
    found = sorted(run.omnisafe_logs.rglob("progress.csv"))
    return found[0].parent if found else None


# --------------------------------------------------------------------------- the run


def _clean(run: RunDir) -> bool:
    """Delete what an unfinished earlier attempt left; True if there was anything."""
    leftovers = (
        run.omnisafe_logs,
        run.omnisafe_console,
        run.omnisafe_error,
        run.metrics,
        run.traceback,
    )
    found = False
    for path in leftovers:
        if path.is_dir():
            shutil.rmtree(path)
            found = True
        elif path.exists():
            path.unlink()
            found = True
    return found


def _child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    repo = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, env.get("PYTHONPATH")) if p)
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    env["WANDB_MODE"] = "disabled"
    env["PYTHONUNBUFFERED"] = "1"
    # OmniSafe joins a torch.distributed group whenever MASTER_ADDR is set; a run is one process.
    env.pop("MASTER_ADDR", None)
    return env


def _stop(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is not None:
        return
    child.send_signal(signal.SIGINT)
    try:
        child.wait(STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def _log_tail(path: Path, lines: int = 15) -> str:
    with contextlib.suppress(OSError):
        text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        return "\n".join(text[-lines:])
    return ""


def run_omnisafe(
    spec: RunSpec,
    run_dir: Path,
    *,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Path:
    """Train ``spec`` (``omnisafe:<NAME>``) with OmniSafe into ``run_dir``; see the module doc.

    Called by :func:`safebench.training.runner.run` after it has checked ``spec.json`` and
    skipped finished runs. Writes ``status.json`` (``running``, then ``done`` or ``failed``,
    through :class:`~safebench.results.store.RunRecord`), ``manifest.json`` and
    ``metrics.parquet`` (rewritten
    after every epoch OmniSafe logs, so launchers see progress). ``progress`` gets every new
    metrics row; ``should_stop()`` is polled after every epoch and, when true, stops OmniSafe
    and raises :class:`~safebench.errors.RunInterrupted` (the run then restarts from scratch).
    """
    resolve_config(spec.algo, spec.config)
    _check_mappable(spec)
    threads = torch.get_num_threads()  # the launcher pinned it to the run's resources.cpus
    device = "cpu" if resolve_device(spec.device).type == "cpu" else "cuda:0"
    run = RunDir(run_dir)
    restarted = _clean(run)
    # An earlier attempt's leftovers mean it did not finish: it is started again from scratch.
    extra: dict[str, Any] = {"restarted": restarted}
    if restarted:
        extra["note"] = "restarted from scratch (OmniSafe cannot resume)"
    run.write_manifest(
        {**manifest(), "device": device, "backend": "omnisafe", "omnisafe": version("omnisafe")}
    )
    job = {
        "algo": algorithm_name(spec.algo),
        "env_id": spec.env_id,
        "custom_cfgs": custom_cfgs(spec, run_dir, threads=threads, device=device),
        "error_file": str(run.omnisafe_error),
    }
    child: subprocess.Popen[bytes] | None = None
    with run.record.training(on_interrupt=RESTART_NOTE, resumed=False, **extra) as record:
        try:
            with open(run.omnisafe_console, "wb") as console:
                child = subprocess.Popen(
                    [sys.executable, "-m", "safebench.backends.omnisafe", json.dumps(job)],
                    cwd=run_dir,  # anything OmniSafe writes relative to cwd stays in the run
                    env=_child_env(threads),
                    stdout=console,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    # Ctrl-C reaches the parent only, which then stops the child in order.
                    start_new_session=True,
                )
            # The child's pid, for whoever has to make sure it is gone (tests, an operator).
            record.running(resumed=False, pid=child.pid, **extra)
            frame = _follow(child, spec, run, progress, should_stop)
            _check_finished(child, spec, run, frame)
        finally:
            if child is not None:
                _stop(child)
        record.done(
            steps=int(frame["steps"].iloc[-1]),
            wall_time=float(frame["wall_time"].iloc[-1]),
            restarted=restarted,
        )
    return run_dir


def _follow(
    child: subprocess.Popen[bytes],
    spec: RunSpec,
    run: RunDir,
    progress: ProgressFn | None,
    should_stop: Callable[[], bool] | None,
) -> pd.DataFrame:
    """Mirror ``progress.csv`` into ``metrics.parquet`` until the child exits; the last frame.

    Raises :class:`RunInterrupted` (after stopping the child) when ``should_stop()`` says so.
    """
    frame = pd.DataFrame()
    seen: tuple[int, int] | None = None
    while True:
        code = child.poll()  # read before the last sync, so no epoch is missed
        folder = _progress_folder(run)
        stat = (folder / "progress.csv").stat() if folder is not None else None
        stamp = (stat.st_mtime_ns, stat.st_size) if stat is not None else None
        # After the child has exited the log is read whatever its stamp says: two writes
        # within one file-system clock tick leave the modification time unchanged.
        if folder is not None and (stamp != seen or code is not None):
            seen = stamp
            with contextlib.suppress(MalformedRun):  # no complete epoch yet
                new = metrics_from_progress(folder, spec.steps_per_epoch)
                if len(new) > len(frame):
                    run.write_metrics(new)
                    old, frame = len(frame), new
                    for row in frame.iloc[old:].to_dict("records"):
                        if progress is not None:
                            progress({**row, "epochs": spec.epochs, "run_dir": str(run.path)})
                    last = len(frame) >= spec.epochs
                    if should_stop is not None and not last and should_stop():
                        _stop(child)
                        raise RunInterrupted(str(run.path))
        if code is not None:
            return frame
        time.sleep(POLL_S)


def _check_finished(
    child: subprocess.Popen[bytes], spec: RunSpec, run: RunDir, frame: pd.DataFrame
) -> None:
    """Raise if OmniSafe failed (its config refusal as a :class:`UserError`) or stopped early."""
    code = child.returncode
    if code != 0:
        error_file = run.omnisafe_error
        if error_file.exists():
            message = json.loads(error_file.read_text())["error"]
            raise UserError(f"{spec.algo} on {spec.env_id}: {message}")
        raise RuntimeError(
            f"OmniSafe exited with status {code}; the end of {run.omnisafe_console}:\n"
            f"{_log_tail(run.omnisafe_console)}"
        )
    if len(frame) != spec.epochs:
        raise RuntimeError(
            f"OmniSafe logged {len(frame)} of {spec.epochs} epochs; see {run.omnisafe_console}"
        )


# --------------------------------------------------------------------------- the child


def _child_main(job: dict[str, Any]) -> int:
    """Build OmniSafe's agent and train it; a config OmniSafe refuses -> the error file, 2."""
    # End as soon as the parent (a launcher or Ray worker) is gone, killed or not.
    procs.exit_when_gone(os.getppid(), poll_s=0.2, name="omnisafe-exit-with-parent")
    from safebench.envs.factory import import_safety_gymnasium

    import_safety_gymnasium()  # the Python 3.11 shim must come before OmniSafe imports it
    import omnisafe
    from omnisafe.envs import support_envs

    def refuse(message: str) -> int:
        Path(job["error_file"]).write_text(json.dumps({"error": message}))
        return 2

    if job["env_id"] not in support_envs():
        return refuse(
            f"OmniSafe has no env {job['env_id']!r}: it runs Safety-Gymnasium tasks (e.g. "
            "SafetyPointGoal1-v0, SafetyHopperVelocity-v1), not safebench's built-in or custom "
            "envs"
        )
    try:
        agent = omnisafe.Agent(job["algo"], job["env_id"], custom_cfgs=job["custom_cfgs"])
    except (AssertionError, KeyError, TypeError, ValueError) as exc:
        # OmniSafe validates its config with asserts and KeyErrors
        return refuse(f"OmniSafe refused the config: {type(exc).__name__}: {exc}")
    agent.learn()
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(json.loads(sys.argv[1])))
