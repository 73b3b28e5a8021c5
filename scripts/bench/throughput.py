"""Training throughput relative to the raw env step rate, and to OmniSafe, in one process.

For each env: (1) the raw random-action step rate — for a navigation task both safebench's
(fast, what training steps) and stock Safety-Gymnasium's (``fast=False``, what any other
library steps), (2) safebench training env-steps/s, (3) OmniSafe 0.5.0 training env-steps/s of
the same algorithm — all on one core, each side at its default hyperparameters
(steps_per_epoch 20000; CPO: update_iters 10, batch 128, ...).

    .venv/bin/python scripts/bench/throughput.py [ENV ...] [--algo cpo ppo-lag ...] [--epochs 2]
        [--no-omnisafe]     (envs before --algo: it takes several names)

Each algorithm runs at its own defaults on both sides: for the PPO family these are the same
numbers of passes and minibatches (OmniSafe's PPO/PPOLag/CPPOPID/FOCOPS/CUP: 40 passes of 64;
TRPOLag: 10 critic passes of 128), so the ratio compares implementations doing the same work.

Prints a table of steps/s and the ratios; ``--json PATH`` also writes them. "ceiling" is the
ratio to the raw rate that training would reach if collecting cost nothing beyond the env
steps: env time / (env time + update time) per env step — what the update alone allows.

**At equal work.** A PPO-family epoch ends its passes at a KL early stop that the epoch's own
data decide, so one epoch on each side may do different amounts of work (one pass against
forty). For the methods that log their passes (safebench ``algo/update_passes``, plus CUP's
``algo/projection_passes``; OmniSafe ``Train/StopIter``, plus CUP's
``Train/SecondStepStopIter``) the table also gives each side's update time per pass and the
ratio of the two sides' epoch times had every epoch run all ``update_iters`` passes (rollout
seconds + seconds per pass × passes at most): "equal-work speed-up", the implementations
compared doing the same work. CUP's two phases are counted as passes alike.

``--variant NAME`` runs every algorithm that has a ``variant`` field at that variant (e.g.
``--algo cup --variant omnisafe``: OmniSafe's CUP, the same work as OmniSafe's own).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import pandas as pd
from rich.console import Console
from rich.table import Table

from safebench import registry
from safebench.envs import fastnav
from safebench.schema.spec import EvalSpec, RunSpec
from safebench.training.bench import pin_threads, raw_env_rate
from safebench.training.runner import metrics_frame, run

DEFAULT_ENVS = ["SafetyPointGoal1-v0", "SafetyHalfCheetahVelocity-v1"]
STEPS_PER_EPOCH = 20_000
# safebench name -> OmniSafe 0.5.0's algorithm of the same method
OMNISAFE_NAMES = {
    "cpo": "CPO",
    "pcpo": "PCPO",
    "p3o": "P3O",
    "ppo": "PPO",
    "ppo-lag": "PPOLag",
    "trpo-lag": "TRPOLag",
    "cppo-pid": "CPPOPID",
    "focops": "FOCOPS",
    "cup": "CUP",
    "ipo": "IPO",
}


def _config(algo: str, variant: str | None) -> dict[str, Any]:
    """``algo``'s default config, at ``variant`` where it has a ``variant`` field."""
    has_variant = "variant" in registry.get(algo).config_cls.model_fields
    overrides = {"variant": variant} if variant is not None and has_variant else None
    return registry.resolve_config(algo, overrides).model_dump(mode="json")


def pass_counts(
    frame: pd.DataFrame, columns: tuple[str, ...], per_phase: float
) -> dict[str, float]:
    """Passes run (summed over epochs and the phases in ``columns``, NaN where none logs) and
    passes at most (``per_phase`` per epoch and phase: CUP has two phases)."""
    present = [c for c in columns if c in frame]
    if not present:
        return {"passes": math.nan, "max_passes": math.nan}
    return {
        "passes": float(frame[present].to_numpy().sum()),
        "max_passes": per_phase * len(frame) * len(present),
    }


