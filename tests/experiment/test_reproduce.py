"""``safebench reproduce``: the paper experiments, their published numbers, the comparison.

The comparison is checked on a synthetic results directory whose statistics are known in
closed form (trimmed means of chosen final scores), through the same report the command
builds, with the C-TRPO paper's normalisation (return ÷ PPO's mean, regret ÷ CPO's IQM)
checked the same way; the command itself runs end to end on the quick-start grid at smoke
size, and (slow) on the full quick-start grid and on the C-TRPO table at smoke size (all 13
methods).
"""

from __future__ import annotations

import io
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from rich.console import Console
from scipy import stats

from safebench.envs.factory import safety_gymnasium_ids
from safebench.errors import UserError
from safebench.experiment.published import (
    COMPARISON_COLUMNS,
    PUBLISHED_COLUMNS,
    load_published,
    published_path,
)
from safebench.experiment.reproduce import available_experiments, find_experiment, reproduce
from safebench.results.store import atomic_write_json, env_slug, write_metrics, write_status
from safebench.schema.spec import parse_experiment

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = ROOT / "experiments"
PAPER_TABLES = ("ctrpo_table", "kfcpo_table", "cvpo_table", "velocity_small")


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "safebench.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "250"},
    )


# ---------------------------------------------------------------------------------------------
# Finding experiments; the paper experiments follow the papers' protocols
# ---------------------------------------------------------------------------------------------


def test_find_experiment_by_stem_name_and_path(tmp_path: Path) -> None:
    assert find_experiment("ctrpo-table") == EXPERIMENTS / "ctrpo_table.yaml"
    assert find_experiment("ctrpo_table") == EXPERIMENTS / "ctrpo_table.yaml"
    assert find_experiment("quickstart") == EXPERIMENTS / "quickstart.yaml"
    assert find_experiment(str(EXPERIMENTS / "smoke.yaml")) == EXPERIMENTS / "smoke.yaml"
    names = available_experiments()
    for name in ("ctrpo-table", "kfcpo-table", "cvpo-table", "velocity-small", "quickstart"):
        assert name in names
    with pytest.raises(UserError, match=r"no experiment named 'ctrpo-tabel'.*ctrpo-table"):
        find_experiment("ctrpo-tabel")
    with pytest.raises(UserError, match="does not exist"):
        find_experiment(str(tmp_path / "missing.yaml"))


def load(stem: str) -> Any:
    path = EXPERIMENTS / f"{stem}.yaml"
    # Env ids are checked against Safety-Gymnasium's registry below; creating every env
    # here would only repeat what the spec tests cover.
    return parse_experiment(path.read_text(encoding="utf-8"), str(path), check_envs=False)


@pytest.mark.parametrize("stem", PAPER_TABLES)
def test_paper_experiments_validate_with_known_envs(stem: str) -> None:
    exp = load(stem)
    known = set(safety_gymnasium_ids())
    assert all(env.id in known for env in exp.environments), stem
    assert exp.name == stem.replace("_", "-")
    assert exp.output_dir == Path("results") / exp.name


def test_ctrpo_table_is_the_papers_protocol() -> None:
    exp = load("ctrpo_table")
    assert [e.id for e in exp.environments] == [
        "SafetyAntVelocity-v1", "SafetyHalfCheetahVelocity-v1", "SafetyHumanoidVelocity-v1",
        "SafetyHopperVelocity-v1", "SafetyCarButton1-v0", "SafetyPointGoal1-v0",
        "SafetyRacecarCircle1-v0", "SafetyPointPush1-v0",
    ]  # fmt: skip
    assert exp.budget == 10_000_000 and exp.steps_per_epoch == 20_000
    assert exp.seeds == [0, 1000, 2000, 3000, 4000]
    assert exp.cost_limit == 25 and all(e.cost_limit is None for e in exp.environments)
    assert exp.num_envs == 10 and exp.eval.episodes == 0
    assert all(a.config.get("ep_cost_window") == 50 for a in exp.algorithms)


# The paper's 11 methods (its table's 10 and the PPO that normalises the aggregate return) by
# their safebench labels, then safebench's own methods, in the file's order.
CTRPO_PAPER_METHODS = (
    "ctrpo", "cpo", "pcpo", "p3o", "trpo-lag", "cup", "focops", "cppo-pid", "ppo-lag", "ipo", "ppo",
)  # fmt: skip


