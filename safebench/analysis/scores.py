"""Per-run final scores, regret, feasibility (Wilson intervals) and normalisation.

See :mod:`safebench.analysis` for the input conventions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from rliable import metrics as rlm
from scipy import stats

from safebench.analysis.common import (
    _EPOCH_COLUMNS,
    _NORMALISED,
    _RUN_META,
    DONE,
    FinalMode,
    NormMethod,
    _count_by,
    _require_columns,
    is_feasible,
    split_partial,
)

# --------------------------------------------------------------------------- per run


def final_scores(df: pd.DataFrame, how: FinalMode = "last", k: int = 10) -> pd.DataFrame:
    """One row per run with its final return and cost and its whole-run safety metrics.

    Final return / cost (``ret``, ``cost``):

    * ``"last"``: ``ep_ret`` / ``ep_cost`` of the run's last logged epoch (the C-TRPO
      protocol, docs/algorithms.md#c-trpo-evaluation-protocol: training-time values at the
      end of the budget).
    * ``"last-k"``: mean of ``ep_ret`` / ``ep_cost`` over the last ``k`` logged epochs
      (fewer if the run has fewer; NaN entries are skipped).
    * ``"eval"``: ``eval_ret`` / ``eval_cost`` of the last epoch that has an evaluation
      (``eval_ret`` not NaN); NaN when the run was never evaluated.

    Whole-run metrics, over all logged epochs e with a cost limit d:

    * ``regret`` = Σ_e max(0, ep_cost_e − d) (cumulative positive violation, C-TRPO Reg₊;
      epochs with NaN cost contribute 0);
    * ``violation_rate`` = #{e : ep_cost_e > d} / #{e : ep_cost_e not NaN};
    * ``feasible`` = final ``cost`` ≤ d (nullable boolean, NA when ``cost`` is NaN).

    Also: ``steps`` (cumulative env steps at the last epoch), ``epochs`` (number of
    logged epochs), ``cost_limit``, ``n_violations`` and ``n_cost_epochs`` (numerator
    and denominator of ``violation_rate``). Non-done runs are kept with their ``status``.
    """
    columns = list(_EPOCH_COLUMNS)
    if how == "eval":
        columns += ["eval_ret", "eval_cost"]
    _require_columns(df, columns, "final_scores")
    if how not in ("last", "last-k", "eval"):
        raise ValueError(f"final_scores: how must be 'last', 'last-k' or 'eval', got {how!r}")
    if k < 1:
        raise ValueError(f"final_scores: k must be >= 1, got {k}")
    if df.empty:
        raise ValueError("final_scores: empty frame")

    d = df.sort_values(["run_id", "epoch"], kind="stable")
    mixed = d.groupby("run_id")["cost_limit"].nunique()
    if (mixed > 1).any():
        changed = list(mixed[mixed > 1].index)
        raise ValueError(f"final_scores: cost_limit changes within run(s) {changed}")
    excess = d["ep_cost"] - d["cost_limit"]
    d = d.assign(
        _pos=excess.clip(lower=0.0),
        _viol=(excess > 0).astype(int),  # NaN cost compares False: not a violation
        _has_cost=d["ep_cost"].notna().astype(int),
    )
    by_run = d.groupby("run_id", sort=True)
    last = by_run.tail(1).set_index("run_id")
    per_run = by_run.agg(
        regret=("_pos", "sum"),
        n_violations=("_viol", "sum"),
        n_cost_epochs=("_has_cost", "sum"),
        epochs=("epoch", "nunique"),
    )

    if how == "last":
        ret, cost = last["ep_ret"], last["ep_cost"]
    elif how == "last-k":
        window = by_run.tail(k).groupby("run_id")[["ep_ret", "ep_cost"]].mean()
        ret, cost = window["ep_ret"], window["ep_cost"]
    else:
        evaluated = d.loc[d["eval_ret"].notna()]
        last_eval = evaluated.groupby("run_id").tail(1).set_index("run_id")
        ret = last_eval["eval_ret"].reindex(last.index)
        cost = last_eval["eval_cost"].reindex(last.index)

    out = last[["algo", "env", "seed", "status"]].copy()
    out["ret"] = ret.astype(float)
    out["cost"] = cost.astype(float)
    out["regret"] = per_run["regret"].astype(float)
    n_cost = per_run["n_cost_epochs"].astype(int)
    out["violation_rate"] = per_run["n_violations"] / n_cost.where(n_cost > 0)
    feasible = is_feasible(out["cost"], last["cost_limit"]).astype("boolean")
    feasible[out["cost"].isna()] = pd.NA
    out["feasible"] = feasible
    out["steps"] = last["steps"]
    out["epochs"] = per_run["epochs"].astype(int)
    out["cost_limit"] = last["cost_limit"].astype(float)
    out["n_violations"] = per_run["n_violations"].astype(int)
    out["n_cost_epochs"] = n_cost
    out = out.reset_index().sort_values(["algo", "env", "seed", "run_id"], ignore_index=True)
    out.attrs["final"] = how if how != "last-k" else f"last-{k}"
    return out


def regret_curve(df: pd.DataFrame) -> pd.DataFrame:
    """Cumulative cost regret of every run after each epoch.

    ``regret`` at epoch t = Σ_{e ≤ t} max(0, ep_cost_e − cost_limit) (NaN cost counts 0),
    so its last value equals ``final_scores(df)["regret"]``. One row per (run, epoch)
    with ``run_id, algo, env, seed, status, epoch, steps, regret, cost_limit`` (and
    ``wall_time`` where ``df`` has it: regret over wall-clock time).
    """
    _require_columns(df, _EPOCH_COLUMNS, "regret_curve")
    d = df.sort_values(["run_id", "epoch"], kind="stable")
    excess = (d["ep_cost"] - d["cost_limit"]).clip(lower=0.0).fillna(0.0)
    clock = ["wall_time"] if "wall_time" in d.columns else []
    out = d[[*_RUN_META, "epoch", "steps", *clock, "cost_limit"]].copy()
    out["regret"] = excess.groupby(d["run_id"]).cumsum()
    return out.reset_index(drop=True)


# --------------------------------------------------------------------------- feasibility


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion with k successes in n trials.

    With p̂ = k/n and z = Φ⁻¹(1 − (1 − confidence)/2):

        centre = (p̂ + z²/(2n)) / (1 + z²/n)
        half   = z / (1 + z²/n) · sqrt(p̂(1 − p̂)/n + z²/(4n²))

    and the interval is [centre − half, centre + half] (exactly 0 when k = 0 and 1
    when k = n). Unlike the normal (Wald) interval it stays inside [0, 1] and is not
    degenerate at k = 0 or k = n, which matters with 5–10 seeds. ``(nan, nan)`` for n = 0.
    """
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"wilson_interval: need 0 <= k <= n, got k={k}, n={n}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"wilson_interval: confidence must be in (0, 1), got {confidence}")
    if n == 0:
        return (math.nan, math.nan)
    z = float(stats.norm.ppf(0.5 + confidence / 2.0))
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2.0 * n)) / denom
    half = z / denom * math.sqrt(p * (1.0 - p) / n + z * z / (4.0 * n * n))
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return (low, high)


