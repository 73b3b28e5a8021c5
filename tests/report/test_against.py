"""``safebench report RESULTS --against OTHER``: matched-budget comparison of two results roots.

Small synthetic roots with known metrics (written as run directories, no training): the matched
step, IQM / CI against a direct rliable computation, P(ours > theirs) in constructed cases,
``--map``, the figures, bad input. A slow test imports the official C-TRPO raw runs
(``SAFEBENCH_CTRPO_RUNS``, see ``scripts/tools/import_ctrpo_runs.sh``) and reports against them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from rliable import library as rly
from rliable import metrics as rlm

from safebench import analysis
from safebench.errors import UserError
from safebench.report import ReportConfig, build_report
from safebench.results.store import (
    atomic_write_json,
    env_slug,
    load_runs,
    read_metrics,
    write_status,
)

ENV = "SafetyHalfCheetahVelocity-v1"
ENV2 = "safebench/ContinuousTarget-v0"
Curve = Callable[[int, int], float]  # (seed, epoch) -> value


def write_run(
    root: Path,
    label: str,
    env: str,
    seed: int,
    *,
    steps_per_epoch: int,
    epochs: int,
    ret: Curve,
    cost: Curve,
    status: str = "done",
    cost_limit: float = 25.0,
) -> str:
    """One run directory as the store lays it out; returns its run id."""
    run_id = hashlib.sha256(f"{root}{label}{env}{seed}{steps_per_epoch}".encode()).hexdigest()
    run_dir = root / label / env_slug(env) / f"seed{seed}-{run_id[:8]}"
    run_dir.mkdir(parents=True)
    metrics = pd.DataFrame(
        {
            "epoch": np.arange(epochs),
            "steps": (np.arange(epochs) + 1.0) * steps_per_epoch,
            "ep_ret": [ret(seed, e) for e in range(epochs)],
            "ep_cost": [cost(seed, e) for e in range(epochs)],
            "ep_len": 1000.0,
        }
    )
    metrics.to_parquet(run_dir / "metrics.parquet", index=False)
    write_status(run_dir, status)  # type: ignore[arg-type]
    spec = {
        "run_id": run_id,
        "experiment": root.name,
        "algo": label,
        "label": label,
        "env_id": env,
        "seed": seed,
        "budget": epochs * steps_per_epoch,
        "steps_per_epoch": steps_per_epoch,
        "cost_limit": cost_limit,
    }
    atomic_write_json(run_dir / "spec.json", spec)
    return run_id


def write_cell(
    root: Path,
    label: str,
    env: str,
    seeds: Sequence[int],
    ret: Curve,
    cost: Curve,
    steps_per_epoch: int = 10_000,
    epochs: int = 10,
) -> None:
    for seed in seeds:
        write_run(
            root,
            label,
            env,
            seed,
            steps_per_epoch=steps_per_epoch,
            epochs=epochs,
            ret=ret,
            cost=cost,
        )


def small(**kwargs: Any) -> ReportConfig:
    kwargs.setdefault("formats", ("png",))
    return ReportConfig(
        reps=100, table_reps=300, curve_reps=30, poi_reps=200, curve_points=20, **kwargs
    )


def table(report_out: Path) -> pd.DataFrame:
    return pd.read_csv(report_out / "tables" / "against.csv").set_index(["env", "algo"])


def cell(data: pd.DataFrame, algo: str) -> pd.Series:
    """The row of ``algo`` on ``ENV`` of an ``against`` table."""
    return data.xs((ENV, algo))


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Ours: cpo (3 seeds, 10 epochs x 10k steps), ctrpo; theirs: 20k-step epochs to 200k."""
    base = tmp_path_factory.mktemp("against")
    ours, theirs = base / "ours", base / "theirs"
    # ours: return 1000 + 10*seed + epoch, cost 5 + seed (below theirs on both counts)
    write_cell(ours, "cpo", ENV, [0, 1, 2], lambda s, e: 1000 + 10 * s + e, lambda s, e: 5.0 + s)
    write_cell(ours, "ctrpo", ENV, [0, 1], lambda s, e: 50.0 + s, lambda s, e: 20.0 + s)
    write_cell(ours, "pcpo", ENV2, [0, 1], lambda s, e: 1.0, lambda s, e: 1.0)
    # theirs: every return below ours, every cost above; one run stops at 120k
    write_cell(
        theirs,
        "cpo",
        ENV,
        [0, 1, 2, 3],
        lambda s, e: 100 + s * e,
        lambda s, e: 30.0 + s,
        steps_per_epoch=20_000,
        epochs=10,
    )
    write_run(
        theirs,
        "cpo",
        ENV,
        9,
        steps_per_epoch=20_000,
        epochs=6,
        ret=lambda s, e: -5.0,
        cost=lambda s, e: 99.0,
    )
    # their C-TRPO: same scores as ours, under another label
    write_cell(theirs, "c-trpo-hyst", ENV, [0, 1], lambda s, e: 50.0 + s, lambda s, e: 20.0 + s)
    write_cell(theirs, "c-trpo", ENV, [0], lambda s, e: 0.0, lambda s, e: 0.0)
    write_cell(theirs, "ppo", ENV2, [0], lambda s, e: 0.0, lambda s, e: 0.0)
    return ours, theirs


