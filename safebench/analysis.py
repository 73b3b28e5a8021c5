"""Statistics over benchmark results: final scores, safe-RL metrics, rliable aggregates.

Every function is pure: it takes a tidy ``pandas.DataFrame`` and returns a new one.

Input (``df``) is one row per (run, epoch) with at least the columns
``run_id, algo, env, seed, status, epoch, steps, ep_ret, ep_cost, cost_limit``
(``eval_ret, eval_cost`` for ``how="eval"``); other columns are ignored.
``ep_cost`` is the training ``EpCost`` logged for the epoch (Ĵc, an average over
recently finished episodes), as in ``ALGORITHMS.md`` §4.4.

``final_scores`` reduces it to one row per run ("scores"), which every other
function consumes. Runs whose ``status`` is not ``"done"`` keep their status in
the scores; every aggregating function leaves them out unless called with
``include_partial=True``, and reports how many it left out (an ``n_excluded``
column and ``result.attrs["notes"]``) or how many it let in (``n_partial``).

IQM, stratified bootstrap confidence intervals, probability of improvement and
performance profiles are computed by rliable. rliable's ``StratifiedBootstrap``
draws its resampling indices from NumPy's *global* random state (its
``random_state`` argument does not reach ``np.random.choice``), so each rliable
call here runs inside ``_seeded_numpy(seed)``, which seeds the global state and
restores it afterwards: the same input and seed give the same intervals, and the
caller's random stream is left untouched.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from rliable import library as rly
from rliable import metrics as rlm
from scipy import stats

from safebench.backends import OMNISAFE_PREFIX

__all__ = [
    "DONE",
    "LOWER_IS_BETTER",
    "aggregate",
    "crosscheck_table",
    "curve_estimates",
    "feasibility_table",
    "final_scores",
    "gain_over_best_feasible_baseline",
    "interval_ranks",
    "normalize_scores",
    "per_env_table",
    "performance_profiles",
    "probability_of_improvement",
    "ratio_of_means",
    "reference_pairs",
    "regret_curve",
    "split_partial",
    "throughput_table",
    "verdict",
    "wilson_interval",
]

DONE = "done"
"""The only status whose runs enter aggregates by default."""

LOWER_IS_BETTER = frozenset({"cost", "regret", "violation_rate", "ep_cost", "eval_cost"})
"""Score columns for which a smaller value is better (used to orient comparisons)."""

FinalMode = Literal["last", "last-k", "eval"]
NormMethod = Literal["reference", "minmax", "none"]
Ragged = Literal["raise", "truncate"]
Statistic = Literal["iqm", "mean", "median", "optimality_gap"]
_STATISTICS = ("iqm", "mean", "median", "optimality_gap")

_RUN_META = ["run_id", "algo", "env", "seed", "status"]
_EPOCH_COLUMNS = [*_RUN_META, "epoch", "steps", "ep_ret", "ep_cost", "cost_limit"]
_NORMALISED = ("ret", "cost", "regret")


# --------------------------------------------------------------------------- helpers


def _require_columns(df: pd.DataFrame, columns: Sequence[str], where: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{where}: missing column(s) {missing}; got {list(df.columns)}")


@contextlib.contextmanager
def _seeded_numpy(seed: int) -> Iterator[None]:
    """Seed NumPy's global random state for the block, then restore the caller's state."""
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(saved)


def split_partial(
    scores: pd.DataFrame, include_partial: bool, where: str = "split_partial"
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Split runs into (used, left out, notes): non-done runs are left out unless asked.

    ``notes`` says how many non-done runs were left out, or let in, by status.
    """
    _require_columns(scores, ["status"], where)
    done = scores["status"] == DONE
    not_done = scores.loc[~done]
    notes: list[str] = []
    if not_done.empty:
        return scores, not_done, notes
    by_status = ", ".join(f"{n} {s}" for s, n in not_done["status"].value_counts().items())
    if include_partial:
        notes.append(f"included {len(not_done)} run(s) that are not done ({by_status})")
        return scores, scores.iloc[0:0], notes
    notes.append(
        f"excluded {len(not_done)} run(s) that are not done ({by_status}); "
        "pass include_partial=True to include them"
    )
    return scores.loc[done], not_done, notes


