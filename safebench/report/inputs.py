"""What a report is computed from: its configuration and the runs, made once, never changed.

:class:`ReportConfig` holds every setting (each is stated in the report's protocol
section); :func:`load` reads a results directory through ``store.load_runs``;
:meth:`ReportInputs.make` reduces the runs to final scores and decides which runs the
statistics use. Every section function takes the same :class:`ReportInputs`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import pandas as pd

from safebench import analysis
from safebench.errors import UserError
from safebench.report import plots
from safebench.results.store import RunCheck, check_root, load_runs, read_experiment

__all__ = [
    "ALL_TASKS",
    "CURVE_AXES",
    "MARKER",
    "NO_SCORE",
    "SUPERSEDED",
    "CurveAxis",
    "ReportConfig",
    "ReportInputs",
    "load",
    "swept_limits",
    "task_name",
]

MARKER = ".safebench-report"
"""File that marks a directory as a safebench report (so it may be replaced)."""

NO_SCORE = "no-score"
"""Status given to done runs whose final return or cost is undefined (NaN)."""

SUPERSEDED = "superseded"
"""Status given to a run when a newer run of the same algo label, env and seed is present."""

_METRIC_COLUMNS = ("epoch", "steps", "ep_ret", "ep_cost", "ep_len", "eval_ret", "eval_cost")

ALL_TASKS = "all tasks (env × limit)"
"""The across-tasks rows' name when a cost-limit sweep makes several tasks of one env."""

CurveAxis = Literal["steps", "time", "both"]
CURVE_AXES: tuple[str, ...] = ("steps", "time", "both")
"""``--x``: learning curves over env steps, over wall-clock hours of training, or both."""


@dataclass(frozen=True)
class ReportConfig:
    """What the report computes; every field is stated in the report's protocol section.

    Bootstrap repetitions: rliable runs one Python-level iteration per repetition, so the
    cost is repetitions × rliable calls (aggregate: algos × 3 metrics; per-env table: one
    call per distinct run count; curves: 3 per env). The defaults keep a report of 1,000
    runs × 500 epochs under a minute on two cores (``scripts/bench/report.py``): 10,000
    for both tables (the Monte-Carlo standard error of a 95 % percentile endpoint is then
    about 0.7 % of the interval width for a roughly normal bootstrap distribution; 0.3 %
    at 50,000), 500 for the descriptive pointwise curve bands and performance-profile
    bands. ``reps=50_000`` is the C-TRPO protocol and costs five times the aggregate time.
    Probability of improvement is the slowest product (a Mann-Whitney statistic per env
    per repetition) and is computed only when asked.

    ``against`` (a results root), ``against_map`` (their label → ours) and ``at_steps``
    add the matched-budget comparison (``report.against``): its IQM intervals use
    ``table_reps``, its probabilities of improvement ``poi_reps``, its curves ``curve_reps``.

    ``x``: the x axis of the learning curves — env ``steps``, wall-clock hours of training
    (``time``: each run's ``wall_time`` column), or ``both`` (a figure of each per env).
    """

    final: analysis.FinalMode = "last"
    k: int = 10
    reference: str | None = None
    regret_reference: str | None = None
    ours: tuple[str, ...] = ()
    reps: int = 10_000
    table_reps: int = 10_000
    curve_reps: int = 500
    poi: bool = False
    poi_reps: int = 2_000
    confidence: float = 0.95
    seed: int = 0
    curve_points: int = 100
    dpi: int = 100
    formats: tuple[str, ...] = ("png", "svg")
    against: str | None = None
    against_map: tuple[tuple[str, str], ...] = ()
    at_steps: float | None = None
    x: CurveAxis = "steps"

    def __post_init__(self) -> None:
        if isinstance(self.ours, str):  # one label given as a string
            object.__setattr__(self, "ours", (self.ours,))
        elif self.ours is None:
            object.__setattr__(self, "ours", ())
        else:
            object.__setattr__(self, "ours", tuple(self.ours))

    def check(self) -> None:
        """Raise ``UserError`` on values that cannot produce a report."""
        if self.final not in ("last", "last-k", "eval"):
            raise UserError(f"--final must be last, last-k or eval (got {self.final!r})")
        if self.k < 1:
            raise UserError(f"-k must be >= 1 (got {self.k})")
        for name in ("reps", "table_reps", "curve_reps", "poi_reps"):
            if getattr(self, name) < 10:
                raise UserError(f"--{name.replace('_', '-')} must be >= 10")
        if not 0.5 <= self.confidence < 1.0:
            raise UserError(f"--confidence must be in [0.5, 1) (got {self.confidence})")
        if self.x not in CURVE_AXES:
            raise UserError(f"--x must be steps, time or both (got {self.x!r})")
        if self.curve_points < 2:
            raise UserError("curve points must be >= 2")
        if "png" not in self.formats:
            raise UserError("the report page embeds PNGs: formats must include 'png'")
        if self.against is None and (self.against_map or self.at_steps is not None):
            flag = "--map" if self.against_map else "--at-steps"
            raise UserError(
                f"report: {flag} needs --against OTHER_RESULTS (the root to compare with)"
            )
        if self.at_steps is not None and not self.at_steps > 0:
            raise UserError(f"report: --at-steps must be > 0 (got {self.at_steps})")

    def check_labels(self, algos: Sequence[str]) -> None:
        """Raise ``UserError`` when a named algorithm is not one of the runs' labels."""
        for name, option in (
            (self.reference, "--reference"),
            (self.regret_reference, "--regret-reference"),
            *((o, "--ours") for o in self.ours),
        ):
            if name is not None and name not in algos:
                raise UserError(
                    f"report: {option} {name!r} is not an algorithm label here; have {algos}"
                )
        if self.regret_reference and not self.reference:
            raise UserError("report: --regret-reference needs --reference")


