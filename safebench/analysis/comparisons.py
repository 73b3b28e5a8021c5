"""Comparisons between methods: the KFCPO headline gain, throughput and the OmniSafe
cross-check, the verdict.

See :mod:`safebench.analysis` for the input conventions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from safebench.analysis.aggregates import (
    probability_of_improvement,
)
from safebench.analysis.common import (
    DONE,
    _column_mean,
    _columnwise_bootstrap,
    _count_by,
    _env_cost_limits,
    _raw,
    _require_columns,
    split_partial,
)
from safebench.backends import OMNISAFE_PREFIX

# --------------------------------------------------------------------------- KFCPO headline


def gain_over_best_feasible_baseline(
    scores: pd.DataFrame,
    algo: str,
    baselines: Sequence[str],
    *,
    include_partial: bool = False,
) -> pd.DataFrame:
    """KFCPO's headline: % return over the best cost-respecting baseline
    (docs/algorithms.md#kfcpo-evaluation-protocol).

    Per env, with means over the runs of each algo on that env (raw scores):

        gain_pct = 100 · (mean ret(algo) − R*) / |R*|,
        R* = max { mean ret(b) : b in baselines, mean cost(b) ≤ cost_limit }.

    NaN with a ``reason`` when no baseline is feasible, when ``algo`` or every baseline
    has no run on the env, when a mean is NaN, or when R* = 0. ``algo_feasible`` says
    whether ``algo`` itself meets the limit on average; the gain is reported either way
    (the KFCPO paper does not say it conditions on it), so read the two together.
    """
    where = "gain_over_best_feasible_baseline"
    _require_columns(scores, ["algo", "env", "status", "ret", "cost", "cost_limit"], where)
    if algo in baselines:
        raise ValueError(f"{where}: {algo!r} is both the algo and a baseline")
    used, excluded, notes = split_partial(scores, include_partial, where)
    frame = used.assign(_ret=_raw(used, "ret"), _cost=_raw(used, "cost"))
    frame = frame.loc[frame["algo"].isin([algo, *baselines])]
    envs = sorted(scores.loc[scores["algo"].isin([algo, *baselines]), "env"].unique())
    limits = _env_cost_limits(scores.loc[scores["env"].isin(envs)])
    # skipna=False: a run without a final score must not silently shrink the average
    means = frame.groupby(["env", "algo"])[["_ret", "_cost"]].agg(lambda s: s.mean(skipna=False))
    counts = frame.groupby(["env", "algo"]).size()
    rows: list[dict[str, Any]] = []
    for env in envs:
        limit = float(limits[env])
        row: dict[str, Any] = {
            "env": env,
            "algo": algo,
            "cost_limit": limit,
            "n_algo_runs": int(counts.get((env, algo), 0)),
            "algo_ret": math.nan,
            "algo_cost": math.nan,
            "algo_feasible": pd.NA,
            "best_baseline": None,
            "best_baseline_ret": math.nan,
            "best_baseline_cost": math.nan,
            "n_baselines": 0,
            "n_feasible_baselines": 0,
            "gain_pct": math.nan,
            "reason": "",
        }
        if (env, algo) in means.index:
            a_ret, a_cost = means.loc[(env, algo)]
            row.update(algo_ret=a_ret, algo_cost=a_cost)
            row["algo_feasible"] = pd.NA if math.isnan(a_cost) else bool(a_cost <= limit)
        present = [b for b in baselines if (env, b) in means.index]
        row["n_baselines"] = len(present)
        candidates = {
            b: float(means.loc[(env, b), "_ret"])
            for b in present
            if float(means.loc[(env, b), "_cost"]) <= limit
        }
        row["n_feasible_baselines"] = len(candidates)
        if (env, algo) not in means.index:
            row["reason"] = f"{algo} has no runs on this env"
        elif not present:
            row["reason"] = "no baseline has runs on this env"
        elif any(math.isnan(float(means.loc[(env, b)].sum())) for b in present) or math.isnan(
            float(row["algo_ret"])
        ):
            row["reason"] = "NaN mean return or cost (a run has no final score)"
        elif not candidates:
            row["reason"] = "no baseline has mean cost <= cost_limit"
        else:
            best = max(candidates, key=lambda b: candidates[b])
            best_ret = candidates[best]
            row.update(
                best_baseline=best,
                best_baseline_ret=best_ret,
                best_baseline_cost=float(means.loc[(env, best), "_cost"]),
            )
            if best_ret == 0.0:
                row["reason"] = "best feasible baseline has mean return 0"
            else:
                row["gain_pct"] = 100.0 * (float(row["algo_ret"]) - best_ret) / abs(best_ret)
        rows.append(row)
    out = pd.DataFrame(rows)
    out["algo_feasible"] = out["algo_feasible"].astype("boolean")
    relevant = excluded.loc[excluded["algo"].isin([algo, *baselines])]
    out.insert(4, "n_excluded", _count_by(relevant, ["env"], pd.Index(out["env"])))
    out.attrs.update(notes=notes, n_excluded=len(relevant))
    return out


# --------------------------------------------------------------------------- throughput


def throughput_table(
    df: pd.DataFrame, reps: int = 2000, seed: int = 0, confidence: float = 0.95
) -> pd.DataFrame:
    """Training throughput per (algo, env) over finished runs.

    A run's rate is ``r = steps / wall_time`` at its last logged epoch: env steps per
    second of training wall clock (collection + update + evaluation; env and agent
    construction are left out, on safebench and OmniSafe runs alike). Columns:
    ``algo, algo_name, env, n_runs``, ``steps_per_s`` (mean of r over runs) with
    ``steps_per_s_low / _high`` (rliable percentile bootstrap over runs), ``rates``
    (the per-run r, a tuple in seed order, for ratios between cells), and the shares of
    wall time spent in ``rollout / update / eval`` (Σ over epochs and runs, NaN where a
    backend does not log them).
    """
    where = "throughput_table"
    _require_columns(df, ["run_id", "algo", "env", "seed", "status", "steps", "wall_time"], where)
    epochs = df.loc[(df["status"] == DONE) & df["wall_time"].notna() & df["steps"].notna()]
    if epochs.empty:
        raise ValueError(f"{where}: no finished run logged steps and wall_time")
    epochs = epochs.sort_values(["run_id", "steps"])
    last = epochs.groupby("run_id", sort=False).tail(1)
    last = last.loc[last["wall_time"] > 0].sort_values(["algo", "env", "seed", "run_id"])
    if last.empty:
        raise ValueError(f"{where}: every finished run has wall_time 0")
    rates = last.assign(rate=last["steps"].astype(float) / last["wall_time"].astype(float))
    cells = {key: cell for key, cell in rates.groupby(["algo", "env"], sort=True)}
    blocks = {key: cell[["rate"]].to_numpy(dtype=float) for key, cell in cells.items()}
    estimates = _columnwise_bootstrap(blocks, _column_mean, reps, confidence, seed)
    rows: list[dict[str, Any]] = []
    for key, cell in cells.items():
        point, low, high = estimates[key]
        used = epochs.loc[epochs["run_id"].isin(cell["run_id"])]
        total = float(cell["wall_time"].sum())
        shares = {}
        for part in ("rollout", "update", "eval"):
            column = f"time_{part}"
            present = column in used.columns and used[column].notna().all()
            shares[f"{part}_share"] = float(used[column].sum()) / total if present else math.nan
        rows.append(
            {
                "algo": key[0],
                "algo_name": str(cell["algo_name"].iloc[0]) if "algo_name" in cell else key[0],
                "env": key[1],
                "n_runs": len(cell),
                "steps_per_s": float(point[0]),
                "steps_per_s_low": float(low[0]),
                "steps_per_s_high": float(high[0]),
                "rates": tuple(float(r) for r in cell["rate"]),
                **shares,
            }
        )
    return pd.DataFrame(rows)


def ratio_of_means(
    a: Sequence[float],
    b: Sequence[float],
    reps: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """``mean(a) / mean(b)`` with a percentile bootstrap interval.

    ``a`` and ``b`` are independent samples (runs of two algorithms), so each replication
    resamples both, independently, with replacement. Written by hand: rliable bootstraps
    one algorithm's score matrix at a time and has no two-sample statistic.
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.size == 0 or y.size == 0:
        raise ValueError("ratio_of_means: both samples need at least one value")
    rng = np.random.default_rng(seed)
    xs = x[rng.integers(0, x.size, size=(reps, x.size))].mean(axis=1)
    ys = y[rng.integers(0, y.size, size=(reps, y.size))].mean(axis=1)
    tail = 50.0 * (1.0 - confidence)
    low, high = np.percentile(xs / ys, [tail, 100.0 - tail])
    return float(x.mean() / y.mean()), float(low), float(high)


def reference_pairs(names: dict[str, str]) -> list[tuple[str, str]]:
    """``(label, reference label)`` pairs from ``{label: registry name}``.

    A label whose registry name is ``omnisafe:X`` is the reference of every label whose
    registry name is ``x`` (case-insensitive): ``cpo`` pairs with ``omnisafe:CPO``.
    """
    pairs: list[tuple[str, str]] = []
    for ref_label, ref_name in sorted(names.items()):
        if not ref_name.lower().startswith(OMNISAFE_PREFIX):
            continue
        target = ref_name[len(OMNISAFE_PREFIX) :].lower()
        pairs.extend(
            (label, ref_label) for label, name in sorted(names.items()) if name.lower() == target
        )
    return sorted(pairs)


def crosscheck_table(
    scores: pd.DataFrame,
    per_env: pd.DataFrame,
    pairs: Sequence[tuple[str, str]],
    throughput: pd.DataFrame | None = None,
    *,
    poi_reps: int = 2000,
    ratio_reps: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Each algorithm next to its reference implementation, env by env.

    ``pairs``: ``(label, reference label)`` (see :func:`reference_pairs`); ``per_env``:
    :func:`per_env_table` of ``scores``; ``throughput``: :func:`throughput_table` (its
    ``rates``), or None. One row per env (sorted) and pair where both have a per-env cell:
    ``env, algo, reference``; ``ret, cost`` with ``_low / _high`` of the algorithm and
    ``ref_ret, ref_cost`` (with theirs) of the reference, copied from ``per_env``;
    ``poi_ret`` / ``poi_cost`` (with ``_low / _high``): :func:`probability_of_improvement`
    on that env alone — the probability that a run of the algorithm has the higher return /
    the lower cost than a run of the reference (0.5 = no difference); ``ratio`` (with
    ``_low / _high``): :func:`ratio_of_means` of the two cells' training throughputs (NaN
    without ``throughput`` or a cell there). Empty (no columns) when no pair has both cells.
    """
    _require_columns(scores, ["algo", "env", "status"], "crosscheck_table")
    done = scores.loc[scores["status"] == DONE]
    cells = per_env.set_index(["algo", "env"])
    rates = throughput.set_index(["algo", "env"])["rates"] if throughput is not None else None
    rows: list[dict[str, Any]] = []
    for env in sorted(per_env["env"].unique()):
        for ours, ref in pairs:
            if (ours, env) not in cells.index or (ref, env) not in cells.index:
                continue
            a, b = cells.loc[(ours, env)], cells.loc[(ref, env)]
            row: dict[str, Any] = {"env": env, "algo": ours, "reference": ref}
            for metric in ("ret", "cost"):
                for side, cell in (("", a), ("ref_", b)):
                    for suffix in ("", "_low", "_high"):
                        row[f"{side}{metric}{suffix}"] = float(cell[f"{metric}{suffix}"])
            # per env, so that a pair is judged on each task on its own
            here = done.loc[done["env"] == env]
            for metric in ("ret", "cost"):
                poi = probability_of_improvement(
                    here,
                    [(ours, ref)],
                    reps=poi_reps,
                    seed=seed,
                    metric=metric,
                    confidence=confidence,
                ).iloc[0]
                row.update(
                    {
                        f"poi_{metric}": float(poi["prob"]),
                        f"poi_{metric}_low": float(poi["low"]),
                        f"poi_{metric}_high": float(poi["high"]),
                    }
                )
            row.update(ratio=math.nan, ratio_low=math.nan, ratio_high=math.nan)
            if rates is not None and (ours, env) in rates.index and (ref, env) in rates.index:
                ratio = ratio_of_means(
                    rates.loc[(ours, env)],
                    rates.loc[(ref, env)],
                    reps=ratio_reps,
                    seed=seed,
                    confidence=confidence,
                )
                row.update(ratio=ratio[0], ratio_low=ratio[1], ratio_high=ratio[2])
            rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- verdict


def interval_ranks(low: Sequence[float], high: Sequence[float]) -> np.ndarray:
    """Rank 1 + the number of intervals lying entirely above each one (ties share a rank).

    ``rank_i = 1 + #{j : low_j > high_i}``: a method is outranked only by methods whose
    whole interval is above its own, so methods with overlapping intervals that nothing
    separates share a rank (a competition ranking, e.g. 1, 1, 3). Overlap is a
    conservative reading, not a test: a shared rank means "not separated by these runs".
    """
    lo, hi = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    if lo.shape != hi.shape:
        raise ValueError("interval_ranks: low and high differ in length")
    return 1 + (lo[None, :] > hi[:, None]).sum(axis=1)


_VERDICT_COLUMNS = [
    "scope",
    "algo",
    "admissible",
    "rank",
    "tied",
    "best",
    "ret",
    "ret_low",
    "ret_high",
    "cost",
    "cost_low",
    "cost_high",
    "cost_limit",
    "cost_ci_below_limit",
    "n_envs",
    "n_inadmissible_envs",
]


def _ranked(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` (one scope) with rank / tied / best among the admissible ones, sorted."""
    out = rows.copy()
    ok = out["admissible"].to_numpy(dtype=bool)
    ranks = pd.array([pd.NA] * len(out), dtype="Int64")
    if ok.any():
        ranks[ok] = interval_ranks(out.loc[ok, "ret_low"], out.loc[ok, "ret_high"])
    out["rank"] = ranks
    shared = out.loc[ok, "rank"].value_counts()
    out["tied"] = [bool(ok_i and shared[r] > 1) for ok_i, r in zip(ok, out["rank"])]
    out["best"] = (out["rank"] == 1).fillna(False).astype(bool)
    # admissible first by rank, then by IQM return; inadmissible ones by IQM cost
    out["_order"] = np.where(ok, -out["ret"].to_numpy(dtype=float), out["cost"].to_numpy(float))
    out = out.sort_values(
        ["admissible", "rank", "_order", "algo"], ascending=[False, True, True, True]
    )
    return out.drop(columns=["_order"])


def verdict(per_env: pd.DataFrame, aggregate: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per env and across envs: the admissible algorithms ranked by return, the others listed.

    ``per_env``: :func:`per_env_table` (IQM return and cost with intervals, ``admissible``
    = IQM of the raw final cost < the env's cost limit). On each env, the admissible
    algorithms get :func:`interval_ranks` of their IQM-return intervals: ``rank`` 1 is
    the best, ``tied`` marks a rank shared with another algorithm (intervals overlap,
    nothing separates them), ``best`` marks rank 1 (one algorithm: a winner; several: a
    tie). Inadmissible algorithms have rank NA. ``cost_ci_below_limit``: the whole IQM-cost
    interval is below the limit (admissible with confidence, not only by the point).

    ``aggregate``: :func:`aggregate` of the (normalised) return across envs — columns
    ``algo, iqm, iqm_low, iqm_high`` — or None. Its rows (``scope`` = ``"all envs"``) rank
    the algorithms admissible on every env where they have a per-env cell by that IQM and
    interval; ``n_inadmissible_envs`` counts the envs where an algorithm is not admissible.

    Rows: per-env scopes in env order, then ``"all envs"``; within a scope the admissible
    algorithms by rank and IQM return, then the others by IQM cost.
    """
    _require_columns(
        per_env,
        ["algo", "env", "ret", "ret_low", "ret_high", "cost", "cost_low", "cost_high"],
        "verdict",
    )
    _require_columns(per_env, ["cost_limit", "admissible"], "verdict")
    cells = per_env.assign(
        scope=per_env["env"],
        admissible=per_env["admissible"].astype(bool),
        cost_ci_below_limit=per_env["cost_high"] < per_env["cost_limit"],
        n_envs=1,
        n_inadmissible_envs=(~per_env["admissible"].astype(bool)).astype(int),
    )
    frames = [_ranked(cells.loc[cells["env"] == env]) for env in sorted(cells["env"].unique())]
    if aggregate is not None and not aggregate.empty:
        _require_columns(aggregate, ["algo", "iqm", "iqm_low", "iqm_high"], "verdict")
        by_algo = cells.groupby("algo")
        overall = pd.DataFrame(
            {
                "scope": "all envs",
                "algo": aggregate["algo"].to_numpy(),
                "ret": aggregate["iqm"].to_numpy(dtype=float),
                "ret_low": aggregate["iqm_low"].to_numpy(dtype=float),
                "ret_high": aggregate["iqm_high"].to_numpy(dtype=float),
                "cost": math.nan,  # the across-env cost is not a raw cost: see n_inadmissible
            }
        )
        bad = by_algo["n_inadmissible_envs"].sum()
        overall["n_envs"] = overall["algo"].map(by_algo.size()).astype(int)
        overall["n_inadmissible_envs"] = overall["algo"].map(bad).astype(int)
        overall["admissible"] = overall["n_inadmissible_envs"] == 0
        overall["cost_ci_below_limit"] = overall["algo"].map(by_algo["cost_ci_below_limit"].all())
        frames.append(_ranked(overall))
    out = pd.concat(frames, ignore_index=True)
    return out.reindex(columns=_VERDICT_COLUMNS)
