"""Run a baseline of the official C-TRPO code (milosen/ctrpo) here; read its critic at time-outs.

The published runs of the official code trained on a GPU with torch 2.0.1; this runs the same
script, from a checkout given on the command line, in safebench's environment (the same
Safety-Gymnasium, MuJoCo and Gymnasium versions; CPU, one torch thread), so that its returns
can be compared with safebench's at matched steps on one machine. Nothing of the official code
is kept in this repository (it has no licence): the checkout is read at run time.

The first-order scripts decay the actor's learning rate linearly to zero over the run, so a
1 M-step run here decays ten times faster than the published 1e7-step runs did over their
first 1 M steps; ``--lr-epochs 500`` gives the published schedule (what safebench's
``lr_decay_epochs: 500`` reproduces), the default keeps the script's own.

After training, the script steps the trained policy in its own training env until each vector
env has ended an episode and prints, over the episodes that ended by time-out, the mean reward
critic value at the raw final observation (what the official code bootstraps from) and at the
same observation normalised (what its critic is fitted on); ``bootstrap_values.py`` measures
the same two numbers on a safebench run.

    .venv/bin/python scripts/analysis/run_official.py CHECKOUT trpo_lag \\
        SafetyHalfCheetahVelocity-v1 --seeds 0 1000 2000 --steps 1000000 --out OUT \\
        [--lr-epochs 500]

``CHECKOUT`` is a folder holding ``algorithms/baselines`` (a clone of milosen/ctrpo, or
``git archive HEAD algorithms/baselines`` of one). Runs land in
``OUT/data/runs/benchmark/TASK/ALGO/seed-NNN-here``, the official data's layout, so that
``safebench import safepo OUT/data/runs/benchmark --into ROOT`` imports them for ``safebench
report --against ROOT``; each run's critic values go to ``values.json`` beside its
``progress.csv``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch

from safebench.envs.factory import import_safety_gymnasium


def _load(checkout: Path, algo: str, lr_epochs: int | None = None) -> Any:
    """The official script ``algorithms/baselines/ALGO.py`` as a module, importable here.

    ``lr_epochs``: the horizon (``total_iters``) of the actor's linear learning-rate decay, in
    epochs (module docstring); None keeps the script's own, the run's length.
    """
    sys.path.insert(0, str(checkout / "algorithms" / "baselines"))
    import_safety_gymnasium()  # Safety-Gymnasium 1.0.0 needs safebench's shim on Python 3.11
    # The logger imports joblib for a state file (the normaliser every 100 epochs) that this
    # script does not read; safebench's environment does not have joblib.
    sys.modules.setdefault("joblib", types.SimpleNamespace(dump=lambda *a, **k: None))  # type: ignore[arg-type]
    env_module = importlib.import_module("common.env")
    # The scripts import an Isaac Gym constructor that the checkout's env.py does not define.
    if not hasattr(env_module, "make_sa_isaac_env"):
        env_module.make_sa_isaac_env = None  # type: ignore[attr-defined]
    # The first-order scripts pass LinearLR(verbose=False), an argument torch 2.13 dropped (it
    # only printed the rate); the scripts import the class by name, so it is replaced before.
    linear_lr = torch.optim.lr_scheduler.LinearLR

    class QuietLinearLR(linear_lr):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, verbose: Any = None, **kwargs: Any) -> None:
            if lr_epochs is not None:
                kwargs["total_iters"] = lr_epochs
            super().__init__(*args, **kwargs)

    torch.optim.lr_scheduler.LinearLR = QuietLinearLR  # type: ignore[misc]
    try:
        return importlib.import_module(algo)
    finally:
        torch.optim.lr_scheduler.LinearLR = linear_lr  # type: ignore[misc]


def run_one(module: Any, task: str, seed: int, steps: int, log_dir: Path) -> Any:
    """Train one seed with the official ``main``; returns its policy and training env."""
    made: dict[str, Any] = {}
    policy_class = module.ActorVCritic

    class Recorded(policy_class):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.setdefault("policy", self)

    make_env = module.make_sa_mujoco_env

    def recorded_env(num_envs: int, env_id: str, seed: int | None = None) -> Any:
        env, obs_space, act_space = make_env(num_envs=num_envs, env_id=env_id, seed=seed)
        if num_envs > 1:  # the training env (the evaluation env has one)
            made.setdefault("env", env)
        return env, obs_space, act_space

    module.ActorVCritic, module.make_sa_mujoco_env = Recorded, recorded_env
    set_threads = torch.set_num_threads

    def one_thread(nthreads: int) -> None:  # the script asks for 4: one core here
        set_threads(1)

    torch.set_num_threads = one_thread
    sys.argv = [
        module.__name__, "--task", task, "--seed", str(seed), "--total-steps", str(steps),
        "--device", "cpu", "--write-terminal", "False",
    ]  # fmt: skip
    try:
        args, cfg_env = module.single_agent_args()
        args.log_dir = str(log_dir)
        module.main(args, cfg_env)
    finally:
        module.ActorVCritic, module.make_sa_mujoco_env = policy_class, make_env
        torch.set_num_threads = set_threads
    return made["policy"], made["env"]


def timeout_values(policy: Any, env: Any) -> dict[str, float]:
    """Mean V_r at time-outs' raw and normalised final observations, the policy sampling."""
    obs, _ = env.reset()
    finals: list[np.ndarray] = []
    ended = np.zeros(env.num_envs, dtype=bool)
    while not ended.all():
        with torch.no_grad():
            act, *_ = policy.step(torch.as_tensor(obs, dtype=torch.float32), deterministic=False)
        obs, _, _, term, trunc, info = env.step(act.numpy())
        for i in np.flatnonzero(trunc & ~term & ~ended):
            finals.append(info["final_observation"][i])
        ended |= term | trunc
    out: dict[str, float] = {"timeouts": float(len(finals))}
    if finals:
        raw = np.stack(finals)
        with torch.no_grad():
            critic = policy.reward_critic
            out["v_raw"] = float(critic(torch.as_tensor(raw, dtype=torch.float32)).mean())
            normed = torch.as_tensor(env.normalize(raw), dtype=torch.float32)
            out["v_normalised"] = float(critic(normed).mean())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", type=Path)
    parser.add_argument("algo", help="the official script's name: trpo_lag, ppo, focops, ...")
    parser.add_argument("task")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1000, 2000])
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--lr-epochs",
        type=int,
        help="horizon of the actor's learning-rate decay in epochs (default: the run's length, "
        "as the script computes it; 500 is the published 1e7-step runs' schedule)",
    )
    args = parser.parse_args()
    module = _load(args.checkout, args.algo, args.lr_epochs)
    for seed in args.seeds:
        log_dir = args.out / "data/runs/benchmark" / args.task / args.algo / f"seed-{seed:03d}-here"
        policy, env = run_one(module, args.task, seed, args.steps, log_dir)
        values = {"seed": seed, **timeout_values(policy, env)}
        env.close()
        (log_dir / "values.json").write_text(json.dumps(values))
        print(json.dumps({"algo": args.algo, "task": args.task, **values}))


if __name__ == "__main__":
    main()