# --------------------------------------------------------------------------- analysis


def test_matched_step_is_the_largest_both_reached(roots: tuple[Path, Path]) -> None:
    ours, theirs = (load_runs(r) for r in roots)
    cells = analysis.matched_cells(ours, theirs).set_index(["env", "algo"])
    assert list(cells.index) == [(ENV, "cpo")]  # ctrpo has no 'ctrpo' there without --map
    cell = cells.loc[(ENV, "cpo")]
    # ours reached 100k (every run), theirs 120k (the shortest run): S = 100k
    assert (cell["reach_ours"], cell["reach_theirs"], cell["matched_steps"]) == (1e5, 1.2e5, 1e5)
    assert (cell["n_ours"], cell["n_theirs"]) == (3, 5)
    scores = analysis.matched_scores(ours, theirs, cells.reset_index())
    mine = scores.loc[scores["side"] == "ours"].set_index("seed")
    assert list(mine["steps"]) == [1e5] * 3 and list(mine["ret"]) == [1009.0, 1019.0, 1029.0]
    theirs_at = scores.loc[scores["side"] == "theirs"].set_index("seed")
    assert list(theirs_at["steps"]) == [1e5] * 5  # 5th epoch of 20k each
    assert list(theirs_at["ret"]) == [100.0, 104.0, 108.0, 112.0, -5.0]


def test_epoch_at_or_just_before_and_at_steps(tmp_path: Path) -> None:
    """30k-step epochs against 20k-step ones: S = 140k; ours is scored at 120k, not 150k."""
    a, b = tmp_path / "a", tmp_path / "b"
    write_cell(a, "cpo", ENV, [0], lambda s, e: float(e), lambda s, e: 0.0, 30_000, 5)
    write_cell(b, "cpo", ENV, [0, 1], lambda s, e: float(e), lambda s, e: 0.0, 20_000, 7)
    ours, theirs = load_runs(a), load_runs(b)
    cells = analysis.matched_cells(ours, theirs)
    assert cells["matched_steps"].tolist() == [140_000.0]
    scores = analysis.matched_scores(ours, theirs, cells)
    at = scores.set_index(["side", "seed"])
    assert at.loc[("ours", 0), "steps"] == 120_000.0 and at.loc[("ours", 0), "epoch"] == 3.0
    assert at.loc[("theirs", 1), "steps"] == 140_000.0
    row = analysis.against_table(scores, reps=50, poi_reps=50).iloc[0]
    assert (row["steps_ours_min"], row["steps_theirs_max"]) == (120_000.0, 140_000.0)

    # --at-steps: 50k everywhere; 160k is beyond ours (150k): the cell is dropped, with a note
    at = analysis.matched_cells(ours, theirs, at_steps=50_000)
    scores = analysis.matched_scores(ours, theirs, at).set_index(["side", "seed"])
    assert scores.loc[("ours", 0), "steps"] == 30_000.0
    assert scores.loc[("theirs", 0), "steps"] == 40_000.0
    beyond = analysis.matched_cells(ours, theirs, at_steps=160_000)
    assert beyond.empty and "ours reached 150000" in beyond.attrs["notes"][0]
    # one of their runs short of --at-steps: left out, the other kept
    write_run(
        b,
        "cpo",
        ENV,
        5,
        steps_per_epoch=20_000,
        epochs=9,
        ret=lambda s, e: 1.0,
        cost=lambda s, e: 1.0,
    )
    theirs = load_runs(b)
    at = analysis.matched_cells(ours, theirs, at_steps=150_000)
    scores = analysis.matched_scores(ours, theirs, at)
    assert sorted(scores.loc[scores["side"] == "theirs", "seed"]) == [5]
    assert any("stopped before 150000" in n for n in scores.attrs["notes"])


