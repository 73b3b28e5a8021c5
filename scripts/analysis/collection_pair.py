"""Collect the same epochs with safebench and with the official C-TRPO script; compare batches.

The update halves of PPO-Lag, FOCOPS, IPO and P3O are pinned to the official loops by
``tests/algorithms/test_clipped_epoch_official.py``; this checks the other half, collection,
and the cost estimate Ĵc each side hands its update (``ep_cost``).
Both sides start each epoch from the same network weights (safebench's, copied into the official
``ActorVCritic``; the official update's own result is discarded) and reset every episode of
vector env ``i`` with the seed safebench gives it (``episode_seed``; the official vector env
otherwise seeds once, which changes only the start states). safebench samples its actions
μ(s) + σ·ε from a recorded ε; the official loop is handed the same actions (its actor still
gives their log-probabilities), because Hopper's dynamics amplify a last-bit difference between
two actors' forward passes into different episodes within a few epochs (``--own-actions``: the
official loop computes μ(s) + σ·ε itself from the same ε, and shows that). The official env
wrapper ``SafeRescaleAction`` maps [-1, 1] onto the box even where the box is [-1, 1], in float32,
which rounds the action's last bits; safebench skips that identity (``ActionMap``), so the two
envs get actions one rounding apart; ``--rescale-unit-box`` makes safebench apply the same
float32 map, so that both envs are given the very same numbers. Everything else is
each side's own: the official ``main`` runs as published (its vector env and
``SafeNormalizeObservation``, its per-step bootstraps and ``finish_path``, its buffer's
``get``), safebench runs its ``Collector`` and ``prepare``. The batches each side hands its
update (observations, actions, log-probabilities, advantages, value targets) are compared epoch
by epoch.

    .venv/bin/python scripts/analysis/collection_pair.py CHECKOUT \\
        [--algo ppo] [--task SafetyHopperVelocity-v1] [--seed 0] [--epochs 1] [--own-actions]

``--algo`` is a script of the official code (ppo, ppo_lag, focops, ipo, p3o); the run paired is
that method's in ``experiments/fidelity_baselines_official.yaml`` (Hopper) or
``…_halfcheetah.yaml``.

``CHECKOUT`` holds ``algorithms/baselines`` (``git archive HEAD algorithms/baselines`` of
milosen/ctrpo). Prints, per epoch and quantity, the largest absolute difference, its scale and
how many rows differ by more than 1e-3 of the scale.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_official import _load  # the official script, importable here

from safebench.core.onpolicy import OnPolicyAlgorithm
from safebench.core.rollout import ActionMap
from safebench.envs.factory import episode_seed, make_vector_env
from safebench.schema.spec import RunSpec, expand, load_experiment
from safebench.training.runner import _collector, build_algorithm

EXPERIMENTS = [
    Path(__file__).resolve().parents[2] / "experiments" / name
    for name in ("fidelity_baselines_official.yaml", "fidelity_baselines_official_halfcheetah.yaml")
]
LABELS = {
    "ppo": "ppo",
    "focops": "focops",
    "ppo_lag": "ppo-lag",
    "ipo": "ipo",
    "p3o": "p3o-official",
}


class Stop(Exception):
    """Raised from the official buffer's ``get`` once enough epochs are recorded."""


class Rows:
    """Recorded rows handed out in order: ε (as ``standard_normal``) or actions."""

    def __init__(self, eps: np.ndarray) -> None:
        self.eps, self.t = eps, 0

    def next(self) -> np.ndarray:
        out = self.eps[self.t]
        self.t += 1
        return out

    def standard_normal(self, shape: Any, dtype: Any = np.float64) -> np.ndarray:
        out = self.next()
        assert out.shape == tuple(shape)
        return out.astype(dtype)


def spec_for(algo: str, task: str, seed: int) -> RunSpec:
    """The run of the official-protocol baseline grids (Hopper, HalfCheetah) to pair."""
    for experiment in EXPERIMENTS:
        for spec in expand(load_experiment(experiment)):
            if spec.label == LABELS[algo] and spec.env_id == task and spec.seed == seed:
                return spec
    raise SystemExit(f"no {algo} {task} seed {seed} in {', '.join(map(str, EXPERIMENTS))}")