def feasibility_table(
    scores: pd.DataFrame, confidence: float = 0.95, *, include_partial: bool = False
) -> pd.DataFrame:
    """Per (algo, env): how often runs end feasible and how often epochs violate the limit.

    * ``feasible_rate`` = ``feasible_k / feasible_n``: share of runs whose final cost is
      ≤ cost_limit (runs with an unknown final cost are not counted in ``feasible_n``),
      with the Wilson interval ``[feasible_low, feasible_high]`` over runs.
    * ``violation_rate`` = Σ_runs n_violations / Σ_runs n_cost_epochs: share of epochs
      with ep_cost > cost_limit, **pooled over all epochs of all runs**, with the Wilson
      interval ``[violation_low, violation_high]`` over those pooled epochs. Epochs of
      one run are autocorrelated, so this interval treats them as independent trials and
      is narrower than a run-level interval; read it as a descriptive band.
      ``mean_run_violation_rate`` is the plain mean of the per-run rates (equal to the
      pooled rate when all runs log the same number of epochs).

    Also ``n_runs`` (runs used), ``n_excluded`` (non-done runs left out) and
    ``n_partial`` (non-done runs included because ``include_partial=True``).
    """
    where = "feasibility_table"
    _require_columns(
        scores,
        ["algo", "env", "status", "feasible", "violation_rate", "n_violations", "n_cost_epochs"],
        where,
    )
    used, excluded, notes = split_partial(scores, include_partial, where)
    keys = ["algo", "env"]
    rows: list[dict[str, Any]] = []
    for (algo, env), cell in used.groupby(keys, sort=True):
        feasible = cell["feasible"].astype("boolean")
        k_feas, n_feas = int(feasible.sum()), int(feasible.notna().sum())
        k_viol, n_viol = int(cell["n_violations"].sum()), int(cell["n_cost_epochs"].sum())
        f_low, f_high = wilson_interval(k_feas, n_feas, confidence)
        v_low, v_high = wilson_interval(k_viol, n_viol, confidence)
        rows.append(
            {
                "algo": algo,
                "env": env,
                "n_runs": len(cell),
                "n_partial": int((cell["status"] != DONE).sum()),
                "feasible_k": k_feas,
                "feasible_n": n_feas,
                "feasible_rate": k_feas / n_feas if n_feas else math.nan,
                "feasible_low": f_low,
                "feasible_high": f_high,
                "violation_k": k_viol,
                "violation_n": n_viol,
                "violation_rate": k_viol / n_viol if n_viol else math.nan,
                "violation_low": v_low,
                "violation_high": v_high,
                "mean_run_violation_rate": float(cell["violation_rate"].mean()),
            }
        )
    out = pd.DataFrame(rows)
    if not out.empty:
        index = pd.MultiIndex.from_frame(out[keys])
        out.insert(3, "n_excluded", _count_by(excluded, keys, index))
    out.attrs.update(notes=notes, n_excluded=len(excluded), confidence=confidence)
    return out