def load(results_dir: Path) -> pd.DataFrame:
    """Every run under ``results_dir`` (``store.load_runs``), older re-runs marked superseded.

    A cost-limit sweep (the experiment gives an env several limits) makes each (env, limit)
    a task of its own: its runs' ``env`` becomes ``"<env> @ d=<limit>"`` (:func:`task_name`),
    so every statistic, table and figure keyed by env treats the limits apart; ``env_id``
    keeps the env's id.
    """
    if not results_dir.is_dir():
        raise UserError(f"report: {results_dir} is not a directory")
    checks = check_root(results_dir)
    df = load_runs(results_dir, checks)
    damaged = [c for c in checks if c.damaged]
    if df.empty and damaged:
        raise UserError(
            f"report: every run under {results_dir} is damaged ({damaged[0].run_dir}: "
            f"{damaged[0].files()}; ...); 'safebench status' lists them"
        )
    if df.empty:
        raise UserError(
            f"report: no runs under {results_dir} (no run directory with a spec.json); "
            "train some with 'safebench run' or bring some with 'safebench import'"
        )
    for column in _METRIC_COLUMNS:
        if column not in df.columns:
            # a store whose runs have not logged yet: no metric columns at all
            df[column] = math.nan
    experiment, _ = read_experiment(results_dir)  # a damaged record: build.py says so
    sweeps = swept_limits(experiment)
    df = _mark_superseded(df, sweeps)
    df.insert(list(df.columns).index("env") + 1, "env_id", df["env"])
    swept = df["env"].isin(list(sweeps))
    if swept.any():
        names = [task_name(e, d) for e, d in zip(df.loc[swept, "env"], df.loc[swept, "cost_limit"])]
        df.loc[swept, "env"] = names
    df.attrs["damaged"] = [damage_note(c, results_dir) for c in damaged]
    return df


def task_name(env: str, limit: float) -> str:
    """The report's name of an env at one limit of a sweep: ``SafetyX-v0 @ d=15``."""
    return f"{env} @ d={float(limit):g}"


def swept_limits(experiment: Mapping[str, Any]) -> dict[str, tuple[float, ...]]:
    """Env id -> the cost limits an experiment record (``store.read_experiment``) sweeps on it,
    for the envs it gives several limits (its own ``cost_limit`` list, else the experiment's)."""
    default = experiment.get("cost_limit")
    out: dict[str, tuple[float, ...]] = {}
    for entry in experiment.get("environments") or []:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("id"), str):
            continue
        limits = entry.get("cost_limit")
        limits = default if limits is None else limits
        if isinstance(limits, list) and len(limits) > 1:
            out[entry["id"]] = tuple(float(v) for v in limits)
    return out


def damage_note(check: RunCheck, root: Path) -> str:
    """The report's note on a damaged run it left out."""
    where = check.run_dir.relative_to(root) if check.run_dir.is_relative_to(root) else check.run_dir
    return (
        f"damaged run {where} left out of every statistic: {check.files()} "
        "(the next 'safebench run' sets those files aside and re-trains it)"
    )


