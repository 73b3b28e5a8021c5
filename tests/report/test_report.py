"""``safebench report`` end to end on a real (tiny) quick-start grid, with partial runs.

The grid mirrors experiments/quickstart.yaml (cpo, pcpo, p3o x the two built-in CMDPs x
2 seeds, 4 epochs of 400 steps) and adds two runs that did not finish: one stopped after
its first epoch (status "queued", resumable) and one that failed during its second epoch.
Every table the report writes is checked against the analysis function that defines it,
with the same bootstrap settings; the figures are opened and measured.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
import torch

from safebench import analysis, registry
from safebench.errors import RunInterrupted, UserError
from safebench.report import MARKER, NO_SCORE, Report, ReportConfig, build_report
from safebench.results.store import env_slug, load_runs, read_metrics
from safebench.schema.spec import EvalSpec, RunSpec
from safebench.training.runner import run
from tests.learning import torch_threads

ENVS = ("safebench/ContinuousTarget-v0", "safebench/TabularCMDP-v0")
ALGOS = ("cpo", "pcpo", "p3o")


def small(**kwargs: Any) -> ReportConfig:
    """Few bootstrap repetitions: the tests check plumbing and parity, not precision.

    PNG only unless asked: drawing figures is most of a small report's time.
    """
    kwargs.setdefault("formats", ("png",))
    return ReportConfig(reps=300, table_reps=300, curve_reps=40, curve_points=20, **kwargs)


def spec(algo: str, env: str, seed: int, eval_episodes: int = 2) -> RunSpec:
    return RunSpec(
        experiment="quickstart",
        algo=algo,
        config=registry.resolve_config(algo).model_dump(mode="json"),
        env_id=env,
        seed=seed,
        budget=1600,
        steps_per_epoch=400,
        cost_limit=5.0,
        eval=EvalSpec(episodes=eval_episodes, every_epochs=2),
        device="cpu",
    )


class _Boom(Exception):
    """Raised inside a report build to test that nothing half-written is left behind."""


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The finished grid plus one interrupted and one failed run; returns their ids."""
    torch.set_num_threads(torch_threads())
    root = tmp_path_factory.mktemp("results") / "quickstart"
    for algo in ALGOS:
        for env in ENVS:
            for seed in (0, 1):
                run(spec(algo, env, seed), root)
    stopped = spec("cpo", ENVS[1], 7)
    with pytest.raises(RunInterrupted):
        run(stopped, root, should_stop=lambda: True)

    def fail_in_second_epoch(row: dict[str, Any]) -> None:
        if row["epoch"] == 1:
            raise _Boom("simulated crash in epoch 1")

    failed = spec("pcpo", ENVS[0], 8)
    with pytest.raises(_Boom):
        run(failed, root, progress=fail_in_second_epoch)
    return {"root": root, "stopped": stopped.run_id, "failed": failed.run_id}


def expected_scores(root: Path, final: analysis.FinalMode = "last") -> pd.DataFrame:
    scores = analysis.final_scores(load_runs(root), final)
    no_score = (scores["status"] == "done") & (scores["ret"].isna() | scores["cost"].isna())
    scores.loc[no_score, "status"] = NO_SCORE
    return scores


def csv(report: Report, name: str) -> pd.DataFrame:
    return pd.read_csv(report.out / "tables" / f"{name}.csv")


def assert_numbers_equal(got: pd.DataFrame, want: pd.DataFrame, columns: list[str]) -> None:
    for column in columns:
        np.testing.assert_allclose(
            got[column].to_numpy(float), want[column].to_numpy(float), rtol=1e-12, err_msg=column
        )


