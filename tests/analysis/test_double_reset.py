"""scripts/analysis/double_reset.py: the normaliser after one reset and after two."""

from __future__ import annotations

import numpy as np

from safebench.envs.factory import make_vector_env
from scripts.analysis.double_reset import epoch_stats


def test_a_second_reset_batch_moves_the_statistics_and_a_rerun_does_not() -> None:
    venv = make_vector_env("SafetyHopperVelocity-v1", 2)
    try:
        one = epoch_stats(venv, [0], steps=20)
        again = epoch_stats(venv, [0], steps=20)
        two = epoch_stats(venv, [0, 1], steps=20)
    finally:
        venv.close()
    np.testing.assert_array_equal(one[0], again[0])
    np.testing.assert_array_equal(one[1], again[1])
    # 4 reset observations merged instead of 2 (and other starting states): other statistics
    assert np.abs(two[1] / one[1] - 1.0).max() > 1e-6
    assert np.all(one[1] > 0.0)
