"""Constrained Policy Optimization (Achiam et al., 2017) as implemented in OmniSafe 0.5.0.

One epoch (docs/algorithms.md#cpo), with ρ(θ) = π_θ(a|s) / π_k(a|s) on the rollout batch:

    L_r(θ) = −mean(ρ·A_r),   L_c(θ) = mean(ρ·A_c)
    g = −∇L_r(θ_k),  b = ∇L_c(θ_k),  c = Ĵc − d       (Ĵc: windowed undiscounted episode cost)
    x = CG(F, g), p = CG(F, b);  q = xᵀFx, r = gᵀp, s = bᵀp      (F: Fisher of KL̄ + damping·I)
    step = cpo_step(...)                                 (closed-form dual of the QP below)
    backtracking line search on θ_k + 0.8^j·step, then the critics are fitted.

The local problem is   max_s gᵀs   s.t.   ½ sᵀF s ≤ δ,   c + bᵀs ≤ 0.

Like OmniSafe, c compares the *undiscounted* episode cost with d while L_c is an unscaled
surrogate; the unit mismatch is part of the reference implementation and is kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from pydantic import Field
from torch import Tensor

from safebench.core.base import OnPolicyConfig
from safebench.core.onpolicy import Batch, OnPolicyAlgorithm
from safebench.core.optim import (
    frozen_distribution,
)
from safebench.core.trust_region import (
    EPS,
    TrustRegionFields,
    policy_gradients,
    trust_region_update,
)

__all__ = [
    "CPO",
    "CPOConfig",
    "CPOStep",
    "cpo_case",
    "cpo_step",
]


class CPOConfig(TrustRegionFields, OnPolicyConfig):
    """CPO hyperparameters (OmniSafe ``configs/on-policy/CPO.yaml``)."""

    fvp_sample_freq: int = Field(
        1, ge=1, description="[H] OmniSafe CPO.yaml algo_cfgs.fvp_sample_freq"
    )
    line_search_steps: int = Field(
        20, ge=1, description="[H] OmniSafe cpo.py _update_actor: _cpo_search_step(total_steps=20)"
    )
    dual_quirk: bool = Field(
        True,
        description=(
            "[H] OmniSafe cpo.py _step_direction plugs r = gᵀF⁻¹b (g = reward-ascent gradient) "
            "into Achiam's formulas, which are written for the loss gradient (r ↦ −r), and clamps "
            "with torch.clamp (upper bound wins on an empty interval); False = the exact QP "
            "solution of Achiam et al. 2017"
        ),
    )


# --------------------------------------------------------------------------------------------
# Pure math
# --------------------------------------------------------------------------------------------


def cpo_case(
    b_norm_sq: float, c: float, q: float, r: float, s: float, delta: float
) -> tuple[int, float, float]:
    """Classify the trust-region / constraint geometry; returns ``(case, A, B)``.

    ``A = q − r²/s`` and ``B = 2δ − c²/s`` (OmniSafe adds ``1e-8`` to ``s``). Since the largest
    linear cost change inside ``½sᵀFs ≤ δ`` is ``sqrt(2δ·s)``, ``B < 0`` means the constraint
    boundary misses the trust region:

    * 4: ``bᵀb ≤ 1e-6`` and ``c < 0`` — no cost gradient, feasible (A = B = 0);
    * 3: ``c < 0``, ``B < 0`` — the whole trust region is feasible;
    * 2: ``c < 0 ≤ B`` — feasible, the boundary cuts the trust region;
    * 1: ``c ≥ 0``, ``B ≥ 0`` — infeasible, but the trust region reaches the feasible set;
    * 0: ``c ≥ 0``, ``B < 0`` — no feasible point in the trust region.
    """
    if b_norm_sq <= 1e-6 and c < 0:
        return 4, 0.0, 0.0
    A = q - r * r / (s + EPS)
    B = 2.0 * delta - c * c / (s + EPS)
    if c < 0:
        return (3 if B < 0 else 2), A, B
    return (1 if B >= 0 else 0), A, B


def _clamp(value: float, low: float, high: float, upper_wins: bool) -> float:
    """``value`` clipped to ``[low, high]``; NaN stays NaN.

    When ``low > high`` the interval is empty: ``torch.clamp`` (OmniSafe) returns ``high``,
    Achiam's ``max(low, min(high, v))`` returns ``low``. Only the latter is the correct dual.
    """
    if math.isnan(value):
        return value
    if upper_wins:
        return min(max(value, low), high)
    return max(low, min(high, value))


@dataclass(frozen=True)
class CPOStep:
    """Solution of the CPO subproblem: full step ``(P,)``, case, dual variables λ*, ν*."""

    step: Tensor
    case: int
    lam: float
    nu: float
    A: float
    B: float


def cpo_step(
    x: Tensor,
    p: Tensor,
    q: float,
    r: float,
    s: float,
    c: float,
    delta: float,
    b_norm_sq: float,
    dual_quirk: bool = True,
) -> CPOStep:
    """Closed-form solution of ``max gᵀs  s.t.  ½sᵀFs ≤ δ,  c + bᵀs ≤ 0`` (Achiam et al. §C).

    Args:
        x, p: ``F⁻¹g`` and ``F⁻¹b``, shape ``(P,)``.
        q, r, s: ``gᵀF⁻¹g``, ``gᵀF⁻¹b``, ``bᵀF⁻¹b``.
        c: constraint value ``Ĵc − d`` (> 0 violating).
        delta: trust-region radius δ.
        b_norm_sq: ``bᵀb`` (selects case 4).
        dual_quirk: reproduce OmniSafe's sign of ``r`` and ``torch.clamp`` (see CPOConfig).

    Cases 3/4: ``s = sqrt(2δ/q)·x`` (TRPO step), λ = 1/sqrt(2δ/q), ν = 0.
    Cases 1/2: with ``r̃`` the loss-gradient form of r (``r̃ = −r``; OmniSafe uses ``r̃ = r``)
        the dual ``max_{λ≥0} f(λ)`` splits at ``λ_mid = r̃/c`` into
        ``f_a(λ) = −½(A/λ + Bλ) − r̃c/s`` (constraint active, ν > 0) and
        ``f_b(λ) = −½(q/λ + 2δλ)`` (inactive, ν = 0), maximised at ``sqrt(A/B)`` and
        ``sqrt(q/2δ)`` and clipped to their sides of λ_mid; λ* is the better of the two,
        ``ν* = max(0, λ*c − r̃)/s`` and ``s = (x − ν*·p)/λ*``.
    Case 0: pure cost descent ``s = −sqrt(2δ/s)·p`` (λ* = 0, ν* = sqrt(2δ/s)).
    """
    # Quadratic forms of an SPD matrix; CG round-off must not make them negative.
    q, s = max(q, 0.0), max(s, 0.0)
    case, A, B = cpo_case(b_norm_sq, c, q, r, s, delta)
    if case in (3, 4):
        alpha = math.sqrt(2.0 * delta / (q + EPS))
        return CPOStep(alpha * x, case, 1.0 / (alpha + EPS), 0.0, A, B)
    if case == 0:
        nu = math.sqrt(2.0 * delta / (s + EPS))
        return CPOStep(-nu * p, case, 0.0, nu, A, B)

    r_t = r if dual_quirk else -r
    # as torch would evaluate sqrt(A/B): ±inf for B = 0, NaN for a negative ratio
    ratio = A / B if B != 0 else math.copysign(math.inf, A) if A != 0 else math.nan
    lam_a = math.sqrt(ratio) if ratio >= 0 else math.nan
    lam_b = math.sqrt(q / (2.0 * delta))
    lam_mid = r_t / (c + EPS)
    if c < 0:
        lam_a = _clamp(lam_a, 0.0, lam_mid, dual_quirk)
        lam_b = _clamp(lam_b, lam_mid, math.inf, dual_quirk)
    else:
        lam_a = _clamp(lam_a, lam_mid, math.inf, dual_quirk)
        lam_b = _clamp(lam_b, 0.0, lam_mid, dual_quirk)
    f_a = -0.5 * (A / (lam_a + EPS) + B * lam_a) - r_t * c / (s + EPS)
    f_b = -0.5 * (q / (lam_b + EPS) + 2.0 * delta * lam_b)
    # A NaN f_a (A/B < 0 from an inexact CG) compares False, so λ_b is taken, as in OmniSafe.
    lam = lam_a if f_a >= f_b else lam_b
    nu = max(0.0, lam * c - r_t) / (s + EPS)
    return CPOStep((x - nu * p) / (lam + EPS), case, lam, nu, A, B)


# --------------------------------------------------------------------------------------------
# Algorithm
# --------------------------------------------------------------------------------------------


class CPO(OnPolicyAlgorithm):
    """CPO: trust-region step from the closed-form CPO dual, backtracked, then critics."""

    name = "cpo"
    Config = CPOConfig
    config: CPOConfig

    def update_actor(self, batch: Batch) -> dict[str, float]:
        cfg = self.config
        old_dist = frozen_distribution(self.actor, batch.obs)
        pg = policy_gradients(self.actor, batch, cfg.cg_iters, cfg.cg_damping, cfg.fvp_sample_freq)
        c = batch.ep_cost - self.cost_limit
        sol = cpo_step(
            pg.x,
            pg.p,
            pg.q,
            pg.r,
            pg.s,
            c,
            cfg.target_kl,
            float(torch.dot(pg.b, pg.b)),
            cfg.dual_quirk,
        )
        info = {
            "case": float(sol.case),
            "lambda": sol.lam,
            "nu": sol.nu,
            "A": sol.A,
            "B": sol.B,
            "q": pg.q,
            "r": pg.r,
            "s": pg.s,
            "c": c,
            "grad_norm": float(pg.g.norm()),
            "cost_grad_norm": float(pg.b.norm()),
        }
        # OmniSafe demands reward improvement only when the current policy is feasible.
        info.update(
            trust_region_update(
                self.actor,
                batch,
                old_dist,
                pg,
                sol.step,
                c,
                sol.case > 1,
                cfg.target_kl,
                cfg.line_search_steps,
                cfg.line_search_decay,
            )
        )
        return info
