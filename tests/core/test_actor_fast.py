"""The hand-written actor step (safebench.core.actor_fast) against autograd through the actor.

Tolerances: one minibatch's gradient and a few minibatch steps of every clipped-ratio
algorithm agree to float32 rounding (``rtol=1e-5, atol=1e-6``). Over a whole epoch of 40
passes rounding differences may grow through Adam's normalised steps, so a full epoch is held
to ``rtol=1e-4, atol=1e-5`` and the same number of passes (the parameters, of size 0.01-1,
differed by at most 2e-7 when this was written).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, cast

import gymnasium
import numpy as np
import pytest
import torch
from torch.distributions import Normal, kl_divergence

from algorithms.cppo_pid import CPPOPID
from algorithms.cup import CUP
from algorithms.focops import FOCOPS
from algorithms.ipo import IPO
from algorithms.p3o import P3O
from algorithms.ppo import PPO
from algorithms.ppo_lag import PPOLag
from safebench.core import critic_fast
from safebench.core.actor_fast import GaussianActorStep
from safebench.core.first_order import ActorAdam, clipped_surrogate
from safebench.core.onpolicy import OnPolicyAlgorithm, Rollout
from safebench.core.optim import distribution_rows, frozen_distribution
from safebench.core.policies import Activation, CategoricalActor, GaussianActor

EXACT = (1e-5, 1e-6)  # (rtol, atol)
EPOCH = (1e-4, 1e-5)


def _close(got: torch.Tensor, want: torch.Tensor, tol: tuple[float, float], what: str = "") -> None:
    torch.testing.assert_close(
        got, want, rtol=tol[0], atol=tol[1], msg=lambda m: f"{what}: {m}" if what else m
    )


def _data(
    actor: GaussianActor, n: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, actor.obs_dim, generator=g)
    act = torch.randn(n, actor.act_dim, generator=g)
    with torch.no_grad():
        logp = actor.log_prob(obs, act) + 0.1 * torch.randn(n, generator=g)
    return obs, act, logp


@pytest.mark.parametrize("activation", ["tanh", "relu", "tanh-torch"])
@pytest.mark.parametrize("form", ["ratio", "ratio+kl", "ratio+head-kl", "entropy"])
@pytest.mark.parametrize("b", [64, 7])
def test_minibatch_gradient_equals_autograd(
    activation: str, form: str, b: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ρ and ∂L/∂θ of a minibatch loss written on the head = autograd through the module
    (``tanh-torch``: torch's tanh, as off the CPU, instead of NumPy's). ``ratio+head-kl``: the
    KL to π_k from the head's :meth:`~GaussianHead.kl` (its derivative by hand), under a
    FOCOPS-style mask that drops the rows past a radius, against ``kl_divergence``."""
    if activation == "tanh-torch":
        monkeypatch.setattr(critic_fast, "_CPU_NUMPY_TANH", False)
        activation = "tanh"
    torch.manual_seed(0)
    actor = GaussianActor(5, 3, (16, 8), cast(Activation, activation), log_std_init=-0.3)
    obs, act, logp = _data(actor, 100)
    old = frozen_distribution(actor, obs)
    with torch.no_grad():  # move away from π_k so the ratio, clip and KL are not trivial
        for p in actor.parameters():
            p.add_(0.1 * torch.randn_like(p))
    adv = torch.randn(100)
    idx = torch.randperm(100)[:b]

    def loss(
        ratio: torch.Tensor, dist: Callable[[], Normal], kl: Callable[[], torch.Tensor]
    ) -> torch.Tensor:
        if form == "entropy":
            return -dist().entropy().mean() + (ratio * adv[idx]).mean()
        value = clipped_surrogate(ratio, adv[idx], 0.2)
        if form == "ratio+kl":
            value = value + kl_divergence(dist(), distribution_rows(old, idx)).sum(-1).mean()
        if form == "ratio+head-kl":
            kls = kl()
            mask = (kls.detach() <= kls.detach().median()).to(kls.dtype)
            value = value + 3.0 * (mask * kls).mean()
        return value

    ratio = torch.exp(actor.log_prob(obs[idx], act[idx]) - logp[idx])

    def autograd_kl() -> torch.Tensor:
        return kl_divergence(actor.distribution(obs[idx]), distribution_rows(old, idx)).sum(-1)

    loss(ratio, lambda: actor.distribution(obs[idx]), autograd_kl).backward()
    want = [p.grad.clone() for p in actor.parameters() if p.grad is not None]

    step = GaussianActorStep(actor, obs, act, logp)
    head = step.head(idx)
    _close(head.ratio(), ratio.detach(), EXACT)
    if form == "ratio+head-kl":  # kl_divergence's value on the head's π_θ, op for op
        on_head = kl_divergence(head.distribution(), distribution_rows(old, idx)).sum(-1)
        assert torch.equal(head.kl(old), on_head.detach())
        _close(head.kl(old), autograd_kl().detach(), EXACT)
        head = step.head(idx)
    step.backward(loss(head.ratio(), head.distribution, lambda: head.kl(old)), head)
    got = [p.grad for p in actor.parameters() if p.grad is not None]
    assert len(got) == len(want) == 7
    for g, w in zip(got, want, strict=True):
        _close(g, w, EXACT)
    offsets = np.cumsum([0] + [p.numel() for p in actor.parameters()])
    for p, start in zip(actor.parameters(), offsets, strict=False):
        assert p.grad is not None
        assert p.grad.data_ptr() == step.grad[start:].data_ptr()  # views of one flat buffer


