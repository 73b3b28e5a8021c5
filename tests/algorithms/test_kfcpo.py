"""KFCPO: margin weights, projection, step size, minibatch rollback, resume, convergence."""

from __future__ import annotations

import io
import math
import re
from itertools import pairwise
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from algorithms.kfcpo import (
    KFCPO,
    KFCPOConfig,
    margin_weight,
    project_conflict,
    trust_region_scale,
)
from safebench import registry
from safebench.cmdps import BUILTIN_CMDPS
from safebench.core.kfac import KFAC
from safebench.core.optim import flat_params, frozen_distribution
from safebench.errors import RunInterrupted
from safebench.runner import metrics_frame, run
from safebench.spec import EvalSpec, RunSpec
from tests.algorithms.convergence import train_seeds
from tests.algorithms.synthetic import box_spaces, discrete_spaces, synthetic_rollout
from tests.learning import Margins, median, torch_threads

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


@pytest.mark.parametrize("mode", ["cost", "pcgrad", "dominant"])
@pytest.mark.parametrize("w_c", [0.2, 0.8])
def test_projection_leaves_no_conflict(mode: str, w_c: float) -> None:
    gen = torch.Generator().manual_seed(0)
    conflicts = 0
    for _ in range(200):
        d_r = torch.randn(12, generator=gen, dtype=torch.float64)
        d_c = torch.randn(12, generator=gen, dtype=torch.float64)
        before = float(d_r @ d_c)
        r, c, projected = project_conflict(d_r, d_c, mode, w_c)  # type: ignore[arg-type]
        assert projected == (before < 0)
        if not projected:
            assert r is d_r and c is d_c
            continue
        conflicts += 1
        scale = float(d_r.norm() * d_c.norm())
        assert float(r @ c) >= -1e-12 * scale
        # each direction keeps improving its own objective
        assert float(r @ d_r) >= 0 and float(c @ d_c) >= 0
        cost_only = mode == "cost" or (mode == "dominant" and w_c < 0.5)
        if cost_only:
            assert torch.equal(r, d_r)
            assert abs(float(c @ d_r)) <= 1e-12 * scale
        elif mode == "dominant":
            assert torch.equal(c, d_c)
            assert abs(float(r @ d_c)) <= 1e-12 * scale
        else:
            assert not torch.equal(r, d_r) and not torch.equal(c, d_c)
            assert float(r @ c) > 0  # PCGrad: −p(1 − p²/(‖d_r‖²‖d_c‖²)) > 0
    assert conflicts > 50
    d_r, d_c = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])
    assert project_conflict(d_r, d_c, "none", w_c) == (d_r, d_c, False)


def test_trust_region_scale() -> None:
    nu = trust_region_scale(4.0, kl_clip=1e-3, lr=0.25, nu_max=1.0)
    assert 0.5 * (0.25 * nu) ** 2 * 4.0 == pytest.approx(1e-3, rel=1e-12)
    assert trust_region_scale(1e-6, 1e-3, 0.25, 1.0) == 1.0  # cap
    assert trust_region_scale(0.0, 1e-3, 0.25, 0.7) == 0.7
    assert math.isnan(trust_region_scale(math.nan, 1e-3, 0.25, 1.0))


# --------------------------------------------------------------------------------------------
# The algorithm on synthetic batches
# --------------------------------------------------------------------------------------------


def _config(**overrides: object) -> KFCPOConfig:
    return KFCPOConfig(
        hidden_sizes=(16, 16),
        update_iters=2,
        batch_size=64,
        **overrides,
    )


