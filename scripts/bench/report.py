"""Time ``safebench report`` end to end on a synthetic results store of realistic size.

Writes 4 algos x 10 envs x 25 seeds = 1,000 runs x 500 epochs into a temporary store in
safebench's run-directory layout (spec.json, status.json, metrics.parquet; about 2 % of
runs left running or failed, as in ``report_synthetic.py``), then times
``safebench.report.build_report`` on it with its default settings: loading the store,
final scores, every table, every figure (PNG + SVG) and the report page.

    .venv/bin/python scripts/bench/report.py [--runs-per-cell 25] [--epochs 500] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from report_synthetic import synthetic_runs

from safebench.report import ReportConfig, build_report
from safebench.results.store import RunDir, env_slug


def write_store(root: Path, n_seeds: int, n_epochs: int) -> int:
    """The synthetic frame as run directories under ``root``; returns the number of runs."""
    frame = synthetic_runs(n_seeds=n_seeds, n_epochs=n_epochs)
    metric_columns = ["epoch", "steps", "ep_ret", "ep_cost", "ep_len", "eval_ret", "eval_cost"]
    n = 0
    for run_id, run in frame.groupby("run_id", sort=False):
        first = run.iloc[0]
        run_dir = root / first.algo / env_slug(first.env) / f"seed{first.seed}-{n:08d}"
        run_dir.mkdir(parents=True)
        spec = {
            "run_id": f"{n:08d}-{run_id}",
            "experiment": "synthetic",
            "algo": first.algo,
            "label": first.algo,
            "env_id": first.env,
            "seed": int(first.seed),
            "cost_limit": float(first.cost_limit),
        }
        files = RunDir(run_dir)
        files.write_spec(spec)
        files.write_status(first.status)
        files.write_metrics(run[metric_columns].to_dict("records"))
        n += 1
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-per-cell", type=int, default=25, help="seeds per algo x env")
    parser.add_argument("--epochs", type=int, default=500)
    parser.add_argument("--reference", default="ppo")
    parser.add_argument("--ours", default="ctrpo-beta2")
    parser.add_argument("--keep", type=Path, default=None, help="write the store here and keep it")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="safebench-bench-report-"))
    try:
        start = time.perf_counter()
        n = write_store(root, args.runs_per_cell, args.epochs)
        print(
            f"wrote {n} runs x {args.epochs} epochs to {root} in "
            f"{time.perf_counter() - start:.1f} s (not timed)",
            flush=True,
        )
        config = ReportConfig(reference=args.reference, ours=args.ours)
        stages: list[tuple[str, float]] = []
        cpu_start = time.process_time()
        start = time.perf_counter()
        report = build_report(
            root,
            config=config,
            progress=lambda stage: stages.append((stage, time.perf_counter() - start)),
        )
        total = time.perf_counter() - start
        cpu = time.process_time() - cpu_start
        for (stage, t0), (_, t1) in zip(stages, [*stages[1:], ("end", total)]):
            print(f"  {stage:<45s} {t1 - t0:7.2f} s")
        # The report runs essentially on one core, so its CPU time approximates the wall
        # time on an idle machine; wall well above CPU means other processes had the cores.
        load = os.getloadavg()[0]
        print(
            f"report of {n} runs: {total:.1f} s wall, {cpu:.1f} s CPU, load average {load:.1f} "
            f"(aggregate reps {config.reps:,}, per-env {config.table_reps:,}, "
            f"curves/profiles {config.curve_reps:,}); {len(report.files)} files in {report.out}"
        )
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
