"""The field's baselines against the official C-TRPO code's arithmetic (docs/baselines.md).

Each loss is checked on the spec's hand-computed numbers; the protocol pieces (Ĵc, joint
gradient clipping, variants, the trust region of TRPO-Lag) on small exact cases.
"""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
import torch

from algorithms.cup import CUPConfig, cup_projection_loss
from algorithms.focops import focops_loss
from algorithms.ipo import barrier_coefficient, omnisafe_penalty
from algorithms.p3o import P3OConfig, p3o_loss
from algorithms.ppo_lag import PPOLag, PPOLagConfig
from algorithms.trpo_lag import TRPOLag, TRPOLagConfig
from safebench.core.critics import CriticPair
from safebench.core.first_order import (
    clipped_surrogate,
    lagrangian_advantage,
    pessimistic_cost_surrogate,
)
from safebench.core.onpolicy import Rollout
from safebench.core.optim import kl_mean, kl_sum_dims
from safebench.core.rollout import EpisodeTracker

T = torch.float64


def t(*xs: float) -> torch.Tensor:
    return torch.tensor(xs, dtype=T)


def test_ppo_clipped_surrogate() -> None:
    # T1: ρ = [1.5, 0.5, 1.1], A = [1, 1, −1], ε = 0.2 -> min terms [1.2, 0.5, −1.1].
    assert float(clipped_surrogate(t(1.5, 0.5, 1.1), t(1, 1, -1), 0.2)) == pytest.approx(-0.2)


def test_lagrangian_advantage() -> None:
    # T2.d
    adv = lagrangian_advantage(t(1, -1), t(2, 0), 0.5)
    assert adv.tolist() == pytest.approx([0.0, -2 / 3])


