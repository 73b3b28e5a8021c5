"""C-TRPO end to end on the built-in continuous CMDP, scored against its exact optimum and CPO.

ContinuousTarget-v0 (cost limit 5 per 20-step episode, optimum return ≈ 14.15) starts
infeasible: the initial policy (σ = 1) costs ≈ 20 per episode, so every run begins with
recovery steps and then has to approach the constraint boundary from below.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from safebench import registry
from safebench.cmdps import BUILTIN_CMDPS
from safebench.runner import metrics_frame, run
from safebench.spec import EvalSpec, RunSpec

ENV = "safebench/ContinuousTarget-v0"
LIMIT = 5.0
EPOCHS = 60
STEPS_PER_EPOCH = 2000
SEEDS = (0, 1, 2)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Shared by the tests of this module: the runner skips a run that is already done, so
    # each (algorithm, seed) trains once.
    return tmp_path_factory.mktemp("ctrpo_cmdp")


def _train(algo: str, seed: int, root: Path) -> pd.DataFrame:
    torch.set_num_threads(1)
    spec = RunSpec(
        algo=algo,
        config=registry.resolve_config(algo).model_dump(mode="json"),
        env_id=ENV,
        seed=seed,
        budget=EPOCHS * STEPS_PER_EPOCH,
        steps_per_epoch=STEPS_PER_EPOCH,
        cost_limit=LIMIT,
        eval=EvalSpec(episodes=50, every_epochs=EPOCHS),  # deterministic, after the last epoch
        num_envs=4,
        device="cpu",
    )
    return metrics_frame(run(spec, root))


def _regret(frame: pd.DataFrame) -> float:
    """Σ_epochs max(0, Ĵc − d): the official C-TRPO cost-regret metric."""
    return float((frame["ep_cost"] - LIMIT).clip(lower=0.0).sum())


@pytest.mark.parametrize("seed", SEEDS)
def test_ctrpo_feasible_and_near_optimal(seed: int, root: Path) -> None:
    frame = _train("ctrpo", seed, root)
    optimum = BUILTIN_CMDPS[ENV]().optimum(LIMIT).ret
    # feasible at the end of training (Ĵc is a 100-episode window = one epoch of episodes)
    assert frame["ep_cost"].iloc[-1] <= 1.05 * LIMIT
    assert frame["ep_cost"].iloc[-5:].mean() <= 1.05 * LIMIT
    # the deterministic policy is within 10% of the constrained optimum
    assert frame["eval_ret"].iloc[-1] >= 0.9 * optimum
    # the run used both modes: recovery from the infeasible start, then barrier-shaped steps
    assert frame["algo/mode"].iloc[0] == 0.0
    assert frame["algo/mode"].iloc[-10:].mean() > 0.5


def test_ctrpo_regret_below_cpo(root: Path) -> None:
    ctrpo = [_regret(_train("ctrpo", seed, root)) for seed in SEEDS]
    cpo = [_regret(_train("cpo", seed, root)) for seed in SEEDS]
    assert sum(ctrpo) < sum(cpo), (ctrpo, cpo)