def safebench_batches(
    spec: RunSpec, eps: np.ndarray, epochs: int, rescale_unit_box: bool = False
) -> tuple[list[dict[str, np.ndarray]], list[dict[str, torch.Tensor]], np.ndarray]:
    """The batches safebench's update gets in ``epochs`` epochs, the networks (named as the
    official ``ActorVCritic``'s) each epoch collected with (initial, then after each update),
    and the actions taken ``(steps, num_envs, act_dim)``."""
    venv = make_vector_env(spec.env_id, spec.num_envs, **spec.env_kwargs)
    algo = build_algorithm(spec, venv, torch.device("cpu"))
    assert isinstance(algo, OnPolicyAlgorithm)
    collector = _collector(algo, venv, spec.seed)
    collector.rng = Rows(eps)  # type: ignore[assignment]
    if rescale_unit_box:  # the affine map even on a [-1, 1] box, as SafeRescaleAction computes it
        mapping = collector.action_map
        collector.action_map = ActionMap(mapping.low, mapping.high, True, mapping.clip)
    out = []
    weights = []
    actions = []
    for _ in range(epochs):
        weights.append(official_names(algo))
        rollout, _ = collector.collect(algo, spec.steps_per_epoch)
        actions.append(rollout.act.reshape(-1, spec.num_envs, *rollout.act.shape[1:]))
        batch = algo.prepare(rollout)
        rows = {
            "obs": batch.obs, "act": batch.act, "log_prob": batch.logp, "adv_r": batch.adv_r,
            "adv_c": batch.adv_c, "target_value_r": batch.target_r,
            "target_value_c": batch.target_c,
        }  # fmt: skip
        out.append({k: env_major(v, spec.num_envs) for k, v in rows.items()})
        out[-1]["ep_cost"] = np.array([batch.ep_cost])  # the Ĵc the update is given
        algo.update(rollout)
    venv.close()
    return out, weights, np.concatenate(actions)


def env_major(x: torch.Tensor, n: int) -> np.ndarray:
    """safebench's rows are time-major ``(t, env)``; the official buffer's env-major."""
    a = x.detach().numpy()
    return a.reshape(-1, n, *a.shape[1:]).swapaxes(0, 1).reshape(a.shape)


def official_names(algo: Any) -> dict[str, torch.Tensor]:
    """safebench's actor and critics, as a state dict of the official ``ActorVCritic``."""
    out: dict[str, torch.Tensor] = {}
    linears = [m for m in algo.actor.mean_net.modules() if isinstance(m, torch.nn.Linear)]
    for k, lin in enumerate(linears):
        out[f"actor.mean.{2 * k}.weight"] = lin.weight.detach().clone()
        out[f"actor.mean.{2 * k}.bias"] = lin.bias.detach().clone()
    out["actor.log_std"] = algo.actor.log_std.detach().clone()
    critics = algo.critics
    for head, name in ((0, "reward_critic"), (1, "cost_critic")):
        for k, (w, b) in enumerate(zip(critics.weights, critics.biases, strict=True)):
            out[f"{name}.critic.{2 * k}.weight"] = w[head].detach().T.clone()
            out[f"{name}.critic.{2 * k}.bias"] = b[head, 0].detach().clone()
    return out


class SeedEach(gymnasium.Wrapper):
    """Resets env ``index``'s ``k``-th episode with safebench's ``episode_seed(seed, index, k)``."""

    def __init__(self, env: Any, seed: int, index: int) -> None:
        super().__init__(env)
        self.base, self.index, self.k = seed, index, 0

    def reset(self, **kwargs: Any) -> Any:
        kwargs["seed"] = episode_seed(self.base, self.index, self.k)
        self.k += 1
        return self.env.reset(**kwargs)

    def step(self, action: Any) -> Any:
        return self.env.step(action)


