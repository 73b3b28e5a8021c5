"""``omnisafe:<NAME>``: OmniSafe 0.5.0's own algorithms trained through ``safebench run``.

The fast tests check names, config overrides and the spec -> OmniSafe config mapping without
training. The others are real OmniSafe runs (SafetyHopperVelocity-v1, epochs of 1,000 steps,
seconds each) launched by the CLI or the runner, compared against the ``progress.csv`` and
``config.json`` OmniSafe itself wrote inside the run directory.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from safebench import registry
from safebench.backends.omnisafe import custom_cfgs, metrics_from_progress
from safebench.backends.omnisafe_config import OmniSafeConfig
from safebench.errors import RunInterrupted, UserError
from safebench.results.store import RunDir, load_runs, read_status
from safebench.schema.spec import (
    ExperimentError,
    RunSpec,
    expand,
    load_experiment,
    parse_experiment,
)
from safebench.training.runner import metrics_frame, run

REPO = Path(__file__).resolve().parents[2]
ENV = "SafetyHopperVelocity-v1"
COST_LIMIT = 10.0  # not OmniSafe's default 25, so that the mapping shows in config.json


def experiment(output: Path, *, epochs: int = 2, algorithms: str = "") -> str:
    algorithms = algorithms or (
        '[{name: "omnisafe:CPO", label: omnisafe-cpo}, '
        '{name: "omnisafe:PPOLag", label: omnisafe-ppolag, config: {algo_cfgs: {update_iters: 2}}}]'
    )
    return (
        f"name: omni\nalgorithms: {algorithms}\nenvironments: [{ENV}]\nseeds: [0]\n"
        f"budget: {epochs * 1000}\nsteps_per_epoch: 1000\ncost_limit: {COST_LIMIT}\n"
        f"device: cpu\nresources: {{cpus: 1}}\noutput: {output}\n"
    )


def cli(*args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    # COLUMNS: rich would wrap the launcher's lines at 80 columns without a terminal
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "COLUMNS": "400"}
    return subprocess.run(
        [sys.executable, "-m", "safebench.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        **kw,
    )


def spec(algo: str = "omnisafe:CPO", *, epochs: int = 2, **kw: Any) -> RunSpec:
    fields: dict[str, Any] = {
        "algo": algo,
        "label": algo.replace(":", "-"),
        "config": registry.resolve_config(algo).model_dump(mode="json"),
        "env_id": ENV,
        "seed": 1,
        "budget": epochs * 1000,
        "steps_per_epoch": 1000,
        "cost_limit": COST_LIMIT,
        "device": "cpu",
        **kw,
    }
    return RunSpec(**fields)


def omnisafe_folder(run_dir: Path) -> Path:
    """OmniSafe's own run folder: exactly one, inside the safebench run directory."""
    (progress,) = RunDir(run_dir).omnisafe_logs.rglob("progress.csv")
    return progress.parent


# --------------------------------------------------------------------------- names and configs


def test_names_and_overrides_are_checked_before_anything_runs() -> None:
    cfg = registry.resolve_config("omnisafe:CPO", {"algo_cfgs": {"target_kl": 0.02}})
    assert isinstance(cfg, OmniSafeConfig)
    assert cfg.model_dump(mode="json") == {"obs_normalize": True, "algo_cfgs": {"target_kl": 0.02}}
    # obs_normalize defaults to each algorithm's own YAML (True on-policy, False off-policy)
    assert registry.resolve_config("omnisafe:SACLag").model_dump() == {"obs_normalize": False}
    assert registry.is_registered("omnisafe:P3O") and registry.is_registered("cpo")
    assert not registry.is_registered("omnisafe:cpo") and not registry.is_registered("omnisafe:BCQ")

    def error(name: str, overrides: dict[str, Any] | None = None) -> str:
        with pytest.raises(UserError) as exc:
            registry.resolve_config(name, overrides)
        return str(exc.value)

    assert "Did you mean: omnisafe:CPO" in error("omnisafe:cpo")
    assert "offline algorithm" in error("omnisafe:BCQ")
    assert "omnisafe:<NAME>, e.g. omnisafe:CPO" in error("OmniSafe-CPO")
    msg = error("omnisafe:CPO", {"algo_cfgs": {"target_kll": 0.02}})
    assert "unknown OmniSafe config key 'algo_cfgs.target_kll'" in msg
    assert "did you mean 'algo_cfgs.target_kl'" in msg
    # safebench's flat keys are not OmniSafe's: the error lists OmniSafe's sections
    assert "keys here: seed, train_cfgs, algo_cfgs" in error("omnisafe:CPO", {"target_kl": 0.02})
    assert "'train_cfgs.total_steps' is set from the experiment's budget" in error(
        "omnisafe:CPO", {"train_cfgs": {"total_steps": 5}}
    )
    assert "'algo_cfgs.cost_limit' is set from the experiment's cost_limit" in error(
        "omnisafe:CPO", {"algo_cfgs": {"cost_limit": 5.0}}
    )
    assert "'lagrange_cfgs.cost_limit' is set from the experiment's cost_limit" in error(
        "omnisafe:PPOLag", {"lagrange_cfgs": {"cost_limit": 5.0}}
    )
    # PPOLag keeps its limit in lagrange_cfgs only: algo_cfgs.cost_limit is no key of it
    assert "unknown OmniSafe config key 'algo_cfgs.cost_limit'" in error(
        "omnisafe:PPOLag", {"algo_cfgs": {"cost_limit": 5.0}}
    )
    assert "'logger_cfgs.use_wandb' is set from safebench" in error(
        "omnisafe:CPO", {"logger_cfgs": {"use_wandb": True}}
    )
    assert "'algo_cfgs.target_kl' must be a number" in error(
        "omnisafe:CPO", {"algo_cfgs": {"target_kl": "big"}}
    )
    assert "'algo_cfgs.update_iters' must be an integer" in error(
        "omnisafe:CPO", {"algo_cfgs": {"update_iters": 2.5}}
    )
    assert "'algo_cfgs' must be a mapping" in error("omnisafe:CPO", {"algo_cfgs": 3})
    assert "config key 'obs_normalize'" in error("omnisafe:CPO", {"obs_normalize": "maybe"})


