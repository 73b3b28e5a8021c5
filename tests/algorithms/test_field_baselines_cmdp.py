"""The field's baselines on a CMDP with a known frontier: PPO reaches the unconstrained optimum;
PPO-Lag, TRPO-Lag, CPPO-PID, FOCOPS, IPO, the official P3O and CUP with its multiplier uncapped
end feasible and on the frontier; the official (capped) CUP ends feasible but conservative.

``safebench/ContinuousTarget-v0`` (H = 20, d = 5) has a closed-form optimum J_r*(c) for every
cost budget c — the frontier (``ContinuousTarget.optimum``). A method "ends feasible and on
the frontier" when, judged on the median over 3 seeds (each seed held to a looser bound):

* feasible: its deterministic evaluation cost and its training Ĵc (last 10 epochs) ≤ 1.05·d;
* on the frontier: its deterministic evaluation return ≥ 0.95·J_r*(its own evaluation cost)
  — nothing better was available at the cost it pays;
* not vacuous: that return ≥ 0.7·J_r*(d) — it spends a real part of the budget (a ≡ 0 is on
  the frontier too, at J_r*(0) < 0);
* consistent: that return ≤ 1.05·J_r*(d). No feasible policy beats the constrained optimum, so
  a method that ignores the cost (or learns from a zeroed cost signal) fails here, and on the
  frontier bound (no policy has that return at that cost):
  ``test_a_zeroed_cost_signal_fails_the_check`` shows it for PPO-Lag,
  ``test_a_zeroed_cost_signal_fails_trpo_lag_and_cup`` for the TRPO-Lag and CUP tests.

The Lagrangian methods move their multiplier by a fixed step per epoch (Adam on the dual) and
approach the constraint slowly at the official rates; for a problem this small the dual rates
below are raised, each stated with its measured reason. PPO-Lag and TRPO-Lag run in the default
suite; the others are slow (minutes each on 2 cores).
"""

from __future__ import annotations

from typing import Any

import pytest

from algorithms.cup import CUPConfig
from safebench.cmdps import ContinuousTarget
from tests.algorithms.convergence import Outcome, train_seeds
from tests.learning import MARGIN_LOG_ENV, Margins, median

ENV = "safebench/ContinuousTarget-v0"
LIMIT = ContinuousTarget.default_cost_limit
TARGET = ContinuousTarget()

# (config overrides, epochs of 2000 steps). Measured on 2 busy cores, 3 seeds, 60 epochs:
# PPO-Lag at the official dual rate 0.035 still sits at the unconstrained optimum (λ ≈ 2 after
# 60 epochs, Ĵc ≈ 20); at 0.2 it ends at Ĵc 3.3-3.8, return 12.5-13.3 (0.97-1.0 of J_r*(cost)).
# IPO's official barrier sign pushes the cost up towards d from inside (docs/algorithms.md#ipo): the
# corrected barrier (variant paper) is the method under test; it ends at Ĵc 4.85-4.94.
DEFAULT_SUITE: dict[str, tuple[dict[str, Any], int]] = {
    "ppo-lag": ({"lagrangian_lr": 0.2}, 60),
    "trpo-lag": ({"lagrangian_lr": 0.1}, 60),
}
# TRPO-Lag (3 seeds, 2 busy cores): at the official dual rate 0.035 it is still at Ĵc 15.4 after
# 60 epochs (λ ≈ 1.2). At 0.1 it ends at Ĵc 3.6-3.8, evaluation cost 3.8-4.0, return 0.90-0.92
# of J_r*(d) and 0.99-1.02 of J_r*(cost). That end is the approach from below, not a fixed
# point: λ overshoots to ≈ 2.1 by epoch 40 (Ĵc 2.5), then the cost climbs back and passes d
# near epoch 80 (Ĵc 6.6-7.4 at 150 epochs; over 300 epochs a slow swing between ≈ 3 and ≈ 7.5
# with λ rising to 4-5). The trust region moves the mean by a fraction of σ per epoch, so the
# policy answers λ slowly once σ is small, and Adam's second moment, filled by the early
# violation (Ĵc ≈ 42 at σ = 1), keeps the later dual steps small. At 0.3 λ overshoots to 5.5
# and Ĵc drops to 0.5 before climbing back (4.3-5.0 at 150 epochs). 16 s on 2 idle cores.