def _count_by(frame: pd.DataFrame, keys: list[str], index: pd.Index) -> np.ndarray:
    """Number of rows of ``frame`` per group ``keys``, aligned to ``index`` (0 where none)."""
    if frame.empty:
        return np.zeros(len(index), dtype=int)
    counts = frame.groupby(keys).size()
    return counts.reindex(index, fill_value=0).to_numpy(dtype=int)


def _raw(scores: pd.DataFrame, column: str) -> pd.Series:
    """The un-normalised score column (``normalize_scores`` keeps originals as ``<col>_raw``)."""
    raw = f"{column}_raw"
    return scores[raw] if raw in scores.columns else scores[column]


def _env_cost_limits(scores: pd.DataFrame) -> pd.Series:
    limits = scores.groupby("env")["cost_limit"]
    mixed = limits.nunique()
    if (mixed > 1).any():
        raise ValueError(
            f"runs on the same env use different cost_limit values: {list(mixed[mixed > 1].index)}"
        )
    return limits.first()


def _orientation(metric: str, higher_is_better: bool | None) -> bool:
    return (metric not in LOWER_IS_BETTER) if higher_is_better is None else higher_is_better


def _score_matrices(
    scores: pd.DataFrame, metric: str, ragged: Ragged, where: str
) -> tuple[dict[str, np.ndarray], list[str], dict[str, int], list[str]]:
    """Per-algo (n_runs, n_envs) matrices of ``metric`` as rliable expects.

    Columns are the envs in sorted order (the same for every algo); rows are runs
    sorted by (seed, run_id), so row i is the i-th smallest seed of that env. The
    stratified bootstrap resamples runs independently within each env column, so
    alignment only matters for reproducibility, not for the statistics.

    rliable needs a rectangular matrix per algo. When an algo has different run
    counts on different envs, ``ragged="raise"`` raises; ``ragged="truncate"``
    keeps the ``min`` count of lowest-seed runs on every env and says so in a note.
    An algo that has no run on some env always raises: aggregates over different
    env sets are not comparable.
    """
    if ragged not in ("raise", "truncate"):
        raise ValueError(f"{where}: ragged must be 'raise' or 'truncate', got {ragged!r}")
    _require_columns(scores, ["algo", "env", "seed", "run_id", metric], where)
    if scores.empty:
        raise ValueError(f"{where}: no runs to aggregate")
    envs = sorted(scores["env"].unique())
    matrices: dict[str, np.ndarray] = {}
    dropped: dict[str, int] = {}
    notes: list[str] = []
    for algo, group in scores.groupby("algo", sort=True):
        counts = group.groupby("env").size().reindex(envs, fill_value=0)
        missing = list(counts.index[counts == 0])
        if missing:
            raise ValueError(
                f"{where}: algo {algo!r} has no runs on env(s) {missing}; every algo must cover "
                "the same envs (filter the frame to a common set of envs)"
            )
        n_min = int(counts.min())
        if counts.nunique() > 1:
            per_env = {str(e): int(n) for e, n in counts.items()}
            if ragged == "raise":
                raise ValueError(
                    f"{where}: algo {algo!r} has different numbers of runs per env {per_env}; "
                    "rliable needs the same number on every env. Pass ragged='truncate' to keep "
                    f"the {n_min} lowest-seed run(s) on each env"
                )
            notes.append(
                f"{algo}: truncated to {n_min} run(s) per env (lowest seeds) from {per_env}"
            )
        columns = []
        for env in envs:
            cell = group.loc[group["env"] == env].sort_values(["seed", "run_id"])
            columns.append(cell[metric].to_numpy(dtype=float)[:n_min])
            bad = cell["run_id"].to_numpy()[:n_min][np.isnan(columns[-1])]
            if bad.size:
                raise ValueError(f"{where}: {metric!r} is NaN for run(s) {list(bad)}")
        matrices[str(algo)] = np.column_stack(columns)
        dropped[str(algo)] = int(counts.sum()) - n_min * len(envs)
    return matrices, envs, dropped, notes