def safebench_rate(
    algo: str, env_id: str, epochs: int, root: Path, variant: str | None = None
) -> tuple[float, dict[str, float]]:
    """Env steps per second of training, rollout + update (no evaluation), all epochs."""
    config = _config(algo, variant)
    spec = RunSpec(
        algo=algo,
        config=config,
        env_id=env_id,
        seed=0,
        budget=epochs * STEPS_PER_EPOCH,
        steps_per_epoch=STEPS_PER_EPOCH,
        cost_limit=25.0,
        eval=EvalSpec(episodes=0),
        device="cpu",
    )
    start = time.perf_counter()
    frame = metrics_frame(run(spec, root))
    total = time.perf_counter() - start  # includes env construction, as OmniSafe's timing does
    parts = {
        "steps": float(frame["steps"].iloc[-1]),
        "rollout_s": float(frame["time_rollout"].sum()),
        "update_s": float(frame["time_update"].sum()),
        "total_s": total,
        **pass_counts(
            frame,
            ("algo/update_passes", "algo/projection_passes"),
            float(config.get("update_iters", math.nan)),
        ),
    }
    return float(frame["steps"].iloc[-1]) / total, parts


def omnisafe_rate(
    algo: str, env_id: str, epochs: int, root: Path
) -> tuple[float, dict[str, float]]:
    """OmniSafe's own training loop with its defaults, 1 thread, no wandb/tensorboard; its
    steps/s and, from its ``progress.csv``, rollout and update seconds and passes."""
    from safebench.envs.factory import import_safety_gymnasium

    import_safety_gymnasium()  # OmniSafe imports safety_gymnasium; it needs the 3.11 shim first
    import omnisafe

    cfgs = {
        "seed": 0,
        "train_cfgs": {
            "total_steps": epochs * STEPS_PER_EPOCH,
            "torch_threads": 1,
            "vector_env_nums": 1,
            "device": "cpu",
        },
        "algo_cfgs": {"steps_per_epoch": STEPS_PER_EPOCH},
        "logger_cfgs": {"use_wandb": False, "use_tensorboard": False, "log_dir": str(root)},
    }
    start = time.perf_counter()
    agent = omnisafe.Agent(OMNISAFE_NAMES[algo], env_id, custom_cfgs=cfgs)
    agent.learn()
    rate = epochs * STEPS_PER_EPOCH / (time.perf_counter() - start)
    progress = pd.read_csv(next(root.rglob("progress.csv")))
    parts = {
        "rollout_s": float(progress["Time/Rollout"].sum()),
        "update_s": float(progress["Time/Update"].sum()),
        **pass_counts(
            progress,
            ("Train/StopIter", "Train/SecondStepStopIter"),
            float(agent.cfgs.algo_cfgs.get("update_iters", math.nan)),
        ),
    }
    return rate, parts


def seconds_per_pass(parts: dict[str, float]) -> float:
    """Update seconds / passes run (NaN where no passes were logged)."""
    passes = parts.get("passes")
    return parts["update_s"] / passes if passes else math.nan


def equal_work_seconds(parts: dict[str, float]) -> float:
    """Rollout + update seconds had every epoch run all its passes (NaN without passes):
    rollout seconds + seconds per pass × passes at most (``update_iters`` per epoch and phase).
    """
    return parts["rollout_s"] + seconds_per_pass(parts) * parts.get("max_passes", math.nan)


