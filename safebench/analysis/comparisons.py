"""Comparisons between methods: the KFCPO headline gain, throughput and the OmniSafe
cross-check, the verdict.

See :mod:`safebench.analysis` for the input conventions.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from rliable import library as rly

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
    _score_matrices,
    _seeded_numpy,
    is_feasible,
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
    cells = dict(means.iterrows())  # (env, algo): its mean _ret and _cost
    rows = [
        _gain_row(env, algo, baselines, float(limits[env]), cells, int(counts.get((env, algo), 0)))
        for env in envs
    ]
    out = pd.DataFrame(rows)
    out["algo_feasible"] = out["algo_feasible"].astype("boolean")
    relevant = excluded.loc[excluded["algo"].isin([algo, *baselines])]
    out.insert(4, "n_excluded", _count_by(relevant, ["env"], pd.Index(out["env"])))
    out.attrs.update(notes=notes, n_excluded=len(relevant))
    return out


_GAIN_COLUMNS = [
    "env",
    "algo",
    "cost_limit",
    "n_algo_runs",
    "algo_ret",
    "algo_cost",
    "algo_feasible",
    "best_baseline",
    "best_baseline_ret",
    "best_baseline_cost",
    "n_baselines",
    "n_feasible_baselines",
    "gain_pct",
    "reason",
]


def _gain_row(
    env: str,
    algo: str,
    baselines: Sequence[str],
    limit: float,
    means: Mapping[Hashable, pd.Series],
    n_algo_runs: int,
) -> dict[str, Any]:
    """One env's row of :func:`gain_over_best_feasible_baseline`: ``algo``'s mean return and
    cost, the baselines with runs there and the feasible ones among them, the best of those
    (R*), and the gain — or the reason there is none. ``means``: (env, algo) → its mean
    ``_ret`` and ``_cost``."""
    row: dict[str, Any] = dict.fromkeys(_GAIN_COLUMNS, math.nan)
    row.update(env=env, algo=algo, cost_limit=limit, n_algo_runs=n_algo_runs)
    row.update(algo_feasible=pd.NA, best_baseline=None, reason="")
    if (env, algo) in means:
        a_ret, a_cost = means[(env, algo)]
        row.update(algo_ret=a_ret, algo_cost=a_cost)
        row["algo_feasible"] = pd.NA if math.isnan(a_cost) else bool(is_feasible(a_cost, limit))
    present = [b for b in baselines if (env, b) in means]
    row["n_baselines"] = len(present)
    candidates = {
        b: float(means[(env, b)]["_ret"])
        for b in present
        if is_feasible(float(means[(env, b)]["_cost"]), limit)
    }
    row["n_feasible_baselines"] = len(candidates)
    if (env, algo) not in means:
        row["reason"] = f"{algo} has no runs on this env"
    elif not present:
        row["reason"] = "no baseline has runs on this env"
    elif any(bool(means[(env, b)].isna().any()) for b in present) or bool(
        means[(env, algo)].isna().any()
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
            best_baseline_cost=float(means[(env, best)]["_cost"]),
        )
        if best_ret == 0.0:
            row["reason"] = "best feasible baseline has mean return 0"
        else:
            row["gain_pct"] = 100.0 * (float(row["algo_ret"]) - best_ret) / abs(best_ret)
    return row


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


# --------------------------------------------------------------------------- is ours better?

ACROSS = "all envs"
"""The ``scope`` of a head-to-head row that averages over the envs both methods ran on."""


def _mann_whitney_columns(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(X > Y) + ½ P(X = Y) per column of x (n_x, k) and y (n_y, k): shape (k,).

    The statistic of ``rliable.metrics.probability_of_improvement`` before its mean over
    columns, kept per column so one bootstrap serves every env and every pair at once.
    """
    greater = (x[:, None, :] > y[None, :, :]).mean(axis=(0, 1))
    equal = (x[:, None, :] == y[None, :, :]).mean(axis=(0, 1))
    return np.asarray(greater + 0.5 * equal, dtype=float)


_Block = tuple[np.ndarray, np.ndarray, list[str]]
"""One pair's runs (O's, B's: runs × columns) over the envs both ran on, and those envs."""