def _trimmed_mean_last_axis(x: np.ndarray) -> np.ndarray | float:
    """25 %-trimmed mean along the last axis, computed as ``scipy.stats.trim_mean`` does.

    ``trim_mean`` partitions around the cut points and averages the middle slice; its
    ``axis_nan_policy`` wrapper moves the reduced axis last first. Repeating exactly those
    steps gives bit-identical results, minus the wrapper's argument checks, which cost
    10-30x the arithmetic on the small matrices bootstrapped here (tens of thousands of
    calls per table). NaN-free input only: callers reject NaN before bootstrapping.
    """
    n = x.shape[-1]
    low = int(0.25 * n)
    high = n - low
    if n == 0:
        return np.asarray(stats.trim_mean(x, 0.25, axis=-1), dtype=float)
    part = np.partition(x, (low, high - 1), axis=-1)
    return np.mean(part[..., low:high], axis=-1)


def _iqm(x: np.ndarray) -> float:
    """IQM of all entries: equal, bit for bit, to ``rliable.metrics.aggregate_iqm(x)``."""
    return float(_trimmed_mean_last_axis(np.ravel(x)))


def _column_iqm(x: np.ndarray) -> np.ndarray:
    """IQM of every column: the 25 %-trimmed mean that ``rliable.metrics.aggregate_iqm`` uses."""
    return np.asarray(_trimmed_mean_last_axis(np.moveaxis(x, 0, -1)), dtype=float)


def _column_mean(x: np.ndarray) -> np.ndarray:
    return np.asarray(np.mean(x, axis=0), dtype=float)


