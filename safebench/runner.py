"""``run(spec)``: the training loop of ONE run, with checkpoints and exact resume.

Per epoch (ALGORITHMS.md §1.1): roll out ``steps_per_epoch`` env steps, log the episode
statistics (window means of undiscounted EpRet / EpCost / EpLen; Ĵc = mean EpCost of the last
100 finished episodes), update the algorithm, evaluate every ``eval.every_epochs`` epochs and
at the end on separate eval seeds, append one metrics row, and checkpoint. Off-policy
algorithms interleave env steps and updates on a replay buffer instead
(:class:`~safebench.core.offpolicy.OffPolicyCollector`, whose checkpoint holds the buffer).

The checkpoint holds everything that determines the future of the run — algorithm state
(networks, optimisers, multipliers, RNGs), observation normaliser, action-noise RNG, episode
accounting, each env's episode seed and the actions of its unfinished episode (replayed on
resume, see :class:`safebench.envs.VectorCMDP`), and the metrics rows — so a killed run
resumes to exactly the numbers an uninterrupted run produces.
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
from safebench.core.base import resolve_device
from safebench.core.offpolicy import OffPolicyAlgorithm, OffPolicyCollector
from safebench.core.onpolicy import OnPolicyAlgorithm
from safebench.core.rollout import Collector, evaluate
from safebench.envs import make_vector_env
from safebench.errors import UserError
from safebench.spec import RunSpec
from safebench.store import (
    atomic_write,
    atomic_write_json,
    manifest,
    read_metrics,
    read_status,
    write_metrics,
    write_status,
)

__all__ = ["RunInterrupted", "run"]

CHECKPOINT = "checkpoint.pt"
ProgressFn = Callable[[dict[str, Any]], None]


class RunInterrupted(Exception):
    """Raised when ``should_stop`` asked the run to stop (checkpoint kept)."""


def _check_spec(run_dir: Path, spec: RunSpec) -> None:
    path = run_dir / "spec.json"
    data = spec.model_dump(mode="json")
    if path.exists():
        import json

        old = json.loads(path.read_text())
        old.pop("run_id", None)
        if old != data:
            raise UserError(
                f"{run_dir} holds a different run spec than the one requested; "
                "use another output directory or remove that run directory"
            )
        return
    atomic_write_json(path, {**data, "run_id": spec.run_id})


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
    if read_status(run_dir).get("status") == "done":
        return run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    _check_spec(run_dir, spec)
    if registry.is_omnisafe(spec.algo):
        # OmniSafe's own training loop, in a child process (algorithms/omnisafe.py)
        from algorithms.omnisafe import run_omnisafe

        return run_omnisafe(spec, run_dir, progress=progress, should_stop=should_stop)
    entry = registry.get(spec.algo)
    config = registry.resolve_config(spec.algo, spec.config)
    device = resolve_device(spec.device)
    ckpt_path = run_dir / CHECKPOINT
    resumed = ckpt_path.exists()
    write_status(run_dir, "running", resumed=resumed)
    if not (run_dir / "manifest.json").exists():
        atomic_write_json(run_dir / "manifest.json", {**manifest(), "device": str(device)})
    venv = eval_venv = None
    try:
        venv = make_vector_env(spec.env_id, spec.num_envs, **spec.env_kwargs)
        algo = entry.cls(
            venv.observation_space,
            venv.action_space,
            config,
            cost_limit=spec.cost_limit,
            seed=spec.seed,
            device=device,
        )
        if not isinstance(algo, (OnPolicyAlgorithm, OffPolicyAlgorithm)):
            raise UserError(f"algorithm {spec.algo!r} is {entry.kind}; its runner is not available")
        set_schedule = getattr(algo, "set_schedule", None)
        if callable(set_schedule):  # e.g. P3O's linear learning-rate decay over the run
            set_schedule(spec.epochs)
        collector = (
            OffPolicyCollector(  # off-policy: replay buffer and update schedule live here
                venv,
                spec.seed,
                algo,
                normalize_obs=config.obs_normalize,
                window=getattr(config, "ep_cost_window", 100),
            )
            if isinstance(algo, OffPolicyAlgorithm)
            else Collector(
                venv,
                spec.seed,
                normalize_obs=config.obs_normalize,
                window=getattr(config, "ep_cost_window", 100),
                clip_actions=getattr(config, "clip_actions", False),
            )
        )
        rows: list[dict[str, Any]] = []
        start_epoch, elapsed = 0, 0.0
        if resumed:
            state = torch.load(ckpt_path, map_location=device, weights_only=False)
            algo.load_state_dict(state["algo"])
            collector.load_state_dict(state["collector"])
            rows, start_epoch, elapsed = state["rows"], state["epoch"], state["elapsed"]
        if spec.eval.episodes > 0:
            eval_venv = make_vector_env(spec.env_id, 1, **spec.env_kwargs)
        for epoch in range(start_epoch, spec.epochs):
            t0 = time.perf_counter()
            steps = min(spec.steps_per_epoch, spec.budget - collector.total_steps)
            if isinstance(algo, OffPolicyAlgorithm):
                # Env steps and updates interleave; the collector times the updates.
                assert isinstance(collector, OffPolicyCollector)
                stats, info = collector.train_epoch(steps)
                t2 = time.perf_counter()
                t1 = t2 - collector.update_time
            else:
                rollout, stats = collector.collect(algo, steps)
                t1 = time.perf_counter()
                info = algo.update(rollout)
                t2 = time.perf_counter()
            row: dict[str, Any] = {
                "epoch": epoch,
                "steps": collector.total_steps,
                "episodes": collector.total_episodes,
                "ep_ret": stats.ep_ret,
                "ep_cost": stats.ep_cost,
                "ep_len": stats.ep_len,
                "epoch_episodes": stats.episodes,
                "eval_ret": float("nan"),
                "eval_cost": float("nan"),
                "eval_len": float("nan"),
            }
            last = epoch == spec.epochs - 1
            if eval_venv is not None and ((epoch + 1) % spec.eval.every_epochs == 0 or last):
                ret, cost, length = evaluate(
                    algo,
                    eval_venv,
                    collector.normalize,
                    spec.eval.episodes,
                    spec.seed,
                    spec.eval.deterministic,
                    # on-policy: as in training; CVPO clips, as its official evaluation does
                    clip_actions=getattr(config, "clip_actions", True),
                )
                row.update(eval_ret=ret, eval_cost=cost, eval_len=length)
            row.update({f"algo/{k}": float(v) for k, v in info.items()})
            bad = _finite(row)
            if bad:
                raise FloatingPointError(f"non-finite values at epoch {epoch}: {', '.join(bad)}")
            t3 = time.perf_counter()
            elapsed += t3 - t0
            row.update(
                time_rollout=t1 - t0, time_update=t2 - t1, time_eval=t3 - t2, wall_time=elapsed
            )
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
            write_metrics(run_dir / "metrics.parquet", rows)
            if progress is not None:
                progress({**row, "epochs": spec.epochs, "run_dir": str(run_dir)})
            if should_stop is not None and should_stop() and not last:
                write_status(run_dir, "queued", note="interrupted; resumes from checkpoint")
                raise RunInterrupted(str(run_dir))
        write_status(run_dir, "done", steps=collector.total_steps, wall_time=elapsed)
        return run_dir
    except RunInterrupted:
        raise
    except KeyboardInterrupt:
        write_status(run_dir, "queued", note="interrupted; resumes from checkpoint")
        raise
    except BaseException as exc:
        write_status(run_dir, "failed", error=exc)
        raise
    finally:
        for v in (venv, eval_venv):
            if v is not None:
                v.close()


def metrics_frame(run_dir: Path) -> Any:
    """The run's metrics as a DataFrame (one row per epoch)."""
    return read_metrics(run_dir / "metrics.parquet")


def set_threads(n: int) -> None:
    """Pin torch's intra-op thread pool to ``n`` threads for this process."""
    torch.set_num_threads(max(1, n))