# FOCOPS at the dual rate 0.2 ends conservative (Ĵc 2.4-2.9, return 0.98-1.0 of J_r*(cost),
# 0.73-0.81 of J_r*(d)). The official P3O's hinge threshold (1 − γ)(d − Ĵc) is tiny, so its
# penalty acts almost always and it settles inside the limit (Ĵc ≈ 3.1), on the frontier.
# CPPO-PID's gains act on Ĵc − d in cost units. With the official P term (K_p 0.1 on an EMA of
# the error, α_p 0.95) the controller is an integrator on a plant that answers λ ever more
# slowly as σ shrinks, and it swings (3 seeds, 200-epoch runs, traces in docs/baselines.md): at
# the official K_i 0.01 the early violation winds λ to 2.1-2.6, the cost overshoots to Ĵc
# 7.0-8.8 by epoch 80 and is still 5.7-6.2 at 200 with λ 4.3-5.3; K_i 0.02 winds λ to 3.9-4.7
# by epoch 20, unwinds to 0.9-1.6 by 60, and the cost crosses d near epoch 80 and ends at Ĵc
# 5.4-6.9 at 200 (5.5-6.3 with K_d 1.0 as well). A proportional term on the error itself
# (K_p 1.0, α_p 0: no EMA lag) damps it: λ rises to 2.3-2.7 by epoch 60 and holds, Ĵc approaches
# d from below and stays there (4.2-4.9 at epoch 80, 5.0 at 200; evaluation cost 4.1-4.7 at 80,
# 4.9-5.1 at 200), return 0.99-1.02 of
# J_r*(cost). K_i 0.05 winds up and ends at Ĵc 0.6-1.1 after 60 epochs.
SLOW: dict[str, tuple[dict[str, Any], int]] = {
    "cppo-pid": ({"pid_kp": 1.0, "pid_alpha_p": 0.0, "pid_ki": 0.02}, 80),
    "ipo": ({"variant": "paper"}, 60),
    "focops": ({"lagrangian_lr": 0.2}, 60),
    "p3o": ({"variant": "official"}, 60),
}

# CUP: the settings of its two tests, whose docstrings give the measured reasons.
CUP_FRONTIER: tuple[dict[str, Any], int] = ({"variant": "uncapped", "lagrangian_lr": 0.015}, 100)
CUP_OFFICIAL: tuple[dict[str, Any], int] = ({}, 60)
CUP_CAP: float = CUPConfig.model_fields["lagrangian_max"].default  # the official ν_max, 0.2


def _frontier(cost: float) -> float:
    return TARGET.optimum(max(cost, 0.0)).ret


def _check(margins: Margins, outcomes: list[Outcome]) -> None:
    best = _frontier(LIMIT)
    rets = [o.eval_ret for o in outcomes]
    costs = [o.eval_cost for o in outcomes]
    train_costs = [o.train_cost for o in outcomes]
    share = [o.eval_ret / _frontier(o.eval_cost) for o in outcomes]
    margins.le("median eval_cost", median(costs), 1.05 * LIMIT, outcomes)
    margins.le("median train_cost", median(train_costs), 1.05 * LIMIT, outcomes)
    margins.ge("median eval_ret / J*(eval_cost)", median(share), 0.95, outcomes)
    margins.ge("median eval_ret", median(rets), 0.7 * best, outcomes)
    margins.le("median eval_ret (consistency)", median(rets), 1.05 * best, outcomes)
    margins.le("max eval_cost (sanity)", max(costs), 1.25 * LIMIT, outcomes)
    margins.ge("min eval_ret (sanity)", min(rets), 0.6 * best, outcomes)


