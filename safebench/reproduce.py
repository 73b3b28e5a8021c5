"""``safebench reproduce NAME``: a paper's experiment end to end — train, report, compare.

``NAME`` is an experiment of the ``experiments/`` folder — ``ctrpo-table`` finds
``experiments/ctrpo_table.yaml`` (``-`` and ``_`` are interchangeable, and an experiment's
``name:`` works too) — or the path of an experiment YAML. :func:`reproduce` trains the grid as
``safebench run`` does (runs already done are skipped, partial ones resume), writes the report
as ``safebench report`` does, and, where the paper's numbers are stored next to the experiment
(``experiments/published/<stem>.yaml`` + its CSV), compares them with safebench's: for every
published (algo, env, metric) the published value and interval against safebench's estimate of
the same statistic with its bootstrap confidence interval, and whether the published value lies
inside that interval. The comparison is written beside the report
(``published_comparison.md`` / ``.csv``) and printed.

The metadata file (``published/<stem>.yaml``) names the experiment, the CSV with the values,
the report settings under which the numbers are comparable (final-score mode, reference
algorithms, bootstrap repetitions), which algorithm divides each normalised aggregate in the
paper, and every source (paper, repository, commit, file, and how the numbers were read off
it). An experiment whose paper publishes no usable table says so in ``unavailable`` instead
of naming a CSV.

The CSV has one row per published number, with the columns of :data:`PUBLISHED_COLUMNS`:

* ``algo``: the safebench label where safebench has the algorithm, else the paper's name;
* ``env``: an env id; ``aggregate`` for a normalised cross-env aggregate; ``*`` for a
  statement over all envs;
* ``metric``: ``ret``, ``cost``, ``regret`` (raw final return, final cost, cost regret per env);
  ``norm_ret``, ``norm_cost``, ``norm_regret`` (aggregates, normalised as the report does:
  return ÷ a reference algorithm's mean return, cost as Ĵc/d − 1, regret ÷ a reference's IQM
  regret); ``gain_pct`` (return gain over the best cost-respecting baseline, in %);
* ``statistic``: ``iqm`` or ``mean`` (``value`` is the point estimate, ``ci_low``/``ci_high``
  its interval when the source publishes one) or ``range`` (``ci_low``..``ci_high`` is a range
  over envs, ``value`` empty);
* ``spread``: a published "±" whose meaning the source leaves undefined — shown, never used
  as an interval;
* ``source``: a key of the metadata file's ``sources``; ``note``: free text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from safebench import analysis
from safebench.errors import UserError
from safebench.launch import Backend, LaunchResult, launch
from safebench.report import Report, ReportConfig, build_report
from safebench.report.format import flag, md_table, num, with_ci
from safebench.spec import Experiment, load_experiment
from safebench.store import iter_run_dirs

__all__ = [
    "AGGREGATE_ENV",
    "ALL_ENVS",
    "COMPARISON_COLUMNS",
    "PUBLISHED_COLUMNS",
    "SMOKE_CURVE_REPS",
    "SMOKE_REPS",
    "Published",
    "ReproduceResult",
    "available_experiments",
    "compare",
    "comparison_markdown",
    "find_experiment",
    "load_published",
    "published_path",
    "reproduce",
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
# Finding experiments
# ---------------------------------------------------------------------------------------------


def _experiment_dirs() -> list[Path]:
    """``./experiments`` first (a user's own copy wins), then the source checkout's."""
    here = Path.cwd() / "experiments"
    checkout = Path(__file__).resolve().parent.parent / "experiments"
    dirs = [here] if here.is_dir() else []
    if checkout.is_dir() and checkout.resolve() not in {d.resolve() for d in dirs}:
        dirs.append(checkout)
    return dirs


def _declared_name(path: Path) -> str | None:
    """The ``name:`` of an experiment file, without validating the rest of it."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    name = data.get("name") if isinstance(data, dict) else None
    return name if isinstance(name, str) else None


def available_experiments() -> dict[str, Path]:
    """Every experiment that ``reproduce`` can find by name: its ``name:`` -> its file."""
    found: dict[str, Path] = {}
    for folder in _experiment_dirs():
        for path in sorted(folder.glob("*.yaml")):
            name = _declared_name(path)
            if name is not None:
                found.setdefault(name, path)
    return found


def find_experiment(name: str) -> Path:
    """The experiment file for ``name``: a YAML path, a file stem or a ``name:``."""
    as_path = Path(name)
    if as_path.suffix in (".yaml", ".yml") or len(as_path.parts) > 1:
        if not as_path.is_file():
            raise UserError(f"reproduce: experiment file {name!r} does not exist")
        return as_path
    stems = dict.fromkeys([name, name.replace("-", "_"), name.replace("_", "-")])
    for folder in _experiment_dirs():
        for stem in stems:
            path = folder / f"{stem}.yaml"
            if path.is_file():
                return path
    known = available_experiments()
    if name in known:
        return known[name]
    where = ", ".join(str(d) for d in _experiment_dirs()) or "no experiments/ folder found"
    listed = ", ".join(sorted(known)) or "none"
    raise UserError(
        f"reproduce: no experiment named {name!r} (looked in {where}); known: {listed}; "
        "or give the path of an experiment YAML"
    )


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
            ours=self.ours,
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
    if row["algo"] != config.ours:
        ours = f"is for {config.ours}" if config.ours else "is not computed (no 'ours')"
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


# ---------------------------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------------------------


def _display(comparison: pd.DataFrame) -> pd.DataFrame:
    """The comparison as strings: one column per published / safebench estimate."""
    return pd.DataFrame(
        {
            "algo": comparison["algo"],
            "env": comparison["env"],
            "metric": [f"{m} ({s})" for m, s in zip(comparison["metric"], comparison["statistic"])],
            "published": [
                with_ci(*r)
                for r in comparison[
                    ["published", "published_low", "published_high", "spread"]
                ].to_numpy(float)
            ],
            "safebench": [
                with_ci(*r)
                for r in comparison[["safebench", "safebench_low", "safebench_high"]].to_numpy(
                    float
                )
            ],
            "runs": [str(n) if n else "–" for n in comparison["n"]],
            "difference": [num(d) for d in comparison["difference"]],
            "published in CI": [flag(v) for v in comparison["published_in_ci"]],
            "CIs overlap": [flag(v) for v in comparison["intervals_overlap"]],
            "status": [
                status + (f": {note}" if note else "")
                for status, note in zip(comparison["status"], comparison["note"])
            ],
        }
    )


def _smoke_text(experiment: Experiment, full_budget: int) -> str:
    return (
        f"SMOKE RUN: {experiment.budget:,} env steps per run instead of the protocol's "
        f"{full_budget:,}. It only shows that the pipeline runs end to end: at this budget "
        "any comparison with published numbers is far off by construction."
    )


def comparison_markdown(
    comparison: pd.DataFrame,
    published: Published,
    title: str,
    smoke_note: str = "",
    confidence: float = 0.95,
) -> str:
    """The comparison page: header, the smoke warning if any, counts, the table, sources."""
    compared = comparison.loc[comparison["status"] == "compared"]
    inside = int(compared["published_in_ci"].fillna(False).sum())
    with_value = int(compared["published_in_ci"].notna().sum())
    lines = [f"# {title}: safebench vs published numbers", ""]
    if smoke_note:
        lines += [f"**{smoke_note}**", ""]
    if published.meta.protocol:
        lines += [published.meta.protocol.strip(), ""]
    counts = comparison["status"].value_counts()
    lines += [
        f"{len(comparison)} published numbers: "
        + ", ".join(f"{n} {s}" for s, n in counts.items())
        + f". Published value inside safebench's {confidence:.0%} CI: {inside} of "
        f"{with_value} compared point estimates.",
        "",
        "safebench: the same statistic over safebench's runs, with its percentile bootstrap "
        "CI. Published: value [published CI] ± published spread (a '±' whose meaning the "
        "source does not define; never used as an interval).",
        "",
    ]
    lines.append(md_table(_display(comparison)))
    lines += ["", "## Sources", ""]
    for key, source in published.meta.sources.items():
        lines.append(f"- `{key}`: {published.citation(key)}")
        if source.extracted:
            lines.append(f"  ({source.extracted.strip()})")
    return "\n".join(lines) + "\n"


def _print_comparison(console: Console, comparison: pd.DataFrame, smoke_note: str) -> None:
    compared = comparison.loc[comparison["status"] == "compared"]
    if smoke_note:
        console.print(f"[bold yellow]{escape(smoke_note)}[/]", highlight=False)
    if compared.empty:
        console.print("no published number could be compared (see the status column)")
    else:
        display = _display(compared).drop(columns=["status"])
        table = Table(title="safebench vs published", title_justify="left")
        for column in display.columns:
            table.add_column(column, overflow="fold")
        for row in display.to_numpy():
            table.add_row(*(escape(str(v)) for v in row))
        console.print(table)
    counts = comparison["status"].value_counts()
    inside = int(compared["published_in_ci"].fillna(False).sum())
    with_value = int(compared["published_in_ci"].notna().sum())
    console.print(
        f"{len(comparison)} published numbers: "
        + ", ".join(f"{n} {s}" for s, n in counts.items())
        + f"; published value inside safebench's CI: {inside}/{with_value}",
        highlight=False,
    )


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------


@dataclass
class ReproduceResult:
    """What ``reproduce`` did: the experiment, the launch, the report and the comparison."""

    experiment_file: Path
    experiment: Experiment
    smoke: bool
    launch: LaunchResult | None
    report: Report | None = None
    published: Published | None = None
    comparison: pd.DataFrame | None = None
    files: tuple[Path, ...] = ()

    @property
    def interrupted(self) -> bool:
        return self.launch is not None and self.launch.interrupted

    @property
    def failed(self) -> int:
        """Runs that failed (in this launch, or earlier and not retried)."""
        if self.launch is None:
            return 0
        return len(self.launch.failed) + self.launch.skipped_failed


def reproduce(
    name: str,
    *,
    smoke: bool = False,
    train: bool = True,
    backend: Backend = "ray",
    address: str | None = None,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    output: str | None = None,
    reps: int | None = None,
    console: Console | None = None,
) -> ReproduceResult:
    """Train experiment ``name`` (unless ``train=False``), report it, compare with the paper.

    ``smoke`` shrinks the grid as ``safebench run --smoke`` does (results in
    ``<output>-smoke``) and lowers the bootstrap repetitions; every printed and written
    comparison then says it is a smoke run. ``reps`` sets every bootstrap repetition count.
    ``output`` overrides the experiment's results directory. The other arguments are those
    of :func:`safebench.launch.launch`. Stops after training when interrupted (the result
    says so); failed runs are reported as excluded, and counted in ``result.failed``.
    """
    console = console or Console()
    path = find_experiment(name)
    full = load_experiment(path)
    experiment = full.smoke() if smoke else full
    if output is not None:
        experiment = experiment.model_copy(update={"output": output})
    pub_file = published_path(path)
    published = load_published(pub_file) if pub_file.is_file() else None
    if published is not None and published.meta.experiment != full.name:
        raise UserError(
            f"published numbers {pub_file} are for experiment {published.meta.experiment!r}, "
            f"but {path} is {full.name!r}"
        )
    smoke_note = _smoke_text(experiment, full.budget) if smoke else ""
    result = ReproduceResult(path, experiment, smoke, None, published=published)
    if smoke_note:
        console.print(f"[bold yellow]{escape(smoke_note)}[/]", highlight=False)
    if train:
        result.launch = launch(
            experiment,
            backend=backend,
            address=address,
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            source_text=path.read_text(encoding="utf-8"),
            console=console,
        )
        done, total = result.launch.done, len(result.launch.specs)
        console.print(f"{done}/{total} runs done -> {result.launch.output}", highlight=False)
        if result.interrupted:
            return result
    elif not experiment.output_dir.is_dir() or not iter_run_dirs(experiment.output_dir):
        raise UserError(
            f"reproduce: {experiment.output_dir} holds no runs; drop --no-train to train them"
        )
    settings = published.meta.report if published is not None else ReportSettings()
    config = settings.config(smoke=smoke, reps=reps)
    with console.status("report") as spinner:
        report = build_report(
            experiment.output_dir,
            None,
            config,
            progress=lambda stage: spinner.update(f"report: {stage}"),
        )
    result.report = report
    for note in report.notes:
        console.print(f"[yellow]note:[/yellow] {escape(note)}", highlight=False)
    console.print(f"report: {report.out / 'report.md'} ({report.out / 'report.html'})")
    if published is None:
        console.print(
            f"no published numbers are stored for {full.name} ({pub_file} does not exist): "
            "nothing to compare"
        )
        return result
    if published.values.empty:
        console.print(
            f"no published numbers to compare for {full.name}: "
            f"{published.meta.unavailable.strip()}",
            highlight=False,
        )
        return result
    result.comparison = compare(published, report.tables, config)
    md = report.out / "published_comparison.md"
    csv = report.out / "published_comparison.csv"
    title = f"{experiment.name}" + (" (smoke run)" if smoke else "")
    page = comparison_markdown(result.comparison, published, title, smoke_note, config.confidence)
    md.write_text(page, encoding="utf-8")
    result.comparison.to_csv(csv, index=False)
    result.files = (md, csv)
    _print_comparison(console, result.comparison, smoke_note)
    console.print(f"comparison: {md} ({csv})")
    return result
