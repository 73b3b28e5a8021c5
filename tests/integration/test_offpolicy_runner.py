"""The runner's off-policy mode with CVPO: schedule, replay contents, exact resume, convergence."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from safebench import registry
from safebench.cmdps import BUILTIN_CMDPS
from safebench.core.offpolicy import OffPolicyAlgorithm, OffPolicyCollector
from safebench.envs.factory import make_vector_env
from safebench.experiment.conformance import CVPO_TINY, interrupted_after
from safebench.results.store import RunDir
from safebench.schema.spec import EvalSpec, RunSpec
from safebench.training.runner import metrics_frame, run
from tests.algorithms.convergence import train_seeds
from tests.learning import Margins, median, torch_threads

ENV = "safebench/ContinuousTarget-v0"  # 20-step episodes, action in [-2, 2], cost limit 5
TIMING = ["time_rollout", "time_update", "time_eval", "wall_time"]
TINY = CVPO_TINY  # small nets and batches, an update round after every episode


def spec(seed: int = 1, epochs: int = 4, steps: int = 200, **cfg: Any) -> RunSpec:
    config = registry.resolve_config("cvpo", {**TINY, **cfg}).model_dump(mode="json")
    return RunSpec(
        algo="cvpo",
        config=config,
        env_id=ENV,
        seed=seed,
        budget=epochs * steps,
        steps_per_epoch=steps,
        cost_limit=5.0,
        eval=EvalSpec(episodes=2, every_epochs=2),
        num_envs=2,
        device="cpu",
    )


def numbers(run_dir: Path) -> pd.DataFrame:
    return metrics_frame(run_dir).drop(columns=TIMING)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(torch_threads())


def test_schedule_warmup_and_replay_contents(tmp_path: Path) -> None:
    run_dir = run(spec(epochs=2), tmp_path)
    frame = metrics_frame(run_dir)
    # Epoch 0: 40 warm-up steps then 40 // 2 = 20 updates; 160 more steps = 8 rounds × 2.
    # Epoch 1: 200 steps = 10 rounds × 2.
    assert frame["algo/updates"].tolist() == [36.0, 20.0]
    assert frame["algo/buffer"].tolist() == [200.0, 400.0]
    assert frame["steps"].tolist() == [200, 400]
    assert frame["ep_len"].tolist() == [20.0, 20.0]
    state = torch.load(RunDir(run_dir).checkpoint, weights_only=False)
    replay = state["collector"]["replay"]
    # Warm-up actions (the first 40 transitions) are uniform on [-2, 2].
    warm = replay["act"][:40, 0]
    assert warm.min() > -2.0 and warm.max() < 2.0
    assert warm.min() < -1.5 and warm.max() > 1.5 and abs(warm.mean()) < 0.6
    # Time-outs are not terminal and store the final observation (t/H = 1) as successor;
    # every other successor is the next stored observation of the same env (t/H one higher).
    assert not replay["terminated"].any()
    phase = np.round(replay["obs"][:, 1] * 20).astype(int)
    next_phase = np.round(replay["next_obs"][:, 1] * 20).astype(int)
    np.testing.assert_array_equal(next_phase, phase + 1)
    ends = phase == 19
    assert ends.sum() == 400 // 20
    # Envs step in lock-step: row r + 2 is the same env's next transition.
    np.testing.assert_array_equal(
        replay["obs"][2:][~ends[:-2]], replay["next_obs"][:-2][~ends[:-2]]
    )


@pytest.mark.parametrize("goal_terminal", [True, False])
def test_goal_met_and_terminations_reach_the_buffer(goal_terminal: bool) -> None:
    """``info['goal_met']`` (every third step) is stored as its own flag, apart from true
    terminations (after step 7 of an early-ending episode); time-outs (after step 8) are
    neither. With ``goal_met_terminal=False`` the flag is not read."""
    venv = make_vector_env("tests.envs_fixture:GoalWalk", 2)
    config = registry.resolve_config("cvpo", {**TINY, "goal_met_terminal": goal_terminal})
    algo = registry.get("cvpo").cls(
        venv.observation_space, venv.action_space, config, cost_limit=1.0, seed=0, device="cpu"
    )
    assert isinstance(algo, OffPolicyAlgorithm) and algo.config.timeout_steps is None
    algo.set_episode_length(8)  # the fixture declares no max_episode_steps
    collector = OffPolicyCollector(venv, 0, algo)
    while collector.total_steps < 160:
        collector.collect(algo, 160 - collector.total_steps)
    data = collector.buffer.state_dict()
    t_next, early = data["next_obs"][:, 0], data["next_obs"][:, 1] == 1.0
    np.testing.assert_array_equal(data["goal_met"], goal_terminal * (t_next % 3 == 0))
    np.testing.assert_array_equal(data["terminated"], early & (t_next == 7))
    assert data["terminated"].any() and (~early & (t_next == 8)).any()  # both endings occur
    venv.close()


def test_interrupt_and_resume_is_identical(tmp_path: Path) -> None:
    s = spec()
    full = run(s, tmp_path / "full")
    part = interrupted_after(s, tmp_path / "part", 2)
    resumed = run(s, tmp_path / "part")
    assert resumed == part
    pd.testing.assert_frame_equal(numbers(full), numbers(resumed))


def test_checkpoint_without_replay_resumes_but_not_exactly(tmp_path: Path) -> None:
    s = spec(checkpoint_replay=False)
    full = run(s, tmp_path / "full")
    part = interrupted_after(s, tmp_path / "part", 2)
    assert torch.load(RunDir(part).checkpoint, weights_only=False)["collector"]["replay"] is None
    run(s, tmp_path / "part")
    a, b = numbers(full), numbers(part)
    pd.testing.assert_frame_equal(a.iloc[:2], b.iloc[:2])
    # After the resume the buffer restarts empty: the same updates sample from fewer, newer
    # transitions, so the run continues differently.
    assert b["algo/buffer"].iloc[2] == 200.0 and a["algo/buffer"].iloc[2] == 600.0
    assert b["algo/updates"].iloc[2] == a["algo/updates"].iloc[2] == 20.0
    assert not a["ep_ret"].iloc[3:].equals(b["ep_ret"].iloc[3:])


@pytest.mark.slow
@pytest.mark.learning
def test_converges_on_continuous_target(margins: Margins) -> None:
    """Feasible and within 10% of the constrained optimum (J_r* ≈ 14.15 at cost ≤ 5).

    Toy settings (stated, not the official ones): [64, 64] nets, batch 64, K = 16, an update
    round after every episode with episode_rerun_num 8 (8/64 = 0.125 updates per env step,
    close to the official 40/300 ≈ 0.133), polyak 0.95 instead of 0.995 (the target actor is
    the E-step's sampling policy, so a faster target moves the policy in fewer updates), and
    γ = 0.8: the targets are exogenous, so the optimal policy does not depend on γ, and the
    cost critic bootstraps through time-outs (an infinite-horizon discounted cost), which
    matches the budget ĉ = C(1 − γ^T)/((1 − γ)T) only when γ^T ≪ 1 (0.8^20 ≈ 0.01).
    """
    cfg = {
        "hidden_sizes": [64, 64],
        "batch_size": 64,
        "sample_action_num": 16,
        "sample_episode_num": 1,
        "episode_rerun_num": 8,
        "polyak": 0.95,
        "gamma": 0.8,
    }
    runs = train_seeds(
        "cvpo", ENV, cfg, epochs=10, num_envs=1, tail=1, eval_episodes=10, eval_every=10
    )
    optimum = BUILTIN_CMDPS[ENV]().optimum(5.0).ret
    costs = [o.train_cost for o in runs]
    rets = [o.eval_ret for o in runs]
    margins.le("median final Ĵc", median(costs), 1.05 * 5.0, runs)
    margins.ge("median eval return", median(rets), 0.9 * optimum, runs)
    margins.le("max final Ĵc (sanity)", max(costs), 1.25 * 5.0, runs)
    margins.ge("min eval return (sanity)", min(rets), 0.75 * optimum, runs)
