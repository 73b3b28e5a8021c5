"""Scaling of the launcher: N runs on N cores with Ray vs the same runs one after another.

    .venv/bin/python scripts/bench/scaling.py [--runs N] [--epochs 20] [--steps-per-epoch 5000]
                                               [--algo cpo] [--env ID] [--json PATH]

Measures, on this machine:

1. Ray start-up overhead: ``ray.init`` of a local instance, the first (cold) task — a worker
   process is spawned — the first task that imports the training stack, a warm task, and
   ``ray.shutdown``.
2. Parallel efficiency: the same N runs (N seeds of one algorithm on one env, one CPU and one
   torch thread each) trained sequentially in-process (``--backend local``) and as N Ray
   tasks on an N-CPU local instance. Efficiency = T_sequential / (N · T_parallel), both times
   from the first run's start of training to the last run's end (``placement.json``), i.e.
   without Ray's one-off start-up (item 1). The efficiency counting the workers' start-up
   (process spawn, imports: paid once per worker, then reused by later runs of a grid) is
   printed beside it.
3. GPU placement with declared (fake) GPUs: runs asking for 1 and for 0.5 GPU on a local
   instance that declares 2 GPUs; each run records the GPU ids Ray assigned it and the
   ``CUDA_VISIBLE_DEVICES`` it saw (``placement.json``) and the device it trained on.

The machine's load average is printed before and after: other processes on the same cores
lower the efficiency, which then does not measure the launcher.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from safebench.experiment.launch import launch
from safebench.results.store import RunDir
from safebench.schema.spec import expand, parse_experiment

console = Console()


def experiment_yaml(
    output: Path, *, runs: int, algo: str, env: str, epochs: int, steps: int
) -> str:
    return (
        f"name: scaling\nalgorithms: [{algo}]\nenvironments: [{env}]\nseeds: {runs}\n"
        f"budget: {epochs * steps}\nsteps_per_epoch: {steps}\ndevice: auto\n"
        f"eval: {{episodes: 0}}\nresources: {{cpus: 1, gpus: 0}}\noutput: {output}\n"
    )


def ray_startup(num_cpus: int) -> dict[str, float]:
    """Seconds for init, a cold task, a task importing the training stack, a warm task, shutdown."""
    import logging

    import ray

    def trivial() -> int:
        return os.getpid()

    def import_stack() -> int:
        import safebench.training.runner  # noqa: F401  (torch, gymnasium, the algorithms)

        return os.getpid()

    out: dict[str, float] = {}
    t0 = time.perf_counter()
    ray.init(
        address="local",
        num_cpus=num_cpus,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
    )
    out["ray_init_s"] = time.perf_counter() - t0
    trivial_task, import_task = ray.remote(trivial), ray.remote(import_stack)
    t0 = time.perf_counter()
    ray.get(trivial_task.remote())
    out["first_task_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ray.get(import_task.remote())
    out["import_stack_task_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ray.get(trivial_task.remote())
    out["warm_task_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ray.shutdown()
    out["ray_shutdown_s"] = time.perf_counter() - t0
    return out


def scaling(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    quiet = Console(file=io.StringIO())
    out: dict[str, Any] = {}
    for backend in ("local", "ray"):
        text = experiment_yaml(
            tmp / backend, runs=args.runs, algo=args.algo, env=args.env, epochs=args.epochs,
            steps=args.steps_per_epoch,
        )  # fmt: skip
        exp = parse_experiment(text, "scaling.yaml")
        kwargs: dict[str, Any] = {"num_cpus": args.runs} if backend == "ray" else {}
        t0 = time.perf_counter()
        result = launch(exp, backend=backend, console=quiet, **kwargs)
        total = time.perf_counter() - t0
        if not result.complete:
            raise SystemExit(f"{backend}: runs failed: {[o.error for o in result.failed]}")
        placements = [RunDir(s.run_dir(tmp / backend)).read_placement() for s in expand(exp)]
        out[backend] = {
            # From the submission of the first run to the end of the last one.
            "train_s": result.timings["train"],
            # From the first run's start of training (its worker up, imports done) to the end
            # of the last one: the grid without the one-off start-up of Ray's workers.
            "span_s": max(p["finished"] for p in placements)
            - min(p["started"] for p in placements),
            "total_s": total,
            "per_run_s": [p["finished"] - p["started"] for p in placements],
            **{f"ray_{k}_s": v for k, v in result.timings.items() if k != "train"},
        }
        steps = sum(s.budget for s in expand(exp))
        out[backend]["env_steps_per_s"] = steps / out[backend]["span_s"]
    for key, name in (("span_s", "parallel_efficiency"), ("train_s", "efficiency_with_workers")):
        seq, par = out["local"][key], out["ray"][key]
        out[name] = seq / (args.runs * par)
    out["speedup"] = out["local"]["span_s"] / out["ray"]["span_s"]
    return out


def gpu_placement(tmp: Path) -> list[dict[str, Any]]:
    quiet = Console(file=io.StringIO())
    rows = []
    for share, runs in ((1, 2), (0.5, 4)):
        output = tmp / f"gpu{share}"
        text = experiment_yaml(
            output, runs=runs, algo="cpo", env="safebench/ContinuousTarget-v0", epochs=4,
            steps=400,
        )  # fmt: skip
        text = text.replace("gpus: 0}", f"gpus: {share}}}")
        exp = parse_experiment(text, "gpu.yaml")
        result = launch(exp, backend="ray", num_cpus=2, num_gpus=2, console=quiet)
        if not result.complete:
            raise SystemExit(f"gpu placement runs failed: {[o.error for o in result.failed]}")
        for spec in expand(exp):
            run_dir = spec.run_dir(output)
            placement = RunDir(run_dir).read_placement()
            device = (RunDir(run_dir).read_manifest() or {})["device"]
            rows.append(
                {
                    "gpus_per_run": share,
                    "seed": spec.seed,
                    "gpu_ids": placement["gpu_ids"],
                    "cuda_visible_devices": placement["cuda_visible_devices"],
                    "device": device,
                    "started": placement["started"],
                    "finished": placement["finished"],
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--steps-per-epoch", type=int, default=5000)
    parser.add_argument("--algo", default="cpo")
    parser.add_argument("--env", default="safebench/ContinuousTarget-v0")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    report: dict[str, Any] = {"cpus": os.cpu_count(), "load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        report["startup"] = ray_startup(args.runs)
        report["scaling"] = scaling(args, tmp)
        report["gpu_placement"] = gpu_placement(tmp)
    report["load_after"] = os.getloadavg()

    t = Table("Ray start-up", "seconds", title=f"{os.cpu_count()} CPUs")
    for key, value in report["startup"].items():
        t.add_row(key, f"{value:.2f}")
    console.print(t)
    sc = report["scaling"]
    t = Table(
        "backend", "grid s", "with worker start s", "env steps/s", "per run s",
        "Ray init / shutdown s",
    )  # fmt: skip
    for backend in ("local", "ray"):
        row = sc[backend]
        ray_io = (
            f"{row['ray_startup_s']:.2f} / {row['ray_shutdown_s']:.2f}"
            if "ray_startup_s" in row
            else "-"
        )
        t.add_row(
            backend, f"{row['span_s']:.1f}", f"{row['train_s']:.1f}",
            f"{row['env_steps_per_s']:,.0f}", ", ".join(f"{s:.1f}" for s in row["per_run_s"]),
            ray_io,
        )  # fmt: skip
    console.print(t)
    console.print(
        f"{args.runs} runs of {args.epochs}x{args.steps_per_epoch} steps ({args.algo}, "
        f"{args.env}): speedup {sc['speedup']:.2f}, parallel efficiency "
        f"[bold]{sc['parallel_efficiency']:.3f}[/bold] "
        f"({sc['efficiency_with_workers']:.3f} counting the workers' start-up); load average "
        f"before {report['load_before'][0]:.2f}, after {report['load_after'][0]:.2f}"
    )
    t = Table("GPUs per run", "seed", "Ray GPU ids", "CUDA_VISIBLE_DEVICES", "trained on")
    for row in report["gpu_placement"]:
        t.add_row(
            str(row["gpus_per_run"]), str(row["seed"]), ",".join(row["gpu_ids"]),
            str(row["cuda_visible_devices"]), row["device"],
        )  # fmt: skip
    console.print(t)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
