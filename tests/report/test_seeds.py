"""Enough seeds? ``analysis.ci_width_by_seeds`` / ``closest_pairs`` / ``seeds_to_separate``,
the report's section and ``safebench plan``, checked on runs with a known effect.

The truth the estimates are held against is computed here by simulation, independently of
the code under test (scipy's ``trim_mean`` and ``np.percentile`` on fresh normal draws): many
experiments of n seeds per method from the true distributions, a 95 % percentile-bootstrap
IQM interval per method, the share in which they separate. The "observed" runs are the
true distributions' quantiles at (i + ½)/N, so they carry the true effect and spread and the
comparison measures the method, not the luck of one sample (the slow test uses random draws).
"""

from __future__ import annotations

import math
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from typer.testing import CliRunner

from safebench import analysis
from safebench.analysis.seeds import _iqm_intervals, _iqm_last_axis, _power
from safebench.cli.app import app
from safebench.errors import UserError
from safebench.report import ReportConfig, build_report
from safebench.report.inputs import ReportInputs, load
from safebench.report.per_env import per_env_stats
from safebench.report.seeds import seeds_section
from safebench.results import store
from safebench.schema.spec import EvalSpec, RunSpec

ENV = "SafetyHopperVelocity-v1"


def quantile_runs(mean: float, sd: float, n: int) -> np.ndarray:
    return mean + sd * stats.norm.ppf((np.arange(n) + 0.5) / n)


def scores(cells: dict[tuple[str, str], np.ndarray], cost: float = 10.0) -> pd.DataFrame:
    rows = [
        {
            "run_id": f"{algo}-{env}-{i}",
            "algo": algo,
            "env": env,
            "seed": i,
            "status": "done",
            "ret": float(v),
            "cost": cost + 0.01 * i,
            "cost_limit": 25.0,
        }
        for (algo, env), values in cells.items()
        for i, v in enumerate(values)
    ]
    return pd.DataFrame(rows)


def true_power(delta: float, n: int, experiments: int, reps: int, seed: int = 1) -> float:
    """Share of experiments, n runs per method from N(delta, 1) and N(0, 1), whose 95 %
    percentile-bootstrap IQM intervals separate (the higher one wholly above)."""
    rng = np.random.default_rng([seed, n])

    def interval(x: np.ndarray) -> np.ndarray:
        idx = rng.integers(0, n, size=(experiments, reps, n))
        iqm = stats.trim_mean(np.take_along_axis(x[:, None, :], idx, axis=-1), 0.25, axis=-1)
        return np.percentile(iqm, [2.5, 97.5], axis=-1)

    a = rng.normal(delta, 1.0, (experiments, n))
    b = rng.normal(0.0, 1.0, (experiments, n))
    return float(np.mean(interval(a)[0] > interval(b)[1]))


def true_seeds(delta: float, experiments: int, reps: int, lo: int = 4, hi: int = 50) -> int:
    """Smallest n in 5..hi with true power >= 80 % (bisection; power grows with n from 5)."""
    assert true_power(delta, hi, experiments, reps) >= 0.8
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if true_power(delta, mid, experiments, reps) >= 0.8 else (mid, hi)
    return hi


# --------------------------------------------------------------------------- the bootstrap


def test_vectorised_intervals_are_rliables() -> None:
    """The NumPy bootstrap gives rliable's IQM intervals (per env and stratified across
    envs), up to Monte-Carlo noise: endpoints within 4 % of the interval's width."""
    rng = np.random.default_rng(0)
    a = rng.normal(100.0, 10.0, 7)
    b = rng.normal(50.0, 20.0, 7)
    x = np.sort(rng.normal(size=(2, 9)), axis=-1)
    assert np.allclose(_iqm_last_axis(x), analysis.common._trimmed_mean_last_axis(x))
    frame = scores({("p", "e1"): a, ("p", "e2"): b})
    table = analysis.per_env_table(frame, reps=10_000, metrics=("ret",))
    agg = analysis.aggregate(frame, "ret", reps=10_000, statistics=["iqm"]).iloc[0]
    for values, (low, high) in (
        (a[:, None], table.iloc[0][["ret_low", "ret_high"]]),
        (b[:, None], table.iloc[1][["ret_low", "ret_high"]]),
        (np.column_stack([a, b]), (agg["iqm_low"], agg["iqm_high"])),
    ):
        mine = _iqm_intervals(values[None], 10_000, 0.95, np.random.default_rng(1))
        width = high - low
        assert abs(float(mine[0][0]) - low) < 0.04 * width
        assert abs(float(mine[1][0]) - high) < 0.04 * width


