"""How much the official script's second reset moves the observation normaliser.

The official C-TRPO baselines reset their vector env twice before the first step
(``make_sa_mujoco_env`` resets with the seed, ``main`` resets again), so the Gymnasium
normaliser has merged two batches of reset observations (20 with 10 envs) where safebench's
collector merges one. This script measures what that does to the statistics the first update
sees: it steps ``--envs`` envs for one epoch (``--steps`` vector steps of uniform random
actions in [-1, 1], rescaled to the box) from one reset and from two, and compares the running
mean and standard deviation at the epoch's end. For scale it does the same with one reset
under another seed (the statistics' own seed-to-seed spread).

    .venv/bin/python scripts/analysis/double_reset.py [--env SafetyHopperVelocity-v1]

The two-reset side's episodes start from other states (its second reset), so its difference
holds trajectory noise as well; a difference below the seed-to-seed spread means the second
reset cannot be told apart from a change of seed.
"""

from __future__ import annotations

import argparse

import gymnasium
import numpy as np
import numpy.typing as npt

from safebench.core.normalize import GymnasiumRunningMeanStd
from safebench.core.rollout import ActionMap
from safebench.envs.factory import VectorCMDP, make_vector_env

Stats = tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]


def epoch_stats(venv: VectorCMDP, seeds: list[int], steps: int) -> Stats:
    """Mean and std of the normaliser after resets with ``seeds`` and ``steps`` random steps."""
    shape = venv.observation_space.shape or (1,)
    norm = GymnasiumRunningMeanStd(shape)
    for seed in seeds:
        norm.update(venv.reset(seed))
    box = venv.action_space
    assert isinstance(box, gymnasium.spaces.Box), "continuous actions only"
    to_env = ActionMap.for_space(box, scale=True, clip=False)  # as training sends actions
    rng = np.random.default_rng(0)
    for _ in range(steps):
        a = rng.uniform(-1.0, 1.0, size=(venv.num_envs, *box.shape)).astype(np.float32)
        norm.update(venv.step(to_env(a))[0])
    return norm.mean.copy(), np.sqrt(norm.var)


def compare(name: str, base: Stats, other: Stats) -> None:
    rel_std = np.abs(other[1] / base[1] - 1.0)
    shift = np.abs(other[0] - base[0]) / base[1]
    print(
        f"{name:<28} std: max {rel_std.max():.2e}, median {np.median(rel_std):.2e}  "
        f"mean shift / std: max {shift.max():.2e}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="SafetyHopperVelocity-v1")
    parser.add_argument("--envs", type=int, default=10)
    parser.add_argument("--steps", type=int, default=2000, help="vector steps (one epoch)")
    args = parser.parse_args()
    venv = make_vector_env(args.env, args.envs)
    try:
        one = epoch_stats(venv, [0], args.steps)
        compare("two resets (official)", one, epoch_stats(venv, [0, 1], args.steps))
        compare("one reset, another seed", one, epoch_stats(venv, [5], args.steps))
    finally:
        venv.close()


if __name__ == "__main__":
    main()
