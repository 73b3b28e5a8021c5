"""Tests for safebench.core.networks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from safebench.core.networks import CategoricalActor, CriticPair, GaussianActor, build_mlp


def _omnisafe_style_mlp(sizes: list[int], act: type[nn.Module]) -> list[nn.Linear]:
    """OmniSafe's ``build_mlp_network`` draw sequence: ``nn.Linear`` then kaiming(a=√5) on W."""
    layers = []
    for j in range(len(sizes) - 1):
        lin = nn.Linear(sizes[j], sizes[j + 1])
        nn.init.kaiming_uniform_(lin.weight, a=np.sqrt(5))
        layers.append(lin)
    return layers


def _linears(net: nn.Sequential) -> list[nn.Linear]:
    return [m for m in net if isinstance(m, nn.Linear)]


# ---------------------------------------------------------------------------------- build_mlp


def test_build_mlp_reproduces_omnisafe_initialisation_bit_for_bit() -> None:
    torch.manual_seed(123)
    net = build_mlp(5, (7, 3), 2, activation="relu")
    torch.manual_seed(123)
    ref = _omnisafe_style_mlp([5, 7, 3, 2], nn.ReLU)
    for lin, ref_lin in zip(_linears(net), ref, strict=True):
        assert torch.equal(lin.weight, ref_lin.weight)
        assert torch.equal(lin.bias, ref_lin.bias)
    assert [type(m) for m in net] == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
    assert [name for name, _ in net.named_parameters()] == [
        "0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias",
    ]  # fmt: skip


def test_build_mlp_init_bounds_are_one_over_sqrt_fan_in() -> None:
    torch.manual_seed(0)
    net = build_mlp(50, (200,), 30)
    for lin in _linears(net):
        bound = 1.0 / math.sqrt(lin.in_features)
        for p in (lin.weight, lin.bias):
            assert p.abs().max().item() <= bound
            # Uniform on [-bound, bound]: the largest of many draws comes close to the bound.
            assert p.abs().max().item() > 0.9 * bound


def test_build_mlp_output_gain_scales_only_the_output_layer() -> None:
    torch.manual_seed(7)
    plain = build_mlp(4, (8,), 3)
    torch.manual_seed(7)
    scaled = build_mlp(4, (8,), 3, output_gain=0.01)
    (p0, p1), (s0, s1) = _linears(plain), _linears(scaled)
    assert torch.equal(p0.weight, s0.weight) and torch.equal(p0.bias, s0.bias)
    assert torch.allclose(s1.weight, 0.01 * p1.weight) and torch.allclose(s1.bias, 0.01 * p1.bias)
    assert isinstance(plain[1], nn.Tanh)


def test_build_mlp_rejects_unknown_activation() -> None:
    with pytest.raises(ValueError, match="activation"):
        build_mlp(2, (3,), 1, activation="gelu")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ GaussianActor


@pytest.fixture
def gaussian_actor() -> GaussianActor:
    torch.manual_seed(0)
    actor = GaussianActor(6, 3, hidden=(16, 16), log_std_init=-0.5)
    with torch.no_grad():
        actor.log_std.copy_(torch.tensor([-0.5, 0.2, 0.0]))
    return actor


def test_gaussian_actor_structure_and_log_prob(gaussian_actor: GaussianActor) -> None:
    assert GaussianActor(4, 2).log_std.shape == (2,)
    assert torch.equal(GaussianActor(4, 2, log_std_init=-0.7).log_std, torch.full((2,), -0.7))
    obs = torch.randn(9, 6)
    act = torch.randn(9, 3)
    mean = gaussian_actor(obs)
    assert mean.shape == (9, 3)
    dist = gaussian_actor.distribution(obs)
    assert torch.allclose(dist.mean, mean)
    assert torch.allclose(dist.stddev, torch.exp(gaussian_actor.log_std).expand(9, 3))
    sigma = torch.exp(gaussian_actor.log_std)
    expected = (
        -0.5 * ((act - mean) / sigma) ** 2 - torch.log(sigma) - 0.5 * math.log(2 * math.pi)
    ).sum(-1)
    logp = gaussian_actor.log_prob(obs, act)
    assert logp.shape == (9,)
    assert torch.allclose(logp, expected, atol=1e-6)


def test_gaussian_actor_sample_uses_generator(gaussian_actor: GaussianActor) -> None:
    obs = torch.randn(5, 6)
    a1 = gaussian_actor.sample(obs, torch.Generator().manual_seed(3))
    a2 = gaussian_actor.sample(obs, torch.Generator().manual_seed(3))
    noise = torch.randn(5, 3, generator=torch.Generator().manual_seed(3))
    expected = gaussian_actor(obs) + torch.exp(gaussian_actor.log_std) * noise
    assert torch.equal(a1, a2)
    assert torch.allclose(a1, expected)


