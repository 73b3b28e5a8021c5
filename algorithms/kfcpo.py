"""KFCPO: Kronecker-Factored Approximated Constrained Policy Optimization (Lim & Yoo, 2025).

Only the abstract and a secondary digest of the paper are public and no code is (ALGORITHMS.md
§3): the structure below is theirs [M] — separate K-FAC natural gradients for reward and cost,
sigmoid margin blending, projection on conflict, and a minibatch KL check that rejects a step
θ → θ' when KL(π_θ' ‖ π_θ) > ε_KL and restores θ — and every number and most details are
inferred [L], tagged as such in :class:`KFCPOConfig`. One epoch of the default variant
(``"large-batch"``), on the OmniSafe on-policy batch (A_r standardised, A_c centred, Ĵc =
windowed mean undiscounted episode cost, d = cost limit):

    w_c = σ(k·(Ĵc/d − λ)),  w_r = 1 − w_c                   margin weights, k and λ unit-free
    split the batch into K minibatches (K = actor_minibatches); for minibatch j = 0 … K−1:
        A_l, G_l ← EMA with the statistics of M_j at the current θ; eigendecompose   (fresh)
        g_r = ∇ mean_M(ρ·A_r),  g_c = −∇ mean_M(ρ·A_c)       (ascent on reward, descent on cost)
        d_r = F̂⁻¹g_r / ‖·‖_F̂,  d_c = F̂⁻¹g_c / ‖·‖_F̂        (unit K-FAC-Fisher length each)
        if ⟨d_r, d_c⟩_F̂ < 0: d_c ← d_c − w_r·⟨d_c,d_r⟩_F̂/‖d_r‖²_F̂ · d_r      (projection)
        d = w_r·d_r + w_c·d_c
        t = the largest step with  KL̄₀ + t·∇KL̄₀ᵀd + ½t²·dᵀF̄d ≤ f·δ·(j+1)/K         (on B)
                              and  ½t²·dᵀF̄_M d ≤ ε_KL                             (on M)
        θ' = θ + t·d;  reject (θ' → θ, bit for bit) if KL̄(π_θ' ‖ π_θ) > ε_KL on M  (the seed's)
                                              or KL̄(π_θk ‖ π_θ') > δ on B  (epoch bound)
    then the critics, as OmniSafe's second-order methods (update_iters passes, batch_size)

with ρ = π_θ(a|s)/π_θk(a|s), B the epoch's batch, KL̄₀ = KL̄(π_θk ‖ π_θ) and F̄ the exact
Fisher of KL̄ at θ (one Fisher-vector product each on B and on M,
:func:`safebench.core.optim.fisher_vector_product`; closed form, no iterative solver). Every KL̄ here
follows the baselines' convention (``kl_mean``: mean over states and action dimensions), and δ
is their ``target_kl`` (0.01), so KFCPO and CPO/PCPO/C-TRPO move the policy by the same trust
region per epoch. K-FAC gives the *directions*; the *step size* comes from the exact Fisher,
because K-FAC's own quadratic form underestimates the true KL of a step 2.6–6× on real batches
(ALGORITHMS.md §3.12; ``kfac_predicted_kl`` against ``kl_step`` in the diagnostics shows it).

Why each [L] choice (measured on SafetyHalfCheetahVelocity-v1 and the built-in CMDPs; see
``tests/algorithms/test_kfcpo.py``):

* Ten large minibatches instead of 157 × 10 small ones: the old loop's steps were sized by the
  predicted KL and rolled back 99% of the time once the drift reached ε_KL.
* The step is sized to a linearly growing share of the epoch budget δ, measured from π_θk with
  the exact local model (KL̄₀, its slope and the exact Fisher), so the epoch ends near δ
  whatever the alignment of successive steps; the two checks then reject almost nothing.
* k and λ act on Ĵc/d: the old k was in 1/cost units and had to be retuned per CMDP. d_r and
  d_c are normalised to unit K-FAC-Fisher length: A_c is only centred (OmniSafe), so the raw
  cost direction scales with the cost units and the blend with it.
* Conflict and projection use the K-FAC Fisher inner product ⟨u, v⟩_F̂ = uᵀ(F̂ + γI)v, in
  which ⟨d_r, d_c⟩_F̂ = d_rᵀg_c: conflict ⇔ the reward step raises the cost surrogate to first
  order, and the projected d_c leaves the reward surrogate unchanged to first order. (The
  Euclidean test on natural directions disagrees with it in sign on ~9% of minibatches.)
* The projection has strength w_r (``cost-soft``): the digest's rule [M] (d_c projected
  orthogonal to d_r) when safe, fading to none at the limit. Where the cost settles: with
  unit directions at cosine c < 0 (Fisher metric), the step's first-order cost descent is
  w_r·c + w_c·(1 − s·c²) for projection strength s. With the hard rule (s = 1) it vanishes
  at w_c* = |c|/(|c| + 1 − c²) → 1 as c → −1 — and c → −1 is the constrained optimum (KKT:
  ∇J_r ∥ ∇J_c), where the projection removes all of d_c: measured, the tabular CMDP settled
  at 1.3–1.5·d. With s = w_r, w_c* stays in [0.37, 0.62] for c ∈ [−1, −0.5], i.e. Ĵc/d in
  [λ − 0.04, λ + 0.04] at k = 12.5: the margin λ·d is where it settles, as designed
  (measured 0.8–0.87·d on four CMDPs, tests/algorithms/test_kfcpo.py). 'dominant' also
  settles at λ·d but kept σ high (return 15% short of the frontier at H = 100).

``variant="minibatch-v0"`` is the loop this file had before (ALGORITHMS.md §3.2): update_iters
passes of batch_size-state minibatches, EMA factors refreshed every T_s/T_f steps, a step of
K-FAC-predicted KL κ, a rollback test against π_θk summed over action dimensions, and k in 1/cost
units. Choosing it restores all of that loop's defaults for the keys not given (see
:data:`MINIBATCH_V0_DEFAULTS`).
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
    """KFCPO hyperparameters (ALGORITHMS.md §3.10); the paper gives none beyond ε_KL's range."""

    variant: Variant = Field(
        "large-batch",
        description=(
            "[L] 'large-batch': actor_minibatches K-FAC steps per epoch sized by the exact "
            "Fisher to the epoch budget target_kl; 'minibatch-v0': the earlier loop (module "
            "docstring), whose defaults it restores for every key not given"
        ),
    )
    rollback_kl: float = Field(
        0.01,
        gt=0,
        description="[M] ε_KL, a step's KL(π_θ' ‖ π_θ) above which it is rolled back; 0.005-0.01",
    )
    target_kl: float = Field(
        0.01,
        gt=0,
        description=(
            "[L] δ, the epoch's KL̄(π_θk ‖ π_θ) budget and bound (large-batch); CPO/PCPO/"
            "C-TRPO's target_kl 0.01 under their convention (mean over action dims)"
        ),
    )
    target_fill: float = Field(
        0.95,
        gt=0,
        le=1,
        description=(
            "[L] share of δ the last step aims at: its local model errs by ~±10% of one "
            "step's increment δ/K, which would otherwise cross the bound δ every other epoch"
        ),
    )
    kl_model_states: Literal["batch", "minibatch"] = Field(
        "batch",
        description=(
            "[L] states of the step-size model (KL spent, its slope, one exact Fisher-vector "
            "product): the whole batch, where the epoch bound is checked, or the minibatch"
        ),
    )
    step_retries: int = Field(
        3,
        ge=0,
        description=(
            "[L] after a rolled-back step, retries on the same minibatch with the step shrunk "
            "by the measured overshoot (min(½, 0.9/√(KL/bound))); 0: the seed's plain rollback"
        ),
    )
    actor_minibatches: int = Field(
        10, ge=1, description="[L] K, K-FAC steps per epoch (large-batch), one minibatch each"
    )
    margin_k: float = Field(
        12.5,
        gt=0,
        description=(
            "[L] k, sigmoid steepness in units of 1/margin_units: 12.5 per unit of Ĵc/d is the "
            "spec's 0.5 per cost unit at d = 25 (minibatch-v0: 0.5 per cost unit)"
        ),
    )
    margin_lambda: float = Field(
        0.8, gt=0, description="[L] λ, margin centre λ·d where w_c = ½; spec suggests 0.8"
    )
    margin_units: Literal["limit", "cost"] = Field(
        "limit",
        description=(
            "[L] 'limit': w_c = σ(k(Ĵc/d − λ)), the same transition for every cost scale and "
            "limit; 'cost': σ(k(Ĵc − λd)) with k in 1/cost units (minibatch-v0)"
        ),
    )
    normalize_directions: bool = Field(
        True,
        description=(
            "[L] scale d_r and d_c to unit K-FAC-Fisher length before projecting and blending, "
            "so w_c means the same whatever the cost units (minibatch-v0: False)"
        ),
    )
    projection: Projection = Field(
        "cost-soft",
        description=(
            "[L] on conflict: 'cost-soft' removes the share w_r = 1 − w_c of d_c's component "
            "along d_r (full projection far from the limit, none at it); [M] 'cost' projects "
            "d_c orthogonal to d_r (digest; minibatch-v0); [L] 'pcgrad' projects each onto the "
            "other's normal plane; 'dominant' projects the lower-weighted one; 'none'"
        ),
    )
    projection_metric: Literal["fisher", "euclidean"] = Field(
        "fisher",
        description=(
            "[L] inner product of the conflict test and projection: the K-FAC Fisher "
            "uᵀ(F̂+γI)v (conflict ⇔ d_r raises the cost surrogate) or Euclidean on the flat "
            "natural gradients (minibatch-v0)"
        ),
    )
    kfac_decay: float = Field(
        0.5,
        ge=0,
        lt=1,
        description=(
            "[L] EMA decay of A, G per K-FAC step: 0.5 averages ~3 large minibatches of this "
            "epoch and the last (minibatch-v0: ACKTR stat_decay 0.99)"
        ),
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
    # ---- minibatch-v0 only ------------------------------------------------------------------
    rollback_reference: Literal["epoch_start", "previous"] = Field(
        "epoch_start",
        description=(
            "[L] minibatch-v0: π_ref of the rollback test, the data-collecting π_θk or the "
            "parameters before the step (large-batch checks both, see the module docstring)"
        ),
    )
    kl_convention: Literal["sum", "mean"] = Field(
        "sum",
        description=(
            "[L] minibatch-v0: rollback KL per state summed over action dims (true KL; v0's "
            "default) or averaged (OmniSafe's); large-batch always averages"
        ),
    )
    stats_every: int = Field(
        1, ge=1, description="[L] minibatch-v0: T_s, factor update period; ACKTR Ts 1"
    )
    inverse_every: int = Field(
        10, ge=1, description="[L] minibatch-v0: T_f, eigendecomposition period; ACKTR Tf 10"
    )
    kl_clip: float = Field(
        0.001,
        gt=0,
        description="[L] minibatch-v0: κ, predicted KL of one step; ACKTR kl_clip 0.001",
    )
    nu_max: float = Field(
        1.0, gt=0, description="[L] minibatch-v0: cap on the trust-region scale ν; ACKTR 1"
    )
    lr: float = Field(0.25, gt=0, description="[L] minibatch-v0: η, base step size; ACKTR 0.25")

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
    """Remove the conflicting component when ``⟨d_r, d_c⟩ < 0`` (flat ``(P,)`` vectors).

    Both are improvement directions (d_r raises reward, d_c lowers cost), so a negative inner
    product means a reward step raises cost to first order. ``inner`` is the inner product
    (Euclidean by default; KFCPO's default passes the K-FAC Fisher one). Modes:

    * ``cost``: ``d_c ← d_c − ⟨d_c,d_r⟩/⟨d_r,d_r⟩·d_r`` (reward keeps its direction);
    * ``cost-soft``: the same with strength ``w_r = 1 − w_c``,
      ``d_c ← d_c − w_r·⟨d_c,d_r⟩/⟨d_r,d_r⟩·d_r``: all of the conflict removed when far from
      the limit, none of it at the limit; the remaining ``⟨d_r, d_c⟩`` is ``w_c`` times the
      original;
    * ``pcgrad``: both, each against the other's *original* direction (Yu et al. 2020);
    * ``dominant``: the direction with the smaller blend weight is projected (d_c if
      ``w_c < ½``, else d_r), so the objective currently in charge is never slowed;
    * ``none``: no projection.

    Afterwards, but for ``cost-soft``, ``⟨d_r, d_c⟩ ≥ 0`` (= 0 for the one-sided modes; for
    pcgrad it is ``−p(1 − p²/(‖d_r‖²‖d_c‖²)) ≥ 0`` with ``p < 0`` the original product).

    Returns:
        ``(d_r, d_c, projected)``.
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
    """The step ``t·d`` that brings the local model of ``KL̄(π_θk ‖ π_{θ+td})``,
    ``m(t) = kl0 + slope·t + ½·quad·t²``, to ``target``, with a predicted step KL
    ``½·quad_step·t²`` of at most ``step_max``: the largest ``t ≥ 0`` with ``m(t) ≤ target``
    and ``½·quad_step·t² ≤ step_max`` (``quad_step`` defaults to ``quad``; KFCPO measures the
    step's own KL on its minibatch and the epoch's on the whole batch).

    ``kl0`` is the KL already spent, ``slope = ∇KL̄ᵀd`` (0 at θ = θ_k) and ``quad = dᵀF̄d``
    (the exact Fisher at θ, the KL's Hessian up to O(√kl0) terms). Closed form:
    ``t = 2r / (slope + √(slope² + 2·quad·r))`` with ``r = target − kl0`` (the stable root).
    When the budget is already overspent (``r ≤ 0``, model error) and the direction lowers the
    KL (slope < 0), the parabola's far crossing of the target, capped — the cap may leave m(t)
    above the target but below kl0; otherwise 0. Non-finite inputs give NaN (the checks then
    reject it); ``quad ≤ 0`` (d = 0) gives 0.
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
    ``η·ν·d`` then has K-FAC-predicted KL ``½(ην)²dᵀF̂d ≤ ½(ην)²q ≤ κ``.

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
        loss_before = self._reward_surrogate(batch)
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
        true, pred = info["kl_step"], info["kl_step_predicted"]
        info.update(
            w_c=w_c,
            c=batch.ep_cost - self.cost_limit,
            kl=kl,
            kl_true_over_predicted=true / pred if pred > 0 else 0.0,
            kl_true_over_kfac=true / info["kfac_predicted_kl"]
            if info["kfac_predicted_kl"] > 0
            else 0.0,
            surrogate_gain=loss_before - self._reward_surrogate(batch),
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
    def _reward_surrogate(self, batch: Batch) -> float:
        """``mean(ρ·A_r)`` on the whole batch (its increase is the epoch's surrogate gain)."""
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
        model_obs = batch.obs if cfg.kl_model_states == "batch" else obs
        model_start = start if cfg.kl_model_states == "batch" else _rows(start, idx)
        kl0_t = kl_mean(self.actor, model_obs, model_start)
        kl0 = float(kl0_t.detach())
        # ∇KL̄(π_θk ‖ π_θ) vanishes at θ_k; afterwards it is one backward pass
        slope = float(flat_grad(kl0_t, params) @ direction) if kl0 > 0 else 0.0
        quad = float(direction @ fisher_vector_product(self.actor, model_obs, 0.0)(direction))
        # the step's own KL is checked on the minibatch: its cap uses the minibatch's Fisher
        quad_m = (
            quad
            if model_obs is obs
            else float(direction @ fisher_vector_product(self.actor, obs, 0.0)(direction))
        )
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
