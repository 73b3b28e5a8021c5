"""The page's head: title, the protocol used, which runs were found and which were left out."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from safebench import __version__, analysis, registry
from safebench.backends import OMNISAFE_PREFIX, is_omnisafe
from safebench.errors import UserError
from safebench.report.format import num, short_env_ids
from safebench.report.inputs import NO_SCORE, SUPERSEDED, ReportInputs
from safebench.report.model import Items, Paragraph, Section, Table
from safebench.results.store import RunDir

__all__ = ["header", "no_results", "protocol"]

_FINAL_TEXT = {
    "last": "training-time EpRet / EpCost of the last logged epoch (C-TRPO protocol)",
    "last-k": "mean training-time EpRet / EpCost over the last {k} logged epochs",
    "eval": "evaluation return / cost of the last evaluated epoch",
}


def header(inputs: ReportInputs) -> Section:
    """The page title and what the report folder holds."""
    others = [f.upper() for f in inputs.config.formats if f != "png"]
    described = (Paragraph(inputs.description.strip()),) if inputs.description.strip() else ()
    return Section(
        f"safebench report: {inputs.title}",
        (
            *described,
            Paragraph(
                f"Generated {inputs.generated} by safebench {__version__}. "
                "Figures: `report.html` embeds them (base64 PNG, self-contained); `report.md` "
                "links `figures/*.png`"
                + (f" ({', '.join(others)} versions next to them)" if others else "")
                + ". Tables: `tables/*.csv` (full precision), `.md`, `.tex`; `tables/runs.csv` "
                "holds every run's final scores and status."
            ),
        ),
        level=1,
    )


def _limit_text(scores: pd.DataFrame, sweeps: Mapping[str, tuple[str, ...]]) -> str:
    limits = scores.groupby("env")["cost_limit"].unique()
    values = sorted({float(v) for per_env in limits for v in per_env})
    if len(values) == 1:
        return f"cost limit d = {num(values[0])} on every env"
    swept = {task: env_id for env_id, tasks in sweeps.items() for task in tasks}
    texts: dict[str, list[str]] = {}  # an env's limits, a sweep's on one line
    for env, env_values in limits.items():
        name = swept.get(str(env), str(env))
        texts.setdefault(name, []).extend(num(v) for v in env_values)
    per_env_text = "; ".join(
        f"{env}: {', '.join(v)}"
        + (" (a sweep: each limit is a task of its own)" if env in sweeps else "")
        for env, v in texts.items()
    )
    return f"cost limits d per env: {per_env_text}"


def protocol(inputs: ReportInputs) -> Section:
    """Final-score mode, cost limits, reference, statistics, repetitions and run counts;
    then every run's scores (``runs.csv``), runs per cell and the runs left out."""
    c, scores, excluded = inputs.config, inputs.scores, inputs.excluded
    final = _FINAL_TEXT[c.final].format(k=c.k)
    n_done = int((scores["status"] == analysis.DONE).sum())
    by_status = excluded["status"].value_counts()
    excluded_text = (
        ", ".join(f"{n} {s}" for s, n in sorted(by_status.items())) if len(by_status) else "none"
    )
    sources = ", ".join(f"{n} {k}" for k, n in sorted(inputs.sources.items()))
    reference = (
        f"`{c.reference}` (return ÷ its mean final return per env; cost as Ĵc/d − 1; "
        f"regret ÷ IQM regret of `{c.regret_reference or c.reference}`)"
        if c.reference
        else "none"
    )
    items = Items(
        (
            f"**Final score** (`--final {c.final}`"
            + (f", k = {c.k}" if c.final == "last-k" else "")
            + f"): {final}. Cost regret = Σ over logged epochs of max(0, EpCost − d).",
            f"**Cost limit**: {_limit_text(scores, inputs.sweeps)}. Feasible = final cost ≤ d; "
            "admissible (per-env table) = IQM final cost < d.",
            _actions_text(inputs.runs),
            _implementations_text(inputs.runs),
            f"**Reference algorithm**: {reference}.",
            "**Methods under test** (`ours`): "
            + (", ".join(f"`{o}`" for o in c.ours) if c.ours else "none named")
            + " (the experiment file's `ours`, or `report --ours`).",
            f"**Statistics**: IQM = 25 % trimmed mean over runs; {c.confidence:.0%} "
            "percentile stratified-bootstrap intervals from rliable (runs resampled "
            "within each env); rates with Wilson score intervals.",
            f"**Bootstrap repetitions**: aggregate table {c.reps:,}; per-env table "
            f"{c.table_reps:,}; curve bands (pointwise) and performance profiles "
            f"{c.curve_reps:,}; probability of improvement "
            + (f"{c.poi_reps:,}" if c.poi else "not computed (`--poi`)")
            + f"; bootstrap seed {c.seed}.",
            f"**Runs**: {len(scores)} found ({sources}); {n_done} done and used; "
            f"excluded: {excluded_text}. Non-done runs (running, queued, failed) and "
            f"done runs without a final score (`{NO_SCORE}`) enter no statistic.",
        )
    )
    blocks: list[Any] = [items, Table("runs", scores), _runs_matrix(inputs)]
    if not excluded.empty:
        blocks.append(_excluded_table(excluded))
    return Section("Protocol", tuple(blocks))


