"""Tests for safebench.core.policies, safebench.core.critics and safebench.core.critic_fast."""

from __future__ import annotations

import copy
import io
import math

import numpy as np
import pytest
import torch
from torch import nn

from safebench.core import critic_fast
from safebench.core.critic_fast import CriticAdam
from safebench.core.critics import CriticPair
from safebench.core.policies import Activation, CategoricalActor, GaussianActor, build_mlp


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


# ------------------------------------------------------------- CriticPair: fast training path


def _reference_step(
    nets: tuple[nn.Sequential, nn.Sequential],
    opts: tuple[torch.optim.Optimizer, torch.optim.Optimizer],
    obs: torch.Tensor,
    targets: tuple[torch.Tensor, torch.Tensor],
    max_grad_norm: float | None,
    norm_coef: float,
) -> tuple[list[float], list[float]]:
    """OmniSafe's ``_update_reward_critic`` / ``_update_cost_critic`` on two separate critics.

    Returns the two losses and the two pre-clipping gradient norms (empty without clipping).
    """
    losses, norms = [], []
    for net, opt, target in zip(nets, opts, targets, strict=True):
        opt.zero_grad()
        loss = nn.functional.mse_loss(net(obs).squeeze(-1), target)
        for p in net.parameters():
            loss = loss + p.pow(2).sum() * norm_coef
        loss.backward()
        if max_grad_norm is not None:
            norms.append(float(nn.utils.clip_grad_norm_(net.parameters(), max_grad_norm)))
        opt.step()
        losses.append(loss.item())
    return losses, norms


def _minibatch(
    gen: torch.Generator, batch: int, obs_dim: int, scale: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    obs = torch.randn(batch, obs_dim, generator=gen)
    target_r = scale * torch.randn(batch, generator=gen)
    target_c = scale * (torch.rand(batch, generator=gen) + obs[:, 0])
    return obs, target_r, target_c


def _assert_views_of_flat(pair: CriticPair) -> None:
    """Every parameter shares the flat buffer's memory, at its place in the head-major layout."""
    flat = pair.flat_parameters
    assert flat.is_contiguous() and flat.shape == (2 * pair.head_numel,)
    rows = flat.view(2, pair.head_numel)
    offset = 0
    for w, b in zip(pair.weights, pair.biases, strict=True):
        n_in, n_out = w.shape[1], w.shape[2]
        block = rows[:, offset : offset + (n_in + 1) * n_out].view(2, n_in + 1, n_out)
        for param, view in ((w, block[:, :n_in]), (b, block[:, n_in:])):
            assert param.data_ptr() == view.data_ptr()
            assert param.stride() == view.stride() and param.shape == view.shape
            assert param.dtype == flat.dtype and param.device == flat.device
        offset += (n_in + 1) * n_out
    assert offset == pair.head_numel


def _grads_as_flat(pair: CriticPair) -> torch.Tensor:
    """The parameters' ``.grad`` written into the flat layout (each at its view's place)."""
    flat = pair.flat_parameters
    out = torch.zeros_like(flat)
    for p in pair.parameters():
        assert p.grad is not None
        offset = p.storage_offset() - flat.storage_offset()
        out.as_strided(p.shape, p.stride(), offset).copy_(p.grad)
    return out


def test_critic_pair_parameters_are_views_of_one_flat_buffer() -> None:
    torch.manual_seed(3)
    pair = CriticPair(5, hidden=(7, 6))
    _assert_views_of_flat(pair)
    assert pair.head_numel == 6 * 7 + 8 * 6 + 7 * 1
    obs = torch.randn(4, 5)
    before = pair(obs)
    with torch.no_grad():
        pair.flat_parameters.view(2, -1)[1].zero_()  # the cost head only
    after = pair(obs)
    assert torch.equal(after[:, 0], before[:, 0])
    assert torch.equal(after[:, 1], torch.zeros(4))
    assert [name for name, _ in pair.named_parameters()] == [
        "weights.0", "weights.1", "weights.2", "biases.0", "biases.1", "biases.2",
    ]  # fmt: skip


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize(
    ("max_grad_norm", "target_scale", "norm_coef", "expect_clipping"),
    [
        (40.0, 1.0, 1e-3, False),
        (40.0, 300.0, 1e-3, True),
        (0.5, 1.0, 1e-3, True),
        (None, 30.0, 1e-3, False),
        (40.0, 1.0, 0.0, False),
    ],
)
def test_fast_fit_minibatch_equals_two_independent_critics(
    activation: Activation,
    max_grad_norm: float | None,
    target_scale: float,
    norm_coef: float,
    expect_clipping: bool,
) -> None:
    torch.manual_seed(0)
    obs_dim, steps = 6, 36
    pair = CriticPair(obs_dim, hidden=(16, 16), activation=activation)
    initial = pair.flat_parameters.clone()
    ref = pair.to_mlps()
    opt = pair.make_optimizer(lr=1e-3)
    ref_opts = (
        torch.optim.Adam(ref[0].parameters(), lr=1e-3),
        torch.optim.Adam(ref[1].parameters(), lr=1e-3),
    )
    gen = torch.Generator().manual_seed(1)
    norms: list[float] = []
    for step in range(steps):
        # Every fifth minibatch is short, like the last one of an epoch.
        batch = 13 if step % 5 == 4 else 32
        obs, target_r, target_c = _minibatch(gen, batch, obs_dim, target_scale)
        losses = pair.fit_minibatch(obs, target_r, target_c, opt, max_grad_norm, norm_coef)
        ref_losses, ref_norms = _reference_step(
            ref, ref_opts, obs, (target_r, target_c), max_grad_norm, norm_coef
        )
        norms += ref_norms
        assert losses == pytest.approx(ref_losses, rel=1e-5)

    assert opt.step_count == steps
    if max_grad_norm is not None:
        assert any(n > max_grad_norm for n in norms) == expect_clipping
    for got, expected in zip(pair.to_mlps(), ref, strict=True):
        for p, q in zip(got.parameters(), expected.parameters(), strict=True):
            torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-5)
    # The comparison is meaningful only if training moved the weights.
    assert (pair.flat_parameters - initial).abs().max().item() > 1e-3
    _assert_views_of_flat(pair)