# --------------------------------------------------------------------------- widths


def test_ci_width_follows_the_inverse_sqrt_law() -> None:
    """20 runs from N(100, 10): width(n)·√n is constant within ±12 % for n = 5..20; below 5
    the percentile bootstrap narrows the interval (a floor, as the section says); beyond,
    the extrapolation is the law anchored at n = 20."""
    frame = scores({("a", ENV): quantile_runs(100.0, 10.0, 20)})
    widths = analysis.ci_width_by_seeds(frame, ("ret",), extrapolate_to=(10, 40, 80))
    measured = widths.loc[~widths["extrapolated"]].set_index("n")
    assert list(measured.index) == list(range(2, 21))
    constant = measured["width"] * np.sqrt(measured.index)
    ratio = constant / constant[20]
    assert ratio.loc[5:].between(0.88, 1.12).all(), ratio.round(3).to_dict()
    assert ratio[2] < 0.6  # two runs: the interval is about their range
    # the width at 20 seeds is the IQM's: about 2·1.96·1.1·σ/√20 (1.1: IQM vs mean, normal)
    assert 0.75 < measured.loc[20, "width"] / (2 * 1.96 * 1.1 * 10 / math.sqrt(20)) < 1.1
    beyond = widths.loc[widths["extrapolated"]].set_index("n")["width"]
    assert list(beyond.index) == [40, 80]  # 10 is measured, not extrapolated
    np.testing.assert_allclose(beyond, measured.loc[20, "width"] * np.sqrt(20 / beyond.index))
    # subsamples: every subset where there are at most 50, else 50 random ones; as many
    # bootstrap replications in all at every n
    assert measured.loc[2, "n_subsamples"] == 50 and not measured.loc[2, "all_subsets"]
    assert measured.loc[19, "n_subsamples"] == 20 and measured.loc[19, "all_subsets"]
    assert measured.loc[20, "n_subsamples"] == 1 and measured.loc[20, "reps"] == 200 * 50


def test_widths_across_envs_and_partial_runs() -> None:
    frame = scores(
        {
            ("a", "e1"): quantile_runs(100.0, 10.0, 5),
            ("a", "e2"): quantile_runs(50.0, 5.0, 4),
            ("b", "e1"): np.array([1.0]),
        }
    )
    frame.loc[frame["run_id"] == "a-e1-4", "status"] = "failed"
    per_env = analysis.ci_width_by_seeds(frame, ("ret",))
    assert set(per_env["n_available"]) == {4}  # the failed run left out
    assert any("b on e1: 1 run" in n for n in per_env.attrs["notes"])
    across = analysis.ci_width_by_seeds(frame.loc[frame["algo"] == "a"], ("ret",), across_envs=True)
    assert set(across["scope"]) == {analysis.ACROSS}
    assert across.loc[~across["extrapolated"], "n"].tolist() == [2, 3, 4]
    alone = analysis.ci_width_by_seeds(frame.loc[frame["algo"] == "b"], ("ret",))
    assert alone.empty and alone["extrapolated"].dtype == bool  # no cell with 2 runs


# --------------------------------------------------------------------------- seeds to separate


def test_seeds_to_separate_matches_the_simulated_truth() -> None:
    """Two methods 1.5 sd apart (40 observed runs each): the estimated seeds per method for
    80 % power is within max(2, 20 %) of the truth simulated from the true distributions,
    and the power curves agree within 0.08 at 5, 10 and 20 seeds.

    Measured when written: truth 14 seeds (the simulation here, 400 experiments × 200
    reps; 14 also with 1,000 × 400), estimate 15 (power 87 %); power at 5 / 10 / 20 seeds
    0.39 / 0.67 / 0.95 (truth) against 0.33 / 0.62 / 0.92 (estimate, 400 experiments).
    """
    delta = 1.5
    frame = scores(
        {("a", ENV): quantile_runs(delta, 1.0, 40), ("b", ENV): quantile_runs(0.0, 1.0, 40)}
    )
    truth = true_seeds(delta, experiments=400, reps=200)
    got = analysis.seeds_to_separate(frame, [(ENV, "a", "b")]).iloc[0]
    assert abs(int(got["seeds"]) - truth) <= max(2, 0.2 * truth), (int(got["seeds"]), truth)
    assert got["power_at_seeds"] >= 0.8 and got["reason"] == ""
    assert got["n_now"] == 40 and got["power_now"] > 0.95
    assert got["effect"] == pytest.approx(delta, abs=1e-9)  # quantiles: the true effect
    x, y = (frame.loc[frame["algo"] == a, ["ret"]].to_numpy() for a in ("a", "b"))
    for n in (5, 10, 20):
        estimated = _power(x, y, n, experiments=400, reps=200, confidence=0.95, seed=0)
        assert abs(estimated - true_power(delta, n, 400, 200)) < 0.08, n