def test_experiment_validation_accepts_omnisafe_names(tmp_path: Path) -> None:
    ok = parse_experiment(experiment(tmp_path / "out"), check_envs=False)
    cpo, ppolag = expand(ok)
    assert (cpo.label, ppolag.label) == ("omnisafe-cpo", "omnisafe-ppolag")
    assert ppolag.config == {"obs_normalize": True, "algo_cfgs": {"update_iters": 2}}

    def error(algorithms: str) -> ExperimentError:
        with pytest.raises(ExperimentError) as exc:
            parse_experiment(experiment(tmp_path, algorithms=algorithms), check_envs=False)
        return exc.value

    # ':' cannot be part of a results directory: without a label, one is derived
    (derived,) = expand(
        parse_experiment(experiment(tmp_path, algorithms='["omnisafe:PPOLag"]'), check_envs=False)
    )
    assert (derived.algo, derived.label) == ("omnisafe:PPOLag", "omnisafe-ppolag")
    assert derived.run_dir(tmp_path).relative_to(tmp_path).parts[0] == "omnisafe-ppolag"
    clash = error('["omnisafe:CPO", {name: cpo, label: omnisafe-cpo}]')
    assert clash.field == "algorithms[1]" and "already used" in clash.problem
    bad_key = error('[{name: "omnisafe:CPO", label: o, config: {algo_cfgs: {kl: 1}}}]')
    assert bad_key.field == "algorithms[0].config" and bad_key.line == 2
    assert "'algo_cfgs.kl'" in bad_key.problem
    unknown = error('[{name: "omnisafe:CPPO", label: o}]')
    assert unknown.field == "algorithms[0].name" and "omnisafe:CPO" in unknown.problem


def test_crosscheck_experiment_pairs_each_method_with_omnisafe() -> None:
    exp = load_experiment(REPO / "experiments" / "crosscheck.yaml")
    specs = expand(exp)
    assert len(specs) == 6 * 2 * 3
    pairs = {"cpo": "omnisafe:CPO", "pcpo": "omnisafe:PCPO", "p3o": "omnisafe:P3O"}
    for ours, theirs in pairs.items():
        a = [s for s in specs if s.algo == ours]
        b = [s for s in specs if s.algo == theirs]
        key = [(s.env_id, s.seed, s.budget, s.steps_per_epoch, s.cost_limit) for s in a]
        assert key == [(s.env_id, s.seed, s.budget, s.steps_per_epoch, s.cost_limit) for s in b]
        assert {s.env_id for s in a} == {"SafetyHalfCheetahVelocity-v1", "SafetyPointGoal1-v0"}
        assert {s.seed for s in a} == {0, 1, 2}
        budgets = {"SafetyHalfCheetahVelocity-v1": 200_000, "SafetyPointGoal1-v0": 100_000}
        assert all(s.budget == budgets[s.env_id] for s in a)
        assert all(s.config["ep_cost_window"] == 50 for s in a)  # OmniSafe's window
        for s in b:
            cfgs = custom_cfgs(s, Path("/run"), threads=1, device="cpu")
            assert cfgs["algo_cfgs"]["cost_limit"] == 25.0
            assert cfgs["train_cfgs"]["total_steps"] == budgets[s.env_id]
    smoke = load_experiment(REPO / "experiments" / "crosscheck.yaml", smoke=True)
    assert all(s.budget % s.steps_per_epoch == 0 for s in expand(smoke))  # OmniSafe can run it