def _train(algo: str, overrides: dict[str, Any], epochs: int, **kwargs: Any) -> list[Outcome]:
    return train_seeds(algo, ENV, overrides, epochs=epochs, tail=10, **kwargs)


@pytest.mark.slow
@pytest.mark.learning
def test_ppo_reaches_the_unconstrained_optimum(margins: Margins) -> None:
    outcomes = _train("ppo", {}, 60)
    free = TARGET.optimum(float("inf"))  # J_r = 20 at cost 65/3
    margins.ge("median eval_ret", median([o.eval_ret for o in outcomes]), 0.97 * free.ret)
    margins.ge("median eval_cost", median([o.eval_cost for o in outcomes]), 0.9 * free.cost)


@pytest.mark.learning
@pytest.mark.parametrize("algo", list(DEFAULT_SUITE))
def test_feasible_and_on_the_frontier(algo: str, margins: Margins) -> None:
    overrides, epochs = DEFAULT_SUITE[algo]
    _check(margins, _train(algo, overrides, epochs))


@pytest.mark.slow
@pytest.mark.learning
@pytest.mark.parametrize("algo", list(SLOW))
def test_feasible_and_on_the_frontier_slow(algo: str, margins: Margins) -> None:
    overrides, epochs = SLOW[algo]
    _check(margins, _train(algo, overrides, epochs))


@pytest.mark.slow
@pytest.mark.learning
# 100 epochs of CUP's 2 × 40 passes, 3 seeds: 1.5 min on 2 idle cores, 7-9 min on 2 busy ones,
# over 30 at 2 threads per seed (scripts/tools/test_robustness.py -p threads2) on busy ones.
@pytest.mark.timeout(3600)
def test_cup_uncapped_feasible_and_on_the_frontier(margins: Margins) -> None:
    """CUP with ν_max = 2 (``variant: uncapped``) and the dual rate 0.015 ends feasible and on
    the frontier after 100 epochs: Ĵc 3.2-3.9, evaluation cost 3.3-4.1, return 0.85-0.90 of
    J_r*(d) and 0.97-1.01 of J_r*(cost) (3 seeds, 2 busy cores).

    [L] Why not the official settings. The official cap ν ≤ 0.2 cannot hold the constraint
    once the policy is sharp: over 120 epochs ν returns to the cap and stays there, and the
    run ends at Ĵc 10.9, 4.7 and 10.3 (median ≈ 2·d; return 1.25 of J_r*(d)), the drift
    towards PPO of docs/algorithms.md#cup; over 60 epochs it ends inside, conservative
    (``test_cup_official_is_feasible_but_conservative``). Uncapped at the official dual rate
    0.035, ν winds up to 0.7 in the first ~25 epochs, while Ĵc ≫ d because the policy is still
    wide whatever its mean, and the cost overshoots to Ĵc 0.6-0.7; by epoch 100 it is back to
    only 1.8-2.4 (return 0.65-0.78 of J_r*(d), below the 0.7 bound on one of 2 seeds). The
    lower rate 0.015 limits the wind-up (ν peaks at 0.31). The actor's learning rate decays
    linearly to 0 over the run, so the epoch count is part of the schedule. The end is still
    an approach from below: ν is falling (0.16-0.20) and the evaluation cost rose by 0.8-1.2
    over the last 10 epochs.
    """
    overrides, epochs = CUP_FRONTIER
    _check(margins, _train("cup", overrides, epochs))


def _cup_official_check(margins: Margins, outcomes: list[Outcome]) -> None:
    best = _frontier(LIMIT)
    rets = [o.eval_ret for o in outcomes]
    share = [o.eval_ret / _frontier(o.eval_cost) for o in outcomes]
    capped = [float((o.frame["algo/lagrangian"] >= CUP_CAP - 1e-6).mean()) for o in outcomes]
    margins.le("median eval_cost", median([o.eval_cost for o in outcomes]), 1.05 * LIMIT, outcomes)
    margins.le("median train_cost", median([o.train_cost for o in outcomes]), 1.05 * LIMIT)
    margins.ge("median eval_ret / J*(eval_cost)", median(share), 0.95, outcomes)
    margins.ge("median eval_ret (learns)", median(rets), 0.45 * best, outcomes)
    margins.le("median eval_ret (conservative)", median(rets), 0.75 * best, outcomes)
    margins.ge("median share of epochs with ν at the cap", median(capped), 0.5, capped)
    margins.le("max eval_cost (sanity)", max(o.eval_cost for o in outcomes), 1.25 * LIMIT)
    margins.ge("min eval_ret (sanity)", min(rets), 0.35 * best, outcomes)


