"""PPO-Lag, FOCOPS, IPO and P3O epochs against the official scripts' update loops, written out.

The loop of milosen/ctrpo ``algorithms/baselines/ppo_lag.py`` (docs/baselines.md), written with
autograd and ``torch.optim.Adam`` on copies of the same networks: per minibatch one loss
L_π + L_Vr + L_Vc (critic L2 0.001), one backward, one ``clip_grad_norm_`` over actor and both
critics, the critics' and the actor's Adam steps; a KL check after each pass; the actor's
LinearLR stepped after the epoch. safebench runs the same epochs through its hand-written
actor and critic steps (``safebench.core.actor_fast``, ``critic_fast``). Given the same batch,
the same multiplier and the same minibatch order, both must end with the same networks, pass
for pass, over two epochs (the learning rate stepping between them).

``focops.py``'s loop is the same with its own actor loss: the KL to the rollout policy and the
trust-region mask as (B, 1) columns against the (B,) surrogate, broadcast to B × B. So are
``ipo.py``'s and ``p3o.py``'s (no multiplier; their losses read Â_r, Â_c and the epoch's Ĵc).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import gymnasium
import numpy as np
import pytest
import torch
from torch import Tensor
from torch.distributions import Distribution, Normal

from algorithms.focops import FOCOPS, FOCOPSConfig
from algorithms.ipo import IPO, IPOConfig
from algorithms.p3o import P3O, P3OConfig
from algorithms.ppo_lag import PPOLag, PPOLagConfig
from safebench.core.onpolicy import Batch
from safebench.core.optim import kl_sum_dims

N, OBS, ACT = 320, 5, 3


Algo = PPOLag | FOCOPS | IPO | P3O


def _batch(algo: Algo, seed: int, ep_cost: float = 40.0) -> Batch:
    rng = np.random.default_rng(seed)
    obs = rng.standard_normal((N, OBS)).astype(np.float32)
    act = rng.standard_normal((N, ACT)).astype(np.float32)

    def t(x: np.ndarray) -> Tensor:
        return torch.as_tensor(x, dtype=torch.float32)

    adv_r = rng.standard_normal(N)
    return Batch(
        obs=t(obs),
        act=t(act),
        logp=t(algo.log_prob(obs, act)),
        adv_r=t((adv_r - adv_r.mean()) / adv_r.std()),
        adv_c=t(rng.standard_normal(N)),
        target_r=t(300 * rng.standard_normal(N)),  # large: the gradient clip acts
        target_c=t(300 * rng.standard_normal(N)),
        ep_cost=ep_cost,
    )


# (π_θ, π_k on the minibatch, ρ, the minibatch's advantages: "adv" = (Â_r − λ·Â_c)/(1 + λ),
# "adv_r", "adv_c") -> the actor loss
ActorLoss = Callable[[Distribution, Normal, Tensor, dict[str, Tensor]], Tensor]


def ppo_lag_loss(dist: Distribution, old: Normal, ratio: Tensor, adv: dict[str, Tensor]) -> Tensor:
    """``ppo_lag.py``: the clipped surrogate (clip 0.2)."""
    a = adv["adv"]
    return -torch.min(ratio * a, torch.clamp(ratio, 0.8, 1.2) * a).mean()


def ipo_official_loss(ep_cost: float) -> ActorLoss:
    """``ipo.py`` as written (ε = 0.2, t = 20, d = 25): the barrier term divided by
    t·(Ĵc − d) while Ĵc < d, the pessimistic cost surrogate alone otherwise."""

    def loss(dist: Distribution, old: Normal, ratio: Tensor, adv: dict[str, Tensor]) -> Tensor:
        adv_r_b, adv_c_b = adv["adv_r"], adv["adv_c"]
        ratio_cliped = torch.clamp(ratio, 1 - 0.2, 1 + 0.2)
        if ep_cost < 25.0:
            loss_pi = -torch.min(ratio * adv_r_b, ratio_cliped * adv_r_b).mean()
            loss_pi_c = (ratio * adv_c_b).mean()
            loss_pi_c /= 20.0 * (ep_cost - 25.0)
            loss_pi += loss_pi_c
        else:
            loss_pi = torch.max(ratio * adv_c_b, ratio_cliped * adv_c_b).mean()
        return loss_pi

    return loss


def p3o_official_loss(ep_cost: float) -> ActorLoss:
    """``p3o.py`` as written (ε = 0.2, κ = 10, γ = 0.99, d = 25)."""

    def loss(dist: Distribution, old: Normal, ratio: Tensor, adv: dict[str, Tensor]) -> Tensor:
        adv_r_b, adv_c_b = adv["adv_r"], adv["adv_c"]
        ratio_cliped = torch.clamp(ratio, 1 - 0.2, 1 + 0.2)
        loss_pi = -torch.min(ratio * adv_r_b, ratio_cliped * adv_r_b).mean()
        loss_pi_c = torch.max(ratio * adv_c_b, ratio_cliped * adv_c_b).mean()
        loss_pi_c += (1 - 0.99) * (ep_cost - 25.0)
        return loss_pi + 10.0 * torch.max(torch.zeros_like(loss_pi_c), loss_pi_c)

    return loss


def focops_official_loss(eta: float, masked: list[int]) -> ActorLoss:
    """``focops.py`` as written: a (B, 1) KL and mask against (B,) surrogate terms (λ = 1.5,
    η = ``eta``; the script's is target_kl), which broadcasts to B × B before the mean.
    ``masked`` collects how many samples each minibatch's mask dropped."""

    def loss(dist: Distribution, old: Normal, ratio: Tensor, adv: dict[str, Tensor]) -> Tensor:
        temp_kl = torch.distributions.kl_divergence(dist, old).sum(-1, keepdim=True)
        mask = (temp_kl.detach() <= eta).type(torch.float32)
        masked.append(int((mask == 0).sum()))
        return ((temp_kl - (1 / 1.5) * ratio * adv["adv"]) * mask).mean()

    return loss


class OfficialLoop:
    """The official script's update on copies of the actor and critics (autograd, Adam)."""

    def __init__(self, algo: Algo, epochs: int, actor_loss: ActorLoss) -> None:
        self.actor = copy.deepcopy(algo.actor)
        self.critics = copy.deepcopy(algo.critics)
        self.actor_optim = torch.optim.Adam(self.actor.parameters(), lr=3e-4)
        self.critic_optim = torch.optim.Adam(self.critics.parameters(), lr=3e-4)
        self.scheduler = torch.optim.lr_scheduler.LinearLR(
            self.actor_optim, start_factor=1.0, end_factor=0.0, total_iters=epochs
        )
        self.actor_loss = actor_loss

    def epoch(self, batch: Batch, lam: float, orders: list[list[Tensor]], target_kl: float) -> int:
        with torch.no_grad():
            old = self.actor.distribution(batch.obs)
        advantage = (batch.adv_r - lam * batch.adv_c) / (lam + 1)
        passes = 0
        for minibatches in orders:
            for idx in minibatches:
                values = self.critics(batch.obs[idx])
                loss_r = torch.nn.functional.mse_loss(values[:, 0], batch.target_r[idx])
                loss_c = torch.nn.functional.mse_loss(values[:, 1], batch.target_c[idx])
                l2 = sum(p.pow(2).sum() for p in self.critics.parameters())
                dist = self.actor.distribution(batch.obs[idx])
                ratio = torch.exp(dist.log_prob(batch.act[idx]).sum(-1) - batch.logp[idx])
                old_b = Normal(old.mean[idx], old.stddev.expand_as(old.mean)[idx])
                advantages = {
                    "adv": advantage[idx],
                    "adv_r": batch.adv_r[idx],
                    "adv_c": batch.adv_c[idx],
                }
                loss_pi = self.actor_loss(dist, old_b, ratio, advantages)
                self.actor_optim.zero_grad()
                self.critic_optim.zero_grad()
                (loss_pi + loss_r + loss_c + 0.001 * l2).backward()
                params = [*self.actor.parameters(), *self.critics.parameters()]
                torch.nn.utils.clip_grad_norm_(params, 40.0)
                self.critic_optim.step()
                self.actor_optim.step()
            passes += 1
            new = self.actor.distribution(batch.obs)
            kl = torch.distributions.kl_divergence(old, new).sum(-1).mean().item()
            if kl > target_kl:
                break
        self.scheduler.step()
        return passes


OBS_SPACE = gymnasium.spaces.Box(-np.inf, np.inf, (OBS,), np.float32)
ACT_SPACE = gymnasium.spaces.Box(-1.0, 1.0, (ACT,), np.float32)
EPOCHS = 4  # the learning-rate horizon both sides schedule over


def two_epochs(
    algo: Algo,
    official: OfficialLoop,
    target_kl: float,
    check: Callable[[Batch], None] | None = None,
    ep_cost: float = 40.0,
) -> tuple[list[dict[str, float]], list[int]]:
    """Two epochs on each side, the minibatch order safebench draws recorded and replayed on
    the official loop; after each, the same passes and networks (and ``check(batch)``).
    Returns each epoch's diagnostics (its multiplier under ``lagrangian``, where the method has
    one) and passes."""
    orders: list[list[Tensor]] = []
    draw = algo.minibatches

    def recorded(n: int, size: int) -> list[Tensor]:
        orders.append(draw(n, size))
        return orders[-1]

    algo.minibatches = recorded  # type: ignore[method-assign]
    infos: list[dict[str, float]] = []
    passes_run = []
    for epoch in range(2):
        batch = _batch(algo, seed=epoch, ep_cost=ep_cost)
        orders.clear()
        info = algo.update_actor(batch)
        infos.append(info)
        passes = official.epoch(batch, info.get("lagrangian", 0.0), orders, target_kl)
        assert info["update_passes"] == passes
        passes_run.append(passes)
        got = [*algo.actor.parameters(), *algo.critics.parameters()]
        want = [*official.actor.parameters(), *official.critics.parameters()]
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=2e-6)
        if check is not None:
            check(batch)
    return infos, passes_run


