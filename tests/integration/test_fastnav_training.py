"""fastnav under training: a run on the fast navigation env equals the run on stock.

The same CPO run on SafetyCarButton1-v0 through stock Safety-Gymnasium (env option
``fast: false``) and through :mod:`safebench.envs.fastnav` (the default) writes the same metrics,
every column but the timings, bit for bit (same machine): the envs' first episodes included
(a fresh env's first reset runs one ``mj_forward`` fewer, in both), evaluation included.
experiments/fastnav_training.yaml runs the same comparison at full size.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from safebench import registry
from safebench.schema.spec import EvalSpec, RunSpec
from safebench.training.runner import metrics_frame, run

TIMING = ["time_rollout", "time_update", "time_eval", "wall_time"]


def _spec(fast: bool) -> RunSpec:
    return RunSpec(
        algo="cpo",
        config=registry.resolve_config("cpo").model_dump(mode="json"),
        env_id="SafetyCarButton1-v0",
        env_kwargs={} if fast else {"fast": False},  # default 1000-step episodes
        seed=3,
        budget=2 * 1000,  # each epoch is one whole episode: a first one, then a later one
        steps_per_epoch=1000,
        cost_limit=25.0,
        eval=EvalSpec(episodes=1, every_epochs=1),
        num_envs=1,
        device="cpu",
    )


@pytest.mark.slow
def test_fast_and_stock_training_runs_are_identical(tmp_path: Path) -> None:
    """~1 min on 2 busy cores, most of it the stock resets (a few seconds each)."""
    torch.set_num_threads(1)
    stock = metrics_frame(run(_spec(fast=False), tmp_path / "stock"))
    fast = metrics_frame(run(_spec(fast=True), tmp_path / "fast"))
    assert len(fast) == 2 and fast["ep_ret"].notna().all() and fast["eval_ret"].notna().all()
    pd.testing.assert_frame_equal(
        stock.drop(columns=TIMING), fast.drop(columns=TIMING), check_exact=True
    )
