"""What the env receives: the policy's action rescaled from [-1, 1] to the env's box exactly as
OmniSafe's ``ActionScale`` (the field's protocol), unclipped; or the raw sample; or a clip."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from gymnasium import spaces

from safebench import registry
from safebench.core.base import OnPolicyConfig
from safebench.core.offpolicy import OffPolicyConfig
from safebench.core.onpolicy import OnPolicyAlgorithm
from safebench.core.rollout import ActionMap, Collector, evaluate, scale_action
from safebench.envs.factory import SyncVectorCMDP, import_safety_gymnasium, make_vector_env

ENV = "tests.envs_fixture:ControlCost"
RECORDING = "safebench.experiment.conformance:RecordingBox"  # records what it receives
ON_POLICY = [name for name, entry in registry.available().items() if entry.kind == "on-policy"]
OFF_POLICY = [name for name, entry in registry.available().items() if entry.kind == "off-policy"]


def omnisafe_action_scale(box: spaces.Box, action: np.ndarray) -> np.ndarray:
    """What OmniSafe's own ``ActionScale(env, low=-1, high=1)`` passes to the env it wraps."""
    import_safety_gymnasium()  # Python 3.11 shim: must precede OmniSafe's own import of it
    from omnisafe.envs.wrapper import ActionScale

    class Inner:  # the wrapped env: only its box and a step that returns what it received
        def __init__(self) -> None:
            self._action_space = self.action_space = box

        def step(self, received: torch.Tensor) -> Any:
            return received

    wrapper = ActionScale(Inner(), device=torch.device("cpu"), low=-1.0, high=1.0)
    return wrapper.step(torch.as_tensor(action)).numpy()


def _algo(venv: SyncVectorCMDP, **overrides: Any) -> OnPolicyAlgorithm:
    config = registry.resolve_config("cpo", overrides)
    algo = registry.get("cpo").cls(
        venv.observation_space, venv.action_space, config, cost_limit=1.0, seed=0, device="cpu"
    )
    assert isinstance(algo, OnPolicyAlgorithm)
    return algo


def _received(venv: SyncVectorCMDP) -> np.ndarray:
    """Every action the envs received, env by env: ``(steps, act_dim)`` per env, stacked."""
    return np.stack([np.stack(env.env.received) for env in venv.envs])


@pytest.mark.parametrize(
    "box", [{"low": -0.4, "high": 0.4}, {"low": [-20.0, -0.785], "high": [20.0, 0.785], "dim": 2}]
)
def test_rescaling_matches_omnisafe_action_scale(box: dict[str, Any]) -> None:
    """±0.4 is SafetyHumanoidVelocity-v1's box; (±20, ±0.785) SafetyRacecarCircle1-v0's."""
    venv = make_vector_env(RECORDING, 2, **box)
    assert isinstance(venv, SyncVectorCMDP)
    space = venv.action_space
    assert isinstance(space, spaces.Box)
    algo = _algo(venv, log_std_init=0.5)  # σ ≈ 1.6: many samples leave [-1, 1]
    config = algo.config
    assert config.action_scale is True and config.clip_actions is False  # the defaults
    collector = Collector(
        venv, seed=0, action_scale=config.action_scale, clip_actions=config.clip_actions
    )
    rollout, _ = collector.collect(algo, 40)
    sample = rollout.act.reshape(20, 2, -1).transpose(1, 0, 2)  # (env, step, act_dim)
    assert (np.abs(sample) > 1).mean() > 0.2
    expected = omnisafe_action_scale(space, sample.reshape(40, -1)).reshape(sample.shape)
    # bit for bit, and unclipped: samples beyond ±1 arrive beyond the box
    np.testing.assert_array_equal(_received(venv), expected)
    assert np.array_equal(scale_action(sample, space.low, space.high), expected)
    assert ((expected < space.low) | (expected > space.high)).any()
    # the stored action and its log-probability stay the policy's sample
    np.testing.assert_array_equal(rollout.logp, algo.log_prob(rollout.obs, rollout.act))

    # evaluation goes through the same map (zero observations: one deterministic action)
    for env in venv.envs:
        env.env.received.clear()
    evaluate(algo, venv, collector.normalize, 4, 0, deterministic=True, to_env=collector.action_map)
    # (the same batch shape as in evaluate(): a forward's last bits may depend on it)
    mode = algo.act(collector.normalize(np.zeros((2, 1), np.float32)), deterministic=True)
    got = _received(venv)  # (env, step, act_dim)
    expected = omnisafe_action_scale(space, mode)[:, None, :]
    np.testing.assert_array_equal(got, np.broadcast_to(expected, got.shape))
    venv.close()


def test_switch_off_sends_the_sample_and_clip_applies_after_scaling() -> None:
    for scale, clip in [(False, False), (True, True)]:
        venv = make_vector_env(RECORDING, 1)
        assert isinstance(venv, SyncVectorCMDP)
        space = venv.action_space
        assert isinstance(space, spaces.Box)
        algo = _algo(venv, log_std_init=0.5, action_scale=scale, clip_actions=clip)
        collector = Collector(venv, seed=1, action_scale=scale, clip_actions=clip)
        rollout, stats = collector.collect(algo, 30)
        received = _received(venv)[0]
        if scale:
            expected = np.clip(omnisafe_action_scale(space, rollout.act), space.low, space.high)
            assert stats.ep_cost == 0.0  # nothing left the box
        else:
            expected = rollout.act
        np.testing.assert_array_equal(received, expected)
        venv.close()


def test_unit_box_and_unbounded_or_discrete_spaces_get_the_identity() -> None:
    """On [-1, 1] the affine map is the identity and is skipped, so runs on such boxes are
    bit-identical to the raw-sample protocol; OmniSafe's float32 −1 + (a + 1) differs from
    ``a`` only in the last bits."""
    a = np.random.default_rng(0).normal(0.0, 2.0, (1000, 3)).astype(np.float32)
    unit = spaces.Box(-1.0, 1.0, (3,), np.float32)
    to_env = ActionMap.for_space(unit, scale=True, clip=False)
    assert to_env(a) is a
    omni = omnisafe_action_scale(unit, a)
    assert 0 < np.abs(omni - a).max() <= 2.0**-21
    unbounded = spaces.Box(-np.inf, np.inf, (3,), np.float32)
    assert ActionMap.for_space(unbounded, scale=True, clip=True)(a) is a
    ints = np.array([0, 2, 1])
    assert ActionMap.for_space(spaces.Discrete(3), scale=True, clip=True)(ints) is ints


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
    collector = Collector(
        venv, seed=0, window=steps, action_scale=True, clip_actions=config.clip_actions
    )
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
        algo, venv, collector.normalize, 20, 0, deterministic=False, to_env=collector.action_map
    )
    assert (cost == 0.0) is clip and ret < 0.0
    venv.close()


def test_one_action_protocol_for_every_algorithm() -> None:
    """The field's protocol by default: on-policy methods rescale [-1, 1] to the box, and no
    algorithm clips what the env receives (CVPO's actor acts in the box itself)."""
    for name in ON_POLICY:
        config = registry.resolve_config(name)
        assert isinstance(config, OnPolicyConfig), name
        assert config.action_scale is True and config.clip_actions is False, name
    assert "cvpo" in OFF_POLICY
    for name in OFF_POLICY:
        config = registry.resolve_config(name)
        assert isinstance(config, OffPolicyConfig) and config.clip_actions is False, name