def test_gaussian_numpy_policy_matches_torch(gaussian_actor: GaussianActor) -> None:
    policy = gaussian_actor.numpy_policy()
    obs = torch.randn(64, 6) * 3
    with torch.no_grad():
        mean = gaussian_actor(obs).numpy()
    out = policy(obs.numpy())
    assert out.dtype == np.float32 and out.shape == (64, 3)
    np.testing.assert_allclose(out, mean, atol=1e-6, rtol=0)
    np.testing.assert_allclose(policy(obs[0].numpy()), mean[0], atol=1e-6, rtol=0)
    np.testing.assert_allclose(policy.mode(obs.numpy()), mean, atol=1e-6, rtol=0)

    act = np.random.default_rng(0).standard_normal((64, 3)).astype(np.float32)
    with torch.no_grad():
        logp = gaussian_actor.log_prob(obs, torch.from_numpy(act)).numpy()
    np.testing.assert_allclose(policy.log_prob(obs.numpy(), act), logp, atol=1e-5, rtol=0)

    sampled, sampled_logp = policy.sample(obs.numpy(), np.random.default_rng(11))
    noise = np.random.default_rng(11).standard_normal((64, 3), dtype=np.float32)
    np.testing.assert_allclose(sampled, mean + np.exp([-0.5, 0.2, 0.0]) * noise, atol=1e-5)
    np.testing.assert_allclose(sampled_logp, policy.log_prob(obs.numpy(), sampled), rtol=1e-6)


def test_numpy_policy_is_a_frozen_snapshot(gaussian_actor: GaussianActor) -> None:
    policy = gaussian_actor.numpy_policy()
    obs = np.ones((2, 6), dtype=np.float32)
    before = policy(obs).copy()
    with torch.no_grad():
        for p in gaussian_actor.parameters():
            p.add_(1.0)
    np.testing.assert_array_equal(policy(obs), before)
    np.testing.assert_array_equal(policy.log_std, np.array([-0.5, 0.2, 0.0], dtype=np.float32))


def test_relu_numpy_policy_matches_torch() -> None:
    torch.manual_seed(1)
    actor = GaussianActor(4, 2, hidden=(32,), activation="relu")
    obs = torch.randn(50, 4)
    with torch.no_grad():
        expected = actor(obs).numpy()
    np.testing.assert_allclose(actor.numpy_policy()(obs.numpy()), expected, atol=1e-6, rtol=0)


# --------------------------------------------------------------------------- CategoricalActor


def test_categorical_actor_log_prob_and_numpy_logits() -> None:
    torch.manual_seed(2)
    actor = CategoricalActor(5, 4, hidden=(16,))
    obs = torch.randn(20, 5)
    act = torch.randint(0, 4, (20,))
    with torch.no_grad():
        logits = actor(obs)
        expected = torch.log_softmax(logits, -1).gather(1, act[:, None]).squeeze(1)
        logp = actor.log_prob(obs, act)
        logp_col = actor.log_prob(obs, act[:, None].float())
    assert logp.shape == (20,)
    assert torch.allclose(logp, expected, atol=1e-6)
    assert torch.allclose(logp_col, expected, atol=1e-6)

    policy = actor.numpy_policy()
    np.testing.assert_allclose(policy(obs.numpy()), logits.numpy(), atol=1e-6, rtol=0)
    np.testing.assert_array_equal(policy.mode(obs.numpy()), logits.argmax(-1).numpy())
    np.testing.assert_allclose(
        policy.log_prob(obs.numpy(), act.numpy()), expected.numpy(), atol=1e-5, rtol=0
    )

    sampled = actor.sample(obs, torch.Generator().manual_seed(0))
    assert sampled.shape == (20,) and sampled.dtype == torch.int64
    assert int(sampled.min()) >= 0 and int(sampled.max()) < 4


def test_categorical_numpy_sampling_follows_softmax() -> None:
    torch.manual_seed(4)
    actor = CategoricalActor(3, 3, hidden=(8,))
    output_layer = _linears(actor.logits_net)[-1]
    with torch.no_grad():
        output_layer.bias.copy_(torch.tensor([1.0, 0.0, -1.0]))
        output_layer.weight.zero_()
    probs = np.exp([1.0, 0.0, -1.0]) / np.exp([1.0, 0.0, -1.0]).sum()
    obs = np.zeros((20000, 3), dtype=np.float32)
    act, logp = actor.numpy_policy().sample(obs, np.random.default_rng(5))
    freq = np.bincount(act, minlength=3) / len(act)
    # Binomial standard error is below 0.004 for n = 20000; 0.015 is > 3.5 standard errors.
    np.testing.assert_allclose(freq, probs, atol=0.015)
    np.testing.assert_allclose(logp, np.log(probs)[act], atol=1e-6)