@pytest.mark.parametrize("target_kl", [1e9, 1e-5])
def test_two_epochs_equal_the_official_loop(target_kl: float) -> None:
    torch.manual_seed(0)
    config = PPOLagConfig(hidden_sizes=(16, 16), update_iters=4, target_kl=target_kl)
    algo = PPOLag(OBS_SPACE, ACT_SPACE, config, cost_limit=25.0, seed=0)
    algo.set_schedule(EPOCHS)
    official = OfficialLoop(algo, EPOCHS, ppo_lag_loss)

    def same_policy(batch: Batch) -> None:
        with torch.no_grad():
            kl = float(kl_sum_dims(algo.actor, batch.obs, official.actor.distribution(batch.obs)))
        assert kl < 1e-9

    infos, passes_run = two_epochs(algo, official, target_kl, same_policy)
    lams = [i["lagrangian"] for i in infos]
    # Ĵc = 40 > d = 25 twice: λ = 0.001 + 0.035 after Adam's first step, then up again.
    assert lams[0] == pytest.approx(0.036, rel=1e-6) and lams[1] > lams[0]
    if target_kl < 1:
        assert min(passes_run) < config.update_iters, passes_run  # the early stop acted
    assert algo.actor_optim.lr == pytest.approx(official.scheduler.get_last_lr()[0], rel=1e-12)


