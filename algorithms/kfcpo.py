"""KFCPO: Kronecker-Factored Approximated Constrained Policy Optimization (Lim & Yoo, 2025).

Only the abstract and a secondary digest of the paper are public and no code is (ALGORITHMS.md
§3): the structure below is theirs [M], every number and most details are inferred [L] and
tagged as such in :class:`KFCPOConfig`. One epoch, on the OmniSafe on-policy batch (A_r
standardised, A_c centred, Ĵc = windowed mean undiscounted episode cost):

    w_c = σ(k·(Ĵc − λ·C)),  w_r = 1 − w_c                         margin-aware weights (§3.6)
    for update_iters passes, for each minibatch M (critics fitted on M first, as OmniSafe):
        every T_s steps: EMA-update the K-FAC factors A_l, G_l on M (actions sampled from π_θ)
        every T_f steps: eigendecompose them
        g_r = ∇ mean_M(ρ·A_r),  g_c = −∇ mean_M(ρ·A_c)          (ascent on reward, descent on cost)
        d_r = F̂⁻¹g_r,  d_c = F̂⁻¹g_c                              (one K-FAC Fisher, §3.4)
        if ⟨d_r, d_c⟩ < 0: project (default: d_c ← d_c − ⟨d_c,d_r⟩/‖d_r‖²·d_r)     (§3.7)
        d = w_r·d_r + w_c·d_c
        q = dᵀ(F̂ + γI)d;  ν = min(ν_max, √(2κ / (η²·q)));  θ ← θ + η·ν·d          (§3.8)
        if KL(π_ref ‖ π_θ) on M > ε_KL: θ ← θ_prev (bit-for-bit)   (π_ref = π_θk by default)

with ρ = π_θ(a|s)/π_θk(a|s). F̂ and every KL here are those of the joint action distribution
(KL summed over action dimensions) unless ``kl_convention="mean"`` (OmniSafe's per-dimension
mean, a factor act_dim smaller) is chosen for the rollback test.

The step's K-FAC-predicted KL ``½(ην)²q`` is at most κ, but the true KL of a step is larger:
K-FAC drops the cross-layer blocks (≈3-4x at fresh factors on a [64,64] net) and the EMA
factors lag the parameters. The rollback is what enforces ε_KL; ``kl_step`` (true KL of each
step) against ``predicted_kl`` in the diagnostics shows the gap.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor
from torch.distributions import Categorical, Distribution, Normal, kl_divergence

from safebench.core.base import OnPolicyConfig
from safebench.core.kfac import KFAC
from safebench.core.onpolicy import Batch, OnPolicyAlgorithm
from safebench.core.optim import flat_grad, flat_params, frozen_distribution, set_flat_params

__all__ = [
    "KFCPO",
    "KFCPOConfig",
    "Projection",
    "blend",
    "margin_weight",
    "minibatch_kl",
    "project_conflict",
    "trust_region_scale",
]

Projection = Literal["cost", "pcgrad", "dominant", "none"]


class KFCPOConfig(OnPolicyConfig):
    """KFCPO hyperparameters (ALGORITHMS.md §3.10); the paper gives none beyond ε_KL's range."""

    rollback_kl: float = Field(
        0.01, gt=0, description="[M] ε_KL, minibatch rollback threshold; abstract/digest 0.005-0.01"
    )
    rollback_reference: Literal["epoch_start", "previous"] = Field(
        "epoch_start",
        description=(
            "[L] π_ref of the rollback test: the data-collecting π_θk (bounds the cumulative "
            "drift) or the parameters before this minibatch step"
        ),
    )
    kl_convention: Literal["sum", "mean"] = Field(
        "sum",
        description=(
            "[L] rollback KL per state summed over action dims (true KL) or averaged over them "
            "(OmniSafe's second-order convention); mean over the minibatch states either way"
        ),
    )
    margin_k: float = Field(
        0.5, gt=0, description="[L] k, sigmoid steepness (1/cost units); spec suggests ≈0.5 at C=25"
    )
    margin_lambda: float = Field(
        0.8, gt=0, description="[L] λ, margin centre λ·C where w_c = ½; spec suggests 0.8"
    )
    projection: Projection = Field(
        "cost",
        description=(
            "[M] on ⟨d_r,d_c⟩ < 0: 'cost' projects d_c orthogonal to d_r (digest); [L] "
            "'pcgrad' projects each onto the other's normal plane; 'dominant' projects the "
            "lower-weighted one (d_c if w_c < ½, else d_r); 'none' blends unprojected"
        ),
    )
    kfac_decay: float = Field(
        0.99, ge=0, lt=1, description="[L] EMA decay of A, G; ACKTR stat_decay 0.99"
    )
    kfac_damping: float = Field(1e-2, gt=0, description="[L] K-FAC damping γ; ACKTR damping 1e-2")
    kfac_eig_floor: float = Field(
        1e-6, ge=0, description="[L] eigenvalues of A, G below this zeroed; ACKTR kfac.py 1e-6"
    )
    kfac_fisher: Literal["sampled", "exact"] = Field(
        "sampled",
        description=(
            "[M] G from log π of actions sampled from π_θ (ACKTR); [L] 'exact' takes the "
            "expectation over actions (act_dim backward passes)"
        ),
    )
    stats_every: int = Field(1, ge=1, description="[L] T_s, factor update period; ACKTR Ts 1")
    inverse_every: int = Field(
        10, ge=1, description="[L] T_f, eigendecomposition period; ACKTR Tf 10"
    )
    kl_clip: float = Field(
        0.001, gt=0, description="[L] κ, predicted KL bound of one step; ACKTR kl_clip 0.001"
    )
    nu_max: float = Field(1.0, gt=0, description="[L] cap on the trust-region scale ν; ACKTR 1")
    lr: float = Field(0.25, gt=0, description="[L] η, base step size; ACKTR lr 0.25")


