"""A whole epoch's CPO update with the hand-written critic step vs ``torch.optim.Adam``.

The hand-written critic path (``safebench.core.critic_fast``) exists only for speed; this
script decides whether it earns its place. It times one complete on-policy update
(``CPO.update``: advantages, the CG/line-search actor step, then ``update_iters`` passes of
minibatch critic regression) on a 20000-step batch of HalfCheetah's shapes (obs 17, act 6;
OmniSafe's epoch), with the critic fitted by

* ``fast``: the hand-written forward/backward and flat-buffer Adam (``CriticAdam``);
* ``fused`` / ``foreach``: autograd through the same critic module, with
  ``torch.optim.Adam(fused=True)`` / ``torch.optim.Adam(foreach=True)``;
* ``plain-fused``: two independent ``nn.Sequential`` critics (the textbook code), autograd,
  ``clip_grad_norm_`` per head and ``torch.optim.Adam(fused=True)``.

Paths alternate round by round so that machine load affects them alike; the table gives the
median over rounds of wall-clock and thread-CPU seconds per update, and each path's ratio to
``fast``::

    .venv/bin/python scripts/bench/update.py [--rounds 5] [--rows 20000] [--obs-dim 17]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import gymnasium
import numpy as np
import torch
from torch import nn

from algorithms.cpo import CPO, CPOConfig
from safebench.core.onpolicy import Batch, OnPolicyAlgorithm, Rollout
from safebench.core.policies import build_mlp


class PlainCritics:
    """Two ``build_mlp`` critics fitted with autograd and ``torch.optim.Adam`` (reference)."""

    def __init__(self, obs_dim: int, lr: float) -> None:
        self.net_r = build_mlp(obs_dim, (64, 64), 1, "tanh")
        self.net_c = build_mlp(obs_dim, (64, 64), 1, "tanh")
        params = [*self.net_r.parameters(), *self.net_c.parameters()]
        self.optim = torch.optim.Adam(params, lr=lr, fused=True)

    def fit(self, algo: CPO, batch: Batch) -> dict[str, float]:
        cfg = algo.config
        loss_r = loss_c = torch.zeros(())
        for _ in range(cfg.update_iters):
            for idx in algo.minibatches(len(batch), cfg.batch_size):
                self.optim.zero_grad()
                losses = []
                for net, target in ((self.net_r, batch.target_r), (self.net_c, batch.target_c)):
                    loss = ((net(batch.obs[idx]).squeeze(-1) - target[idx]) ** 2).mean()
                    loss = loss + cfg.critic_norm_coef * sum(
                        p.pow(2).sum() for p in net.parameters()
                    )
                    losses.append(loss)
                (losses[0] + losses[1]).backward()
                for net in (self.net_r, self.net_c):
                    nn.utils.clip_grad_norm_(net.parameters(), cfg.max_grad_norm)
                self.optim.step()
                loss_r, loss_c = losses[0].detach(), losses[1].detach()
        return {"loss_v_r": float(loss_r), "loss_v_c": float(loss_c)}


def synthetic_rollout(algo: OnPolicyAlgorithm, rows: int, obs_dim: int) -> Rollout:
    """A fixed ``rows``-step batch: normal observations, the algorithm's own sampled actions
    and log-probabilities, normal advantages and targets (seed 0)."""
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(rows, obs_dim)).astype(np.float32)
    act, logp = algo.rollout_policy().sample(obs, rng)
    return Rollout(
        obs=obs,
        act=np.asarray(act),
        logp=np.asarray(logp, dtype=np.float32),
        adv_r=rng.normal(size=rows),
        adv_c=rng.normal(size=rows),
        target_r=rng.normal(size=rows),
        target_c=rng.normal(size=rows),
        ep_cost=30.0,
        ep_ret=0.0,
    )


def make_update(path: str, rows: int, obs_dim: int, act_dim: int) -> Callable[[], None]:
    """A zero-argument callable running one full ``CPO.update`` on a fixed synthetic batch."""
    obs_space = gymnasium.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
    act_space = gymnasium.spaces.Box(-1.0, 1.0, (act_dim,), np.float32)
    algo = CPO(obs_space, act_space, CPOConfig(), cost_limit=25.0, seed=0)
    rollout = synthetic_rollout(algo, rows, obs_dim)
    lr = algo.config.critic_lr
    if path in ("fused", "foreach"):
        algo.critic_optim = torch.optim.Adam(  # type: ignore[assignment]
            algo.critics.parameters(), lr=lr, fused=path == "fused", foreach=path == "foreach"
        )
    if path == "plain-fused":
        plain = PlainCritics(obs_dim, lr)

        def update_plain() -> None:
            batch = algo.prepare(rollout)
            algo.update_actor(batch)
            plain.fit(algo, batch)

        return update_plain

    def update() -> None:
        algo.update(rollout)

    return update


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--obs-dim", type=int, default=17)
    parser.add_argument("--act-dim", type=int, default=6)
    args = parser.parse_args()
    torch.set_num_threads(1)
    paths = ["fast", "fused", "foreach", "plain-fused"]
    updates = {p: make_update(p, args.rows, args.obs_dim, args.act_dim) for p in paths}
    wall: dict[str, list[float]] = {p: [] for p in paths}
    cpu: dict[str, list[float]] = {p: [] for p in paths}
    for update in updates.values():
        update()  # warm-up
    for _ in range(args.rounds):
        for p, update in updates.items():
            w0, c0 = time.perf_counter(), time.thread_time()
            update()
            wall[p].append(time.perf_counter() - w0)
            cpu[p].append(time.thread_time() - c0)
    print(
        f"CPO.update on {args.rows} rows (obs {args.obs_dim}, act {args.act_dim}), 1 thread, "
        f"median of {args.rounds} rounds"
    )
    print(f"{'critic path':>12} {'wall s':>8} {'cpu s':>8} {'cpu / fast':>11}")
    fast_cpu = statistics.median(cpu["fast"])
    for p in paths:
        w, c = statistics.median(wall[p]), statistics.median(cpu[p])
        print(f"{p:>12} {w:>8.2f} {c:>8.2f} {c / fast_cpu:>10.2f}x")


if __name__ == "__main__":
    main()