@pytest.mark.parametrize(("eta", "target_kl"), [(0.02, 1e9), (2e-4, 1e9), (0.02, 1e-5)])
def test_two_focops_epochs_equal_the_official_loop(eta: float, target_kl: float) -> None:
    """FOCOPS's epoch is the official ``focops.py`` loop: its broadcast loss and mask, the
    advantage (Â_r − ν·Â_c)/(1 + ν), ν's projected Adam step, the joint clip, the KL stop."""
    torch.manual_seed(0)
    config = FOCOPSConfig(
        hidden_sizes=(16, 16), update_iters=4, target_kl=target_kl, focops_eta=eta
    )
    algo = FOCOPS(OBS_SPACE, ACT_SPACE, config, cost_limit=25.0, seed=0)
    algo.set_schedule(EPOCHS)
    masked: list[int] = []
    official = OfficialLoop(algo, EPOCHS, focops_official_loss(eta, masked))
    infos, passes_run = two_epochs(algo, official, target_kl)
    nus = [i["lagrangian"] for i in infos]
    assert nus[0] == pytest.approx(0.036, rel=1e-6) and nus[1] > nus[0]  # Ĵc = 40 > d = 25
    if eta < 0.02:
        assert sum(masked) > 0, "the mask never dropped a sample"
    if target_kl < 1:
        assert min(passes_run) < config.update_iters, passes_run
    assert algo.actor_optim.lr == pytest.approx(official.scheduler.get_last_lr()[0], rel=1e-12)