def test_report_end_to_end(grid: dict[str, Any], tmp_path: Path) -> None:
    root = grid["root"]
    config = small(ours="p3o", formats=("png", "svg"))
    report = build_report(root, tmp_path / "rep", config)
    out = report.out

    # --- files: tables in three formats, figures in two, the page in two
    tables = (
        "per_env",
        "aggregate",
        "feasibility",
        "gain",
        "runs_matrix",
        "excluded",
        "throughput",
    )
    for name in tables:
        for ext in ("md", "csv", "tex"):
            assert (out / "tables" / f"{name}.{ext}").stat().st_size > 0, (name, ext)
    assert (out / "tables" / "runs.csv").is_file()
    figures = ["aggregate_iqm", "return_vs_cost", "profiles"]
    figures += [f"curves_{env_slug(e)}" for e in ENVS]
    assert sorted(report.figures) == sorted(figures)
    # 15 in wide at 100 dpi; 4 in of panels + one legend row below
    width, height = report.figures[f"curves_{env_slug(ENVS[0])}"]
    assert width == 1500 and 430 <= height <= 440
    for name in figures:
        image = mpimg.imread(out / "figures" / f"{name}.png")
        width, height = report.figures[name]
        assert image.shape[:2] == (height, width), name
        # drawn, not blank: many distinct colours and a good share of non-white pixels
        rgb = image[..., :3].reshape(-1, 3)
        assert len(np.unique(rgb, axis=0)) > 50, name
        assert (rgb < 0.9).any(axis=1).mean() > 0.02, name
        svg = (out / "figures" / f"{name}.svg").read_text()
        assert "<svg" in svg and "</svg>" in svg
    assert (out / MARKER).is_file()
    assert not list(tmp_path.glob(".rep.*")), "staging directory left behind"
    assert out.stat().st_mode & 0o777 == 0o755  # readable like any folder, not mkdtemp's 700

    # --- numbers: each table equals its analysis function on the same runs and settings
    scores = expected_scores(root)
    per_env = analysis.per_env_table(scores, reps=300, seed=0)
    per_env = per_env.sort_values(["env", "algo"], ignore_index=True)
    got = csv(report, "per_env")
    assert got[["algo", "env"]].equals(per_env[["algo", "env"]])
    metric_columns = [f"{m}{s}" for m in ("ret", "cost", "regret") for s in ("", "_low", "_high")]
    assert_numbers_equal(got, per_env, [*metric_columns, "n_runs", "n_excluded"])
    assert got["admissible"].tolist() == per_env["admissible"].tolist()

    used = scores.loc[scores["status"] == "done"]
    norm = analysis.normalize_scores(used, reference=None, method="minmax")
    aggregate = csv(report, "aggregate")
    assert aggregate["normalization"].unique().tolist() == ["minmax"]
    checks: list[tuple[str, list[analysis.Statistic]]] = [
        ("ret", ["iqm", "mean", "median", "optimality_gap"]),
        ("cost", ["iqm"]),
        ("regret", ["iqm"]),
    ]
    for metric, stats in checks:
        want = analysis.aggregate(
            norm, metric, reps=300, seed=0, statistics=stats, ragged="truncate"
        )
        assert aggregate["algo"].tolist() == want["algo"].tolist()
        columns = [f"{s}{b}" for s in stats for b in ("", "_low", "_high")] + ["n_runs", "n_envs"]
        assert_numbers_equal(
            aggregate.rename(columns=lambda c, m=metric: c.removeprefix(f"{m}_")), want, columns
        )

    feasibility = analysis.feasibility_table(scores).sort_values(["env", "algo"], ignore_index=True)
    got = csv(report, "feasibility")
    rate_columns = ["feasible_rate", "feasible_low", "feasible_high", "violation_rate"]
    assert_numbers_equal(got, feasibility, [*rate_columns, "violation_low", "violation_high"])
    gain = analysis.gain_over_best_feasible_baseline(scores, "p3o", ["cpo", "pcpo"])
    assert_numbers_equal(csv(report, "gain"), gain, ["algo_ret", "best_baseline_ret", "gain_pct"])

    # --- partial runs: listed by id and status, counted, never inside a statistic
    excluded = csv(report, "excluded").set_index("run_id")["status"].to_dict()
    assert excluded == {grid["stopped"]: "queued", grid["failed"]: "failed"}
    cell = csv(report, "per_env").set_index(["algo", "env"])
    assert cell.loc[("cpo", ENVS[1]), "n_excluded"] == 1
    assert cell.loc[("cpo", ENVS[1]), "n_runs"] == 2
    matrix = csv(report, "runs_matrix").set_index(["algo", "env", "status"])["n_runs"]
    assert matrix[("pcpo", ENVS[0], "failed")] == 1 and matrix[("pcpo", ENVS[0], "done")] == 2
    md = (out / "report.md").read_text()
    assert "2 (+1 queued)" in md and "2 (+1 failed)" in md
    assert "14 found (14 safebench); 12 done and used; excluded: 1 failed, 1 queued" in md

    # --- the page: protocol on top, figures linked (md) and embedded (html)
    protocol = md.index("## Protocol")
    assert protocol < md.index("## Aggregate")
    for text in ("`--final last`", "aggregate table 300", "per-env table 300", "cost limit d = 5"):
        assert text in md[protocol : md.index("## Aggregate")], text
    # the action protocol, read from the runs' specs
    assert (
        "**Actions** (what the env receives, in training and evaluation): policy output in "
        "[-1, 1] rescaled affinely to the env's box as OmniSafe's `ActionScale` (the identity "
        "on [-1, 1] boxes), unclipped (cpo, p3o, pcpo)."
    ) in md
    for link in re.findall(r"\]\((figures/[^)]+\.png)\)", md):
        assert (out / link).is_file()
    page = (out / "report.html").read_text()
    embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(embedded) == len(figures)
    assert 'src="figures/' not in page
    pngs = {(out / "figures" / f"{n}.png").read_bytes() for n in figures}
    assert {base64.b64decode(e) for e in embedded} == pngs
    assert per_env.loc[0, "env"] in page
    # results are named by folder only: a report can be shared as it is
    assert md.startswith("# safebench report: quickstart")
    assert str(root.parent) not in md and str(root.parent) not in page

    # --- the same formatted cell in Markdown and LaTeX tables
    first = f"{per_env.loc[0, 'ret']:.2f}"
    assert first in (out / "tables" / "per_env.md").read_text()
    tex = (out / "tables" / "per_env.tex").read_text()
    assert "\\begin{tabular}" in tex and "\\toprule" in tex and first in tex
    assert "safebench/ContinuousTarget-v0".replace("_", "\\_") in tex