# --------------------------------------------------------------------------- normalisation


def _by_reference(
    scores: pd.DataFrame,
    used: pd.DataFrame,
    algo: str,
    column: str,
    stat: Callable[[np.ndarray], float],
    what: str,
    notes: list[str],
) -> pd.Series:
    """``column`` of every row of ``scores`` divided by ``stat`` of ``column`` over ``algo``'s
    runs in ``used`` on the row's env; NaN on an env where that divisor (``what``) is not
    > 0. Raises when ``algo`` has no run on an env of ``scores`` (nothing to divide it by)."""
    envs = sorted(scores["env"].unique())
    cells = used.loc[used["algo"] == algo].groupby("env")[column]
    values = cells.apply(lambda s: stat(s.to_numpy(dtype=float)))
    missing = [e for e in envs if e not in values.index]
    if missing:
        raise ValueError(
            f"normalize_scores: reference algo {algo!r} has no used runs on env(s) {missing}"
        )
    divisor = values.reindex(envs)
    divisor = _usable(divisor, divisor > 0, what, notes)
    return scores[column] / scores["env"].map(divisor)


def _usable(divisor: pd.Series, ok: pd.Series, what: str, notes: list[str]) -> pd.Series:
    """``divisor`` (per env) where ``ok``, NaN elsewhere — so that those envs' normalised
    values are NaN rather than flipped or infinite — with a note in ``notes`` naming them."""
    bad = list(divisor.index[~ok])
    if bad:
        notes.append(f"{what} is not usable on env(s) {bad}: normalised values set to NaN")
    return divisor.where(ok)


