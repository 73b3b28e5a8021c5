"""What a launch reports: how each run ended, and the live progress line while it runs."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

from safebench.results.store import RunDir, read_status
from safebench.schema.spec import RunSpec

__all__ = ["Display", "LaunchResult", "RunOutcome", "duration", "read_steps"]


@dataclass(frozen=True)
class RunOutcome:
    """How one run of this launch ended."""

    spec: RunSpec
    state: Literal["done", "failed", "interrupted"]
    error: str | None = None
    seconds: float = 0.0


@dataclass
class LaunchResult:
    """What a launch did: the grid, what was already done, and how each launched run ended."""

    output: Path
    specs: list[RunSpec]
    skipped_done: int = 0
    skipped_failed: int = 0
    outcomes: list[RunOutcome] = field(default_factory=list)
    interrupted: bool = False
    #: seconds spent starting Ray (``startup``), training (``train``: from the first run's
    #: submission to the last one's end) and stopping Ray (``shutdown``)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def failed(self) -> list[RunOutcome]:
        return [o for o in self.outcomes if o.state == "failed"]

    @property
    def done(self) -> int:
        return self.skipped_done + sum(o.state == "done" for o in self.outcomes)

    @property
    def complete(self) -> bool:
        return self.done == len(self.specs)


def duration(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "-:--:--"
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class Display:
    """One live line: a bar over the grid's env steps, run counts, steps/s and ETA."""

    def __init__(self, console: Console, result: LaunchResult, todo: list[RunSpec]) -> None:
        self.console = console
        # Runs that stay failed are left out of the bar, and a run failing now takes its
        # remaining steps out: the bar reaches 100% when everything that can finish has.
        todo_ids = {s.run_id for s in todo}
        self.base = sum(
            s.budget
            for s in result.specs
            if s.run_id not in todo_ids
            and read_status(s.run_dir(result.output)).get("status") == "done"
        )
        self.total = self.base + sum(s.budget for s in todo)
        # Steps each queued run already has (its checkpoint): progress, but not this launch's.
        self.start_steps = {s.run_id: read_steps(s.run_dir(result.output)) or 0 for s in todo}
        self.steps = dict(self.start_steps)
        self.done = result.skipped_done
        self.failed = result.skipped_failed
        self.running: set[str] = set()
        self.n_runs = len(result.specs)
        self.t0 = time.perf_counter()
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[runs]}"),
            TextColumn("{task.fields[rate]}"),
            TextColumn("ETA {task.fields[eta]}"),
            console=console,
            refresh_per_second=2,
        )
        self.task = self.progress.add_task(
            result.specs[0].experiment if result.specs else "", total=self.total, runs="",
            rate="", eta="",
        )  # fmt: skip

    def set_steps(self, run_id: str, steps: int) -> None:
        self.steps[run_id] = steps

    def finish(self, outcome: RunOutcome) -> None:
        rid = outcome.spec.run_id
        self.running.discard(rid)
        spec = outcome.spec
        name = f"{spec.label} {spec.env_id} seed {spec.seed}"
        if outcome.state == "done":
            self.done += 1
            self.set_steps(rid, spec.budget)
            self.console.print(f"[green]done[/green]   {escape(name)} ({outcome.seconds:.1f} s)")
        elif outcome.state == "failed":
            self.failed += 1
            self.total -= spec.budget - self.steps.get(rid, 0)
            self.console.print(f"[red]failed[/red] {escape(name)}: {escape(str(outcome.error))}")

    def refresh(self) -> None:
        completed = self.base + sum(self.steps.values())
        gained = sum(v - self.start_steps.get(k, 0) for k, v in self.steps.items())
        elapsed = time.perf_counter() - self.t0
        rate = gained / elapsed if elapsed > 0 else 0.0
        remaining = self.total - completed
        eta = remaining / rate if rate > 0 else float("inf")
        runs = (
            f"{self.done}/{self.n_runs} done · {len(self.running)} running · {self.failed} failed"
        )
        self.progress.update(
            self.task,
            completed=completed,
            runs=runs,
            rate=f"{rate:,.0f} steps/s",
            eta=duration(eta if remaining > 0 else 0.0),
        )

    @contextlib.contextmanager
    def live(self) -> Iterator[Display]:
        self.refresh()
        with self.progress:
            yield self
            self.refresh()


def read_steps(run_dir: Path) -> int | None:
    try:
        column = RunDir(run_dir).read_metrics(columns=["steps"])["steps"]
    except (OSError, ValueError, KeyError):
        return None
    return int(column.iloc[-1]) if len(column) else None