def test_reference_normalisation_drops_only_undefined_envs(
    grid: dict[str, Any], tmp_path: Path
) -> None:
    """ContinuousTarget's returns are negative: return ÷ reference mean is undefined there."""
    report = build_report(grid["root"], tmp_path / "rep", small(reference="cpo"))
    aggregate = csv(report, "aggregate").set_index("algo")
    assert set(aggregate["ret_n_envs"]) == {1} and set(aggregate["cost_n_envs"]) == {2}
    assert any("return aggregate leaves out env(s)" in n for n in report.notes)
    used = expected_scores(grid["root"])
    used = used.loc[used["status"] == "done"]
    norm = analysis.normalize_scores(used, reference="cpo", method="reference")
    want = analysis.aggregate(
        norm.loc[norm["env"] == ENVS[1]],
        "ret",
        reps=300,
        seed=0,
        statistics=["iqm", "mean", "median", "optimality_gap"],
    ).set_index("algo")
    for column in ("iqm", "iqm_low", "iqm_high", "optimality_gap"):
        np.testing.assert_allclose(aggregate[f"ret_{column}"], want[column], rtol=1e-12)
    assert aggregate.loc["cpo", "ret_iqm"] == pytest.approx(1.0)  # reference / itself
    cost = analysis.aggregate(norm, "cost", reps=300, seed=0, statistics=["iqm"])
    np.testing.assert_allclose(aggregate["cost_iqm_low"], cost["iqm_low"].to_numpy(), rtol=1e-12)
    md = (report.out / "report.md").read_text()
    assert "return ÷ its mean final return per env" in md


