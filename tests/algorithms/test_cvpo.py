"""CVPO: the E-step dual (KKT, MPO limit), the decoupled M-step KL, critics, one update."""

from __future__ import annotations

import copy

import gymnasium
import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar
from torch.distributions import MultivariateNormal, kl_divergence

from algorithms.cvpo import (
    CVPO,
    CholeskyGaussianActor,
    CVPOConfig,
    QEnsemble,
    cost_threshold,
    decoupled_kl,
    dual_function,
    e_step_weights,
    m_step_terms,
    solve_dual,
    td_targets,
)
from safebench.core.replay import ReplayBuffer
from safebench.errors import UserError

EPS = 0.1
OBS_DIM, ACT_DIM = 3, 2
FIELDS = ("obs", "act", "reward", "cost", "next_obs", "terminated", "goal_met")


def q_values(seed: int = 0, b: int = 300, k: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """``(K, B)`` reward and cost Q where cost grows with reward, so the two conflict."""
    rng = np.random.default_rng(seed)
    q_r = rng.normal(0, 1, (k, b)) + rng.normal(0, 3, (1, b))
    q_c = 0.5 * q_r + rng.normal(0, 1, (k, b)) + 2.0
    return q_r, q_c


def weights_np(q_r: np.ndarray, q_c: np.ndarray, eta: float, lam: float) -> np.ndarray:
    return e_step_weights(torch.from_numpy(q_r), torch.from_numpy(q_c), eta, lam).numpy()


def kl_to_uniform(q: np.ndarray) -> float:
    """mean_b KL(q_b ‖ Uniform_K) for weights ``(K, B)``."""
    k = q.shape[0]
    return float(np.mean(np.sum(q * np.log(q * k + 1e-300), axis=0)))


# --------------------------------------------------------------------------------------------
# E-step
# --------------------------------------------------------------------------------------------


def test_cost_threshold_is_the_discounted_per_step_budget() -> None:
    for limit, gamma, horizon in ((10.0, 0.99, 400), (25.0, 0.99, 1000), (5.0, 0.8, 20)):
        expected = sum(gamma**t * limit / horizon for t in range(horizon))
        assert cost_threshold(limit, gamma, horizon) == pytest.approx(expected, rel=1e-12)
    assert cost_threshold(10.0, 0.99, 400) == pytest.approx(2.4551, abs=1e-4)  # official ĉ


def test_dual_gradient_matches_finite_differences() -> None:
    q_r, q_c = q_values(1, b=40, k=16)
    c_hat = float(q_c.mean()) - 0.3
    for x in ((0.3, 0.2), (2.0, 1.5), (7.0, 0.01)):
        _, grad = dual_function(x, q_r, q_c, EPS, c_hat)
        for i in range(2):
            h = np.zeros(2)
            h[i] = 1e-6
            up = dual_function(np.add(x, h), q_r, q_c, EPS, c_hat)[0]
            down = dual_function(np.subtract(x, h), q_r, q_c, EPS, c_hat)[0]
            assert grad[i] == pytest.approx((up - down) / 2e-6, rel=1e-5, abs=1e-7)


def test_dual_optimum_satisfies_kkt_when_the_constraint_binds() -> None:
    q_r, q_c = q_values()
    c_hat = float(q_c.mean()) - 0.4  # below what the uniform reweighting spends
    eta, lam = solve_dual(q_r, q_c, EPS, c_hat, (0.1, 0.1), maxiter=200, ftol=1e-12)
    q = weights_np(q_r, q_c, eta, lam)
    assert lam > 0.1
    assert kl_to_uniform(q) == pytest.approx(EPS, abs=1e-5)
    assert float(np.mean(np.sum(q * q_c, axis=0))) == pytest.approx(c_hat, abs=1e-5)
    # A convex function: the solution is below every point of a grid around it.
    value = dual_function((eta, lam), q_r, q_c, EPS, c_hat)[0]
    grid = [
        dual_function((e, m), q_r, q_c, EPS, c_hat)[0]
        for e in np.linspace(0.5 * eta, 2 * eta, 15)
        for m in np.linspace(0.0, 2 * lam, 15)
    ]
    assert value <= min(grid) + 1e-9


def test_official_iteration_budget_nearly_reaches_the_kkt_point() -> None:
    """maxiter 10 / ftol 1e-3 stops within ~5% of KL = ε (reference check: 0.0958), cold or
    warm-started from the previous update's solution."""
    q_r, q_c = q_values()
    c_hat = float(q_c.mean()) - 0.4
    previous = (0.1, 0.1)
    for q_r_now in (q_r, q_r + 0.05 * q_values(7)[0]):  # this update, then the next
        previous = solve_dual(q_r_now, q_c, EPS, c_hat, previous)
        q = weights_np(q_r_now, q_c, *previous)
        assert kl_to_uniform(q) == pytest.approx(EPS, rel=0.07)
        assert float(np.mean(np.sum(q * q_c, axis=0))) == pytest.approx(c_hat, abs=0.01)


def test_slack_constraint_gives_lambda_zero_and_mpo_e_step() -> None:
    """With the cost constraint inactive, λ* = 0 and (η, q) are MPO's (Abdolmaleki 2018)."""
    q_r, q_c = q_values(3)
    c_hat = float(q_c.max()) + 1.0  # unreachable by any reweighting: slack
    eta, lam = solve_dual(q_r, q_c, EPS, c_hat, (0.1, 0.1), maxiter=200, ftol=1e-12)
    assert lam == pytest.approx(1e-6, abs=1e-9)  # the lower bound
    q = weights_np(q_r, q_c, eta, lam)
    assert float(np.mean(np.sum(q * q_c, axis=0))) < c_hat  # complementary slackness

    def mpo_dual(e: float) -> float:  # MPO: ηε + mean_b η log mean_k exp(Q_r/η)
        top = q_r.max(axis=0)
        return e * EPS + float(np.mean(top + e * np.log(np.mean(np.exp((q_r - top) / e), axis=0))))

    mpo = minimize_scalar(
        mpo_dual, bounds=(1e-3, 100.0), method="bounded", options={"xatol": 1e-10}
    )
    assert eta == pytest.approx(mpo.x, rel=1e-4)
    e = np.exp((q_r - q_r.max(0)) / mpo.x)
    np.testing.assert_allclose(q, e / e.sum(0), atol=1e-5)


def test_e_step_weights_are_a_softmax_over_the_samples() -> None:
    q_r, q_c = q_values(4, b=5, k=8)
    q = weights_np(q_r, q_c, 0.7, 0.3)
    np.testing.assert_allclose(q.sum(0), 1.0, rtol=1e-12)
    z = np.exp((q_r - 0.3 * q_c) / 0.7)
    np.testing.assert_allclose(q, z / z.sum(0), rtol=1e-10)


# --------------------------------------------------------------------------------------------
# M-step
# --------------------------------------------------------------------------------------------


def random_gaussians(seed: int, b: int = 7, n: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(b, n, generator=g, dtype=torch.float64)
    tril = torch.randn(b, n, n, generator=g, dtype=torch.float64).tril()
    idx = torch.arange(n)
    tril[:, idx, idx] = tril[:, idx, idx].abs() + 0.3
    return mean, tril


def full_kl(
    mean_old: torch.Tensor, tril_old: torch.Tensor, mean: torch.Tensor, tril: torch.Tensor
) -> float:
    old = MultivariateNormal(mean_old, scale_tril=tril_old)
    return float(kl_divergence(old, MultivariateNormal(mean, scale_tril=tril)).mean())


def test_decoupled_kl_sums_to_full_kl_when_only_one_moves() -> None:
    mean_old, tril_old = random_gaussians(0)
    mean, tril = random_gaussians(1)
    kl_m, kl_v = decoupled_kl(mean_old, tril_old, mean, tril_old)  # only the mean moved
    assert float(kl_v) == pytest.approx(0.0, abs=1e-12)
    assert float(kl_m + kl_v) == pytest.approx(
        full_kl(mean_old, tril_old, mean, tril_old), rel=1e-10
    )
    kl_m, kl_v = decoupled_kl(mean_old, tril_old, mean_old, tril)  # only the covariance moved
    assert float(kl_m) == pytest.approx(0.0, abs=1e-12)
    assert float(kl_m + kl_v) == pytest.approx(
        full_kl(mean_old, tril_old, mean_old, tril), rel=1e-10
    )
    # Both moved: each term is the KL of its own half-move (the sum is not the full KL).
    kl_m, kl_v = decoupled_kl(mean_old, tril_old, mean, tril)
    assert float(kl_m) == pytest.approx(full_kl(mean_old, tril_old, mean, tril_old), rel=1e-10)
    assert float(kl_v) == pytest.approx(full_kl(mean_old, tril_old, mean_old, tril), rel=1e-10)
    assert float(kl_m + kl_v) != pytest.approx(full_kl(mean_old, tril_old, mean, tril), rel=1e-3)


def test_m_step_loss_is_weighted_mle_with_swapped_covariances() -> None:
    mean_old, tril_old = random_gaussians(2, b=5, n=2)
    mean, tril = random_gaussians(3, b=5, n=2)
    g = torch.Generator().manual_seed(4)
    actions = torch.randn(6, 5, 2, generator=g, dtype=torch.float64)
    weights = torch.softmax(torch.randn(6, 5, generator=g, dtype=torch.float64), dim=0)
    loss, kl_m, kl_v = m_step_terms(actions, weights, mean_old, tril_old, mean, tril)
    pi1 = MultivariateNormal(mean, scale_tril=tril_old)  # new mean, old covariance
    pi2 = MultivariateNormal(mean_old, scale_tril=tril)  # old mean, new covariance
    expected = -(weights * (pi1.log_prob(actions) + pi2.log_prob(actions))).mean()
    assert float(loss) == pytest.approx(float(expected), rel=1e-10)
    assert float(kl_m) == pytest.approx(full_kl(mean_old, tril_old, mean, tril_old), rel=1e-10)
    assert float(kl_v) == pytest.approx(full_kl(mean_old, tril_old, mean_old, tril), rel=1e-10)


# --------------------------------------------------------------------------------------------
# Networks, critics and the whole update
# --------------------------------------------------------------------------------------------


def spaces() -> tuple[gymnasium.spaces.Box, gymnasium.spaces.Box]:
    obs = gymnasium.spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32)
    low, high = np.array([-1.0, 0.0], np.float32), np.array([1.0, 3.0], np.float32)
    act = gymnasium.spaces.Box(low, high, dtype=np.float32)
    return obs, act


def tiny(**overrides: object) -> CVPOConfig:
    base: dict[str, object] = {
        "hidden_sizes": (16, 16),
        "batch_size": 32,
        "sample_action_num": 8,
        "timeout_steps": 20,
        "mstep_iteration_num": 2,
    }
    return CVPOConfig(**{**base, **overrides})


def filled_buffer(n: int = 200, seed: int = 0) -> ReplayBuffer:
    rng = np.random.default_rng(seed)
    buf = ReplayBuffer(OBS_DIM, ACT_DIM, 500)
    obs = rng.normal(size=(n, OBS_DIM))
    act = rng.uniform(-1, 1, (n, ACT_DIM))
    next_obs = rng.normal(size=(n, OBS_DIM))
    buf.add_batch(
        obs, act, act[:, 0], act[:, 1] ** 2, next_obs, rng.random(n) < 0.3, rng.random(n) < 0.3
    )
    return buf


def test_actor_parameterisation_and_numpy_snapshot_agree() -> None:
    low, high = np.array([-1.0, 0.0]), np.array([1.0, 3.0])
    torch.manual_seed(0)
    actor = CholeskyGaussianActor(OBS_DIM, ACT_DIM, low, high, (16, 16))
    obs = torch.randn(50, OBS_DIM) * torch.tensor([1.0, 100.0, 1.0])  # some saturate the clamps
    mean, tril = actor(obs)
    assert torch.all(mean >= torch.tensor(low, dtype=torch.float32))
    assert torch.all(mean <= torch.tensor(high, dtype=torch.float32))
    assert torch.all(torch.triu(tril, diagonal=1) == 0)
    assert torch.all(torch.diagonal(tril, dim1=-2, dim2=-1) >= 1e-4)
    policy = actor.numpy_policy()
    np_mean, np_tril = policy.mean_and_tril(obs.numpy())
    np.testing.assert_allclose(np_mean, mean.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np_tril, tril.detach().numpy(), rtol=1e-5, atol=1e-5)
    # Samples a = μ + Lε have covariance LLᵀ.
    state = obs[:1].numpy().repeat(20000, 0)
    samples = policy.sample(state, np.random.default_rng(0))
    cov = (tril[0] @ tril[0].T).detach().numpy()
    np.testing.assert_allclose(np.cov(samples.T), cov, rtol=0.05, atol=0.02 * cov.max())


def test_q_of_sampled_actions_equals_q_of_the_stacked_batch() -> None:
    torch.manual_seed(0)
    q = QEnsemble(OBS_DIM, ACT_DIM, (16, 16), 2)
    obs, actions = torch.randn(5, OBS_DIM), torch.randn(4, 5, ACT_DIM)
    stacked = q(obs.expand(4, -1, -1).reshape(20, -1), actions.reshape(20, -1))
    torch.testing.assert_close(q.forward_samples(obs, actions), stacked.reshape(2, 4, 5))


def test_td_targets_goal_met_ends_the_reward_backup_termination_both() -> None:
    """Rows: plain step (or time-out), true termination, goal reached, both."""
    reward, cost = torch.full((4,), 1.0), torch.full((4,), 0.5)
    terminated = torch.tensor([0.0, 1.0, 0.0, 1.0])
    goal_met = torch.tensor([0.0, 0.0, 1.0, 1.0])
    q_r, q_c = torch.full((4,), 10.0), torch.full((4,), 4.0)
    y_r, y_c = td_targets(reward, cost, terminated, goal_met, q_r, q_c, 0.5)
    assert y_r.tolist() == [6.0, 1.0, 1.0, 1.0]
    assert y_c.tolist() == [2.5, 0.5, 2.5, 0.5]
    # the official cost target (never masked)
    _, y_c = td_targets(reward, cost, terminated, goal_met, q_r, q_c, 0.5, cost_mask=False)
    assert y_c.tolist() == [2.5, 2.5, 2.5, 2.5]


@pytest.mark.parametrize("cost_mask", [True, False])
def test_critic_targets_on_a_hand_made_buffer(cost_mask: bool) -> None:
    """Exact targets through the algorithm's own path: target critics made constant
    (Q̄_r ≡ 8, Q̄_c ≡ 2), one transition of each kind in the buffer."""
    algo = CVPO(*spaces(), tiny(gamma=0.5, cost_terminal_mask=cost_mask), cost_limit=5.0, seed=0)
    for net, value in ((algo.critic_targ, 8.0), (algo.cost_critic_targ, 2.0)):
        for mlp in net.nets:
            assert isinstance(mlp, torch.nn.Sequential)
            last = mlp[-1]
            assert isinstance(last, torch.nn.Linear)
            with torch.no_grad():
                last.weight.zero_()
                last.bias.fill_(value)
    buf = ReplayBuffer(OBS_DIM, ACT_DIM, 8)
    #          plain  terminated  goal_met  both  (time-outs are stored as plain steps)
    terminated = [0.0, 1.0, 0.0, 1.0]
    goal_met = [0.0, 0.0, 1.0, 1.0]
    reward, cost = [1.0, 2.0, 3.0, 4.0], [0.25, 0.5, 0.75, 1.0]
    obs = np.arange(12, dtype=np.float32).reshape(4, OBS_DIM)
    buf.add_batch(obs, np.zeros((4, ACT_DIM)), reward, cost, obs + 1, terminated, goal_met)
    batch = {k: torch.as_tensor(v) for k, v in buf.state_dict().items() if k in FIELDS}
    y_r, y_c = algo.critic_targets(batch)
    assert y_r.tolist() == [1.0 + 4.0, 2.0, 3.0, 4.0]
    masked = [0.25 + 1.0, 0.5, 0.75 + 1.0, 1.0]
    assert y_c.tolist() == (masked if cost_mask else [c + 1.0 for c in cost])


def test_critic_losses_use_the_documented_targets() -> None:
    algo = CVPO(*spaces(), tiny(gamma=0.9), cost_limit=5.0, seed=0)
    buf = filled_buffer()
    rng_state = algo.rng.bit_generator.state
    gen_state = algo.generator.get_state()
    batch = {k: torch.as_tensor(v) for k, v in buf.sample(32, algo.rng).items()}
    with torch.no_grad():
        mean, tril = algo.actor(batch["next_obs"])
        algo.generator.set_state(gen_state)
        noise = torch.randn((2, *mean.shape), generator=algo.generator)
        a_next = mean + (tril @ noise.unsqueeze(-1)).squeeze(-1)
        q_r_next = algo.critic_targ(batch["next_obs"], a_next[0]).min(0).values
        q_c_next = algo.cost_critic_targ(batch["next_obs"], a_next[1])[0]
        done_r = torch.maximum(batch["terminated"], batch["goal_met"])
        y_r = batch["reward"] + 0.9 * (1 - done_r) * q_r_next
        y_c = batch["cost"] + 0.9 * (1 - batch["terminated"]) * q_c_next
        loss_q = float(((algo.critic(batch["obs"], batch["act"]) - y_r) ** 2).mean(-1).sum())
        loss_qc = float(((algo.cost_critic(batch["obs"], batch["act"]) - y_c) ** 2).mean())
    algo.rng.bit_generator.state = rng_state
    algo.generator.set_state(gen_state)
    info = algo.update_step(buf)
    assert info["loss_q"] == pytest.approx(loss_q, rel=1e-5)
    assert info["loss_qc"] == pytest.approx(loss_qc, rel=1e-5)


def test_update_moves_targets_by_polyak_and_resumes_exactly() -> None:
    buf = filled_buffer()
    a = CVPO(*spaces(), tiny(), cost_limit=5.0, seed=3)
    b = CVPO(*spaces(), tiny(), cost_limit=5.0, seed=3)
    targ_before = a.actor_targ.mean_layer.weight.clone()
    info = a.update_step(buf)
    assert set(info) >= {"loss_q", "loss_qc", "eta", "lam", "kl_mean", "kl_var", "estep_kl"}
    assert all(np.isfinite(v) for v in info.values())
    expected = 0.995 * targ_before + 0.005 * a.actor.mean_layer.weight
    torch.testing.assert_close(a.actor_targ.mean_layer.weight, expected)
    assert not torch.equal(a.actor_targ.mean_layer.weight, targ_before)
    a.update_step(buf)
    b.load_state_dict(copy.deepcopy(a.state_dict()))  # as through torch.save
    info_a, info_b = a.update_step(buf), b.update_step(buf)
    assert info_a == info_b
    for pa, pb in zip(
        a.state_dict()["nets"].values(), b.state_dict()["nets"].values(), strict=True
    ):
        for key, value in pa.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, pb[key]), key
    obs = np.random.default_rng(0).normal(size=(4, OBS_DIM)).astype(np.float32)
    np.testing.assert_array_equal(a.act(obs), b.act(obs))
    np.testing.assert_array_equal(a.act(obs, deterministic=True), b.act(obs, deterministic=True))


