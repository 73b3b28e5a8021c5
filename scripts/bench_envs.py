"""Raw environment step rates (random actions, resets included, one core).

The denominator of every training-throughput ratio safebench reports:

    .venv/bin/python scripts/bench_envs.py [--steps N] [ENV_ID ...]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

from rich.console import Console
from rich.table import Table

from safebench.bench import pin_threads, raw_env_rate

DEFAULT_ENVS = [
    "SafetyPointGoal1-v0",
    "SafetyCarButton1-v0",
    "SafetyRacecarCircle1-v0",
    "SafetyPointPush1-v0",
    "SafetyHopperVelocity-v1",
    "SafetyAntVelocity-v1",
    "SafetyHalfCheetahVelocity-v1",
    "safebench/ContinuousTarget-v0",
    "safebench/TabularCMDP-v0",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("envs", nargs="*", default=DEFAULT_ENVS)
    parser.add_argument("--steps", type=int, default=5000)
    args = parser.parse_args()
    pin_threads(1)
    table = Table("env", "steps", "episodes", "seconds", "steps/s", title="raw env step rate")
    for env_id in args.envs:
        r = raw_env_rate(env_id, args.steps)
        table.add_row(
            env_id, str(r.steps), str(r.episodes), f"{r.seconds:.2f}", f"{r.steps_per_s:,.0f}"
        )
    Console().print(table)


if __name__ == "__main__":
    main()
