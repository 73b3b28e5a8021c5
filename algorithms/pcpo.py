"""Projection-Based Constrained Policy Optimization (Yang et al., 2020) as in OmniSafe 0.5.0.

PCPO takes the TRPO step and then projects it (in the KL / Fisher metric) onto the
linearised constraint set ``{s : c + bᵀs ≤ 0}`` (docs/algorithms.md#pcpo). With the notation of
:mod:`algorithms.cpo` (g, b, x = F⁻¹g, p = F⁻¹b, q = gᵀx, r = gᵀp, s = bᵀp, c = Ĵc − d):

    paper (KL projection):  step = sqrt(2δ/q)·x − max(0, (sqrt(2δ/q)·r + c)/s)·p
    OmniSafe 0.5.0:         step = sqrt(2δ/q)·F·x − max(0, (sqrt(2δ/q)·r + c)/s)·p

OmniSafe's ``pcpo.py`` names ``F·x`` ``H_inv_g`` but computes ``_fvp(x)``, i.e. ≈ g (the raw
gradient), not F⁻¹g; ``fx_quirk`` selects between the two. The step is then backtracked with
CPO's line search (200 tries; no reward-improvement test) and the critics are fitted.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field
from torch import Tensor

from safebench.core.base import OnPolicyConfig
from safebench.core.onpolicy import Batch, OnPolicyAlgorithm
from safebench.core.optim import frozen_distribution
from safebench.core.trust_region import (
    EPS,
    TrustRegionFields,
    policy_gradients,
    trust_region_update,
)

__all__ = ["PCPO", "PCPOConfig", "pcpo_step"]


class PCPOConfig(TrustRegionFields, OnPolicyConfig):
    """PCPO hyperparameters (OmniSafe ``configs/on-policy/PCPO.yaml``)."""

    fvp_sample_freq: int = Field(
        1, ge=1, description="[H] OmniSafe PCPO.yaml algo_cfgs.fvp_sample_freq"
    )
    line_search_steps: int = Field(
        200, ge=1, description="[H] OmniSafe pcpo.py: _cpo_search_step(total_steps=200)"
    )
    fx_quirk: bool = Field(
        True,
        description=(
            "[H] OmniSafe pcpo.py uses F·x (≈ g) in the KL-projection step; "
            "False = the PCPO paper's F⁻¹g"
        ),
    )


def pcpo_step(
    x: Tensor,
    fx: Tensor,
    p: Tensor,
    q: float,
    r: float,
    s: float,
    c: float,
    delta: float,
    fx_quirk: bool = True,
) -> tuple[Tensor, float]:
    """PCPO's projected step ``(P,)`` and the projection coefficient ν.

        step = sqrt(2δ/q)·v − ν·p,   ν = max(0, (sqrt(2δ/q)·r + c)/s),

    with ``v = F·x`` (OmniSafe, ``fx_quirk``) or ``v = x = F⁻¹g`` (paper). With ``v = x`` the
    step is the F-metric projection of the TRPO step ``sqrt(2δ/q)·x`` onto ``c + bᵀs ≤ 0``, so
    it satisfies the linearised constraint with equality when ν > 0.

    Args:
        x, fx, p: ``F⁻¹g``, ``F·x`` and ``F⁻¹b``, shape ``(P,)``.
        q, r, s: ``gᵀF⁻¹g``, ``gᵀF⁻¹b``, ``bᵀF⁻¹b``.
        c: ``Ĵc − d``.
        delta: trust-region radius δ.
    """
    # OmniSafe guards only the first sqrt with 1e-8; guarding both (and s) changes the step by
    # a relative 1e-8 and avoids a division by zero for a vanishing gradient.
    alpha = math.sqrt(2.0 * delta / (max(q, 0.0) + EPS))
    nu = max(0.0, (alpha * r + c) / (s + EPS))
    return alpha * (fx if fx_quirk else x) - nu * p, nu


class PCPO(OnPolicyAlgorithm):
    """PCPO: projected TRPO step, backtracked under the KL and cost-surrogate tests."""

    name = "pcpo"
    Config = PCPOConfig
    config: PCPOConfig

    def update_actor(self, batch: Batch) -> dict[str, float]:
        cfg = self.config
        old_dist = frozen_distribution(self.actor, batch.obs)
        pg = policy_gradients(self.actor, batch, cfg.cg_iters, cfg.cg_damping, cfg.fvp_sample_freq)
        c = batch.ep_cost - self.cost_limit
        step, nu = pcpo_step(pg.x, pg.fx, pg.p, pg.q, pg.r, pg.s, c, cfg.target_kl, cfg.fx_quirk)
        info = {
            "nu": nu,
            "q": pg.q,
            "r": pg.r,
            "s": pg.s,
            "c": c,
            # linearised constraint value of the full step; ≤ 0 when fx_quirk is False
            "linear_cost_full_step": c + float(torch.dot(pg.b, step)),
            "grad_norm": float(pg.g.norm()),
            "cost_grad_norm": float(pg.b.norm()),
        }
        # OmniSafe calls the CPO search with its default optim_case=0: no reward test.
        info.update(
            trust_region_update(
                self.actor,
                batch,
                old_dist,
                pg,
                step,
                c,
                False,
                cfg.target_kl,
                cfg.line_search_steps,
                cfg.line_search_decay,
            )
        )
        return info
