"""The field's baselines on a CMDP with a known frontier: PPO reaches the unconstrained optimum;
PPO-Lag, CPPO-PID, FOCOPS, IPO and the official P3O end feasible and on the frontier.

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
  ``test_a_zeroed_cost_signal_fails_the_check`` shows it once.

The Lagrangian methods move their multiplier by a fixed step per epoch (Adam on the dual) and
approach the constraint slowly at the official rates; for a problem this small the dual rates
below are raised, each stated with its measured reason. PPO-Lag runs in the default suite; the
others are slow (minutes each on 2 cores).
"""

from __future__ import annotations

from typing import Any

import pytest

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
}
# FOCOPS at the dual rate 0.2 ends conservative (Ĵc 2.4-2.9, return 0.98-1.0 of J_r*(cost),
# 0.73-0.81 of J_r*(d)). The official P3O's hinge threshold (1 − γ)(d − Ĵc) is tiny, so its
# penalty acts almost always and it settles inside the limit (Ĵc ≈ 3.1), on the frontier.
# CPPO-PID's integral gain acts on Ĵc − d in cost units: at the official K_i = 0.01 it is still
# at Ĵc 5.4-7.3 after 60 epochs, at 0.05 it winds up and ends at Ĵc 0.6-1.1; 0.02 over 80
# epochs ends at Ĵc 3.6-5.2, return 0.99-1.02 of J_r*(cost).
SLOW: dict[str, tuple[dict[str, Any], int]] = {
    "cppo-pid": ({"pid_ki": 0.02}, 80),
    "ipo": ({"variant": "paper"}, 60),
    "focops": ({"lagrangian_lr": 0.2}, 60),
    "p3o": ({"variant": "official"}, 60),
}


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