# --------------------------------------------------------------------------------------------
# Pure math
# --------------------------------------------------------------------------------------------


def margin_weight(ep_cost: float, cost_limit: float, k: float, lam: float) -> float:
    """Cost weight ``w_c = 1 / (1 + exp(−k·(Ĵc − λ·C)))`` ∈ (0, 1); ``w_r = 1 − w_c``.

    ½ at ``Ĵc = λC``, increasing in Ĵc; from 0.12 to 0.88 over ``λC ± 2/k``.
    """
    x = k * (ep_cost - lam * cost_limit)
    # Two branches so that exp never overflows for a far-off Ĵc.
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def _remove(v: Tensor, u: Tensor) -> Tensor:
    """``v − (⟨v,u⟩/‖u‖²)·u``: v projected onto the hyperplane orthogonal to u (u ≠ 0)."""
    return v - (torch.dot(v, u) / torch.dot(u, u)) * u


def project_conflict(
    d_r: Tensor, d_c: Tensor, mode: Projection, w_c: float
) -> tuple[Tensor, Tensor, bool]:
    """Remove the conflicting component when ``⟨d_r, d_c⟩ < 0`` (Euclidean, flat ``(P,)``).

    Both are improvement directions (d_r raises reward, d_c lowers cost), so a negative inner
    product means a reward step raises cost to first order. Modes:

    * ``cost``: ``d_c ← d_c − ⟨d_c,d_r⟩/‖d_r‖²·d_r`` (reward keeps its direction);
    * ``pcgrad``: both, each against the other's *original* direction (Yu et al. 2020);
    * ``dominant``: the direction with the smaller blend weight is projected (d_c if
      ``w_c < ½``, else d_r), so the objective currently in charge is never slowed;
    * ``none``: no projection.

    Afterwards ``⟨d_r, d_c⟩ ≥ 0`` (= 0 for the one-sided modes; for pcgrad it is
    ``−p(1 − p²/(‖d_r‖²‖d_c‖²)) ≥ 0`` with ``p < 0`` the original product).

    Returns:
        ``(d_r, d_c, projected)``.
    """
    if mode == "none" or float(torch.dot(d_r, d_c)) >= 0.0:
        return d_r, d_c, False
    if mode == "cost" or (mode == "dominant" and w_c < 0.5):
        return d_r, _remove(d_c, d_r), True
    if mode == "dominant":
        return _remove(d_r, d_c), d_c, True
    return _remove(d_r, d_c), _remove(d_c, d_r), True


