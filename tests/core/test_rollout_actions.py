"""What the env receives: the sampled action (OmniSafe's default) or its clip to the box."""

from __future__ import annotations

import numpy as np
import pytest

from safebench import registry
from safebench.core.base import OnPolicyConfig
from safebench.core.onpolicy import OnPolicyAlgorithm
from safebench.core.rollout import Collector, evaluate
from safebench.envs import make_vector_env

ENV = "tests.envs_fixture:ControlCost"


@pytest.mark.parametrize("clip", [False, True])
def test_env_gets_sampled_or_clipped_action(clip: bool) -> None:
    venv = make_vector_env(ENV, 1)
    # σ = e: most sampled actions leave the box [-1, 1]
    config = registry.resolve_config("cpo", {"log_std_init": 1.0, "clip_actions": clip})
    assert isinstance(config, OnPolicyConfig)
    algo = registry.get("cpo").cls(
        venv.observation_space, venv.action_space, config, cost_limit=1.0, seed=0, device="cpu"
    )
    assert isinstance(algo, OnPolicyAlgorithm)
    steps = 40
    collector = Collector(venv, seed=0, window=steps, clip_actions=config.clip_actions)
    rollout, stats = collector.collect(algo, steps)
    act = rollout.act.reshape(-1).astype(np.float64)
    assert (np.abs(act) > 1).mean() > 0.3  # the stored action is the sampled one, always
    sent = np.clip(act, -1.0, 1.0) if clip else act
    # one-step episodes: the window's mean return / cost are exact functions of what was sent
    assert stats.ep_ret == pytest.approx(-np.mean(sent**2), rel=1e-5)
    assert stats.ep_cost == pytest.approx(np.mean(np.abs(sent) > 1))
    assert (stats.ep_cost == 0.0) is clip
    # evaluation follows the same setting; its deterministic action (the mean) is in the box
    # here, so compare the sampling policy instead
    ret, cost, _ = evaluate(
        algo, venv, collector.normalize, 20, 0, deterministic=False, clip_actions=clip
    )
    assert (cost == 0.0) is clip and ret < 0.0
    venv.close()


def test_omnisafe_default_is_unclipped() -> None:
    for name in ("cpo", "pcpo", "p3o", "kfcpo", "ctrpo"):
        config = registry.resolve_config(name)
        assert isinstance(config, OnPolicyConfig) and config.clip_actions is False, name
