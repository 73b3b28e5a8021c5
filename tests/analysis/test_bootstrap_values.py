"""scripts/analysis/bootstrap_values.py: the critic at a time-out's raw and normalised final
observation, read from a run's checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest

from safebench import registry
from safebench.schema.spec import EvalSpec, RunSpec
from safebench.training.runner import run
from scripts.analysis.bootstrap_values import bootstrap_values


def _trained(root: Path, normalize: bool) -> Path:
    config = registry.resolve_config("trpo-lag", {"obs_normalize": normalize})
    spec = RunSpec(
        algo="trpo-lag",
        config=config.model_dump(mode="json"),
        env_id="SafetyHalfCheetahVelocity-v1",
        seed=0,
        budget=2000,
        steps_per_epoch=1000,
        cost_limit=25.0,
        eval=EvalSpec(episodes=0),
        num_envs=2,
        device="cpu",
    )
    return run(spec, root)


@pytest.mark.parametrize("normalize", [True, False])
def test_raw_and_normalised_values_differ_exactly_when_a_normaliser_is_on(
    tmp_path: Path, normalize: bool
) -> None:
    row = bootstrap_values(_trained(tmp_path, normalize), envs=2)
    assert row["timeouts"] == 2  # HalfCheetah never terminates: both envs time out at 1000 steps
    assert row["gamma"] == pytest.approx(0.99)
    if normalize:
        assert abs(row["v_raw"] - row["v_normalised"]) > 1e-3
    else:
        assert row["v_raw"] == row["v_normalised"]
