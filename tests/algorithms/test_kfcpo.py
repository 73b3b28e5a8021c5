"""KFCPO: margin weights, projection, step sizes, KL checks, resume, a recorded real batch, and
learning on CMDPs with other horizons, cost scales and limits."""

from __future__ import annotations

import io
import math
import re
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from algorithms.cpo import CPO, CPOConfig
from algorithms.kfcpo import (
    KFCPO,
    MINIBATCH_V0_DEFAULTS,
    KFCPOConfig,
    kl_budget_scale,
    margin_weight,
    minibatch_kl,
    project_conflict,
    trust_region_scale,
)
from safebench import registry
from safebench.cmdps import ContinuousTarget, TabularCMDP
from safebench.core.kfac import KFAC
from safebench.core.onpolicy import Rollout
from safebench.core.optim import flat_params, frozen_distribution, set_flat_params
from safebench.errors import RunInterrupted
from safebench.schema.spec import EvalSpec, RunSpec, expand, load_experiment
from safebench.training.runner import metrics_frame, run
from tests.algorithms.convergence import Outcome, train_seeds
from tests.algorithms.synthetic import box_spaces, discrete_spaces, synthetic_rollout
from tests.learning import Margins, median, torch_threads

V0 = {"variant": "minibatch-v0"}

# --------------------------------------------------------------------------------------------
# Pure math
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "k", "lam"), [(25.0, 0.5, 0.8), (5.0, 2.5, 0.9), (1.0, 10.0, 1.0)]
)
def test_margin_weight_is_half_at_centre_and_monotone(limit: float, k: float, lam: float) -> None:
    assert margin_weight(lam * limit, limit, k, lam) == 0.5
    costs = np.linspace(0.0, 3.0 * limit, 301)
    w = [margin_weight(float(c), limit, k, lam) for c in costs]
    assert all(b >= a for a, b in pairwise(w))
    centre = [margin_weight(lam * limit + x / k, limit, k, lam) for x in np.linspace(-4, 4, 81)]
    assert all(b > a for a, b in pairwise(centre))  # strictly increasing where it matters
    # the 0.12 -> 0.88 transition spans λC ± 2/k
    assert margin_weight(lam * limit + 2.0 / k, limit, k, lam) == pytest.approx(0.8808, abs=1e-4)
    assert margin_weight(lam * limit - 2.0 / k, limit, k, lam) == pytest.approx(0.1192, abs=1e-4)
    assert margin_weight(1e9, limit, k, lam) == 1.0  # no overflow far from the margin
    assert margin_weight(-1e9, limit, k, lam) == 0.0


def test_margin_weight_in_limit_units_is_scale_free() -> None:
    """``units="limit"``: the weight depends on Ĵc/d only, so rescaling the cost units (or
    the limit and the cost together) leaves it unchanged; it is the cost-unit weight with
    k/d, and the default k = 12.5 is the spec's k = 0.5 per cost unit at d = 25."""
    for ratio in (0.5, 0.8, 0.9, 1.0, 1.3):
        ref = margin_weight(ratio, 1.0, 12.5, 0.8, "limit")
        for d in (0.2, 4.0, 25.0, 1000.0):
            w = margin_weight(ratio * d, d, 12.5, 0.8, "limit")
            assert w == pytest.approx(ref, rel=1e-12)
            assert w == pytest.approx(margin_weight(ratio * d, d, 12.5 / d, 0.8), rel=1e-12)
        assert ref == pytest.approx(margin_weight(ratio * 25.0, 25.0, 0.5, 0.8), rel=1e-12)
    # in cost units the same relative cost gives different weights for different limits
    assert margin_weight(0.9 * 4.0, 4.0, 0.5, 0.8) < 0.6 < margin_weight(0.9 * 100, 100, 0.5, 0.8)
    # d = 0: the ratio is undefined, cost units are used
    assert margin_weight(0.1, 0.0, 2.0, 0.8, "limit") == margin_weight(0.1, 0.0, 2.0, 0.8)


def _spd(n: int, gen: torch.Generator) -> torch.Tensor:
    m = torch.randn(n, n, generator=gen, dtype=torch.float64)
    return m @ m.T + 0.1 * torch.eye(n, dtype=torch.float64)


