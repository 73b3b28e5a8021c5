"""Cost-limit sweeps in the report, learning curves over wall-clock time, and the machines of
the throughput table.

Synthetic results roots (run directories written here, no training, a few seconds each): an
experiment that sweeps ``cost_limit: [3, 5, 8]`` on one env, two methods, three seeds, whose
final scores are chosen so that the verdict's ranking holds across the limits in one root and
changes in another.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from typer.testing import CliRunner

from safebench import analysis
from safebench.cli.app import app
from safebench.errors import UserError
from safebench.report import Report, ReportConfig, build_report, plots
from safebench.report.inputs import load, task_name
from safebench.report.verdict import ranking_across_limits
from safebench.results.store import (
    EXPERIMENT_RECORD,
    atomic_write_json,
    env_slug,
    run_machine,
    write_metrics,
    write_status,
)

ENV = "safebench/ContinuousTarget-v0"
LIMITS = (3.0, 5.0, 8.0)
EPOCHS = 6
STEPS = 1000  # per epoch
TASKS = tuple(task_name(ENV, d) for d in LIMITS)


def small(**kwargs: Any) -> ReportConfig:
    kwargs.setdefault("formats", ("png",))
    return ReportConfig(reps=200, table_reps=200, curve_reps=20, curve_points=10, **kwargs)


def write_run(
    root: Path,
    label: str,
    seed: int,
    limit: float,
    ret: float,
    cost: float,
    *,
    seconds_per_epoch: float = 2.0,
    host: str = "box-a",
    mtime: float | None = None,
) -> str:
    """One done run: returns ramping up to ``ret``, costs falling to ``cost`` (last epoch)."""
    run_id = hashlib.sha256(f"{label}{seed}{limit}{ret}{cost}".encode()).hexdigest()
    run_dir = root / label / env_slug(ENV) / f"seed{seed}-{run_id[:8]}"
    run_dir.mkdir(parents=True)
    rows = [
        {
            "epoch": e,
            "steps": (e + 1) * STEPS,
            "ep_ret": ret * (e + 1) / EPOCHS,
            "ep_cost": cost + 2.0 * (EPOCHS - 1 - e),
            "ep_len": 20.0,
            "time_rollout": 0.5 * seconds_per_epoch,
            "time_update": 0.4 * seconds_per_epoch,
            "time_eval": 0.1 * seconds_per_epoch,
            "wall_time": (e + 1) * seconds_per_epoch,
        }
        for e in range(EPOCHS)
    ]
    write_metrics(run_dir / "metrics.parquet", rows)
    write_status(run_dir, "done")
    atomic_write_json(
        run_dir / "manifest.json",
        {"hostname": host, "cpu": "Test CPU 3000", "cpu_count": 2, "gpus": [], "device": "cpu"},
    )
    spec = {
        "run_id": run_id,
        "experiment": "sweep",
        "algo": label,
        "label": label,
        "env_id": ENV,
        "seed": seed,
        "budget": EPOCHS * STEPS,
        "steps_per_epoch": STEPS,
        "cost_limit": limit,
    }
    atomic_write_json(run_dir / "spec.json", spec)
    if mtime is not None:
        os.utime(run_dir / "spec.json", (mtime, mtime))
    return run_id


def write_experiment(root: Path, limits: tuple[float, ...] = LIMITS) -> None:
    atomic_write_json(
        root / EXPERIMENT_RECORD,
        {
            "experiment": {
                "name": "sweep",
                "description": "a sweep",
                "cost_limit": list(limits),
                "environments": [{"id": ENV, "kwargs": {}, "cost_limit": None, "budget": None}],
            },
            "runs": [],
        },
    )


# final (return, cost) per method and limit, three seeds each: "safe" stays under every
# limit; "greedy" is over d = 3 and d = 5 but under d = 8, where its return beats safe's
HOLDS = {
    "safe": {3.0: (10.0, 1.0), 5.0: (12.0, 2.0), 8.0: (15.0, 4.0)},
    "greedy": {3.0: (18.0, 6.0), 5.0: (18.0, 6.5), 8.0: (14.0, 7.0)},
}
CHANGES = {
    "safe": HOLDS["safe"],
    "greedy": {3.0: (18.0, 6.0), 5.0: (18.0, 6.5), 8.0: (19.0, 7.0)},
}


def write_sweep(root: Path, finals: dict[str, dict[float, tuple[float, float]]]) -> None:
    write_experiment(root)
    for label, by_limit in finals.items():
        for limit, (ret, cost) in by_limit.items():
            for seed in range(3):
                # seeds spread a little; the intervals of the two methods never overlap
                write_run(root, label, seed, limit, ret + 0.1 * seed, cost + 0.05 * seed)


@pytest.fixture(scope="module")
def holds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("holds") / "cost-limit-sweep"
    write_sweep(root, HOLDS)
    return root


@pytest.fixture(scope="module")
def both(holds: Path, tmp_path_factory: pytest.TempPathFactory) -> Report:
    """The report of ``holds`` with curves over env steps and over wall-clock time."""
    return build_report(holds, tmp_path_factory.mktemp("both") / "rep", small(x="both"))


def test_each_limit_of_a_sweep_is_a_task_with_its_own_verdict(both: Report) -> None:
    report = both
    verdict = pd.read_csv(report.out / "tables" / "verdict.csv")
    per_limit = verdict.loc[verdict["scope"] != "all envs"]
    assert list(dict.fromkeys(per_limit["scope"])) == list(TASKS)
    assert per_limit.groupby("scope")["cost_limit"].first().to_dict() == dict(zip(TASKS, LIMITS))
    best = per_limit.loc[per_limit["best"]].set_index("scope")["algo"].to_dict()
    assert best == dict.fromkeys(TASKS, "safe")
    # greedy is over the limit at d = 3 and 5, under it (and below safe) at d = 8
    admissible = per_limit.set_index(["scope", "algo"])["admissible"]
    assert [bool(admissible[(t, "greedy")]) for t in TASKS] == [False, False, True]
    assert all(admissible[(t, "safe")] for t in TASKS)
    # all 18 runs used, none superseded by its siblings at the other limits
    runs = pd.read_csv(report.out / "tables" / "runs.csv")
    assert len(runs) == 18 and set(runs["status"]) == {"done"}
    assert set(runs["env"]) == set(TASKS)
    per_env = pd.read_csv(report.out / "tables" / "per_env.csv")
    assert set(per_env["env"]) == set(TASKS) and set(per_env["n_runs"]) == {3}
    md = (report.out / "report.md").read_text()
    assert "cost limits d per env: safebench/ContinuousTarget-v0: 3.00, 5.00, 8.00 (a sweep" in md
    # safe is above greedy at every limit (greedy inadmissible, then lower): the ranking holds
    line = next(x for x in report.summary if x.startswith(f"{ENV}: "))
    assert "the ranking holds across d = 3, 5, 8" in line
    assert "best: d = 3: safe; d = 5: safe; d = 8: safe" in line
    assert "**Across cost limits** on safebench/ContinuousTarget-v0: the ranking holds" in md
    assert (report.out / "figures" / "curves_safebench_ContinuousTarget-v0_d_3.png").is_file()
    # across the sweep's tasks, not "all envs" (there is one env)
    assert "| all tasks (env × limit) (minmax IQM) |" in md


def test_ranking_changes_across_limits(tmp_path: Path) -> None:
    """At d = 8 greedy is admissible with the higher return: safe above greedy at d = 3 and
    5 (greedy inadmissible), below it at d = 8."""
    root = tmp_path / "changes"
    write_sweep(root, CHANGES)
    report = build_report(root, tmp_path / "rep", small())
    line = next(x for x in report.summary if x.startswith(f"{ENV}: "))
    assert "the ranking changes across d = 3, 5, 8" in line, line
    assert "safe above greedy at d = 3, below it at d = 8" in line
    assert "best: d = 3: safe; d = 5: safe; d = 8: greedy" in line
    md = (report.out / "report.md").read_text()
    assert "**Across cost limits** on safebench/ContinuousTarget-v0: the ranking changes" in md


def _verdict_rows(
    scope: str, limit: float, rows: list[tuple[str, bool, int | None]]
) -> list[dict[str, Any]]:
    return [
        {"scope": scope, "algo": a, "admissible": ok, "rank": pd.NA if r is None else r,
         "best": r is not None and r == 1, "cost_limit": limit}
        for a, ok, r in rows
    ]  # fmt: skip


def test_ties_and_joint_inadmissibility_order_nothing() -> None:
    """Only a reversal changes the ranking: a tie at one limit and an order at another, or
    two methods both over the limit, do not."""
    tasks = ("e @ d=1", "e @ d=2", "e @ d=3")
    data = pd.DataFrame(
        _verdict_rows(tasks[0], 1.0, [("a", True, 1), ("b", True, 2), ("c", False, None)])
        + _verdict_rows(tasks[1], 2.0, [("a", True, 1), ("b", True, 1), ("c", True, 1)])
        + _verdict_rows(tasks[2], 3.0, [("b", False, None), ("a", False, None), ("c", True, 1)])
    )
    held, line = ranking_across_limits(data, tasks)
    assert not held  # c: below a and b at d = 1, above both at d = 3
    assert "a above c at d = 1, below it at d = 3" in line
    assert "b above c at d = 1, below it at d = 3" in line and "a above b" not in line
    held, line = ranking_across_limits(data, tasks[:2])
    assert held and "best: d = 1: a; d = 2: tie: a, b, c" in line


def test_a_sweep_supersedes_what_it_no_longer_lists(tmp_path: Path) -> None:
    """Re-runs of one limit: the newest counts; a limit the sweep dropped: superseded by the
    sweep's runs of its cell; a root with no sweep declared keeps the old rule (the newest
    run of each label, env and seed, whatever its limit)."""
    root = tmp_path / "results"
    write_sweep(root, HOLDS)
    now = 2_000_000_000.0
    rerun = write_run(root, "safe", 0, 3.0, 50.0, 1.0, mtime=now)  # a newer run at d = 3
    dropped = write_run(root, "safe", 1, 25.0, 9.0, 9.0, mtime=now - 10)  # an older limit
    df = load(root)
    status = df.drop_duplicates("run_id").set_index("run_id")["status"]
    superseded = set(status.index[status == "superseded"])
    assert dropped in superseded and rerun not in superseded
    older_at_3 = df.loc[
        (df["algo"] == "safe") & (df["seed"] == 0) & (df["cost_limit"] == 3.0), "run_id"
    ]
    assert set(older_at_3) - {rerun} <= superseded and len(superseded) == 2
    assert set(df.loc[df["status"] != "superseded", "env"]) == set(TASKS)
    assert set(df["env_id"]) == {ENV}

    # no experiment.json (runs brought by `train` or `import`): the old rule, no task names
    (root / EXPERIMENT_RECORD).unlink()
    df = load(root)
    kept = df.loc[df["status"] != "superseded"].drop_duplicates("run_id")
    assert set(kept["env"]) == {ENV}
    assert len(kept) == 2 * 3  # one run per label and seed: the newest, whatever its limit


def test_curves_over_wall_clock_time(holds: Path, tmp_path: Path) -> None:
    # analysis: the grid is the wall_time column, and steps stay the default
    df = load(holds)
    one = df.loc[df["env"] == TASKS[0]]
    by_time = analysis.curve_estimates(one, "ep_ret", x="wall_time", n_points=5, reps=20)
    by_steps = analysis.curve_estimates(one, "ep_ret", n_points=5, reps=20)
    assert "wall_time" in by_time.columns and "steps" not in by_time.columns
    assert "steps" in by_steps.columns and by_time.attrs["x"] == "wall_time"
    # every run logs 2 s per epoch and the same returns per epoch: the curves are one
    # another's, with the grid 2 s per 1000 steps
    np.testing.assert_allclose(by_time["wall_time"], by_steps["steps"] * 2.0 / STEPS)
    np.testing.assert_allclose(by_time["estimate"], by_steps["estimate"])
    # regret carries the clock, so the regret panel can be drawn over time too
    assert "wall_time" in analysis.regret_curve(one).columns

    # plots: the unit suits the longest run, and the axis says so
    assert plots.time_unit(90.0) == ("s", 1.0)
    assert plots.time_unit(600.0) == ("min", 60.0)
    assert plots.time_unit(3 * 3600.0) == ("h", 3600.0)
    ax = plots.plot_return_curves(one, Figure().add_subplot(), x="time", reps=20, n_points=5)
    assert ax.get_xlabel() == "training wall-clock time (s)"
    assert np.max(np.asarray(ax.lines[0].get_xdata())) == pytest.approx(12.0)  # 6 epochs x 2 s
    with pytest.raises(ValueError, match="no wall_time column"):
        plots.plot_return_curves(one.drop(columns=["wall_time"]), x="time")


def test_the_report_draws_curves_over_steps_and_time(both: Report) -> None:
    figures = {p.name for p in (both.out / "figures").iterdir()}
    for task in TASKS:  # --x both: each task's curves over steps and over time
        assert f"curves_{env_slug(task)}.png" in figures
        assert f"curves_time_{env_slug(task)}.png" in figures
    png = mpimg.imread(both.out / "figures" / f"curves_time_{env_slug(TASKS[0])}.png")
    assert png.shape[1] > 1000
    md = (both.out / "report.md").read_text()
    assert "vs training wall-clock time (each run's own clock" in md
    assert md.index(f"curves_{env_slug(TASKS[0])}.png") < md.index(
        f"curves_time_{env_slug(TASKS[0])}.png"
    )


def test_throughput_states_the_machines(both: Report, tmp_path: Path) -> None:
    table = pd.read_csv(both.out / "tables" / "throughput.csv")
    assert set(table["machines"]) == {"box-a: Test CPU 3000 (2 CPUs) ×3"}
    md = (both.out / "tables" / "throughput.md").read_text()
    assert "All runs trained on one machine: box-a: Test CPU 3000 (2 CPUs)." in md

    root = tmp_path / "two"
    write_experiment(root)
    for seed in range(3):
        write_run(root, "safe", seed, 3.0, 10.0, 1.0, host="box-a" if seed else "box-b")
        write_run(root, "greedy", seed, 3.0, 18.0, 6.0, host="box-a", seconds_per_epoch=4.0)
    report = build_report(root, tmp_path / "rep", small())
    table = pd.read_csv(report.out / "tables" / "throughput.csv").set_index("algo")
    assert table.loc["safe", "machines"] == (
        "box-a: Test CPU 3000 (2 CPUs) ×2; box-b: Test CPU 3000 (2 CPUs) ×1"
    )
    md = (report.out / "tables" / "throughput.md").read_text()
    assert "M1 = box-a: Test CPU 3000 (2 CPUs); M2 = box-b: Test CPU 3000 (2 CPUs)" in md
    assert "| M1 ×2, M2 ×1 |" in md and "| M1 ×3 |" in md


def test_run_machine_reads_the_manifest(tmp_path: Path) -> None:
    assert run_machine(tmp_path) == "unknown"  # no manifest.json
    atomic_write_json(tmp_path / "manifest.json", {"imported": True, "source": "omnisafe"})
    assert run_machine(tmp_path) == "unknown"
    record = {"hostname": "h", "cpu": "C", "cpu_count": 8, "gpus": ["NVIDIA H100"]}
    atomic_write_json(tmp_path / "manifest.json", {**record, "device": "cpu"})
    assert run_machine(tmp_path) == "h: C (8 CPUs)"
    atomic_write_json(tmp_path / "manifest.json", {**record, "device": "cuda"})
    assert run_machine(tmp_path) == "h: C (8 CPUs), GPU NVIDIA H100"


def test_cli_report_x_option(holds: Path, tmp_path: Path) -> None:
    """In process (typer's runner): a bad --x is refused; --x time draws only time curves."""
    small_reps = ["--reps", "100", "--table-reps", "100", "--curve-reps", "20"]
    runner = CliRunner()
    bad = runner.invoke(app, ["report", str(holds), "--x", "hours", "--out", str(tmp_path / "x")])
    assert isinstance(bad.exception, UserError)
    assert "--x must be steps, time or both" in str(bad.exception)
    out = tmp_path / "rep"
    done = runner.invoke(app, ["report", str(holds), *small_reps, "--x", "time", "--out", str(out)])
    assert done.exit_code == 0, done.output
    assert "safebench/ContinuousTarget-v0: the ranking holds across d = 3, 5, 8" in done.output
    names = {p.stem for p in (out / "figures").glob("curves_*.png")}
    assert names == {f"curves_time_{env_slug(t)}" for t in TASKS}


def test_status_names_each_runs_limit_in_a_sweep(holds: Path) -> None:
    result = CliRunner().invoke(app, ["status", str(holds)])
    assert result.exit_code == 0, result.output
    for limit in ("3", "5", "8"):
        assert result.output.count(f"ContinuousTarget @ d={limit} ") == 6  # 2 labels x 3 seeds