def bench_one(
    algo: str, env_id: str, epochs: int, *, omnisafe: bool, variant: str | None = None
) -> dict[str, Any]:
    """Raw rates, safebench's and OmniSafe's training rates for one algorithm on one env."""
    raw = raw_env_rate(env_id, STEPS_PER_EPOCH).steps_per_s
    # navigation: stock Safety-Gymnasium's own rate, the ceiling of every other library
    stock = (
        raw_env_rate(env_id, STEPS_PER_EPOCH, fast=False).steps_per_s
        if fastnav.supports(env_id, {})
        else raw
    )
    with tempfile.TemporaryDirectory() as tmp:
        sb, parts = safebench_rate(algo, env_id, epochs, Path(tmp), variant)
    omni = float("nan")
    omni_parts: dict[str, float] = {}
    if omnisafe:
        with tempfile.TemporaryDirectory() as tmp:
            # OmniSafe runs its own algorithm as it is: --variant picks ours only
            omni, omni_parts = omnisafe_rate(algo, env_id, epochs, Path(tmp))
    # The ratio to the raw rate that training could reach if the rollout cost nothing but
    # the env steps: env time / (env time + update time), per env step.
    update_per_step = parts["update_s"] / parts["steps"]
    return {
        "algo": algo,
        "env": env_id,
        "raw": raw,
        "stock_raw": stock,
        "safebench": sb,
        "ratio": sb / raw,
        "ratio_stock": sb / stock,
        "omnisafe": omni,
        "omnisafe_ratio": omni / stock,  # OmniSafe steps stock Safety-Gymnasium
        "speedup": sb / omni,
        "update_us_per_step": 1e6 * update_per_step,
        "ceiling": 1.0 / (1.0 + update_per_step * raw),
        "s_per_pass": seconds_per_pass(parts),
        "omnisafe_s_per_pass": seconds_per_pass(omni_parts) if omni_parts else math.nan,
        "omnisafe_passes": omni_parts.get("passes", math.nan),
        "equal_work_speedup": (
            equal_work_seconds(omni_parts) / equal_work_seconds(parts) if omni_parts else math.nan
        ),
        **parts,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("envs", nargs="*", default=DEFAULT_ENVS)
    parser.add_argument("--algo", nargs="+", default=["cpo"], choices=sorted(OMNISAFE_NAMES))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--no-omnisafe", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--variant", help="run algorithms with a variant field at this one")
    args = parser.parse_args()
    pin_threads(1)
    console = Console(width=200)
    tables: list[Table] = []
    results = []
    for algo in args.algo:
        table = Table(
            "env", "raw steps/s", "stock raw steps/s", "safebench steps/s", "ratio vs raw",
            "ratio vs stock raw", "omnisafe steps/s",
            "omnisafe ratio vs stock raw", "safebench / omnisafe", "rollout s", "update s",
            "ceiling", "passes (sb / omnisafe)", "s per pass (sb / omnisafe)",
            "equal-work speed-up",
            title=f"{algo} training throughput, 1 core, {args.epochs}×{STEPS_PER_EPOCH} steps",
        )  # fmt: skip
        for env_id in args.envs:
            row = bench_one(
                algo, env_id, args.epochs, omnisafe=not args.no_omnisafe, variant=args.variant
            )
            results.append(row)
            table.add_row(
                env_id,
                f"{row['raw']:,.0f}",
                f"{row['stock_raw']:,.0f}",
                f"{row['safebench']:,.0f}",
                f"{row['ratio']:.2f}",
                f"{row['ratio_stock']:.2f}",
                f"{row['omnisafe']:,.0f}",
                f"{row['omnisafe_ratio']:.2f}",
                f"{row['speedup']:.2f}",
                f"{row['rollout_s']:.1f}",
                f"{row['update_s']:.1f}",
                f"{row['ceiling']:.2f}",
                f"{row['passes']:.0f} / {row['omnisafe_passes']:.0f}",
                f"{row['s_per_pass']:.2f} / {row['omnisafe_s_per_pass']:.2f}",
                f"{row['equal_work_speedup']:.2f}",
            )
            console.print(row)
        tables.append(table)
    for table in tables:
        console.print(table)
    summary = Table(
        "algorithm", *args.envs, title="safebench / OmniSafe steps/s (same machine, one run)"
    )
    for algo in args.algo:
        cells = [r for r in results if r["algo"] == algo]
        summary.add_row(
            algo,
            *(f"{r['speedup']:.2f} (equal work {r['equal_work_speedup']:.2f})" for r in cells),
        )
    console.print(summary)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
