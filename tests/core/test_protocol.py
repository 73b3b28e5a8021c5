"""The env protocol, typed once for both algorithm kinds and read off each config."""

from __future__ import annotations

import dataclasses

import pytest

from safebench import registry
from safebench.core.base import EnvProtocol, OnPolicyConfig
from safebench.core.offpolicy import OffPolicyConfig


@pytest.mark.parametrize("name", registry.available())
def test_every_algorithm_states_its_protocol(name: str) -> None:
    entry = registry.get(name)
    config = entry.config_cls()
    assert isinstance(config, OnPolicyConfig | OffPolicyConfig)  # each kind's base states it
    protocol = config.protocol()
    assert isinstance(protocol, EnvProtocol)
    assert protocol.ep_cost_window == config.ep_cost_window
    assert protocol.normalize_obs == config.obs_normalize
    if entry.kind == "on-policy":
        assert protocol.action_scale and not protocol.clip_actions
    else:  # an off-policy actor acts in the env's box
        assert not protocol.action_scale and not protocol.clip_actions


def test_the_protocol_follows_the_config() -> None:
    config = OnPolicyConfig(
        obs_normalizer="gymnasium",
        truncation_bootstrap="raw",
        ep_cost_window=7,
        clip_actions=True,
        action_scale=False,
        obs_normalize=False,
    )
    assert dataclasses.asdict(config.protocol()) == {
        "action_scale": False,
        "clip_actions": True,
        "normalize_obs": False,
        "obs_normalizer": "gymnasium",
        "truncation_bootstrap": "raw",
        "ep_cost_window": 7,
    }
    off = OffPolicyConfig(clip_actions=True, ep_cost_window=9, obs_normalize=True).protocol()
    assert (off.clip_actions, off.ep_cost_window, off.normalize_obs) == (True, 9, True)