def test_last_k_averages_each_runs_last_k_epochs_at_or_before_s(tmp_path: Path) -> None:
    """10k-step epochs (cost 10·e) against 20k-step ones (cost 5·e): S = 100k."""
    a, b = tmp_path / "a", tmp_path / "b"
    write_cell(a, "cpo", ENV, [0, 1], lambda s, e: float(e), lambda s, e: 10.0 * e)
    write_cell(b, "cpo", ENV, [0, 1], lambda s, e: float(e), lambda s, e: 5.0 * e, 20_000, 6)
    ours, theirs = load_runs(a), load_runs(b)
    cells = analysis.matched_cells(ours, theirs)
    assert cells["matched_steps"].tolist() == [100_000.0]

    def at(window: int) -> pd.DataFrame:
        return analysis.matched_scores(ours, theirs, cells, window=window).set_index(
            ["side", "seed"]
        )

    one, three = at(1), at(3)
    # window 1: the epoch at S, as before (ours e = 9, theirs e = 4 at 100k)
    assert (one.loc[("ours", 0), "cost"], one.loc[("theirs", 0), "cost"]) == (90.0, 20.0)
    assert one.loc[("ours", 0), "first_steps"] == 100_000.0
    assert one.loc[("ours", 0), "steps"] == 100_000.0
    # window 3: ours e = 7, 8, 9 (80k-100k), theirs e = 2, 3, 4 (60k-100k), never past S
    assert (three.loc[("ours", 1), "ret"], three.loc[("ours", 1), "cost"]) == (8.0, 80.0)
    assert (three.loc[("theirs", 1), "ret"], three.loc[("theirs", 1), "cost"]) == (3.0, 15.0)
    assert three.loc[("ours", 0), "first_steps"] == 80_000.0
    assert three.loc[("theirs", 0), "first_steps"] == 60_000.0
    assert three.loc[("theirs", 0), "steps"] == 100_000.0
    assert not at(3).attrs["notes"]
    # a window longer than the run: what there is, with a note naming the runs
    wide = analysis.matched_scores(ours, theirs, cells, window=20)
    assert wide.set_index(["side", "seed"]).loc[("ours", 0), "cost"] == 45.0
    assert any("fewer than 20 epochs" in n for n in wide.attrs["notes"])
    with pytest.raises(ValueError, match="window must be >= 1"):
        analysis.matched_scores(ours, theirs, cells, window=0)

    # the report: --final last-k -k 3 scores the against table the same way and says so
    report = build_report(a, tmp_path / "rep", small(against=str(b), final="last-k", k=3))
    row = cell(table(report.out), "cpo")
    assert (row["cost"], row["their_cost"]) == (80.0, 15.0)
    assert "last 3 logged epochs" in (report.out / "report.md").read_text()
    plain = build_report(a, tmp_path / "rep1", small(against=str(b)))
    assert (cell(table(plain.out), "cpo")["cost"], cell(table(plain.out), "cpo")["their_cost"]) == (
        90.0,
        20.0,
    )