def _run_actions(run_dir: str, origin: str, algo_name: str) -> str:
    """What the env received in one run, from its ``spec.json`` (training and evaluation)."""
    if origin != "safebench":
        return "the importing source's own protocol"
    if is_omnisafe(algo_name):
        return "policy output in [-1, 1] rescaled by OmniSafe's own `ActionScale`, unclipped"
    try:
        config = RunDir(Path(run_dir)).read_spec().get("config", {})
    except (OSError, ValueError):
        return "unknown (unreadable spec.json)"
    if config.get("action_scale"):
        text = "policy output in [-1, 1] rescaled affinely to the env's box as OmniSafe's "
        text += "`ActionScale` (the identity on [-1, 1] boxes)"
    else:  # switched off, an off-policy actor that acts in the box, or an older run
        text = "the policy's sample as is"
    return text + (", clipped to the box" if config.get("clip_actions") else ", unclipped")


def _actions_text(runs: pd.DataFrame) -> str:
    """The action protocol of the report's runs, grouped by algorithm (from their specs)."""
    groups: dict[str, set[str]] = {}
    for r in runs.drop_duplicates("run_dir").itertuples():
        text = _run_actions(str(r.run_dir), str(r.origin), str(r.algo_name))
        groups.setdefault(text, set()).add(str(r.algo))
    parts = [f"{text} ({', '.join(sorted(algos))})" for text, algos in sorted(groups.items())]
    return (
        "**Actions** (what the env receives, in training and evaluation): " + "; ".join(parts) + "."
    )


def _run_implementation(run_dir: str, origin: str, algo_name: str) -> str:
    """Which implementation a run trained: its algorithm, variant and update protocol."""
    if origin != "safebench":
        return "imported (the source's own implementation)"
    if is_omnisafe(algo_name):
        return f"OmniSafe 0.5.0's `{algo_name.removeprefix(OMNISAFE_PREFIX)}`"
    try:
        stored = RunDir(Path(run_dir)).read_spec().get("config", {})
        cfg = registry.resolve_config(algo_name, stored)
    except (OSError, ValueError, UserError):
        return f"`{algo_name}` (config unreadable)"
    parts = [f"`{algo_name}`"]
    if (variant := getattr(cfg, "variant", None)) is not None:
        parts.append(f"variant `{variant}`")
    # The update protocol, where the method states it (not where it inherits the old default)
    if _states(cfg, "cost_estimate"):
        official = getattr(cfg, "cost_estimate") == "official"  # noqa: B009 (checked above)
        parts.append("official Ĵc" if official else "window Ĵc")
    if _states(cfg, "joint_grad_clip"):
        joint = getattr(cfg, "joint_grad_clip")  # noqa: B009 (checked above)
        parts.append("one gradient clip over actor and critics" if joint else "per-network clips")
    if _states(cfg, "obs_normalizer"):
        parts.append(f"{getattr(cfg, 'obs_normalizer')} obs normaliser")  # noqa: B009
    if _states(cfg, "truncation_bootstrap"):
        bootstrap = getattr(cfg, "truncation_bootstrap")  # noqa: B009 (checked above)
        parts.append(f"time-outs bootstrap from the {bootstrap} final obs")
    return ", ".join(parts)


