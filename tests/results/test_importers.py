"""``safebench import``: OmniSafe 0.5.0 runs made here, SafePO-format runs, broken folders.

The OmniSafe run is a real one (PPOLag on SafetyHopperVelocity-v1, 2 epochs of 1,000 steps,
~10 s), trained in a subprocess so OmniSafe's global settings (torch threads, logging) stay
out of the test process. The SafePO folders follow the layout and columns of the C-TRPO
repository's ``data/runs`` (SafePO's logger): ``<task>/<algo>/seed-NNN-<time>/``,
``Train/Epoch`` from 1 and ``Train/TotalSteps``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from safebench import analysis
from safebench.errors import UserError
from safebench.report import ReportConfig, build_report
from safebench.results.importers import find_run_folders, import_runs
from safebench.results.store import load_runs, read_status

OMNISAFE_RUN = textwrap.dedent(
    """
    import sys
    from safebench.envs.factory import import_safety_gymnasium

    import_safety_gymnasium()  # Python 3.11 shim: must precede OmniSafe's own import of it
    import omnisafe

    agent = omnisafe.Agent(
        "PPOLag",
        "SafetyHopperVelocity-v1",
        custom_cfgs={
            "seed": 3,
            "train_cfgs": {"total_steps": 2000, "vector_env_nums": 1, "torch_threads": 1},
            "algo_cfgs": {"steps_per_epoch": 1000, "update_iters": 1},
            "logger_cfgs": {
                "use_wandb": False,
                "use_tensorboard": False,
                "save_model_freq": 100,
                "log_dir": sys.argv[1],
            },
        },
    )
    agent.learn()
    """
)


@pytest.fixture(scope="module")
def omnisafe_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A log directory holding one finished OmniSafe 0.5.0 run."""
    log_dir = tmp_path_factory.mktemp("omnisafe")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", OMNISAFE_RUN, str(log_dir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return log_dir


def the_run_folder(log_dir: Path) -> Path:
    (progress,) = log_dir.rglob("progress.csv")
    return progress.parent


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("torch_save"))
    return dst


def test_import_real_omnisafe_run(omnisafe_runs: Path, tmp_path: Path) -> None:
    folder = the_run_folder(omnisafe_runs)
    assert folder.parent.name == "PPOLag-{SafetyHopperVelocity-v1}"  # OmniSafe's own layout
    store = tmp_path / "store"
    result = import_runs("omnisafe", omnisafe_runs, store)
    assert result.skipped == []
    (imported,) = result.runs
    assert (imported.label, imported.env_id, imported.seed) == (
        "PPOLag",
        "SafetyHopperVelocity-v1",
        3,
    )
    assert (imported.status, imported.epochs, imported.steps, imported.action) == (
        "done",
        2,
        2000.0,
        "imported",
    )
    # round_trip: the exact decimal -> float conversion (pandas' default fast parser may be
    # off by one ulp; the importer converts exactly)
    progress = pd.read_csv(folder / "progress.csv", float_precision="round_trip")
    df = load_runs(store)
    assert len(df) == 2 and set(df["status"]) == {"done"}
    np.testing.assert_array_equal(df["ep_ret"], progress["Metrics/EpRet"])
    np.testing.assert_array_equal(df["ep_cost"], progress["Metrics/EpCost"])
    np.testing.assert_array_equal(df["ep_len"], progress["Metrics/EpLen"])
    np.testing.assert_array_equal(df["steps"], progress["TotalEnvSteps"])
    np.testing.assert_array_equal(df["epoch"], [0, 1])
    np.testing.assert_array_equal(
        df["source/Metrics/LagrangeMultiplier"], progress["Metrics/LagrangeMultiplier"]
    )
    assert df["cost_limit"].unique().tolist() == [25.0]  # lagrange_cfgs.cost_limit
    spec = json.loads((imported.run_dir / "spec.json").read_text())
    assert spec["source"]["kind"] == "omnisafe"
    assert spec["source"]["path"] == str(folder.resolve())
    assert spec["algo"] == "PPOLag" and spec["config"]["algo_cfgs"]["steps_per_epoch"] == 1000
    assert (imported.run_dir / "source_config.json").read_bytes() == (
        folder / "config.json"
    ).read_bytes()
    assert imported.run_dir.relative_to(store).parts[:2] == ("PPOLag", "SafetyHopperVelocity-v1")
    assert imported.run_dir.stat().st_mode & 0o777 == 0o755

    # idempotent: the same folder again changes nothing and duplicates nothing
    mtime = (imported.run_dir / "metrics.parquet").stat().st_mtime_ns
    again = import_runs("omnisafe", omnisafe_runs, store)
    assert [r.action for r in again.runs] == ["unchanged"]
    assert again.runs[0].run_id == imported.run_id
    assert (imported.run_dir / "metrics.parquet").stat().st_mtime_ns == mtime
    assert len(list(store.rglob("spec.json"))) == 1
    assert not [p for p in store.rglob("*") if "staging" in p.name or p.suffix == ".tmp"]

    # the imported run goes through the report like a native one, its origin stated
    report = build_report(
        store, tmp_path / "rep", ReportConfig(reps=100, table_reps=100, curve_reps=20)
    )
    md = (report.out / "report.md").read_text()
    assert "1 found (1 omnisafe); 1 done and used" in md
    per_env = pd.read_csv(report.out / "tables" / "per_env.csv")
    assert per_env.loc[0, "ret"] == pytest.approx(progress["Metrics/EpRet"].iloc[-1])


