"""Raw environment speed: stock vs fast Safety-Gymnasium navigation, and the other envs' rates.

    .venv/bin/python scripts/bench/envs.py [--steps N] [--resets N] [ENV_ID ...]

For every navigation task, stock (``fast=False``) and fast (the default) are each measured in
a fresh child process, one after the other, on one core:

* **steps/s**: random actions, episode resets included (``reset()`` at every episode end, as
  training pays them) — the denominator of every training-throughput ratio;
* **reset ms**: mean wall time of ``--resets`` seeded resets after the env's first one;
* **RSS/env MB**: resident memory of the child after creating the env and resetting it
  ``--resets + 1`` times, minus its resident memory just before creating it (interpreter,
  NumPy, MuJoCo and Safety-Gymnasium already imported), and **peak MB** the same against the
  child's peak resident memory (stock holds the old and the new model at once while it
  rebuilds). Linux (``/proc``); elsewhere the RSS columns read n/a.

Other envs (velocity tasks, built-ins) have no fast path; their raw rate is listed once.
Timings on a shared machine are noisy: compare the ratio column, or re-run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

from rich.console import Console
from rich.table import Table

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


def _rss_mb() -> float | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, AttributeError):
        return None


def _peak_mb() -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def measure(env_id: str, fast: bool, steps: int, resets: int) -> dict[str, float | None]:
    """One env in this process: reset time, memory, steps/s (see the module docstring)."""
    import numpy as np

    from safebench.envs.factory import import_safety_gymnasium, make_env, safety_gymnasium_ids
    from safebench.training.bench import pin_threads, raw_env_rate

    pin_threads(1)
    import_safety_gymnasium()
    before = _rss_mb()
    env = make_env(env_id, **({"fast": fast} if env_id in safety_gymnasium_ids() else {}))
    env.reset(seed=0)  # builds the world
    seconds = []
    for seed in range(1, resets + 1):
        start = time.perf_counter()
        env.reset(seed=seed)
        seconds.append(time.perf_counter() - start)
    after, peak = _rss_mb(), _peak_mb()
    rate = raw_env_rate(env_id, steps, env=env)
    return {
        "steps_per_s": rate.steps_per_s,
        "reset_ms": 1e3 * float(np.mean(seconds)),
        "rss_mb": None if after is None or before is None else after - before,
        "peak_mb": None if peak is None or before is None else peak - before,
    }


def _child(env_id: str, fast: bool, steps: int, resets: int) -> dict[str, float | None]:
    """:func:`measure` in a fresh interpreter, so that memory is the env's alone."""
    args = [env_id, "fast" if fast else "stock", str(steps), str(resets)]
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=True
    )
    result: dict[str, float | None] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("envs", nargs="*", default=DEFAULT_ENVS)
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--resets", type=int, default=5)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        env_id, mode, steps, resets = args.child
        print(json.dumps(measure(env_id, mode == "fast", int(steps), int(resets))))
        return

    from safebench.envs import fastnav

    nav = Table(
        "env", "", "steps/s", "ratio", "reset ms", "RSS/env MB", "peak MB",
        title=f"navigation: stock vs fast ({args.steps} random steps, resets included)",
    )  # fmt: skip
    other = Table("env", "steps/s", title="other envs: raw step rate (no fast path)")
    for env_id in args.envs:
        if not fastnav.supports(env_id, {}):
            other.add_row(env_id, f"{_child(env_id, False, args.steps, 1)['steps_per_s']:,.0f}")
            continue
        stock = _child(env_id, False, args.steps, args.resets)
        fast = _child(env_id, True, args.steps, args.resets)
        for label, r in (("stock", stock), ("fast", fast)):
            ratio = f"{r['steps_per_s'] / stock['steps_per_s']:.2f}x"  # type: ignore[operator]
            reset = f"{r['reset_ms']:,.1f}"
            rss, peak = _mb(r["rss_mb"]), _mb(r["peak_mb"])
            nav.add_row(env_id if label == "stock" else "", label, f"{r['steps_per_s']:,.0f}",
                        ratio, reset, rss, peak)  # fmt: skip
    console = Console()
    if nav.row_count:
        console.print(nav)
    if other.row_count:
        console.print(other)


if __name__ == "__main__":
    main()