def _pair_blocks(
    used: pd.DataFrame, pairs: Sequence[tuple[str, str]], notes: list[str]
) -> dict[tuple[str, str], _Block]:
    """Per pair (O, B) that shares an env: O's and B's score matrices over the envs both ran
    on, the return columns then the negated cost columns (so that higher is better in both
    halves), and those envs. A pair without a shared env, or an algorithm with different run
    counts on them (its lowest-seed runs are kept), is noted in ``notes``."""
    blocks: dict[tuple[str, str], _Block] = {}
    for o, b in pairs:
        envs = sorted(set(used.loc[used.algo == o, "env"]) & set(used.loc[used.algo == b, "env"]))
        if not envs:
            notes.append(f"{o} and {b} share no env: not compared")
            continue
        frame = used.loc[used["algo"].isin([o, b]) & used["env"].isin(envs)]
        mats = {}
        for metric, sign in (("ret", 1.0), ("cost", -1.0)):
            m, _, _, ragged = _score_matrices(frame, metric, "truncate", "head_to_head")
            notes.extend(n for n in ragged if n not in notes)
            mats[metric] = {k: sign * v for k, v in m.items()}
        blocks[(o, b)] = (
            np.hstack([mats["ret"][o], mats["cost"][o]]),
            np.hstack([mats["ret"][b], mats["cost"][b]]),
            envs,
        )
    return blocks