def test_not_separable_tiny_cells_and_closest_pairs() -> None:
    same = quantile_runs(0.0, 1.0, 6)
    frame = scores({("a", ENV): same + 0.05, ("b", ENV): same, ("c", ENV): np.array([9.0])})
    result = analysis.seeds_to_separate(frame, [(ENV, "a", "b"), (ENV, "c", "a")], max_seeds=20)
    flat, tiny = result.iloc[0], result.iloc[1]
    assert pd.isna(flat["seeds"]) and flat["reason"].startswith("not separable at this effect")
    assert flat["power_at_max"] < 0.8
    assert pd.isna(tiny["seeds"]) and "fewer than 2 runs" in tiny["reason"]
    with pytest.raises(ValueError, match="no used runs"):
        analysis.seeds_to_separate(frame, [(ENV, "a", "zzz")])
    with pytest.raises(ValueError, match="min_seeds"):
        analysis.seeds_to_separate(frame, [], min_seeds=1)

    verdict = pd.DataFrame(
        {
            "scope": [ENV] * 5,
            "algo": ["p", "q", "r", "s", "t"],
            "admissible": [True, True, True, True, False],
            "ret": [10.0, 9.0, 5.0, 4.5, 20.0],
            "ret_low": [8.0, 7.0, 4.0, 4.0, 19.0],
            "ret_high": [12.0, 11.0, 6.0, 5.0, 21.0],
        }
    )
    pairs = analysis.closest_pairs(verdict)
    # p-q overlap, q-r separated (7 > 6), r-s overlap; t is not admissible
    assert pairs[["higher", "lower"]].values.tolist() == [["p", "q"], ["r", "s"]]
    assert pairs["effect"].tolist() == [1.0, 0.5]


# --------------------------------------------------------------------------- report and CLI


def write_root(root: Path, cells: dict[tuple[str, str], np.ndarray]) -> None:
    """A results root in the store's layout: one done run per value, ending at it."""
    for (label, env), values in cells.items():
        for i, ret in enumerate(values):
            spec = RunSpec(
                experiment="seeds",
                algo="ppo-lag",
                label=label,
                env_id=env,
                seed=i,
                budget=2000,
                steps_per_epoch=1000,
                cost_limit=25.0,
                eval=EvalSpec(episodes=0),
            )
            rows = [
                {"epoch": e, "steps": 1000 * (e + 1), "ep_ret": ret * (e + 1) / 2,
                 "ep_cost": 10.0 + i, "ep_len": 1000.0, "wall_time": 1.0 + e}
                for e in range(2)
            ]  # fmt: skip
            run_dir = spec.run_dir(root)
            store.atomic_write_json(
                run_dir / "spec.json", {**spec.model_dump(mode="json"), "run_id": spec.run_id}
            )
            store.write_metrics(run_dir / "metrics.parquet", rows)
            store.write_status(run_dir, "done")


ENVS = ("SafetyHopperVelocity-v1", "SafetyHalfCheetahVelocity-v1")