def _states(cfg: Any, key: str) -> bool:
    """Whether the config sets ``key`` itself: declared by the method, or changed from the
    default of a field that was added later (whose default is the older behaviour)."""
    info = type(cfg).model_fields.get(key)
    if info is None:
        return False
    extra = info.json_schema_extra
    added = isinstance(extra, dict) and bool(extra.get("added"))
    return not added or getattr(cfg, key) != info.default


def _implementations_text(runs: pd.DataFrame) -> str:
    """What each label trained (variants: the official code's, OmniSafe's, a corrected one)."""
    groups: dict[str, set[str]] = {}
    for r in runs.drop_duplicates("run_dir").itertuples():
        text = _run_implementation(str(r.run_dir), str(r.origin), str(r.algo_name))
        groups.setdefault(str(r.algo), set()).add(text)
    parts = [f"{algo}: {'; '.join(sorted(texts))}" for algo, texts in sorted(groups.items())]
    return "**Implementations**: " + " · ".join(parts) + "."


def _runs_matrix(inputs: ReportInputs) -> Table:
    data = inputs.scores.groupby(["algo", "env", "status"]).size().rename("n_runs").reset_index()
    cells: dict[tuple[str, str], dict[str, int]] = {}
    for r in data.itertuples():
        cells.setdefault((str(r.algo), str(r.env)), {})[str(r.status)] = int(r.n_runs)

    def text(algo: str, env: str) -> str:
        cell = cells.get((algo, env), {})
        others = [f"+{n} {s}" for s, n in sorted(cell.items()) if s != analysis.DONE]
        return str(cell.get(analysis.DONE, 0)) + (f" ({', '.join(others)})" if others else "")

    caption = "Runs per algorithm × env: done runs used, (+ excluded runs by status)."
    # the longer axis runs down the page, so that a wide grid still fits its width
    if len(inputs.envs) > len(inputs.algos):
        rows = [{"env": env, **{a: text(a, env) for a in inputs.algos}} for env in inputs.envs]
        display = pd.DataFrame(rows, columns=["env", *inputs.algos])
    else:
        short = short_env_ids(inputs.envs)
        rows = [{"algo": a, **{short[e]: text(a, e) for e in inputs.envs}} for a in inputs.algos]
        display = pd.DataFrame(rows, columns=["algo", *short.values()])
        if any(short[e] != e for e in inputs.envs):
            caption += " Env ids without `Safety`, `safebench/` and `-vN`."
    return Table("runs_matrix", data, display, caption)


def _excluded_table(excluded: pd.DataFrame) -> Table:
    ex = excluded.sort_values(["algo", "env", "seed", "run_id"])
    data = ex[["algo", "env", "seed", "status", "run_id", "epochs", "steps", "ret", "cost"]]
    display = pd.DataFrame(
        {
            "algo": ex["algo"],
            "env": ex["env"],
            "seed": ex["seed"].astype(int),
            "status": ex["status"],
            "epochs logged": ex["epochs"].astype(int),
            "env steps": [num(s) for s in ex["steps"]],
            "run": [f"`{r[:8]}`" for r in ex["run_id"]],
        }
    )
    return Table(
        "excluded",
        data.reset_index(drop=True),
        display,
        "Runs left out of every statistic (partial, failed, without a final score, or "
        f"`{SUPERSEDED}`: a newer run of the same algo, env and seed is in the folder).",
    )


def no_results() -> Section:
    """Shown instead of every statistic when no run is done with a final score."""
    return Section(
        "No results",
        (
            Paragraph(
                "No run is done with a final score yet, so there is nothing to aggregate; "
                "the runs found are listed above with their status."
            ),
        ),
    )
