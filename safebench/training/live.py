"""Live curves of a run while it trains: TensorBoard event files (and W&B offline, optional).

``metrics.parquet`` stays the source of truth; this module only mirrors each epoch's metrics
row, as it is appended, into ``<run>/tb/`` (TensorBoard) and ``<run>/wandb/`` (W&B, offline),
under OmniSafe's metric names so that dashboards made for OmniSafe runs work unchanged:

============================  ==========================================================
metrics.parquet column        logged as
============================  ==========================================================
``epoch``                     ``Train/Epoch`` (the value; the step is ``epoch + 1``)
``steps``                     ``TotalEnvSteps``
``ep_ret/ep_cost/ep_len``     ``Metrics/EpRet``, ``Metrics/EpCost``, ``Metrics/EpLen``
``eval_ret/cost/len``         ``Metrics/TestEpRet``, ``Metrics/TestEpCost``, ``Metrics/TestEpLen``
``time_rollout/update/eval``  ``Time/Rollout``, ``Time/Update``, ``Time/Evaluate``
``wall_time``                 ``Time/Total``
(derived)                     ``Time/Epoch`` (rollout + update + eval), ``Time/FPS``
``algo/kl``                   ``Train/KL`` (mean KL of the update, OmniSafe's meaning)
``algo/<key>``                ``Algo/<key>`` (each algorithm's other diagnostics)
``episodes, epoch_episodes``  ``Train/TotalEpisodes``, ``Train/EpochEpisodes``
any other column              ``Extra/<column>``
============================  ==========================================================

The step of every scalar is ``epoch + 1``, as OmniSafe's logger counts (its ``Train/Epoch``
value starts at 0, its TensorBoard step at 1). NaN values (no episode finished in the
window, no evaluation this epoch) are not logged: a curve has no point there.

Resume without duplicates: when a run resumes, the logger reads the (tag, step) pairs that
its ``tb/`` event files already hold and writes only the missing ones, including the rows
of earlier epochs that never reached TensorBoard (a run killed between its checkpoint and
the flush, or one that trained with logging off). Each epoch is flushed at once, so curves
are live and a kill loses at most what the checkpoint also lost.

W&B runs offline only (no network, no account): ``<run>/wandb/offline-run-*`` folders that
``wandb sync`` uploads later. Each training session logs the epochs it trains (a W&B server
drops steps it has already seen).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["LiveLog", "logged_steps", "omnisafe_scalars"]

EPOCH_TAG = "Train/Epoch"

_NAMES = {
    "steps": "TotalEnvSteps",
    "ep_ret": "Metrics/EpRet",
    "ep_cost": "Metrics/EpCost",
    "ep_len": "Metrics/EpLen",
    "eval_ret": "Metrics/TestEpRet",
    "eval_cost": "Metrics/TestEpCost",
    "eval_len": "Metrics/TestEpLen",
    "time_rollout": "Time/Rollout",
    "time_update": "Time/Update",
    "time_eval": "Time/Evaluate",
    "wall_time": "Time/Total",
    "episodes": "Train/TotalEpisodes",
    "epoch_episodes": "Train/EpochEpisodes",
}


def omnisafe_scalars(row: Mapping[str, Any], steps_before: float) -> dict[str, float]:
    """One metrics row as ``{OmniSafe tag: value}``, NaN and non-numbers left out.

    ``steps_before``: the run's env steps before this epoch (for ``Time/FPS``).
    ``Train/Epoch`` comes last: its presence in an event file marks a complete epoch.
    """
    out: dict[str, float] = {}
    for key, value in row.items():
        if key == "epoch" or isinstance(value, bool) or not isinstance(value, numbers.Real):
            continue  # (numbers.Real: NumPy scalars too)
        if key == "algo/kl":
            tag = "Train/KL"
        elif key.startswith("algo/"):
            tag = "Algo/" + key.removeprefix("algo/")
        else:
            tag = _NAMES.get(key, f"Extra/{key}")
        out[tag] = float(value)
    parts = [row.get(k) for k in ("time_rollout", "time_update", "time_eval")]
    if all(isinstance(p, numbers.Real) for p in parts):
        epoch_time = float(sum(parts))  # type: ignore[arg-type]  # checked just above
        out["Time/Epoch"] = epoch_time
        if epoch_time > 0 and isinstance(row.get("steps"), numbers.Real):
            out["Time/FPS"] = (float(row["steps"]) - steps_before) / epoch_time
    out = {tag: value for tag, value in out.items() if math.isfinite(value)}
    out[EPOCH_TAG] = float(row["epoch"])
    return out


def logged_steps(tb_dir: Path) -> dict[str, set[int]]:
    """The steps each tag already has in the event files of ``tb_dir`` (empty if none).

    A record cut short by a kill ends the read of its file, as TensorBoard itself does.
    """
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    seen: dict[str, set[int]] = {}
    if not tb_dir.is_dir():
        return seen
    for path in sorted(tb_dir.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                seen.setdefault(value.tag, set()).add(int(event.step))
    return seen


class LiveLog:
    """Mirrors a run's metrics rows into TensorBoard and/or W&B (offline) as they come.

    ``LiveLog(tensorboard=..., wandb=..., name=..., config=...)``, then :meth:`backfill`
    with the rows the run already has (a resumed run), :meth:`epoch` with the rows each time
    one is appended, :meth:`close` at the end. ``tensorboard`` is the folder of the event
    files and ``wandb`` the folder of the offline W&B runs (the run directory's ``tb/`` and
    ``wandb/``: ``safebench.results.store.RunDir`` names them); with both None every call does
    nothing (and nothing is imported).
    """

    def __init__(
        self,
        *,
        tensorboard: Path | None = None,
        wandb: Path | None = None,
        name: str = "",
        run_id: str = "",
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self._writer: Any = None
        self._wandb: Any = None
        self._seen: dict[str, set[int]] = {}
        if tensorboard is not None:
            from torch.utils.tensorboard import SummaryWriter

            self._seen = logged_steps(Path(tensorboard))
            # flush_secs is moot: every epoch is flushed as soon as it is written
            self._writer = SummaryWriter(log_dir=str(tensorboard), max_queue=1000)
        if wandb is not None:
            self._wandb = _wandb_offline(Path(wandb), name, run_id, dict(config or {}))

    @property
    def active(self) -> bool:
        return self._writer is not None or self._wandb is not None

    def backfill(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Write the rows of earlier epochs that TensorBoard does not hold yet (resume)."""
        for i, row in enumerate(rows):
            self._write_tb(row, _steps_before(rows, i))
        if self._writer is not None:
            self._writer.flush()

    def epoch(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Log the newest of the run's metrics ``rows`` (the one its epoch just appended)."""
        row, steps_before = rows[-1], _steps_before(rows, len(rows) - 1)
        self._write_tb(row, steps_before)
        if self._writer is not None:
            self._writer.flush()  # live: the epoch is on disk as soon as it is done
        if self._wandb is not None:
            self._wandb.log(omnisafe_scalars(row, steps_before), step=int(row["epoch"]) + 1)

    def _write_tb(self, row: Mapping[str, Any], steps_before: float) -> None:
        if self._writer is None:
            return
        step = int(row["epoch"]) + 1
        for tag, value in omnisafe_scalars(row, steps_before).items():
            steps = self._seen.setdefault(tag, set())
            if step in steps:
                continue  # logged by an earlier session of this run
            self._writer.add_scalar(tag, value, global_step=step)
            steps.add(step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None


def _steps_before(rows: Sequence[Mapping[str, Any]], i: int) -> float:
    """The run's env steps before the epoch of ``rows[i]``."""
    return float(rows[i - 1]["steps"]) if i > 0 else 0.0


def _wandb_offline(folder: Path, name: str, run_id: str, config: dict[str, Any]) -> Any:
    """An offline W&B run in ``folder`` (quiet: no console capture, no system stats).

    W&B writes into ``<dir>/wandb/`` of the ``dir`` it is given: ``folder`` is a run
    directory's ``wandb/``, and ``dir`` the run directory."""
    import wandb

    folder.mkdir(parents=True, exist_ok=True)
    settings = wandb.Settings(
        silent=True, console="off", x_disable_stats=True, x_disable_machine_info=True
    )
    return wandb.init(
        mode="offline",
        dir=str(folder.parent),
        project="safebench",
        name=name or None,
        id=run_id[:32] or None,  # one W&B run per safebench run: sessions resume it on sync
        resume="allow",
        config=config,
        settings=settings,
    )