def test_partial_run_is_running_then_updated_in_place(omnisafe_runs: Path, tmp_path: Path) -> None:
    """A run read mid-way (one epoch of two logged) is partial; re-importing updates it."""
    src = the_run_folder(omnisafe_runs)
    logs = tmp_path / "logs"
    folder = copy_run(src, logs / src.parent.name / src.name)
    full = (folder / "progress.csv").read_text()
    lines = full.splitlines(keepends=True)
    (folder / "progress.csv").write_text("".join(lines[:2]))  # header + epoch 0
    store = tmp_path / "store"
    (first,) = import_runs("omnisafe", logs, store).runs
    assert (first.status, first.epochs, first.action) == ("running", 1, "imported")
    status = read_status(first.run_dir)
    assert status["status"] == "running" and "partial" in status["note"]

    scores = analysis.final_scores(load_runs(store))
    assert scores["status"].tolist() == ["running"]  # left out of aggregates by status

    (folder / "progress.csv").write_text(full)  # the run went on and finished
    (second,) = import_runs("omnisafe", logs, store).runs
    assert (second.status, second.epochs, second.action) == ("done", 2, "updated")
    assert second.run_dir == first.run_dir
    assert read_status(second.run_dir)["status"] == "done"
    assert len(load_runs(store)) == 2 and len(list(store.rglob("spec.json"))) == 1


def write_run(folder: Path, config: dict[str, Any] | str | None, progress: str | None) -> Path:
    folder.mkdir(parents=True)
    if config is not None:
        text = config if isinstance(config, str) else json.dumps(config, indent=4)
        (folder / "config.json").write_text(text)
    if progress is not None:
        (folder / "progress.csv").write_text(progress)
    return folder