@pytest.mark.parametrize(
    ("algo", "sections"),
    [
        ("CPO", {"algo_cfgs"}),
        ("PCPO", {"algo_cfgs"}),
        ("P3O", {"algo_cfgs"}),
        ("PPOLag", {"lagrange_cfgs"}),
        ("TRPOLag", {"lagrange_cfgs"}),
        ("IPO", {"algo_cfgs", "lagrange_cfgs"}),
        ("PPO", set()),
    ],
)
def test_spec_maps_onto_omnisafe_config(algo: str, sections: set[str], tmp_path: Path) -> None:
    s = spec(
        f"omnisafe:{algo}",
        epochs=30,
        seed=7,
        num_envs=2,
        config=registry.resolve_config(
            f"omnisafe:{algo}",
            {"algo_cfgs": {"update_iters": 3, "gamma": 1}, "obs_normalize": False},
        ).model_dump(mode="json"),
    )
    cfgs = custom_cfgs(s, tmp_path, threads=3, device="cpu")
    assert cfgs["seed"] == 7
    assert cfgs["train_cfgs"] == {
        "total_steps": 30_000,
        "torch_threads": 3,
        "vector_env_nums": 2,
        "parallel": 1,
        "device": "cpu",
    }
    assert cfgs["algo_cfgs"]["steps_per_epoch"] == 1000
    assert cfgs["algo_cfgs"]["update_iters"] == 3 and cfgs["algo_cfgs"]["obs_normalize"] is False
    # OmniSafe asserts a float gamma; YAML's 1 is an int
    assert cfgs["algo_cfgs"]["gamma"] == 1.0 and isinstance(cfgs["algo_cfgs"]["gamma"], float)
    with_limit = {k for k, v in cfgs.items() if isinstance(v, dict) and "cost_limit" in v}
    assert with_limit == sections
    assert all(cfgs[k]["cost_limit"] == COST_LIMIT for k in sections)
    assert cfgs["logger_cfgs"] == {
        "log_dir": str(tmp_path / "omnisafe"),
        "use_wandb": False,
        "use_tensorboard": False,
    }


def test_what_omnisafe_cannot_run_is_refused_before_training(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="whole epochs only"):
        run(spec(budget=2500), tmp_path)
    with pytest.raises(UserError, match="env kwargs"):
        run(spec(env_kwargs={"width": 3}), tmp_path)
    assert not list(tmp_path.rglob("progress.csv"))


def test_progress_csv_becomes_safebench_metrics(tmp_path: Path) -> None:
    """The conversion on a hand-made OmniSafe log, including a line still being written."""
    (tmp_path / "progress.csv").write_text(
        "Metrics/EpRet,Metrics/EpCost,Metrics/EpLen,Train/Epoch,TotalEnvSteps,"
        "Metrics/LagrangeMultiplier,Time/Rollout,Time/Update,Time/Total,Time/FPS\r\n"
        "1.5,30.0,1000.0,0.0,1000.0,0.1,2.0,1.0,3.0,333.0\r\n"
        "2.5,nan,1000.0,1.0,2000.0,0.2,2.5,1.5,7.0,250.0\r\n"
        "3.5,20.0,10"
    )
    frame = metrics_from_progress(tmp_path, 1000)
    assert list(frame.columns) == [
        "epoch", "steps", "episodes", "ep_ret", "ep_cost", "ep_len", "epoch_episodes",
        "eval_ret", "eval_cost", "eval_len", "algo/Metrics/LagrangeMultiplier",
        "time_rollout", "time_update", "time_eval", "wall_time",
    ]  # fmt: skip
    assert frame["epoch"].tolist() == [0, 1] and frame["steps"].tolist() == [1000, 2000]
    np.testing.assert_array_equal(frame["ep_ret"], [1.5, 2.5])
    np.testing.assert_array_equal(frame["ep_cost"], [30.0, np.nan])
    np.testing.assert_array_equal(frame["algo/Metrics/LagrangeMultiplier"], [0.1, 0.2])
    np.testing.assert_array_equal(frame["wall_time"], [3.0, 7.0])
    np.testing.assert_array_equal(frame["time_update"], [1.0, 1.5])
    assert frame["time_eval"].tolist() == [0.0, 0.0]
    assert frame[["eval_ret", "episodes"]].isna().all().all()


