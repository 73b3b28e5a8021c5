"""A paper's published numbers and their comparison with safebench's statistics.

``experiments/published/<stem>.yaml`` (metadata: sources, report settings) and its CSV hold the
numbers (columns :data:`PUBLISHED_COLUMNS`; the format is described in
:mod:`safebench.experiment.reproduce`); :func:`load_published` reads and checks them, and
:func:`compare` sets each published (algo, env, metric, statistic) against safebench's estimate
of the same statistic with its bootstrap confidence interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from safebench import analysis
from safebench.errors import UserError
from safebench.report import ReportConfig

__all__ = [
    "AGGREGATE_ENV",
    "ALL_ENVS",
    "COMPARISON_COLUMNS",
    "PUBLISHED_COLUMNS",
    "SMOKE_CURVE_REPS",
    "SMOKE_REPS",
    "Published",
    "ReportSettings",
    "compare",
    "load_published",
    "published_path",
]

PUBLISHED_COLUMNS = (
    "algo", "env", "metric", "statistic", "value", "ci_low", "ci_high", "spread", "source", "note",
)  # fmt: skip
COMPARISON_COLUMNS = (
    "algo", "env", "metric", "statistic", "published", "published_low", "published_high",
    "spread", "safebench", "safebench_low", "safebench_high", "n", "difference",
    "published_in_ci", "intervals_overlap", "status", "note", "source",
)  # fmt: skip
AGGREGATE_ENV = "aggregate"
ALL_ENVS = "*"
PER_ENV_METRICS = ("ret", "cost", "regret")
AGGREGATE_METRICS = {"norm_ret": "ret", "norm_cost": "cost", "norm_regret": "regret"}
GAIN_METRIC = "gain_pct"
STATISTICS = ("iqm", "mean", "range")

# A smoke run only shows that the pipeline runs: its report need not pay for tight intervals.
SMOKE_REPS = 1_000
SMOKE_CURVE_REPS = 100

Status = Literal["compared", "not run", "no score", "not comparable"]


# ---------------------------------------------------------------------------------------------
# Published numbers
# ---------------------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Source(_Strict):
    """Where published numbers come from, precisely enough to check them."""

    citation: str = Field(min_length=1, description="authors, title, venue / arXiv id")
    repo: str | None = Field(None, description="owner/name of the repository read")
    commit: str | None = Field(None, description="the commit read")
    file: str | None = Field(None, description="file(s) in the repository or paper section")
    extracted: str = Field("", description="how the numbers were read off the source")


class ReportSettings(_Strict):
    """The report settings under which safebench's numbers are comparable to the paper's."""

    final: analysis.FinalMode = "last"
    k: int = Field(10, ge=1)
    reference: str | None = None
    regret_reference: str | None = None
    ours: str | None = None
    reps: int = Field(10_000, ge=10)
    table_reps: int = Field(10_000, ge=10)
    confidence: float = Field(0.95, ge=0.5, lt=1.0)

    def config(self, *, smoke: bool, reps: int | None) -> ReportConfig:
        """The ReportConfig; ``reps`` overrides every repetition count, smoke lowers them."""
        agg, table, curve = self.reps, self.table_reps, ReportConfig().curve_reps
        if reps is not None:
            agg = table = curve = reps
        elif smoke:
            agg, table, curve = min(agg, SMOKE_REPS), min(table, SMOKE_REPS), SMOKE_CURVE_REPS
        return ReportConfig(
            final=self.final,
            k=self.k,
            reference=self.reference,
            regret_reference=self.regret_reference,
            ours=(self.ours,) if self.ours else (),
            reps=agg,
            table_reps=table,
            curve_reps=curve,
            confidence=self.confidence,
        )


class PublishedMeta(_Strict):
    """The metadata file ``experiments/published/<stem>.yaml``."""

    experiment: str = Field(min_length=1, description="the experiment's name: field")
    protocol: str = Field("", description="the paper's protocol and how safebench matches it")
    values: str | None = Field(None, description="CSV file of published values, beside this")
    unavailable: str = Field("", description="why no values are stored (when values is empty)")
    report: ReportSettings = Field(default_factory=ReportSettings)
    normalizers: dict[str, str] = Field(
        default_factory=dict,
        description="norm_ret / norm_regret -> the algorithm the paper divides by",
    )
    sources: dict[str, Source] = Field(default_factory=dict)


@dataclass(frozen=True)
class Published:
    """Published numbers of one experiment: metadata and values (empty if none are known)."""

    path: Path
    meta: PublishedMeta
    values: pd.DataFrame

    def citation(self, key: str) -> str:
        """One line naming a source: citation, repository@commit, file."""
        s = self.meta.sources[key]
        parts = [s.citation]
        if s.repo:
            parts.append(f"{s.repo}@{s.commit}" if s.commit else s.repo)
        if s.file:
            parts.append(s.file)
        return "; ".join(parts)


def published_path(experiment_file: Path) -> Path:
    """Where an experiment's published numbers live: ``<its folder>/published/<stem>.yaml``."""
    return experiment_file.parent / "published" / f"{experiment_file.stem}.yaml"


