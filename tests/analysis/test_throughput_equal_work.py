"""scripts/bench/throughput.py: the speed-up at equal work (every epoch's passes run in full)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from scripts.bench.throughput import equal_work_seconds, pass_counts


def test_passes_count_every_phase_and_the_most_each_could_run() -> None:
    frame = pd.DataFrame({"algo/update_passes": [1.0, 40.0], "algo/projection_passes": [3.0, 2.0]})
    two_phases = pass_counts(frame, ("algo/update_passes", "algo/projection_passes"), 40.0)
    assert two_phases == {"passes": 46.0, "max_passes": 160.0}
    one_phase = pass_counts(frame, ("algo/update_passes", "Train/SecondStepStopIter"), 40.0)
    assert one_phase == {"passes": 41.0, "max_passes": 80.0}
    none = pass_counts(frame, ("Train/StopIter",), 40.0)
    assert math.isnan(none["passes"]) and math.isnan(none["max_passes"])


def test_equal_work_scales_the_update_to_all_passes_and_keeps_the_rollout() -> None:
    # 2 s per pass, 10 passes run of 80 possible: 5 s rollout + 160 s update
    parts = {"rollout_s": 5.0, "update_s": 20.0, "passes": 10.0, "max_passes": 80.0}
    assert equal_work_seconds(parts) == pytest.approx(165.0)
    # a side whose passes ran in full is timed as measured
    full = {"rollout_s": 5.0, "update_s": 20.0, "passes": 80.0, "max_passes": 80.0}
    assert equal_work_seconds(full) == pytest.approx(25.0)
    assert math.isnan(equal_work_seconds({"rollout_s": 1.0, "update_s": 1.0}))
