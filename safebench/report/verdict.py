"""The verdict the page opens with: per task and across tasks, which methods respect the
cost limit, how they rank by return, where the intervals leave no single winner."""

from __future__ import annotations

import pandas as pd

from safebench import analysis
from safebench.report.aggregate import AggregateStats
from safebench.report.format import ci, num
from safebench.report.inputs import ReportInputs
from safebench.report.model import Section, Table

__all__ = ["verdict_section"]

ALL_ENVS = "all envs"


def _ranked_cell(rows: pd.DataFrame) -> str:
    ok = rows.loc[rows["admissible"]]
    if ok.empty:
        return "–"
    return "; ".join(
        f"{int(r.rank)}{'=' if r.tied else ''} {r.algo} {ci(r.ret, r.ret_low, r.ret_high)}"
        + ("" if r.cost_ci_below_limit else " †")
        for r in ok.itertuples()
    )


def _best_cell(rows: pd.DataFrame) -> str:
    best = list(rows.loc[rows["best"], "algo"])
    if not best:
        return "none admissible"
    return best[0] if len(best) == 1 else "tie: " + ", ".join(best)


def _inadmissible_cell(rows: pd.DataFrame, across: bool) -> str:
    bad = rows.loc[~rows["admissible"]]
    if bad.empty:
        return "–"
    if across:
        return "; ".join(
            f"{r.algo} (over d on {int(r.n_inadmissible_envs)} of {int(r.n_envs)} envs)"
            for r in bad.itertuples()
        )
    return "; ".join(
        f"{r.algo}: cost {ci(r.cost, r.cost_low, r.cost_high)}" for r in bad.itertuples()
    )


def verdict_section(inputs: ReportInputs, per_env: pd.DataFrame, stats: AggregateStats) -> Section:
    """One row per env and one across envs (when there are several and a return aggregate)."""
    c = inputs.config
    across = stats.tables.get("ret") if len(inputs.envs) > 1 else None
    data = analysis.verdict(per_env, across)
    rows = []
    for scope, group in data.groupby("scope", sort=False):
        overall = scope == ALL_ENVS
        rows.append(
            {
                "task": f"{ALL_ENVS} ({stats.method} IQM)" if overall else scope,
                "d": "–" if overall else num(group["cost_limit"].iloc[0]),
                "best": _best_cell(group),
                f"admissible, ranked by IQM return [{c.confidence:.0%} CI]": _ranked_cell(group),
                "not admissible": _inadmissible_cell(group, overall),
            }
        )
    display = pd.DataFrame(rows)
    caption = (
        "**Admissible** = IQM final cost < d on that env (the per-env table's ✓; "
        "C-TRPO's bold); across envs = admissible on every env. Admissible methods are "
        f"ranked by IQM final return (across envs: the aggregate's {stats.method}-normalised "
        f"IQM) with {c.confidence:.0%} bootstrap CIs; the **CI decides**: rank = 1 + the "
        "number of admissible methods whose whole interval lies above, so methods with "
        "overlapping intervals share a rank (`2=`) and several at rank 1 are a tie, not a "
        "win. † = the cost CI reaches d: admissible by the IQM, not with confidence. Not "
        "admissible: IQM cost [CI] (across envs: on how many envs it is over d)."
    )
    summary = tuple(f"{r['task']!s}: best {r['best']!s}" for r in rows)
    return Section("Verdict", (Table("verdict", data, display, caption),), summary=summary)