def _number(value: Any, where: str, column: str) -> float:
    if value is None or (isinstance(value, str) and not value.strip()):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        raise UserError(f"{where}: {column} {value!r} is not a number") from None


def _check_row(row: dict[str, Any], where: str, sources: dict[str, Source]) -> None:
    metric, statistic, env = row["metric"], row["statistic"], row["env"]
    known = (*PER_ENV_METRICS, *AGGREGATE_METRICS, GAIN_METRIC)
    if metric not in known:
        raise UserError(f"{where}: metric {metric!r} is not one of {', '.join(known)}")
    if statistic not in STATISTICS:
        raise UserError(f"{where}: statistic {statistic!r} is not one of {', '.join(STATISTICS)}")
    if row["source"] not in sources:
        raise UserError(
            f"{where}: source {row['source']!r} is not listed under 'sources' "
            f"({', '.join(sources) or 'none'})"
        )
    if metric in AGGREGATE_METRICS and env != AGGREGATE_ENV:
        raise UserError(f"{where}: {metric} is an aggregate: its env must be {AGGREGATE_ENV!r}")
    if metric in PER_ENV_METRICS and env in (AGGREGATE_ENV, ALL_ENVS):
        raise UserError(f"{where}: {metric} is per env: give an env id, not {env!r}")
    if (metric == GAIN_METRIC) != (statistic == "range") or (metric == GAIN_METRIC) != (
        env == ALL_ENVS
    ):
        raise UserError(
            f"{where}: {GAIN_METRIC} is published as a range over all envs (env {ALL_ENVS!r}, "
            "statistic range), and only it"
        )
    if statistic == "range":
        if math.isnan(row["ci_low"]) or math.isnan(row["ci_high"]):
            raise UserError(f"{where}: a range needs ci_low and ci_high")
    elif math.isnan(row["value"]):
        raise UserError(f"{where}: an {statistic} needs a value")
    low, high = row["ci_low"], row["ci_high"]
    if math.isnan(low) != math.isnan(high):
        raise UserError(f"{where}: give both ci_low and ci_high, or neither")
    if not math.isnan(low) and low > high:
        raise UserError(f"{where}: ci_low {low} is above ci_high {high}")