@pytest.mark.parametrize("metric", ["euclidean", "spd"])
@pytest.mark.parametrize("mode", ["cost", "cost-soft", "pcgrad", "dominant"])
@pytest.mark.parametrize("w_c", [0.2, 0.8])
def test_projection_leaves_no_conflict(metric: str, mode: str, w_c: float) -> None:
    gen = torch.Generator().manual_seed(0)
    M = _spd(12, gen) if metric == "spd" else torch.eye(12, dtype=torch.float64)

    def inner(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return u @ (M @ v)

    conflicts = 0
    for _ in range(200):
        d_r = torch.randn(12, generator=gen, dtype=torch.float64)
        d_c = torch.randn(12, generator=gen, dtype=torch.float64)
        before = float(inner(d_r, d_c))
        r, c, projected = project_conflict(d_r, d_c, mode, w_c, inner)  # type: ignore[arg-type]
        assert projected == (before < 0)
        if not projected:
            assert r is d_r and c is d_c
            continue
        conflicts += 1
        scale = float(inner(d_r, d_r) * inner(d_c, d_c)) ** 0.5
        # each direction keeps improving its own objective
        assert float(inner(r, d_r)) >= 0 and float(inner(c, d_c)) >= 0
        if mode == "cost-soft":
            # the share w_r of the conflicting component is removed, w_c of it remains
            assert torch.equal(r, d_r)
            assert float(inner(c, d_r)) == pytest.approx(w_c * before, rel=1e-9)
            assert float(inner(c, d_c)) > 0
            continue
        assert float(inner(r, c)) >= -1e-12 * scale
        cost_only = mode == "cost" or (mode == "dominant" and w_c < 0.5)
        if cost_only:
            assert torch.equal(r, d_r)
            assert abs(float(inner(c, d_r))) <= 1e-12 * scale
        elif mode == "dominant":
            assert torch.equal(c, d_c)
            assert abs(float(inner(r, d_c))) <= 1e-12 * scale
        else:
            assert not torch.equal(r, d_r) and not torch.equal(c, d_c)
            assert float(inner(r, c)) > 0  # PCGrad: −p(1 − p²/(‖d_r‖²‖d_c‖²)) > 0
    assert conflicts > 50
    d_r, d_c = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])
    assert project_conflict(d_r, d_c, "none", w_c) == (d_r, d_c, False)


