"""Hand-computed checks of the safe-RL metrics and rliable parity of the aggregates."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pytest
from rliable import library as rly
from rliable import metrics as rlm
from scipy import stats

from safebench import analysis

LIMIT = 25.0


def run_frame(
    run_id: str,
    algo: str,
    env: str,
    seed: int,
    ret: Sequence[float],
    cost: Sequence[float],
    *,
    status: str = "done",
    eval_ret: Sequence[float] | None = None,
    eval_cost: Sequence[float] | None = None,
    limit: float = LIMIT,
    steps_per_epoch: int = 1000,
) -> pd.DataFrame:
    n = len(ret)
    nan = [math.nan] * n
    return pd.DataFrame(
        {
            "run_id": run_id,
            "algo": algo,
            "env": env,
            "seed": seed,
            "status": status,
            "epoch": np.arange(n),
            "steps": (np.arange(n) + 1) * steps_per_epoch,
            "ep_ret": np.asarray(ret, dtype=float),
            "ep_cost": np.asarray(cost, dtype=float),
            "ep_len": 1000.0,
            "eval_ret": np.asarray(eval_ret if eval_ret is not None else nan, dtype=float),
            "eval_cost": np.asarray(eval_cost if eval_cost is not None else nan, dtype=float),
            "cost_limit": limit,
            "extra_diag": "ignored",
        }
    )


def score_rows(
    rows: Sequence[tuple[str, str, int, float, float, float]], **extra: object
) -> pd.DataFrame:
    """Scores frame straight from (algo, env, seed, ret, cost, regret) tuples."""
    frame = pd.DataFrame(rows, columns=["algo", "env", "seed", "ret", "cost", "regret"])
    frame["run_id"] = [
        f"{a}/{e}/{s}" for a, e, s in zip(frame.algo, frame.env, frame.seed, strict=True)
    ]
    frame["status"] = "done"
    frame["cost_limit"] = LIMIT
    for key, value in extra.items():
        frame[key] = value
    return frame


def grid_scores(
    rng: np.random.Generator, algos: dict[str, float], n_envs: int, n_seeds: int
) -> pd.DataFrame:
    rows = []
    for algo, level in algos.items():
        for e in range(n_envs):
            for s in range(n_seeds):
                rows.append(
                    (
                        algo,
                        f"env{e}",
                        s,
                        level + rng.normal(0, 0.3),
                        rng.uniform(10, 40),
                        rng.uniform(0, 50),
                    )
                )
    return score_rows(rows)


# --------------------------------------------------------------------------- final scores


@pytest.fixture
def tiny() -> pd.DataFrame:
    a = run_frame(
        "a",
        "cpo",
        "E",
        0,
        [1.0, 2.0, 4.0],
        [30.0, 20.0, 26.0],
        eval_ret=[math.nan, 7.0, math.nan],
        eval_cost=[math.nan, 11.0, math.nan],
    )
    b = run_frame("b", "cpo", "E", 1, [3.0, 5.0], [10.0, 40.0], status="running")
    return pd.concat([a, b], ignore_index=True).sample(frac=1.0, random_state=1)


def test_final_scores_last(tiny: pd.DataFrame) -> None:
    s = analysis.final_scores(tiny, "last").set_index("run_id")
    a = s.loc["a"]
    assert (a.ret, a.cost) == (4.0, 26.0)
    assert a.regret == pytest.approx(5.0 + 0.0 + 1.0)  # max(0, c - 25) summed over epochs
    assert a.violation_rate == pytest.approx(2 / 3)
    assert not bool(a.feasible)  # final cost 26 > 25
    assert (a.steps, a.epochs, a.n_violations, a.n_cost_epochs) == (3000, 3, 2, 3)
    b = s.loc["b"]
    assert b.status == "running"  # partial runs are kept, with their status
    assert (b.ret, b.cost, b.regret, b.violation_rate) == (5.0, 40.0, 15.0, 0.5)
    assert list(s.columns[:11]) == [
        "algo",
        "env",
        "seed",
        "status",
        "ret",
        "cost",
        "regret",
        "violation_rate",
        "feasible",
        "steps",
        "epochs",
    ]


def test_final_scores_last_k_and_eval(tiny: pd.DataFrame) -> None:
    s = analysis.final_scores(tiny, "last-k", k=2).set_index("run_id")
    assert s.loc["a", "ret"] == pytest.approx(3.0)
    assert s.loc["a", "cost"] == pytest.approx(23.0)
    assert bool(s.loc["a", "feasible"]) is True  # mean cost 23 <= 25
    assert s.loc["a", "regret"] == pytest.approx(6.0)  # regret is always whole-run
    s_all = analysis.final_scores(tiny, "last-k", k=50).set_index("run_id")
    assert s_all.loc["a", "ret"] == pytest.approx(7.0 / 3.0)  # k > epochs: all epochs
    ev = analysis.final_scores(tiny, "eval").set_index("run_id")
    assert (ev.loc["a", "ret"], ev.loc["a", "cost"]) == (7.0, 11.0)
    assert math.isnan(ev.loc["b", "ret"])  # never evaluated
    assert pd.isna(ev.loc["b", "feasible"])


def test_final_scores_nan_cost_and_errors(tiny: pd.DataFrame) -> None:
    run = run_frame("c", "x", "E", 0, [1.0, 1.0, 1.0, 1.0], [30.0, math.nan, 20.0, 35.0])
    s = analysis.final_scores(run).iloc[0]
    assert s.regret == pytest.approx(15.0)
    assert s.violation_rate == pytest.approx(2 / 3)  # NaN epoch not in the denominator
    with pytest.raises(ValueError, match="how must be"):
        analysis.final_scores(tiny, "best")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="missing column"):
        analysis.final_scores(tiny.drop(columns="ep_cost"))


def test_regret_curve(tiny: pd.DataFrame) -> None:
    curve = analysis.regret_curve(tiny)
    a = curve.loc[curve.run_id == "a"]
    assert a["regret"].tolist() == [5.0, 5.0, 6.0]
    assert a["steps"].tolist() == [1000, 2000, 3000]
    last = curve.groupby("run_id")["regret"].last()
    scores = analysis.final_scores(tiny).set_index("run_id")["regret"]
    pd.testing.assert_series_equal(last, scores, check_names=False)


# --------------------------------------------------------------------------- Wilson / feasibility


def test_wilson_matches_formula_and_textbook() -> None:
    k, n, z = 3, 10, 1.959963984540054
    p = k / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z / (1 + z**2 / n) * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    assert analysis.wilson_interval(k, n) == pytest.approx((centre - half, centre + half))
    # textbook values (95 %): 0/10 -> [0, 0.2775]; 5/10 -> [0.2366, 0.7634]
    low, high = analysis.wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=5e-5)
    assert analysis.wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=5e-5)
    assert analysis.wilson_interval(10, 10)[1] == 1.0
    assert all(math.isnan(v) for v in analysis.wilson_interval(0, 0))
    with pytest.raises(ValueError):
        analysis.wilson_interval(4, 3)


def test_wilson_matches_statsmodels() -> None:
    proportion = pytest.importorskip("statsmodels.stats.proportion")
    for k, n, conf in [(0, 5, 0.95), (2, 7, 0.9), (17, 40, 0.99)]:
        expected = proportion.proportion_confint(k, n, alpha=1 - conf, method="wilson")
        assert analysis.wilson_interval(k, n, conf) == pytest.approx(expected, abs=1e-12)


def test_feasibility_table_and_partial_runs() -> None:
    frames = [
        run_frame("r0", "cpo", "E", 0, [1, 1], [30, 20]),  # feasible, 1/2 violating
        run_frame("r1", "cpo", "E", 1, [1, 1], [30, 30]),  # infeasible, 2/2
        run_frame("r2", "cpo", "E", 2, [1, 1], [10, 10]),  # feasible, 0/2
        run_frame("r3", "cpo", "E", 3, [1], [99], status="failed"),
    ]
    scores = analysis.final_scores(pd.concat(frames))
    t = analysis.feasibility_table(scores).iloc[0]
    assert (t.n_runs, t.n_excluded, t.n_partial) == (3, 1, 0)
    assert (t.feasible_k, t.feasible_n, t.feasible_rate) == (2, 3, pytest.approx(2 / 3))
    assert (t.feasible_low, t.feasible_high) == pytest.approx(analysis.wilson_interval(2, 3))
    assert (t.violation_k, t.violation_n) == (3, 6)  # pooled over epochs
    assert (t.violation_low, t.violation_high) == pytest.approx(analysis.wilson_interval(3, 6))
    assert t.mean_run_violation_rate == pytest.approx(0.5)
    table = analysis.feasibility_table(scores)
    assert "excluded 1 run(s) that are not done (1 failed)" in table.attrs["notes"][0]
    t2 = analysis.feasibility_table(scores, include_partial=True).iloc[0]
    assert (t2.n_runs, t2.n_excluded, t2.n_partial, t2.feasible_k, t2.violation_k) == (
        4,
        0,
        1,
        2,
        4,
    )


# --------------------------------------------------------------------------- normalisation


def test_normalize_reference() -> None:
    scores = score_rows(
        [
            ("ppo", "E", 0, 10.0, 40.0, 9.0),
            ("ppo", "E", 1, 20.0, 40.0, 9.0),
            ("cpo", "E", 0, 6.0, 20.0, 1.0),
            ("cpo", "E", 1, 6.0, 20.0, 2.0),
            ("cpo", "E", 2, 6.0, 20.0, 3.0),
            ("cpo", "E", 3, 6.0, 20.0, 4.0),
            ("new", "E", 0, 30.0, 30.0, 5.0),
        ]
    )
    partial = score_rows([("ppo", "E", 9, 1000.0, 0.0, 0.0)])
    partial["status"] = "running"
    scores = pd.concat([scores, partial], ignore_index=True)
    norm = analysis.normalize_scores(
        scores, reference="ppo", regret_reference="cpo", method="reference"
    )
    new = norm.loc[norm.algo == "new"].iloc[0]
    assert new.ret == pytest.approx(30.0 / 15.0)  # running PPO run not in the mean
    assert new.cost == pytest.approx(30.0 / 25.0 - 1.0)
    assert new.regret == pytest.approx(5.0 / 2.5)  # IQM of CPO regret {1,2,3,4} = 2.5
    assert (new.ret_raw, new.cost_raw, new.regret_raw) == (30.0, 30.0, 5.0)
    assert len(norm) == len(scores)  # all rows returned, statuses kept
    assert "excluded 1 run(s)" in norm.attrs["notes"][0]
    with_partial = analysis.normalize_scores(
        scores, reference="ppo", regret_reference="cpo", method="reference", include_partial=True
    )
    assert with_partial.loc[with_partial.algo == "new", "ret"].iloc[0] == pytest.approx(
        30.0 / 343.333333
    )
    with pytest.raises(ValueError, match="already normalised"):
        analysis.normalize_scores(norm, reference="ppo", method="reference")


def test_normalize_minmax_and_bad_divisors() -> None:
    scores = score_rows(
        [
            ("a", "E", 0, 0.0, 25.0, 0.0),
            ("b", "E", 0, 5.0, 50.0, 10.0),
            ("c", "E", 0, 10.0, 0.0, 20.0),
            ("a", "F", 0, -4.0, 25.0, 0.0),
            ("b", "F", 0, -2.0, 25.0, 0.0),
        ]
    )
    mm = analysis.normalize_scores(scores, reference=None, method="minmax").set_index(
        ["algo", "env"]
    )
    assert mm.loc[("b", "E"), "ret"] == pytest.approx(0.5)
    assert mm.loc[("b", "F"), "ret"] == pytest.approx(1.0)
    assert mm.loc[("b", "E"), "regret"] == pytest.approx(0.5)  # no reference: min-max
    assert math.isnan(mm.loc[("b", "F"), "regret"])  # zero range on F
    assert mm.loc[("c", "E"), "cost"] == pytest.approx(-1.0)
    ref = analysis.normalize_scores(scores, reference="a", method="reference")
    # a's mean return on F is negative and its IQM regret is 0: NaN with notes
    assert ref.loc[ref.env == "F", "ret"].isna().all()
    assert ref["regret"].isna().all()
    assert any("mean return of 'a'" in n for n in ref.attrs["notes"])
    none = analysis.normalize_scores(scores, reference=None, method="none")
    pd.testing.assert_frame_equal(none, scores)
    with pytest.raises(ValueError, match="no used runs"):
        analysis.normalize_scores(scores, reference="c", method="reference")


# --------------------------------------------------------------------------- rliable aggregates


def test_aggregate_matches_rliable() -> None:
    rng = np.random.default_rng(0)
    scores = grid_scores(rng, {"a": 1.0, "b": 0.5}, n_envs=3, n_seeds=6)
    scores = scores.sample(frac=1.0, random_state=3)  # row order must not matter
    np.random.seed(123)
    expected_next = np.random.random()
    np.random.seed(123)
    out = analysis.aggregate(scores, "ret", reps=500, seed=7, threshold=1.0).set_index("algo")
    assert np.random.random() == expected_next  # the caller's global RNG stream is untouched
    for algo in ("a", "b"):
        cells = scores.loc[scores.algo == algo].sort_values(["env", "seed"])
        matrix = cells["ret"].to_numpy().reshape(3, 6).T  # (runs, envs)
        np.random.seed(7)
        point, ci = rly.get_interval_estimates(
            {algo: matrix}, lambda x: np.array([rlm.aggregate_iqm(x)]), reps=500
        )
        row = out.loc[algo]
        assert row.iqm == pytest.approx(point[algo][0])
        assert row.iqm == pytest.approx(stats.trim_mean(matrix.ravel(), 0.25))
        assert (row.iqm_low, row.iqm_high) == (ci[algo][0, 0], ci[algo][1, 0])
        assert row["mean"] == pytest.approx(matrix.mean())
        assert row["median"] == pytest.approx(np.median(matrix.mean(axis=0)))
        assert row.optimality_gap == pytest.approx(1.0 - np.minimum(matrix, 1.0).mean())
        assert (row.n_runs, row.n_envs, row.n_excluded) == (6, 3, 0)
    again = analysis.aggregate(scores, "ret", reps=500, seed=7).set_index("algo")
    pd.testing.assert_frame_equal(out, again)
    other = analysis.aggregate(scores, "ret", reps=500, seed=8).set_index("algo")
    assert other.loc["a", "iqm_low"] != out.loc["a", "iqm_low"]
    only_iqm = analysis.aggregate(scores, "ret", reps=500, seed=7, statistics=["iqm"])
    assert "mean" not in only_iqm.columns
    assert only_iqm["iqm_low"].tolist() == out["iqm_low"].tolist()


def test_aggregate_ragged_and_partial() -> None:
    rng = np.random.default_rng(1)
    scores = grid_scores(rng, {"a": 1.0, "b": 0.5}, n_envs=2, n_seeds=4)
    scores.loc[(scores.algo == "a") & (scores.env == "env1") & (scores.seed == 3), "status"] = (
        "running"
    )
    with pytest.raises(ValueError, match="different numbers of runs per env"):
        analysis.aggregate(scores, reps=200)
    out = analysis.aggregate(scores, reps=200, ragged="truncate").set_index("algo")
    counts = ["n_runs", "n_excluded", "n_dropped"]
    assert out.loc["a", counts].tolist() == [3, 1, 1]
    assert out.loc["b", counts].tolist() == [4, 0, 0]
    notes = " ".join(out.attrs["notes"])
    assert "excluded 1 run(s) that are not done (1 running)" in notes and "truncated to 3" in notes
    kept = scores.loc[(scores.algo == "a") & (scores.status == "done") & (scores.seed < 3)]
    assert out.loc["a", "iqm"] == pytest.approx(stats.trim_mean(kept["ret"], 0.25))
    full = analysis.aggregate(scores, reps=200, include_partial=True).set_index("algo")
    assert (full.loc["a", "n_runs"], full.loc["a", "n_partial"]) == (4, 1)
    with pytest.raises(ValueError, match="no runs on env"):
        missing_cell = scores.loc[~((scores.algo == "b") & (scores.env == "env1"))]
        analysis.aggregate(missing_cell, reps=200, include_partial=True)


def test_per_env_table_matches_rliable() -> None:
    rng = np.random.default_rng(2)
    scores = grid_scores(rng, {"a": 1.0, "b": 0.5}, n_envs=2, n_seeds=5)
    one = scores.loc[(scores.algo == "a") & (scores.env == "env0")]
    t1 = analysis.per_env_table(one, reps=1000, seed=3, metrics=["ret"]).iloc[0]
    column = one.sort_values("seed")["ret"].to_numpy()[:, None]
    np.random.seed(3)
    point, ci = rly.get_interval_estimates(
        {"x": column}, lambda x: np.array([rlm.aggregate_iqm(x)]), reps=1000
    )
    assert t1.ret == pytest.approx(point["x"][0])
    assert (t1.ret_low, t1.ret_high) == pytest.approx((ci["x"][0, 0], ci["x"][1, 0]))

    table = analysis.per_env_table(scores, reps=2000, seed=0).set_index(["algo", "env"])
    assert len(table) == 4 and (table["n_runs"] == 5).all()
    for (algo, env), row in table.iterrows():
        cell = scores.loc[(scores.algo == algo) & (scores.env == env)]
        for metric in ("ret", "cost", "regret"):
            values = cell[metric].to_numpy()
            assert row[metric] == pytest.approx(rlm.aggregate_iqm(values[:, None]))
            assert row[f"{metric}_low"] <= row[metric] <= row[f"{metric}_high"]
            if (algo, env) != ("b", "env1"):
                continue
            np.random.seed(0)
            _, ref = rly.get_interval_estimates(
                {"x": values[:, None]}, lambda x: np.array([rlm.aggregate_iqm(x)]), reps=2000
            )
            spread = values.max() - values.min()
            # same bootstrap distribution, different draws: agree up to Monte-Carlo error
            assert row[f"{metric}_low"] == pytest.approx(ref["x"][0, 0], abs=0.1 * spread)
            assert row[f"{metric}_high"] == pytest.approx(ref["x"][1, 0], abs=0.1 * spread)
        assert row.admissible == bool(stats.trim_mean(cell["cost"], 0.25) < LIMIT)
    assert table.attrs["n_excluded"] == 0


def test_per_env_table_partial_counts() -> None:
    rng = np.random.default_rng(4)
    scores = grid_scores(rng, {"a": 1.0}, n_envs=1, n_seeds=4)
    scores.loc[0, "status"] = "failed"
    t = analysis.per_env_table(scores, reps=200).iloc[0]
    assert (t.n_runs, t.n_excluded, t.n_partial) == (3, 1, 0)
    t = analysis.per_env_table(scores, reps=200, include_partial=True).iloc[0]
    assert (t.n_runs, t.n_excluded, t.n_partial) == (4, 0, 1)


def test_probability_of_improvement() -> None:
    rng = np.random.default_rng(5)
    scores = grid_scores(rng, {"a": 1.0, "b": 0.8}, n_envs=2, n_seeds=5)
    out = analysis.probability_of_improvement(scores, [("a", "b")], reps=300, seed=2).iloc[0]
    mats = {}
    for algo in ("a", "b"):
        cells = scores.loc[scores.algo == algo].sort_values(["env", "seed"])
        mats[algo] = cells["ret"].to_numpy().reshape(2, 5).T
    np.random.seed(2)
    point, ci = rly.get_interval_estimates(
        {"k": [mats["a"], mats["b"]]}, rlm.probability_of_improvement, reps=300
    )
    assert out.prob == pytest.approx(point["k"])
    assert (out.low, out.high) == pytest.approx(tuple(np.ravel(ci["k"])))
    # cost: lower is better, so a run set with uniformly lower cost improves with P = 1
    costs = score_rows(
        [("lo", "E", s, 0.0, 10.0 + s, 0.0) for s in range(3)]
        + [("hi", "E", s, 0.0, 30.0 + s, 0.0) for s in range(3)]
    )
    poi = analysis.probability_of_improvement(costs, [("lo", "hi")], reps=200, metric="cost")
    assert poi["prob"].iloc[0] == pytest.approx(1.0)


def test_head_to_head_equals_probability_of_improvement_per_env_and_across() -> None:
    """The one-bootstrap head-to-head gives rliable's point estimates exactly, per env and
    averaged over envs, and intervals of the same distribution (close at 4,000 reps)."""
    rng = np.random.default_rng(11)
    scores = grid_scores(rng, {"mine": 1.0, "b": 0.6, "c": 1.0}, n_envs=3, n_seeds=5)
    per_env = pd.DataFrame(
        [
            {"algo": a, "env": f"env{e}", "admissible": True}
            for a in ["mine", "b", "c"]
            for e in range(3)
        ]
    )
    got = analysis.head_to_head(scores, per_env, ["mine"], reps=2000, seed=3)
    assert list(got["baseline"].unique()) == ["b", "c"]
    assert got["scope"].tolist() == ["env0", "env1", "env2", analysis.ACROSS] * 2
    for row in got.loc[got["scope"].isin(["env1", analysis.ACROSS])].itertuples():
        frame = scores if row.scope == analysis.ACROSS else scores.loc[scores.env == row.scope]
        for metric, column in (("ret", "p_ret"), ("cost", "p_cost")):
            want = analysis.probability_of_improvement(
                frame, [("mine", row.baseline)], reps=2000, seed=3, metric=metric
            ).iloc[0]
            assert getattr(row, column) == pytest.approx(want.prob, abs=1e-12)
            # same bootstrap distribution, different draws: endpoints within MC noise
            assert getattr(row, f"{column}_low") == pytest.approx(want.low, abs=0.1)
            assert getattr(row, f"{column}_high") == pytest.approx(want.high, abs=0.1)


def test_head_to_head_answers_from_admissibility_and_the_return_interval() -> None:
    # ours: return 10 + s, cost 5; "low": return s (lower), "same": ours' returns,
    # "unsafe": return 20 + s but over the limit on the one env
    rows = [("ours", "E", s, 10.0 + s, 5.0, 0.0) for s in range(5)]
    rows += [("low", "E", s, float(s), 20.0, 0.0) for s in range(5)]
    rows += [("same", "E", s, 10.0 + s, 1.0, 0.0) for s in range(5)]
    rows += [("unsafe", "E", s, 20.0 + s, 40.0, 0.0) for s in range(5)]
    scores = score_rows(rows)
    admissible = {"ours": True, "low": True, "same": True, "unsafe": False}
    per_env = pd.DataFrame(
        [{"algo": a, "env": "E", "admissible": v} for a, v in admissible.items()]
    )
    got = analysis.head_to_head(scores, per_env, ["ours"], reps=500).set_index("baseline")
    assert got.loc["low", "answer"] == "yes" and got.loc["low", "p_ret"] == 1.0
    assert "lower cost" in got.loc["low", "why"] and got.loc["low", "p_cost"] == 1.0
    assert got.loc["same", "answer"] == "open" and got.loc["same", "p_ret"] == 0.5
    assert "higher cost" in got.loc["same", "why"]
    assert got.loc["unsafe", "answer"] == "yes" and "baseline is over" in got.loc["unsafe", "why"]
    # seen from the other side: an inadmissible method under test is never better
    back = analysis.head_to_head(scores, per_env, ["unsafe"], reps=500).set_index("baseline")
    assert set(back["answer"]) == {"no"}
    # and one with lower return than an admissible baseline is "no"
    low = analysis.head_to_head(scores, per_env, ["low"], reps=500).set_index("baseline")
    assert low.loc["ours", "answer"] == "no" and low.loc["ours", "why"].startswith("lower return")


def test_performance_profiles() -> None:
    scores = score_rows(
        [("a", "E", s, float(s), 10.0 * s, 0.0) for s in range(4)]
        + [("a", "F", s, float(s) + 0.5, 5.0, 0.0) for s in range(4)]
    )
    taus = [0.0, 1.0, 2.5]
    prof = analysis.performance_profiles(scores, taus, reps=200)
    values = scores["ret"].to_numpy()
    assert prof["fraction"].tolist() == pytest.approx([np.mean(values > t) for t in taus])
    assert (prof["low"] <= prof["fraction"] + 1e-12).all()
    cost = analysis.performance_profiles(scores, [5.0, 20.0], metric="cost", reps=200)
    assert cost["fraction"].tolist() == pytest.approx([5 / 8, 7 / 8])  # share with cost <= tau
    assert cost.attrs["higher_is_better"] is False


# --------------------------------------------------------------------------- curves


def test_curve_estimates_interpolates_onto_common_grid() -> None:
    r0 = run_frame("r0", "a", "E", 0, [0.0, 10.0, 20.0], [0, 0, 0], steps_per_epoch=100)
    r1 = run_frame("r1", "a", "E", 1, [0.0, 20.0], [0, 0], steps_per_epoch=150)
    out = analysis.curve_estimates(
        pd.concat([r0, r1]), "ep_ret", estimator="mean", n_points=3, reps=200
    )
    # common support [150, 300]; r0 at 150, 225, 300 = 5, 12.5, 20; r1 = 0, 10, 20
    assert out["steps"].tolist() == [150.0, 225.0, 300.0]
    assert out["estimate"].tolist() == pytest.approx([2.5, 11.25, 20.0])
    assert (out["n_runs"] == 2).all()
    with pytest.raises(ValueError, match="expected one env"):
        two = run_frame("r2", "a", "F", 0, [1.0, 2.0], [0, 0])
        analysis.curve_estimates(pd.concat([r0, two]), "ep_ret")


# --------------------------------------------------------------------------- KFCPO gain


def test_gain_over_best_feasible_baseline() -> None:
    scores = score_rows(
        [
            ("kfcpo", "E", 0, 110.0, 20.0, 0.0),
            ("kfcpo", "E", 1, 130.0, 24.0, 0.0),
            ("cpo", "E", 0, 100.0, 20.0, 0.0),  # feasible, mean ret 100
            ("pcpo", "E", 0, 80.0, 25.0, 0.0),  # feasible (cost == limit), lower ret
            ("p3o", "E", 0, 150.0, 30.0, 0.0),  # best return but infeasible
            ("kfcpo", "F", 0, 10.0, 20.0, 0.0),
            ("cpo", "F", 0, 50.0, 26.0, 0.0),
            ("pcpo", "F", 0, 50.0, 40.0, 0.0),
        ]
    )
    partial = score_rows([("p3o", "E", 1, 500.0, 0.0, 0.0)])
    partial["status"] = "running"
    scores = pd.concat([scores, partial], ignore_index=True)
    out = analysis.gain_over_best_feasible_baseline(scores, "kfcpo", ["cpo", "pcpo", "p3o"])
    e = out.set_index("env").loc["E"]
    assert e.best_baseline == "cpo"
    assert e.gain_pct == pytest.approx(100.0 * (120.0 - 100.0) / 100.0)
    assert (e.n_baselines, e.n_feasible_baselines, e.n_excluded) == (3, 2, 1)
    assert bool(e.algo_feasible) and e.reason == ""
    f = out.set_index("env").loc["F"]
    assert math.isnan(f.gain_pct) and "no baseline has mean cost" in f.reason
    with_partial = analysis.gain_over_best_feasible_baseline(
        scores, "kfcpo", ["cpo", "pcpo", "p3o"], include_partial=True
    ).set_index("env")
    assert with_partial.loc["E", "best_baseline"] == "p3o"  # mean (150, 500) ret, cost 15
    norm = analysis.normalize_scores(scores, reference="cpo", method="reference")
    on_norm = analysis.gain_over_best_feasible_baseline(norm, "kfcpo", ["cpo", "pcpo", "p3o"])
    assert on_norm.set_index("env").loc["E", "gain_pct"] == pytest.approx(20.0)  # raw values used


@pytest.mark.parametrize("column", ["ret", "cost"])
def test_gain_names_a_baseline_without_a_final_score(column: str) -> None:
    """A feasible baseline whose mean return (or cost) is NaN must not compete in R* (nor drop
    out silently): the row says why there is no gain."""
    scores = score_rows(
        [
            ("kfcpo", "E", 0, 110.0, 20.0, 0.0),
            ("cpo", "E", 0, 100.0, 20.0, 0.0),
            ("pcpo", "E", 0, 90.0, 20.0, 0.0),
        ]
    )
    scores.loc[scores["algo"] == "pcpo", column] = math.nan
    row = analysis.gain_over_best_feasible_baseline(scores, "kfcpo", ["cpo", "pcpo"]).iloc[0]
    assert math.isnan(row.gain_pct) and row.reason.startswith("NaN mean return or cost")


# --------------------------------------------------------------------------- throughput


def timed_run(
    run_id: str, algo: str, seed: int, walls: Sequence[float], *, status: str = "done"
) -> pd.DataFrame:
    """A run of len(walls) epochs of 1000 steps whose cumulative wall time is ``walls``."""
    n = len(walls)
    frame = run_frame(run_id, algo, "E", seed, [1.0] * n, [0.0] * n, status=status)
    frame["algo_name"] = algo.upper()
    frame["wall_time"] = np.asarray(walls, dtype=float)
    increments = np.diff(np.asarray(walls, dtype=float), prepend=0.0)
    frame["time_rollout"] = 0.75 * increments
    frame["time_update"] = 0.25 * increments
    frame["time_eval"] = 0.0
    return frame


def test_throughput_table_rates_shares_and_interval() -> None:
    df = pd.concat(
        [
            timed_run("a0", "a", 0, [1.0, 2.0, 4.0]),  # 3000 steps in 4 s
            timed_run("a1", "a", 1, [1.0, 3.0]),  # 2000 steps in 3 s
            timed_run("a2", "a", 2, [9.0], status="failed"),  # not finished: left out
            timed_run("b0", "b", 0, [0.5, 1.0]),
        ],
        ignore_index=True,
    )
    table = analysis.throughput_table(df, reps=500, seed=0).set_index("algo")
    assert table.loc["a", "n_runs"] == 2 and table.loc["b", "n_runs"] == 1
    assert table.loc["a", "rates"] == pytest.approx((750.0, 2000.0 / 3.0))
    assert table.loc["a", "steps_per_s"] == pytest.approx((750.0 + 2000.0 / 3.0) / 2)
    assert table.loc["b", "steps_per_s"] == pytest.approx(2000.0)
    # a single run has no spread: its interval is the point
    assert table.loc["b", "steps_per_s_low"] == pytest.approx(2000.0)
    assert table.loc["b", "steps_per_s_high"] == pytest.approx(2000.0)
    assert 2000.0 / 3.0 <= table.loc["a", "steps_per_s_low"] <= table.loc["a", "steps_per_s"]
    assert table.loc["a", "steps_per_s"] <= table.loc["a", "steps_per_s_high"] <= 750.0
    assert table.loc["a", "rollout_share"] == pytest.approx(0.75)
    assert table.loc["a", "update_share"] == pytest.approx(0.25)
    assert table.loc["a", "eval_share"] == pytest.approx(0.0)
    assert table.loc["a", "algo_name"] == "A"


def test_throughput_table_without_timings_is_an_error() -> None:
    df = timed_run("a0", "a", 0, [1.0], status="failed")
    with pytest.raises(ValueError, match="no finished run"):
        analysis.throughput_table(df)


def test_ratio_of_means_matches_a_direct_bootstrap() -> None:
    a, b = [10.0, 12.0, 14.0], [4.0, 5.0, 6.0]
    point, low, high = analysis.ratio_of_means(a, b, reps=4000, seed=3)
    assert point == pytest.approx(12.0 / 5.0)
    rng = np.random.default_rng(3)
    xs = np.asarray(a)[rng.integers(0, 3, size=(4000, 3))].mean(axis=1)
    ys = np.asarray(b)[rng.integers(0, 3, size=(4000, 3))].mean(axis=1)
    assert (low, high) == pytest.approx(tuple(np.percentile(xs / ys, [2.5, 97.5])))
    # extremes a resample can reach: min(a)/max(b) and max(a)/min(b)
    assert 10.0 / 6.0 <= low < point < high <= 14.0 / 4.0
    assert analysis.ratio_of_means([3.0], [2.0]) == (1.5, 1.5, 1.5)
    with pytest.raises(ValueError, match="at least one"):
        analysis.ratio_of_means([], [1.0])


def test_reference_pairs_match_registry_names() -> None:
    names = {
        "cpo": "cpo",
        "cpo-exact": "cpo",
        "omnisafe-cpo": "omnisafe:CPO",
        "p3o": "p3o",
        "ref-pcpo": "omnisafe:PCPO",
        "kfcpo": "kfcpo",
    }
    assert analysis.reference_pairs(names) == [
        ("cpo", "omnisafe-cpo"),
        ("cpo-exact", "omnisafe-cpo"),
    ]
    assert analysis.reference_pairs({"cpo": "cpo", "p3o": "p3o"}) == []


def test_crosscheck_table_pairs_per_env_poi_and_ratio() -> None:
    """Ours beats the reference on env0 in every run, ties it on env1; 2x its throughput."""
    rows = [("ours", "env0", s, 10.0 + s, 5.0, 0.0) for s in range(3)]
    rows += [("ref", "env0", s, 1.0 + s, 5.0, 0.0) for s in range(3)]
    rows += [(algo, "env1", s, float(s), 30.0 - s, 0.0) for algo in ("ours", "ref") for s in (0, 1)]
    rows += [("other", "env1", 0, 0.0, 0.0, 0.0)]  # no reference: not in the table
    failed = score_rows([("ours", "env0", 9, -1e6, 5.0, 0.0)], status="failed")
    # the failed run of ours is left out of every number
    scores = pd.concat([score_rows(rows), failed], ignore_index=True)
    per_env = analysis.per_env_table(scores, reps=200, seed=0)
    throughput = pd.DataFrame(
        {
            "algo": ["ours", "ref"],
            "env": ["env0", "env0"],
            "rates": [(200.0, 200.0), (100.0, 100.0, 100.0)],
        }
    )
    pairs = [("ours", "ref")]
    table = analysis.crosscheck_table(
        scores, per_env, pairs, throughput, poi_reps=200, ratio_reps=200, seed=1
    )
    assert table[["env", "algo", "reference"]].values.tolist() == [
        ["env0", "ours", "ref"],
        ["env1", "ours", "ref"],
    ]
    cells = per_env.set_index(["algo", "env"])
    for row in table.itertuples():
        for metric in ("ret", "ret_low", "ret_high", "cost", "cost_low", "cost_high"):
            assert getattr(row, metric) == cells.loc[("ours", row.env), metric]
            assert getattr(row, f"ref_{metric}") == cells.loc[("ref", row.env), metric]
    env0, env1 = table.iloc[0], table.iloc[1]
    # every run of ours has the higher return on env0; equal costs: 0.5
    assert env0["poi_ret"] == 1.0 and env0["poi_cost"] == 0.5
    want = analysis.probability_of_improvement(
        scores.loc[(scores.env == "env1") & (scores.status == "done")],
        pairs,
        reps=200,
        seed=1,
        metric="cost",
    ).iloc[0]
    assert (env1["poi_cost"], env1["poi_cost_low"], env1["poi_cost_high"]) == (
        want["prob"],
        want["low"],
        want["high"],
    )
    assert (env0["ratio"], env0["ratio_low"], env0["ratio_high"]) == pytest.approx((2, 2, 2))
    assert math.isnan(env1["ratio"])  # no throughput on env1
    without = analysis.crosscheck_table(scores, per_env, pairs, None, poi_reps=200)
    assert without["ratio"].isna().all()
    assert analysis.crosscheck_table(scores, per_env, [], None).empty


# --------------------------------------------------------------------------- verdict


def test_interval_ranks_share_a_rank_where_intervals_overlap() -> None:
    # a [10, 20] and b [15, 25] overlap: both 1; d [12, 14] lies inside a's interval but
    # below b's lower bound 15: outranked by b only, 2; c [0, 5] is below all three: 4
    ranks = analysis.interval_ranks([10.0, 15.0, 0.0, 12.0], [20.0, 25.0, 5.0, 14.0])
    assert ranks.tolist() == [1, 1, 4, 2]
    assert analysis.interval_ranks([], []).tolist() == []
    with pytest.raises(ValueError, match="differ"):
        analysis.interval_ranks([1.0], [2.0, 3.0])


def per_env_cells(rows: Sequence[tuple[str, str, float, float, float, float]]) -> pd.DataFrame:
    """A per_env_table-like frame from (algo, env, ret, ret half-width, cost, cost half-width)."""
    frame = pd.DataFrame(rows, columns=["algo", "env", "ret", "ret_hw", "cost", "cost_hw"])
    frame["ret_low"] = frame["ret"] - frame["ret_hw"]
    frame["ret_high"] = frame["ret"] + frame["ret_hw"]
    frame["cost_low"] = frame["cost"] - frame["cost_hw"]
    frame["cost_high"] = frame["cost"] + frame["cost_hw"]
    frame["cost_limit"] = LIMIT
    frame["admissible"] = frame["cost"] < LIMIT
    return frame.drop(columns=["ret_hw", "cost_hw"])


def test_verdict_ranks_admissible_methods_marks_ties_lists_the_rest() -> None:
    per_env = per_env_cells(
        [
            # E1: best is clearly "a"; "b" and "c" tie for second; "d" has the highest
            # return but breaks the limit; "e" is admissible by its IQM, its CI crosses d
            ("a", "E1", 100.0, 5.0, 10.0, 2.0),
            ("b", "E1", 60.0, 10.0, 20.0, 2.0),
            ("c", "E1", 55.0, 10.0, 5.0, 1.0),
            ("d", "E1", 500.0, 5.0, 40.0, 3.0),
            ("e", "E1", 20.0, 2.0, 24.0, 5.0),
            # E2: "a" and "b" overlap at the top: no single winner; "d" admissible here
            ("a", "E2", 10.0, 3.0, 1.0, 1.0),
            ("b", "E2", 12.0, 3.0, 1.0, 1.0),
            ("d", "E2", 1.0, 1.0, 1.0, 1.0),
        ]
    )
    v = analysis.verdict(per_env)
    e1 = v.loc[v["scope"] == "E1"].set_index("algo")
    assert list(e1.index) == ["a", "b", "c", "e", "d"]  # by rank, then return; inadmissible last
    assert e1["rank"].tolist()[:4] == [1, 2, 2, 4] and pd.isna(e1.loc["d", "rank"])
    assert e1["tied"].tolist() == [False, True, True, False, False]
    assert e1["best"].tolist() == [True, False, False, False, False]
    assert not e1.loc["d", "admissible"] and e1.loc["d", "cost"] == 40.0
    assert e1.loc["a", "cost_ci_below_limit"] and not e1.loc["e", "cost_ci_below_limit"]
    e2 = v.loc[v["scope"] == "E2"].set_index("algo")
    assert list(e2.index) == ["b", "a", "d"]
    assert e2["rank"].tolist() == [1, 1, 3] and e2["best"].tolist() == [True, True, False]
    assert e2["tied"].tolist() == [True, True, False]
    assert list(v.columns)[:4] == ["scope", "algo", "admissible", "rank"]

    # across envs: "d" broke the limit on one of its two envs, "c" and "e" ran on one
    aggregate = pd.DataFrame(
        {
            "algo": ["a", "b", "c", "d", "e"],
            "iqm": [0.9, 0.6, 0.5, 0.99, 0.1],
            "iqm_low": [0.8, 0.5, 0.1, 0.95, 0.0],
            "iqm_high": [1.0, 0.7, 0.55, 1.0, 0.2],
        }
    )
    overall = analysis.verdict(per_env, aggregate)
    overall = overall.loc[overall["scope"] == "all envs"].set_index("algo")
    assert list(overall.index) == ["a", "b", "c", "e", "d"]
    assert overall["rank"].tolist()[:4] == [1, 2, 2, 3]  # c [0.1, 0.55] overlaps e [0, 0.2]
    assert overall.loc["d", "n_inadmissible_envs"] == 1 and overall.loc["d", "n_envs"] == 2
    assert not overall.loc["d", "admissible"] and overall.loc["a", "admissible"]
    assert overall["best"].sum() == 1 and overall.loc["a", "best"]


def test_verdict_with_no_admissible_method() -> None:
    per_env = per_env_cells([("a", "E", 1.0, 0.5, 30.0, 1.0), ("b", "E", 2.0, 0.5, 26.0, 1.0)])
    v = analysis.verdict(per_env).set_index("algo")
    assert list(v.index) == ["b", "a"]  # by cost, lowest first
    assert v["rank"].isna().all() and not v["best"].any() and not v["tied"].any()