def load_published(path: Path) -> Published:
    """Read and check a metadata file and its CSV; every problem is a :class:`UserError`."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UserError(f"published numbers {path}: cannot read it ({exc})") from None
    try:
        meta = PublishedMeta.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise UserError(f"published numbers {path}: {field}: {first['msg']}") from None
    bad_norm = set(meta.normalizers) - {"norm_ret", "norm_regret"}
    if bad_norm:
        raise UserError(
            f"published numbers {path}: normalizers: {sorted(bad_norm)} unknown; "
            "only norm_ret and norm_regret are divided by an algorithm"
        )
    if meta.values is None:
        if not meta.unavailable:
            raise UserError(
                f"published numbers {path}: give 'values' (a CSV) or say in 'unavailable' why "
                "the paper's numbers are not stored"
            )
        return Published(path, meta, pd.DataFrame(columns=list(PUBLISHED_COLUMNS)))
    csv_path = path.parent / meta.values
    try:
        table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError) as exc:
        raise UserError(f"published values {csv_path}: cannot read it ({exc})") from None
    if tuple(table.columns) != PUBLISHED_COLUMNS:
        raise UserError(
            f"published values {csv_path}: the columns must be {', '.join(PUBLISHED_COLUMNS)} "
            f"(found {', '.join(table.columns)})"
        )
    rows: list[dict[str, Any]] = []
    seen: dict[tuple[str, str, str], int] = {}
    for i, record in enumerate(table.to_dict("records"), start=2):  # line 1 is the header
        where = f"published values {csv_path}, line {i}"
        row: dict[str, Any] = {k: str(record[k]).strip() for k in PUBLISHED_COLUMNS}
        for column in ("value", "ci_low", "ci_high", "spread"):
            row[column] = _number(row[column], where, column)
        _check_row(row, where, meta.sources)
        key = (row["algo"], row["env"], row["metric"])
        if key in seen:
            raise UserError(f"{where}: {key} is already given on line {seen[key]}")
        seen[key] = i
        rows.append(row)
    return Published(path, meta, pd.DataFrame(rows, columns=list(PUBLISHED_COLUMNS)))


# ---------------------------------------------------------------------------------------------
# The comparison
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Estimate:
    value: float = math.nan
    low: float = math.nan
    high: float = math.nan
    n: int = 0
    status: Status = "compared"
    note: str = ""


def _absent(algo: str, env: str, scores: pd.DataFrame, registered: set[str]) -> _Estimate | None:
    """``not run`` when the algo or env is not part of these results, else None."""
    if algo not in set(scores["algo"]):
        why = "not in this experiment" if algo in registered else "not implemented in safebench"
        return _Estimate(status="not run", note=f"{algo} is {why}")
    if env not in (AGGREGATE_ENV, ALL_ENVS) and env not in set(scores["env"]):
        return _Estimate(status="not run", note=f"{env} is not in this experiment")
    return None


def _per_env(
    row: pd.Series, tables: dict[str, pd.DataFrame], used: pd.DataFrame, config: ReportConfig
) -> _Estimate:
    algo, env, metric, statistic = row["algo"], row["env"], row["metric"], row["statistic"]
    cell = used.loc[(used["algo"] == algo) & (used["env"] == env)]
    if cell.empty:
        return _Estimate(status="no score", note="no done run with a final score")
    if statistic == "iqm":
        table = tables["per_env"]
        match = table.loc[(table["algo"] == algo) & (table["env"] == env)].iloc[0]
        return _Estimate(
            float(match[metric]),
            float(match[f"{metric}_low"]),
            float(match[f"{metric}_high"]),
            int(match["n_runs"]),
        )
    if statistic == "mean":
        # A one-env aggregate: the mean over the cell's runs with a bootstrap over its runs.
        stats = analysis.aggregate(
            cell,
            metric,
            reps=config.table_reps,
            confidence=config.confidence,
            seed=config.seed,
            statistics=["mean"],
        ).iloc[0]
        return _Estimate(
            float(stats["mean"]), float(stats["mean_low"]), float(stats["mean_high"]), len(cell)
        )
    return _Estimate(status="not comparable", note=f"a per-env {statistic} is not estimated")


def _aggregate(
    row: pd.Series, tables: dict[str, pd.DataFrame], published: Published, config: ReportConfig
) -> _Estimate:
    algo, metric, statistic = row["algo"], row["metric"], row["statistic"]
    normalizer = published.meta.normalizers.get(metric)
    divides = {
        "norm_ret": config.reference,
        "norm_regret": config.regret_reference or config.reference,
    }.get(metric)
    if normalizer is not None and divides != normalizer:
        ours = f"÷ {divides}" if divides else "min-max scaled"
        return _Estimate(
            status="not comparable",
            note=f"published {metric} is ÷ {normalizer}; this report's is {ours}",
        )
    table = tables.get("aggregate")
    column = f"{AGGREGATE_METRICS[metric]}_{statistic}"
    if table is None or column not in table.columns:
        return _Estimate(status="no score", note=f"the report has no aggregate {column}")
    match = table.loc[table["algo"] == algo]
    if match.empty or pd.isna(match.iloc[0][column]):
        return _Estimate(
            status="no score", note=f"{algo} is not in the aggregate (see the report's notes)"
        )
    r = match.iloc[0]
    n_envs = r.get(f"{AGGREGATE_METRICS[metric]}_n_envs")
    note = f"over {int(n_envs)} envs" if n_envs is not None and not pd.isna(n_envs) else ""
    runs = r.get(f"{AGGREGATE_METRICS[metric]}_n_runs")
    n = int(runs * n_envs) if runs is not None and not pd.isna(runs) and note else 0
    return _Estimate(
        float(r[column]), float(r[f"{column}_low"]), float(r[f"{column}_high"]), n, note=note
    )


def _gain(row: pd.Series, tables: dict[str, pd.DataFrame], config: ReportConfig) -> _Estimate:
    if row["algo"] not in config.ours:
        ours = f"is for {', '.join(config.ours)}" if config.ours else "is not computed (no 'ours')"
        return _Estimate(status="not comparable", note=f"the report's gain table {ours}")
    table = tables.get("gain")
    gains = pd.Series(dtype=float) if table is None else table["gain_pct"].dropna()
    if gains.empty:
        return _Estimate(
            status="no score",
            note="no env where a gain is defined (see the report's gain table, 'why no gain')",
        )
    return _Estimate(
        math.nan, float(gains.min()), float(gains.max()), len(gains), note=f"over {len(gains)} envs"
    )


def compare(
    published: Published,
    tables: dict[str, pd.DataFrame],
    config: ReportConfig,
    registered: set[str] | None = None,
) -> pd.DataFrame:
    """One row per published number: safebench's estimate of it, the difference, the flags.

    ``tables`` are the report's (:attr:`safebench.report.Report.tables`: ``runs`` and, when
    there are scored runs, ``per_env``, ``aggregate`` and ``gain``); ``config`` is the
    configuration the report was built with. ``registered`` (default: the registry's names)
    tells "not in this experiment" from "not implemented in safebench".

    ``published_in_ci``: the published value lies in safebench's interval (for a range: NA).
    ``intervals_overlap``: the published interval (or range) and safebench's overlap (NA when
    the source publishes no interval). ``difference``: safebench − published (NaN for a
    range). ``status``: ``compared``, ``not run`` (algo or env absent from the results),
    ``no score`` (present, but no done run with a final score) or ``not comparable`` (the
    paper normalises by an algorithm this report does not use, etc.), explained in ``note``.
    """
    if registered is None:
        from safebench.registry import available

        registered = set(available())
    scores = tables["runs"]
    used = scores.loc[
        (scores["status"] == analysis.DONE) & scores["ret"].notna() & scores["cost"].notna()
    ]
    rows: list[dict[str, Any]] = []
    for _, row in published.values.iterrows():
        metric = row["metric"]
        estimate = _absent(row["algo"], row["env"], scores, registered)
        if estimate is None:
            if metric in PER_ENV_METRICS:
                estimate = _per_env(row, tables, used, config)
            elif metric in AGGREGATE_METRICS:
                estimate = _aggregate(row, tables, published, config)
            else:
                estimate = _gain(row, tables, config)
        value, low, high = float(row["value"]), float(row["ci_low"]), float(row["ci_high"])
        compared = estimate.status == "compared"
        in_ci: bool | None = None
        overlap: bool | None = None
        if compared and not math.isnan(value):
            in_ci = bool(estimate.low <= value <= estimate.high)
        if compared and not math.isnan(low):
            overlap = bool(low <= estimate.high and estimate.low <= high)
        note = "; ".join(n for n in (estimate.note, row["note"]) if n)
        rows.append(
            {
                "algo": row["algo"],
                "env": row["env"],
                "metric": metric,
                "statistic": row["statistic"],
                "published": value,
                "published_low": low,
                "published_high": high,
                "spread": float(row["spread"]),
                "safebench": estimate.value,
                "safebench_low": estimate.low,
                "safebench_high": estimate.high,
                "n": estimate.n,
                "difference": estimate.value - value if compared else math.nan,
                "published_in_ci": in_ci,
                "intervals_overlap": overlap,
                "status": estimate.status,
                "note": note,
                "source": row["source"],
            }
        )
    out = pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))
    for column in ("published_in_ci", "intervals_overlap"):
        out[column] = out[column].astype("boolean")
    return out