def test_iqm_and_ci_match_a_direct_computation(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    returns = {0: 1.0, 1: 2.0, 2: 3.0, 3: 4.0, 4: 100.0}  # IQM = mean(2, 3, 4) = 3
    costs = {0: 10.0, 1: 0.0, 2: 20.0, 3: 40.0, 4: 30.0}  # IQM = mean(10, 20, 30) = 20
    write_cell(a, "cpo", ENV, list(returns), lambda s, e: returns[s], lambda s, e: costs[s])
    write_cell(b, "cpo", ENV, [0, 1, 2], lambda s, e: 10.0 * s, lambda s, e: 7.0)
    ours, theirs = load_runs(a), load_runs(b)
    scores = analysis.matched_scores(ours, theirs, analysis.matched_cells(ours, theirs))
    reps, seed = 400, 3
    row = analysis.against_table(scores, reps=reps, poi_reps=50, seed=seed).iloc[0]
    assert row["ret"] == pytest.approx(3.0) and row["cost"] == pytest.approx(20.0)
    assert row["their_ret"] == pytest.approx(10.0) and row["their_cost"] == pytest.approx(7.0)

    def iqm_columns(x: np.ndarray) -> np.ndarray:
        return np.array([rlm.aggregate_iqm(x[:, j]) for j in range(x.shape[1])])

    matrix = np.column_stack([list(returns.values()), list(costs.values())])
    np.random.seed(seed)
    point, interval = rly.get_interval_estimates(
        {"ours": matrix}, iqm_columns, reps=reps, confidence_interval_size=0.95
    )
    np.testing.assert_allclose(point["ours"], [3.0, 20.0])
    np.testing.assert_allclose([row["ret_low"], row["cost_low"]], interval["ours"][0], rtol=1e-12)
    np.testing.assert_allclose([row["ret_high"], row["cost_high"]], interval["ours"][1], rtol=1e-12)
    assert row["their_cost_low"] == row["their_cost_high"] == 7.0  # every run at 7


@pytest.mark.parametrize(
    ("ours_ret", "theirs_ret", "want"),
    [
        ([5.0, 6.0, 7.0], [1.0, 2.0], 1.0),
        ([1.0, 2.0], [5.0, 6.0, 7.0], 0.0),
        ([3.0] * 3, [3.0] * 2, 0.5),
    ],
)
def test_probability_of_improvement_in_constructed_cases(
    tmp_path: Path, ours_ret: list[float], theirs_ret: list[float], want: float
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    # cost: the mirror image, so P(ours lower cost) = P(ours higher return)
    write_cell(
        a, "cpo", ENV, range(len(ours_ret)), lambda s, e: ours_ret[s], lambda s, e: -ours_ret[s]
    )
    write_cell(
        b,
        "cpo",
        ENV,
        range(len(theirs_ret)),
        lambda s, e: theirs_ret[s],
        lambda s, e: -theirs_ret[s],
    )
    ours, theirs = load_runs(a), load_runs(b)
    scores = analysis.matched_scores(ours, theirs, analysis.matched_cells(ours, theirs))
    row = analysis.against_table(scores, reps=50, poi_reps=200).iloc[0]
    for metric in ("poi_ret", "poi_cost"):
        assert row[metric] == pytest.approx(want)
        assert row[f"{metric}_low"] == pytest.approx(want)  # no overlap: every resample agrees
        assert row[f"{metric}_high"] == pytest.approx(want)


def test_rename_labels_refuses_to_merge() -> None:
    runs = pd.DataFrame({"algo": ["a", "b", "c"]})
    renamed = analysis.rename_labels(runs, {"a": "x"})
    assert renamed["algo"].tolist() == ["x", "b", "c"]
    assert renamed["label_orig"].tolist() == ["a", "b", "c"]
    with pytest.raises(ValueError, match="several labels would become one"):
        analysis.rename_labels(runs, {"a": "b"})


# --------------------------------------------------------------------------- report


def test_report_against_with_map(roots: tuple[Path, Path], tmp_path: Path) -> None:
    ours, theirs = roots
    config = small(against=str(theirs), against_map=(("c-trpo-hyst", "ctrpo"),))
    report = build_report(ours, tmp_path / "rep", config)
    data = table(report.out)
    assert sorted(data.index) == [(ENV, "cpo"), (ENV, "ctrpo")]
    cpo, ctrpo = cell(data, "cpo"), cell(data, "ctrpo")
    assert ctrpo["their_label"] == "c-trpo-hyst" and cpo["their_label"] == "cpo"
    # ours above theirs on every return, below on every cost
    assert cpo["poi_ret"] == 1.0 and cpo["poi_cost"] == 1.0
    assert (cpo["n_ours"], cpo["n_theirs"], cpo["matched_steps"]) == (3, 5, 1e5)
    # the same scores under another label: no difference
    assert ctrpo["poi_ret"] == pytest.approx(0.5) and ctrpo["poi_cost"] == pytest.approx(0.5)
    assert ctrpo["ret"] == pytest.approx(ctrpo["their_ret"])
    # the table's numbers are analysis.against_table's on the same inputs
    runs = analysis.rename_labels(load_runs(theirs), {"c-trpo-hyst": "ctrpo"})
    mine = load_runs(ours)
    scores = analysis.matched_scores(mine, runs, analysis.matched_cells(mine, runs))
    want = analysis.against_table(scores, reps=300, poi_reps=200).set_index(["env", "algo"])
    for column in ("ret", "ret_low", "their_cost_high", "poi_ret_low", "poi_cost"):
        np.testing.assert_allclose(data[column], want.loc[data.index, column], rtol=1e-12)

    md = (report.out / "report.md").read_text()
    assert f"## Against {theirs.name}: matched env steps" in md
    assert "`c-trpo-hyst` → `ctrpo`" in md and "at or before" in md
    assert md.index("## Against") < md.index("## Figures")
    assert "Not compared (no counterpart there): pcpo on ContinuousTarget." in md
    for suffix in ("md", "tex", "csv"):
        assert (report.out / "tables" / f"against.{suffix}").is_file()
    figure = report.out / "figures" / f"against_{env_slug(ENV)}.png"
    height, width = mpimg.imread(figure).shape[:2]
    assert width > 1000 and height > 400
    assert not (report.out / "figures" / f"against_{env_slug(ENV2)}.png").exists()


def test_against_curves_stop_at_the_matched_step(roots: tuple[Path, Path]) -> None:
    ours, theirs = (load_runs(r) for r in roots)
    scores = analysis.matched_scores(ours, theirs, analysis.matched_cells(ours, theirs))
    curves = analysis.against_curves(ours, theirs, scores, ENV, "ep_ret", n_points=11, reps=20)
    by_side = curves.groupby("side")["steps"].agg(["min", "max"])
    assert by_side.loc["ours"].tolist() == [1e4, 1e5]
    assert by_side.loc["theirs"].tolist() == [2e4, 1e5]  # their curve is cut at S = 100k
    last = curves.loc[(curves["side"] == "ours") & (curves["steps"] == 1e5), "estimate"]
    assert last.iloc[0] == pytest.approx(1019.0)  # IQM of 1009, 1019, 1029
    assert set(curves.loc[curves["side"] == "theirs", "n_runs"]) == {5}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "safebench.cli", "report", *args], capture_output=True, text=True
    )


