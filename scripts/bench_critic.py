"""Cost of one critic minibatch step: autograd + ``torch.optim.Adam`` vs the fast path.

Times ``CriticPair.fit_minibatch`` (both heads, hidden (64, 64), tanh, OmniSafe's
``max_grad_norm`` 40 and ``critic_norm_coef`` 0.001) on one CPU thread, batch 128, with

* ``autograd``: a ``torch.optim.Adam`` over ``critics.parameters()`` (autograd backward,
  per-tensor clipping and Adam), the path used before :meth:`CriticPair.make_optimizer`;
* ``fast``: the :class:`CriticAdam` from ``make_optimizer`` (hand-written backward, one flat
  parameter buffer, one Adam update of it).

The two are timed in alternating rounds so that load from other processes affects both
alike; the table gives, per step, the median over rounds of wall-clock time and of this
thread's CPU time (the latter is the steadier one on a shared machine).

    .venv/bin/python scripts/bench_critic.py [--obs-dim 17 60] [--rounds 15] [--steps 300]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import torch

from safebench.core.critic_fast import CriticAdam
from safebench.core.critics import CriticPair

BATCH = 128
HIDDEN = (64, 64)
MAX_GRAD_NORM = 40.0
NORM_COEF = 0.001
# OmniSafe defaults: update_iters 10 passes over steps_per_epoch 20000 in minibatches of 128.
STEPS_PER_EPOCH = 10 * -(-20_000 // BATCH)


def make_step(obs_dim: int, fast: bool, seed: int = 0) -> Callable[[], None]:
    """One ``fit_minibatch`` call on a fixed random minibatch, as a zero-argument callable."""
    torch.manual_seed(seed)
    critics = CriticPair(obs_dim, HIDDEN, "tanh")
    optim: torch.optim.Optimizer | CriticAdam = (
        critics.make_optimizer(lr=1e-3) if fast else torch.optim.Adam(critics.parameters(), lr=1e-3)
    )
    gen = torch.Generator().manual_seed(seed + 1)
    obs = torch.randn(BATCH, obs_dim, generator=gen)
    target_r = torch.randn(BATCH, generator=gen)
    target_c = torch.randn(BATCH, generator=gen)

    def step() -> None:
        critics.fit_minibatch(obs, target_r, target_c, optim, MAX_GRAD_NORM, NORM_COEF)

    return step


def time_rounds(
    steps: dict[str, Callable[[], None]], rounds: int, calls: int
) -> dict[str, tuple[float, float]]:
    """Median (wall, thread CPU) milliseconds per call of each step, in alternating rounds."""
    wall: dict[str, list[float]] = {name: [] for name in steps}
    cpu: dict[str, list[float]] = {name: [] for name in steps}
    for step in steps.values():  # warm-up: allocations, first-call dispatch
        for _ in range(max(10, calls // 10)):
            step()
    for _ in range(rounds):
        for name, step in steps.items():
            w0, c0 = time.perf_counter(), time.thread_time()
            for _ in range(calls):
                step()
            wall[name].append((time.perf_counter() - w0) / calls * 1e3)
            cpu[name].append((time.thread_time() - c0) / calls * 1e3)
    return {name: (statistics.median(wall[name]), statistics.median(cpu[name])) for name in steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--obs-dim", type=int, nargs="+", default=[17, 60])
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds per path")
    parser.add_argument("--steps", type=int, default=300, help="fit_minibatch calls per round")
    args = parser.parse_args()
    torch.set_num_threads(1)

    print(
        f"fit_minibatch, batch {BATCH}, hidden {HIDDEN}, tanh, 1 thread; "
        f"median of {args.rounds} rounds x {args.steps} steps"
    )
    header = f"{'obs':>4} {'path':>9} {'wall ms/step':>13} {'cpu ms/step':>12} {'s/epoch':>8}"
    print(header)
    print("-" * len(header))
    for obs_dim in args.obs_dim:
        steps = {"autograd": make_step(obs_dim, fast=False), "fast": make_step(obs_dim, True)}
        result = time_rounds(steps, args.rounds, args.steps)
        for name, (wall_ms, cpu_ms) in result.items():
            epoch_s = wall_ms * STEPS_PER_EPOCH / 1e3
            print(f"{obs_dim:>4} {name:>9} {wall_ms:>13.3f} {cpu_ms:>12.3f} {epoch_s:>8.2f}")
        (ref_wall, ref_cpu), (fast_wall, fast_cpu) = result["autograd"], result["fast"]
        speedup_wall, speedup_cpu = ref_wall / fast_wall, ref_cpu / fast_cpu
        print(f"{obs_dim:>4} {'speedup':>9} {speedup_wall:>12.1f}x {speedup_cpu:>11.1f}x")
    print(f"(s/epoch: wall ms/step x {STEPS_PER_EPOCH} minibatch steps of an OmniSafe epoch)")


if __name__ == "__main__":
    main()
