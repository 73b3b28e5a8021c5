"""``run(spec)``: the training loop of ONE run, with checkpoints and exact resume.

Per epoch (docs/algorithms.md#the-epoch) the loop is the same for on- and off-policy algorithms::

    while the epoch has env steps left:
        data, stats = collector.collect(algo, steps_left)   # a Rollout, or a Replay round
        info        = algo.update(data)

then it logs the episode statistics (window means of undiscounted EpRet / EpCost / EpLen; Ĵc
= mean EpCost of the last ``ep_cost_window`` finished episodes), evaluates every
``eval.every_epochs`` epochs and at the end on separate eval seeds, appends one metrics row
and checkpoints. An on-policy collector hands over the whole epoch as one rollout; the
off-policy one hands over a round at a time (the env steps until the next update round is
due, :class:`~safebench.core.offpolicy.OffPolicyCollector`), so env steps and updates
interleave on the official schedule.

The checkpoint holds everything that determines the future of the run — algorithm state
(networks, optimisers, multipliers, RNGs), observation normaliser, action-noise RNG, episode
accounting, the replay buffer, each env's episode seed and the actions of its unfinished
episode (replayed on resume, see :class:`safebench.envs.factory.VectorCMDP`), and the metrics rows —
so a killed run resumes to exactly the numbers an uninterrupted run produces.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from safebench import registry
from safebench.backends import is_omnisafe
from safebench.core.base import Algorithm, resolve_device
from safebench.core.offpolicy import OffPolicyAlgorithm, OffPolicyCollector
from safebench.core.onpolicy import OnPolicyAlgorithm
from safebench.core.rollout import Collector, evaluate
from safebench.envs.factory import VectorCMDP, make_vector_env
from safebench.errors import RunInterrupted, UserError
from safebench.results.store import RunDir, atomic_write, check_run, manifest, set_aside
from safebench.schema.spec import RunSpec, same_run
from safebench.training.live import LiveLog

__all__ = [
    "build_algorithm",
    "evaluate_policy",
    "load_policy",
    "metrics_frame",
    "run",
    "set_threads",
]

RESUME_NOTE = "resumes from checkpoint"
ProgressFn = Callable[[dict[str, Any]], None]


def _check_spec(run: RunDir, spec: RunSpec) -> None:
    data = spec.model_dump(mode="json")
    if run.spec.exists():
        if not same_run(run.read_spec(), spec):
            raise UserError(
                f"{run.path} holds a different run spec than the one requested; "
                "use another output directory or remove that run directory"
            )
        return
    run.write_spec({**data, "run_id": spec.run_id})


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    atomic_write(path, lambda f: f.write(data))


def _finite(row: dict[str, Any]) -> list[str]:
    bad = []
    for key, value in row.items():
        if key.startswith(("eval_", "ep_")):
            continue  # NaN there only means "no episode finished / no evaluation yet"
        if isinstance(value, float) and not math.isfinite(value):
            bad.append(key)
    return bad


def run(
    spec: RunSpec,
    root: Path,
    *,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Path:
    """Train (or resume, or skip if done) the run of ``spec`` under ``root``.

    Returns the run directory. A run whose numbers go non-finite, or that raises, is marked
    ``failed`` with its error (``status.json``, ``traceback.txt``) and the exception re-raised.
    ``should_stop()`` is polled after every epoch; when it returns True the run stops after
    checkpointing and raises :class:`RunInterrupted`.
    """
    run_dir = spec.run_dir(root)
    files = RunDir(run_dir)
    check = check_run(run_dir) if run_dir.is_dir() else None
    if check is not None and check.damaged:
        set_aside(check)  # a launcher did it already; `train` of a damaged run comes here
    elif files.read_status().get("status") == "done":
        return run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    _check_spec(files, spec)
    if is_omnisafe(spec.algo):
        # OmniSafe's own training loop, in a child process (safebench/backends/omnisafe.py)
        from safebench.backends.omnisafe import run_omnisafe

        return run_omnisafe(spec, run_dir, progress=progress, should_stop=should_stop)
    device = resolve_device(spec.device)
    ckpt_path = files.checkpoint
    resumed = ckpt_path.exists()
    with files.record.training(on_interrupt=RESUME_NOTE, resumed=resumed) as record:
        if not files.manifest.exists():
            files.write_manifest({**manifest(), "device": str(device)})
        venvs: list[VectorCMDP] = []
        live: LiveLog | None = None
        try:
            venvs.append(make_vector_env(spec.env_id, spec.num_envs, **spec.env_kwargs))
            algo = build_algorithm(spec, venvs[0], device)
            collector = _collector(algo, venvs[0], spec.seed)
            rows: list[dict[str, Any]] = []
            start_epoch, elapsed = 0, 0.0
            if resumed:
                state = torch.load(ckpt_path, map_location=device, weights_only=False)
                algo.load_state_dict(state["algo"])
                collector.load_state_dict(state["collector"])
                rows, start_epoch, elapsed = state["rows"], state["epoch"], state["elapsed"]
                # A process killed between the checkpoint and the metrics write of an epoch
                # leaves the metrics one epoch behind: the checkpoint's rows are authoritative.
                files.write_metrics(rows)
            live = _live_log(spec, files, rows)
            if spec.eval.episodes > 0:
                venvs.append(make_vector_env(spec.env_id, 1, **spec.env_kwargs))
            eval_venv = venvs[1] if len(venvs) > 1 else None
            for epoch in range(start_epoch, spec.epochs):
                row = _epoch(spec, epoch, algo, collector, eval_venv, elapsed)
                elapsed = row["wall_time"]
                rows.append(row)
                _save_checkpoint(
                    ckpt_path,
                    {
                        "algo": algo.state_dict(),
                        "collector": collector.state_dict(),
                        "rows": rows,
                        "epoch": epoch + 1,
                        "elapsed": elapsed,
                    },
                )
                files.write_metrics(rows)
                if live is not None:  # after the checkpoint: curves never run ahead of it
                    live.epoch(rows)
                if progress is not None:
                    progress({**row, "epochs": spec.epochs, "run_dir": str(run_dir)})
                last = epoch == spec.epochs - 1
                if should_stop is not None and should_stop() and not last:
                    raise RunInterrupted(str(run_dir))
        finally:
            if live is not None:
                live.close()
            for venv in venvs:
                venv.close()
        record.done(steps=collector.total_steps, wall_time=elapsed)
    return run_dir


def build_algorithm(spec: RunSpec, venv: VectorCMDP, device: torch.device) -> Algorithm:
    """The run's algorithm, freshly initialised, for the spaces of ``venv``."""
    entry = registry.get(spec.algo)
    algo = entry.cls(
        venv.observation_space,
        venv.action_space,
        registry.resolve_config(spec.algo, spec.config),
        cost_limit=spec.cost_limit,
        seed=spec.seed,
        device=device,
    )
    algo.set_schedule(spec.epochs)  # e.g. P3O's linear learning-rate decay
    return algo


