"""What ``safebench eval`` measured: the final checkpoints on fresh episodes, and their videos.

Per env, algorithm and evaluation mode (deterministic or stochastic actions): the IQM over
runs of each run's mean evaluation return and cost, with bootstrap CIs over runs (the same
statistic as the per-env table), the episodes per run, the episodes whose cost exceeds the
limit, and links to the filmed episodes (the MP4 files stay where ``eval --video`` put
them; the page links them relative to the report folder and embeds nothing).

Only the evaluations of runs the statistics use (done, not superseded) and of their final
checkpoint count; of several evaluations of a run in one mode, the newest.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from safebench import analysis
from safebench.report.format import ci
from safebench.report.inputs import ReportInputs
from safebench.report.model import Links, Section, Table, failed

__all__ = ["evaluation_section", "evaluation_used"]


def evaluation_used(inputs: ReportInputs, evals: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The evaluations the table uses (one per run and mode) and notes on those it drops."""
    notes: list[str] = []
    used_runs = set(inputs.used["run_id"])
    ours = evals.loc[evals["run_id"].isin(used_runs)]
    if len(ours) < len(evals):
        n = evals.loc[~evals["run_id"].isin(used_runs), "run_id"].nunique()
        notes.append(
            f"evaluations of {n} run(s) that the statistics leave out (not done, superseded "
            "or without a final score) are not in the evaluation table"
        )
    final = ours["checkpoint_epoch"] == ours["checkpoint_epochs"]
    if not final.all():
        notes.append(
            f"{int((~final).sum())} evaluation(s) of an earlier checkpoint (eval --checkpoint "
            "PATH) are not in the evaluation table"
        )
    ours = ours.loc[final].sort_values(["created", "file"])
    latest = ours.groupby(["run_id", "deterministic"], sort=False).tail(1)
    return latest.reset_index(drop=True), notes


def evaluation_section(inputs: ReportInputs, evals: pd.DataFrame, out: Path) -> Section | None:
    """The evaluation table and the video links; None when no run was evaluated.

    ``evals``: ``store.load_evaluations`` of the results root; ``out``: the report folder
    (the links are relative to it).
    """
    if evals.empty:
        return None
    c = inputs.config
    title = "Evaluation of the final checkpoints"
    used, notes = evaluation_used(inputs, evals)
    if used.empty:
        return Section(title, notes=tuple(notes))
    used = used.assign(
        mode=used["deterministic"].map({True: "deterministic", False: "stochastic"}),
        status=analysis.DONE,
        # the statistics' task of each run: "<env> @ d=<limit>" in a cost-limit sweep
        env=used["run_id"].map(dict(zip(inputs.used["run_id"], inputs.used["env"]))),
    )
    tables = []
    for mode, part in used.groupby("mode", sort=True):
        try:
            table = analysis.per_env_table(
                part,
                reps=c.table_reps,
                seed=c.seed,
                confidence=c.confidence,
                metrics=("ret", "cost"),
            )
        except ValueError as exc:
            paragraph, note = failed(f"evaluation table ({mode})", exc)
            return Section(title, (paragraph,), (*notes, note))
        counts = part.groupby(["algo", "env"]).agg(
            ep_min=("n_episodes", "min"),
            ep_max=("n_episodes", "max"),
            episodes=("n_episodes", "sum"),
            violations=("violations", "sum"),
            videos=("videos", lambda v: sum(len(x) for x in v)),
        )
        tables.append(table.join(counts, on=["algo", "env"]).assign(mode=mode))
    data = pd.concat(tables, ignore_index=True).sort_values(["env", "algo", "mode"])
    data = data.reset_index(drop=True)
    cost_cells = []
    for r in data.itertuples():
        text = ci(r.cost, r.cost_low, r.cost_high)
        cost_cells.append(f"**{text}**" if r.admissible else text)
    display = pd.DataFrame(
        {
            "env": data["env"],
            "algo": data["algo"],
            "actions": data["mode"],
            "runs": data["n_runs"],
            "episodes/run": [
                f"{lo}" if lo == hi else f"{lo}–{hi}"
                for lo, hi in zip(data["ep_min"], data["ep_max"])
            ],
            "IQM return": [ci(*r) for r in data[["ret", "ret_low", "ret_high"]].to_numpy()],
            "IQM cost": cost_cells,
            "episodes over d": [
                f"{int(k)}/{int(n)}" for k, n in zip(data["violations"], data["episodes"])
            ],
            "videos": data["videos"],
        }
    )
    caption = (
        "`safebench eval` of each run's final checkpoint on fresh episodes (a seed stream "
        "of their own, never a training or periodic-evaluation episode): IQM over runs of the "
        f"per-run mean return and cost, {c.confidence:.0%} CIs ({c.table_reps:,} reps). "
        "**Bold** cost = admissible (IQM cost < d); episodes over d: episodes whose cost "
        "exceeds the limit, pooled over runs."
    )
    blocks: list[Table | Links] = [Table("evaluation", data, display, caption)]
    links, missing = _video_links(used, out)
    if links:
        blocks.append(Links(tuple(links)))
    if missing:
        notes.append(f"{missing} video file(s) named by evaluations no longer exist")
    return Section(title, tuple(blocks), tuple(notes))


def _video_links(used: pd.DataFrame, out: Path) -> tuple[list[tuple[str, str]], int]:
    """``(text, href relative to the report folder)`` of every filmed episode that exists."""
    links: list[tuple[str, str]] = []
    missing = 0
    ordered = used.sort_values(["env", "algo", "seed", "mode"])
    for r in ordered.itertuples():
        for episode, path, ret, cost in r.videos:
            if not Path(path).is_file():
                missing += 1
                continue
            text = (
                f"video: {r.algo} on {r.env}, seed {r.seed}, {r.mode}, episode {episode} "
                f"(return {ret:.2f}, cost {cost:.2f})"
            )
            links.append((text, os.path.relpath(path, out.resolve())))
    return links, missing