def test_actor_kl_bounds_pull_the_actor_back() -> None:
    """Large multipliers keep the M-step's KL to the target actor near the bounds."""
    buf = filled_buffer()
    loose = CVPO(*spaces(), tiny(alpha_mean_max=0.0, alpha_var_max=0.0), cost_limit=5.0, seed=1)
    tight = CVPO(
        *spaces(),
        tiny(alpha_mean_max=1e4, alpha_var_max=1e4, alpha_mean_scale=1e3, alpha_var_scale=1e3),
        cost_limit=5.0,
        seed=1,
    )
    for _ in range(5):
        free, bound = loose.update_step(buf), tight.update_step(buf)
    assert bound["kl_mean"] < free["kl_mean"]
    assert bound["kl_var"] < free["kl_var"]


def test_discrete_actions_and_unknown_episode_length_are_user_errors() -> None:
    obs = gymnasium.spaces.Box(-1, 1, (OBS_DIM,), np.float32)
    with pytest.raises(UserError, match="Box"):
        CVPO(obs, gymnasium.spaces.Discrete(3), CVPOConfig(), cost_limit=1.0, seed=0)
    algo = CVPO(*spaces(), tiny(timeout_steps=None), cost_limit=5.0, seed=0)
    with pytest.raises(UserError, match="timeout_steps"):
        algo.update_step(filled_buffer())
    algo.set_episode_length(20)
    assert algo.cost_threshold == pytest.approx(cost_threshold(5.0, 0.99, 20))