def load_policy(
    spec: RunSpec, checkpoint: Path, venv: VectorCMDP
) -> tuple[Algorithm, Collector, dict[str, Any]]:
    """The algorithm and collector of a checkpoint, on the CPU, for evaluation on ``venv``.

    The algorithm gets its whole state and the collector its observation normaliser (what
    the policy's inputs depend on); the collector's training envs are not restored.
    Returns the checkpoint's other entries too (``epoch``, ``rows``, ...).
    """
    device = torch.device("cpu")
    algo = build_algorithm(spec, venv, device)
    collector = _collector(algo, venv, spec.seed)
    state = torch.load(checkpoint, map_location=device, weights_only=False)
    algo.load_state_dict(state["algo"])
    if collector.normalizer is not None:
        collector.normalizer.load_state_dict(state["collector"]["normalizer"])
    return algo, collector, state


def evaluate_policy(
    algo: Algorithm,
    collector: Collector,
    venv: VectorCMDP,
    episodes: int,
    seed: int,
    deterministic: bool,
    *,
    stream: int = 1,
) -> tuple[float, float, float]:
    """Mean (return, cost, length) of ``episodes`` evaluation episodes: the one evaluation
    path of the runner's periodic evaluation and of ``safebench eval`` (stream 2)."""
    return evaluate(
        algo,
        venv,
        collector.normalize,
        episodes,
        seed,
        deterministic,
        to_env=collector.action_map,  # what the env gets in training
        stream=stream,
    )