def test_bad_input_is_one_line_and_exit_2(roots: tuple[Path, Path], tmp_path: Path) -> None:
    ours, theirs = roots
    out = tmp_path / "rep"
    empty = tmp_path / "empty"
    empty.mkdir()
    fast = ["--reps", "10", "--table-reps", "10", "--curve-reps", "10", "--out", str(out)]
    cases = [
        (["--against", str(tmp_path / "nope")], "--against", "is not a directory"),
        (["--against", str(empty)], "--against", "holds no runs"),
        (["--against", str(theirs), "--map", "c-trpo-hyst"], "--map", "THEIRS=OURS"),
        (["--against", str(theirs), "--map", "nope=ctrpo"], "--map nope=ctrpo", "no algorithm"),
        (["--against", str(theirs), "--map", "c-trpo=nope"], "--map c-trpo=nope", "no algorithm"),
        (["--map", "c-trpo-hyst=ctrpo"], "--map", "needs --against"),
        (["--against", str(theirs), "--at-steps", "2e5"], "--at-steps", "reached"),
    ]
    for args, flag, why in cases:
        done = cli(str(ours), *fast, *args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        message = done.stderr.strip()
        assert "Traceback" not in done.stderr and len(message.splitlines()) == 1, message
        assert flag in message and why in message, message
        assert not out.exists()
    # nothing shared: the message names both sides' labels and the fix
    lone = tmp_path / "lone"
    write_cell(lone, "cvpo", ENV, [0], lambda s, e: 0.0, lambda s, e: 0.0)
    with pytest.raises(UserError, match=r"no \(algorithm, env\) has finished runs on both sides"):
        build_report(ours, out, small(against=str(lone)))
    with pytest.raises(UserError, match="several --against labels into"):
        build_report(ours, out, small(against=str(theirs), against_map=(("c-trpo-hyst", "cpo"),)))
    assert not out.exists()


def test_cli_against(roots: tuple[Path, Path], tmp_path: Path) -> None:
    ours, theirs = roots
    out = tmp_path / "rep"
    fast = ["--reps", "10", "--table-reps", "50", "--curve-reps", "10", "--poi-reps", "50"]
    args = ["--against", str(theirs), "--map", "c-trpo-hyst=ctrpo", "--at-steps", "60000"]
    done = cli(str(ours), *fast, "--out", str(out), *args)
    assert done.returncode == 0, done.stderr
    data = table(out)
    assert set(data["matched_steps"]) == {60_000.0}
    assert data.loc[(ENV, "cpo"), "ret"] == pytest.approx(1015.0)  # epoch 5: 1005/1015/1025


# --------------------------------------------------------------------------- official runs


def _official_runs() -> Path:
    path = os.environ.get("SAFEBENCH_CTRPO_RUNS")
    if not path:
        pytest.skip(
            "SAFEBENCH_CTRPO_RUNS is unset: point it at the official C-TRPO runs exported "
            "from github.com/milosen/ctrpo (its data/runs folder; "
            "scripts/tools/import_ctrpo_runs.sh)"
        )
    runs = Path(path)
    runs = runs / "data" / "runs" if (runs / "data" / "runs").is_dir() else runs
    if not (runs / "benchmark").is_dir() or not (runs / "ablation").is_dir():
        pytest.fail(f"SAFEBENCH_CTRPO_RUNS={path} holds no benchmark/ and ablation/ folders")
    return runs


@pytest.mark.slow
def test_report_against_the_official_halfcheetah_runs(tmp_path: Path) -> None:
    """Import the official HalfCheetah runs; ours = their own CPO and C-TRPO cut at 1M steps.

    Compared with themselves, every cell is matched at 1M steps (epoch 50), has P = 0.5 and
    the IQM of the official EpRet at 1M steps, read here from progress.csv directly.
    """
    from safebench.results.importers import import_runs

    runs = _official_runs()
    official = tmp_path / "official"
    for group in ("benchmark", "ablation"):
        result = import_runs("safepo", runs / group / ENV, official)
        assert result.count("imported") > 0
    imported = load_runs(official)
    assert {"cpo", "pcpo", "p3o", "c-trpo-hyst"} <= set(imported["algo"])
    assert set(imported["status"]) == {"done"}

    ours = tmp_path / "ours"
    for label, mine in (("cpo", "cpo"), ("c-trpo-hyst", "ctrpo")):
        for src in sorted((official / label / env_slug(ENV)).iterdir()):
            dst = ours / mine / env_slug(ENV) / src.name
            shutil.copytree(src, dst)
            metrics = read_metrics(dst / "metrics.parquet")
            metrics.loc[metrics["steps"] <= 1_000_000].to_parquet(dst / "metrics.parquet")
            spec = pd.read_json(dst / "spec.json", typ="series").to_dict()
            spec.update(label=mine, algo=mine, run_id=f"ours-{spec['run_id']}")
            spec.pop("source")
            atomic_write_json(dst / "spec.json", spec)
    config = small(against=str(official), against_map=(("c-trpo-hyst", "ctrpo"),))
    report = build_report(ours, tmp_path / "rep", config)
    data = table(report.out)
    assert sorted(data.index) == [(ENV, "cpo"), (ENV, "ctrpo")]
    assert set(data["matched_steps"]) == {1_000_000.0}
    assert set(data["n_ours"]) == set(data["n_theirs"]) == {5}
    for algo in ("cpo", "ctrpo"):
        row = cell(data, algo)
        label = "c-trpo-hyst" if algo == "ctrpo" else algo
        group = "ablation" if algo == "ctrpo" else "benchmark"
        at_1m = [
            pd.read_csv(run / "progress.csv").set_index("Train/TotalSteps").loc[1_000_000]
            for run in sorted((runs / group / ENV / label).iterdir())
        ]
        values = sorted(r["Metrics/EpRet"] for r in at_1m)
        assert row["their_ret"] == pytest.approx(np.mean(values[1:4]))  # IQM of 5 runs
        assert row["ret"] == pytest.approx(row["their_ret"])
        assert row["poi_ret"] == pytest.approx(0.5) and row["poi_cost"] == pytest.approx(0.5)
    assert (report.out / "figures" / f"against_{env_slug(ENV)}.png").is_file()


def test_fidelity_experiment_is_the_official_protocol() -> None:
    from safebench.schema.spec import parse_experiment

    path = Path(__file__).resolve().parents[2] / "experiments" / "fidelity.yaml"
    exp = parse_experiment(path.read_text(encoding="utf-8"), str(path), check_envs=False)
    assert exp.labels == ["cpo", "pcpo", "p3o", "ctrpo", "kfcpo"]
    assert [e.id for e in exp.environments] == [ENV, "SafetyHopperVelocity-v1"]
    assert exp.seeds == [0, 1000, 2000] and exp.budget == 1_000_000
    assert exp.steps_per_epoch == 20_000 and exp.num_envs == 10 and exp.cost_limit == 25
    assert exp.eval.episodes == 0  # the official runs score training episodes only
    assert all(a.config == {"ep_cost_window": 50} for a in exp.algorithms)