def test_supports_only_the_plain_gaussian_mlp_actor() -> None:
    assert GaussianActorStep.supports(GaussianActor(4, 2))
    assert not GaussianActorStep.supports(CategoricalActor(4, 3))

    class Sub(GaussianActor):
        pass

    assert not GaussianActorStep.supports(Sub(4, 2))
    frozen = GaussianActor(4, 2)
    frozen.log_std.requires_grad_(False)
    assert not GaussianActorStep.supports(frozen)
    wide = GaussianActor(4, 2)
    wide.mean_net.append(torch.nn.Tanh())
    assert not GaussianActorStep.supports(wide)


@pytest.mark.parametrize("fused", [True, False])
def test_bound_step_is_optim_step_bit_for_bit(fused: bool) -> None:
    torch.manual_seed(0)
    actors = [GaussianActor(5, 3), GaussianActor(5, 3)]
    actors[1].load_state_dict(actors[0].state_dict())
    optims = [ActorAdam(a.parameters(), 1e-2, decay=False, fused=fused) for a in actors]
    flat = torch.empty(sum(p.numel() for p in actors[0].parameters()))
    for a in actors:  # .grad: fixed views of one buffer, as GaussianActorStep installs them
        offset = 0
        for p in a.parameters():
            p.grad = flat[offset : offset + p.numel()].view_as(p)
            offset += p.numel()
    step = optims[1].bound_step()
    for _ in range(5):
        flat.normal_()
        optims[0].optim.step()
        step()
    for p, q in zip(actors[0].parameters(), actors[1].parameters(), strict=True):
        assert torch.equal(p, q)
    assert str(optims[0].state_dict()) == str(optims[1].state_dict())


# ------------------------------------------------------------- the algorithms, fast vs autograd

ALGORITHMS: dict[str, tuple[type[OnPolicyAlgorithm], dict[str, Any]]] = {
    "ppo": (PPO, {}),
    "ppo-lag": (PPOLag, {}),
    "cppo-pid": (CPPOPID, {}),
    "focops": (FOCOPS, {}),
    "cup": (CUP, {}),
    "ipo": (IPO, {}),
    "p3o": (P3O, {"variant": "official"}),
    "ppo-lag-omnisafe": (PPOLag, {"variant": "omnisafe"}),  # separate clips
    "focops-paper": (FOCOPS, {"variant": "paper"}),
}


