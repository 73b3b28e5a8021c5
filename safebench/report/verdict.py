"""The verdict the page opens with: per task and across tasks, which methods respect the
cost limit, how they rank by return, where the intervals leave no single winner; for a
cost-limit sweep, whether that ranking holds across the limits."""

from __future__ import annotations

import itertools

import pandas as pd

from safebench import analysis
from safebench.report.aggregate import AggregateStats
from safebench.report.format import ci, num
from safebench.report.inputs import ALL_TASKS, ReportInputs
from safebench.report.model import Paragraph, Section, Table

__all__ = ["ranking_across_limits", "verdict_section"]

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


def _above(rows: pd.DataFrame) -> set[tuple[str, str]]:
    """``(a, b)`` where the verdict of one task puts method a above method b: a admissible and
    b not, or both admissible and a's ``rank`` better (fewer return intervals wholly above
    it). Two inadmissible methods, or a tie (a shared rank), are not ordered."""
    ok = {
        str(a): int(k) for a, k, good in zip(rows["algo"], rows["rank"], rows["admissible"]) if good
    }
    algos = [str(a) for a in rows["algo"]]
    return {
        (a, b)
        for a, b in itertools.permutations(algos, 2)
        if a in ok and (b not in ok or ok[a] < ok[b])
    }


def ranking_across_limits(data: pd.DataFrame, tasks: tuple[str, ...]) -> tuple[bool, str]:
    """Whether the verdict's ranking holds across the limits of a sweep, and the line that says
    so. ``data``: :func:`safebench.analysis.verdict`; ``tasks``: one env's tasks, by limit.

    The ranking *changes* when some limit puts a method above another and some other limit
    puts it below (a reversal; "above" as the verdict decides it: admissible over
    inadmissible, or a better interval rank among admissible ones). Ties and methods that
    are inadmissible together order nothing, so they never make a change by themselves.
    """
    limits = {t: data.loc[data["scope"] == t, "cost_limit"].iloc[0] for t in tasks}
    order = {t: _above(data.loc[data["scope"] == t]) for t in tasks}
    swaps = []
    for t1, t2 in itertools.combinations(tasks, 2):
        swaps += [(a, b, t1, t2) for a, b in sorted(order[t1]) if (b, a) in order[t2]]
        swaps += [(b, a, t2, t1) for a, b in sorted(order[t2]) if (b, a) in order[t1]]
    best = "; ".join(
        f"d = {float(limits[t]):g}: {_best_cell(data.loc[data['scope'] == t])}" for t in tasks
    )
    values = ", ".join(f"{float(limits[t]):g}" for t in tasks)
    if not swaps:
        return True, (
            f"the ranking holds across d = {values}: no method ranks above another at one "
            f"limit and below it at another (best: {best})"
        )
    seen: set[frozenset[str]] = set()
    changes = []
    for a, b, t1, t2 in swaps:
        if frozenset((a, b)) in seen:
            continue
        seen.add(frozenset((a, b)))
        changes.append(
            f"{a} above {b} at d = {float(limits[t1]):g}, below it at d = {float(limits[t2]):g}"
        )
    return False, f"the ranking changes across d = {values}: {'; '.join(changes)} (best: {best})"


def verdict_section(inputs: ReportInputs, per_env: pd.DataFrame, stats: AggregateStats) -> Section:
    """One row per env and one across envs (when there are several and a return aggregate)."""
    c = inputs.config
    across = stats.tables.get("ret") if len(inputs.envs) > 1 else None
    data = analysis.verdict(per_env, across)
    rows = []
    # a sweep's limits are tasks of their own: across them all, not only across envs
    across_name = ALL_TASKS if inputs.sweeps else ALL_ENVS
    for scope, group in data.groupby("scope", sort=False):
        overall = scope == ALL_ENVS
        rows.append(
            {
                "task": f"{across_name} ({stats.method} IQM)" if overall else scope,
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
    summary = [f"{r['task']!s}: best {r['best']!s}" for r in rows]
    blocks: list[Table | Paragraph] = [Table("verdict", data, display, caption)]
    for env_id, tasks in inputs.sweeps.items():
        present = tuple(t for t in tasks if (data["scope"] == t).any())
        if len(present) < 2:
            continue
        _, line = ranking_across_limits(data, present)
        summary.append(f"{env_id}: {line}")
        blocks.append(Paragraph(f"**Across cost limits** on {env_id}: {line}."))
    return Section("Verdict", tuple(blocks), summary=tuple(summary))
