"""Env by env: IQM return, cost and regret of each algorithm; feasibility and violations."""

from __future__ import annotations

import math

import pandas as pd

from safebench import analysis
from safebench.report.format import ci, pct_ci
from safebench.report.inputs import ReportInputs
from safebench.report.model import Section, Table

__all__ = ["feasibility_section", "per_env_section", "per_env_stats"]


def per_env_stats(inputs: ReportInputs) -> pd.DataFrame:
    """``analysis.per_env_table`` of the report's runs, sorted by env and algo."""
    c = inputs.config
    table = analysis.per_env_table(
        inputs.scores, reps=c.table_reps, seed=c.seed, confidence=c.confidence
    )
    return table.sort_values(["env", "algo"], ignore_index=True)


def per_env_section(inputs: ReportInputs, table: pd.DataFrame) -> Section:
    """``table`` from :func:`per_env_stats`, formatted; admissible costs in bold."""
    c = inputs.config
    cost_cells = []
    for r in table.itertuples():
        text = ci(r.cost, r.cost_low, r.cost_high)
        cost_cells.append(f"**{text}**" if r.admissible else text)
    display = pd.DataFrame(
        {
            "env": table["env"],
            "algo": table["algo"],
            "runs": [
                f"{n}" + (f" (+{x} excl.)" if x else "")
                for n, x in zip(table["n_runs"], table["n_excluded"])
            ],
            "IQM return": [ci(*r) for r in table[["ret", "ret_low", "ret_high"]].to_numpy()],
            "IQM cost": cost_cells,
            "IQM regret": [
                ci(*r) for r in table[["regret", "regret_low", "regret_high"]].to_numpy()
            ],
            "admissible": ["✓" if a else "" for a in table["admissible"]],
        }
    )
    caption = (
        f"Per env: IQM over runs of raw final return, final cost and cost regret, "
        f"{c.confidence:.0%} CIs ({c.table_reps:,} reps). **Bold** cost / ✓ = "
        "admissible (IQM cost < d)."
    )
    return Section("Per env", (Table("per_env", table, display, caption),))


def _rate_cells(table: pd.DataFrame, prefix: str) -> list[str]:
    columns = [f"{prefix}_{s}" for s in ("k", "n", "rate", "low", "high")]
    return [
        f"{int(k)}/{int(n)} = " + pct_ci(rate, lo, hi)
        for k, n, rate, lo, hi in table[columns].to_numpy()
    ]


def feasibility_section(inputs: ReportInputs) -> Section:
    """Feasible runs and violating epochs per cell, with Wilson intervals."""
    c = inputs.config
    table = analysis.feasibility_table(inputs.scores, confidence=c.confidence)
    table = table.sort_values(["env", "algo"], ignore_index=True)
    display = pd.DataFrame(
        {
            "env": table["env"],
            "algo": table["algo"],
            "runs": table["n_runs"],
            "feasible runs": _rate_cells(table, "feasible"),
            "violating epochs": _rate_cells(table, "violation"),
            "mean per-run violation rate": [
                f"{100 * v:.0f}%" if not math.isnan(v) else "–"
                for v in table["mean_run_violation_rate"]
            ],
        }
    )
    caption = (
        f"Feasible runs (final cost ≤ d) and epochs with EpCost > d, pooled over runs, "
        f"with {c.confidence:.0%} Wilson intervals (epochs of one run are correlated: "
        "read the epoch interval as descriptive)."
    )
    return Section(
        "Feasibility and constraint violations", (Table("feasibility", table, display, caption),)
    )
