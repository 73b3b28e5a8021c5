"""Live logging: TensorBoard event files equal to metrics.parquet, across interrupts; W&B
offline; the switch never changes a run's id."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from safebench import registry
from safebench.errors import RunInterrupted
from safebench.results.store import RunDir, read_metrics
from safebench.schema.spec import EvalSpec, LoggingSpec, RunSpec, parse_experiment, same_run
from safebench.training.live import omnisafe_scalars
from safebench.training.runner import run
from tests.learning import torch_threads

ENV = "safebench/ContinuousTarget-v0"
EPOCHS = 6


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(torch_threads())


def spec(tensorboard: bool = True, wandb: bool = False, epochs: int = EPOCHS) -> RunSpec:
    return RunSpec(
        algo="cpo",
        config=registry.resolve_config("cpo", {}).model_dump(mode="json"),
        env_id=ENV,
        seed=4,
        budget=epochs * 400,
        steps_per_epoch=400,
        cost_limit=5.0,
        eval=EvalSpec(episodes=2, every_epochs=2),
        num_envs=2,
        device="cpu",
        logging=LoggingSpec(tensorboard=tensorboard, wandb=wandb),
    )


def stop_after(epochs: int) -> object:
    seen: list[int] = []

    def stop() -> bool:
        seen.append(1)
        return len(seen) == epochs

    return stop


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the run's event files, read with TensorBoard's own reader."""
    acc = EventAccumulator(str(RunDir(run_dir).tensorboard), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def assert_events_equal_parquet(run_dir: Path) -> None:
    """Each epoch's scalars = its metrics.parquet row (as float32, TensorBoard's precision),
    every tag logged once per step, steps 1..epochs as OmniSafe counts them."""
    frame = read_metrics(run_dir / "metrics.parquet")
    assert list(frame["epoch"]) == list(range(EPOCHS))
    events = scalars(run_dir)
    for tag, points in events.items():
        steps = [s for s, _ in points]
        assert steps == sorted(set(steps)), f"{tag}: duplicate or unordered steps {steps}"
    names = {
        "Train/Epoch": "epoch",
        "TotalEnvSteps": "steps",
        "Metrics/EpRet": "ep_ret",
        "Metrics/EpCost": "ep_cost",
        "Metrics/EpLen": "ep_len",
        "Metrics/TestEpRet": "eval_ret",
        "Metrics/TestEpCost": "eval_cost",
        "Metrics/TestEpLen": "eval_len",
        "Time/Rollout": "time_rollout",
        "Time/Update": "time_update",
        "Time/Evaluate": "time_eval",
        "Time/Total": "wall_time",
        "Train/KL": "algo/kl",
        "Algo/lambda": "algo/lambda",
    }
    rows = frame.to_dict("records")
    for tag, column in names.items():
        expected = [
            (int(r["epoch"]) + 1, float(np.float32(r[column])))
            for r in rows
            if not math.isnan(r[column])
        ]
        assert events[tag] == expected, tag
    # evaluation every 2 epochs: 3 points, at steps 2, 4, 6
    assert [s for s, _ in events["Metrics/TestEpRet"]] == [2, 4, 6]
    # every numeric column of the parquet file has its curve
    algo_columns = [c for c in frame.columns if c.startswith("algo/") and c != "algo/kl"]
    assert all(f"Algo/{c.removeprefix('algo/')}" in events for c in algo_columns)


def test_omnisafe_names_and_derived_times() -> None:
    row = {
        "epoch": 2, "steps": 3000, "episodes": 7, "ep_ret": 1.5, "ep_cost": float("nan"),
        "eval_ret": float("nan"), "algo/kl": 0.01, "algo/lambda": np.float64(0.3),
        "time_rollout": 1.0, "time_update": 0.5, "time_eval": 0.5, "wall_time": 9.0,
        "something_new": 4,
    }  # fmt: skip
    out = omnisafe_scalars(row, steps_before=2000)
    assert out == {
        "TotalEnvSteps": 3000.0,
        "Train/TotalEpisodes": 7.0,
        "Metrics/EpRet": 1.5,  # NaN cost and eval: no point
        "Train/KL": 0.01,
        "Algo/lambda": 0.3,
        "Time/Rollout": 1.0,
        "Time/Update": 0.5,
        "Time/Evaluate": 0.5,
        "Time/Total": 9.0,
        "Extra/something_new": 4.0,
        "Time/Epoch": 2.0,
        "Time/FPS": 500.0,
        "Train/Epoch": 2.0,
    }
    assert list(out)[-1] == "Train/Epoch"  # written last: it marks a complete epoch


def test_tensorboard_equals_parquet_after_interrupt_and_resume(tmp_path: Path) -> None:
    s = spec()
    with pytest.raises(RunInterrupted):
        run(s, tmp_path, should_stop=stop_after(2))  # type: ignore[arg-type]
    run_dir = s.run_dir(tmp_path)
    assert [s for s, _ in scalars(run_dir)["Train/Epoch"]] == [1, 2]  # live: already on disk
    with pytest.raises(RunInterrupted):
        run(s, tmp_path, should_stop=stop_after(2))  # type: ignore[arg-type]
    run(s, tmp_path)
    # three training sessions, three event files, each epoch in exactly one of them
    assert len(list(RunDir(run_dir).tensorboard.glob("events.out.tfevents.*"))) == 3
    assert_events_equal_parquet(run_dir)


def test_resume_backfills_epochs_that_never_reached_tensorboard(tmp_path: Path) -> None:
    """A run killed between its checkpoint and the flush, or trained with logging off, gets
    its missing epochs written when it resumes with TensorBoard on."""
    quiet = spec(tensorboard=False)
    with pytest.raises(RunInterrupted):
        run(quiet, tmp_path, should_stop=stop_after(3))  # type: ignore[arg-type]
    run_dir = quiet.run_dir(tmp_path)
    assert not RunDir(run_dir).tensorboard.exists()
    loud = spec(tensorboard=True)
    assert loud.run_id == quiet.run_id and loud.run_dir(tmp_path) == run_dir
    with pytest.raises(RunInterrupted):
        run(loud, tmp_path, should_stop=stop_after(1))  # type: ignore[arg-type]
    # lose the newest event file, as a kill before its flush would
    newest = max(RunDir(run_dir).tensorboard.glob("events.out.tfevents.*"))
    shutil.rmtree(RunDir(run_dir).tensorboard)
    assert not newest.exists()
    run(loud, tmp_path)
    assert_events_equal_parquet(run_dir)


def test_logging_is_not_part_of_the_run_id_nor_of_spec_json_at_default(tmp_path: Path) -> None:
    off, on = spec(tensorboard=False), spec(tensorboard=True, wandb=True)
    assert off.run_id == on.run_id
    assert "logging" not in off.model_dump(mode="json")  # spec.json as before the switch
    assert on.model_dump(mode="json")["logging"] == {"tensorboard": True, "wandb": True}
    record = {**off.model_dump(mode="json"), "run_id": off.run_id}
    assert same_run(record, on) and same_run(record, off)
    assert not same_run({**record, "seed": 5}, on)
    text = (
        f"name: t\nalgorithms: [cpo]\nenvironments: ['{ENV}']\nseeds: 1\nbudget: 800\n"
        "steps_per_epoch: 400\n"
    )
    default = parse_experiment(text)
    assert default.logging.tensorboard is False and default.logging.wandb is False
    assert parse_experiment(text + "logging: {tensorboard: true}\n").logging.tensorboard
    with pytest.raises(Exception, match=r"line 7.*tensorbord.*did you mean 'tensorboard'"):
        parse_experiment(text + "logging: {tensorbord: true}\n")
    with pytest.raises(Exception, match=r"line 7.*logging.*tensorboard"):
        parse_experiment(text + "logging: {tensorboard: 1}\n")


def test_wandb_offline_run_in_the_run_directory(tmp_path: Path) -> None:
    s = spec(tensorboard=False, wandb=True, epochs=2)
    run_dir = run(s, tmp_path)
    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and offline[0].name.endswith(s.run_id[:32])
    assert list(offline[0].glob("run-*.wandb")), "no W&B data file"
    assert not RunDir(run_dir).tensorboard.exists()
    frame = read_metrics(run_dir / "metrics.parquet")
    assert isinstance(frame, pd.DataFrame) and len(frame) == 2
    json.loads((run_dir / "spec.json").read_text())  # still a plain spec


def test_switch_turns_on_omnisafe_own_tensorboard_for_omnisafe_runs(tmp_path: Path) -> None:
    from safebench.backends.omnisafe import custom_cfgs

    def cfgs(tensorboard: bool) -> dict[str, object]:
        s = RunSpec(
            algo="omnisafe:CPO",
            config=registry.resolve_config("omnisafe:CPO", {}).model_dump(mode="json"),
            env_id="SafetyPointGoal1-v0",
            seed=0,
            budget=2000,
            steps_per_epoch=1000,
            cost_limit=25.0,
            logging=LoggingSpec(tensorboard=tensorboard),
        )
        logger: dict[str, object] = custom_cfgs(s, tmp_path, threads=1, device="cpu")["logger_cfgs"]
        return logger

    assert cfgs(True)["use_tensorboard"] is True and cfgs(False)["use_tensorboard"] is False
