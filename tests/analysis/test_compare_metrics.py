"""scripts/analysis/compare_metrics.py: two results roots run by run, timings aside."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from safebench.results.store import RunDir
from scripts.analysis.compare_metrics import main


def _run(root: Path, label: str, seed: int, rows: pd.DataFrame, status: str = "done") -> None:
    run = RunDir.at(root, label, "SafetyCarButton1-v0", seed, f"{seed:08d}")
    run.path.mkdir(parents=True)
    run.write_spec({"env_id": "SafetyCarButton1-v0", "seed": seed})
    run.write_status(status)  # type: ignore[arg-type]
    run.write_metrics(rows)


def _metrics(wall: float, ep_ret: float = 1.0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "epoch": [0, 1],
            "ep_ret": [ep_ret, float("nan")],  # NaN on both sides counts as equal
            "ep_cost": [3.0, 4.0],
            "time_rollout": [wall / 2, wall],
            "time_update": [1.0, 1.0],
            "time_eval": [0.0, 0.0],
            "wall_time": [wall, 2 * wall],
        }
    )


def test_identical_bar_the_timings_then_a_differing_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stock, fast = tmp_path / "stock", tmp_path / "fast"
    _run(stock, "cpo-stock", 0, _metrics(wall=40.0))
    _run(fast, "cpo-fast", 0, _metrics(wall=10.0))
    _run(stock, "cpo-stock", 1000, _metrics(wall=40.0), status="running")  # not compared
    assert main(stock, fast) == 0
    out = capsys.readouterr().out
    assert "seed 0: 2 epochs, identical bar the timings; rollout 4.00x, wall 4.00x" in out
    assert "not compared (not done on both sides): SafetyCarButton1-v0 1000" in out

    _run(fast, "cpo-fast", 1000, _metrics(wall=10.0, ep_ret=2.0))
    _run(stock, "cpo-stock", 2000, _metrics(wall=40.0))
    _run(fast, "cpo-fast", 2000, _metrics(wall=10.0, ep_ret=2.0))
    assert main(stock, fast) == 1
    assert "seed 2000: 2 epochs, DIFFER: ep_ret at epoch 0" in capsys.readouterr().out
    assert main(tmp_path / "none", fast) == 2
