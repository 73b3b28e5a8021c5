"""scripts/analysis/run_official.py: driving an official baseline script from a checkout, and
the critic at time-outs' raw and normalised final observations."""

from __future__ import annotations

import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from scripts.analysis import run_official


class _Env:
    """Three vector envs: env 0 times out at step 2, env 1 terminates at step 1 and times out
    at step 3, env 2 times out at step 3; final observations are ``10·step + env``."""

    num_envs = 3

    def __init__(self) -> None:
        self.t = 0

    def reset(self) -> tuple[np.ndarray, dict[str, Any]]:
        self.t = 0
        return np.zeros((3, 2)), {}

    def normalize(self, obs: np.ndarray) -> np.ndarray:
        return (obs - 1.0) / 2.0

    def step(self, act: np.ndarray) -> tuple[Any, ...]:
        assert act.shape == (3, 1)
        self.t += 1
        term = np.array([False, self.t == 1, False])
        trunc = np.array([self.t == 2, self.t == 3, self.t == 3])
        finals = [np.full(2, 10.0 * self.t + i) if term[i] or trunc[i] else None for i in range(3)]
        info = {"final_observation": finals}
        return np.zeros((3, 2)), np.zeros(3), np.zeros(3), term, trunc, info


class _Policy:
    @staticmethod
    def reward_critic(obs: torch.Tensor) -> torch.Tensor:
        return obs.sum(-1)

    @staticmethod
    def step(obs: torch.Tensor, deterministic: bool) -> tuple[torch.Tensor, ...]:
        assert not deterministic  # the policy samples, as in training
        return (torch.zeros(obs.shape[0], 1),)


def test_time_out_values_read_only_time_outs_raw_and_normalised() -> None:
    out = run_official.timeout_values(_Policy(), _Env())
    # env 0 times out at step 2 (final 20), env 1 terminates first (its episode ended: not
    # counted again), env 2 times out at step 3 (final 32); a final (x, x) is worth 2x raw
    # and (x - 1) normalised.
    assert out["timeouts"] == 2
    assert out["v_raw"] == pytest.approx((2 * 20 + 2 * 32) / 2)
    assert out["v_normalised"] == pytest.approx(((20 - 1) + (32 - 1)) / 2)


_ENV_PY = """
def make_sa_mujoco_env(num_envs, env_id, seed=None):
    return ("env", num_envs, env_id, seed), "obs-space", "act-space"
"""

_ALGO_PY = """
import argparse
import torch
from torch.optim.lr_scheduler import LinearLR
from common.env import make_sa_mujoco_env, make_sa_isaac_env

class ActorVCritic:
    def __init__(self, size):
        self.size = size

def single_agent_args():
    parser = argparse.ArgumentParser()
    for flag in ("--task", "--seed", "--total-steps", "--device", "--write-terminal"):
        parser.add_argument(flag)
    return parser.parse_args(), None

def main(args, cfg_env):
    torch.set_num_threads(4)
    weight = torch.zeros(1, requires_grad=True)
    schedule = LinearLR(torch.optim.Adam([weight]), start_factor=1.0, end_factor=0.0,
                        total_iters=5, verbose=False)  # as the official scripts call it
    env, _, _ = make_sa_mujoco_env(num_envs=10, env_id=args.task, seed=int(args.seed))
    make_sa_mujoco_env(num_envs=1, env_id=args.task, seed=None)
    ActorVCritic(64)
    ActorVCritic(32)
    with open(args.log_dir + "/args.txt", "w") as f:
        used = torch.get_num_threads()
        f.write(f"{args.task} {args.seed} {args.total_steps} {args.device} {used} ")
        f.write(f"{schedule.total_iters}")
"""


def test_an_official_script_runs_with_its_training_env_and_policy_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    baselines = tmp_path / "checkout" / "algorithms" / "baselines"
    (baselines / "common").mkdir(parents=True)
    (baselines / "common" / "__init__.py").write_text("")
    (baselines / "common" / "env.py").write_text(textwrap.dedent(_ENV_PY))
    (baselines / "fake_official_algo.py").write_text(textwrap.dedent(_ALGO_PY))
    monkeypatch.setattr(sys, "path", list(sys.path))
    for name in ("common", "common.env", "fake_official_algo"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    # the stand-in joblib of _load goes too: setitem restores whatever was there
    joblib = sys.modules.get("joblib", types.ModuleType("joblib"))
    monkeypatch.setitem(sys.modules, "joblib", joblib)
    threads, set_threads = torch.get_num_threads(), torch.set_num_threads
    linear_lr = torch.optim.lr_scheduler.LinearLR

    module = run_official._load(tmp_path / "checkout", "fake_official_algo", lr_epochs=500)
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    policy, env = run_official.run_one(module, "SafetyHopperVelocity-v1", 1000, 5000, log_dir)

    assert env == ("env", 10, "SafetyHopperVelocity-v1", 1000)  # the training env, not eval's
    assert policy.size == 64  # the first policy made
    task, seed, steps, device, used, horizon = (log_dir / "args.txt").read_text().split()
    assert (task, seed, steps, device) == ("SafetyHopperVelocity-v1", "1000", "5000", "cpu")
    assert used == "1"  # the script asked for 4 threads
    assert horizon == "500"  # the script asked for 5 epochs
    # everything patched is put back
    assert torch.get_num_threads() == 1
    torch.set_num_threads(threads)
    assert torch.set_num_threads is set_threads
    assert torch.optim.lr_scheduler.LinearLR is linear_lr
    assert module.ActorVCritic.__name__ == "ActorVCritic"
