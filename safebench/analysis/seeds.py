"""Enough seeds? How the IQM intervals narrow with more seeds, and how many seeds would
separate the closest methods.

See :mod:`safebench.analysis` for the input conventions.

Every bootstrap here is written in NumPy, vectorised over all bootstrap replications and
all subsamples (or simulated experiments) at once, instead of going through
``rliable.library.get_interval_estimates``: rliable runs one Python-level iteration per
replication (about 10 ms for one 200-replication interval of 10 runs), and these estimates
need tens of thousands of intervals — 50 subsamples × every n × 2 metrics per cell for the
widths (16,000 for 20 cells of 10 seeds), 200 simulated experiments × 2 methods × 6-8
candidate seed counts per pair — minutes that way, a second or two here. The statistic is
the same IQM (rliable's ``aggregate_iqm``, the 25 %-trimmed mean; see ``_iqm_last_axis``)
and the intervals are the same percentile intervals of a stratified bootstrap (runs
resampled with replacement within each env), so the numbers are those rliable would give,
up to Monte-Carlo noise (tests/report/test_seeds.py holds them side by side).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from safebench.analysis.common import _require_columns, _score_matrices, split_partial
from safebench.analysis.comparisons import ACROSS

_CHUNK = 4_000_000
"""Largest number of bootstrapped values held at once (32 MB of float64)."""


def _iqm_last_axis(x: np.ndarray) -> np.ndarray:
    """IQM (25 %-trimmed mean) along the last axis, by a full sort.

    The same trimmed slice as ``common._trimmed_mean_last_axis`` (so the same value, up to
    the rounding of the sum), but ``np.sort`` instead of ``np.partition`` with two cut
    points: on the many short rows bootstrapped here (60,000 rows of 50) the sort takes
    0.02 s where the two-point partition takes 0.22 s.
    """
    n = x.shape[-1]
    low = int(0.25 * n)
    return np.asarray(np.sort(x, axis=-1)[..., low : n - low].mean(axis=-1))


def _bootstrap_iqms(block: np.ndarray, reps: int, rng: np.random.Generator) -> np.ndarray:
    """``reps`` bootstrap IQMs of each sample of ``block`` (b, n, k): shape (b, reps).

    One env (k = 1): the samples are sorted once, so a resample's sorted values are the
    values at its sorted indices, and only the middle half of them is gathered; sorting
    small integers is several times faster than sorting the gathered floats (16 ms against
    28 ms for 200 × 200 resamples of 25 runs). Several envs (the across-env aggregate): the
    runs are resampled within each env and the n·k values sorted.
    """
    b, n, k = block.shape
    if k == 1:
        ordered = np.sort(block[..., 0], axis=-1)
        low = int(0.25 * n)
        idx = rng.integers(0, n, size=(b, reps, n), dtype=np.int32)
        idx.sort(axis=-1)
        middle = idx[..., low : n - low].astype(np.intp)
        middle += (np.arange(b) * n)[:, None, None]
        return np.asarray(ordered.ravel()[middle].mean(axis=-1))
    idx = rng.integers(0, n, size=(b, reps, n, k)).astype(np.intp)
    idx *= k
    idx += (np.arange(b) * (n * k))[:, None, None, None] + np.arange(k)
    return _iqm_last_axis(block.ravel()[idx].reshape(b, reps, n * k))


def _iqm_intervals(
    samples: np.ndarray, reps: int, confidence: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of the IQM of each sample in ``samples`` (..., n, k).

    A sample is n runs × k envs; each replication resamples the n runs with replacement
    independently within every env (rliable's stratified bootstrap) and takes the IQM of
    all n·k values. Returns ``(low, high)``, each of shape ``samples.shape[:-2]``.
    """
    n, k = samples.shape[-2:]
    lead = samples.shape[:-2]
    flat = np.ascontiguousarray(samples.reshape(-1, n, k), dtype=float)
    lows, highs = [], []
    step = max(1, _CHUNK // max(1, reps * n * k))
    tail = 50.0 * (1.0 - confidence)
    for start in range(0, flat.shape[0], step):
        iqms = _bootstrap_iqms(flat[start : start + step], reps, rng)
        low, high = np.percentile(iqms, [tail, 100.0 - tail], axis=-1)
        lows.append(low)
        highs.append(high)
    return np.concatenate(lows).reshape(lead), np.concatenate(highs).reshape(lead)


def _subsets(n_total: int, n: int, limit: int, rng: np.random.Generator) -> np.ndarray:
    """Row indices of the subsamples of ``n`` of ``n_total`` seeds: every subset when there
    are at most ``limit``, else ``limit`` subsets drawn at random (each without
    replacement). Shape (subsets, n)."""
    if math.comb(n_total, n) <= limit:
        return np.array(list(itertools.combinations(range(n_total), n)), dtype=int)
    return np.argsort(rng.random((limit, n_total)), axis=1)[:, :n]


def _subsample_intervals(
    runs: np.ndarray,
    n: int,
    draws: int,
    *,
    replace: bool,
    reps: int,
    confidence: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, int]:
    """IQM intervals of subsamples of ``n`` of the runs ``runs`` (N, k envs, m metrics).

    ``replace=False``: subsets of n of the N seeds (:func:`_subsets`, at most ``draws``),
    each seed keeping its runs on every env together — the runs at hand with fewer seeds.
    ``replace=True``: ``draws`` samples of n runs drawn with replacement independently
    within each env — new experiments from the distribution the runs stand for.

    Returns ``(low, high, reps)``: the interval ends, shape (m, subsamples), one metric after
    another from the same subsamples, and the replications per interval: ``reps`` ×
    ``draws`` // the number of subsamples where there are fewer distinct subsets than
    ``draws``, so that every n gets as many replications in all (one subsample gets them all).
    """
    n_total, k = runs.shape[:2]
    if replace:
        picks = rng.integers(0, n_total, size=(draws, n, k))
    else:
        picks = _subsets(n_total, n, draws, rng)[..., None]  # (subsets, n, 1): whole seeds
    n_reps = reps * max(1, draws // len(picks))
    samples = runs[picks, np.arange(k)]  # (subsamples, n, k, m)
    ends = [_iqm_intervals(samples[..., j], n_reps, confidence, rng) for j in range(runs.shape[2])]
    return np.stack([low for low, _ in ends]), np.stack([high for _, high in ends]), n_reps


def _cells(
    scores: pd.DataFrame, metrics: Sequence[str], across_envs: bool, where: str
) -> tuple[dict[tuple[str, str], np.ndarray], list[str]]:
    """``{(algo, scope): (n_runs, k, n_metrics) array}``: one env per scope (k = 1), or
    every env (scope ``ACROSS``, the lowest-seed runs common to all envs) with
    ``across_envs``; runs in seed order."""
    notes: list[str] = []
    if not across_envs:
        cells = {}
        ordered = scores.sort_values(["algo", "env", "seed", "run_id"])
        for (algo, env), cell in ordered.groupby(["algo", "env"], sort=True):
            values = cell[list(metrics)].to_numpy(dtype=float)
            if np.isnan(values).any():
                raise ValueError(f"{where}: NaN in {list(metrics)} of {algo} on {env}")
            cells[(str(algo), str(env))] = values[:, None, :]
        return cells, notes
    per_metric = []
    for metric in metrics:
        matrices, _, _, ragged = _score_matrices(scores, metric, "truncate", where)
        notes.extend(n for n in ragged if n not in notes)
        per_metric.append(matrices)
    cells = {(a, ACROSS): np.stack([m[a] for m in per_metric], axis=-1) for a in per_metric[0]}
    return cells, notes


def _measured_widths(
    x: np.ndarray,
    metrics: Sequence[str],
    subsamples: int,
    reps: int,
    confidence: float,
    seed: int,
) -> list[dict[str, Any]]:
    """The measured rows of one cell of :func:`ci_width_by_seeds` (runs ``x``: N, k, metrics):
    for every n from 2 to N and every metric, the mean and spread of the interval widths over
    subsamples of n of the N seeds."""
    n_total = x.shape[0]
    rows: list[dict[str, Any]] = []
    for n in range(2, n_total + 1):
        rng = np.random.default_rng([seed, n_total, n])
        low, high, n_reps = _subsample_intervals(
            x, n, subsamples, replace=False, reps=reps, confidence=confidence, rng=rng
        )
        for metric, width in zip(metrics, high - low, strict=True):
            rows.append(
                {
                    "metric": metric,
                    "n": n,
                    "width": float(width.mean()),
                    "width_sd": float(width.std()),
                    "n_subsamples": width.size,
                    "reps": n_reps,
                    "all_subsets": width.size == math.comb(n_total, n),
                    "extrapolated": False,
                }
            )
    return rows


_WIDTH_COLUMNS = [
    "algo",
    "scope",
    "metric",
    "n_available",
    "n",
    "width",
    "width_sd",
    "n_subsamples",
    "reps",
    "all_subsets",
    "extrapolated",
]


def ci_width_by_seeds(
    scores: pd.DataFrame,
    metrics: Sequence[str] = ("ret", "cost"),
    *,
    across_envs: bool = False,
    extrapolate_to: Sequence[int] = (10, 20),
    subsamples: int = 50,
    reps: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
    include_partial: bool = False,
) -> pd.DataFrame:
    """Width of the IQM bootstrap interval as a function of the number of seeds.

    Per (algo, env) — or, with ``across_envs``, per algo over every env (``scope`` =
    ``ACROSS``: the stratified aggregate of ``aggregate``, runs truncated to the count
    common to all envs; pass normalised scores) — and per metric, for every n from 2 to
    the N seeds at hand: ``width`` = the mean, over subsamples of n of the N runs (drawn
    without replacement; every subset when there are at most ``subsamples`` of them, else
    ``subsamples`` random ones: ``n_subsamples``, ``all_subsets``), of the width of the
    ``confidence`` percentile-bootstrap interval of the IQM (``reps`` replications per
    subsample; ``reps`` × ``subsamples`` // ``n_subsamples`` where there are fewer
    subsets, so at n = N the one interval gets them all); ``width_sd`` its spread over the
    subsamples. Beyond N, rows with ``extrapolated`` True give the width at each n of
    ``extrapolate_to`` by the 1/√n law anchored at N: ``width(n) = width(N) · √(N / n)``
    (for a fixed spread of the runs, an interval narrows as 1/√n; at very small n the
    percentile bootstrap's own narrowing adds to it, so measured widths at n < N are not
    forced onto the law).

    Columns: ``algo, scope, metric, n_available, n, width, width_sd, n_subsamples, reps,
    all_subsets, extrapolated``. Cells with fewer than 2 used runs have no rows (a note
    says so). Vectorised NumPy bootstrap (see the module docstring).
    """
    where = "ci_width_by_seeds"
    _require_columns(scores, ["algo", "env", "seed", "run_id", "status", *metrics], where)
    used, _, notes = split_partial(scores, include_partial, where)
    if used.empty:
        raise ValueError(f"{where}: no runs")
    cells, more = _cells(used, metrics, across_envs, where)
    notes += more
    rows: list[dict[str, Any]] = []
    for (algo, scope), x in cells.items():
        n_total = x.shape[0]
        if n_total < 2:
            notes.append(f"{algo} on {scope}: 1 run, no interval width by seeds")
            continue
        cell = {"algo": algo, "scope": scope, "n_available": n_total}
        measured = _measured_widths(x, metrics, subsamples, reps, confidence, seed)
        rows += [{**cell, **r} for r in measured]
        at_all = {r["metric"]: r["width"] for r in measured if r["n"] == n_total}
        for n in sorted(set(extrapolate_to)):
            if n <= n_total:
                continue
            for metric in metrics:
                rows.append(
                    {
                        **cell,
                        "metric": metric,
                        "n": n,
                        "width": at_all[metric] * math.sqrt(n_total / n),
                        "width_sd": math.nan,
                        "n_subsamples": 0,
                        "reps": 0,
                        "all_subsets": False,
                        "extrapolated": True,
                    }
                )
    out = pd.DataFrame(rows, columns=_WIDTH_COLUMNS).astype(
        {"n_available": int, "n": int, "width": float, "width_sd": float, "n_subsamples": int}
    )
    out = out.astype({"reps": int, "all_subsets": bool, "extrapolated": bool})
    out = out.sort_values(["scope", "algo", "metric", "n"], kind="stable", ignore_index=True)
    out.attrs.update(
        notes=notes, reps=reps, subsamples=subsamples, confidence=confidence, seed=seed
    )
    return out


def closest_pairs(verdict: pd.DataFrame) -> pd.DataFrame:
    """The pairs more seeds might settle: per scope of ``verdict`` (the frame of
    ``verdict``), the admissible algorithms adjacent in IQM return whose intervals overlap.

    Columns: ``scope, higher, lower`` (by IQM return), each one's ``ret, ret_low,
    ret_high`` (``higher_ret``, ..., ``lower_ret_high``), and ``effect`` = the difference
    of the two IQM returns. Scopes in ``verdict``'s order; within one, from the top down.
    """
    columns = ["scope", "algo", "admissible", "ret", "ret_low", "ret_high"]
    _require_columns(verdict, columns, "closest_pairs")
    rows: list[dict[str, Any]] = []
    for scope, group in verdict.groupby("scope", sort=False):
        ok = group.loc[group["admissible"].astype(bool)]
        ok = ok.sort_values(["ret", "algo"], ascending=[False, True])
        for a, b in itertools.pairwise(ok.itertuples()):
            if float(a.ret_low) > float(b.ret_high):  # already separated
                continue
            row: dict[str, Any] = {"scope": scope, "higher": a.algo, "lower": b.algo}
            for side, r in (("higher", a), ("lower", b)):
                for c in ("ret", "ret_low", "ret_high"):
                    row[f"{side}_{c}"] = float(getattr(r, c))
            row["effect"] = float(a.ret) - float(b.ret)
            rows.append(row)
    out = ["scope", "higher", "lower"]
    out += [f"{s}_{c}" for s in ("higher", "lower") for c in ("ret", "ret_low", "ret_high")]
    return pd.DataFrame(rows, columns=[*out, "effect"])


def _power(
    x: np.ndarray,
    y: np.ndarray,
    n: int,
    experiments: int,
    reps: int,
    confidence: float,
    seed: int,
) -> float:
    """Share of simulated experiments, n runs per method drawn with replacement from the
    runs x (higher) and y (lower), each (N, k), in which x's IQM interval lies wholly above
    y's."""
    rng = np.random.default_rng([seed, n])
    # one stream for both methods, x's draws first, so that (seed, n) fixes the answer
    x_low, _, _ = _subsample_intervals(
        x[..., None], n, experiments, replace=True, reps=reps, confidence=confidence, rng=rng
    )
    _, y_high, _ = _subsample_intervals(
        y[..., None], n, experiments, replace=True, reps=reps, confidence=confidence, rng=rng
    )
    return float(np.mean(x_low[0] > y_high[0]))


def _fewest_seeds(
    x: np.ndarray,
    y: np.ndarray,
    target: float,
    min_seeds: int,
    max_seeds: int,
    experiments: int,
    reps: int,
    confidence: float,
    seed: int,
) -> dict[str, Any]:
    """The power columns of one :func:`seeds_to_separate` row (runs x above y, each (N, k)):
    ``power_now`` at the seeds at hand; ``seeds``, the smallest n in
    ``min_seeds``..``max_seeds`` with power ≥ ``target``, and ``power_at_seeds``; or, when
    even ``max_seeds`` falls short, the ``reason`` and ``power_at_max``."""
    cache: dict[int, float] = {}

    def at(n: int) -> float:
        # the search asks for some n twice; each costs a whole simulation
        if n not in cache:
            cache[n] = _power(x, y, n, experiments, reps, confidence, seed)
        return cache[n]

    n_now = min(x.shape[0], y.shape[0])
    found: dict[str, Any] = {"power_now": at(n_now)}
    lo, hi = min_seeds - 1, min(max(n_now, min_seeds), max_seeds)  # power(lo) := 0
    while at(hi) < target and hi < max_seeds:  # doubling: power(lo) < target
        lo, hi = hi, min(2 * hi, max_seeds)
    if at(hi) < target:
        at_max = at(max_seeds)
        reason = f"not separable at this effect ({at_max:.0%} power at {max_seeds} seeds)"
        return {**found, "power_at_max": at_max, "reason": reason}
    while hi - lo > 1:  # bisection: power(lo) < target <= power(hi)
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if at(mid) >= target else (mid, hi)
    found.update(seeds=hi, power_at_seeds=at(hi), power_at_max=cache.get(max_seeds, math.nan))
    return found


_SEPARATE_COLUMNS = [
    "scope",
    "higher",
    "lower",
    "n_higher",
    "n_lower",
    "iqm_higher",
    "iqm_lower",
    "effect",
    "n_now",
    "power_now",
    "seeds",
    "power_at_seeds",
    "power_at_max",
    "experiments",
    "reps",
    "reason",
]


def seeds_to_separate(
    scores: pd.DataFrame,
    pairs: Sequence[tuple[str, str, str]],
    metric: str = "ret",
    *,
    power: float = 0.8,
    min_seeds: int = 5,
    max_seeds: int = 50,
    experiments: int = 200,
    reps: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
    include_partial: bool = False,
) -> pd.DataFrame:
    """How many seeds per method would separate two IQM intervals, at the observed effect.

    ``pairs``: ``(scope, higher, lower)``, e.g. from :func:`closest_pairs`; ``scope`` is an
    env (that env's runs) or ``ACROSS`` (every env of ``scores``, stratified, runs truncated
    to the count common to all envs; pass the normalised scores the aggregate used).

    Power at n seeds: draw ``experiments`` experiments of n runs per method, with
    replacement, from the observed runs (they stand for each method's distribution: the
    observed effect and spread are taken as the truth); in each, compute both methods'
    ``confidence`` percentile-bootstrap IQM intervals (``reps`` replications) and count the
    experiment as separated when ``higher``'s interval lies wholly above ``lower``'s.
    ``seeds`` = the smallest n in ``min_seeds``..``max_seeds`` with power ≥ ``power``,
    found by doubling n from the seeds at hand, then bisection (power is taken to grow with
    n; each n has its own fixed random stream, so the answer is reproducible);
    ``power_at_seeds`` its power. NA when even ``max_seeds`` falls short
    (``power_at_max``; ``reason`` says "not separable at this effect"). ``power_now``: the
    power at the seeds at hand (``n_now``, the smaller of the two run counts).

    Why not below ``min_seeds`` = 5: with 2-4 runs the percentile-bootstrap interval of an
    IQM is far too narrow (at 2 runs it is their range), so its "power" there is an
    artefact and does not grow with n. Measured with normal runs 2 sd apart (1,000
    experiments): 78 % at 2 seeds, 64 % at 3, 50 % at 4, then 61, 71, 79, 92 % at 5, 6, 8,
    10 seeds. From 5 on it grows with n, which the search needs; an answer of
    ``min_seeds`` means "``min_seeds`` or fewer".

    The estimate is as good as the observed runs are a picture of each method: the
    simulated experiments only re-draw them, with (N−1)/N of their sample variance (2/3 at
    3 runs), so from few runs the counts come out low as well as rough. Measured from 20
    random normal runs per method, 12 samples (tests/report/test_seeds.py, slow): truth 30 seeds,
    estimates 9-50 (median 23.5); truth 14, estimates 5-19 (median 11). From runs that are
    the true distribution's quantiles: truth 14, estimate 15. Vectorised NumPy bootstrap
    (see the module docstring).
    """
    where = "seeds_to_separate"
    _require_columns(scores, ["algo", "env", "seed", "run_id", "status", metric], where)
    if not 0.0 < power < 1.0:
        raise ValueError(f"{where}: power must be in (0, 1), got {power}")
    if not 2 <= min_seeds <= max_seeds:
        raise ValueError(f"{where}: need 2 <= min_seeds <= max_seeds ({min_seeds}, {max_seeds})")
    used, _, notes = split_partial(scores, include_partial, where)
    per_env, _ = _cells(used, [metric], False, where)
    across: dict[tuple[str, str], np.ndarray] = {}
    if any(scope == ACROSS for scope, _, _ in pairs):
        across, more = _cells(used, [metric], True, where)
        notes += more
    rows: list[dict[str, Any]] = []
    for scope, higher, lower in pairs:
        cells = across if scope == ACROSS else per_env
        missing = [a for a in (higher, lower) if (a, scope) not in cells]
        if missing:
            raise ValueError(f"{where}: no used runs of {missing} on {scope!r}")
        x, y = cells[(higher, scope)][..., 0], cells[(lower, scope)][..., 0]
        iqm_x, iqm_y = float(_iqm_last_axis(np.ravel(x))), float(_iqm_last_axis(np.ravel(y)))
        n_now = min(x.shape[0], y.shape[0])
        row: dict[str, Any] = dict.fromkeys(_SEPARATE_COLUMNS, math.nan)
        row.update(scope=scope, higher=higher, lower=lower, n_higher=x.shape[0])
        row.update(n_lower=y.shape[0], iqm_higher=iqm_x, iqm_lower=iqm_y, effect=iqm_x - iqm_y)
        row.update(n_now=n_now, seeds=pd.NA, experiments=experiments, reps=reps, reason="")
        if n_now < 2:
            row["reason"] = "fewer than 2 runs: no spread to resample"
        else:
            search = (power, min_seeds, max_seeds, experiments, reps, confidence, seed)
            row.update(_fewest_seeds(x, y, *search))
        rows.append(row)
    out = pd.DataFrame(rows, columns=_SEPARATE_COLUMNS)
    out["seeds"] = out["seeds"].astype("Int64")
    out.attrs.update(
        notes=notes,
        metric=metric,
        power=power,
        min_seeds=min_seeds,
        max_seeds=max_seeds,
        experiments=experiments,
        reps=reps,
        confidence=confidence,
        seed=seed,
    )
    return out