def small() -> ReportConfig:
    """Few bootstrap repetitions for the report's other tables; PNG figures only."""
    return ReportConfig(reps=300, table_reps=300, curve_reps=40, curve_points=10, formats=("png",))


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two envs × three methods × 5 seeds: 'top' and 'mid' 1 sd apart (overlapping), 'low'
    far below."""
    path = tmp_path_factory.mktemp("seeds") / "results"
    cells = {}
    for env in ENVS:
        for label, mean in (("top", 110.0), ("mid", 100.0), ("low", 40.0)):
            cells[(label, env)] = quantile_runs(mean, 10.0, 5)[::-1]
    write_root(path, cells)
    return path


def test_section_on_the_report_page(root: Path, tmp_path: Path) -> None:
    report = build_report(root, tmp_path / "rep", small())
    md = (report.out / "report.md").read_text()
    section = md[md.index("## Enough seeds?") : md.index("## Per env")]
    assert md.index("## Aggregate across envs") < md.index("## Enough seeds?")
    assert "Extrapolated" in section and "**5: " in section  # the seeds at hand in bold
    widths = pd.read_csv(report.out / "tables" / "seeds_width.csv")
    assert set(widths["scope"]) == {*ENVS, analysis.ACROSS}
    assert widths.loc[widths["extrapolated"], "n"].unique().tolist() == [10, 20]
    separate = pd.read_csv(report.out / "tables" / "seeds_separate.csv")
    assert {(s, h, lo) for s, h, lo in separate[["scope", "higher", "lower"]].to_numpy()} == {
        (env, "top", "mid") for env in (*ENVS, analysis.ACROSS)
    }
    assert separate["seeds"].between(5, 50).all()


def test_section_without_aggregate(root: Path) -> None:
    inputs = ReportInputs.make(load(root), small(), "t", "now")
    section = seeds_section(inputs, per_env_stats(inputs))  # no aggregate: per env only
    assert set(section.tables) == {"seeds_width", "seeds_separate"}
    assert len(section.summary) == 2  # one closest pair per env
    assert analysis.ACROSS not in set(section.tables["seeds_width"].data["scope"])


def test_plan_prints_the_section(root: Path) -> None:
    result = CliRunner().invoke(app, ["plan", str(root), "--reps", "300", "--table-reps", "300"])
    assert result.exit_code == 0, result.output
    assert "Enough seeds?" in result.output and "extrapolated" in result.output
    lines = [line for line in result.output.splitlines() if " vs mid (IQM return" in line]
    assert len(lines) == 3, result.output  # per env and across envs, as on the report page
    assert all("seeds per method for 80% power (" in line for line in lines), lines
    assert all(re.search(r"; now \d+% at 5 seeds$", line) for line in lines), lines
    missing = CliRunner().invoke(app, ["plan", str(root / "nowhere")])
    assert isinstance(missing.exception, UserError)
    assert "plan:" in str(missing.exception) and "not a directory" in str(missing.exception)


# --------------------------------------------------------------------------- slow


@pytest.mark.slow
def test_estimates_from_random_samples_and_the_time_budget() -> None:
    """Random (not quantile) observed runs, 20 per method, 12 samples per effect: the median
    estimate is within 25 % of the truth (1,000 experiments × 400 reps); widths follow the
    law on average within ±12 % (as the fast test's quantile runs do); and the section's
    numbers for 20 cells of 3-10 seeds take under 5 s of CPU."""
    for delta in (1.0, 1.5):
        truth = true_seeds(delta, experiments=1000, reps=400)
        estimates = []
        for s in range(12):
            rng = np.random.default_rng(s)
            frame = scores({("a", ENV): rng.normal(delta, 1, 20), ("b", ENV): rng.normal(0, 1, 20)})
            got = analysis.seeds_to_separate(frame, [(ENV, "a", "b")]).iloc[0]
            estimates.append(50 if pd.isna(got["seeds"]) else int(got["seeds"]))
        print(f"effect {delta} sd: truth {truth}, estimates {sorted(estimates)}")
        assert abs(np.median(estimates) - truth) <= 0.25 * truth, (delta, truth, estimates)

    ratios = []
    for s in range(12):
        values = np.random.default_rng(100 + s).normal(100, 10, 20)
        w = analysis.ci_width_by_seeds(scores({("a", ENV): values}), ("ret",), extrapolate_to=())
        w = w.set_index("n")["width"]
        ratios.append((w * np.sqrt(w.index) / (w[20] * np.sqrt(20)))[[5, 10, 15]].to_numpy())
    assert np.all(np.abs(np.mean(ratios, axis=0) - 1) < 0.12), np.mean(ratios, axis=0)

    rng = np.random.default_rng(0)
    cells = {}
    for e in range(4):
        for a in range(5):
            cells[(f"algo{a}", f"env{e}")] = rng.normal(100 + 8 * a, 10, 3 + (a + e) % 8)
    frame = scores(cells)
    start = time.process_time()
    analysis.ci_width_by_seeds(frame)
    verdict = analysis.verdict(analysis.per_env_table(frame, reps=2000, metrics=("ret", "cost")))
    pairs = analysis.closest_pairs(verdict)
    analysis.seeds_to_separate(frame, list(pairs[["scope", "higher", "lower"]].itertuples(False)))
    seconds = time.process_time() - start
    print(f"20 cells, {len(pairs)} closest pairs: {seconds:.2f} s CPU")
    assert seconds < 5
