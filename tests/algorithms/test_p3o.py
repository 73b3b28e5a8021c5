"""P3O: the loss formula, the KL early stop and the learning-rate schedule."""

from __future__ import annotations

import io
import math

import pytest
import torch

from algorithms.p3o import P3O, P3OConfig, p3o_loss
from tests.algorithms.synthetic import box_spaces, discrete_spaces, synthetic_rollout


def test_loss_on_hand_made_batch() -> None:
    ratios = [1.5, 0.5, 1.1, 0.9]
    adv_r = [2.0, 1.0, -1.0, -3.0]
    adv_c = [1.0, -2.0, 0.5, 4.0]
    logp_old = torch.tensor([-1.0, -2.0, -0.5, -3.0], dtype=torch.float64)
    logp = logp_old + torch.log(torch.tensor(ratios, dtype=torch.float64))
    args = (torch.tensor(adv_r, dtype=torch.float64), torch.tensor(adv_c, dtype=torch.float64))
    # min(ρA, clip(ρ, 0.8, 1.2)A): 1.2·2 | 0.5·1 | 1.1·−1 | 0.9·−3
    clip_ref = -(2.4 + 0.5 - 1.1 - 2.7) / 4
    surr_c = (1.5 * 1.0 + 0.5 * -2.0 + 1.1 * 0.5 + 0.9 * 4.0) / 4  # = 1.1625
    ratio = torch.exp(logp - logp_old)
    loss_clip, loss_pen = p3o_loss(ratio, *args, violation=-1.0, kappa=20.0, clip=0.2)
    assert float(loss_clip) == pytest.approx(clip_ref, rel=1e-12)
    assert float(loss_pen) == pytest.approx(20.0 * (surr_c - 1.0), rel=1e-12)
    _, loss_pen = p3o_loss(ratio, *args, violation=-2.0, kappa=20.0, clip=0.2)
    assert float(loss_pen) == 0.0  # ReLU: the penalty is inactive well inside the constraint


def _config(**overrides: float) -> P3OConfig:
    return P3OConfig(hidden_sizes=(16, 16), update_iters=2, **overrides)


def test_update_schedule_and_resume() -> None:
    obs_space, act_space = box_spaces()
    algo = P3O(obs_space, act_space, _config(), cost_limit=25.0, seed=0)
    algo.set_schedule(4)
    lrs = []
    for epoch in range(2):
        info = algo.update(synthetic_rollout(algo, n=128, ep_cost=30.0, seed=epoch))
        assert all(math.isfinite(v) for v in info.values())
        assert info["critic_steps"] == 2 * info["update_passes"]
        lrs.append(info["actor_lr"])
    assert lrs == pytest.approx([3e-4, 3e-4 * 0.75])
    assert algo.actor_lr == pytest.approx(3e-4 * 0.5)

    clone = P3O(obs_space, act_space, _config(), cost_limit=25.0, seed=7)
    clone.set_schedule(4)
    buffer = io.BytesIO()  # through bytes, as the runner checkpoints
    torch.save(algo.state_dict(), buffer)
    buffer.seek(0)
    clone.load_state_dict(torch.load(buffer, weights_only=False))
    rollout = synthetic_rollout(algo, n=128, ep_cost=30.0, seed=5)
    assert clone.update(rollout) == algo.update(rollout)
    for a, b in zip(algo.actor.parameters(), clone.actor.parameters(), strict=True):
        assert torch.equal(a, b)


def test_kl_early_stop_after_first_pass() -> None:
    obs_space, act_space = discrete_spaces()
    algo = P3O(obs_space, act_space, _config(target_kl=1e-12), cost_limit=25.0, seed=1)
    info = algo.update(synthetic_rollout(algo, n=128, seed=1))
    assert info["update_passes"] == 1.0
    assert info["kl"] > 1e-12
    assert algo.actor_lr == 3e-4  # no schedule set: constant rate
