"""The multipliers against the official code's arithmetic (docs/algorithms.md#lagrange-multipliers).

Expected values: the spec's unit tests, which replay the official ``common/lagrange.py`` and
match the multipliers logged in the published runs (the regression rows below are read from
those runs' ``progress.csv``).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import pytest

from safebench.core.lagrange import LagrangeMultiplier, PIDLagrangian


def _lagrange(costs: Sequence[float], ub: float | None = None) -> list[float]:
    m = LagrangeMultiplier(0.001, 0.035, ub)
    return [m.update(c, 25.0) for c in costs]


def _pid(costs: Sequence[float]) -> tuple[list[float], PIDLagrangian]:
    pid = PIDLagrangian(0.001, 0.1, 0.01, 0.01, 10, 0.95, 0.95)
    return [pid.update(c, 25.0) for c in costs], pid


def test_lagrange_first_update_pushes_to_zero_then_adam_momentum_delays_the_rise() -> None:
    # T2.a: Ĵc(0) = 0 (P2) sends λ to 0; the first positive gradient's momentum holds it there.
    assert _lagrange([0, 40, 40, 40, 10]) == pytest.approx(
        [0.0, 0.0, 0.0056298, 0.0182925, 0.0208294], abs=1e-6
    )


def test_lagrange_steps_are_adam_normalised() -> None:
    # T2.b: a constant violation moves λ by lr each epoch whatever its size.
    assert _lagrange([30, 30, 30]) == pytest.approx([0.036, 0.071, 0.106], abs=1e-6)


def test_lagrange_replays_a_published_run() -> None:
    # T2.c: SafetyPointGoal1-v0 ppo_lag seed 0, the logged EpCost rows 0-4 -> logged λ.
    costs = [0, 70.11647722843824, 64.37852535611718, 69.18200000000002, 67.62]
    assert _lagrange(costs) == pytest.approx(
        [0.0, 0.0114213, 0.0320099, 0.0574003, 0.0853730], abs=1e-6
    )


def test_cup_and_focops_caps() -> None:
    # T6.b: CUP's ν reaches its 0.2 cap at update 10; T5.b: FOCOPS's 2.0 at update 63.
    cup = _lagrange([0] + [50] * 11, ub=0.2)
    assert cup[:9] == pytest.approx(
        [0, 0.001842, 0.01592, 0.036081, 0.059866, 0.086044, 0.113914, 0.143035, 0.173116],
        abs=1e-6,
    )
    assert cup[9:] == [pytest.approx(0.2, abs=1e-7)] * 3
    focops = _lagrange([0] + [50] * 80, ub=2.0)
    first = next(i for i, v in enumerate(focops) if v >= 2.0 - 1e-7)
    assert first + 1 == 63 and max(focops) <= 2.0
    # T6.c: SafetyPointGoal1-v0 cup seed 0.
    costs = [0, 66.38690723160117, 75.23405548469995, 82.933, 83.99]
    assert _lagrange(costs, ub=0.2) == pytest.approx(
        [0, 0.0101749, 0.0317411, 0.0583288, 0.0875795], abs=1e-6
    )


def test_pid_terms_exactly() -> None:
    # T4.a: exact in float64 (the official controller is plain Python).
    lam, pid = _pid([30, 30, 30])
    assert lam == pytest.approx([0.091, 0.179, 0.2651], abs=1e-12)
    assert (pid.integral, pid.error_ema, pid.cost_ema) == pytest.approx(
        (0.151, 0.713125, 4.27875), abs=1e-12
    )
    # T4.b: the derivative acts on the cost EMA and only upwards.
    assert _pid([0, 40, 40, 10])[0] == pytest.approx(
        [0.0, 0.12625, 0.3724375, 0.148815625], abs=1e-12
    )


def test_pid_replays_a_published_run_bit_for_bit() -> None:
    # T4.c: SafetyPointGoal1-v0 cppo_pid seed 0: identical to the logged multipliers.
    costs = [0, 70.11647722843824, 59.188788784003734, 48.452999999999996, 42.259]
    assert _pid(costs)[0] == [
        0.0,
        0.593055397040793,
        1.1283870919550303,
        1.4876418703635,
        1.744653409851546,
    ]


def test_pid_derivative_compares_with_the_cost_ema_delay_epochs_ago() -> None:
    costs = [30.0 + 3 * k for k in range(14)]
    _, pid = _pid(costs)
    emas, c = [], 0.0
    for cost in costs:
        c = 0.95 * c + 0.05 * cost
        emas.append(c)
    # After update k the window's oldest entry is C_{k-9}: the next D compares with C_{k+1-10}.
    assert list(pid.history) == pytest.approx(emas[-10:], abs=1e-12)


@pytest.mark.parametrize("kind", ["lagrange", "pid"])
def test_state_round_trip_continues_identically(kind: str) -> None:
    costs = [0, 40, 35, 20, 30, 28, 26, 10, 50]
    a: LagrangeMultiplier | PIDLagrangian
    if kind == "lagrange":
        a = LagrangeMultiplier(0.001, 0.035, 2.0)
    else:
        a = PIDLagrangian(0.001, 0.1, 0.01, 0.01, 3, 0.95, 0.95)
    for c in costs[:4]:
        a.update(c, 25.0)
    state = copy.deepcopy(a.state_dict())
    tail_a = [a.update(c, 25.0) for c in costs[4:]]
    b = LagrangeMultiplier(0.5, 0.035, 2.0) if kind == "lagrange" else _pid([1.0])[1]
    if isinstance(b, PIDLagrangian):
        b = PIDLagrangian(0.001, 0.1, 0.01, 0.01, 3, 0.95, 0.95)
    b.load_state_dict(state)
    assert [b.update(c, 25.0) for c in costs[4:]] == tail_a