def _mark_superseded(
    df: pd.DataFrame, sweeps: Mapping[str, tuple[float, ...]] | None = None
) -> pd.DataFrame:
    """Only the newest run (by its ``spec.json`` time) of each (algo, env, seed) counts.

    A results folder keeps the runs of earlier versions of an experiment (another budget or
    config, a safebench upgrade that changed a default): their run ids differ, their labels
    do not. Counting both would mix two protocols in one cell, so the older ones are listed
    as excluded with status ``superseded`` — nothing is deleted.

    ``sweeps`` (:func:`swept_limits`): on an env whose limit the experiment sweeps, each
    limit's runs are cells of their own (the newest of each (algo, env, limit, seed)
    counts), and a run at a limit the sweep no longer lists is superseded by the sweep's
    runs of its (algo, env, seed).
    """
    sweeps = sweeps or {}
    columns = ["run_id", "algo", "env", "seed", "cost_limit", "created_ns"]
    runs = df.drop_duplicates("run_id")[columns].sort_values(["created_ns", "run_id"])
    limits = [
        float(d) if float(d) in sweeps.get(str(e), ()) else math.nan
        for e, d in zip(runs["env"], runs["cost_limit"])
    ]
    runs = runs.assign(_limit=limits)  # NaN: not a limit of a sweep
    older = runs.duplicated(["algo", "env", "seed", "_limit"], keep="last")
    in_sweep = runs.loc[runs["_limit"].notna(), ["algo", "env", "seed"]]
    swept_cells = set(in_sweep.itertuples(index=False, name=None))
    left_behind = runs["_limit"].isna() & pd.Series(
        [
            cell in swept_cells
            for cell in runs[["algo", "env", "seed"]].itertuples(index=False, name=None)
        ],
        index=runs.index,
    )
    stale = set(runs.loc[older | left_behind, "run_id"])
    if not stale:
        return df
    out = df.copy()
    out.loc[out["run_id"].isin(stale), "status"] = SUPERSEDED
    return out


def _mark_no_score(scores: pd.DataFrame) -> pd.DataFrame:
    missing = (scores["status"] == analysis.DONE) & (scores["ret"].isna() | scores["cost"].isna())
    out = scores.copy()
    out.loc[missing, "status"] = NO_SCORE
    return out


@dataclass(frozen=True, eq=False)
class ReportInputs:
    """Everything a section may read. Sections never modify it (nor its frames).

    ``runs``: one row per (run, epoch) as ``store.load_runs`` gives it, with each run's
    status as in ``scores`` (so curves leave out exactly the runs the tables leave out).
    ``scores``: one row per run (``analysis.final_scores``), done runs without a final
    score marked ``no-score``; ``used`` / ``excluded``: its done and its other runs.
    """

    config: ReportConfig
    title: str
    generated: str
    runs: pd.DataFrame
    scores: pd.DataFrame
    used: pd.DataFrame
    excluded: pd.DataFrame
    algos: tuple[str, ...]
    envs: tuple[str, ...]
    sources: Mapping[str, int]
    algo_names: Mapping[str, str]
    colors: Mapping[str, Any]
    damaged: tuple[str, ...] = ()  # notes on the damaged runs left out (``load``)
    description: str = ""  # the experiment's description, under the title
    # env id -> its tasks (``task_name``), by limit, for each env whose cost limit is swept
    sweeps: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def make(
        cls,
        df: pd.DataFrame,
        config: ReportConfig,
        title: str,
        generated: str,
        *,
        description: str = "",
    ) -> ReportInputs:
        """``df`` from :func:`load`; ``generated`` is the time stamp the page states;
        ``title`` and ``description`` the experiment's (or the folder's name)."""
        scores = _mark_no_score(analysis.final_scores(df, config.final, config.k))
        status = dict(zip(scores["run_id"], scores["status"]))
        per_dir = df.drop_duplicates("run_dir")
        algos = tuple(sorted(scores["algo"].unique()))
        tasks = scores[["env"]].assign(
            env_id=scores["env"].map(dict(zip(df["env"], df.get("env_id", df["env"])))),
            cost_limit=scores["cost_limit"],
        )
        tasks = tasks.drop_duplicates("env").sort_values(["env_id", "cost_limit", "env"])
        sweeps = {
            str(env_id): tuple(str(t) for t in group["env"])
            for env_id, group in tasks.groupby("env_id", sort=True)
            if (group["env"] != env_id).any() and len(group) > 1
        }
        return cls(
            config=config,
            title=title,
            generated=generated,
            runs=df.assign(status=df["run_id"].map(status)),
            scores=scores,
            used=scores.loc[scores["status"] == analysis.DONE],
            excluded=scores.loc[scores["status"] != analysis.DONE],
            algos=algos,
            envs=tuple(sorted(scores["env"].unique())),
            sources=MappingProxyType(
                {str(k): int(n) for k, n in per_dir["origin"].value_counts().items()}
            ),
            algo_names=MappingProxyType(
                {str(k): str(v) for k, v in df.groupby("algo")["algo_name"].first().items()}
            ),
            colors=MappingProxyType(plots.algo_colors(algos)),
            damaged=tuple(df.attrs.get("damaged", ())),
            description=description,
            sweeps=MappingProxyType(sweeps),
        )