def test_final_eval_marks_never_evaluated_runs(grid: dict[str, Any], tmp_path: Path) -> None:
    """Also: cpo keeps 2 runs on one env and 1 on the other, so the aggregate truncates."""
    root = tmp_path / "results"
    for d in sorted(grid["root"].glob("cpo/*/seed[01]-*"))[:3]:
        shutil.copytree(d, root / d.relative_to(grid["root"]))
    torch.set_num_threads(torch_threads())
    blind = spec("p3o", ENVS[1], 3, eval_episodes=0)  # done, but never evaluated
    run(blind, root)
    report = build_report(root, None, small(final="eval"))
    assert report.out == root / "report"
    excluded = csv(report, "excluded").set_index("run_id")["status"]
    assert excluded.get(blind.run_id) == NO_SCORE
    md = (report.out / "report.md").read_text()
    assert f"1 {NO_SCORE}" in md and "`--final eval`" in md
    scores = expected_scores(root, "eval")
    assert scores.set_index("run_id").loc[blind.run_id, "status"] == NO_SCORE
    norm = analysis.normalize_scores(
        scores.loc[scores["status"] == "done"], reference=None, method="minmax"
    )
    want = analysis.aggregate(norm, "cost", reps=300, statistics=["iqm"], ragged="truncate")
    got = csv(report, "aggregate")
    assert got["algo"].tolist() == ["cpo"] and got["cost_n_runs"].tolist() == [1]
    np.testing.assert_allclose(got["cost_iqm_high"], want["iqm_high"], rtol=1e-12)
    assert any("cpo: truncated to 1 run(s) per env" in n for n in report.notes)


def test_no_finished_run_still_reports(grid: dict[str, Any], tmp_path: Path) -> None:
    root = tmp_path / "results"
    for run_id in (grid["stopped"], grid["failed"]):
        (src,) = [p for p in grid["root"].glob(f"*/*/seed*-{run_id[:8]}")]
        shutil.copytree(src, root / src.relative_to(grid["root"]))
    early = spec("cpo", "safebench/NoSuchEnv-v0", 0)  # fails before logging any epoch
    with pytest.raises(Exception, match="NoSuchEnv"):
        run(early, root)
    report = build_report(root, tmp_path / "rep", small())
    md = (report.out / "report.md").read_text()
    assert "## No results" in md and "excluded: 2 failed, 1 queued" in md
    excluded = csv(report, "excluded").set_index("run_id")
    assert excluded["status"].to_dict() == {
        grid["stopped"]: "queued",
        grid["failed"]: "failed",
        early.run_id: "failed",
    }
    assert excluded.loc[early.run_id, "epochs"] == 0
    assert "0 (+1 failed)" in md  # the env only the failed run tried
    assert not report.figures


