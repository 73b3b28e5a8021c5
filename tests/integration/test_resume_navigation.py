"""A navigation run interrupted mid-episode and resumed equals the uninterrupted run.

Resume rebuilds every env's mid-episode state by replaying its episode seed and actions into a
new env. Fast navigation envs run the same number of ``mj_forward`` calls on a fresh env's
first reset as on every later one, so that replay is exact whether or not the env was reset
before (tests/test_envs_fast.py checks it down to the solver's warm start). With stock envs
this run happens to match too: the collector resets its new envs once before restoring, which
puts the replay on stock's later-reset path.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from safebench import registry
from safebench.runner import RunInterrupted, metrics_frame, run
from safebench.spec import EvalSpec, RunSpec

TIMING = ["time_rollout", "time_update", "time_eval", "wall_time"]


@pytest.mark.parametrize("env_id", ["SafetyCarGoal1-v0"])
def test_navigation_interrupt_and_resume_is_identical(tmp_path: Path, env_id: str) -> None:
    torch.set_num_threads(1)
    spec = RunSpec(
        algo="cpo",
        config=registry.resolve_config("cpo").model_dump(mode="json"),
        env_id=env_id,
        # 170-step episodes: the interruption (after 600 steps per env) falls mid-episode
        env_kwargs={"max_episode_steps": 170},
        seed=4,
        budget=5 * 400,
        steps_per_epoch=400,
        cost_limit=5.0,
        eval=EvalSpec(episodes=1, every_epochs=2),
        num_envs=2,
        device="cpu",
    )
    full = run(spec, tmp_path / "full")
    polls: list[int] = []

    def stop() -> bool:
        polls.append(1)
        return len(polls) == 3

    with pytest.raises(RunInterrupted):
        run(spec, tmp_path / "part", should_stop=stop)
    assert len(metrics_frame(spec.run_dir(tmp_path / "part"))) == 3
    resumed = run(spec, tmp_path / "part")
    expected, got = metrics_frame(full), metrics_frame(resumed)
    assert (expected["ep_ret"].notna()).any()  # episodes did finish and were measured
    pd.testing.assert_frame_equal(
        expected.drop(columns=TIMING), got.drop(columns=TIMING), check_exact=True
    )