def _live_log(spec: RunSpec, run: RunDir, rows: list[dict[str, Any]]) -> LiveLog | None:
    """The run's live logger (None when logging is off), holding every row so far."""
    if not (spec.logging.tensorboard or spec.logging.wandb):
        return None
    live = LiveLog(
        tensorboard=run.tensorboard if spec.logging.tensorboard else None,
        wandb=run.wandb if spec.logging.wandb else None,
        name=f"{spec.label}/{spec.env_id}/seed{spec.seed}",
        run_id=spec.run_id,
        config=spec.model_dump(mode="json"),
    )
    live.backfill(rows)
    return live


def _collector(algo: Algorithm, venv: VectorCMDP, seed: int) -> Collector:
    """The algorithm kind's collector, set up by the run's env protocol (one typed
    :class:`~safebench.core.base.EnvProtocol` for both kinds, read off the config)."""
    if isinstance(algo, OffPolicyAlgorithm):
        protocol = algo.config.protocol()
        return OffPolicyCollector(  # the replay buffer and the update schedule live here
            venv,
            seed,
            algo,
            normalize_obs=protocol.normalize_obs,
            window=protocol.ep_cost_window,
            clip_actions=protocol.clip_actions,
        )
    if isinstance(algo, OnPolicyAlgorithm):
        protocol = algo.config.protocol()
        return Collector(
            venv,
            seed,
            normalize_obs=protocol.normalize_obs,
            window=protocol.ep_cost_window,
            action_scale=protocol.action_scale,
            clip_actions=protocol.clip_actions,
            obs_normalizer=protocol.obs_normalizer,
            truncation_bootstrap=protocol.truncation_bootstrap,
        )
    raise UserError(f"algorithm {algo.name!r} is {algo.kind}; its runner is not available")


def _epoch(
    spec: RunSpec,
    epoch: int,
    algo: Algorithm,
    collector: Collector,
    eval_venv: VectorCMDP | None,
    elapsed: float,
) -> dict[str, Any]:
    """Collect, update, evaluate: one epoch, as its metrics row."""
    t0 = time.perf_counter()
    steps = min(spec.steps_per_epoch, spec.budget - collector.total_steps)
    left = max(1, steps // collector.num_envs) * collector.num_envs
    infos: list[dict[str, float]] = []
    episodes = 0
    update_time = 0.0
    while left > 0:
        # _collector paired the collector with the algorithm's kind
        data, stats = collector.collect(algo, left)  # type: ignore[arg-type]
        left -= stats.steps
        episodes += stats.episodes
        t_update = time.perf_counter()
        infos.append(algo.update(data))
        update_time += time.perf_counter() - t_update
    t2 = time.perf_counter()
    row: dict[str, Any] = {
        "epoch": epoch,
        "steps": collector.total_steps,
        "episodes": collector.total_episodes,
        "ep_ret": stats.ep_ret,
        "ep_cost": stats.ep_cost,
        "ep_len": stats.ep_len,
        "epoch_episodes": episodes,
        "eval_ret": float("nan"),
        "eval_cost": float("nan"),
        "eval_len": float("nan"),
    }
    last = epoch == spec.epochs - 1
    if eval_venv is not None and ((epoch + 1) % spec.eval.every_epochs == 0 or last):
        ret, cost, length = evaluate_policy(
            algo, collector, eval_venv, spec.eval.episodes, spec.seed, spec.eval.deterministic
        )
        row.update(eval_ret=ret, eval_cost=cost, eval_len=length)
    info = algo.epoch_info(infos)
    info.update(collector.diagnostics())
    row.update({f"algo/{k}": float(v) for k, v in info.items()})
    bad = _finite(row)
    if bad:
        raise FloatingPointError(f"non-finite values at epoch {epoch}: {', '.join(bad)}")
    t3 = time.perf_counter()
    row.update(
        time_rollout=t2 - t0 - update_time,
        time_update=update_time,
        time_eval=t3 - t2,
        wall_time=elapsed + (t3 - t0),
    )
    return row


def metrics_frame(run_dir: Path) -> Any:
    """The run's metrics as a DataFrame (one row per epoch)."""
    return RunDir(run_dir).read_metrics()


def set_threads(n: int) -> None:
    """Pin torch's intra-op thread pool to ``n`` threads for this process."""
    torch.set_num_threads(max(1, n))
