"""What experiments/fidelity.yaml costs: a few epochs of every run kind, and the grid's estimate.

Runs the fidelity grid shrunk to ``--epochs`` epochs (20k env steps each, 10 envs, the same
protocol) and one seed, through ``safebench run`` (local Ray, ``--parallel`` runs at a time,
as the full grid would run), then reads each run's training wall time per epoch and
estimates the full grid: every run's epochs × its seconds per epoch, scheduled longest first
onto ``--parallel`` workers.

    .venv/bin/python scripts/analysis/fidelity_cost.py [--epochs 2] [--parallel 2] [--out DIR]

The estimate assumes a run's later epochs cost what its first ones did; on Hopper early
episodes end when it falls (more resets, slower rollouts) and KFCPO's update time depends on
how many of its steps roll back, so it is an estimate, stated as such.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import yaml

from safebench.results.store import load_runs

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENT = ROOT / "experiments" / "fidelity.yaml"


def measure(epochs: int, parallel: int, out: Path) -> pd.DataFrame:
    """Train the shrunk grid into ``out``; one row per run with its seconds per epoch."""
    exp = yaml.safe_load(EXPERIMENT.read_text(encoding="utf-8"))
    exp.update(
        name="fidelity-cost",
        seeds=exp["seeds"][:1],
        budget=epochs * exp["steps_per_epoch"],
        output=str(out),
    )
    path = out.parent / "fidelity-cost.yaml"
    path.write_text(yaml.safe_dump(exp, sort_keys=False), encoding="utf-8")
    safebench = [sys.executable, "-m", "safebench.cli"]
    subprocess.run(
        [*safebench, "run", str(path), "--num-cpus", str(parallel)], check=True, cwd=ROOT
    )
    runs = load_runs(out)
    last = runs.sort_values("epoch").groupby("run_id").tail(1)
    return pd.DataFrame(
        {
            "algo": last["algo"],
            "env": last["env"],
            "epochs": last["epoch"] + 1,
            "s_per_epoch": last["wall_time"] / (last["epoch"] + 1),
            "rollout_s": runs.groupby("run_id")["time_rollout"].mean().loc[last["run_id"]].values,
            "update_s": runs.groupby("run_id")["time_update"].mean().loc[last["run_id"]].values,
        }
    ).sort_values(["env", "algo"], ignore_index=True)


def estimate(cost: pd.DataFrame, epochs: int, seeds: int, parallel: int) -> float:
    """Wall seconds of the full grid: longest-first list scheduling on ``parallel`` workers."""
    jobs = sorted([s * epochs for s in cost["s_per_epoch"] for _ in range(seeds)], reverse=True)
    workers = [0.0] * parallel
    for job in jobs:
        workers[workers.index(min(workers))] += job
    return max(workers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    exp = yaml.safe_load(EXPERIMENT.read_text(encoding="utf-8"))
    full_epochs = exp["budget"] // exp["steps_per_epoch"]
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / "fidelity-cost"
        cost = measure(args.epochs, args.parallel, out)
    load = os.getloadavg()[0]
    print(f"\nper run, {args.epochs} epochs of {exp['steps_per_epoch']:,} steps, {args.parallel}"
          f" runs at a time (load average {load:.1f} on {os.cpu_count()} CPUs):")  # fmt: skip
    print(cost.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    total = estimate(cost, full_epochs, len(exp["seeds"]), args.parallel)
    runs = len(cost) * len(exp["seeds"])
    print(
        f"\nfull grid: {runs} runs x {full_epochs} epochs, {args.parallel} at a time: "
        f"about {total / 3600:.1f} h of wall time"
    )


if __name__ == "__main__":
    main()