def official_batches(
    module: Any,
    spec: RunSpec,
    weights: list[dict[str, torch.Tensor]],
    eps: np.ndarray,
    actions: np.ndarray | None,
) -> list[dict[str, np.ndarray]]:
    """The batches the official ``main`` hands its update, each epoch collected with
    ``weights[epoch]`` (loaded as the epoch's collection starts; its own update is discarded)."""
    import safety_gymnasium
    from common.wrappers import SafeNormalizeObservation
    from safety_gymnasium.vector.async_vector_env import SafetyAsyncVectorEnv
    from safety_gymnasium.wrappers import SafeRescaleAction

    noise = Rows(eps)
    given = None if actions is None else Rows(actions)
    recorded: list[dict[str, np.ndarray]] = []

    def make_env(num_envs: int, env_id: str, seed: int | None = None) -> Any:
        if num_envs == 1:  # the evaluation env, unused (use_eval is off)
            env = safety_gymnasium.make(env_id)
            return env, env.observation_space, env.action_space

        def factory(i: int) -> Any:
            def create() -> Any:
                env = SeedEach(safety_gymnasium.make(env_id), spec.seed, i)
                return SafeRescaleAction(env, -1.0, 1.0)

            return create

        env = SafeNormalizeObservation(SafetyAsyncVectorEnv([factory(i) for i in range(num_envs)]))
        return env, env.single_observation_space, env.single_action_space

    policy_class, buffer_class = module.ActorVCritic, module.VectorizedOnPolicyBuffer

    class Fixed(policy_class):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.loaded = -1

        def step(self, obs: torch.Tensor, deterministic: bool = False) -> Any:
            if self.loaded < len(recorded):  # a new epoch's collection: safebench's networks
                self.load_state_dict(weights[len(recorded)])
                self.loaded = len(recorded)
            dist = self.actor(obs)
            if obs.dim() == 2 and given is not None:  # the vector step: safebench's action
                action = torch.as_tensor(given.next())
            elif obs.dim() == 2:  # the vector step, from the recorded noise
                action = dist.mean + dist.stddev * torch.as_tensor(noise.next())
            else:  # a bootstrap value: its action is discarded
                action = dist.mean
            log_prob = dist.log_prob(action).sum(axis=-1)
            return action, log_prob, self.reward_critic(obs), self.cost_critic(obs)

    class Recorded(buffer_class):  # type: ignore[misc, valid-type]
        def get(self) -> dict[str, torch.Tensor]:
            data = super().get()
            recorded.append({k: v.detach().numpy().copy() for k, v in data.items()})
            # main's Ĵc, computed (logger.get_stats) just before it calls get()
            recorded[-1]["ep_cost"] = np.array([float(sys._getframe(1).f_locals["ep_costs"])])
            if len(recorded) >= len(weights):
                raise Stop
            return data

    module.ActorVCritic, module.VectorizedOnPolicyBuffer = Fixed, Recorded
    # The official update's result is overwritten before the next collection: one pass of it
    # is enough to keep the script's flow (it only costs time).
    passes = module.default_cfg["learning_iters"]
    module.default_cfg["learning_iters"] = 1
    make = module.make_sa_mujoco_env
    module.make_sa_mujoco_env = make_env
    sys.argv = [
        module.__name__, "--task", spec.env_id, "--seed", str(spec.seed),
        "--total-steps", str(spec.budget), "--device", "cpu", "--write-terminal", "True",
        "--num-envs", str(spec.num_envs), "--steps-per-epoch", str(spec.steps_per_epoch),
    ]  # fmt: skip
    try:
        args, cfg_env = module.single_agent_args()
        args.log_dir = tempfile.mkdtemp()
        module.main(args, cfg_env)
    except Stop:
        pass
    finally:
        module.ActorVCritic, module.VectorizedOnPolicyBuffer = policy_class, buffer_class
        module.make_sa_mujoco_env = make
        module.default_cfg["learning_iters"] = passes
    return recorded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", type=Path)
    parser.add_argument("--algo", default="ppo", choices=sorted(LABELS))
    parser.add_argument("--task", default="SafetyHopperVelocity-v1")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument(
        "--own-actions",
        action="store_true",
        help="the official loop computes its actions from the same noise (not safebench's)",
    )
    parser.add_argument(
        "--rescale-unit-box",
        action="store_true",
        help="safebench sends the env −1 + 2·((a + 1)/2) in float32 on a [-1, 1] box, as the "
        "official SafeRescaleAction does (by default it skips that identity map)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    spec = spec_for(args.algo, args.task, args.seed)
    horizon = spec.steps_per_epoch // spec.num_envs
    venv = make_vector_env(spec.env_id, 1, **spec.env_kwargs)
    act_dim = int(np.prod(venv.action_space.shape or (1,)))
    venv.close()
    rng = np.random.default_rng(args.seed)
    eps = rng.standard_normal((args.epochs * horizon, spec.num_envs, act_dim), dtype=np.float32)
    ours, weights, actions = safebench_batches(spec, eps, args.epochs, args.rescale_unit_box)
    module = _load(args.checkout, args.algo, 500)
    theirs = official_batches(module, spec, weights, eps, None if args.own_actions else actions)
    for epoch, (mine_all, other_all) in enumerate(zip(ours, theirs, strict=True)):
        print(f"epoch {epoch}")
        for key, mine in mine_all.items():
            other = other_all[key]
            diff = np.abs(mine.astype(np.float64) - other.astype(np.float64))
            rel = diff.max() / max(np.abs(other).max(), 1e-12)
            rows = int((diff.reshape(len(diff), -1).max(axis=1) > 1e-3 * np.abs(other).max()).sum())
            print(
                f"  {key:16s} max|Δ| {diff.max():.3g} (scale {np.abs(other).max():.3g}, "
                f"relative {rel:.2g}; rows off by > 1e-3 of scale: {rows} of {len(diff)})"
            )


if __name__ == "__main__":
    main()