def test_ctrpo_table_runs_all_eleven_methods_of_the_paper() -> None:
    from safebench.registry import available

    exp = load("ctrpo_table")
    assert exp.labels == [*CTRPO_PAPER_METHODS, "kfcpo", "cvpo"]
    assert all(a.name == a.run_label for a in exp.algorithms)  # the registry names, unrenamed
    assert set(exp.labels) <= set(available())
    p3o = next(a for a in exp.algorithms if a.run_label == "p3o")
    assert p3o.config["variant"] == "official"  # the P3O behind the published runs
    # Every published algo is a label of the grid: each published row meets its runs.
    published = load_published(published_path(EXPERIMENTS / "ctrpo_table.yaml"))
    assert set(published.values["algo"]) == set(CTRPO_PAPER_METHODS) - {"ppo"}
    # The report normalises as the paper does: return ÷ PPO, regret ÷ CPO.
    settings, normalizers = published.meta.report, published.meta.normalizers
    assert (settings.reference, settings.regret_reference) == ("ppo", "cpo")
    assert normalizers == {"norm_ret": settings.reference, "norm_regret": "cpo"}
    text = (EXPERIMENTS / "ctrpo_table.yaml").read_text(encoding="utf-8")
    assert "NOT in safebench" not in text  # the header no longer names missing baselines
    assert "13 algorithms x 8 tasks x 5 seeds = 520 runs" in text


def test_kfcpo_table_uses_omnisafes_protocol() -> None:
    exp = load("kfcpo_table")
    assert exp.labels == ["kfcpo", "cpo", "pcpo", "p3o"]
    assert exp.budget == 10_000_000 and exp.seeds == [0, 5, 10, 15, 20] and exp.cost_limit == 25
    published = load_published(published_path(EXPERIMENTS / "kfcpo_table.yaml"))
    per_env = published.values.loc[published.values["env"] != "*"]
    # every OmniSafe Table 2 task is in the grid
    assert set(per_env["env"]) == {e.id for e in exp.environments}


def test_cvpo_table_has_the_official_per_task_settings() -> None:
    exp = load("cvpo_table")
    settings = {e.id: (e.kwargs["max_episode_steps"], e.cost_limit) for e in exp.environments}
    for task in ("CarButton1", "PointButton1", "CarButton2", "PointButton2"):
        assert settings[f"Safety{task}-v0"] == (400, 10)
    assert settings["SafetyCarCircle1-v0"] == (300, 20)
    assert exp.seeds == list(range(0, 100, 11))
    assert exp.budget == 300 * 20 * 400 and exp.steps_per_epoch == 20 * 400
    assert exp.labels[0] == "cvpo" and exp.eval.episodes == 20


def test_velocity_small_fits_an_hour_on_two_cores() -> None:
    exp = load("velocity_small")
    assert all(e.id.endswith("Velocity-v1") for e in exp.environments)
    runs = len(exp.algorithms) * len(exp.environments) * len(exp.seeds)
    # the sizing stated in the file: the grid trains at ~7,500 env steps/s on two cores
    assert runs * exp.budget / 7_500 <= 1.2 * 3600
    assert exp.resources.cpus == 1  # two runs at a time on two cores


# ---------------------------------------------------------------------------------------------
# Published numbers: the stored values are the sources' values
# ---------------------------------------------------------------------------------------------


def value(published: Any, algo: str, env: str, metric: str) -> pd.Series:
    table = published.values
    row = table.loc[(table["algo"] == algo) & (table["env"] == env) & (table["metric"] == metric)]
    assert len(row) == 1, (algo, env, metric)
    return row.iloc[0]