def _rollout(algo: OnPolicyAlgorithm, n: int, seed: int) -> Rollout:
    rng = np.random.default_rng(seed)
    obs = rng.standard_normal((n, algo.obs_dim)).astype(np.float32)
    act = rng.standard_normal((n, 2)).astype(np.float32)
    return Rollout(
        obs=obs,
        act=act,
        logp=algo.log_prob(obs, act),
        adv_r=rng.standard_normal(n),
        adv_c=rng.standard_normal(n),
        target_r=50 * rng.standard_normal(n),  # large: the joint gradient clip acts
        target_c=50 * rng.standard_normal(n),
        ep_cost=40.0,
        ep_ret=0.0,
        ep_cost_epoch=30.0,  # above the limit 25: λ > 0 and IPO's recovery mode from epoch 2
    )


def _fast_and_autograd(
    name: str, monkeypatch: pytest.MonkeyPatch, epochs: int, n: int, **overrides: Any
) -> tuple[OnPolicyAlgorithm, OnPolicyAlgorithm, list[dict[str, float]], list[dict[str, float]]]:
    cls, config = ALGORITHMS[name]
    obs_space = gymnasium.spaces.Box(-np.inf, np.inf, (3,))
    act_space = gymnasium.spaces.Box(-1, 1, (2,))
    fast = cls(obs_space, act_space, cls.Config(**config, **overrides), cost_limit=25.0, seed=0)
    slow = copy.deepcopy(fast)
    infos_fast, infos_slow = [], []
    spy = _Spy(monkeypatch)
    for epoch in range(epochs):
        infos_fast.append(fast.update(_rollout(fast, n, epoch)))
    assert spy.built > 0
    monkeypatch.setattr(GaussianActorStep, "supports", staticmethod(lambda actor: False))
    for epoch in range(epochs):
        infos_slow.append(slow.update(_rollout(slow, n, epoch)))
    return fast, slow, infos_fast, infos_slow


class _Spy:
    """Counts the :class:`GaussianActorStep` objects built (each ``clipped_epoch`` call)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.built = 0
        init = GaussianActorStep.__init__

        def counting(step: GaussianActorStep, *args: Any) -> None:
            self.built += 1
            init(step, *args)

        monkeypatch.setattr(GaussianActorStep, "__init__", counting)


def _assert_same_state(
    fast: OnPolicyAlgorithm, slow: OnPolicyAlgorithm, tol: tuple[float, float]
) -> None:
    for (name, p), q in zip(fast.actor.named_parameters(), slow.actor.parameters(), strict=True):
        _close(p, q, tol, f"actor {name}")
        # .grad holds the last minibatch's gradient after the clip (the joint clip scales the
        # views of the flat buffer in place).
        assert p.grad is not None and q.grad is not None
        _close(p.grad, q.grad, tol, f"actor {name}.grad")
    _close(fast.critics.flat_parameters, slow.critics.flat_parameters, tol, "critics")


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_a_few_minibatch_steps_equal_autograd(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two epochs of one pass over 4 minibatches (64, 64, 64, 8): λ = 0 then λ > 0, IPO's
    feasible then recovery mode, CUP's projection phase after each."""
    fast, slow, infos_fast, infos_slow = _fast_and_autograd(
        name, monkeypatch, epochs=2, n=200, update_iters=1
    )
    _assert_same_state(fast, slow, EXACT)
    for got, want in zip(infos_fast, infos_slow, strict=True):
        assert got.keys() == want.keys()
        for key in got:
            assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-6), key


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_an_epoch_equals_autograd(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """One epoch at the default 40 passes (KL early stop on) over 8 minibatches of 64."""
    fast, slow, infos_fast, infos_slow = _fast_and_autograd(name, monkeypatch, epochs=1, n=512)
    _assert_same_state(fast, slow, EPOCH)
    assert infos_fast[0]["update_passes"] == infos_slow[0]["update_passes"]


def test_p3o_omnisafe_keeps_autograd(monkeypatch: pytest.MonkeyPatch) -> None:
    """P3O's default variant stays on the autograd path its existing runs were made with."""
    spy = _Spy(monkeypatch)
    obs_space = gymnasium.spaces.Box(-np.inf, np.inf, (3,))
    act_space = gymnasium.spaces.Box(-1, 1, (2,))
    algo = P3O(obs_space, act_space, P3O.Config(), cost_limit=25.0, seed=0)
    algo.update(_rollout(algo, 100, 0))
    assert spy.built == 0
