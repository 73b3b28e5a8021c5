"""C-TRPO end to end on the built-in continuous CMDP, scored against its exact optimum and CPO.

ContinuousTarget-v0 (cost limit 5 per 20-step episode, optimum return ≈ 14.15) starts
infeasible: the initial policy (σ = 1) costs ≈ 20 per episode, so every run begins with
recovery steps and then has to approach the constraint boundary from below.
"""

from __future__ import annotations

import pytest

from safebench.cmdps import BUILTIN_CMDPS
from tests.algorithms.convergence import Outcome, train_seeds
from tests.learning import Margins, median

ENV = "safebench/ContinuousTarget-v0"
LIMIT = 5.0
EPOCHS = 60
STEPS_PER_EPOCH = 2000
SEEDS = (0, 1, 2)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def outcomes() -> dict[str, list[Outcome]]:
    """C-TRPO and CPO at their defaults, 3 seeds each (trained once for the module)."""
    return {
        algo: train_seeds(algo, ENV, seeds=SEEDS, epochs=EPOCHS, steps_per_epoch=STEPS_PER_EPOCH)
        for algo in ("ctrpo", "cpo")
    }


@pytest.mark.learning
def test_ctrpo_feasible_and_near_optimal(
    outcomes: dict[str, list[Outcome]], margins: Margins
) -> None:
    runs = outcomes["ctrpo"]
    optimum = BUILTIN_CMDPS[ENV]().optimum(LIMIT).ret
    # feasible at the end of training (Ĵc is a window of the last finished episodes), judged
    # on the median over seeds, every seed within a looser sanity bound
    last = [o.frame["ep_cost"].iloc[-1] for o in runs]
    last5 = [o.frame["ep_cost"].iloc[-5:].mean() for o in runs]
    margins.le("median final Ĵc", median(last), 1.05 * LIMIT, last)
    margins.le("median Ĵc of the last 5 epochs", median(last5), 1.05 * LIMIT, last5)
    margins.le("max Ĵc of the last 5 epochs (sanity)", max(last5), 1.25 * LIMIT, last5)
    # the deterministic policy is within 10% of the constrained optimum
    rets = [o.eval_ret for o in runs]
    margins.ge("median eval return", median(rets), 0.9 * optimum, rets)
    margins.ge("min eval return (sanity)", min(rets), 0.75 * optimum, rets)


@pytest.mark.learning
def test_ctrpo_uses_both_modes(outcomes: dict[str, list[Outcome]], margins: Margins) -> None:
    """Recovery from the infeasible start, then mostly barrier-shaped (normal-mode) steps.

    Epoch 0 is normal as in the official code (its logger reads Ĵc as 0 before the first
    dump); the measured cost of the initial policy then forces recovery in epoch 1."""
    for o in outcomes["ctrpo"]:
        assert o.frame["algo/mode"].iloc[0] == 1.0, o
        assert o.frame["algo/delta_b"].iloc[0] == LIMIT, o
        assert o.frame["algo/mode"].iloc[1] == 0.0, o
    normal = [o.frame["algo/mode"].iloc[-10:].mean() for o in outcomes["ctrpo"]]
    margins.ge("median normal-mode share, last 10 epochs", median(normal), 0.5, normal)


@pytest.mark.learning
def test_ctrpo_regret_below_cpo(outcomes: dict[str, list[Outcome]], margins: Margins) -> None:
    """Σ over seeds of the cost regret Σ_epochs max(0, Ĵc − d): C-TRPO's claim against CPO."""
    ctrpo = sum(o.regret for o in outcomes["ctrpo"])
    cpo = sum(o.regret for o in outcomes["cpo"])
    margins.le("regret C-TRPO / regret CPO", ctrpo / cpo, 1.0, (ctrpo, cpo))