def test_fisher_projection_keeps_the_reward_surrogate() -> None:
    """In the metric M (the K-FAC Fisher), with d = M⁻¹g: conflict ⇔ d_r raises the cost
    (d_rᵀg_c < 0), and the projected cost direction leaves the reward gradient's first-order
    change at zero; the Euclidean projection does neither in general."""
    gen = torch.Generator().manual_seed(1)
    M = _spd(8, gen)

    def inner(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return u @ (M @ v)

    checked = 0
    for _ in range(100):
        g_r, g_c = torch.randn(2, 8, generator=gen, dtype=torch.float64)
        d_r, d_c = torch.linalg.solve(M, g_r), torch.linalg.solve(M, g_c)
        _, c, projected = project_conflict(d_r, d_c, "cost", 0.5, inner)
        assert projected == (float(d_r @ g_c) < 0)
        if projected:
            assert abs(float(c @ g_r)) <= 1e-10 * float(c.norm() * g_r.norm())
            _, c_euclid, _ = project_conflict(d_r, d_c, "cost", 0.5)
            assert abs(float(c_euclid @ g_r)) > 1e-6
            checked += 1
    assert checked > 20


def test_trust_region_scale() -> None:
    nu = trust_region_scale(4.0, kl_clip=1e-3, lr=0.25, nu_max=1.0)
    assert 0.5 * (0.25 * nu) ** 2 * 4.0 == pytest.approx(1e-3, rel=1e-12)
    assert trust_region_scale(1e-6, 1e-3, 0.25, 1.0) == 1.0  # cap
    assert trust_region_scale(0.0, 1e-3, 0.25, 0.7) == 0.7
    assert math.isnan(trust_region_scale(math.nan, 1e-3, 0.25, 1.0))


def test_kl_budget_scale_is_the_largest_admissible_step() -> None:
    rng = np.random.default_rng(0)
    hit = 0
    for _ in range(2000):
        kl0, target = rng.uniform(0, 0.012, size=2)
        slope, quad = rng.normal(0, 0.05), rng.uniform(1e-3, 5.0)
        cap = rng.choice([1e-2, 1e-3])
        t = kl_budget_scale(kl0, slope, quad, target, cap)

        def model(s: float, kl0: float = kl0, slope: float = slope, quad: float = quad) -> float:
            return kl0 + slope * s + 0.5 * quad * s * s

        assert t >= 0.0
        assert 0.5 * quad * t * t <= cap * (1 + 1e-12)
        if t > 0 and kl0 > target:  # overspent: the step lowers the KL
            assert model(t) < kl0
        elif t > 0:
            assert model(t) <= target + 1e-12
            # larger steps break one of the two bounds
            s = t * (1 + 1e-6)
            assert model(s) > target or 0.5 * quad * s * s > cap
            hit += model(t) == pytest.approx(target, rel=1e-9)
        else:
            # no admissible step: the model is above the target just after 0
            assert model(1e-9) > target or kl0 >= target
    assert hit > 300  # the target binds in about a quarter of the draws
    assert kl_budget_scale(0.0, 0.0, 2.0, 0.01, 1.0) == pytest.approx(0.1)  # ½·2·t² = 0.01
    # overspent, moving back: t² − 0.3t + 0.01 = 0, far root
    assert kl_budget_scale(0.02, -0.3, 2.0, 0.01, 1.0) == pytest.approx((0.3 + math.sqrt(0.05)) / 2)
    assert kl_budget_scale(0.02, 0.1, 2.0, 0.01, 1.0) == 0.0  # spent and moving away
    assert kl_budget_scale(0.0, 0.0, 0.0, 0.01, 1.0) == 0.0  # d = 0
    # the cap on the step's own KL with its own quadratic form (minibatch vs batch)
    assert kl_budget_scale(0.0, 0.0, 2.0, 0.01, 1e-3, 20.0) == pytest.approx(0.01)
    assert kl_budget_scale(0.0, 0.0, 2.0, 0.01, 1e-3, 0.2) == pytest.approx(0.1)
    assert math.isnan(kl_budget_scale(0.0, math.nan, 1.0, 0.01, 1.0))


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------


def _config(**overrides: Any) -> KFCPOConfig:
    return KFCPOConfig(hidden_sizes=(16, 16), update_iters=2, batch_size=64, **overrides)


def test_config_defaults_and_tags() -> None:
    cfg = KFCPOConfig()
    assert cfg.variant == "large-batch"
    assert (cfg.rollback_kl, cfg.target_kl, cfg.target_fill, cfg.actor_minibatches) == (
        0.01,
        0.01,
        0.95,
        10,
    )
    assert (cfg.margin_k, cfg.margin_lambda, cfg.margin_units) == (12.5, 0.8, "limit")
    assert (cfg.projection, cfg.projection_metric, cfg.normalize_directions) == (
        "cost-soft",
        "fisher",
        True,
    )
    assert (cfg.kfac_decay, cfg.kfac_damping, cfg.update_iters, cfg.batch_size) == (
        0.5,
        1e-2,
        10,
        128,
    )
    # the baselines' trust region
    assert cfg.target_kl == CPOConfig().target_kl
    for name, field in KFCPOConfig.model_fields.items():
        assert re.match(r"\[[HML]\] ", field.description or ""), name
    assert registry.get("kfcpo").cls is KFCPO


def test_minibatch_v0_variant_restores_its_defaults() -> None:
    v0 = KFCPOConfig(**V0)
    assert (v0.margin_k, v0.margin_units, v0.normalize_directions) == (0.5, "cost", False)
    assert (v0.projection, v0.projection_metric, v0.kl_convention, v0.rollback_reference) == (
        "cost",
        "euclidean",
        "sum",
        "epoch_start",
    )
    assert (v0.kfac_decay, v0.inverse_every, v0.kl_clip, v0.lr) == (0.99, 10, 0.001, 0.25)
    assert {k: getattr(v0, k) for k in MINIBATCH_V0_DEFAULTS} == MINIBATCH_V0_DEFAULTS
    assert KFCPOConfig(variant="minibatch-v0", margin_k=2.5).margin_k == 2.5  # a given key wins
    # a resolved config (as stored in a run spec) round-trips
    dumped = registry.resolve_config("kfcpo", V0).model_dump(mode="json")
    assert registry.resolve_config("kfcpo", dumped) == v0


# --------------------------------------------------------------------------------------------
# The algorithm on synthetic batches
# --------------------------------------------------------------------------------------------


def test_update_diagnostics_large_batch() -> None:
    obs_space, act_space = box_spaces()
    algo = KFCPO(obs_space, act_space, _config(actor_minibatches=4), cost_limit=25.0, seed=0)
    theta = flat_params(algo.actor)
    rollout = synthetic_rollout(algo, n=512, ep_cost=30.0, seed=0)
    info = algo.update(rollout)
    assert all(math.isfinite(v) for v in info.values())
    assert info["actor_steps"] == info["kfac_refreshes"] == info["kfac_stats_updates"] == 4
    assert info["critic_steps"] == 2 * 8  # update_iters × ⌈512/64⌉, after the actor steps
    assert info["w_c"] == margin_weight(30.0, 25.0, 12.5, 0.8, "limit")
    proposals = info["rollbacks"] + 4 - info["steps_rolled_back"]
    assert info["rollback_rate"] == info["rollbacks"] / proposals
    either = (info["rollbacks_step_kl"], info["rollbacks_epoch_kl"])
    assert max(either) <= info["rollbacks"] <= sum(either)
    # the reported epoch KL is KL̄(π_θk ‖ π_θ) of the actor the update left, on the batch, and
    # inside the baselines' trust region (mean over action dims)
    batch = algo.prepare(rollout)
    probe = KFCPO(obs_space, act_space, _config(), cost_limit=25.0, seed=0)
    set_flat_params(probe.actor, theta)
    with torch.no_grad():
        kl = minibatch_kl(
            probe.actor.distribution(batch.obs), algo.actor.distribution(batch.obs), "mean"
        )
    assert info["kl"] == pytest.approx(float(kl), rel=1e-6)
    assert 0.0 < info["kl"] <= 0.01
    assert info["kl_step_max"] <= 0.01 and info["kl_epoch_step_max"] <= 0.01
    assert info["kfac_predicted_kl"] > 0 and info["kl_step_predicted"] > 0
    assert algo.kfac_steps == 4


def test_update_diagnostics_and_schedules_minibatch_v0() -> None:
    obs_space, act_space = box_spaces()
    algo = KFCPO(obs_space, act_space, _config(inverse_every=3, **V0), cost_limit=25.0, seed=0)
    info = algo.update(synthetic_rollout(algo, n=256, ep_cost=30.0, seed=0))
    assert all(math.isfinite(v) for v in info.values())
    steps = 2 * 4  # update_iters × minibatches
    assert info["actor_steps"] == info["critic_steps"] == steps
    assert info["kfac_stats_updates"] == steps
    assert info["kfac_refreshes"] == 3  # steps 0, 3, 6
    assert info["w_c"] == margin_weight(30.0, 25.0, 0.5, 0.8)
    assert info["rollback_rate"] == info["rollbacks"] / steps
    assert info["projection_rate"] == info["projections"] / steps
    assert 0.0 < info["nu"] <= 1.0
    # every step's predicted KL is at most κ, so is their mean
    assert info["predicted_kl"] <= 1e-3 * (1 + 1e-9)
    info = algo.update(synthetic_rollout(algo, n=256, ep_cost=30.0, seed=1))
    assert info["kfac_refreshes"] == 3  # steps 9, 12, 15: the counter runs across epochs
    assert algo.kfac_steps == 2 * steps


@pytest.mark.parametrize("reference", ["epoch_start", "previous"])
def test_rollback_restores_parameters_bit_for_bit_minibatch_v0(reference: str) -> None:
    obs_space, act_space = box_spaces()
    cfg = _config(rollback_kl=1e-12, rollback_reference=reference, **V0)
    algo = KFCPO(obs_space, act_space, cfg, cost_limit=25.0, seed=0)
    before = [p.detach().clone() for p in algo.actor.parameters()]
    critic_before = [p.detach().clone() for p in algo.critics.parameters()]
    info = algo.update(synthetic_rollout(algo, n=256, ep_cost=10.0, seed=0))
    assert info["rollback_rate"] == 1.0 and info["kl"] == 0.0
    assert info["kl_step"] > 0.0  # a real step was taken and then undone
    for a, b in zip(before, algo.actor.parameters(), strict=True):
        assert torch.equal(a, b)
    assert any(
        not torch.equal(a, b) for a, b in zip(critic_before, algo.critics.parameters(), strict=True)
    )


@pytest.mark.parametrize("check", ["step", "epoch"])
def test_rollback_restores_parameters_bit_for_bit(
    check: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Steps far beyond the model's size break the step check (a step's own KL > ε_KL) or,
    with ε_KL out of the way, the epoch bound (KL from π_θk > δ): θ is restored exactly."""
    obs_space, act_space = box_spaces()
    overrides = {"rollback_kl": 1.0} if check == "epoch" else {"target_kl": 1.0}
    algo = KFCPO(
        obs_space, act_space, _config(step_retries=0, **overrides), cost_limit=25.0, seed=0
    )
    monkeypatch.setattr("algorithms.kfcpo.kl_budget_scale", lambda *args: 1e3)
    before = [p.detach().clone() for p in algo.actor.parameters()]
    info = algo.update(synthetic_rollout(algo, n=512, ep_cost=10.0, seed=0))
    assert info["rollback_rate"] == 1.0 and info["kl"] == 0.0
    assert info[f"rollbacks_{check}_kl"] == info["actor_steps"]
    assert info["kl_step"] > 0.0  # real steps were taken and then undone
    for a, b in zip(before, algo.actor.parameters(), strict=True):
        assert torch.equal(a, b)


def test_retries_shrink_an_oversized_step_until_it_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A step 1000× too long (a quadratic model far outside its range) is rolled back, then
    retried shorter by the measured overshoot; the first passing proposal is kept."""
    obs_space, act_space = box_spaces()
    algo = KFCPO(obs_space, act_space, _config(step_retries=6), cost_limit=25.0, seed=0)
    monkeypatch.setattr("algorithms.kfcpo.kl_budget_scale", lambda *args: 30.0)
    theta = flat_params(algo.actor)
    info = algo.update(synthetic_rollout(algo, n=512, ep_cost=10.0, seed=0))
    assert info["rollbacks"] >= info["actor_steps"]  # every first proposal failed
    assert info["steps_rolled_back"] < info["actor_steps"]  # some retry passed
    assert not torch.equal(theta, flat_params(algo.actor))
    assert 0.0 < info["kl"] <= 0.01


@pytest.mark.parametrize("kind", ["box", "discrete"])
def test_an_accepted_step_has_true_kl_within_the_bounds(kind: str) -> None:
    """Drive single steps by hand, with ε_KL small enough that the model error of the step
    size decides: a rejected step leaves θ bit-identical; an accepted one moved θ, and its
    true KL(π_θ' ‖ π_θ) on the minibatch — recomputed here from the two parameter vectors —
    is at most ε_KL, and KL̄(π_θk ‖ π_θ') on the whole batch at most δ (mean over action
    dims, the baselines' convention)."""
    obs_space, act_space = box_spaces() if kind == "box" else discrete_spaces()
    eps, delta = 2e-4, 0.01
    cfg = _config(rollback_kl=eps, target_kl=delta, step_retries=0)
    algo = KFCPO(obs_space, act_space, cfg, cost_limit=25.0, seed=3)
    batch = algo.prepare(synthetic_rollout(algo, n=2048, ep_cost=22.0, seed=3))
    start = frozen_distribution(algo.actor, batch.obs)
    probe = KFCPO(obs_space, act_space, _config(), cost_limit=25.0, seed=3)
    outcomes = []
    for j, idx in enumerate(algo.minibatches(len(batch), 256) * 4):
        algo.kfac.update_stats(batch.obs[idx], algo.generator)
        algo.kfac.refresh_inverse()
        theta = flat_params(algo.actor)
        step = algo.budget_step(batch, idx, 0.6, start, delta * (j + 1) / 32)
        new = flat_params(algo.actor)
        moved = not torch.equal(theta, new)
        assert moved != bool(step["rolled_back"])
        if moved:
            with torch.no_grad():
                set_flat_params(probe.actor, theta)
                before = probe.actor.distribution(batch.obs[idx])
                set_flat_params(probe.actor, new)
                after = probe.actor.distribution(batch.obs[idx])
                kl_step = float(minibatch_kl(after, before, "mean"))
                kl_epoch = float(minibatch_kl(start, probe.actor.distribution(batch.obs), "mean"))
            assert 0.0 < kl_step <= eps
            assert kl_step == pytest.approx(step["kl_step"], rel=1e-3, abs=1e-7)  # float32
            assert kl_epoch <= delta
        outcomes.append(bool(step["rolled_back"]))
    assert outcomes.count(False) >= 3
    if kind == "box":  # the categorical model is accurate enough never to overshoot here
        assert True in outcomes


def test_accepted_steps_stay_in_the_rollback_region_minibatch_v0() -> None:
    """minibatch-v0: a rejected step leaves θ bit-identical, an accepted one moves it and its
    minibatch KL from π_θk is at most ε_KL."""
    obs_space, act_space = box_spaces()
    algo = KFCPO(obs_space, act_space, _config(rollback_kl=1e-2, **V0), cost_limit=25.0, seed=3)
    batch = algo.prepare(synthetic_rollout(algo, n=512, ep_cost=10.0, seed=3))
    start = frozen_distribution(algo.actor, batch.obs)
    outcomes = set()
    for idx in algo.minibatches(len(batch), 64) * 3:
        algo.kfac.update_stats(batch.obs[idx], algo.generator)
        algo.kfac.refresh_inverse()
        theta = flat_params(algo.actor)
        ref = torch.distributions.Normal(start.loc[idx], start.scale[idx])  # type: ignore[attr-defined]
        step = algo.actor_step(batch, idx, 0.5, ref)
        moved = not torch.equal(theta, flat_params(algo.actor))
        assert moved != bool(step["rolled_back"])
        if moved:
            assert step["kl_minibatch"] <= 1e-2
        outcomes.add(bool(step["rolled_back"]))
    assert outcomes == {True, False}


def _clone_through_bytes(algo: KFCPO, seed: int) -> KFCPO:
    obs_space, act_space = box_spaces()
    clone = KFCPO(obs_space, act_space, algo.config, cost_limit=25.0, seed=seed)
    buffer = io.BytesIO()  # through bytes, as the runner checkpoints
    torch.save(algo.state_dict(), buffer)
    buffer.seek(0)
    clone.load_state_dict(torch.load(buffer, weights_only=False))
    return clone


@pytest.mark.parametrize("variant", ["large-batch", "minibatch-v0"])
def test_resume_from_checkpoint_continues_identically(variant: str) -> None:
    obs_space, act_space = box_spaces()
    cfg = _config(variant=variant, inverse_every=3, actor_minibatches=3, kfac_decay=0.9)
    algo = KFCPO(obs_space, act_space, cfg, cost_limit=25.0, seed=0)
    for epoch in range(2):
        algo.update(synthetic_rollout(algo, n=256, ep_cost=20.0 + epoch, seed=epoch))
    clone = _clone_through_bytes(algo, seed=7)
    # The K-FAC factors are part of the state: without them the continuation differs.
    amnesic = _clone_through_bytes(algo, seed=7)
    amnesic.kfac = KFAC(amnesic.actor, decay=0.9)

    rollout = synthetic_rollout(algo, n=256, ep_cost=22.0, seed=5)
    expected = algo.update(rollout)
    assert clone.update(rollout) == expected
    for a, b in zip(algo.actor.parameters(), clone.actor.parameters(), strict=True):
        assert torch.equal(a, b)
    for x, y in zip(algo.kfac.G + algo.kfac.QA, clone.kfac.G + clone.kfac.QA, strict=True):
        assert x is not None and y is not None and torch.equal(x, y)
    assert clone.kfac_steps == algo.kfac_steps
    amnesic.update(rollout)
    assert not torch.equal(flat_params(amnesic.actor), flat_params(algo.actor))


@pytest.mark.parametrize("variant", ["large-batch", "minibatch-v0"])
def test_discrete_actions(variant: str) -> None:
    obs_space, act_space = discrete_spaces()
    algo = KFCPO(obs_space, act_space, _config(variant=variant), cost_limit=25.0, seed=1)
    theta = flat_params(algo.actor)
    info = algo.update(synthetic_rollout(algo, n=512, seed=1))
    assert all(math.isfinite(v) for v in info.values())
    assert info["rollback_rate"] < 1.0
    assert not torch.equal(theta, flat_params(algo.actor))


# --------------------------------------------------------------------------------------------
# A recorded real batch: SafetyHalfCheetahVelocity-v1
# --------------------------------------------------------------------------------------------

FIXTURE = Path(__file__).parent.parent / "fixtures" / "halfcheetah_cpo_epoch15.npz"
ROLLOUT_FIELDS = ("obs", "act", "logp", "adv_r", "adv_c", "target_r", "target_c")


def _load_fixture() -> tuple[Rollout, dict[str, torch.Tensor]]:
    """One 20000-step epoch of SafetyHalfCheetahVelocity-v1 (10 envs) collected by CPO after 15
    epochs of training (``scripts/bench/kfcpo.py record``), and the policy that collected it."""
    z = np.load(FIXTURE)
    fields = {
        k: z[k] if k in ("obs", "act", "logp") else z[k].astype(np.float64) for k in ROLLOUT_FIELDS
    }
    rollout = Rollout(**fields, ep_cost=float(z["ep_cost"]), ep_ret=float(z["ep_ret"]))
    actor = {k[len("actor/") :]: torch.as_tensor(z[k]) for k in z.files if k.startswith("actor/")}
    return rollout, actor


def _on_fixture(cls: type, config: Any, rollout: Rollout, actor: dict[str, torch.Tensor]) -> Any:
    obs_space = box_spaces()[0].__class__(-np.inf, np.inf, rollout.obs.shape[1:], np.float32)
    act_space = box_spaces()[1].__class__(-1.0, 1.0, rollout.act.shape[1:], np.float32)
    algo = cls(obs_space, act_space, config, cost_limit=25.0, seed=0)
    algo.actor.load_state_dict(actor)
    return algo


def test_recorded_halfcheetah_batch_at_default_settings(capsys: pytest.CaptureFixture[str]) -> None:
    """At KFCPO's defaults, on a real 20000-step batch: few rollbacks, an epoch KL at the
    baselines' δ (mean over action dims), and a reward-surrogate gain stated against CPO's
    on the same batch from the same policy (measured ≈ 1.3-1.5×; asserted ≥ 0.8×).

    The recorded Ĵc (0.5) puts KFCPO in its reward regime (w_c ≈ 0); the same batch with
    Ĵc = 25 = d (w_c ≈ 0.92, the cost regime) must keep the same trust region."""
    rollout, actor = _load_fixture()
    cpo = _on_fixture(CPO, CPOConfig(), rollout, actor)
    batch = cpo.prepare(rollout)
    # the fixture is consistent: the recorded log-probabilities are the recorded policy's
    torch.testing.assert_close(cpo.actor.log_prob(batch.obs, batch.act), batch.logp)
    cpo_info = cpo.update_actor(batch)
    cpo_gain = cpo_info["loss_r_before"] - cpo_info["loss_r_after"]
    assert cpo_gain > 0
    delta = CPOConfig().target_kl
    for ep_cost in (rollout.ep_cost, 25.0):
        data = Rollout(**{**rollout.__dict__, "ep_cost": ep_cost})
        algo = _on_fixture(KFCPO, KFCPOConfig(), data, actor)
        info = algo.update_actor(algo.prepare(data))
        ratio = info["surrogate_gain"] / cpo_gain
        with capsys.disabled():
            print(
                f"\nHalfCheetah fixture, Ĵc {ep_cost:.1f}: w_c {info['w_c']:.3f}, rollback rate "
                f"{info['rollback_rate']:.2f}, epoch KL {info['kl']:.5f} (δ {delta}), step KL "
                f"true {info['kl_step']:.2e} / exact model {info['kl_step_predicted']:.2e} / "
                f"K-FAC {info['kfac_predicted_kl']:.2e}, reward-surrogate gain "
                f"{info['surrogate_gain']:.4f} = {ratio:.2f}× CPO's {cpo_gain:.4f}"
            )
        assert info["actor_steps"] == 10
        assert info["rollback_rate"] <= 0.1
        assert 0.5 * delta <= info["kl"] <= 1.5 * delta
        # K-FAC's own quadratic form underestimates the true step KL (the v0 loop's flaw)...
        assert info["kl_true_over_kfac"] > 1.5
        # ...the exact-Fisher model of the step size does not
        assert 0.7 < info["kl_true_over_predicted"] < 1.4
        if info["w_c"] < 0.01:
            assert ratio >= 0.8


# --------------------------------------------------------------------------------------------
# Through the runner, on the built-in continuous CMDP
# --------------------------------------------------------------------------------------------

ENV = "safebench/ContinuousTarget-v0"
TAB = "safebench/TabularCMDP-v0"


def _spec(seed: int, epochs: int, steps: int, episodes: int, **cfg: object) -> RunSpec:
    return RunSpec(
        algo="kfcpo",
        config=registry.resolve_config("kfcpo", cfg).model_dump(mode="json"),
        env_id=ENV,
        seed=seed,
        budget=epochs * steps,
        steps_per_epoch=steps,
        cost_limit=5.0,
        eval=EvalSpec(episodes=episodes, every_epochs=epochs),
        num_envs=4 if steps >= 2000 else 2,
        device="cpu",
    )


def test_runner_interrupt_and_resume_is_identical(tmp_path: Path) -> None:
    torch.set_num_threads(torch_threads())
    s = _spec(seed=1, epochs=5, steps=400, episodes=3, hidden_sizes=(16, 16))
    timing = ["time_rollout", "time_update", "time_eval", "wall_time"]
    full = metrics_frame(run(s, tmp_path / "full")).drop(columns=timing)
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) == 2

    with pytest.raises(RunInterrupted):
        run(s, tmp_path / "part", should_stop=stop)
    resumed = metrics_frame(run(s, tmp_path / "part")).drop(columns=timing)
    pd.testing.assert_frame_equal(full, resumed)
    for key in ("rollback_rate", "kl", "kl_step", "kl_step_predicted", "w_c", "kfac_refreshes"):
        assert f"algo/{key}" in full.columns