def _shared_bootstrap(
    blocks: Sequence[_Block], reps: int, confidence: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One rliable bootstrap for pairs with the same run counts (their blocks side by side).

    Returns the point estimate, low and high of every column's P (each pair's columns in
    turn), then of each pair's across-env means: its return columns', its cost columns'.
    """
    x_all = np.hstack([x for x, _, _ in blocks])
    y_all = np.hstack([y for _, y, _ in blocks])
    bounds = np.cumsum([0, *(x.shape[1] for x, _, _ in blocks)])

    def statistic(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        per_column = _mann_whitney_columns(x, y)
        means = []  # per pair: mean of its return columns, then of its cost columns
        for a, z in itertools.pairwise(bounds):
            half = (z - a) // 2
            means += [per_column[a : a + half].mean(), per_column[a + half : z].mean()]
        return np.concatenate([per_column, means])

    with _seeded_numpy(seed):
        point, interval = rly.get_interval_estimates(
            {"p": [x_all, y_all]}, statistic, reps=reps, confidence_interval_size=confidence
        )
    return point["p"], interval["p"][0], interval["p"][1]


def _pair_rows(
    members: Sequence[tuple[str, str]],
    blocks: dict[tuple[str, str], _Block],
    estimates: tuple[np.ndarray, np.ndarray, np.ndarray],
    admissible: dict[tuple[str, str], bool],
) -> list[dict[str, Any]]:
    """The rows of pairs bootstrapped together (:func:`_shared_bootstrap`'s ``estimates``):
    per pair, one per env and, with several envs, one across them; without the answer."""
    est, low, high = estimates
    n_columns = sum(blocks[p][0].shape[1] for p in members)
    rows: list[dict[str, Any]] = []
    a = 0  # the pair's first column
    for i, (o, b) in enumerate(members):
        x, y, envs = blocks[(o, b)]
        e = len(envs)
        scopes = [(env, a + j, a + e + j) for j, env in enumerate(envs)]
        if e > 1:
            scopes.append((ACROSS, n_columns + 2 * i, n_columns + 2 * i + 1))
        for scope, r, c in scopes:
            where = envs if scope == ACROSS else [scope]
            rows.append(
                {
                    "ours": o,
                    "baseline": b,
                    "scope": scope,
                    "n_envs": len(where),
                    "n_ours": x.shape[0],
                    "n_base": y.shape[0],
                    "p_ret": float(est[r]),
                    "p_ret_low": float(low[r]),
                    "p_ret_high": float(high[r]),
                    "p_cost": float(est[c]),
                    "p_cost_low": float(low[c]),
                    "p_cost_high": float(high[c]),
                    "ours_admissible": all(admissible.get((o, m), False) for m in where),
                    "base_admissible": all(admissible.get((b, m), False) for m in where),
                }
            )
        a += 2 * e
    return rows


def head_to_head(
    scores: pd.DataFrame,
    per_env: pd.DataFrame,
    ours: Sequence[str],
    *,
    reps: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Each method under test against every other algorithm: per env and across envs.

    For each pair (O, B), each env m both ran on, and the average over those envs
    (``scope`` = :data:`ACROSS`, when there are several):

    * ``p_ret`` = P(ret_O > ret_B) + ½ P(=) — the Mann–Whitney statistic over the runs
      of O and B on m (across: its mean over the envs, rliable's probability of
      improvement); ``p_cost`` the same with cost, lower better (P(cost_O < cost_B));
    * ``[*_low, *_high]``: percentile intervals of rliable's stratified *independent*
      bootstrap (runs of O and of B resampled separately within every env);
    * ``ours_admissible`` / ``base_admissible``: the per-env table's ``admissible`` (IQM of
      the raw final cost < d); across envs: admissible on every env;
    * ``answer``: ``yes`` / ``no`` / ``open`` and ``why`` — an admissible O against an
      inadmissible B is ``yes``; an inadmissible O is ``no``; between two admissible
      methods the return interval decides (wholly above ½: ``yes``, below: ``no``,
      containing ½: ``open``).

    Scores are raw per-env scores (P is scale free, so no normalisation is needed); runs
    that are not done are left out; an algorithm with different run counts on the pair's
    envs keeps its lowest-seed runs (a note says so). All pairs with the same run counts
    share one bootstrap (the statistic is per column, so each column's interval is
    distributed as if bootstrapped alone), which keeps a 10-baseline report to seconds.
    """
    used, _, notes = split_partial(scores, False, "head_to_head")
    _require_columns(used, ["algo", "env", "seed", "run_id", "ret", "cost"], "head_to_head")
    _require_columns(per_env, ["algo", "env", "admissible"], "head_to_head")
    admissible = {
        (str(r.algo), str(r.env)): bool(r.admissible)
        for r in per_env[["algo", "env", "admissible"]].itertuples()
    }
    algos = sorted(used["algo"].unique())
    pairs = [(o, b) for o in ours if o in algos for b in algos if b != o]
    blocks = _pair_blocks(used, pairs, notes)
    # pairs with the same run counts share one bootstrap (see the docstring)
    groups: dict[tuple[int, int], list[tuple[str, str]]] = {}
    for pair, (x, y, _) in blocks.items():
        groups.setdefault((x.shape[0], y.shape[0]), []).append(pair)
    rows: list[dict[str, Any]] = []
    for members in groups.values():
        estimates = _shared_bootstrap([blocks[p] for p in members], reps, confidence, seed)
        rows += _pair_rows(members, blocks, estimates, admissible)
    out = pd.DataFrame(rows, columns=_H2H_COLUMNS[:-2])
    answers = [_answer(r) for r in out.itertuples()]
    out["answer"] = [a for a, _ in answers]
    out["why"] = [w for _, w in answers]
    order = {p: i for i, p in enumerate(pairs)}
    out["_pair"] = [order[(o, b)] for o, b in zip(out["ours"], out["baseline"], strict=True)]
    out["_across"] = out["scope"] == ACROSS
    out = out.sort_values(["_pair", "_across", "scope"], kind="stable")
    out = out.drop(columns=["_pair", "_across"]).reset_index(drop=True)
    out.attrs.update(notes=notes, reps=reps, confidence=confidence, seed=seed)
    return out


_H2H_COLUMNS = [
    "ours",
    "baseline",
    "scope",
    "n_envs",
    "n_ours",
    "n_base",
    "p_ret",
    "p_ret_low",
    "p_ret_high",
    "p_cost",
    "p_cost_low",
    "p_cost_high",
    "ours_admissible",
    "base_admissible",
    "answer",
    "why",
]


def _answer(r: Any) -> tuple[str, str]:
    """``yes`` / ``no`` / ``open`` and why, for one head-to-head row (see ``head_to_head``)."""
    if not r.ours_admissible:
        return "no", "ours is over the cost limit"
    if not r.base_admissible:
        return "yes", "the baseline is over the cost limit"
    cost = "; lower cost" if r.p_cost_low > 0.5 else "; higher cost" if r.p_cost_high < 0.5 else ""
    if r.p_ret_low > 0.5:
        return "yes", "higher return" + cost
    if r.p_ret_high < 0.5:
        return "no", "lower return" + cost
    return "open", "return not separable (its interval holds ½)" + cost
