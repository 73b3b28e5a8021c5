"""Learning-outcome checks that hold on any machine, and say by how much they hold.

Training is deterministic on one machine but not across machines: PyTorch and NumPy pick
their kernels by CPU features and thread count, so the same seed follows a slightly different
trajectory elsewhere. A test that asserts a learning outcome (feasible, near the optimum,
better than a baseline) must therefore hold with a margin on a stable statistic. Two tools
for that live here:

* :class:`Margins` — ``margins.le(name, value, bound)`` asserts ``value <= bound`` and records
  the relative margin ``(bound - value) / |bound|`` (positive = inside the bound). When
  ``SAFEBENCH_MARGIN_LOG`` names a file, every check (passing or not) is appended to it as a
  JSON line; ``scripts/tools/test_robustness.py`` reruns the learning tests under the perturbations
  another machine would bring and reports each check's smallest margin.
* :func:`torch_threads` — the intra-op thread count the learning tests train with
  (``SAFEBENCH_TEST_THREADS``, default 1), so the robustness script can vary it.

Tests that use these are marked ``learning`` (see ``pyproject.toml``).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

__all__ = ["MARGIN_LOG_ENV", "THREADS_ENV", "Check", "Margins", "median", "torch_threads"]

MARGIN_LOG_ENV = "SAFEBENCH_MARGIN_LOG"
THREADS_ENV = "SAFEBENCH_TEST_THREADS"


def torch_threads() -> int:
    """Torch intra-op threads for training in tests: ``$SAFEBENCH_TEST_THREADS`` or 1."""
    raw = os.environ.get(THREADS_ENV, "1")
    try:
        n = int(raw)
    except ValueError as exc:
        raise ValueError(f"{THREADS_ENV}={raw!r}: give a whole number of threads") from exc
    return max(1, n)


def median(values: list[float]) -> float:
    """The median over seeds: the stable statistic a learning test asserts on."""
    return float(np.median(np.asarray(values, dtype=np.float64)))


@dataclass(frozen=True)
class Check:
    """One asserted learning quantity: ``value`` against ``bound`` in direction ``sense``."""

    test: str
    name: str
    value: float
    bound: float
    sense: Literal["<=", ">="]

    @property
    def margin(self) -> float:
        """Relative distance from the bound, positive inside: ``(bound − value)/|bound|`` for
        ``<=``, ``(value − bound)/|bound|`` for ``>=`` (absolute distance when bound = 0)."""
        gap = self.bound - self.value if self.sense == "<=" else self.value - self.bound
        scale = abs(self.bound)
        return gap / scale if scale > 0 else gap

    @property
    def holds(self) -> bool:
        return math.isfinite(self.value) and self.margin >= 0.0


class Margins:
    """Asserts learning outcomes and records each one's margin (see the module docstring)."""

    def __init__(self, test: str) -> None:
        self.test = test
        self.checks: list[Check] = []

    def le(self, name: str, value: float, bound: float, detail: object = "") -> None:
        """Assert ``value <= bound``."""
        self._check(Check(self.test, name, float(value), float(bound), "<="), detail)

    def ge(self, name: str, value: float, bound: float, detail: object = "") -> None:
        """Assert ``value >= bound``."""
        self._check(Check(self.test, name, float(value), float(bound), ">="), detail)

    def _check(self, check: Check, detail: object) -> None:
        self.checks.append(check)
        path = os.environ.get(MARGIN_LOG_ENV)
        if path:
            # Appends of one short line are atomic enough for the one pytest process that
            # writes here at a time; the robustness script gives each run its own file.
            with Path(path).open("a") as f:
                f.write(json.dumps({**asdict(check), "margin": check.margin}) + "\n")
        assert check.holds, (
            f"{check.name}: {check.value:.6g} {check.sense} {check.bound:.6g} fails "
            f"(margin {check.margin:+.1%}) {detail}"
        )
