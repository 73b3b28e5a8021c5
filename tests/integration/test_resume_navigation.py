"""A navigation run interrupted mid-episode and resumed equals the uninterrupted run.

Resume rebuilds every env's mid-episode state by replaying its episode seed and actions into a
new env. An env's first reset runs one ``mj_forward`` fewer than its later ones (stock
Safety-Gymnasium, and the fast envs, which reproduce it), so the replay must begin the same way:
an episode that began with its env's first reset is replayed on a fresh env, a later one on an
env reset before (:meth:`safebench.envs.factory.VectorCMDP.restore`;
tests/envs/test_envs_fast.py checks it down to the solver's warm start). Both cases: the
interruption falls in a later episode of every env, or in the first (1000-step episodes).
Evaluation envs begin every episode with a later reset, in the resumed process as in the first.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from safebench import registry
from safebench.schema.spec import EvalSpec, RunSpec
from safebench.training.runner import RunInterrupted, metrics_frame, run

TIMING = ["time_rollout", "time_update", "time_eval", "wall_time"]


@pytest.mark.parametrize(
    ("env_id", "episode_steps", "warm"),
    [
        ("SafetyCarGoal1-v0", 170, [True, True]),  # interrupted in each env's 4th episode
        ("SafetyCarGoal1-v0", 1000, [False, False]),  # in each env's first episode
        pytest.param("SafetyCarButton1-v0", 1000, [False, False], marks=pytest.mark.slow),
    ],
)
def test_navigation_interrupt_and_resume_is_identical(
    tmp_path: Path, env_id: str, episode_steps: int, warm: list[bool]
) -> None:
    torch.set_num_threads(1)
    spec = RunSpec(
        algo="cpo",
        config=registry.resolve_config("cpo").model_dump(mode="json"),
        env_id=env_id,
        # the interruption (after 600 steps per env) falls mid-episode
        env_kwargs={"max_episode_steps": episode_steps},
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
    checkpoint = torch.load(spec.run_dir(tmp_path / "part") / "checkpoint.pt", weights_only=False)
    assert checkpoint["collector"]["venv"]["warm"] == warm
    resumed = run(spec, tmp_path / "part")
    expected, got = metrics_frame(full), metrics_frame(resumed)
    assert (expected["ep_ret"].notna()).any()  # episodes did finish and were measured
    pd.testing.assert_frame_equal(
        expected.drop(columns=TIMING), got.drop(columns=TIMING), check_exact=True
    )