@pytest.mark.parametrize("ep_cost", [20.0, 40.0])  # feasible (barrier) and recovery mode
@pytest.mark.parametrize("target_kl", [1e9, 1e-5])
def test_two_ipo_epochs_equal_the_official_loop(ep_cost: float, target_kl: float) -> None:
    """IPO's epoch is ``ipo.py``'s: its loss in either mode (the barrier's official sign
    included), the joint clip, the KL stop, the rate schedule."""
    torch.manual_seed(0)
    config = IPOConfig(hidden_sizes=(16, 16), update_iters=4, target_kl=target_kl)
    algo = IPO(OBS_SPACE, ACT_SPACE, config, cost_limit=25.0, seed=0)
    algo.set_schedule(EPOCHS)
    official = OfficialLoop(algo, EPOCHS, ipo_official_loss(ep_cost))
    infos, passes_run = two_epochs(algo, official, target_kl, ep_cost=ep_cost)
    feasible = ep_cost < 25.0
    # 1/(t·(Ĵc − d)) = −0.01 at Ĵc = 20: the official sign
    assert [i["feasible_mode"] for i in infos] == [float(feasible)] * 2
    assert infos[0]["barrier_coef"] == (pytest.approx(-0.01) if feasible else 0.0)
    if target_kl < 1:
        assert min(passes_run) < config.update_iters, passes_run
    assert algo.actor_optim.lr == pytest.approx(official.scheduler.get_last_lr()[0], rel=1e-12)


@pytest.mark.parametrize("ep_cost", [0.0, 400.0])  # the penalty off / on at every step
@pytest.mark.parametrize("target_kl", [1e9, 1e-5])
def test_two_p3o_epochs_equal_the_official_loop(ep_cost: float, target_kl: float) -> None:
    """SafePO's P3O (``variant: official``) epoch is ``p3o.py``'s."""
    torch.manual_seed(0)
    config = P3OConfig(
        variant="official", hidden_sizes=(16, 16), update_iters=4, target_kl=target_kl
    )
    algo = P3O(OBS_SPACE, ACT_SPACE, config, cost_limit=25.0, seed=0)
    algo.set_schedule(EPOCHS)
    assert (algo.config.kappa, algo.config.cost_form) == (10.0, "official")
    official = OfficialLoop(algo, EPOCHS, p3o_official_loss(ep_cost))
    infos, passes_run = two_epochs(algo, official, target_kl, ep_cost=ep_cost)
    penalty = [i["loss_pi_cost"] for i in infos]
    assert all(p > 0 for p in penalty) if ep_cost > 25 else penalty == [0.0, 0.0]
    if target_kl < 1:
        assert min(passes_run) < config.update_iters, passes_run
    assert algo.actor_lr == pytest.approx(official.scheduler.get_last_lr()[0], rel=1e-12)