def test_sensitivity_experiment_is_the_lambda_k_grid() -> None:
    """experiments/kfcpo_sensitivity.yaml: every (λ, k) of the grid, the default among them,
    all other keys at KFCPO's defaults, on two CMDPs with different units and limits."""
    path = Path(__file__).parents[2] / "experiments" / "kfcpo_sensitivity.yaml"
    runs = expand(load_experiment(path))
    default = KFCPOConfig().spec_dump()
    cells = set()
    for spec in runs:
        lam, k = spec.config["margin_lambda"], spec.config["margin_k"]
        assert spec.label == f"kfcpo-lam{lam:g}-k{k:g}"
        assert {**spec.config, "margin_lambda": 0.8, "margin_k": 12.5} == default
        cells.add((lam, k))
    assert cells == {(lam, k) for lam in (0.6, 0.7, 0.8, 0.9, 1.0) for k in (3.125, 12.5, 50.0)}
    envs = {(s.env_id, s.cost_limit, tuple(sorted(s.env_kwargs.items()))) for s in runs}
    assert envs == {
        (ENV, 5.0, ()),
        ("safebench.cmdps:ContinuousTarget", 4.0, (("cost_scale", 0.2), ("horizon", 50))),
    }
    assert len(runs) == 15 * 2 * 2


