"""KFCPO: Kronecker-Factored Approximated Constrained Policy Optimization (Lim & Yoo, 2025).

Only the abstract and a secondary digest of the paper are public, no code
(docs/algorithms.md#kfcpo).
Theirs [M]: separate K-FAC natural gradients for reward and cost, sigmoid margin blending,
projection on conflict, and a minibatch KL check that rejects a step θ → θ' when
KL(π_θ' ‖ π_θ) > ε_KL and restores θ. Every number and most details are [L] (tagged in
:class:`KFCPOConfig`). One epoch of the default variant (``"large-batch"``) on the OmniSafe
batch B (A_r standardised, A_c centred, Ĵc = windowed mean episode cost, d = cost limit):

    w_c = σ(k·(Ĵc/d − λ)),  w_r = 1 − w_c                   margin weights, k and λ unit-free
    for each of K minibatches M_j (K = actor_minibatches, one pass):
        A_l, G_l ← EMA with the statistics of M_j at the current θ; eigendecompose
        g_r = ∇ mean_M(ρ·A_r),  g_c = −∇ mean_M(ρ·A_c)       (ascent on reward, descent on cost)
        d_r = F̂⁻¹g_r / ‖·‖_F̂,  d_c = F̂⁻¹g_c / ‖·‖_F̂        (unit K-FAC-Fisher length each)
        if ⟨d_r, d_c⟩_F̂ < 0: d_c ← d_c − w_r·⟨d_c,d_r⟩_F̂/‖d_r‖²_F̂ · d_r      (projection)
        d = w_r·d_r + w_c·d_c
        t = the largest step with  KL̄₀ + t·∇KL̄₀ᵀd + ½t²·dᵀF̄d ≤ f·δ·(j+1)/K        (on B)
                              and  ½t²·dᵀF̄_M d ≤ ε_KL                           (on M)
        θ' = θ + t·d;  rolled back (θ restored bit for bit) if KL̄(π_θ' ‖ π_θ) > ε_KL on M
        (the seed's check) or KL̄(π_θk ‖ π_θ') > δ on B (epoch bound), then retried shorter
    then the critics, as OmniSafe's second-order methods (update_iters passes, batch_size)

with ρ = π_θ(a|s)/π_θk(a|s), KL̄₀ = KL̄(π_θk ‖ π_θ), F̄ the exact Fisher of KL̄ at θ (one
Fisher-vector product on B and one on M: closed form, no iterative solver). Every KL̄ is the
baselines' (``kl_mean``: mean over states and action dimensions) and δ their target_kl, so
KFCPO and CPO/PCPO/C-TRPO move the policy by the same trust region per epoch. K-FAC gives the
directions, the exact Fisher the step size: K-FAC's quadratic form underestimates a step's
true KL 2.6–6× (docs/algorithms.md#kfcpo-measured-behaviour; ``kfac_predicted_kl`` vs
``kl_step`` in the diagnostics).

Why the [L] choices (measured; tests/algorithms/test_kfcpo.py, scripts/bench/kfcpo.py):

* Ten large steps instead of 157 × 10 small ones sized by the K-FAC-predicted KL, 99% of which
  were rolled back once the drift reached ε_KL. The linear ramp of the epoch's KL to f·δ ends
  near δ whatever the alignment of successive steps; the checks then reject almost nothing.
* k, λ act on Ĵc/d and d_r, d_c have unit length: the old k was in 1/cost units, and A_c is
  only centred, so the raw d_c scales with the cost units — both needed retuning per CMDP.
* The Fisher metric: ⟨d_r, d_c⟩_F̂ = d_rᵀg_c < 0 ⇔ the reward step raises the cost surrogate,
  and the projected d_c leaves the reward surrogate unchanged, to first order.
* Projection strength w_r: the digest's rule [M] (s = 1) when safe, none at the limit. With unit
  directions at cosine c < 0 the step's cost descent is w_r·c + w_c·(1 − s·c²). For s = 1 it
  vanishes at w_c* = |c|/(|c| + 1 − c²) → 1 as c → −1, which is the constrained optimum (KKT:
  ∇J_r ∥ ∇J_c): the tabular CMDP settled at 1.3–1.5·d. For s = w_r, w_c* ∈ [0.37, 0.62] for
  c ∈ [−1, −0.5]: Ĵc settles at (λ ± 0.04)·d, the margin as designed (measured 0.80–0.87·d).

``variant="minibatch-v0"`` is the earlier loop (docs/algorithms.md#kfcpo-minibatch-v0):
update_iters passes of batch_size minibatches with interleaved critic steps, EMA factors
refreshed every T_s/T_f steps, a step of K-FAC-predicted KL κ, a rollback test against π_θk
summed over action dimensions, k in 1/cost units, Euclidean 'cost' projection; it restores
those defaults for keys not given.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor
from torch.distributions import Categorical, Distribution, Normal, kl_divergence

from safebench.core.base import OnPolicyConfig
from safebench.core.kfac import KFAC
from safebench.core.onpolicy import Batch, OnPolicyAlgorithm
from safebench.core.optim import (
    fisher_vector_product,
    flat_grad,
    flat_params,
    frozen_distribution,
    kl_mean,
    set_flat_params,
)
from safebench.core.policies import GaussianActor

__all__ = [
    "KFCPO",
    "MINIBATCH_V0_DEFAULTS",
    "KFCPOConfig",
    "Projection",
    "Variant",
    "blend",
    "kl_budget_scale",
    "margin_weight",
    "minibatch_kl",
    "project_conflict",
    "trust_region_scale",
]

Projection = Literal["cost-soft", "cost", "pcgrad", "dominant", "none"]
Variant = Literal["large-batch", "minibatch-v0"]

#: The defaults of ``variant="minibatch-v0"`` where they differ from the large-batch ones.
MINIBATCH_V0_DEFAULTS: dict[str, Any] = {
    "margin_k": 0.5,
    "margin_units": "cost",
    "normalize_directions": False,
    "projection": "cost",
    "projection_metric": "euclidean",
    "kfac_decay": 0.99,
}


class KFCPOConfig(OnPolicyConfig):
    """KFCPO hyperparameters (docs/algorithms.md#kfcpo-defaults); the paper gives none beyond
    ε_KL's range."""

    variant: Variant = Field(
        "large-batch",
        description="[L] 'large-batch' or 'minibatch-v0' (the earlier loop, with its defaults)",
    )
    rollback_kl: float = Field(
        0.01, gt=0, description="[M] ε_KL: a step with KL(π_θ' ‖ π_θ) above it is rolled back"
    )
    target_kl: float = Field(
        0.01,
        gt=0,
        description="[L] δ, bound of the epoch's KL̄(π_θk ‖ π_θ): CPO/PCPO/C-TRPO's target_kl",
    )
    target_fill: float = Field(
        0.95,
        gt=0,
        le=1,
        description="[L] the last step aims at f·δ: its model errs by ~10% of δ/K either way",
    )
    step_retries: int = Field(
        3,
        ge=0,
        description="[L] retries of a rolled-back step, shrunk by min(½, 0.9/√(KL/bound))",
    )
    actor_minibatches: int = Field(10, ge=1, description="[L] K, K-FAC steps per epoch")
    margin_k: float = Field(
        12.5,
        gt=0,
        description="[L] k per unit of Ĵc/d: the spec's 0.5 per cost unit at d = 25 (v0: 0.5)",
    )
    margin_lambda: float = Field(
        0.8, gt=0, description="[L] λ, margin centre λ·d where w_c = ½; spec suggests 0.8"
    )
    margin_units: Literal["limit", "cost"] = Field(
        "limit", description="[L] k per unit of Ĵc/d ('limit') or per cost unit ('cost', v0)"
    )
    normalize_directions: bool = Field(
        True, description="[L] d_r, d_c scaled to unit K-FAC-Fisher length (v0: False)"
    )
    projection: Projection = Field(
        "cost-soft",
        description=(
            "[L] 'cost-soft': the digest's 'cost' with strength w_r; [M] 'cost': d_c ⊥ d_r "
            "(digest, v0); [L] 'pcgrad' both, 'dominant' the lower-weighted one, or 'none'"
        ),
    )
    projection_metric: Literal["fisher", "euclidean"] = Field(
        "fisher", description="[L] inner product of conflict test and projection (v0: euclidean)"
    )
    kfac_decay: float = Field(
        0.5,
        ge=0,
        lt=1,
        description="[L] EMA decay of A, G per step: ~3 large minibatches (v0: ACKTR's 0.99)",
    )
    kfac_damping: float = Field(1e-2, gt=0, description="[L] K-FAC damping γ; ACKTR damping 1e-2")
    kfac_eig_floor: float = Field(
        1e-6, ge=0, description="[L] eigenvalues of A, G below this zeroed; ACKTR kfac.py 1e-6"
    )
    kfac_fisher: Literal["sampled", "exact"] = Field(
        "sampled",
        description="[M] G from log π of sampled actions (ACKTR); [L] 'exact': expectation",
    )
    # minibatch-v0 only
    rollback_reference: Literal["epoch_start", "previous"] = Field(
        "epoch_start", description="[L] v0: π_ref of the rollback test, π_θk or θ before the step"
    )
    kl_convention: Literal["sum", "mean"] = Field(
        "sum", description="[L] v0: rollback KL summed or averaged over action dims"
    )
    stats_every: int = Field(1, ge=1, description="[L] v0: T_s, factor update period; ACKTR Ts 1")
    inverse_every: int = Field(10, ge=1, description="[L] v0: T_f, eigh period; ACKTR Tf 10")
    kl_clip: float = Field(
        0.001, gt=0, description="[L] v0: κ, K-FAC-predicted KL of a step; ACKTR kl_clip 0.001"
    )
    nu_max: float = Field(1.0, gt=0, description="[L] v0: cap on the scale ν; ACKTR 1")
    lr: float = Field(0.25, gt=0, description="[L] v0: η, base step size; ACKTR lr 0.25")

    @model_validator(mode="before")
    @classmethod
    def _variant_defaults(cls, data: Any) -> Any:
        """``variant: minibatch-v0`` brings that loop's defaults for every key not given."""
        if isinstance(data, dict) and data.get("variant") == "minibatch-v0":
            return {**MINIBATCH_V0_DEFAULTS, **data}
        return data


# --------------------------------------------------------------------------------------------
# Pure math
# --------------------------------------------------------------------------------------------


def margin_weight(
    ep_cost: float,
    cost_limit: float,
    k: float,
    lam: float,
    units: Literal["limit", "cost"] = "cost",
) -> float:
    """Cost weight ``w_c = 1 / (1 + exp(−x))`` ∈ (0, 1), ``w_r = 1 − w_c``, with

        x = k·(Ĵc − λ·d)        (units="cost": k in 1/cost units)
        x = k·(Ĵc/d − λ)        (units="limit": unit-free; d = 0 falls back to cost units)

    ½ at ``Ĵc = λd``, increasing in Ĵc; from 0.12 to 0.88 over ``λd ± 2/k`` (cost units) or
    ``(λ ± 2/k)·d`` (limit units).
    """
    scale = cost_limit if units == "limit" and cost_limit > 0 else 1.0
    x = k * (ep_cost - lam * cost_limit) / scale
    # Two branches so that exp never overflows for a far-off Ĵc.
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


Inner = Any  # (Tensor, Tensor) -> Tensor, an inner product on flat vectors


def _remove(v: Tensor, u: Tensor, inner: Inner, strength: float = 1.0) -> Tensor:
    """``v − s·(⟨v,u⟩/⟨u,u⟩)·u``: for s = 1, v projected onto the hyperplane orthogonal to u
    (u ≠ 0); for s < 1 only that share of its component along u is removed."""
    return v - (strength * inner(v, u) / inner(u, u)) * u


def project_conflict(
    d_r: Tensor, d_c: Tensor, mode: Projection, w_c: float, inner: Inner = torch.dot
) -> tuple[Tensor, Tensor, bool]:
    """Remove the conflicting component when ``⟨d_r, d_c⟩ < 0`` (flat ``(P,)`` vectors; both
    are improvement directions, so a reward step then raises the cost to first order).
    ``inner``: Euclidean by default, KFCPO's default passes the K-FAC Fisher one. Modes:

    * ``cost``: ``d_c ← d_c − ⟨d_c,d_r⟩/⟨d_r,d_r⟩·d_r`` (reward keeps its direction);
    * ``cost-soft``: the same with strength ``w_r = 1 − w_c``; ``w_c`` of the conflict remains;
    * ``pcgrad``: both, each against the other's original direction (Yu et al. 2020);
    * ``dominant``: the one with the smaller weight (d_c if ``w_c < ½``, else d_r);
    * ``none``: no projection.

    Otherwise ``⟨d_r, d_c⟩ ≥ 0`` afterwards (= 0 one-sided; pcgrad: ``−p(1 − p²/(‖d_r‖²‖d_c‖²))``
    with ``p < 0`` the original product). Returns ``(d_r, d_c, projected)``.
    """
    if mode == "none" or float(inner(d_r, d_c)) >= 0.0:
        return d_r, d_c, False
    if mode == "cost-soft":
        return d_r, _remove(d_c, d_r, inner, 1.0 - w_c), True
    if mode == "cost" or (mode == "dominant" and w_c < 0.5):
        return d_r, _remove(d_c, d_r, inner), True
    if mode == "dominant":
        return _remove(d_r, d_c, inner), d_c, True
    return _remove(d_r, d_c, inner), _remove(d_c, d_r, inner), True


def blend(d_r: Tensor, d_c: Tensor, w_c: float) -> Tensor:
    """``d = (1 − w_c)·d_r + w_c·d_c``."""
    return (1.0 - w_c) * d_r + w_c * d_c


def kl_budget_scale(
    kl0: float,
    slope: float,
    quad: float,
    target: float,
    step_max: float,
    quad_step: float | None = None,
) -> float:
    """The largest ``t ≥ 0`` with ``m(t) = kl0 + slope·t + ½·quad·t² ≤ target`` and
    ``½·quad_step·t² ≤ step_max`` (``quad_step`` defaults to ``quad``): the step ``t·d`` that
    brings the local model of ``KL̄(π_θk ‖ π_{θ+td})`` to ``target`` with a bounded step KL.

    ``kl0``: KL spent; ``slope = ∇KL̄ᵀd`` (0 at θ = θ_k); ``quad = dᵀF̄d`` (exact Fisher at θ,
    the KL's Hessian up to O(√kl0)). With ``r = target − kl0 > 0``: the stable root
    ``t = 2r / (slope + √(slope² + 2·quad·r))``. Overspent (r ≤ 0, model error) and lowering
    the KL (slope < 0): the far crossing, then capped (m(t) < kl0); else 0. ``quad ≤ 0``
    (d = 0) gives 0, non-finite inputs NaN (the checks then reject the step).
    """
    quad_step = quad if quad_step is None else quad_step
    if not all(math.isfinite(x) for x in (kl0, slope, quad, target, quad_step)):
        return math.nan
    if quad <= 0.0:
        return 0.0
    room = target - kl0
    disc = slope * slope + 2.0 * quad * room
    if disc < 0.0:
        return 0.0  # the model's minimum along d is above the target
    root = math.sqrt(disc)
    if room > 0.0:
        t = 2.0 * room / (slope + root)  # root > |slope|: positive
    elif slope < 0.0:
        t = (-slope + root) / quad  # the model dips to the target and back: its far crossing
    else:
        t = 0.0
    return min(t, math.sqrt(2.0 * step_max / quad_step)) if quad_step > 0 else t


def trust_region_scale(quad: float, kl_clip: float, lr: float, nu_max: float) -> float:
    """minibatch-v0's ``ν = min(ν_max, √(2κ / (η²·q)))`` for ``q = dᵀ(F̂ + γI)d``: the step
    ``η·ν·d`` then has K-FAC-predicted KL ``½(ην)²dᵀF̂d ≤ κ`` (ACKTR's rule, with κ the bound
    itself rather than 2κ). ``q = 0`` gives ``ν_max``, a non-finite ``q`` NaN (rolled back).
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
    averaged (``mean``: :func:`safebench.core.optim.kl_mean`'s convention) over action
    dimensions; categorical: one KL per state.
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

_STEP_KEYS = ("kl_step", "kl_step_predicted", "kfac_predicted_kl", "kl_epoch_step", "t")


class KFCPO(OnPolicyAlgorithm):
    """KFCPO: blended, projected K-FAC natural-gradient steps with minibatch KL rollback.

    Supports the Gaussian actor and, with the same hooks, the categorical one (G then comes
    from log π of sampled categorical actions).
    """

    name = "kfcpo"
    Config = KFCPOConfig
    critics_in_actor_update = True  # large-batch: after its steps; minibatch-v0: interleaved
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
        # K-FAC steps over the whole run: minibatch-v0's T_s and T_f count across epochs.
        self.kfac_steps = 0
        # KL̄ = (1/act_dim)·KL of the joint for the Gaussian actor, the KL itself otherwise.
        self.kl_dims = self.actor.act_dim if isinstance(self.actor, GaussianActor) else 1

    def update_actor(self, batch: Batch) -> dict[str, float]:
        if self.config.variant == "minibatch-v0":
            return self._update_minibatch_v0(batch)
        return self._update_large_batch(batch)

    # ---- large-batch (default) ----------------------------------------------------------

    def _update_large_batch(self, batch: Batch) -> dict[str, float]:
        cfg = self.config
        units = cfg.margin_units
        w_c = margin_weight(batch.ep_cost, self.cost_limit, cfg.margin_k, cfg.margin_lambda, units)
        start = frozen_distribution(self.actor, batch.obs)  # π_θk on the whole batch
        loss_before = self._reward_loss(batch)
        parts = self.minibatches(len(batch), -(-len(batch) // cfg.actor_minibatches))
        steps = []
        for j, idx in enumerate(parts):
            # Factors at the current θ on this minibatch: a step uses what it was refreshed on.
            self.kfac.update_stats(batch.obs[idx], self.generator)
            self.kfac.refresh_inverse()
            self.kfac_steps += 1
            target = cfg.target_kl * cfg.target_fill * (j + 1) / len(parts)
            steps.append(self.budget_step(batch, idx, w_c, start, target))
        with torch.no_grad():
            kl = float(minibatch_kl(start, self.actor.distribution(batch.obs), "mean"))
        n = len(steps)
        # every proposal that failed a check was rolled back; a step makes up to
        # 1 + step_retries proposals and is rolled back if none passed
        rollbacks = sum(s["rejections"] for s in steps)
        proposals = rollbacks + sum(1.0 - s["rolled_back"] for s in steps)
        info = {key: sum(s[key] for s in steps) / n for key in _STEP_KEYS}
        info.update(
            {f"{key}_max": max(s[key] for s in steps) for key in ("kl_step", "kl_epoch_step")}
        )
        true, pred, kfac = (info[k] for k in ("kl_step", "kl_step_predicted", "kfac_predicted_kl"))
        info.update(
            w_c=w_c,
            c=batch.ep_cost - self.cost_limit,
            kl=kl,
            kl_true_over_predicted=true / pred if pred > 0 else 0.0,
            kl_true_over_kfac=true / kfac if kfac > 0 else 0.0,
            surrogate_gain=loss_before - self._reward_loss(batch),
            actor_steps=float(n),
            projections=sum(s["projected"] for s in steps),
            projection_rate=sum(s["projected"] for s in steps) / n,
            rollbacks=rollbacks,
            rollback_rate=rollbacks / proposals,
            steps_rolled_back=sum(s["rolled_back"] for s in steps),
            rollbacks_step_kl=sum(s["over_step_kl"] for s in steps),
            rollbacks_epoch_kl=sum(s["over_epoch_kl"] for s in steps),
            cos_rc=sum(s["cos_rc"] for s in steps) / n,
            kfac_stats_updates=float(n),
            kfac_refreshes=float(n),
        )
        info.update(self.update_critics(batch))
        return info

    @torch.no_grad()
    def _reward_loss(self, batch: Batch) -> float:
        """``L_r = −mean(ρ·A_r)`` on the whole batch; its decrease is the epoch's reward-
        surrogate gain (CPO's ``loss_r_before − loss_r_after``)."""
        ratio = torch.exp(self.actor.log_prob(batch.obs, batch.act) - batch.logp)
        return -float((ratio * batch.adv_r).mean())

    def directions(self, batch: Batch, idx: Tensor, w_c: float) -> tuple[Tensor, bool, float]:
        """The blended direction ``d`` ``(P,)`` on minibatch ``idx``, whether a conflict was
        projected, and cos∠(d_r, d_c) before projection (in the projection metric)."""
        cfg = self.config
        obs, act = batch.obs[idx], batch.act[idx]
        params = [p for p in self.actor.parameters() if p.requires_grad]
        ratio = torch.exp(self.actor.log_prob(obs, act) - batch.logp[idx])
        g_r = flat_grad((ratio * batch.adv_r[idx]).mean(), params, retain_graph=True)
        g_c = -flat_grad((ratio * batch.adv_c[idx]).mean(), params)
        d_r, d_c = self.kfac.natural_gradient(torch.stack([g_r, g_c]))
        kfac = self.kfac

        def fisher_inner(u: Tensor, v: Tensor) -> Tensor:
            return torch.dot(u, kfac.product(v, damped=True))

        inner = fisher_inner if cfg.projection_metric == "fisher" else torch.dot
        if cfg.normalize_directions:
            # ‖d‖_F̂ = √(gᵀ(F̂+γI)⁻¹g); a zero gradient stays zero
            d_r = d_r / max(float(self.kfac.quadratic_form(d_r, damped=True)) ** 0.5, 1e-12)
            d_c = d_c / max(float(self.kfac.quadratic_form(d_c, damped=True)) ** 0.5, 1e-12)
        norms = float(inner(d_r, d_r) * inner(d_c, d_c)) ** 0.5
        cos = float(inner(d_r, d_c)) / norms if norms > 0 else 0.0
        d_r, d_c, projected = project_conflict(d_r, d_c, cfg.projection, w_c, inner)
        return blend(d_r, d_c, w_c), projected, cos

    def budget_step(
        self, batch: Batch, idx: Tensor, w_c: float, start: Distribution, target: float
    ) -> dict[str, float]:
        """One K-FAC step on minibatch ``idx`` sized so that the local model of
        ``KL̄(π_θk ‖ π_θ')`` reaches ``target`` (:func:`kl_budget_scale`), rolled back (θ
        restored bit for bit) if ``KL̄(π_θ' ‖ π_θ) > ε_KL`` on the minibatch (the seed's check)
        or ``KL̄(π_θk ‖ π_θ') > δ`` on the whole batch (the baselines' bound, as CPO's line
        search). ``start`` is π_θk on the whole batch."""
        cfg = self.config
        obs = batch.obs[idx]
        direction, projected, cos = self.directions(batch, idx, w_c)
        params = [p for p in self.actor.parameters() if p.requires_grad]
        # The model of the epoch's KL on B, where its bound is checked: KL spent, its slope
        # (∇KL̄(π_θk ‖ π_θ) vanishes at θ_k) and the curvature dᵀF̄d.
        kl0_t = kl_mean(self.actor, batch.obs, start)
        kl0 = float(kl0_t.detach())
        slope = float(flat_grad(kl0_t, params) @ direction) if kl0 > 0 else 0.0
        quad = float(direction @ fisher_vector_product(self.actor, batch.obs, 0.0)(direction))
        # the step's own KL is checked on M: its cap uses M's Fisher
        quad_m = float(direction @ fisher_vector_product(self.actor, obs, 0.0)(direction))
        t = t_first = kl_budget_scale(kl0, slope, quad, target, cfg.rollback_kl, quad_m)
        before = frozen_distribution(self.actor, obs)
        theta = flat_params(self.actor)
        first: tuple[float, float] | None = None
        rejected = over_step = over_epoch = 0
        for _ in range(1 + cfg.step_retries):
            set_flat_params(self.actor, theta + t * direction)
            with torch.no_grad():
                kl_step = float(minibatch_kl(self.actor.distribution(obs), before, "mean"))
                kl_epoch = float(minibatch_kl(start, self.actor.distribution(batch.obs), "mean"))
            first = first or (kl_step, kl_epoch)
            step_ok, epoch_ok = kl_step <= cfg.rollback_kl, kl_epoch <= cfg.target_kl
            if step_ok and epoch_ok:
                break
            set_flat_params(self.actor, theta)  # the seed's rollback (also for NaN)
            rejected += 1
            over_step += not step_ok
            over_epoch += not epoch_ok
            # Retry smaller: the quadratic model fails far out (a saturating softmax has
            # near-zero Fisher along d, so its t is huge); shrink by the measured overshoot.
            over = max(kl_step / cfg.rollback_kl, kl_epoch / cfg.target_kl)
            t *= min(0.5, 0.9 / math.sqrt(over)) if math.isfinite(over) else 0.5
        assert first is not None
        # diagnostics of the first proposal: how well the exact and K-FAC models sized it
        kl_step, kl_epoch = first
        finite = math.isfinite(t_first) and math.isfinite(kl_step) and math.isfinite(kl_epoch)
        kfac_quad = float(self.kfac.quadratic_form(direction)) / self.kl_dims if finite else 0.0
        half_t2 = 0.5 * t_first * t_first if finite else 0.0
        return {
            "projected": float(projected),
            "rolled_back": float(rejected == 1 + cfg.step_retries),
            "rejections": float(rejected),
            "over_step_kl": float(over_step),
            "over_epoch_kl": float(over_epoch),
            "t": t_first if finite else 0.0,
            "kl_step": kl_step if finite else 0.0,
            "kl_step_predicted": half_t2 * quad_m,
            "kfac_predicted_kl": half_t2 * kfac_quad,
            "kl_epoch_step": kl_epoch if finite else 0.0,
            "cos_rc": cos if math.isfinite(cos) else 0.0,
        }

    # ---- minibatch-v0 -------------------------------------------------------------------

    def _update_minibatch_v0(self, batch: Batch) -> dict[str, float]:
        cfg = self.config
        units = cfg.margin_units
        w_c = margin_weight(batch.ep_cost, self.cost_limit, cfg.margin_k, cfg.margin_lambda, units)
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
        """minibatch-v0: one blended natural-gradient step on the minibatch ``idx`` of
        K-FAC-predicted KL κ, rolled back if the minibatch KL from ``ref`` (None: the
        parameters before this step) exceeds ε_KL."""
        cfg = self.config
        obs = batch.obs[idx]
        direction, projected, cos = self.directions(batch, idx, w_c)
        # Damped, dᵀ(F̂ + γI)d: ACKTR's vᵀg for d = v, and it charges the directions the
        # factors see as flat (K-FAC underestimates the true KL of a step, see the tests).
        quad = float(self.kfac.quadratic_form(direction, damped=True))
        nu = trust_region_scale(quad, cfg.kl_clip, cfg.lr, cfg.nu_max)
        before = frozen_distribution(self.actor, obs)
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