def test_fast_path_with_torch_tanh_equals_autograd(monkeypatch: pytest.MonkeyPatch) -> None:
    """The torch-only tanh (used off the CPU) gives the same training as the NumPy one."""
    monkeypatch.setattr(critic_fast, "_CPU_NUMPY_TANH", False)
    torch.manual_seed(2)
    fast = CriticPair(4, hidden=(8, 8))
    ref = copy.deepcopy(fast)
    opt, ref_opt = fast.make_optimizer(3e-3), torch.optim.Adam(ref.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(30):
        obs, target_r, target_c = _minibatch(gen, 16, 4, 3.0)
        got = fast.fit_minibatch(obs, target_r, target_c, opt, 1.0, 1e-3)
        expected = ref.fit_minibatch(obs, target_r, target_c, ref_opt, 1.0, 1e-3)
        assert got == pytest.approx(expected, rel=1e-5)
    torch.testing.assert_close(fast.flat_parameters, ref.flat_parameters, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("max_grad_norm", [None, 0.05])
def test_fast_gradient_matches_autograd(
    dtype: torch.dtype, activation: Activation, max_grad_norm: float | None
) -> None:
    torch.manual_seed(5)
    fast = CriticPair(9, hidden=(24, 16), activation=activation).to(dtype)
    ref = copy.deepcopy(fast)
    gen = torch.Generator().manual_seed(6)
    obs, target_r, target_c = (t.to(dtype) for t in _minibatch(gen, 40, 9, 2.0))
    # lr = 0 leaves the parameters alone; the gradients are what the step would use.
    losses = fast.fit_minibatch(
        obs, target_r, target_c, fast.make_optimizer(lr=0.0), max_grad_norm, 1e-2
    )
    ref_losses = ref.fit_minibatch(
        obs, target_r, target_c, torch.optim.SGD(ref.parameters(), lr=0.0), max_grad_norm, 1e-2
    )
    expected = _grads_as_flat(ref)
    if max_grad_norm is not None:  # clipping was active: both heads now have norm ≈ bound
        head_norms = expected.view(2, -1).norm(dim=1)
        torch.testing.assert_close(head_norms, torch.full_like(head_norms, max_grad_norm))
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(fast.flat_gradient, expected, rtol=tol, atol=tol)
    assert losses == pytest.approx(ref_losses, rel=tol)
    assert torch.equal(fast.flat_parameters, ref.flat_parameters)


def test_critic_adam_matches_torch_adam_exactly() -> None:
    torch.manual_seed(0)
    param = torch.randn(300)
    ref_param = param.clone().requires_grad_(True)
    opt = CriticAdam(lr=3e-3)
    ref = torch.optim.Adam([ref_param], lr=3e-3)
    assert opt.exp_avg is None and opt.state_dict()["step"] == 0
    for i in range(40):
        grad = torch.randn(300) * 10.0 ** (i % 5 - 2)
        opt.step(param, grad)
        ref_param.grad = grad.clone()
        ref.step()
    state = ref.state[ref_param]
    assert torch.equal(param, ref_param.detach())
    assert opt.exp_avg is not None and torch.equal(opt.exp_avg, state["exp_avg"])
    assert opt.exp_avg_sq is not None and torch.equal(opt.exp_avg_sq, state["exp_avg_sq"])
    assert opt.step_count == int(state["step"]) == 40


def test_critic_adam_rejects_bad_hyper_parameters_and_state() -> None:
    with pytest.raises(ValueError, match="learning rate"):
        CriticAdam(lr=-1.0)
    with pytest.raises(ValueError, match="betas"):
        CriticAdam(betas=(0.9, 1.0))
    opt = CriticAdam()
    opt.step(torch.zeros(3), torch.ones(3))
    with pytest.raises(ValueError, match="shape"):
        opt.step(torch.zeros(4), torch.ones(4))


def test_fast_path_state_round_trip_continues_identically() -> None:
    torch.manual_seed(11)
    pair = CriticPair(5, hidden=(12, 12))
    opt = pair.make_optimizer(lr=2e-3)
    gen = torch.Generator().manual_seed(12)
    batches = [_minibatch(gen, 24, 5, 5.0) for _ in range(30)]
    for batch in batches[:15]:
        pair.fit_minibatch(*batch, opt, 1.0, 1e-3)

    buf = io.BytesIO()
    torch.save({"critics": pair.state_dict(), "optim": opt.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)

    continued = [pair.fit_minibatch(*batch, opt, 1.0, 1e-3) for batch in batches[15:]]

    torch.manual_seed(99)  # different initial weights, overwritten by the checkpoint
    restored = CriticPair(5, hidden=(12, 12))
    restored.load_state_dict(saved["critics"])
    _assert_views_of_flat(restored)
    restored_opt = restored.make_optimizer(lr=1.0)  # hyper-parameters come from the state
    restored_opt.load_state_dict(saved["optim"])
    assert restored_opt.step_count == 15 and restored_opt.lr == 2e-3
    replayed = [restored.fit_minibatch(*b, restored_opt, 1.0, 1e-3) for b in batches[15:]]

    assert replayed == continued
    assert torch.equal(restored.flat_parameters, pair.flat_parameters)
    assert restored_opt.step_count == opt.step_count == 30
    assert restored_opt.exp_avg is not None and opt.exp_avg is not None
    assert torch.equal(restored_opt.exp_avg, opt.exp_avg)


def test_flat_views_survive_copies_loads_and_dtype_moves() -> None:
    torch.manual_seed(4)
    pair = CriticPair(3, hidden=(5,))
    obs = torch.randn(6, 3)
    expected = pair(obs)

    clone = copy.deepcopy(pair)
    _assert_views_of_flat(clone)
    assert clone.flat_parameters.data_ptr() != pair.flat_parameters.data_ptr()
    clone.fit_minibatch(obs, torch.ones(6), torch.ones(6), clone.make_optimizer(0.1))
    assert torch.equal(pair(obs), expected)  # training the copy left the original alone

    buf = io.BytesIO()
    torch.save(pair, buf)
    buf.seek(0)
    unpickled = torch.load(buf, weights_only=False)
    _assert_views_of_flat(unpickled)
    assert torch.equal(unpickled(obs), expected)

    assigned = CriticPair(3, hidden=(5,))
    assigned.load_state_dict({k: v.clone() for k, v in pair.state_dict().items()}, assign=True)
    _assert_views_of_flat(assigned)
    assert torch.equal(assigned(obs), expected)

    assert pair.to("cpu") is pair
    _assert_views_of_flat(pair)

    # A dtype cast gives each parameter new storage, as a move to another device does: the
    # flat buffer is rebuilt, and an optimizer made before the move follows its parameter.
    opt = pair.make_optimizer(1e-2)
    ref = copy.deepcopy(pair)
    ref_opt = torch.optim.Adam(ref.parameters(), lr=1e-2)
    targets = (torch.ones(6), obs[:, 0].clone())
    pair.fit_minibatch(obs, *targets, opt)
    ref.fit_minibatch(obs, *targets, ref_opt)
    pair.double()
    ref.double()
    ref_opt.load_state_dict(ref_opt.state_dict())  # torch's Adam casts its state on load
    _assert_views_of_flat(pair)
    assert pair.flat_parameters.dtype == torch.float64
    obs64, targets64 = obs.double(), (targets[0].double(), targets[1].double())
    got = pair.fit_minibatch(obs64, *targets64, opt)
    expected = ref.fit_minibatch(obs64, *targets64, ref_opt)
    assert got == pytest.approx(expected, rel=1e-6)
    assert opt.exp_avg is not None and opt.exp_avg.dtype == torch.float64
    assert opt.step_count == 2
    torch.testing.assert_close(pair.flat_parameters, ref.flat_parameters, atol=1e-7, rtol=1e-6)


def test_fast_fit_minibatch_checks_shapes_and_handles_no_hidden_layer() -> None:
    torch.manual_seed(8)
    pair = CriticPair(4, hidden=())
    opt = pair.make_optimizer(1e-2)
    with pytest.raises(ValueError, match="expected obs"):
        pair.fit_minibatch(torch.zeros(5, 3), torch.zeros(5), torch.zeros(5), opt)
    with pytest.raises(ValueError, match="expected obs"):
        pair.fit_minibatch(torch.zeros(5, 4), torch.zeros(5, 1), torch.zeros(5), opt)
    ref = copy.deepcopy(pair)
    ref_opt = torch.optim.Adam(ref.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(10):
        obs, target_r, target_c = _minibatch(gen, 7, 4, 1.0)
        got = pair.fit_minibatch(obs, target_r, target_c, opt, 0.5)
        expected = ref.fit_minibatch(obs, target_r, target_c, ref_opt, 0.5)
        assert got == pytest.approx(expected, rel=1e-5)
    torch.testing.assert_close(pair.flat_parameters, ref.flat_parameters, atol=1e-6, rtol=1e-5)