def blend(d_r: Tensor, d_c: Tensor, w_c: float) -> Tensor:
    """``d = (1 − w_c)·d_r + w_c·d_c``."""
    return (1.0 - w_c) * d_r + w_c * d_c


def trust_region_scale(quad: float, kl_clip: float, lr: float, nu_max: float) -> float:
    """``ν = min(ν_max, √(2κ / (η²·q)))`` for ``q = dᵀ(F̂ + γI)d``: the step ``η·ν·d`` then
    has predicted KL ``½(ην)²dᵀF̂d ≤ ½(ην)²q ≤ κ``.

    ACKTR writes ``√(κ / (η²·vᵀg))`` with ``v = (F̂ + γI)⁻¹g``, i.e. ``q`` for ``d = v`` but a
    bound of κ/2; here κ is the predicted-KL bound itself.
    A zero quadratic form (``d = 0``) gives ``ν_max``; a non-finite one gives NaN, which the
    rollback then rejects.
    """
    if not math.isfinite(quad):
        return math.nan
    if quad <= 0.0:
        return nu_max
    return min(nu_max, math.sqrt(2.0 * kl_clip / (lr * lr * quad)))


def minibatch_kl(
    ref: Distribution, new: Distribution, convention: Literal["sum", "mean"] = "sum"
) -> Tensor:
    """``mean_s KL(π_ref(·|s) ‖ π_new(·|s))`` over a minibatch of ``B`` states (0-d).

    Gaussian: the per-dimension KL ``(B, act_dim)`` is summed (``sum``: KL of the joint) or
    averaged (``mean``) over action dimensions; categorical: one KL per state.
    """
    kl = kl_divergence(ref, new)
    if kl.ndim == 2:
        kl = kl.sum(-1) if convention == "sum" else kl.mean(-1)
    return kl.mean()


def _rows(dist: Distribution, idx: Tensor | slice) -> Distribution:
    """The distribution restricted to the states ``idx``, without autograd history."""
    if isinstance(dist, Normal):
        return Normal(dist.loc[idx].detach(), dist.scale[idx].detach(), validate_args=False)
    if isinstance(dist, Categorical):
        return Categorical(logits=dist.logits[idx].detach(), validate_args=False)
    raise TypeError(f"unsupported distribution {type(dist).__name__}")


# --------------------------------------------------------------------------------------------
# Algorithm
# --------------------------------------------------------------------------------------------