# (id, env id, env kwargs, cost limit d, epochs). Other horizons, cost scales and limits than
# the built-in ContinuousTarget-v0 (H = 20, d = 5, k = 1): the unit-free margin must place the
# cost at the same fraction of d on all of them, with the same defaults.
CMDPS: list[tuple[str, str, dict[str, Any], float, int]] = [
    ("target-H20-d5", ENV, {}, 5.0, 100),
    ("target-H100-d25", ENV, {"horizon": 100}, 25.0, 100),
    ("target-H50-k0.2-d4", ENV, {"horizon": 50, "cost_scale": 0.2}, 4.0, 100),
    ("tabular-d1", TAB, {}, 1.0, 60),
]


def frontier_ratio(env_id: str, env_kwargs: dict[str, Any], o: Outcome) -> float:
    """Return over the best return achievable at the cost the run settled at (its training
    Ĵc over the last epochs). ContinuousTarget: the deterministic policy's evaluation return
    (the optimum is deterministic; its own cost is lower than the stochastic Ĵc, so this is
    strict); TabularCMDP: the training return (the optimum is randomised)."""
    if env_id == TAB:
        return o.train_ret / TabularCMDP(**env_kwargs).optimum(o.train_cost).ret
    return o.eval_ret / ContinuousTarget(**env_kwargs).optimum(o.train_cost).ret