# --------------------------------------------------------------------------- real OmniSafe runs


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``safebench run --backend local`` of omnisafe:CPO and omnisafe:PPOLag, 2 epochs each."""
    root = tmp_path_factory.mktemp("omni")
    path = root / "omni.yaml"
    path.write_text(experiment(root / "out"))
    done = cli("run", str(path), "--backend", "local")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "2/2 runs done" in done.stdout
    return root / "out"


def run_dir_of(store: Path, label: str) -> Path:
    (spec_json,) = (store / label).rglob("spec.json")
    return spec_json.parent


def test_omnisafe_cpo_through_safebench_run(store: Path) -> None:
    run_dir = run_dir_of(store, "omnisafe-cpo")
    assert read_status(run_dir)["status"] == "done"
    folder = omnisafe_folder(run_dir)
    assert folder.parent.name == f"CPO-{{{ENV}}}"  # OmniSafe's own layout, in the run dir
    progress = pd.read_csv(folder / "progress.csv", float_precision="round_trip")
    frame = metrics_frame(run_dir)
    assert frame["epoch"].tolist() == [0, 1] and frame["steps"].tolist() == [1000, 2000]
    np.testing.assert_array_equal(frame["ep_ret"], progress["Metrics/EpRet"])
    np.testing.assert_array_equal(frame["ep_cost"], progress["Metrics/EpCost"])
    np.testing.assert_array_equal(frame["ep_len"], progress["Metrics/EpLen"])
    np.testing.assert_array_equal(frame["wall_time"], progress["Time/Total"])
    np.testing.assert_array_equal(frame["time_rollout"], progress["Time/Rollout"])
    np.testing.assert_array_equal(frame["algo/Loss/Loss_pi"], progress["Loss/Loss_pi"])
    assert frame[["eval_ret", "eval_cost", "eval_len"]].isna().all().all()  # no evaluation
    assert (frame["wall_time"] > 0).all() and frame["wall_time"].is_monotonic_increasing
    config = json.loads((folder / "config.json").read_text())
    assert config["algo"] == "CPO" and config["env_id"] == ENV and config["seed"] == 0
    assert config["algo_cfgs"]["cost_limit"] == COST_LIMIT
    assert config["algo_cfgs"]["steps_per_epoch"] == 1000
    assert config["train_cfgs"]["total_steps"] == 2000
    assert config["train_cfgs"]["torch_threads"] == 1  # resources.cpus
    assert config["train_cfgs"]["device"] == "cpu"
    assert config["logger_cfgs"]["use_wandb"] is False
    assert config["logger_cfgs"]["log_dir"] == str(run_dir / "omnisafe")
    assert not list(run_dir.rglob("wandb")) and not list(run_dir.rglob("tb"))
    # OmniSafe's console, kept aside
    assert "Metrics" in RunDir(run_dir).omnisafe_console.read_text()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["backend"] == "omnisafe" and manifest["omnisafe"] == "0.5.0"
    df = load_runs(store)
    assert sorted(df["algo"].unique()) == ["omnisafe-cpo", "omnisafe-ppolag"]
    assert set(df["status"]) == {"done"} and len(df) == 4


def test_omnisafe_ppolag_gets_its_cost_limit_in_lagrange_cfgs(store: Path) -> None:
    run_dir = run_dir_of(store, "omnisafe-ppolag")
    folder = omnisafe_folder(run_dir)
    config = json.loads((folder / "config.json").read_text())
    assert config["algo"] == "PPOLag"
    assert config["lagrange_cfgs"]["cost_limit"] == COST_LIMIT
    assert "cost_limit" not in config["algo_cfgs"]
    assert config["algo_cfgs"]["update_iters"] == 2  # the experiment's override
    progress = pd.read_csv(folder / "progress.csv", float_precision="round_trip")
    np.testing.assert_array_equal(
        metrics_frame(run_dir)["algo/Metrics/LagrangeMultiplier"],
        progress["Metrics/LagrangeMultiplier"],
    )


def test_rerun_of_a_finished_grid_trains_nothing(store: Path) -> None:
    path = store.parent / "omni.yaml"
    before = {p: p.stat().st_mtime_ns for p in store.rglob("metrics.parquet")}
    done = cli("run", str(path), "--backend", "local")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "(2 done, 0 failed kept, 0 to train" in done.stdout
    assert {p: p.stat().st_mtime_ns for p in store.rglob("metrics.parquet")} == before


def test_interrupted_run_restarts_from_scratch(tmp_path: Path) -> None:
    s = spec(epochs=3)
    seen: list[dict[str, Any]] = []
    children: list[int] = []

    def stop() -> bool:
        children.append(read_status(s.run_dir(tmp_path))["pid"])  # OmniSafe's process
        return True

    with pytest.raises(RunInterrupted):
        run(s, tmp_path, progress=seen.append, should_stop=stop)
    run_dir = s.run_dir(tmp_path)
    status = read_status(run_dir)
    assert status["status"] == "queued" and "restarts from scratch" in status["note"]
    # stopped after the first epoch it saw (OmniSafe may have logged two by then)
    stopped = len(seen)
    assert 1 <= stopped < 3 and [r["epoch"] for r in seen] == list(range(stopped))
    assert seen[0]["epochs"] == 3 and len(metrics_frame(run_dir)) == stopped
    assert not alive(children[0])  # stopped, not left training

    seen.clear()
    run(s, tmp_path, progress=seen.append)
    status = read_status(run_dir)
    assert status["status"] == "done" and status["restarted"] is True
    assert status["steps"] == 3000
    assert [r["epoch"] for r in seen] == [0, 1, 2]  # from the first epoch again
    frame = metrics_frame(run_dir)
    assert frame["steps"].tolist() == [1000, 2000, 3000]
    folder = omnisafe_folder(run_dir)  # the interrupted attempt's log is gone: one log
    progress = pd.read_csv(folder / "progress.csv", float_precision="round_trip")
    np.testing.assert_array_equal(frame["ep_ret"], progress["Metrics/EpRet"])
    # done is done: running it again returns at once
    mtime = (run_dir / "metrics.parquet").stat().st_mtime_ns
    run(s, tmp_path)
    assert (run_dir / "metrics.parquet").stat().st_mtime_ns == mtime


def test_env_omnisafe_lacks_fails_as_a_user_error(tmp_path: Path) -> None:
    s = spec(env_id="safebench/ContinuousTarget-v0")
    with pytest.raises(UserError, match="OmniSafe has no env 'safebench/ContinuousTarget-v0'"):
        run(s, tmp_path)
    status = read_status(s.run_dir(tmp_path))
    assert status["status"] == "failed" and "OmniSafe has no env" in status["error"]


def test_killed_launcher_takes_omnisafe_down_and_the_rerun_restarts(tmp_path: Path) -> None:
    path = tmp_path / "omni.yaml"
    path.write_text(
        experiment(tmp_path / "out", epochs=8, algorithms='[{name: "omnisafe:CPO", label: c}]')
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = subprocess.Popen(
        [sys.executable, "-m", "safebench.cli", "run", str(path), "--backend", "local"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    (s,) = expand(load_experiment(path))
    run_dir = s.run_dir(tmp_path / "out")
    deadline = time.monotonic() + 120
    while not (run_dir / "metrics.parquet").exists():
        assert launcher.poll() is None and time.monotonic() < deadline, "no epoch logged"
        time.sleep(0.2)
    child = read_status(run_dir)["pid"]
    launcher.send_signal(signal.SIGKILL)
    launcher.wait()
    deadline = time.monotonic() + 10
    while alive(child):
        assert time.monotonic() < deadline, "OmniSafe outlived its launcher"
        time.sleep(0.1)
    assert read_status(run_dir)["status"] == "running"  # left behind by the killed launcher
    done = cli("run", str(path), "--backend", "local")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    status = read_status(run_dir)
    assert status["status"] == "done" and status["restarted"] is True
    assert metrics_frame(run_dir)["steps"].tolist() == [1000 * (i + 1) for i in range(8)]
    omnisafe_folder(run_dir)  # exactly one OmniSafe log: the killed attempt's was removed


def alive(pid: int) -> bool:
    assert pid > 0
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rpartition(")")[2].split()[0] != "Z"


def test_omnisafe_p3o_under_ray(tmp_path: Path) -> None:
    path = tmp_path / "omni.yaml"
    path.write_text(
        experiment(tmp_path / "out", algorithms='[{name: "omnisafe:P3O", label: omnisafe-p3o}]')
    )
    done = cli("run", str(path), "--backend", "ray", "--num-cpus", "1")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (s,) = expand(load_experiment(path))
    run_dir = s.run_dir(tmp_path / "out")
    assert read_status(run_dir)["status"] == "done"
    assert json.loads((run_dir / "placement.json").read_text())["backend"] == "ray"
    assert metrics_frame(run_dir)["steps"].tolist() == [1000, 2000]
    config = json.loads((omnisafe_folder(run_dir) / "config.json").read_text())
    assert config["algo"] == "P3O" and config["algo_cfgs"]["cost_limit"] == COST_LIMIT
