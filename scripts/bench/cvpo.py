"""CVPO training throughput at the official update-to-data ratio, against OmniSafe SACLag.

Both run on SafetyPointGoal1-v0 in this process, on the same cores and thread count:

* safebench CVPO with the official config (batch 300, episode_rerun_num 40 ⇒ 40/300 ≈ 0.133
  gradient updates per env step, K = 32, 6 M-step iterations, [256, 256] nets); only the
  round length is shortened (``sample_episode_num`` = steps / 1000, i.e. the run's episodes)
  so that a short run contains a full update round — the ratio is unchanged;
* OmniSafe 0.5.0 SACLag with its defaults (update_cycle 1, update_iters 1 ⇒ 1 update of batch
  256 per env step) except a shortened ``start_learning_steps``: the first epoch is random
  warm-up, the second learns at every step and is the one measured.

Throughput = env steps / (rollout + update time) of the measured epoch (evaluation excluded);
OmniSafe's own ``Time/FPS`` (which would include evaluation, disabled here) is reported too.

    .venv/bin/python scripts/bench/cvpo.py [--steps 2000] [--threads 1] [--no-omnisafe] [--json P]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import pandas as pd

from safebench import registry
from safebench.schema.spec import EvalSpec, RunSpec
from safebench.training.bench import pin_threads, raw_env_rate
from safebench.training.runner import metrics_frame, run

ENV = "SafetyPointGoal1-v0"
EPISODE = 1000  # SafetyPointGoal1-v0 max_episode_steps


def cvpo_rate(steps: int, root: Path) -> dict[str, Any]:
    """One epoch of ``steps`` env steps ending in one official-ratio update round."""
    config = registry.resolve_config("cvpo", {"sample_episode_num": max(1, steps // EPISODE)})
    spec = RunSpec(
        algo="cvpo",
        config=config.model_dump(mode="json"),
        env_id=ENV,
        seed=0,
        budget=steps,
        steps_per_epoch=steps,
        cost_limit=25.0,
        eval=EvalSpec(episodes=0),
        device="cpu",
    )
    row = metrics_frame(run(spec, root)).iloc[-1]
    rollout, update = float(row["time_rollout"]), float(row["time_update"])
    return {
        "steps": int(row["steps"]),
        "updates": int(row["algo/updates"]),
        "rollout_s": rollout,
        "update_s": update,
        "steps_per_s": float(row["steps"]) / (rollout + update),
    }


def saclag_rate(steps: int, threads: int, root: Path) -> dict[str, Any]:
    """OmniSafe SACLag: epoch 1 random warm-up, epoch 2 (measured) one update per step."""
    from safebench.envs.factory import import_safety_gymnasium

    import_safety_gymnasium()  # OmniSafe imports safety_gymnasium; it needs the 3.11 shim first
    import omnisafe

    cfgs = {
        "seed": 0,
        "train_cfgs": {
            "total_steps": 2 * steps,
            "torch_threads": threads,
            "vector_env_nums": 1,
            "device": "cpu",
            "eval_episodes": 0,
        },
        "algo_cfgs": {"steps_per_epoch": steps, "start_learning_steps": steps},
        "logger_cfgs": {"use_wandb": False, "use_tensorboard": False, "log_dir": str(root)},
    }
    omnisafe.Agent("SACLag", ENV, custom_cfgs=cfgs).learn()
    progress = pd.read_csv(next(root.rglob("progress.csv")))
    last = progress.iloc[-1]
    rollout, update = float(last["Time/Rollout"]), float(last["Time/Update"])
    return {
        "steps": steps,
        "updates": steps,
        "rollout_s": rollout,
        "update_s": update,
        "steps_per_s": steps / (rollout + update),
        "omnisafe_fps": float(last["Time/FPS"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=2000, help="env steps measured per method")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both")
    parser.add_argument("--no-omnisafe", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    pin_threads(args.threads)
    results: dict[str, Any] = {
        "env": ENV,
        "threads": args.threads,
        "raw_env_steps_per_s": raw_env_rate(ENV, 2000).steps_per_s,
    }
    with tempfile.TemporaryDirectory() as tmp:
        results["cvpo"] = cvpo_rate(args.steps, Path(tmp))
    print(f"CVPO   {results['cvpo']}", flush=True)
    if not args.no_omnisafe:
        with tempfile.TemporaryDirectory() as tmp:
            results["saclag"] = saclag_rate(args.steps, args.threads, Path(tmp))
        print(f"SACLag {results['saclag']}", flush=True)
        results["cvpo_over_saclag"] = (
            results["cvpo"]["steps_per_s"] / results["saclag"]["steps_per_s"]
        )
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