def _minmax(scores: pd.DataFrame, used: pd.DataFrame, column: str, notes: list[str]) -> pd.Series:
    """``column`` of every row of ``scores`` as (x − min) / (max − min) on its env, min and
    max over the runs in ``used`` on that env (NaN on an env where they are equal)."""
    envs = sorted(scores["env"].unique())
    grouped = used.groupby("env")[column]
    low, high = grouped.min().reindex(envs), grouped.max().reindex(envs)
    span = _usable(high - low, (high - low) > 0, f"min-max range of {column}", notes)
    return (scores[column] - scores["env"].map(low)) / scores["env"].map(span)


def normalize_scores(
    scores: pd.DataFrame,
    *,
    reference: str | None,
    method: NormMethod,
    regret_reference: str | None = None,
    include_partial: bool = False,
) -> pd.DataFrame:
    """Put ``ret``, ``cost`` and ``regret`` on a common scale across envs.

    Per env, with statistics taken over the reference algo's (done) runs on that env:

    * ``method="reference"``: ret ← ret / mean(ret of ``reference``) (C-TRPO uses
      unconstrained PPO); cost ← cost / cost_limit − 1 (0 = at the limit, < 0 = safe);
      regret ← regret / IQM(regret of ``regret_reference``) (C-TRPO uses CPO; defaults
      to ``reference``). IQM is the 25 %-trimmed mean (``rliable.metrics.aggregate_iqm``).
    * ``method="minmax"``: ret ← (ret − min) / (max − min), min and max over all used
      runs of all algos on the env; cost as above; regret divided by the reference
      algo's IQM regret when a reference is given, else min–max like ret.
    * ``method="none"``: a copy, unchanged.

    A divisor that would make the result meaningless gives NaN for that env and a note:
    a reference mean return ≤ 0 (dividing by a negative flips the ranking), a zero
    reference IQM regret, a zero min–max range, a cost limit ≤ 0. An env on which the
    reference algo has no used run raises.

    The original values are kept as ``ret_raw``, ``cost_raw``, ``regret_raw`` (other
    functions use them where raw values are needed, e.g. feasibility against the
    limit); ``feasible`` and ``violation_rate`` stay as computed from raw costs. All
    rows are returned, non-done ones included, but they only enter the reference
    statistics when ``include_partial=True``.
    """
    where = "normalize_scores"
    if method not in ("reference", "minmax", "none"):
        raise ValueError(f"{where}: method must be 'reference', 'minmax' or 'none', got {method!r}")
    _require_columns(scores, ["algo", "env", "status", "cost_limit", *_NORMALISED], where)
    if any(f"{c}_raw" in scores.columns for c in _NORMALISED):
        raise ValueError(f"{where}: scores are already normalised (found *_raw columns)")
    out = scores.copy()
    out.attrs = {}
    if method == "none":
        out.attrs.update(normalization="none", notes=[])
        return out
    regret_ref = regret_reference if regret_reference is not None else reference
    if method == "reference" and reference is None:
        raise ValueError(f"{where}: method='reference' needs reference=<algo label>")
    used, _, notes = split_partial(scores, include_partial, where)
    algos = set(used["algo"])
    for name in {reference, regret_ref} - {None}:
        if name not in algos:
            raise ValueError(f"{where}: reference algo {name!r} not among {sorted(algos)}")

    if method == "reference":
        assert reference is not None
        what = f"mean return of {reference!r}"
        out["ret"] = _by_reference(scores, used, reference, "ret", np.mean, what, notes)
    else:
        out["ret"] = _minmax(scores, used, "ret", notes)

    limit = scores["cost_limit"].where(scores["cost_limit"] > 0)
    if bool((scores["cost_limit"] <= 0).any()):
        notes.append("cost_limit <= 0 on some runs: their normalised cost is NaN")
    out["cost"] = scores["cost"] / limit - 1.0

    if regret_ref is not None:
        what = f"IQM regret of {regret_ref!r}"
        out["regret"] = _by_reference(
            scores, used, regret_ref, "regret", rlm.aggregate_iqm, what, notes
        )
    else:
        out["regret"] = _minmax(scores, used, "regret", notes)

    for column in _NORMALISED:
        out[f"{column}_raw"] = scores[column]
    out.attrs.update(
        normalization=method, reference=reference, regret_reference=regret_ref, notes=notes
    )
    return out