@pytest.mark.slow  # 1-2 minutes per CMDP on 2 cores
@pytest.mark.learning
@pytest.mark.parametrize(
    ("name", "env_id", "env_kwargs", "limit", "epochs"), CMDPS, ids=[c[0] for c in CMDPS]
)
def test_default_config_is_feasible_and_on_the_frontier(
    name: str,
    env_id: str,
    env_kwargs: dict[str, Any],
    limit: float,
    epochs: int,
    margins: Margins,
) -> None:
    """KFCPO at its default config, no per-CMDP tuning, 3 seeds: the training Ĵc over the last
    10 epochs is feasible (≤ 1.05·d) but not needlessly safe (≥ 0.7·d: the margin λ·d = 0.8·d
    is the design), and the return is within 10% of the best achievable at that cost."""
    runs = train_seeds(
        "kfcpo", env_id, {}, epochs=epochs, tail=10, env_kwargs=env_kwargs, cost_limit=limit
    )
    costs = [o.train_cost / limit for o in runs]
    ratios = [frontier_ratio(env_id, env_kwargs, o) for o in runs]
    detail = [
        (o.seed, round(c, 3), round(r, 3)) for o, c, r in zip(runs, costs, ratios, strict=True)
    ]
    margins.le("median Ĵc/d", median(costs), 1.05, detail)
    margins.ge("median Ĵc/d (not over-safe)", median(costs), 0.7, detail)
    margins.ge("median return / optimum at Ĵc", median(ratios), 0.9, detail)
    margins.le("max Ĵc/d (sanity)", max(costs), 1.25, detail)
    margins.ge("min Ĵc/d (sanity)", min(costs), 0.5, detail)
    margins.ge("min return / optimum at Ĵc (sanity)", min(ratios), 0.75, detail)
