"""Lagrange multipliers of the Lagrangian baselines, written once
(docs/algorithms.md#lagrange-multipliers).

Two update rules, both fed Ĵc (the cost estimate of the rollout just collected) once per
epoch, *before* the policy update that uses the new value:

* :class:`LagrangeMultiplier` — gradient ascent on the dual with its own optimiser
  (PPO-Lag, TRPO-Lag, FOCOPS's ν, CUP's ν). With λ̃ a scalar parameter,

      ℓ(λ̃) = −λ̃·(Ĵc − d),    ∂ℓ/∂λ̃ = d − Ĵc,
      λ̃ ← Adam(λ̃, ∂ℓ/∂λ̃),    λ̃ ← clamp(λ̃, 0, λ_max),    λ = max(0, λ̃).

  Adam normalises the step, so λ moves by about ±lr per epoch whatever the size of the
  violation. The optimiser is ``torch.optim.Adam`` on a float32 parameter, as in the code
  behind the published runs (milosen/ctrpo ``common/lagrange.py``; OmniSafe
  ``common/lagrange.py``), so the multiplier matches theirs to float32 rounding.

* :class:`PIDLagrangian` — the PID controller of Stooke et al. (2020), CPPO-PID. With the
  error Δ_k = Ĵc − d at update k,

      I_k = max(0, I_{k−1} + K_i·Δ_k)                 (I_0 = the initial multiplier)
      P_k = α_p·P_{k−1} + (1 − α_p)·Δ_k              (EMA of the error, P_0 = 0)
      C_k = α_d·C_{k−1} + (1 − α_d)·Ĵc               (EMA of the cost,  C_0 = 0)
      D_k = max(0, C_k − C_{k−τ})                    (C_j = 0 for j ≤ 0, τ = delay)
      λ_k = max(0, K_p·P_k + I_k + K_d·D_k)

  in plain Python floats (the official code's arithmetic exactly). The official code's
  ``sum_norm=True, diff_norm=False`` leaves λ uncapped; ``penalty_max`` here caps it only
  when set.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import torch
from pydantic import BaseModel, Field

__all__ = ["LagrangeFields", "LagrangeMultiplier", "PIDLagrangian"]

_C = "milosen/ctrpo algorithms/baselines"


class LagrangeFields(BaseModel):
    """Config of a :class:`LagrangeMultiplier`, mixed into an algorithm's config."""

    lagrangian_init: float = Field(
        0.001, ge=0, description=f"[H] {_C} runs' config.json lagrangian_multiplier_init"
    )
    lagrangian_lr: float = Field(
        0.035, gt=0, description=f"[H] {_C} runs' config.json lagrangian_multiplier_lr (Adam)"
    )
    lagrangian_max: float | None = Field(
        None, gt=0, description=f"[H] {_C}/ppo_lag.py Lagrange(..., upper_bound=None): no cap"
    )

    def multiplier(self) -> LagrangeMultiplier:
        """A fresh multiplier with these settings."""
        return LagrangeMultiplier(self.lagrangian_init, self.lagrangian_lr, self.lagrangian_max)


class LagrangeMultiplier:
    """λ by projected Adam ascent on the dual (see the module docstring).

    Args:
        init: λ̃_0; the official code stores ``max(init, 0)``.
        lr: Adam learning rate (betas (0.9, 0.999), eps 1e-8: torch defaults, as theirs).
        upper_bound: λ_max, or ``None`` for no cap (PPO-Lag, TRPO-Lag); FOCOPS 2.0, CUP 0.2.
    """

    def __init__(self, init: float, lr: float, upper_bound: float | None = None) -> None:
        self.upper_bound = upper_bound
        self.param = torch.nn.Parameter(torch.tensor(max(float(init), 0.0)))
        self.optim = torch.optim.Adam([self.param], lr=lr)

    @property
    def value(self) -> float:
        """λ = max(0, λ̃), the value the policy update uses."""
        return max(0.0, float(self.param.detach()))

    def update(self, cost: float, limit: float) -> float:
        """One dual step from ``cost`` = Ĵc against ``limit`` = d; returns the new λ."""
        self.optim.zero_grad()
        loss = -self.param * (float(cost) - float(limit))
        loss.backward()
        self.optim.step()
        with torch.no_grad():
            self.param.clamp_(min=0.0, max=self.upper_bound)
        return self.value

    def state_dict(self) -> dict[str, Any]:
        return {"param": self.param.detach().clone(), "optim": self.optim.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self.param.copy_(state["param"])
        self.optim.load_state_dict(state["optim"])


class PIDLagrangian:
    """λ from a PID controller on the cost (see the module docstring for the recursion).

    Args:
        init: I_0, the integral term's start (the official ``lagrangian_multiplier_init``).
        kp, ki, kd: gains K_p, K_i, K_d.
        delay: τ, epochs between the two cost EMAs the derivative compares.
        alpha_p, alpha_d: EMA factors of the error (P) and of the cost (D).
        penalty_max: cap on λ, or ``None`` (the official ``sum_norm=True`` leaves it uncapped).
    """

    def __init__(
        self,
        init: float,
        kp: float,
        ki: float,
        kd: float,
        delay: int,
        alpha_p: float,
        alpha_d: float,
        penalty_max: float | None = None,
    ) -> None:
        self.kp, self.ki, self.kd = kp, ki, kd
        self.alpha_p, self.alpha_d = alpha_p, alpha_d
        self.penalty_max = penalty_max
        self.integral = float(init)
        self.error_ema = 0.0
        self.cost_ema = 0.0
        # The last ``delay`` cost EMAs, oldest first, seeded with C_0 = 0: the oldest entry
        # is C_{k−τ} (or 0 while fewer than τ updates have run).
        self.history: deque[float] = deque([0.0], maxlen=delay)
        self._value = 0.0  # the official code reads 0.0 before the first update

    @property
    def value(self) -> float:
        return self._value

    def update(self, cost: float, limit: float) -> float:
        """One controller step from ``cost`` = Ĵc against ``limit`` = d; returns the new λ."""
        error = float(cost) - float(limit)
        self.integral = max(0.0, self.integral + self.ki * error)
        self.error_ema = self.alpha_p * self.error_ema + (1.0 - self.alpha_p) * error
        self.cost_ema = self.alpha_d * self.cost_ema + (1.0 - self.alpha_d) * float(cost)
        derivative = max(0.0, self.cost_ema - self.history[0])
        out = max(0.0, self.kp * self.error_ema + self.integral + self.kd * derivative)
        if self.penalty_max is not None:
            out = min(out, self.penalty_max)
        self.history.append(self.cost_ema)
        self._value = out
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "integral": self.integral,
            "error_ema": self.error_ema,
            "cost_ema": self.cost_ema,
            "history": list(self.history),
            "value": self._value,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.integral = state["integral"]
        self.error_ema = state["error_ema"]
        self.cost_ema = state["cost_ema"]
        self.history = deque(state["history"], maxlen=self.history.maxlen)
        self._value = state["value"]