def test_ctrpo_published_numbers_match_the_paper() -> None:
    published = load_published(published_path(EXPERIMENTS / "ctrpo_table.yaml"))
    assert len(published.values) == 10 * 8 * 3 + 10 * 3
    # docs/algorithms.md#c-trpo-published-numbers: C-TRPO's aggregate normalised IQMs with the
    # notebook's CIs
    row = value(published, "ctrpo", "aggregate", "norm_ret")
    assert (round(row["value"], 3), round(row["ci_low"], 3), round(row["ci_high"], 3)) == (
        0.654, 0.601, 0.706,
    )  # fmt: skip
    assert round(value(published, "ctrpo", "aggregate", "norm_cost")["value"], 3) == -0.213
    assert round(value(published, "ctrpo", "aggregate", "norm_regret")["value"], 3) == 0.523
    assert round(value(published, "cpo", "aggregate", "norm_ret")["value"], 3) == 0.680
    # per env, C-TRPO and CPO (V_r / V_c / Reg+)
    row = value(published, "ctrpo", "SafetyAntVelocity-v1", "ret")
    assert round(row["value"], 1) == 3099.0 and row["ci_low"] < row["value"] < row["ci_high"]
    assert round(value(published, "ctrpo", "SafetyCarButton1-v0", "cost")["value"], 1) == 36.8
    assert round(value(published, "cpo", "SafetyHopperVelocity-v1", "regret")["value"], 1) == 3568.0
    assert set(published.values["source"]) == {"ctrpo-per-env", "ctrpo-aggregate"}
    assert published.meta.report.reference == "ppo" and published.meta.normalizers == {
        "norm_ret": "ppo",
        "norm_regret": "cpo",
    }
    for key in published.meta.sources:
        assert "milosen/ctrpo@386c6478" in published.citation(key)


def test_omnisafe_published_numbers_match_table_2() -> None:
    published = load_published(published_path(EXPERIMENTS / "kfcpo_table.yaml"))
    assert len(published.values) == 3 * 14 * 2 + 1
    row = value(published, "cpo", "SafetyAntVelocity-v1", "ret")
    assert (row["statistic"], row["value"], row["spread"]) == ("mean", 3098.54, 78.90)
    assert math.isnan(row["ci_low"])  # OmniSafe's "±" is not an interval
    assert value(published, "pcpo", "SafetyPointGoal1-v0", "cost")["value"] == 22.98
    assert value(published, "p3o", "SafetyHumanoidVelocity-v1", "cost")["value"] == 126.4
    gain = value(published, "kfcpo", "*", "gain_pct")
    assert (gain["statistic"], gain["ci_low"], gain["ci_high"]) == ("range", 10.3, 50.2)
    assert "PKU-Alignment/omnisafe@15603dd7" in published.citation("omnisafe-table2")


def test_cvpo_has_no_published_values_and_says_why() -> None:
    published = load_published(published_path(EXPERIMENTS / "cvpo_table.yaml"))
    assert published.values.empty and "could not be retrieved" in published.meta.unavailable


def write_published(folder: Path, rows: list[dict[str, Any]], **meta: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows)
    for column in PUBLISHED_COLUMNS:
        if column not in frame.columns:
            frame[column] = ""
    frame[list(PUBLISHED_COLUMNS)].to_csv(folder / "paper.csv", index=False)
    doc = {
        "experiment": "paper",
        "values": "paper.csv",
        "sources": {"src": {"citation": "A. Author. A paper. 2025", "repo": "a/b", "commit": "1"}},
        **meta,
    }
    path = folder / "paper.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def row(algo: str, env: str, metric: str, stat: str = "iqm", **kw: Any) -> dict[str, Any]:
    return {"algo": algo, "env": env, "metric": metric, "statistic": stat, "source": "src", **kw}


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (row("cpo", "E", "return", value=1), "line 2: metric 'return' is not one of"),
        (row("cpo", "E", "ret", "median", value=1), "statistic 'median'"),
        (row("cpo", "E", "ret", value=1) | {"source": "elsewhere"}, "source 'elsewhere'"),
        (row("cpo", "E", "norm_ret", value=1), "its env must be 'aggregate'"),
        (row("cpo", "aggregate", "ret", value=1), "per env"),
        (row("cpo", "E", "ret"), "an iqm needs a value"),
        (row("cpo", "E", "ret", value=1, ci_low=0), "both ci_low and ci_high"),
        (row("cpo", "E", "ret", value=1, ci_low=2, ci_high=0), "ci_low 2.0 is above"),
        (row("cpo", "E", "ret", value="x"), "value 'x' is not a number"),
        (row("kfcpo", "*", "gain_pct", "range", ci_low=1), "a range needs ci_low and ci_high"),
        (row("kfcpo", "E", "gain_pct", "range", ci_low=1, ci_high=2), "range over all envs"),
        (row("cpo", "E", "ret", "range", ci_low=1, ci_high=2), "range over all envs"),
    ],
)
def test_bad_published_rows_are_user_errors(tmp_path: Path, bad: dict, message: str) -> None:
    path = write_published(tmp_path, [bad])
    with pytest.raises(UserError, match=message):
        load_published(path)


