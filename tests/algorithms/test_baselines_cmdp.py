"""CPO, PCPO and P3O reach the known constrained optimum of the built-in CMDPs.

Each algorithm trains 3 seeds through the real runner. Feasible = cost within 5% of the limit
or below; optimal = return within 10% of the optimum:

* ``safebench/ContinuousTarget-v0`` — the optimum is over deterministic policies, so the
  learned policy is judged by its deterministic evaluation (mean action), and its training
  Ĵc (mean of the last 5 epochs' windowed episode cost) must be feasible too;
* ``safebench/TabularCMDP-v0`` — the optimum is a randomised policy, so the final stochastic
  policy is evaluated exactly (Bellman equations on its π(a|s)).
"""

from __future__ import annotations

from typing import Any

import pytest

from safebench.cmdps import BUILTIN_CMDPS
from tests.algorithms.convergence import train_seeds

CONT = "safebench/ContinuousTarget-v0"
TAB = "safebench/TabularCMDP-v0"

# Per-algorithm settings for these small problems. PCPO runs with the PCPO paper's
# KL-projection (F⁻¹g): OmniSafe's F·x form (the default, fx_quirk=True) stalls just above the
# limit on ContinuousTarget (return ≈ 4–7 of 14.15), which is a property of that form, not a
# bug. P3O is a first-order method: at OmniSafe's actor learning rate, decayed to 0, it is far
# from converged after these few epochs, so it runs with a constant, larger rate.
SETTINGS: dict[str, dict[str, Any]] = {
    "cpo": {},
    "pcpo": {"fx_quirk": False},
    "p3o": {"actor_lr": 1e-3, "linear_lr_decay": False},
}


def _optimum(env_id: str) -> tuple[float, float]:
    cls = BUILTIN_CMDPS[env_id]
    limit = cls.default_cost_limit
    return cls().optimum(limit).ret, limit


@pytest.mark.parametrize("algo", list(SETTINGS))
def test_continuous_cmdp_feasible_and_near_optimal(algo: str) -> None:
    optimum, limit = _optimum(CONT)
    outcomes = train_seeds(algo, CONT, SETTINGS[algo], epochs=50)
    for o in outcomes:
        assert o.train_cost <= 1.05 * limit, o
        assert o.eval_cost <= 1.05 * limit, o
        assert o.eval_ret >= 0.9 * optimum, o


@pytest.mark.parametrize("algo", list(SETTINGS))
def test_tabular_cmdp_feasible_and_near_optimal(algo: str) -> None:
    optimum, limit = _optimum(TAB)
    outcomes = train_seeds(algo, TAB, SETTINGS[algo], epochs=40)
    for o in outcomes:
        assert o.exact_cost <= 1.05 * limit, o
        assert o.exact_ret >= 0.9 * optimum, o