class KFCPO(OnPolicyAlgorithm):
    """KFCPO: blended, projected K-FAC natural-gradient steps with minibatch KL rollback.

    Supports the Gaussian actor and, with the same hooks, the categorical one (G then comes
    from log π of sampled categorical actions).
    """

    name = "kfcpo"
    Config = KFCPOConfig
    critics_in_actor_update = True  # one critic step per K-FAC minibatch step
    config: KFCPOConfig

    def setup(self) -> None:
        config = self.config
        self.kfac = KFAC(
            self.actor,
            decay=config.kfac_decay,
            damping=config.kfac_damping,
            eig_floor=config.kfac_eig_floor,
            fisher=config.kfac_fisher,
        )
        # Minibatch steps over the whole run: T_s and T_f count across epochs, as in ACKTR.
        self.kfac_steps = 0

    def update_actor(self, batch: Batch) -> dict[str, float]:
        cfg = self.config
        w_c = margin_weight(batch.ep_cost, self.cost_limit, cfg.margin_k, cfg.margin_lambda)
        start = frozen_distribution(self.actor, batch.obs)  # π_θk on the whole batch
        stats_before = self.kfac.stats_updates
        refresh_before = self.kfac.inverse_refreshes
        steps = projections = rollbacks = 0
        sums = dict.fromkeys(("nu", "kl_minibatch", "kl_step", "predicted_kl", "cos_rc"), 0.0)
        loss_v_r = loss_v_c = 0.0
        for _ in range(cfg.update_iters):
            for idx in self.minibatches(len(batch), cfg.batch_size):
                loss_v_r, loss_v_c = self.critic_step(batch, idx)
                # The schedules start at step 0; the guards cover factors that were never
                # computed (e.g. a K-FAC state replaced after a restart).
                if self.kfac_steps % cfg.stats_every == 0 or not self.kfac.has_stats:
                    self.kfac.update_stats(batch.obs[idx], self.generator)
                if self.kfac_steps % cfg.inverse_every == 0 or not self.kfac.has_inverse:
                    self.kfac.refresh_inverse()
                self.kfac_steps += 1
                ref = _rows(start, idx) if cfg.rollback_reference == "epoch_start" else None
                step = self.actor_step(batch, idx, w_c, ref)
                steps += 1
                projections += int(step["projected"])
                rollbacks += int(step["rolled_back"])
                for key in sums:
                    sums[key] += step[key]
        with torch.no_grad():
            kl = float(minibatch_kl(start, self.actor.distribution(batch.obs), cfg.kl_convention))
        info = {key: value / max(steps, 1) for key, value in sums.items()}
        info.update(
            w_c=w_c,
            c=batch.ep_cost - self.cost_limit,
            kl=kl,
            actor_steps=float(steps),
            projections=float(projections),
            projection_rate=projections / max(steps, 1),
            rollbacks=float(rollbacks),
            rollback_rate=rollbacks / max(steps, 1),
            kfac_stats_updates=float(self.kfac.stats_updates - stats_before),
            kfac_refreshes=float(self.kfac.inverse_refreshes - refresh_before),
            loss_v_r=loss_v_r,
            loss_v_c=loss_v_c,
            critic_steps=float(steps),
        )
        return info

    def actor_step(
        self, batch: Batch, idx: Tensor, w_c: float, ref: Distribution | None
    ) -> dict[str, float]:
        """One blended natural-gradient step on the minibatch ``idx``, rolled back if the
        minibatch KL from ``ref`` (None: the parameters before this step) exceeds ε_KL."""
        cfg = self.config
        obs, act = batch.obs[idx], batch.act[idx]
        params = [p for p in self.actor.parameters() if p.requires_grad]
        dist = self.actor.distribution(obs)
        logp = dist.log_prob(act)
        if logp.ndim == 2:
            logp = logp.sum(-1)
        ratio = torch.exp(logp - batch.logp[idx])
        g_r = flat_grad((ratio * batch.adv_r[idx]).mean(), params, retain_graph=True)
        g_c = -flat_grad((ratio * batch.adv_c[idx]).mean(), params)
        d_r, d_c = self.kfac.natural_gradient(torch.stack([g_r, g_c]))
        cos = float(torch.dot(d_r, d_c) / (d_r.norm() * d_c.norm() + 1e-12))
        d_r, d_c, projected = project_conflict(d_r, d_c, cfg.projection, w_c)
        direction = blend(d_r, d_c, w_c)
        # Damped, dᵀ(F̂ + γI)d: ACKTR's vᵀg for d = v, and it charges the directions the
        # factors see as flat (K-FAC underestimates the true KL of a step, see the tests).
        quad = float(self.kfac.quadratic_form(direction, damped=True))
        nu = trust_region_scale(quad, cfg.kl_clip, cfg.lr, cfg.nu_max)
        before = _rows(dist, slice(None))
        theta_prev = flat_params(self.actor)
        set_flat_params(self.actor, theta_prev + (cfg.lr * nu) * direction)
        with torch.no_grad():
            new = self.actor.distribution(obs)
            kl_step = float(minibatch_kl(before, new, cfg.kl_convention))
            kl = kl_step if ref is None else float(minibatch_kl(ref, new, cfg.kl_convention))
        rolled_back = not math.isfinite(kl) or kl > cfg.rollback_kl
        if rolled_back:
            set_flat_params(self.actor, theta_prev)
        finite = math.isfinite(nu) and math.isfinite(kl)
        return {
            "projected": float(projected),
            "rolled_back": float(rolled_back),
            "nu": nu if finite else 0.0,
            "kl_minibatch": kl if finite else 0.0,
            "kl_step": kl_step if finite else 0.0,
            "predicted_kl": 0.5 * (cfg.lr * nu) ** 2 * quad if finite else 0.0,
            "cos_rc": cos if math.isfinite(cos) else 0.0,
        }

    # ---- checkpointing ------------------------------------------------------------------

    def extra_state(self) -> dict[str, Any]:
        return {"kfac": self.kfac.state_dict(), "kfac_steps": self.kfac_steps}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.kfac.load_state_dict(state["kfac"])
        self.kfac_steps = int(state["kfac_steps"])