def test_malformed_and_partial_folders_are_reported(omnisafe_runs: Path, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    good = copy_run(the_run_folder(omnisafe_runs), logs / "good" / "seed-003-x")
    config = json.loads((good / "config.json").read_text())
    progress = (good / "progress.csv").read_text()
    header, row0, row1 = progress.splitlines()
    broken = {
        "no-progress": (config, None),
        "header-only": (config, header + "\n"),
        "bad-json": ("{not json", progress),
        "no-config": (None, progress),
        "no-cost-column": (
            config,
            progress.replace("Metrics/EpCost", "Metrics/Something"),
        ),
        "text-value": (config, f"{header}\n{row0}\n{row1.replace(row1.split(',')[0], 'abc', 1)}\n"),
        "steps-backwards": (config, f"{header}\n{row1}\n{row0}\n"),
        "no-cost-limit": (
            {**config, "lagrange_cfgs": {}, "algo": "PPO"},
            progress,
        ),
        "not-omnisafe": ({"task": "SafetyHopperVelocity-v1", "seed": 0}, progress),
    }
    for name, (cfg, prog) in broken.items():
        write_run(logs / name / "seed-000-x", cfg, prog)
    # a run killed while writing its second epoch: the half line is dropped, epoch 0 kept
    torn = write_run(logs / "torn" / "seed-005-x", {**config, "seed": 5}, None)
    (torn / "progress.csv").write_text(f"{header}\n{row0}\n{row1[: len(row1) // 2]}")

    store = tmp_path / "store"
    result = import_runs("omnisafe", logs, store)
    reasons = {s.folder.parent.name: s.reason for s in result.skipped}
    assert sorted(reasons) == sorted(broken)
    assert "no progress.csv" in reasons["no-progress"]
    assert "no epochs" in reasons["header-only"]
    assert "not valid JSON" in reasons["bad-json"]
    assert "no config.json" in reasons["no-config"]
    assert "Metrics/EpCost" in reasons["no-cost-column"]
    assert "non-numeric" in reasons["text-value"]
    assert "does not increase" in reasons["steps-backwards"]
    assert "--cost-limit" in reasons["no-cost-limit"]
    assert "try 'safepo'" in reasons["not-omnisafe"]
    by_folder = {r.source_folder.parent.name: r for r in result.runs}
    assert sorted(by_folder) == ["good", "torn"]
    assert by_folder["good"].status == "done"
    torn_run = by_folder["torn"]
    assert (torn_run.status, torn_run.epochs) == ("running", 1)
    assert any("partially written last line" in n for n in torn_run.notes)

    # the unconstrained run comes in once the user supplies the env's limit
    fixed = import_runs("omnisafe", logs / "no-cost-limit", store, cost_limit=25.0)
    assert [r.label for r in fixed.runs] == ["PPO"] and fixed.skipped == []
    assert load_runs(store).groupby("algo")["cost_limit"].first().to_dict() == {
        "PPO": 25.0,
        "PPOLag": 25.0,
    }

    # the CLI prints what it skipped and why, and does not fail for it
    out = subprocess.run(
        [sys.executable, "-m", "safebench.cli", "import", "omnisafe", str(logs), "--into",
         str(tmp_path / "cli-store"), "--label", "omni-{algo}"],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "2 imported, 0 updated, 0 unchanged (1 partial), 9 skipped" in out.stdout
    assert "bad-json" in out.stderr and "not valid JSON" in out.stderr
    assert {p.name for p in (tmp_path / "cli-store").iterdir()} == {"omni-PPOLag"}
    bad = subprocess.run(
        [sys.executable, "-m", "safebench.cli", "import", "rllib", str(logs), "--into", "x"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "omnisafe, safepo" in bad.stderr
    assert "Traceback" not in bad.stderr


SAFEPO_HEADER = (
    "Metrics/EpRet,Metrics/EpCost,Metrics/EpLen,Metrics/EpCostRegret,Train/Epoch,"
    "Train/TotalSteps,Train/KL,Loss/Loss_reward_critic,Time/Total"
)


def safepo_run(
    logs: Path, env: str, algo: str, seed: int, ret: list[float], cost: list[float]
) -> Path:
    """A SafePO-layout run folder; 4 planned epochs of 20,000 steps."""
    config = {
        "cost_limit": 25.0,
        "exp_name": f"{env}-{algo}-seed-{seed}",
        "experiment": "benchmark",
        "log_dir": f"runs/benchmark/{env}/{algo}/seed-{seed:03d}-2024-09-06-07-47-55",
        "seed": seed,
        "steps_per_epoch": 20000,
        "task": env,
        "total_steps": 80000,
        "use_eval": False,
    }
    rows = [
        f"{r},{c},1000.0,0.0,{i + 1},{(i + 1) * 20000},0.01,1.5,17.7"
        for i, (r, c) in enumerate(zip(ret, cost))
    ]
    folder = logs / env / algo / f"seed-{seed:03d}-2024-09-06-07-47-55"
    return write_run(folder, config, "\n".join([SAFEPO_HEADER, *rows]) + "\n")


def test_safepo_runs_import_and_report(tmp_path: Path) -> None:
    logs = tmp_path / "runs" / "benchmark"
    rng = np.random.default_rng(0)
    for env, scale in (("SafetyPointGoal1-v0", 20.0), ("SafetyAntVelocity-v1", 3000.0)):
        for algo, level, cost in (("ppo", 1.0, 50.0), ("c-trpo", 0.8, 20.0)):
            for seed in (0, 1000, 2000):
                ret = list(scale * level * np.linspace(0.2, 1.0, 4) + rng.normal(0, 1, 4))
                run_cost = list(cost + rng.normal(0, 2, 4))
                safepo_run(logs, env, algo, seed, ret, run_cost)
    # a run SafePO restarted: its first attempt left only config.json behind
    write_run(
        logs / "SafetyPointGoal1-v0" / "c-trpo" / "seed-000-2024-09-06-07-00-00",
        {"task": "SafetyPointGoal1-v0", "seed": 0, "cost_limit": 25.0},
        None,
    )
    # a run that stopped after 2 of its 4 epochs
    safepo_run(logs, "SafetyPointGoal1-v0", "c-trpo", 3000, [5.0, 9.0], [30.0, 22.0])

    assert len(find_run_folders(logs)) == 14
    store = tmp_path / "store"
    result = import_runs("safepo", logs, store)
    assert len(result.runs) == 13 and len(result.skipped) == 1
    assert "never logged" in result.skipped[0].reason
    statuses = {(r.label, r.env_id, r.seed): r.status for r in result.runs}
    assert statuses[("c-trpo", "SafetyPointGoal1-v0", 3000)] == "running"
    assert sum(s == "done" for s in statuses.values()) == 12
    assert {label for label, _, _ in statuses} == {"ppo", "c-trpo"}  # from exp_name

    df = load_runs(store)
    one = df.loc[(df["algo"] == "ppo") & (df["seed"] == 0) & (df["env"] == "SafetyAntVelocity-v1")]
    assert one["steps"].tolist() == [20000.0, 40000.0, 60000.0, 80000.0]
    assert one["epoch"].tolist() == [0, 1, 2, 3]  # SafePO counts epochs from 1
    raw = pd.read_csv(
        logs / "SafetyAntVelocity-v1" / "ppo" / "seed-000-2024-09-06-07-47-55" / "progress.csv",
        float_precision="round_trip",
    )
    np.testing.assert_array_equal(one["ep_ret"], raw["Metrics/EpRet"])

    report = build_report(
        store,
        tmp_path / "rep",
        ReportConfig(reference="ppo", reps=200, table_reps=200, curve_reps=20, curve_points=10),
    )
    md = (report.out / "report.md").read_text()
    assert "13 found (13 safepo); 12 done and used; excluded: 1 running" in md
    excluded = pd.read_csv(report.out / "tables" / "excluded.csv")
    assert excluded["seed"].tolist() == [3000] and excluded["status"].tolist() == ["running"]
    scores = analysis.final_scores(df)
    used = scores.loc[scores["status"] == "done"]
    norm = analysis.normalize_scores(used, reference="ppo", method="reference")
    want = analysis.aggregate(norm, "ret", reps=200, statistics=["iqm"]).set_index("algo")
    got = pd.read_csv(report.out / "tables" / "aggregate.csv").set_index("algo")
    np.testing.assert_allclose(got["ret_iqm"], want["iqm"], rtol=1e-12)
    np.testing.assert_allclose(got["ret_iqm_low"], want["iqm_low"], rtol=1e-12)


def test_import_is_atomic_when_interrupted(
    omnisafe_runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash while a run is being written leaves nothing that load_runs would read."""
    store = tmp_path / "store"

    def crash(src: Any, dst: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("safebench.results.importers.os.rename", crash)
    with pytest.raises(OSError, match="disk full"):
        import_runs("omnisafe", omnisafe_runs, store)
    assert list(store.rglob("spec.json")) == []
    assert [p for p in store.rglob("*") if p.is_file()] == []  # staging removed
    monkeypatch.undo()
    (run,) = import_runs("omnisafe", omnisafe_runs, store).runs
    assert run.action == "imported" and len(load_runs(store)) == 2


def test_bad_arguments() -> None:
    with pytest.raises(UserError, match="does not exist"):
        import_runs("omnisafe", Path("/nonexistent/runs"), Path("store"))
    with pytest.raises(UserError, match="source must be one of"):
        import_runs("garage", Path("."), Path("store"))  # type: ignore[arg-type]
    with pytest.raises(UserError, match="placeholder"):
        import_runs("safepo", Path("."), Path("store"), label="{name}")


def test_folder_without_runs_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no runs here")
    with pytest.raises(UserError, match="no run folder under"):
        import_runs("safepo", tmp_path, tmp_path / "store")
    assert not (tmp_path / "store").exists()


CTRPO_RUNS = os.environ.get("SAFEBENCH_CTRPO_RUNS", "")

# docs/algorithms.md#c-trpo-published-numbers: aggregate normalised IQM at 1e7 steps (return
# ÷ PPO mean, cost Ĵc/d − 1, regret ÷ CPO IQM regret) recomputed from the official C-TRPO raw
# runs.
CTRPO_HEADLINE = {
    "c-trpo-hyst": (0.654, -0.213, 0.523),
    "c-trpo": (0.696, -0.101, 0.682),
    "cpo-hyst": (0.691, -0.138, 0.771),
    "cpo": (0.680, 0.035, 0.982),
    "trpo_lag": (0.598, -0.185, 1.928),
    "p3o": (0.452, -0.279, 0.245),
    "pcpo": (0.445, -0.166, 0.698),
    "cup": (0.648, 0.279, 2.796),
    "focops": (0.614, 0.067, 1.949),
    "cppo_pid": (0.517, -0.015, 1.060),
    "ppo_lag": (0.471, 0.025, 2.411),
    "ipo": (0.426, 0.033, 1.526),
}


@pytest.mark.slow
@pytest.mark.skipif(
    not CTRPO_RUNS,
    reason="needs the C-TRPO paper's raw SafePO runs, which are not shipped with safebench: "
    "set SAFEBENCH_CTRPO_RUNS to the data/runs folder of github.com/milosen/ctrpo",
)
def test_reproduces_ctrpo_headline_from_published_runs(tmp_path: Path) -> None:
    """Importing the paper's raw SafePO runs reproduces its normalised IQM table."""
    store = tmp_path / "store"
    for experiment in ("benchmark", "ablation"):
        result = import_runs("safepo", Path(CTRPO_RUNS) / experiment, store)
        assert {r.status for r in result.runs} == {"done"}
        # restarted attempts left empty progress files behind; they are listed, not read
        assert {s.reason for s in result.skipped} <= {"progress.csv is empty"}
    scores = analysis.final_scores(load_runs(store))
    assert (scores.groupby(["algo", "env"]).size() == 5).all()
    norm = analysis.normalize_scores(
        scores, reference="ppo", regret_reference="cpo", method="reference"
    )
    for i, metric in enumerate(("ret", "cost", "regret")):
        # point estimates do not depend on the bootstrap, so few repetitions suffice
        table = analysis.aggregate(norm, metric, reps=50, statistics=["iqm"]).set_index("algo")
        for algo, expected in CTRPO_HEADLINE.items():
            assert round(table.loc[algo, "iqm"], 3) == pytest.approx(expected[i]), (algo, metric)