def _columnwise_bootstrap(
    blocks: dict[Any, np.ndarray],
    statistic: Callable[[np.ndarray], np.ndarray],
    reps: int,
    confidence: float,
    seed: int,
) -> dict[Any, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Point estimate and percentile CI of a column-wise statistic for many (n_runs, k) blocks.

    Returns ``{key: (point, low, high)}``, each of length k. Blocks with the same number
    of runs are stacked side by side and bootstrapped in one
    ``rliable.library.get_interval_estimates`` call: the stratified bootstrap resamples
    runs independently within every column, so each column's interval is distributed
    exactly as if it were bootstrapped alone, while the per-replication Python overhead
    (which dominates for small matrices) is paid once per group instead of per block.
    """
    by_rows: dict[int, list[Any]] = {}
    for key, block in blocks.items():
        by_rows.setdefault(block.shape[0], []).append(key)
    out: dict[Any, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for n_rows in sorted(by_rows):
        keys = by_rows[n_rows]
        widths = [blocks[key].shape[1] for key in keys]
        matrix = np.column_stack([blocks[key] for key in keys])
        with _seeded_numpy(seed):
            point, interval = rly.get_interval_estimates(
                {"x": matrix}, statistic, reps=reps, confidence_interval_size=confidence
            )
        bounds = np.cumsum([0, *widths])
        for key, a, b in zip(keys, bounds[:-1], bounds[1:], strict=True):
            out[key] = (point["x"][a:b], interval["x"][0, a:b], interval["x"][1, a:b])
    return out


# --------------------------------------------------------------------------- per run


def final_scores(df: pd.DataFrame, how: FinalMode = "last", k: int = 10) -> pd.DataFrame:
    """One row per run with its final return and cost and its whole-run safety metrics.

    Final return / cost (``ret``, ``cost``):

    * ``"last"``: ``ep_ret`` / ``ep_cost`` of the run's last logged epoch (the C-TRPO
      protocol, ALGORITHMS.md §4.4: training-time values at the end of the budget).
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
    feasible = (out["cost"] <= last["cost_limit"]).astype("boolean")
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
    with ``run_id, algo, env, seed, status, epoch, steps, regret, cost_limit``.
    """
    _require_columns(df, _EPOCH_COLUMNS, "regret_curve")
    d = df.sort_values(["run_id", "epoch"], kind="stable")
    excess = (d["ep_cost"] - d["cost_limit"]).clip(lower=0.0).fillna(0.0)
    out = d[[*_RUN_META, "epoch", "steps", "cost_limit"]].copy()
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
    envs = sorted(scores["env"].unique())

    def reference_stat(algo: str, column: str, stat: Callable[[np.ndarray], float]) -> pd.Series:
        cells = used.loc[used["algo"] == algo].groupby("env")[column]
        values = cells.apply(lambda s: stat(s.to_numpy(dtype=float)))
        missing = [e for e in envs if e not in values.index]
        if missing:
            raise ValueError(
                f"{where}: reference algo {algo!r} has no used runs on env(s) {missing}"
            )
        return values.reindex(envs)

    def checked(divisor: pd.Series, ok: pd.Series, what: str) -> pd.Series:
        bad = list(divisor.index[~ok])
        if bad:
            notes.append(f"{what} is not usable on env(s) {bad}: normalised values set to NaN")
        return divisor.where(ok)

    def minmax(column: str) -> pd.Series:
        grouped = used.groupby("env")[column]
        low, high = grouped.min().reindex(envs), grouped.max().reindex(envs)
        span = checked(high - low, (high - low) > 0, f"min-max range of {column}")
        return (scores[column] - scores["env"].map(low)) / scores["env"].map(span)

    if method == "reference":
        assert reference is not None
        mean_ret = reference_stat(reference, "ret", np.mean)
        divisor = checked(mean_ret, mean_ret > 0, f"mean return of {reference!r}")
        out["ret"] = scores["ret"] / scores["env"].map(divisor)
    else:
        out["ret"] = minmax("ret")

    limit = scores["cost_limit"].where(scores["cost_limit"] > 0)
    if bool((scores["cost_limit"] <= 0).any()):
        notes.append("cost_limit <= 0 on some runs: their normalised cost is NaN")
    out["cost"] = scores["cost"] / limit - 1.0

    if regret_ref is not None:
        iqm = reference_stat(regret_ref, "regret", lambda x: float(rlm.aggregate_iqm(x)))
        regret_div = checked(iqm, iqm > 0, f"IQM regret of {regret_ref!r}")
        out["regret"] = scores["regret"] / scores["env"].map(regret_div)
    else:
        out["regret"] = minmax("regret")

    for column in _NORMALISED:
        out[f"{column}_raw"] = scores[column]
    out.attrs.update(
        normalization=method, reference=reference, regret_reference=regret_ref, notes=notes
    )
    return out


# --------------------------------------------------------------------------- rliable aggregates


def aggregate(
    scores: pd.DataFrame,
    metric: str = "ret",
    reps: int = 50000,
    confidence: float = 0.95,
    seed: int = 0,
    *,
    threshold: float = 1.0,
    statistics: Sequence[Statistic] = ("iqm", "mean", "median", "optimality_gap"),
    include_partial: bool = False,
    ragged: Ragged = "raise",
) -> pd.DataFrame:
    """Aggregate ``metric`` across all runs and envs per algo, with bootstrap CIs (rliable).

    For each algo, the (n_runs, n_envs) score matrix X gives (rliable.metrics):

    * ``iqm``: interquartile mean, the 25 %-trimmed mean of all entries of X;
    * ``mean``: mean over envs of the per-env mean over runs;
    * ``median``: median over envs of the per-env mean over runs;
    * ``optimality_gap``: threshold − mean(min(X, threshold)) (meaningful for
      normalised higher-is-better scores, e.g. ret with ``threshold=1`` = reference).

    ``<stat>_low`` / ``<stat>_high`` are percentile stratified-bootstrap intervals
    (``rliable.library.get_interval_estimates``: runs resampled with replacement
    within each env) with ``reps`` replications at ``confidence``. Each algo is
    bootstrapped from the same ``seed``, so its interval does not depend on which
    other algos are in the frame; an algo's numbers are exactly those of
    ``get_interval_estimates({algo: X}, ...)`` after ``np.random.seed(seed)``. Only the
    requested ``statistics`` are computed (each one costs time in every replication;
    the IQM costs most). Scores must be on comparable scales across envs
    (see ``normalize_scores``) for the aggregate to mean anything.

    Rectangular matrices: see ``ragged`` in ``_score_matrices`` — by default an algo with
    unequal run counts across envs raises; ``ragged="truncate"`` keeps the minimum
    common number of lowest-seed runs, reported in ``n_dropped`` and ``attrs["notes"]``.
    Different algos may have different run counts (separate bootstraps).
    Columns: ``algo, n_runs`` (per env), ``n_envs, n_excluded, n_partial, n_dropped``, stats.
    """
    where = "aggregate"
    used, excluded, notes = split_partial(scores, include_partial, where)
    matrices, envs, dropped, ragged_notes = _score_matrices(used, metric, ragged, where)
    notes += ragged_notes

    names = list(dict.fromkeys(statistics))
    unknown = [n for n in names if n not in _STATISTICS]
    if unknown or not names:
        raise ValueError(f"{where}: statistics must be among {list(_STATISTICS)}, got {unknown}")
    estimators: dict[str, Callable[[np.ndarray], Any]] = {
        "iqm": _iqm,
        "mean": rlm.aggregate_mean,
        "median": rlm.aggregate_median,
        "optimality_gap": lambda x: rlm.aggregate_optimality_gap(x, threshold),
    }
    chosen = [estimators[n] for n in names]

    def statistic_vector(x: np.ndarray) -> np.ndarray:
        return np.array([f(x) for f in chosen])

    rows: list[dict[str, Any]] = []
    for algo, matrix in matrices.items():
        with _seeded_numpy(seed):
            point, interval = rly.get_interval_estimates(
                {algo: matrix}, statistic_vector, reps=reps, confidence_interval_size=confidence
            )
        row: dict[str, Any] = {
            "algo": algo,
            "n_runs": matrix.shape[0],
            "n_envs": matrix.shape[1],
            "n_partial": int((used.loc[used["algo"] == algo, "status"] != DONE).sum()),
            "n_dropped": dropped[algo],
        }
        for i, name in enumerate(names):
            row[name] = float(point[algo][i])
            row[f"{name}_low"] = float(interval[algo][0, i])
            row[f"{name}_high"] = float(interval[algo][1, i])
        rows.append(row)
    out = pd.DataFrame(rows)
    out.insert(3, "n_excluded", _count_by(excluded, ["algo"], pd.Index(out["algo"])))
    out.attrs.update(
        metric=metric,
        reps=reps,
        confidence=confidence,
        seed=seed,
        envs=envs,
        notes=notes,
        n_excluded=len(excluded),
    )
    return out


def per_env_table(
    scores: pd.DataFrame,
    reps: int = 50000,
    seed: int = 0,
    confidence: float = 0.95,
    *,
    metrics: Sequence[str] = ("ret", "cost", "regret"),
    include_partial: bool = False,
) -> pd.DataFrame:
    """Per (algo, env): IQM over runs of each metric with a bootstrap CI over runs.

    ``<metric>`` is the 25 %-trimmed mean over the cell's runs (as
    ``rliable.metrics.aggregate_iqm`` on a one-column matrix) and ``<metric>_low`` /
    ``<metric>_high`` its percentile bootstrap interval from
    ``rliable.library.get_interval_estimates``. Cells with the same number of runs share
    one rliable call (one column per cell and metric, see ``_columnwise_bootstrap``);
    each column's interval is distributed exactly as its own one-column bootstrap. The
    time is set by the number of such calls (distinct run counts) × ``reps``: each
    replication evaluates one column-wise trimmed mean per call.

    ``admissible`` marks cells whose IQM of the raw final cost is < cost_limit (strict,
    as the C-TRPO tables bold them). Also ``n_runs, n_excluded, n_partial``.
    """
    where = "per_env_table"
    metric_list = list(metrics)
    _require_columns(scores, ["algo", "env", "seed", "run_id", "cost_limit", *metric_list], where)
    used, excluded, notes = split_partial(scores, include_partial, where)
    if used.empty:
        raise ValueError(f"{where}: no runs to tabulate")
    keys = ["algo", "env"]
    used = used.sort_values([*keys, "seed", "run_id"])
    cells = {key: cell for key, cell in used.groupby(keys, sort=True)}
    for cell in cells.values():
        values = cell[metric_list].to_numpy(dtype=float)
        if np.isnan(values).any():
            bad = list(cell["run_id"].to_numpy()[np.isnan(values).any(axis=1)])
            raise ValueError(f"{where}: NaN in {metric_list} for run(s) {bad}")

    blocks = {key: cell[metric_list].to_numpy(dtype=float) for key, cell in cells.items()}
    estimates = _columnwise_bootstrap(blocks, _column_iqm, reps, confidence, seed)
    results: dict[tuple[Any, ...], dict[str, float]] = {}
    for key, (point, low, high) in estimates.items():
        entry = results.setdefault(key, {})
        for j, m in enumerate(metric_list):
            entry.update({m: point[j], f"{m}_low": low[j], f"{m}_high": high[j]})

    rows: list[dict[str, Any]] = []
    for key, cell in cells.items():
        limit = float(cell["cost_limit"].iloc[0])
        raw_cost = _raw(cell, "cost").to_numpy(dtype=float)
        rows.append(
            {
                "algo": key[0],
                "env": key[1],
                "n_runs": len(cell),
                "n_partial": int((cell["status"] != DONE).sum()),
                **results[key],
                "cost_limit": limit,
                "admissible": bool(float(stats.trim_mean(raw_cost, 0.25)) < limit),
            }
        )
    out = pd.DataFrame(rows)
    index = pd.MultiIndex.from_frame(out[keys])
    out.insert(3, "n_excluded", _count_by(excluded, keys, index))
    out.attrs.update(
        metrics=metric_list,
        reps=reps,
        confidence=confidence,
        seed=seed,
        notes=notes,
        n_excluded=len(excluded),
    )
    return out


def probability_of_improvement(
    scores: pd.DataFrame,
    pairs: Sequence[tuple[str, str]],
    reps: int = 2000,
    seed: int = 0,
    *,
    metric: str = "ret",
    higher_is_better: bool | None = None,
    confidence: float = 0.95,
    include_partial: bool = False,
    ragged: Ragged = "raise",
) -> pd.DataFrame:
    """P(X > Y) for each pair (X, Y), averaged over envs, with a bootstrap CI (rliable).

    ``prob`` = mean over envs m of P(X_m > Y_m) (+ ½ P(X_m = Y_m)), estimated by the
    Mann–Whitney U statistic / (n_x · n_y) over the runs of X and Y on env m
    (``rliable.metrics.probability_of_improvement``); ``[low, high]`` is rliable's
    stratified *independent* bootstrap interval (X and Y runs resampled separately,
    so they may have different run counts). Envs are those covered by the two algos
    (both must cover the same ones). For metrics in ``LOWER_IS_BETTER`` (unless
    ``higher_is_better`` says otherwise) "improvement" means a *lower* value, computed
    on negated scores. Every pair is bootstrapped from the same ``seed``.
    """
    where = "probability_of_improvement"
    used, excluded, notes = split_partial(scores, include_partial, where)
    sign = 1.0 if _orientation(metric, higher_is_better) else -1.0
    rows: list[dict[str, Any]] = []
    for x, y in pairs:
        pair = used.loc[used["algo"].isin([x, y])]
        for name in (x, y):
            if name not in set(pair["algo"]):
                raise ValueError(f"{where}: algo {name!r} has no used runs")
        matrices, envs, _, ragged_notes = _score_matrices(pair, metric, ragged, where)
        notes += [n for n in ragged_notes if n not in notes]
        key = f"{x} > {y}"
        with _seeded_numpy(seed):
            point, interval = rly.get_interval_estimates(
                {key: [sign * matrices[x], sign * matrices[y]]},
                rlm.probability_of_improvement,
                reps=reps,
                confidence_interval_size=confidence,
            )
        rows.append(
            {
                "x": x,
                "y": y,
                "metric": metric,
                "n_runs_x": matrices[x].shape[0],
                "n_runs_y": matrices[y].shape[0],
                "n_envs": len(envs),
                "prob": float(point[key]),
                "low": float(np.ravel(interval[key])[0]),
                "high": float(np.ravel(interval[key])[1]),
            }
        )
    out = pd.DataFrame(rows)
    out.attrs.update(
        reps=reps,
        confidence=confidence,
        seed=seed,
        notes=notes,
        n_excluded=len(excluded),
        higher_is_better=sign > 0,
    )
    return out


def performance_profiles(
    scores: pd.DataFrame,
    taus: Sequence[float] | np.ndarray,
    metric: str = "ret",
    *,
    higher_is_better: bool | None = None,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    include_partial: bool = False,
    ragged: Ragged = "raise",
) -> pd.DataFrame:
    """Run-score distributions (performance profiles) with bootstrap bands (rliable).

    For each algo and threshold τ: ``fraction`` = share of all (run, env) scores > τ
    (``rliable.library.create_performance_profile`` with score distributions), or
    ≤ τ for lower-is-better metrics (e.g. normalised cost: the share of runs whose
    cost is within τ of the limit); ``[low, high]`` is the stratified bootstrap band.
    One row per (algo, tau). Each algo is bootstrapped from the same ``seed``.
    """
    where = "performance_profiles"
    used, excluded, notes = split_partial(scores, include_partial, where)
    matrices, envs, _, ragged_notes = _score_matrices(used, metric, ragged, where)
    notes += ragged_notes
    tau_list = np.asarray(taus, dtype=float)
    higher = _orientation(metric, higher_is_better)

    def at_most(x: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
        return np.array([np.mean(x <= t) for t in thresholds])

    rows: list[pd.DataFrame] = []
    for algo, matrix in matrices.items():
        with _seeded_numpy(seed):
            profile, band = rly.create_performance_profile(
                {algo: matrix},
                tau_list,
                custom_profile_func=None if higher else at_most,
                reps=reps,
                confidence_interval_size=confidence,
            )
        rows.append(
            pd.DataFrame(
                {
                    "algo": algo,
                    "tau": tau_list,
                    "fraction": np.asarray(profile[algo], dtype=float),
                    "low": band[algo][0],
                    "high": band[algo][1],
                    "n_runs": matrix.shape[0],
                }
            )
        )
    out = pd.concat(rows, ignore_index=True)
    out.attrs.update(
        metric=metric,
        higher_is_better=higher,
        reps=reps,
        confidence=confidence,
        seed=seed,
        envs=envs,
        notes=notes,
        n_excluded=len(excluded),
    )
    return out


def curve_estimates(
    df: pd.DataFrame,
    column: str,
    *,
    estimator: Literal["iqm", "mean"] = "iqm",
    n_points: int = 100,
    reps: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    include_partial: bool = False,
) -> pd.DataFrame:
    """Per-algo curve of ``column`` vs env steps across runs, with pointwise bootstrap CIs.

    ``df`` is one row per (run, epoch) with ``steps`` and ``column`` (e.g. the input
    frame with ``ep_ret`` / ``ep_cost``, or ``regret_curve(df)`` with ``regret``) for a
    single env: raw values on different envs are on different scales, so several envs
    raise. Each run is linearly interpolated onto a grid of ``n_points`` step values
    spanning the range every run of that algo covers (from the largest first logged step
    to the smallest last one), so no run is extrapolated; a shorter (partial) run,
    when included, shortens its algo's curve. At each grid point, ``estimate`` is the
    IQM (25 %-trimmed mean) or the mean over runs and ``[low, high]`` its percentile
    bootstrap interval over runs from ``rliable.library.get_interval_estimates`` (each
    grid column is a stratum, so the band is pointwise; algos with equal run counts share
    one rliable call, see ``_columnwise_bootstrap``). One row per (algo, step).
    """
    where = "curve_estimates"
    _require_columns(df, ["run_id", "algo", "env", "status", "steps", column], where)
    if estimator not in ("iqm", "mean"):
        raise ValueError(f"{where}: estimator must be 'iqm' or 'mean', got {estimator!r}")
    if n_points < 2:
        raise ValueError(f"{where}: n_points must be >= 2, got {n_points}")
    envs = sorted(df["env"].unique())
    if len(envs) != 1:
        raise ValueError(f"{where}: expected one env, got {envs}; filter the frame first")
    runs = df.drop_duplicates("run_id")
    _, excluded, notes = split_partial(runs, include_partial, where)
    d = df.loc[~df["run_id"].isin(excluded["run_id"])]
    d = d.loc[d[column].notna()].sort_values(["run_id", "steps"])
    if d.empty:
        raise ValueError(f"{where}: no values of {column!r} in the used runs")

    grids: dict[str, np.ndarray] = {}
    blocks: dict[str, np.ndarray] = {}
    for algo, group in d.groupby("algo", sort=True):
        per_run = [
            (run["steps"].to_numpy(float), run[column].to_numpy(float))
            for _, run in group.groupby("run_id")
        ]
        start = max(x[0] for x, _ in per_run)
        stop = min(x[-1] for x, _ in per_run)
        if stop <= start:
            notes.append(f"{algo}: runs share no step range; curve skipped")
            continue
        grids[str(algo)] = np.linspace(start, stop, n_points)
        blocks[str(algo)] = np.stack([np.interp(grids[str(algo)], x, y) for x, y in per_run])
    statistic = _column_iqm if estimator == "iqm" else _column_mean
    estimates = _columnwise_bootstrap(blocks, statistic, reps, confidence, seed)
    frames = [
        pd.DataFrame(
            {
                "algo": algo,
                "steps": grids[algo],
                "estimate": point,
                "low": low,
                "high": high,
                "n_runs": blocks[algo].shape[0],
            }
        )
        for algo, (point, low, high) in estimates.items()
    ]
    if not frames:
        raise ValueError(f"{where}: no algo has a curve to draw")
    out = pd.concat(frames).sort_values(["algo", "steps"], kind="stable", ignore_index=True)
    out.attrs.update(
        column=column,
        env=envs[0],
        estimator=estimator,
        reps=reps,
        confidence=confidence,
        seed=seed,
        notes=notes,
        n_excluded=len(excluded),
    )
    return out


# --------------------------------------------------------------------------- KFCPO headline


def gain_over_best_feasible_baseline(
    scores: pd.DataFrame,
    algo: str,
    baselines: Sequence[str],
    *,
    include_partial: bool = False,
) -> pd.DataFrame:
    """KFCPO's headline (ALGORITHMS.md §3.11): % return over the best cost-respecting baseline.

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


REFERENCE_PREFIX = OMNISAFE_PREFIX
"""Registry prefix of the reference backend whose runs the cross-check pairs with ours."""


def reference_pairs(names: dict[str, str]) -> list[tuple[str, str]]:
    """``(label, reference label)`` pairs from ``{label: registry name}``.

    A label whose registry name is ``omnisafe:X`` is the reference of every label whose
    registry name is ``x`` (case-insensitive): ``cpo`` pairs with ``omnisafe:CPO``.
    """
    pairs: list[tuple[str, str]] = []
    for ref_label, ref_name in sorted(names.items()):
        if not ref_name.lower().startswith(REFERENCE_PREFIX):
            continue
        target = ref_name[len(REFERENCE_PREFIX) :].lower()
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