def test_trpo_lag_kl_is_averaged_over_action_dimensions() -> None:
    # T3.b: N([0,0], I) -> N([0.2, 0], I): per-dim KL [0.02, 0]; TRPO's KL_m 0.01, PPO's 0.02.
    class Fixed(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mu = torch.nn.Parameter(torch.tensor([[0.2, 0.0]], dtype=T))

        def distribution(self, obs: torch.Tensor) -> torch.distributions.Normal:
            return torch.distributions.Normal(
                self.mu.expand(len(obs), 2), torch.ones(1, 2, dtype=T)
            )

    actor = Fixed()
    old = torch.distributions.Normal(torch.zeros(1, 2, dtype=T), torch.ones(1, 2, dtype=T))
    obs = torch.zeros(1, 3, dtype=T)
    assert float(kl_mean(actor, obs, old).detach()) == pytest.approx(0.01)  # type: ignore[arg-type]
    assert float(kl_sum_dims(actor, obs, old).detach()) == pytest.approx(0.02)  # type: ignore[arg-type]


def test_focops_broadcast_and_per_sample_losses() -> None:
    # T5.a: KL = [0.01, 0.03], ρA = [1, 2], λ = 1.5, η = 0.02.
    kl, ra = t(0.01, 0.03), t(1.0, 2.0)
    assert float(focops_loss(kl, ra, 1.5, 0.02, "broadcast")) == pytest.approx(-0.495)
    assert float(focops_loss(kl, ra, 1.5, 0.02, "per-sample")) == pytest.approx(
        -0.3283333, abs=1e-7
    )


def test_cup_projection_loss_and_coefficient() -> None:
    # T6.a: c = (1 − 0.99·0.95)/0.01 = 5.95; λ = 0.2, ρ = [1.1, 0.9], Â_c = [1, −2], KL = 0.
    cfg = CUPConfig()
    coef = (1 - cfg.gamma * cfg.cup_lambda) / (1 - cfg.gamma)
    assert coef == pytest.approx(5.95)
    loss = cup_projection_loss(t(1.1, 0.9) * t(1, -2), t(0, 0), 0.2, coef)
    assert float(loss) == pytest.approx(-0.4165)


def test_ipo_barrier_sign_recovery_and_omnisafe_penalty() -> None:
    ratio, adv_c = t(1.3, 0.7), t(0.1, 0.1)
    surr = float((ratio * adv_c).mean())  # 0.1
    # T7.a / T7.b: the official term is −mean(ρÂc)/(t(d − Ĵc)); the paper's is its negative.
    assert barrier_coefficient(20.0, 25.0, 20.0, "official") * surr == pytest.approx(-0.001)
    assert barrier_coefficient(20.0, 25.0, 20.0, "paper") * surr == pytest.approx(0.001)
    assert barrier_coefficient(24.99, 25.0, 20.0, "official") * surr == pytest.approx(
        -0.5, rel=1e-9
    )
    # T7.c: recovery = the pessimistic clipped cost surrogate.
    assert float(pessimistic_cost_surrogate(ratio, adv_c, 0.2)) == pytest.approx(0.105)
    assert omnisafe_penalty(20.0, 25.0, 0.01, 1.0) == pytest.approx(0.002)
    assert omnisafe_penalty(24.99, 25.0, 0.01, 1.0) == pytest.approx(0.999999, rel=1e-5)
    assert omnisafe_penalty(30.0, 25.0, 0.01, 1.0) == 1.0


def test_p3o_official_and_omnisafe_penalties() -> None:
    ratio, adv_c, adv_r = t(1.3, 0.7), t(0.1, 0.1), t(0.0, 0.0)
    # T8.a: Ĵc = 20: official 10·max(0, 0.105 + 0.01·(−5)) = 0.55; OmniSafe 20·ReLU(0.1 − 5) = 0.
    _, pen = p3o_loss(ratio, adv_r, adv_c, 0.01 * (20 - 25), 10.0, 0.2, "official")
    assert float(pen) == pytest.approx(0.55)
    _, pen = p3o_loss(ratio, adv_r, adv_c, 20 - 25, 20.0, 0.2, "omnisafe")
    assert float(pen) == 0.0
    # T8.b: Ĵc = 30: official 1.55, OmniSafe 102.
    _, pen = p3o_loss(ratio, adv_r, adv_c, 0.01 * (30 - 25), 10.0, 0.2, "official")
    assert float(pen) == pytest.approx(1.55)
    _, pen = p3o_loss(ratio, adv_r, adv_c, 30 - 25, 20.0, 0.2, "omnisafe")
    assert float(pen) == pytest.approx(102.0)


def test_official_cost_estimate_is_the_epoch_mean_of_window_snapshots() -> None:
    # T0.4: epoch 0 ends episodes of cost 10 and 30, epoch 1 of 50 and 10.
    tracker = EpisodeTracker(num_envs=2, window=50)
    zero, one = np.zeros(2), np.ones(2, dtype=bool)
    tracker.add(zero, np.array([10.0, 30.0]), one)
    assert np.mean(tracker.snapshots) == 15.0 and tracker.stats().ep_cost == 20.0
    tracker.snapshots.clear()
    tracker.add(zero, np.array([50.0, 10.0]), one)
    assert tracker.snapshots == [30.0, 25.0]
    assert np.mean(tracker.snapshots) == 27.5  # official Ĵc(1)
    assert tracker.stats().ep_cost == 25.0  # OmniSafe's window mean


def _spaces() -> tuple[gymnasium.spaces.Box, gymnasium.spaces.Box]:
    return gymnasium.spaces.Box(-np.inf, np.inf, (3,)), gymnasium.spaces.Box(-1, 1, (2,))


def _rollout(algo: PPOLag | TRPOLag, n: int = 256, seed: int = 0) -> Rollout:
    rng = np.random.default_rng(seed)
    obs = rng.standard_normal((n, 3)).astype(np.float32)
    act = rng.standard_normal((n, 2)).astype(np.float32)
    return Rollout(
        obs=obs,
        act=act,
        logp=algo.log_prob(obs, act),
        adv_r=rng.standard_normal(n),
        adv_c=rng.standard_normal(n),
        target_r=50 * rng.standard_normal(n),
        target_c=50 * rng.standard_normal(n),
        ep_cost=40.0,
        ep_ret=0.0,
        ep_cost_epoch=30.0,
    )


def test_first_update_sees_zero_cost_then_the_epoch_mean() -> None:
    obs_space, act_space = _spaces()
    algo = PPOLag(obs_space, act_space, PPOLagConfig(update_iters=1), cost_limit=25.0, seed=0)
    assert algo.prepare(_rollout(algo)).ep_cost == 0.0  # P2: Ĵc(0) = 0.0
    info = algo.update(_rollout(algo))
    assert info["ep_cost_estimate"] == 0.0 and info["lagrangian"] == 0.0
    assert algo.prepare(_rollout(algo)).ep_cost == 30.0  # ep_cost_epoch, not the window's 40
    window = PPOLag(obs_space, act_space, PPOLagConfig(variant="omnisafe"), cost_limit=25.0, seed=0)
    assert window.prepare(_rollout(window)).ep_cost == 40.0


def test_joint_gradient_clip_equals_one_clip_grad_norm_over_actor_and_critics() -> None:
    """One fast minibatch step with joint clipping = autograd + torch's clip_grad_norm_ over
    actor and both critics as one set, then Adam (targets large enough that the clip acts)."""
    torch.manual_seed(0)
    critics = CriticPair(3, (8, 8))
    reference = CriticPair(3, (8, 8))
    reference.load_state_dict(critics.state_dict())
    actor = torch.nn.Linear(3, 2)
    actor_ref = torch.nn.Linear(3, 2)
    actor_ref.load_state_dict(actor.state_dict())
    obs = torch.randn(16, 3)
    tr, tc = 100 * torch.randn(16), 100 * torch.randn(16)

    def actor_loss(net: torch.nn.Module) -> torch.Tensor:
        return (net(obs) ** 2).sum()

    actor_loss(actor).backward()
    grads = [p.grad for p in actor.parameters() if p.grad is not None]
    critics.fit_minibatch(obs, tr, tc, critics.make_optimizer(3e-4), 1.0, 0.001, grads)
    # Reference: the official update, written with autograd.
    pred = reference(obs)
    loss = ((pred[:, 0] - tr) ** 2).mean() + ((pred[:, 1] - tc) ** 2).mean()
    loss = loss + 0.001 * sum(p.pow(2).sum() for p in reference.parameters())
    loss = loss + actor_loss(actor_ref)
    loss.backward()
    params = [*actor_ref.parameters(), *reference.parameters()]
    norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
    assert float(norm) > 10.0  # the clip acts
    torch.optim.Adam(reference.parameters(), lr=3e-4).step()
    for got, want in zip(actor.parameters(), actor_ref.parameters(), strict=True):
        assert got.grad is not None and want.grad is not None
        torch.testing.assert_close(got.grad, want.grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(
        critics.flat_parameters, reference.flat_parameters, rtol=1e-6, atol=1e-7
    )


def test_trpo_lag_step_stays_in_the_averaged_trust_region_and_improves() -> None:
    obs_space, act_space = _spaces()
    algo = TRPOLag(obs_space, act_space, TRPOLagConfig(), cost_limit=25.0, seed=0)
    algo.update(_rollout(algo, seed=1))  # first update: Ĵc = 0
    info = algo.update(_rollout(algo, seed=2))
    assert info["accepted"] == 1.0
    assert 0 < info["kl"] <= algo.config.target_kl
    assert info["loss_pi_after"] <= info["loss_pi_before"]
    assert info["lagrangian"] == 0.0  # λ after Ĵc = [0, 30]: Adam momentum still holds it at 0


def test_variants_are_named_default_sets_that_explicit_keys_override() -> None:
    assert CUPConfig().lagrangian_max == 0.2 and CUPConfig().target_kl == 0.02
    omni = CUPConfig(variant="omnisafe")
    assert (omni.lagrangian_max, omni.target_kl, omni.joint_grad_clip) == (2.0, 0.01, False)
    assert CUPConfig(variant="omnisafe", target_kl=0.05).target_kl == 0.05
    p3o = P3OConfig(variant="official")
    assert (p3o.kappa, p3o.update_iters, p3o.cost_form, p3o.joint_grad_clip) == (
        10.0,
        40,
        "official",
        True,
    )
    # Added fields leave the spec at their (variant's) default, so older run ids hold...
    assert "variant" not in P3OConfig().spec_dump() and "cost_form" not in P3OConfig().spec_dump()
    dumped = p3o.spec_dump()
    assert dumped["variant"] == "official" and dumped["kappa"] == 10.0
    # ...and an explicit value that differs from the variant's default is kept.
    assert P3OConfig(variant="official", cost_estimate="window").spec_dump()["cost_estimate"] == (
        "window"
    )
    assert P3OConfig(**P3OConfig(variant="official", cost_estimate="window").spec_dump()) == (
        P3OConfig(variant="official", cost_estimate="window")
    )


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
@pytest.mark.parametrize("name", ["ppo", "ppo-lag", "cppo-pid", "focops", "cup", "ipo", "p3o"])
def test_lr_decay_epochs_trains_a_short_run_at_the_published_runs_learning_rates(
    name: str,
) -> None:
    """The published runs decay the actor rate over 500 epochs (1e7 steps); their logs read
    ``Train/LR`` 2.994e-4 after epoch 1 and 2.7e-4 after epoch 50 (ppo_lag, Hopper, seed 0).
    A 50-epoch run with ``lr_decay_epochs: 500`` logs the same; without it the rate reaches
    0 at its own end. At the default the field stays out of the spec (run ids unchanged)."""
    from safebench import registry

    obs_space, act_space = _spaces()
    entry = registry.get(name)
    rates = {}
    for decay in (None, 500):
        config = registry.resolve_config(name, {} if decay is None else {"lr_decay_epochs": decay})
        assert ("lr_decay_epochs" in config.spec_dump()) is (decay is not None)
        algo = entry.cls(obs_space, act_space, config, cost_limit=25.0, seed=0)
        algo.set_schedule(50)
        optim = algo.actor_optim  # type: ignore[attr-defined]
        after = []
        for _ in range(50):
            optim.end_epoch()
            after.append(optim.lr)
        rates[decay] = (after[0], after[-1])
    assert rates[500] == pytest.approx((2.994e-4, 2.7e-4), rel=1e-9)
    assert rates[None] == pytest.approx((2.94e-4, 0.0), abs=1e-12)
