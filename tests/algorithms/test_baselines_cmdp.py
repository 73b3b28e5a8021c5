"""CPO, PCPO and P3O reach the known constrained optimum of the built-in CMDPs.

Each algorithm trains 3 seeds through the real runner. Feasible = cost within 5% of the limit
or below; optimal = return within 10% of the optimum; both judged on the median over the seeds,
each seed held to a looser sanity bound (cost ≤ 1.25·d, return ≥ 0.75 of the optimum), so that
the outcome does not hinge on one seed's trajectory, which differs across CPUs:

* ``safebench/ContinuousTarget-v0`` — the optimum is over deterministic policies, so the
  learned policy is judged by its deterministic evaluation (mean action), and its training
  Ĵc (mean of the last 5 epochs' windowed episode cost) must be feasible too;
* ``safebench/TabularCMDP-v0`` — the optimum is a randomised policy; CPO-style methods hover
  around the limit from epoch to epoch, so return and cost are the training EpRet / EpCost
  averaged over the last 10 epochs (≈1000 episodes), the protocol of the C-TRPO and OmniSafe
  benchmarks (training logs).
"""

from __future__ import annotations

from typing import Any

import pytest

from safebench.cmdps import BUILTIN_CMDPS
from tests.algorithms.convergence import Outcome, train_seeds
from tests.learning import Margins, median

CONT = "safebench/ContinuousTarget-v0"
TAB = "safebench/TabularCMDP-v0"

# Per-algorithm settings for these small problems: (config overrides, epochs). PCPO runs with
# the PCPO paper's KL-projection (F⁻¹g): OmniSafe's F·x form (the default, fx_quirk=True)
# stalls just above the limit on ContinuousTarget (return ≈ 4–7 of 14.15) — a property of that
# form, not a bug. CPO on ContinuousTarget spends its first ~25 epochs recovering from the
# infeasible start (Ĵc ≈ 42 with the policy's σ = 1 rescaled to the ±2 box); at 50 epochs its
# deterministic return was still rising (median 12.7–13.5 across thread counts and CPU
# features, at the 12.7 bound), at 70–100 it is 13.5–14.1: 80 epochs. P3O is first-order: at
# OmniSafe's rate (3e-4, decayed to 0) it is far from converged after these few epochs, so its
# rate starts at 1e-3 (still decayed linearly to 0, as OmniSafe does) over 120 epochs. Its ReLU
# penalty κ·max(0, ·) is exact only for κ above the optimal multiplier (ν* ≈ 1.08 on
# ContinuousTarget), and with a noisy Ĵc its fixed point has P(Ĵc > d) ≈ ν*/κ: at κ = 2 the
# training cost settles *on* the limit (median over 8 seeds 1.046·d, at the 1.05·d bound), at
# κ = 20 (OmniSafe's) the steps oscillate across it; κ = 3 settles inside (median 4.94 over 6
# seeds, return 0.95 of the optimum). On TabularCMDP κ = 3 settles well inside the limit
# (0.80–0.92·d over 3 seeds) and gives up return for it (median 0.91 of the optimum, at the 0.9
# bound); κ = 2 gives 0.94·d and 0.95 of the optimum there.
P3O = {"actor_lr": 1e-3, "linear_lr_decay": True}
CONTINUOUS: dict[str, tuple[dict[str, Any], int]] = {
    "cpo": ({}, 80),
    "pcpo": ({"fx_quirk": False}, 50),
    "p3o": ({**P3O, "kappa": 3.0}, 120),
}
TABULAR: dict[str, tuple[dict[str, Any], int]] = {
    "cpo": ({}, 50),
    "pcpo": ({"fx_quirk": False}, 50),
    "p3o": ({**P3O, "kappa": 2.0}, 120),
}


def _optimum(env_id: str) -> tuple[float, float]:
    cls = BUILTIN_CMDPS[env_id]
    limit = cls.default_cost_limit
    return cls().optimum(limit).ret, limit


def _feasible_and_near_optimal(
    margins: Margins, outcomes: list[Outcome], optimum: float, limit: float, *, ret: str, cost: str
) -> None:
    """Median over seeds within the bounds; every seed within a looser sanity bound."""
    rets = [getattr(o, ret) for o in outcomes]
    costs = [getattr(o, cost) for o in outcomes]
    margins.le(f"median {cost}", median(costs), 1.05 * limit, outcomes)
    margins.ge(f"median {ret}", median(rets), 0.9 * optimum, outcomes)
    margins.le(f"max {cost} (sanity)", max(costs), 1.25 * limit, outcomes)
    margins.ge(f"min {ret} (sanity)", min(rets), 0.75 * optimum, outcomes)


@pytest.mark.learning
@pytest.mark.parametrize("algo", list(CONTINUOUS))
def test_continuous_cmdp_feasible_and_near_optimal(algo: str, margins: Margins) -> None:
    optimum, limit = _optimum(CONT)
    overrides, epochs = CONTINUOUS[algo]
    outcomes = train_seeds(algo, CONT, overrides, epochs=epochs, tail=10)
    # the learned policy's training Ĵc (stochastic) and its deterministic evaluation
    margins.le("median train_cost", median([o.train_cost for o in outcomes]), 1.05 * limit)
    _feasible_and_near_optimal(margins, outcomes, optimum, limit, ret="eval_ret", cost="eval_cost")


@pytest.mark.slow  # ~3 minutes for the three algorithms on 2 cores
@pytest.mark.learning
@pytest.mark.parametrize("algo", list(TABULAR))
def test_tabular_cmdp_feasible_and_near_optimal(algo: str, margins: Margins) -> None:
    optimum, limit = _optimum(TAB)
    overrides, epochs = TABULAR[algo]
    outcomes = train_seeds(algo, TAB, overrides, epochs=epochs, tail=10)
    _feasible_and_near_optimal(
        margins, outcomes, optimum, limit, ret="train_ret", cost="train_cost"
    )
