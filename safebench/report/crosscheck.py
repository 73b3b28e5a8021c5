"""Training throughput (with the machine each run trained on), and each algorithm next to its
reference implementation (``omnisafe:NAME`` runs in the same results folder)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from safebench import analysis
from safebench.backends import OMNISAFE_PREFIX
from safebench.report.format import ci
from safebench.report.inputs import ReportInputs
from safebench.report.model import Paragraph, Section, Table, failed
from safebench.results.store import run_machine

__all__ = ["Throughput", "crosscheck_section", "throughput_section", "throughput_stats"]


@dataclass(frozen=True, eq=False)
class Throughput:
    """``analysis.throughput_table`` of the runs (sorted), or why there is none.

    ``timed``: some run logged its wall time (imported runs may not); ``error``: the
    table could not be computed (then ``table`` is None).
    """

    table: pd.DataFrame | None
    timed: bool = True
    error: ValueError | None = None


def _machines(inputs: ReportInputs) -> pd.Series:
    """``machines`` of each (algo, env): the machines of its done runs (``store.run_machine``),
    each with its run count, ``host: CPU (n CPUs) ×3; ...``."""
    done = inputs.runs.loc[inputs.runs["status"] == analysis.DONE]
    runs = done.drop_duplicates("run_id")[["algo", "env", "run_dir"]]
    runs = runs.assign(machine=[run_machine(Path(d)) for d in runs["run_dir"]])
    return runs.groupby(["algo", "env"])["machine"].agg(
        lambda m: "; ".join(f"{name} ×{n}" for name, n in sorted(m.value_counts().items()))
    )


def throughput_stats(inputs: ReportInputs) -> Throughput:
    c, runs = inputs.config, inputs.runs
    if "wall_time" not in runs.columns or runs["wall_time"].isna().all():
        return Throughput(None, timed=False)
    try:
        table = analysis.throughput_table(
            runs, reps=c.table_reps, seed=c.seed, confidence=c.confidence
        )
    except ValueError as exc:
        return Throughput(None, error=exc)
    machines = _machines(inputs)
    keys = list(zip(table["algo"], table["env"], strict=True))
    table = table.assign(machines=[machines.get(k, "unknown") for k in keys])
    return Throughput(table.sort_values(["env", "algo"], ignore_index=True))


def _machine_tags(table: pd.DataFrame) -> dict[str, str]:
    """``M1``, ``M2``, ... for each machine named in ``table["machines"]`` (sorted)."""
    names = sorted(
        {part.rsplit(" ×", 1)[0] for cell in table["machines"] for part in cell.split("; ")}
    )
    return {name: f"M{i}" for i, name in enumerate(names, start=1)}


def _share(v: float) -> str:
    return "–" if math.isnan(v) else f"{100 * v:.0f}%"


def throughput_section(inputs: ReportInputs, throughput: Throughput) -> Section | None:
    """Env steps per second of training and where the time went; None without timings."""
    c = inputs.config
    title = "Throughput"
    if not throughput.timed:
        return None
    if throughput.table is None:
        assert throughput.error is not None
        paragraph, note = failed("throughput table", throughput.error)
        return Section(title, (paragraph,), (note,))
    table = throughput.table
    display = pd.DataFrame(
        {
            "env": table["env"],
            "algo": table["algo"],
            "runs": table["n_runs"],
            "env steps/s": [
                ci(*r)
                for r in table[["steps_per_s", "steps_per_s_low", "steps_per_s_high"]].to_numpy()
            ],
            "rollout": [_share(v) for v in table["rollout_share"]],
            "update": [_share(v) for v in table["update_share"]],
            "eval": [_share(v) for v in table["eval_share"]],
        }
    )
    tags = _machine_tags(table)
    if len(tags) == 1:
        where = f"All runs trained on one machine: {next(iter(tags))}."
    else:  # a column of tags, the machines named once under the table
        display["machine"] = [
            ", ".join(
                f"{tags[name]} ×{n}"
                for name, n in (part.rsplit(" ×", 1) for part in cell.split("; "))
            )
            for cell in table["machines"]
        ]
        where = (
            "Machines (from each run's manifest.json; runs per machine in the column): "
            + "; ".join(f"{tag} = {name}" for name, tag in tags.items())
            + "."
        )
    caption = (
        f"Training throughput: env steps ÷ training wall time of each finished run (env "
        f"and agent construction excluded), mean over runs with {c.confidence:.0%} "
        "bootstrap CIs, and the share of wall time in collection / update / evaluation. "
        f"Only comparable between runs launched together on the same machine. {where}"
    )
    return Section(title, (Table("throughput", table.drop(columns=["rates"]), display, caption),))


def crosscheck_section(
    inputs: ReportInputs, per_env: pd.DataFrame, throughput: Throughput
) -> Section | None:
    """``analysis.crosscheck_table`` formatted; None when no algorithm has a reference here."""
    c = inputs.config
    pairs = analysis.reference_pairs(dict(inputs.algo_names))
    if not pairs:
        return None
    title = "Cross-check against the reference implementation"
    data = analysis.crosscheck_table(
        inputs.used,
        per_env,
        pairs,
        throughput.table,
        poi_reps=c.poi_reps,
        ratio_reps=c.table_reps,
        seed=c.seed,
        confidence=c.confidence,
    )
    if data.empty:
        no_pair = "No env has runs of both an algorithm and its reference."
        return Section(title, (Paragraph(no_pair),))

    def cis(prefix: str) -> list[str]:
        cols = [prefix, f"{prefix}_low", f"{prefix}_high"]
        return [ci(*r) for r in data[cols].to_numpy()]

    display = pd.DataFrame(
        {
            "env": data["env"],
            "safebench": data["algo"],
            "reference": data["reference"],
            "IQM return": cis("ret"),
            "reference IQM return": cis("ref_ret"),
            "IQM cost": cis("cost"),
            "reference IQM cost": cis("ref_cost"),
            "P(return higher)": cis("poi_ret"),
            "P(cost lower)": cis("poi_cost"),
            "throughput ratio": [
                "–" if math.isnan(r[0]) else f"{r[0]:.2f}× [{r[1]:.2f}, {r[2]:.2f}]"
                for r in data[["ratio", "ratio_low", "ratio_high"]].to_numpy()
            ],
        }
    )
    caption = (
        "Each safebench algorithm next to the reference implementation of the same "
        f"method (`{OMNISAFE_PREFIX}NAME`), same envs, seeds and budget: IQM "
        f"final return and cost with {c.confidence:.0%} CIs (as in the per-env table); "
        "the probability that a safebench run has the higher return / the lower cost "
        f"than a reference run on that env (0.5 = no difference; {c.poi_reps:,} reps); "
        "and the throughput ratio safebench ÷ reference (mean env steps/s, bootstrap CI "
        "over runs of both)."
    )
    return Section(title, (Table("crosscheck", data, display, caption),))