def test_published_file_checks(tmp_path: Path) -> None:
    good = row("cpo", "E", "ret", value=1)
    with pytest.raises(
        UserError, match=r"line 3: \('cpo', 'E', 'ret'\) is already given on line 2"
    ):
        load_published(write_published(tmp_path / "a", [good, good]))
    with pytest.raises(UserError, match="unavailable"):
        load_published(write_published(tmp_path / "b", [good], values=None))
    with pytest.raises(UserError, match="normalizers"):
        load_published(write_published(tmp_path / "c", [good], normalizers={"norm_cost": "x"}))
    with pytest.raises(UserError, match=r"report\.final"):
        load_published(write_published(tmp_path / "d", [good], report={"final": "best"}))
    path = write_published(tmp_path / "e", [good])
    (path.parent / "paper.csv").write_text("algo,env\ncpo,E\n")
    with pytest.raises(UserError, match="the columns must be"):
        load_published(path)


# ---------------------------------------------------------------------------------------------
# The comparison on results with known statistics
# ---------------------------------------------------------------------------------------------

ENV_A, ENV_B = "safebench/ContinuousTarget-v0", "safebench/TabularCMDP-v0"
LIMIT = 25.0
# Final (last-epoch) return and cost per seed; the two earlier epochs are fixed below.
FINAL: dict[tuple[str, str], tuple[list[float], list[float]]] = {
    ("ctrpo", ENV_A): ([10, 12, 14, 16, 100], [20, 22, 24, 26, 80]),
    ("ctrpo", ENV_B): ([5, 6, 7, 8, 9], [10, 11, 12, 13, 14]),
    ("cpo", ENV_A): ([8, 9, 10, 11, 12], [20, 21, 22, 23, 24]),
    ("cpo", ENV_B): ([4, 5, 6, 7, 8], [30, 31, 32, 33, 34]),
    ("pcpo", ENV_A): ([1, 2, 3, 4, 5], [1, 2, 3, 4, 5]),
}
EARLY_COSTS = (40.0, 30.0)  # epochs 0 and 1 of every run: regret 15 + 5 before the last epoch


def write_run(root: Path, algo: str, env: str, seed: int, ret: float, cost: float) -> None:
    run_dir = root / algo / env_slug(env) / f"seed{seed}"
    run_dir.mkdir(parents=True)
    spec: dict[str, Any] = {
        "run_id": f"{algo}-{env_slug(env)}-{seed}",
        "experiment": "paper",
        "label": algo,
    }
    spec |= {"algo": algo, "env_id": env, "seed": seed, "cost_limit": LIMIT}
    atomic_write_json(run_dir / "spec.json", spec)
    costs = [*EARLY_COSTS, cost]
    rows = [
        {"epoch": i, "steps": 100 * (i + 1), "ep_ret": r, "ep_cost": c, "ep_len": 10.0}
        for i, (r, c) in enumerate(zip([0.0, 0.0, ret], costs))
    ]
    write_metrics(run_dir / "metrics.parquet", rows)
    write_status(run_dir, "done")


def regret(cost: float) -> float:
    return sum(max(0.0, c - LIMIT) for c in (*EARLY_COSTS, cost))


def iqm(values: list[float] | np.ndarray) -> float:
    return float(stats.trim_mean(np.asarray(values, dtype=float), 0.25))