def test_rerun_replaces_report_and_refuses_foreign_dirs(
    grid: dict[str, Any], tmp_path: Path
) -> None:
    root = tmp_path / "results"
    for d in sorted(grid["root"].glob(f"*/{env_slug(ENVS[1])}/seed[01]-*")):
        shutil.copytree(d, root / d.relative_to(grid["root"]))
    out = tmp_path / "rep"
    build_report(root, out, small())
    stale = out / "figures" / "stale.png"
    stale.write_bytes(b"old")
    build_report(root, out, small(ours="p3o"))
    assert not stale.exists() and (out / "tables" / "gain.csv").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep", "results"]  # nothing left over

    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("keep me")
    with pytest.raises(UserError, match="not a safebench report"):
        build_report(root, foreign, small())
    assert (foreign / "mine.txt").read_text() == "keep me"
    with pytest.raises(UserError, match="'ppo' is not an algorithm label"):
        build_report(root, tmp_path / "x", ReportConfig(reference="ppo"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no runs under"):
        build_report(empty)


def test_throughput_and_crosscheck_sections(grid: dict[str, Any], tmp_path: Path) -> None:
    """cpo's finished runs again, labelled as OmniSafe's CPO that took 4x the wall time."""
    root = tmp_path / "results"
    for d in sorted(grid["root"].glob("*/*/seed[01]-*")):
        shutil.copytree(d, root / d.relative_to(grid["root"]))
    for d in sorted((root / "cpo").glob("*/seed*")):
        ref = root / "omnisafe-cpo" / d.relative_to(root / "cpo")
        shutil.copytree(d, ref)
        spec = json.loads((ref / "spec.json").read_text())
        spec.update(algo="omnisafe:CPO", label="omnisafe-cpo", run_id=spec["run_id"] + "-ref")
        (ref / "spec.json").write_text(json.dumps(spec))
        metrics = read_metrics(ref / "metrics.parquet")
        for column in ("wall_time", "time_rollout", "time_update", "time_eval"):
            metrics[column] *= 4.0
        metrics.to_parquet(ref / "metrics.parquet")
    report = build_report(root, tmp_path / "rep", small())

    throughput = csv(report, "throughput").set_index(["algo", "env"])
    runs = load_runs(root)
    want = analysis.throughput_table(runs, reps=300, seed=0).set_index(["algo", "env"])
    for column in ("steps_per_s", "steps_per_s_low", "steps_per_s_high", "rollout_share"):
        np.testing.assert_allclose(throughput.loc[want.index, column], want[column], rtol=1e-12)
    for env in ENVS:
        assert throughput.loc[("cpo", env), "steps_per_s"] == pytest.approx(
            4.0 * throughput.loc[("omnisafe-cpo", env), "steps_per_s"]
        )
        shares = throughput.loc[("cpo", env), ["rollout_share", "update_share", "eval_share"]]
        assert 0.9 < shares.sum() <= 1.0 + 1e-9  # the rest: logging and checkpoints

    cross = csv(report, "crosscheck").set_index("env")
    assert sorted(cross.index) == sorted(ENVS)
    assert set(cross["algo"]) == {"cpo"} and set(cross["reference"]) == {"omnisafe-cpo"}
    per_env = csv(report, "per_env").set_index(["algo", "env"])
    for env in ENVS:
        row = cross.loc[env]
        # same runs on both sides: same scores; only the clock differs, by exactly 4x
        for metric in ("ret", "ret_low", "cost_high"):
            assert row[metric] == pytest.approx(per_env.loc[("cpo", env), metric])
            assert row[f"ref_{metric}"] == pytest.approx(row[metric])
        # identical scores: neither side is more likely to be better
        assert row["poi_ret"] == pytest.approx(0.5) and row["poi_cost"] == pytest.approx(0.5)
        assert row["ratio"] == pytest.approx(4.0)
        assert row["ratio_low"] <= 4.0 <= row["ratio_high"]
    md = (report.out / "report.md").read_text()
    assert "rescaled by OmniSafe's own `ActionScale`, unclipped (omnisafe-cpo)" in md
    assert md.index("## Throughput") < md.index("## Cross-check against the reference")
    assert "4.00×" in md

    # no reference runs: no cross-check section, the throughput table stays
    plain = build_report(grid["root"], tmp_path / "plain", small())
    assert not (plain.out / "tables" / "crosscheck.csv").exists()
    assert (plain.out / "tables" / "throughput.csv").is_file()


def test_older_runs_of_the_same_cell_are_superseded(grid: dict[str, Any], tmp_path: Path) -> None:
    """A re-run under a changed spec (new run id, same label/env/seed) replaces the old one."""
    root = tmp_path / "results"
    for d in sorted(grid["root"].glob(f"*/{env_slug(ENVS[0])}/seed[01]-*")):
        shutil.copytree(d, root / d.relative_to(grid["root"]))
    original = sorted((root / "cpo" / env_slug(ENVS[0])).glob("seed0-*"))[0]
    rerun = original.parent / "seed0-0rerun00"
    shutil.copytree(original, rerun)
    spec = json.loads((rerun / "spec.json").read_text())
    spec["run_id"] = "0rerun00" + spec["run_id"][8:]
    (rerun / "spec.json").write_text(json.dumps(spec))
    metrics = read_metrics(rerun / "metrics.parquet")
    metrics["ep_ret"] += 1000.0  # the re-run's scores, told apart from the original's
    metrics.to_parquet(rerun / "metrics.parquet")
    old_id = json.loads((original / "spec.json").read_text())["run_id"]
    stamp = (original / "spec.json").stat().st_mtime
    os.utime(rerun / "spec.json", (stamp + 60, stamp + 60))

    report = build_report(root, tmp_path / "rep", small())
    excluded = csv(report, "excluded").set_index("run_id")["status"].to_dict()
    assert excluded == {old_id: "superseded"}
    runs = csv(report, "runs").set_index("run_id")
    assert runs.loc[spec["run_id"], "ret"] == pytest.approx(runs.loc[old_id, "ret"] + 1000.0)
    cell = csv(report, "per_env").set_index(["algo", "env"]).loc[("cpo", ENVS[0])]
    assert cell["n_runs"] == 2 and cell["n_excluded"] == 1
    assert "excluded: 1 superseded" in (report.out / "report.md").read_text()

    # the newer spec wins whichever it is
    os.utime(rerun / "spec.json", (stamp - 60, stamp - 60))
    report = build_report(root, tmp_path / "rep", small())
    excluded = csv(report, "excluded").set_index("run_id")["status"].to_dict()
    assert excluded == {spec["run_id"]: "superseded"}


def test_cli_report(grid: dict[str, Any], tmp_path: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "safebench.cli", "report", str(grid["root"]), *args],
            capture_output=True,
            text=True,
        )

    out = tmp_path / "rep"
    small = ["--reps", "100", "--table-reps", "100", "--curve-reps", "20"]
    done = cli("--out", str(out), "--ours", "p3o", "--final", "last-k", "-k", "2", *small)
    assert done.returncode == 0, done.stderr
    assert "report.html" in done.stdout
    md = (out / "report.md").read_text()
    assert "`--final last-k`, k = 2" in md and "aggregate table 100" in md
    scores = analysis.final_scores(load_runs(grid["root"]), "last-k", 2)
    runs = pd.read_csv(out / "tables" / "runs.csv").set_index("run_id")
    np.testing.assert_allclose(runs.loc[scores["run_id"], "ret"], scores["ret"], rtol=1e-12)
    bad = cli("--reference", "nope", *small)
    assert bad.returncode == 2 and "'nope' is not an algorithm label" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_verdict_opens_the_report_and_wide_tables_fit(grid: dict[str, Any], tmp_path: Path) -> None:
    report = build_report(grid["root"], tmp_path / "rep", small())
    md = (report.out / "report.md").read_text()
    assert md.index("# safebench report") < md.index("## Verdict") < md.index("## Protocol")
    assert "IQM final cost < d" in md and "the **CI decides**" in md

    # the verdict's numbers are analysis.verdict of the per-env table and the aggregate
    scores = expected_scores(grid["root"])
    per_env = analysis.per_env_table(scores, reps=300, seed=0)
    per_env = per_env.sort_values(["env", "algo"], ignore_index=True)
    norm = analysis.normalize_scores(
        scores.loc[scores["status"] == "done"], reference=None, method="minmax"
    )
    stats: list[analysis.Statistic] = ["iqm", "mean", "median", "optimality_gap"]
    ret = analysis.aggregate(norm, "ret", reps=300, seed=0, statistics=stats, ragged="truncate")
    want = analysis.verdict(per_env, ret)
    want["rank"] = want["rank"].astype(float)  # NA (not admissible) -> NaN, as read from CSV
    got = csv(report, "verdict")
    assert got[["scope", "algo"]].values.tolist() == want[["scope", "algo"]].values.tolist()
    assert_numbers_equal(got, want, ["ret", "ret_low", "ret_high", "rank", "n_inadmissible_envs"])
    assert got["admissible"].tolist() == want["admissible"].tolist()
    assert set(got["scope"]) == {*ENVS, "all envs"}
    verdict_md = (report.out / "tables" / "verdict.md").read_text()
    for scope, rows in want.groupby("scope"):
        best = list(rows.loc[rows["best"], "algo"])
        line = next(x for x in verdict_md.splitlines() if x.startswith(f"| {scope}"))
        if not best:
            assert "none admissible" in line
        else:
            assert (best[0] if len(best) == 1 else "tie: " + ", ".join(best)) in line

    # every table scrolls inside its own box; the page itself never does
    page = (report.out / "report.html").read_text()
    n_tables = page.count("<table>")
    assert n_tables == page.count('<div class="table-wrap table-') > 0
    assert ".table-wrap{overflow-x:auto" in page

    # more envs than algorithms: the runs-per-cell matrix turns, envs down the page
    root = tmp_path / "one-algo"
    for d in sorted(grid["root"].glob("cpo/*/seed[01]-*")):
        shutil.copytree(d, root / d.relative_to(grid["root"]))
    one = build_report(root, tmp_path / "one", small())
    matrix = (one.out / "tables" / "runs_matrix.md").read_text()
    assert "| env | cpo |" in matrix
    assert all(f"| {env} | 2 |" in matrix for env in ENVS)


def test_ours_opens_the_report_named_by_the_experiment(
    grid: dict[str, Any], tmp_path: Path
) -> None:
    """An experiment's ``ours``, name and description shape the page's top; the opening
    table is ``analysis.head_to_head``; ``--ours`` overrides the file; the terminal gets it."""
    root = tmp_path / "results"
    shutil.copytree(grid["root"], root)
    record = {
        "experiment": {"name": "my-study", "description": "Is P3O the one?", "ours": ["p3o"]},
        "runs": [],
    }
    (root / "experiment.json").write_text(json.dumps(record))
    report = build_report(root, tmp_path / "rep", small(poi_reps=200))
    md = (report.out / "report.md").read_text()
    assert md.startswith("# safebench report: my-study") and "Is P3O the one?" in md
    assert md.index("## Is p3o better?") < md.index("## Verdict") < md.index("## Protocol")
    assert "**Methods under test** (`ours`): `p3o`" in md

    scores = expected_scores(root)
    per_env = analysis.per_env_table(scores, reps=300, seed=0)
    want = analysis.head_to_head(scores, per_env, ["p3o"], reps=200, seed=0)
    got = csv(report, "ours")
    assert got[["baseline", "scope", "answer"]].values.tolist() == (
        want[["baseline", "scope", "answer"]].values.tolist()
    )
    assert_numbers_equal(got, want, ["p_ret", "p_ret_low", "p_ret_high", "p_cost", "p_cost_high"])
    assert set(got["baseline"]) == {"cpo", "pcpo"} and set(got["scope"]) == {*ENVS, "all envs"}
    # the terminal summary: one line per baseline, across envs
    assert [line.split(":")[0] for line in report.summary] == [
        "p3o vs cpo (all envs)",
        "p3o vs pcpo (all envs)",
    ]

    # --ours on the command line wins over the file
    other = build_report(root, tmp_path / "rep2", small(ours="cpo", poi_reps=200))
    assert set(csv(other, "ours")["ours"]) == {"cpo"}
    # a damaged experiment record: the folder's name, a note, no method under test
    (root / "experiment.json").write_text('{"experiment": ')
    plain = build_report(root, tmp_path / "rep3", small())
    text = (plain.out / "report.md").read_text()
    assert text.startswith("# safebench report: results") and "## Is " not in text
    assert any("experiment.json: not JSON" in n for n in plain.notes)
    assert plain.summary and plain.summary[0].split(":")[0] in {*ENVS, "all envs (minmax IQM)"}

    # the CLI prints the answer
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "safebench.cli.app",
            "report",
            str(root),
            "--out",
            str(tmp_path / "rep4"),
            "--ours",
            "p3o",
            "--reps",
            "50",
            "--table-reps",
            "50",
            "--curve-reps",
            "10",
            "--poi-reps",
            "50",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "p3o vs cpo (all envs): " in done.stdout and "P(return higher)" in done.stdout