def test_config_defaults_and_tags() -> None:
    cfg = KFCPOConfig()
    assert (cfg.rollback_kl, cfg.margin_k, cfg.margin_lambda) == (0.01, 0.5, 0.8)
    assert (cfg.kfac_decay, cfg.kfac_damping, cfg.stats_every, cfg.inverse_every) == (
        0.99,
        1e-2,
        1,
        10,
    )
    assert (cfg.kl_clip, cfg.nu_max, cfg.lr) == (0.001, 1.0, 0.25)
    assert (cfg.projection, cfg.rollback_reference, cfg.kl_convention) == (
        "cost",
        "epoch_start",
        "sum",
    )
    for name, field in KFCPOConfig.model_fields.items():
        assert re.match(r"\[[HML]\] ", field.description or ""), name
    assert registry.get("kfcpo").cls is KFCPO


def test_update_diagnostics_and_schedules() -> None:
    obs_space, act_space = box_spaces()
    algo = KFCPO(obs_space, act_space, _config(inverse_every=3), cost_limit=25.0, seed=0)
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
def test_rollback_restores_parameters_bit_for_bit(reference: str) -> None:
    obs_space, act_space = box_spaces()
    algo = KFCPO(
        obs_space,
        act_space,
        _config(rollback_kl=1e-12, rollback_reference=reference),
        cost_limit=25.0,
        seed=0,
    )
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


def test_accepted_steps_stay_in_the_rollback_region() -> None:
    """Drive single steps by hand: a rejected step leaves θ bit-identical, an accepted one
    moves it and its minibatch KL from π_θk is at most ε_KL."""
    obs_space, act_space = box_spaces()
    algo = KFCPO(obs_space, act_space, _config(rollback_kl=1e-2), cost_limit=25.0, seed=3)
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


def test_resume_from_checkpoint_continues_identically() -> None:
    obs_space, act_space = box_spaces()
    algo = KFCPO(obs_space, act_space, _config(inverse_every=3), cost_limit=25.0, seed=0)
    for epoch in range(2):
        algo.update(synthetic_rollout(algo, n=256, ep_cost=20.0 + epoch, seed=epoch))
    clone = _clone_through_bytes(algo, seed=7)
    # The K-FAC factors are part of the state: without them the continuation differs.
    amnesic = _clone_through_bytes(algo, seed=7)
    amnesic.kfac = KFAC(amnesic.actor, decay=0.99)

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


def test_discrete_actions() -> None:
    obs_space, act_space = discrete_spaces()
    algo = KFCPO(obs_space, act_space, _config(), cost_limit=25.0, seed=1)
    theta = flat_params(algo.actor)
    info = algo.update(synthetic_rollout(algo, n=256, seed=1))
    assert all(math.isfinite(v) for v in info.values())
    assert info["rollback_rate"] < 1.0
    assert not torch.equal(theta, flat_params(algo.actor))


# --------------------------------------------------------------------------------------------
# Through the runner, on the built-in continuous CMDP
# --------------------------------------------------------------------------------------------

ENV = "safebench/ContinuousTarget-v0"


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
    s = _spec(seed=1, epochs=5, steps=400, episodes=3, hidden_sizes=(16, 16), inverse_every=7)
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
    assert "algo/rollback_rate" in full.columns and "algo/kfac_refreshes" in full.columns


@pytest.mark.slow
@pytest.mark.learning
def test_continuous_target_feasible_and_near_optimal(margins: Margins) -> None:
    """60 epochs × 2000 steps, 3 seeds. k is in 1/cost units: the spec's k = 0.5 at C = 25 is
    the same transition width relative to the limit as k = 2.5 at this env's C = 5."""
    limit = 5.0
    optimum = BUILTIN_CMDPS[ENV]().optimum(limit).ret
    runs = train_seeds("kfcpo", ENV, {"margin_k": 2.5}, epochs=60, tail=1)
    costs = [o.train_cost for o in runs]
    rets = [o.eval_ret for o in runs]
    margins.le("median final Ĵc", median(costs), 1.05 * limit, runs)
    margins.ge("median eval return", median(rets), 0.9 * optimum, runs)
    margins.le("max final Ĵc (sanity)", max(costs), 1.25 * limit, runs)
    margins.ge("min eval return (sanity)", min(rets), 0.75 * optimum, runs)