@pytest.fixture(scope="module")
def paper(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An experiment folder with published numbers and its (synthetic) finished results."""
    base = tmp_path_factory.mktemp("paper")
    results = base / "results" / "paper"
    for (algo, env), (rets, costs) in FINAL.items():
        for seed, (ret, cost) in enumerate(zip(rets, costs)):
            write_run(results, algo, env, seed, ret, cost)
    # pcpo failed on env B: present in the experiment, but nothing to score there
    run_dir = results / "pcpo" / env_slug(ENV_B) / "seed0"
    run_dir.mkdir(parents=True)
    spec = {"run_id": "pcpo-b-0", "experiment": "paper", "label": "pcpo", "algo": "pcpo"}
    atomic_write_json(run_dir / "spec.json", spec | {"env_id": ENV_B, "seed": 0, "cost_limit": 25})
    write_status(run_dir, "failed", error=RuntimeError("simulated"))

    experiments = base / "experiments"
    experiments.mkdir()
    (experiments / "paper.yaml").write_text(
        "name: paper\nalgorithms: [ctrpo, cpo, pcpo]\n"
        f"environments: ['{ENV_A}', '{ENV_B}']\nseeds: 5\nbudget: 300\nsteps_per_epoch: 100\n"
        f"cost_limit: {LIMIT}\noutput: {results}\n",
        encoding="utf-8",
    )
    ctrpo_a = iqm(FINAL[("ctrpo", ENV_A)][0])
    rows = [
        row("ctrpo", ENV_A, "ret", value=ctrpo_a, note="exactly safebench's IQM"),
        row("ctrpo", ENV_A, "cost", value=1000, ci_low=10, ci_high=30),
        row("ctrpo", ENV_B, "regret", value=-50, ci_low=-60, ci_high=-40),
        row("cpo", ENV_A, "ret", "mean", value=10.0, spread=3.0),
        row("pcpo", ENV_B, "cost", value=1),
        row("kfcpo", ENV_A, "ret", value=1),
        row("saute-ppo", ENV_A, "ret", value=1),  # a paper's method safebench does not have
        row("ctrpo", "SafetyAntVelocity-v1", "ret", value=1),
        row("ctrpo", "aggregate", "norm_ret", value=0.6),
        row("ctrpo", "aggregate", "norm_cost", value=-0.2),
        row("ctrpo", "aggregate", "norm_regret", value=0.5, ci_low=0.4, ci_high=0.6),
        row("ctrpo", "*", "gain_pct", "range", ci_low=10.3, ci_high=50.2),
    ]
    write_published(
        experiments / "published",
        rows,
        report={"reference": "cpo", "regret_reference": "cpo", "ours": "ctrpo", "reps": 200,
                "table_reps": 200},
        normalizers={"norm_ret": "ppo", "norm_regret": "cpo"},
        protocol="A synthetic protocol.",
    )  # fmt: skip
    result = reproduce(str(experiments / "paper.yaml"), train=False, console=quiet())
    assert result.comparison is not None
    return {"base": base, "results": results, "result": result}


def compared(paper: dict[str, Any], algo: str, env: str, metric: str) -> pd.Series:
    table = paper["result"].comparison
    match = table.loc[(table["algo"] == algo) & (table["env"] == env) & (table["metric"] == metric)]
    assert len(match) == 1
    return match.iloc[0]


def test_comparison_per_env_statistics(paper: dict[str, Any]) -> None:
    table = paper["result"].comparison
    assert tuple(table.columns) == COMPARISON_COLUMNS and len(table) == 12

    exact = compared(paper, "ctrpo", ENV_A, "ret")
    assert exact["status"] == "compared" and exact["n"] == 5
    assert exact["safebench"] == pytest.approx(iqm([10, 12, 14, 16, 100]))  # 14, not the mean
    assert exact["difference"] == pytest.approx(0.0, abs=1e-9)
    assert exact["safebench_low"] <= exact["safebench"] <= exact["safebench_high"]
    assert bool(exact["published_in_ci"])
    assert pd.isna(exact["intervals_overlap"])  # no published interval

    far = compared(paper, "ctrpo", ENV_A, "cost")
    assert far["safebench"] == pytest.approx(iqm([20, 22, 24, 26, 80]))
    assert not far["published_in_ci"] and far["intervals_overlap"]
    assert far["difference"] == pytest.approx(far["safebench"] - 1000)

    reg = compared(paper, "ctrpo", ENV_B, "regret")
    assert reg["safebench"] == pytest.approx(iqm([regret(c) for c in range(10, 15)]))
    assert reg["safebench"] == pytest.approx(20.0)  # every final cost is feasible on env B
    assert not reg["published_in_ci"] and not reg["intervals_overlap"]

    mean = compared(paper, "cpo", ENV_A, "ret")
    assert mean["statistic"] == "mean" and mean["safebench"] == pytest.approx(10.0)
    assert mean["spread"] == 3.0 and bool(mean["published_in_ci"])
    assert mean["safebench_low"] < 10.0 < mean["safebench_high"]


def test_comparison_statuses(paper: dict[str, Any]) -> None:
    status = {
        (r.algo, r.env, r.metric): (r.status, r.note)
        for r in paper["result"].comparison.itertuples()
    }
    assert status[("pcpo", ENV_B, "cost")] == ("no score", "no done run with a final score")
    assert status[("kfcpo", ENV_A, "ret")] == ("not run", "kfcpo is not in this experiment")
    assert status[("saute-ppo", ENV_A, "ret")] == (
        "not run", "saute-ppo is not implemented in safebench",
    )  # fmt: skip
    assert status[("ctrpo", "SafetyAntVelocity-v1", "ret")][0] == "not run"
    state, note = status[("ctrpo", "aggregate", "norm_ret")]
    assert state == "not comparable" and "÷ ppo" in note and "÷ cpo" in note


def test_comparison_aggregates_and_gain(paper: dict[str, Any]) -> None:
    # The report normalises by cpo: cost as c/d - 1 and regret ÷ cpo's IQM regret per env;
    # pcpo lacks env B, so the aggregate covers both envs for ctrpo.
    cost = compared(paper, "ctrpo", "aggregate", "norm_cost")
    costs = [*FINAL[("ctrpo", ENV_A)][1], *FINAL[("ctrpo", ENV_B)][1]]
    assert cost["status"] == "compared" and cost["note"] == "over 2 envs" and cost["n"] == 10
    assert cost["safebench"] == pytest.approx(iqm(np.array(costs) / LIMIT - 1))

    reg = compared(paper, "ctrpo", "aggregate", "norm_regret")
    normalised = []
    for env in (ENV_A, ENV_B):
        divisor = iqm([regret(c) for c in FINAL[("cpo", env)][1]])
        normalised += [regret(c) / divisor for c in FINAL[("ctrpo", env)][1]]
    assert reg["safebench"] == pytest.approx(iqm(normalised))

    gain = compared(paper, "ctrpo", "*", "gain_pct")
    gains = []
    for env in (ENV_A, ENV_B):
        ours = np.mean(FINAL[("ctrpo", env)][0])
        feasible = {
            algo: np.mean(FINAL[(algo, env)][0])
            for algo in ("cpo", "pcpo")
            if (algo, env) in FINAL and np.mean(FINAL[(algo, env)][1]) <= LIMIT
        }
        if feasible:
            best = max(feasible.values())
            gains.append(100 * (ours - best) / abs(best))
    assert len(gains) == 1  # env B: cpo's mean cost 32 > 25, no feasible baseline
    assert gain["safebench_low"] == pytest.approx(min(gains))
    assert gain["safebench_high"] == pytest.approx(max(gains))
    assert math.isnan(gain["safebench"]) and pd.isna(gain["published_in_ci"])
    assert bool(gain["intervals_overlap"]) == (min(gains) <= 50.2 and max(gains) >= 10.3)


def test_comparison_files(paper: dict[str, Any]) -> None:
    result = paper["result"]
    md, csv = result.files
    assert md.parent == result.report.out == paper["results"] / "report"
    text = md.read_text(encoding="utf-8")
    assert text.startswith("# paper: safebench vs published numbers")
    assert "SMOKE" not in text and "A synthetic protocol." in text
    assert "`src`: A. Author. A paper. 2025; a/b@1" in text
    assert text.count("\n| ctrpo |") == 8
    frame = pd.read_csv(csv)
    assert len(frame) == 12 and tuple(frame.columns) == COMPARISON_COLUMNS


def test_cli_reproduce_without_training(paper: dict[str, Any]) -> None:
    out = cli("reproduce", str(paper["base"] / "experiments" / "paper.yaml"), "--no-train")
    assert out.returncode == 0, out.stderr
    assert "safebench vs published" in out.stdout
    assert "12 published numbers: 7 compared, 3 not run" in out.stdout


def test_no_train_without_results_is_a_user_error(tmp_path: Path) -> None:
    yaml_file = tmp_path / "e.yaml"
    yaml_file.write_text(
        "name: e\nalgorithms: [cpo]\nenvironments: ['safebench/TabularCMDP-v0']\nseeds: 1\n"
        f"budget: 100\nsteps_per_epoch: 100\noutput: {tmp_path / 'nothing'}\n"
    )
    out = cli("reproduce", str(yaml_file), "--no-train")
    assert out.returncode == 2 and "holds no runs" in out.stderr
    assert cli("reproduce", "no-such-experiment").returncode == 2


# ---------------------------------------------------------------------------------------------
# Normalised by PPO, as the C-TRPO paper does
# ---------------------------------------------------------------------------------------------

# Final return and cost per seed; PPO (unconstrained) earns more and pays more.
PPO_FINAL: dict[tuple[str, str], tuple[list[float], list[float]]] = {
    ("ppo", ENV_A): ([20, 22, 24, 26, 48], [60, 70, 80, 90, 100]),
    ("ppo", ENV_B): ([10, 10, 12, 14, 14], [50, 50, 60, 60, 70]),
    **{(a, e): FINAL[(a, e)] for a in ("ctrpo", "cpo") for e in (ENV_A, ENV_B)},
}


def by_reference(algo: str, metric: str, divisor: str) -> float:
    """The aggregate IQM of ``algo``'s normalised ``metric`` over both envs, by hand: per env,
    return ÷ the mean return of ``divisor``, regret ÷ the IQM regret of ``divisor``."""
    scores = []
    for env in (ENV_A, ENV_B):
        rets, costs = PPO_FINAL[(divisor, env)]
        if metric == "ret":
            scale, values = float(np.mean(rets)), PPO_FINAL[(algo, env)][0]
        else:
            scale = iqm([regret(c) for c in costs])
            values = [regret(c) for c in PPO_FINAL[(algo, env)][1]]
        scores += [v / scale for v in values]
    return iqm(scores)


@pytest.fixture(scope="module")
def ppo_paper(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """ctrpo, cpo and ppo on two envs; published numbers normalised as the C-TRPO paper's."""
    base = tmp_path_factory.mktemp("ppo-paper")
    results = base / "results" / "paper"
    for (algo, env), (rets, costs) in PPO_FINAL.items():
        for seed, (ret, cost) in enumerate(zip(rets, costs)):
            write_run(results, algo, env, seed, ret, cost)
    experiments = base / "experiments"
    experiments.mkdir()
    (experiments / "paper.yaml").write_text(
        "name: paper\nalgorithms: [ctrpo, cpo, ppo]\n"
        f"environments: ['{ENV_A}', '{ENV_B}']\nseeds: 5\nbudget: 300\nsteps_per_epoch: 100\n"
        f"cost_limit: {LIMIT}\noutput: {results}\n",
        encoding="utf-8",
    )
    rows = [
        row("ctrpo", "aggregate", "norm_ret", value=0.65),
        row("ctrpo", "aggregate", "norm_regret", value=0.52),
        row("cpo", "aggregate", "norm_ret", value=0.68),
    ]
    # the settings of experiments/published/ctrpo_table.yaml
    published = load_published(published_path(EXPERIMENTS / "ctrpo_table.yaml")).meta
    write_published(
        experiments / "published",
        rows,
        report=published.report.model_dump() | {"reps": 200, "table_reps": 200},
        normalizers=dict(published.normalizers),
    )
    return {"base": base, "results": results}


def test_report_reference_ppo_divides_return_by_ppos_mean(
    ppo_paper: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "report"
    done = cli(
        "report", str(ppo_paper["results"]), "--reference", "ppo", "--out", str(out),
        "--reps", "100", "--table-reps", "100", "--curve-reps", "20",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    aggregate = pd.read_csv(out / "tables" / "aggregate.csv").set_index("algo")
    for algo in ("ctrpo", "cpo", "ppo"):
        assert aggregate.loc[algo, "ret_iqm"] == pytest.approx(by_reference(algo, "ret", "ppo"))
        # --regret-reference defaults to --reference
        regret_iqm = aggregate.loc[algo, "regret_iqm"]
        assert regret_iqm == pytest.approx(by_reference(algo, "regret", "ppo"))
    assert aggregate.loc["ppo", "ret_iqm"] != pytest.approx(1.0)  # IQM of ret ÷ mean, not 1
    assert "return ÷ mean return of `ppo`" in (out / "report.md").read_text(encoding="utf-8")


def test_reproduce_normalises_return_by_ppo_and_regret_by_cpo(ppo_paper: dict[str, Any]) -> None:
    result = reproduce(
        str(ppo_paper["base"] / "experiments" / "paper.yaml"), train=False, console=quiet()
    )
    table = result.comparison
    assert table is not None and set(table["status"]) == {"compared"}
    got = table.set_index(["algo", "metric"])["safebench"]
    assert got[("ctrpo", "norm_ret")] == pytest.approx(by_reference("ctrpo", "ret", "ppo"))
    assert got[("cpo", "norm_ret")] == pytest.approx(by_reference("cpo", "ret", "ppo"))
    assert got[("ctrpo", "norm_regret")] == pytest.approx(by_reference("ctrpo", "regret", "cpo"))


# ---------------------------------------------------------------------------------------------
# End to end
# ---------------------------------------------------------------------------------------------


def test_reproduce_quickstart_smoke_end_to_end(tmp_path: Path) -> None:
    out_dir = tmp_path / "quickstart-smoke"
    out = cli(
        "reproduce", "quickstart", "--smoke", "--backend", "local", "--output", str(out_dir),
        "--reps", "100",
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SMOKE RUN: 400 env steps per run instead of the protocol's 20,000" in out.stdout
    assert "20/20 runs done" in out.stdout
    assert (out_dir / "report" / "report.md").is_file()
    assert "no published numbers are stored for quickstart" in out.stdout


@pytest.mark.slow
def test_reproduce_quickstart_end_to_end(tmp_path: Path) -> None:
    out_dir = tmp_path / "quickstart"
    out = cli("reproduce", "quickstart", "--output", str(out_dir), "--num-cpus", "2")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SMOKE" not in out.stdout and "20/20 runs done" in out.stdout
    report = (out_dir / "report" / "report.md").read_text(encoding="utf-8")
    assert "10,000" in report  # the default bootstrap repetitions, not the smoke ones
    assert len(list((out_dir / "report" / "figures").glob("*.png"))) >= 4


@pytest.mark.slow
@pytest.mark.timeout(1200)  # ~2.5 min on 2 cores: 208 runs (13 methods x 8 tasks x 2 seeds)
def test_reproduce_ctrpo_table_smoke_end_to_end(tmp_path: Path) -> None:
    out_dir = tmp_path / "ctrpo-smoke"
    out = cli(
        "reproduce", "ctrpo-table", "--smoke", "--backend", "local", "--output", str(out_dir),
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SMOKE RUN: 400 env steps per run instead of the protocol's 10,000,000" in out.stdout
    assert "208/208 runs done" in out.stdout
    page = (out_dir / "report" / "published_comparison.md").read_text(encoding="utf-8")
    assert page.startswith("# ctrpo-table-smoke (smoke run): safebench vs published numbers")
    assert "**SMOKE RUN" in page
    runs = pd.read_csv(out_dir / "report" / "tables" / "runs.csv")
    assert set(runs["algo"]) == {*CTRPO_PAPER_METHODS, "kfcpo", "cvpo"}
    # no run failed; at 400 steps runs on tasks with 1,000-step episodes finish no episode
    assert set(runs["status"]) <= {"done", "no-score"}
    table = pd.read_csv(out_dir / "report" / "published_comparison.csv")
    assert len(table) == 270
    by_status = table.groupby("status").size().to_dict()
    # every method of the paper runs, and the aggregates are normalised as the paper's are
    assert "not run" not in by_status and "not comparable" not in by_status, by_status
    assert by_status.get("compared", 0) > 0  # the comparison path ran on scored runs
    norm_ret = table.loc[table["metric"] == "norm_ret"]
    assert set(norm_ret["status"]) == {"compared"}  # return ÷ PPO's mean, as published