@pytest.mark.slow
@pytest.mark.learning
def test_cup_official_is_feasible_but_conservative(margins: Margins) -> None:
    """The official CUP (ν ≤ 0.2) over 60 epochs: feasible, on the frontier at the cost it
    pays, but conservative — return 0.57-0.66 of J_r*(d) at evaluation cost 1.3-1.8 (Ĵc
    3.0-3.2; 3 seeds, 2 busy cores) — with ν at its cap in 70-72 % of the epochs.

    [L] This documents the official settings; it is not a frontier claim. The run ends while
    the actor's learning rate, decaying linearly to 0, freezes a policy that is still wide
    (Ĵc − evaluation cost ≈ 1.5, the budget its action noise spends). It is not where the
    method settles: over 120 epochs ν returns to the cap and Ĵc ends near 2·d
    (``test_cup_uncapped_feasible_and_on_the_frontier`` gives the numbers). The bounds are a
    band around the measured return, so a CUP that ignores the cost fails the upper one.
    """
    overrides, epochs = CUP_OFFICIAL
    _cup_official_check(margins, _train("cup", overrides, epochs))


@pytest.mark.slow
@pytest.mark.learning
def test_a_zeroed_cost_signal_fails_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same PPO-Lag run with the learner's cost scaled to ~0 (``cost_scale`` 1e-12): it
    converges to the unconstrained optimum, and the check fails."""
    overrides, epochs = DEFAULT_SUITE["ppo-lag"]
    outcomes = _train("ppo-lag", overrides, epochs, env_kwargs={"cost_scale": 1e-12})
    # It learns the unconstrained policy (return 20, true cost 65/3) and reports ~0 cost: no
    # feasible policy has that return, so the frontier and consistency bounds both fail.
    assert median([o.eval_ret for o in outcomes]) > 1.05 * _frontier(LIMIT)
    monkeypatch.delenv(MARGIN_LOG_ENV, raising=False)  # an expected failure, not a margin
    with pytest.raises(AssertionError):
        _check(Margins("zeroed-cost"), outcomes)


# (algorithm, (overrides, epochs), the test's check) for each TRPO-Lag and CUP learning test.
ZEROED = {
    "trpo-lag": ("trpo-lag", DEFAULT_SUITE["trpo-lag"], _check),
    "cup-uncapped": ("cup", CUP_FRONTIER, _check),
    "cup-official": ("cup", CUP_OFFICIAL, _cup_official_check),
}


@pytest.mark.slow
@pytest.mark.learning
@pytest.mark.timeout(1800)  # cup-uncapped: 2.5 min on 2 idle cores, 9 on 2 busy ones
@pytest.mark.parametrize("case", list(ZEROED))
def test_a_zeroed_cost_signal_fails_trpo_lag_and_cup(
    case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each TRPO-Lag and CUP learning test's run with the learner's cost scaled to ~0, on two
    of its three seeds (one round on 2 cores; a learner that ignores the cost fails on every
    seed): it learns (close to) the unconstrained policy and its test's check fails."""
    algo, (overrides, epochs), check = ZEROED[case]
    outcomes = _train(algo, overrides, epochs, seeds=(0, 1), env_kwargs={"cost_scale": 1e-12})
    assert median([o.eval_ret for o in outcomes]) > 1.05 * _frontier(LIMIT)
    monkeypatch.delenv(MARGIN_LOG_ENV, raising=False)  # an expected failure, not a margin
    with pytest.raises(AssertionError):
        check(Margins(f"zeroed-cost {case}"), outcomes)