# --------------------------------------------------------------------------------- CriticPair


def test_critic_pair_initialises_each_head_like_an_independent_build_mlp() -> None:
    torch.manual_seed(9)
    pair = CriticPair(7, hidden=(16, 8))
    torch.manual_seed(9)
    ref_r = build_mlp(7, (16, 8), 1)
    ref_c = build_mlp(7, (16, 8), 1)
    net_r, net_c = pair.to_mlps()
    for net, ref in ((net_r, ref_r), (net_c, ref_c)):
        for lin, ref_lin in zip(_linears(net), _linears(ref), strict=True):
            assert torch.equal(lin.weight, ref_lin.weight)
            assert torch.equal(lin.bias, ref_lin.bias)
    assert pair.weights[0].shape == (2, 7, 16) and pair.biases[0].shape == (2, 1, 16)

    obs = torch.randn(13, 7)
    out = pair(obs)
    assert out.shape == (13, 2)
    assert torch.allclose(out[:, 0], ref_r(obs).squeeze(-1), atol=1e-6)
    assert torch.allclose(out[:, 1], ref_c(obs).squeeze(-1), atol=1e-6)


def test_critic_pair_from_mlps_copies_weights_and_keeps_rng() -> None:
    torch.manual_seed(1)
    net_r, net_c = build_mlp(3, (5,), 1), build_mlp(3, (5,), 1)
    state = torch.random.get_rng_state()
    pair = CriticPair.from_mlps(net_r, net_c)
    assert torch.equal(torch.random.get_rng_state(), state)
    obs = torch.randn(4, 3)
    assert torch.allclose(pair(obs)[:, 1], net_c(obs).squeeze(-1), atol=1e-6)
    assert torch.allclose(pair(obs)[:, 0], net_r(obs).squeeze(-1), atol=1e-6)


@pytest.mark.parametrize(
    ("max_grad_norm", "target_scale", "expect_clipping"),
    [(40.0, 1.0, False), (40.0, 300.0, True), (0.5, 1.0, True), (None, 30.0, False)],
)
def test_critic_pair_training_equals_two_independent_critics(
    max_grad_norm: float | None, target_scale: float, expect_clipping: bool
) -> None:
    torch.manual_seed(0)
    obs_dim, steps, batch = 6, 20, 32
    pair = CriticPair(obs_dim, hidden=(16, 16))
    ref_r, ref_c = pair.to_mlps()
    opt_pair = torch.optim.Adam(pair.parameters(), lr=1e-3)
    opt_r = torch.optim.Adam(ref_r.parameters(), lr=1e-3)
    opt_c = torch.optim.Adam(ref_c.parameters(), lr=1e-3)

    gen = torch.Generator().manual_seed(1)
    norms: list[float] = []
    for _ in range(steps):
        obs = torch.randn(batch, obs_dim, generator=gen)
        target_r = target_scale * torch.randn(batch, generator=gen)
        target_c = target_scale * (torch.rand(batch, generator=gen) + obs[:, 0])
        loss_r, loss_c = pair.fit_minibatch(obs, target_r, target_c, opt_pair, max_grad_norm, 1e-3)

        ref_losses = []
        for net, opt, target in ((ref_r, opt_r, target_r), (ref_c, opt_c, target_c)):
            # OmniSafe's _update_reward_critic / _update_cost_critic, verbatim in behaviour.
            opt.zero_grad()
            loss = nn.functional.mse_loss(net(obs).squeeze(-1), target)
            for p in net.parameters():
                loss = loss + p.pow(2).sum() * 1e-3
            loss.backward()
            if max_grad_norm is not None:
                norms.append(float(nn.utils.clip_grad_norm_(net.parameters(), max_grad_norm)))
            opt.step()
            ref_losses.append(loss.item())
        assert loss_r == pytest.approx(ref_losses[0], rel=1e-5)
        assert loss_c == pytest.approx(ref_losses[1], rel=1e-5)

    if max_grad_norm is not None:
        assert any(n > max_grad_norm for n in norms) == expect_clipping
    got_r, got_c = pair.to_mlps()
    for got, ref in ((got_r, ref_r), (got_c, ref_c)):
        for p, q in zip(got.parameters(), ref.parameters(), strict=True):
            torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-5)
    # The comparison is meaningful only if training moved the weights.
    torch.manual_seed(0)
    initial_r, _ = CriticPair(obs_dim, hidden=(16, 16)).to_mlps()
    pairs = zip(got_r.parameters(), initial_r.parameters(), strict=True)
    moved = max((p - q).abs().max().item() for p, q in pairs)
    assert moved > 1e-3
