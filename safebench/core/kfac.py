"""Kronecker-factored approximate curvature (K-FAC) of a policy's Fisher matrix.

The policy is one of the actors of :mod:`safebench.core.policies`: an MLP (``nn.Sequential``
of ``nn.Linear`` and element-wise activations) giving the Gaussian mean or the categorical
logits, plus, for the Gaussian, a state-independent ``log_std``. The Fisher of θ is

    F = E_{s~D} E_{a~π_θ(·|s)} [∇_θ log π_θ(a|s) ∇_θ log π_θ(a|s)ᵀ],

the Hessian of the *true* KL of the joint action distribution (summed over action dimensions):
``KL(π_θ ‖ π_{θ+d}) ≈ ½ dᵀF d``. K-FAC (Martens & Grosse 2015; ACKTR, Wu et al. 2017) keeps
one block per linear layer l, ``z_l = W_l a_{l−1} + b_l``, with ``ā = [a_{l−1}; 1]``:

    A_l = E_s[ā āᵀ]                                  (in_l+1, in_l+1)
    G_l = E_s E_{ã~π_θ}[g gᵀ],  g = ∂ log π_θ(ã|s)/∂z_l          (out_l, out_l)
    F_l ≈ A_l ⊗ G_l,  acting on M = [W_l | b_l] as  M ↦ G_l M A_l

G is built from log π of actions *sampled from the current policy* (``fisher="sampled"``,
ACKTR's estimator) or from its exact expectation over actions (``fisher="exact"``: one
backward pass per column of the output Fisher's square root Σ^{-1/2} (Gaussian) or
``√p_k (e_k − p)`` (categorical)). Gradients of the advantage-weighted surrogate must not be
used for G: that "empirical Fisher" is off by ~90% in scale
(docs/algorithms.md#kfcpo-k-fac-curvature).

The log σ block is exact: ``∂ log N(a; μ, σ²)/∂ log σ_i = ε_i² − 1`` with ``ε ~ N(0, 1)``, so
its Fisher is ``2·I`` at every state, with no cross term to the mean parameters.

Statistics are exponential moving averages ``M ← ρ M + (1 − ρ) M_batch`` (initialised with the
first batch, as ACKTR). Inversion uses eigendecompositions ``A = Q_A diag(d_A) Q_Aᵀ``,
``G = Q_G diag(d_G) Q_Gᵀ`` (eigenvalues below ``eig_floor`` set to 0, as ACKTR), refreshed by
:meth:`KFAC.refresh_inverse`; with damping γ,

    (A ⊗ G + γI)⁻¹ vec(M) = vec( Q_G [(Q_Gᵀ M Q_A) ⊘ (d_G d_Aᵀ + γ)] Q_Aᵀ ),
    log σ:  d = ∇ / (2 + γ).

Written here rather than taken from curvlinops/BackPACK/ASDL: those compute K-FAC of a loss
(MSE / cross-entropy) on one batch. The policy Fisher needs the Gaussian likelihood with a
learned σ (MSE assumes σ = 1), an exact block for the state-independent log σ (not a layer),
and running EMA factors with eigenbases refreshed on a schedule and checkpointed with the
algorithm for an exact resume. On top of a library that would be as much adapter code as the
two forward hooks and the few lines of tensor algebra below.

Flat vectors follow :func:`safebench.core.optim.flat_params`: every trainable parameter of the
actor, in ``actor.parameters()`` order, shape ``(P,)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from safebench.core.policies import Actor, CategoricalActor, GaussianActor

__all__ = ["KFAC", "FisherMode"]

FisherMode = Literal["sampled", "exact"]

# Element-wise modules between the linear layers: they leave the Kronecker structure intact.
_ELEMENTWISE = (nn.Tanh, nn.ReLU, nn.Identity)


@dataclass(frozen=True)
class _Slot:
    """Where one trainable parameter sits in the flat vector and which block it belongs to."""

    offset: int
    numel: int
    shape: torch.Size
    block: int  # index into the linear layers, or -1 for log σ
    part: Literal["weight", "bias", "log_std"]


class KFAC:
    """Running K-FAC factors of an actor's Fisher, their eigenbases and the products they give.

    Args:
        actor: a :class:`GaussianActor` or :class:`CategoricalActor` (any other structure is
            rejected: the factors below assume Linear layers separated by element-wise maps).
        decay: EMA decay ρ of the factors.
        damping: γ added to the Kronecker eigenvalue products (and to log σ's Fisher 2).
        eig_floor: eigenvalues of A and G below this are set to 0 before damping.
        fisher: ``"sampled"`` (G from one action sampled per state) or ``"exact"``.
    """

    def __init__(
        self,
        actor: Actor,
        decay: float = 0.99,
        damping: float = 1e-2,
        eig_floor: float = 1e-6,
        fisher: FisherMode = "sampled",
    ) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        if damping < 0.0:
            raise ValueError(f"damping must be >= 0, got {damping}")
        if fisher not in ("sampled", "exact"):
            raise ValueError(f"fisher must be 'sampled' or 'exact', got {fisher!r}")
        net: nn.Module
        if isinstance(actor, GaussianActor):
            net = actor.mean_net
        elif isinstance(actor, CategoricalActor):
            net = actor.logits_net
        else:
            raise TypeError(f"K-FAC supports GaussianActor and CategoricalActor, not {actor!r}")
        if not isinstance(net, nn.Sequential) or not all(
            isinstance(m, (nn.Linear, *_ELEMENTWISE)) for m in net
        ):
            raise TypeError("K-FAC needs an nn.Sequential of nn.Linear and Tanh/ReLU modules")
        self.actor = actor
        self.decay = float(decay)
        self.damping = float(damping)
        self.eig_floor = float(eig_floor)
        self.fisher: FisherMode = fisher
        self.layers: list[nn.Linear] = [m for m in net if isinstance(m, nn.Linear)]
        self.slots = self._index_parameters()
        self.numel = sum(s.numel for s in self.slots)
        n = len(self.layers)
        self.A: list[Tensor | None] = [None] * n
        self.G: list[Tensor | None] = [None] * n
        # Eigenbases (Q, d) of A and G from the last refresh_inverse().
        self.QA: list[Tensor | None] = [None] * n
        self.dA: list[Tensor | None] = [None] * n
        self.QG: list[Tensor | None] = [None] * n
        self.dG: list[Tensor | None] = [None] * n
        self.stats_updates = 0
        self.inverse_refreshes = 0

    def _index_parameters(self) -> list[_Slot]:
        """Map every trainable actor parameter to its K-FAC block; reject uncovered ones."""
        owner: dict[int, tuple[int, Literal["weight", "bias", "log_std"]]] = {}
        for k, layer in enumerate(self.layers):
            owner[id(layer.weight)] = (k, "weight")
            if layer.bias is not None:
                owner[id(layer.bias)] = (k, "bias")
        if isinstance(self.actor, GaussianActor):
            owner[id(self.actor.log_std)] = (-1, "log_std")
        slots: list[_Slot] = []
        offset = 0
        for name, p in self.actor.named_parameters():
            if not p.requires_grad:
                continue
            if id(p) not in owner:
                raise TypeError(f"parameter {name!r} is not covered by a K-FAC block")
            block, part = owner[id(p)]
            slots.append(_Slot(offset, p.numel(), p.shape, block, part))
            offset += p.numel()
        if len(slots) != len(owner):
            raise TypeError("K-FAC needs every layer weight, bias and log σ trainable")
        return slots

    # ---- statistics -------------------------------------------------------------------------

    def batch_factors(
        self, obs: Tensor, generator: torch.Generator | None = None
    ) -> tuple[list[Tensor], list[Tensor]]:
        """``(A_l, G_l)`` of one batch of states ``(B, obs_dim)`` at the current parameters.

        Forward hooks record each linear layer's input and output (pre-activation); G's
        per-sample vectors are gradients of ``Σ_i log π(ã_i|s_i)`` (sampled) or of the
        output Fisher's square-root columns (exact) with respect to those outputs. Sampling
        draws from ``generator`` on the CPU, so it is reproducible on any device.
        """
        inputs: list[Tensor] = []
        outputs: list[Tensor] = []

        def record(_module: nn.Module, args: tuple[Tensor, ...], out: Tensor) -> None:
            inputs.append(args[0].detach())
            outputs.append(out)

        handles: list[RemovableHandle] = [
            layer.register_forward_hook(record) for layer in self.layers
        ]
        try:
            with torch.enable_grad():
                head = self.actor(obs)  # Gaussian mean or logits, (B, out)
        finally:
            for h in handles:
                h.remove()
        batch = obs.shape[0]
        factors_a = []
        for layer, a in zip(self.layers, inputs):
            if layer.bias is not None:
                a = torch.cat([a, a.new_ones(batch, 1)], dim=1)
            factors_a.append(a.T @ a / batch)

        factors_g = [
            torch.zeros(o.shape[1], o.shape[1], dtype=o.dtype, device=o.device) for o in outputs
        ]
        for grad_out in self._output_vectors(head.detach(), generator):
            grads = torch.autograd.grad(head, outputs, grad_outputs=grad_out, retain_graph=True)
            for k, g in enumerate(grads):
                factors_g[k] += g.T @ g / batch
        return factors_a, factors_g

    def _output_vectors(self, head: Tensor, generator: torch.Generator | None) -> list[Tensor]:
        """Per-sample vectors ``v`` at the network output ``(B, out)`` with ``E[v vᵀ]`` = the
        output Fisher: one sampled score (sampled), or its square-root columns (exact)."""
        batch, out = head.shape
        if isinstance(self.actor, GaussianActor):
            std = torch.exp(self.actor.log_std.detach())
            if self.fisher == "exact":
                eye = torch.eye(out, dtype=head.dtype, device=head.device)
                return [(eye[k] / std).expand(batch, out) for k in range(out)]
            noise = torch.randn(head.shape, generator=generator, dtype=head.dtype)
            # ∂/∂μ log N(ã; μ, σ²) = (ã − μ)/σ² = ε/σ for ã = μ + σ ε
            return [noise.to(head.device) / std]
        probs = torch.softmax(head, dim=-1)
        eye = torch.eye(out, dtype=head.dtype, device=head.device)
        if self.fisher == "exact":
            # Σ_k p_k (e_k − p)(e_k − p)ᵀ = diag(p) − ppᵀ
            return [probs[:, k : k + 1].sqrt() * (eye[k] - probs) for k in range(out)]
        act = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(-1)
        # ∂/∂z log softmax(z)_ã = e_ã − p
        return [eye[act.to(head.device)] - probs]

    def update_stats(self, obs: Tensor, generator: torch.Generator | None = None) -> None:
        """EMA update of every ``A_l``, ``G_l`` with the statistics of the batch ``obs``."""
        batch_a, batch_g = self.batch_factors(obs, generator)
        rho = self.decay
        for k in range(len(self.layers)):
            old_a, old_g = self.A[k], self.G[k]
            self.A[k] = batch_a[k] if old_a is None else rho * old_a + (1.0 - rho) * batch_a[k]
            self.G[k] = batch_g[k] if old_g is None else rho * old_g + (1.0 - rho) * batch_g[k]
        self.stats_updates += 1

    @property
    def has_stats(self) -> bool:
        """Whether :meth:`update_stats` has run."""
        return self.A[0] is not None

    @property
    def has_inverse(self) -> bool:
        """Whether :meth:`refresh_inverse` has run."""
        return self.QA[0] is not None

    def refresh_inverse(self) -> None:
        """Eigendecompose the current factors (what :meth:`natural_gradient` inverts)."""
        if not self.has_stats:
            raise RuntimeError("refresh_inverse() before any update_stats()")
        for k in range(len(self.layers)):
            self.dA[k], self.QA[k] = self._eigh(self.A[k])
            self.dG[k], self.QG[k] = self._eigh(self.G[k])
        self.inverse_refreshes += 1

    def _eigh(self, m: Tensor | None) -> tuple[Tensor, Tensor]:
        assert m is not None
        d, q = torch.linalg.eigh(0.5 * (m + m.T))  # symmetrised against round-off
        return torch.where(d > self.eig_floor, d, torch.zeros_like(d)), q

    # ---- products -----------------------------------------------------------------------

    def _blocks(self, flat: Tensor) -> tuple[list[Tensor], Tensor | None]:
        """Split flat vectors ``(..., P)`` into per-layer ``[W | b]`` ``(..., out, in+1)`` and
        the log σ part ``(..., act_dim)``."""
        lead = flat.shape[:-1]
        mats: list[list[Tensor | None]] = [[None, None] for _ in self.layers]
        log_std = None
        for s in self.slots:
            piece = flat[..., s.offset : s.offset + s.numel].view(*lead, *s.shape)
            if s.part == "log_std":
                log_std = piece
            else:
                mats[s.block][0 if s.part == "weight" else 1] = piece
        out = []
        for w, b in mats:
            assert w is not None
            out.append(w if b is None else torch.cat([w, b.unsqueeze(-1)], dim=-1))
        return out, log_std

    def _flatten(self, mats: list[Tensor], log_std: Tensor | None) -> Tensor:
        """Inverse of :meth:`_blocks`."""
        lead = mats[0].shape[:-2]
        pieces = []
        for s in self.slots:
            if s.part == "log_std":
                assert log_std is not None
                pieces.append(log_std.reshape(*lead, -1))
            elif s.part == "weight":
                pieces.append(mats[s.block][..., : s.shape[1]].reshape(*lead, -1))
            else:
                pieces.append(mats[s.block][..., -1])
        return torch.cat(pieces, dim=-1)

    def natural_gradient(self, flat_grad: Tensor) -> Tensor:
        """``(F̂ + γI)⁻¹ g`` for flat gradients ``(P,)`` or a stack ``(k, P)`` of them,
        ``F̂ = block-diag(A_l ⊗ G_l, 2·I)``."""
        if not self.has_inverse:
            raise RuntimeError("natural_gradient() before refresh_inverse()")
        mats, log_std = self._blocks(flat_grad)
        out = []
        for k, m in enumerate(mats):
            qa, da, qg, dg = self.QA[k], self.dA[k], self.QG[k], self.dG[k]
            assert qa is not None and da is not None and qg is not None and dg is not None
            inner = (qg.T @ m @ qa) / (dg[:, None] * da[None, :] + self.damping)
            out.append(qg @ inner @ qa.T)
        nat_log_std = None if log_std is None else log_std / (2.0 + self.damping)
        return self._flatten(out, nat_log_std)

    def product(self, flat: Tensor, damped: bool = False) -> Tensor:
        """``F̂ v`` (``damped``: ``(F̂ + γI) v``) for a flat vector ``(P,)`` from the current
        factors: ``G_l V_l A_l`` per block and ``2·v_logσ``. The inner product
        ``⟨u, v⟩_F̂ = uᵀ(F̂ + γI)v`` is the metric in which :meth:`natural_gradient` is steepest.
        """
        if not self.has_stats:
            raise RuntimeError("product() before any update_stats()")
        mats, log_std = self._blocks(flat)
        prods = []
        for k, d in enumerate(mats):
            a, g = self.A[k], self.G[k]
            assert a is not None and g is not None
            prods.append(g @ d @ a)
        out = self._flatten(prods, None if log_std is None else 2.0 * log_std)
        return out + self.damping * flat if damped else out

    def quadratic_form(self, flat: Tensor, damped: bool = False) -> Tensor:
        """``dᵀF̂d = Σ_l tr(D_lᵀ G_l D_l A_l) + 2‖d_logσ‖²`` from the current factors (0-d).

        Undamped, ``½(step)ᵀF̂(step)`` is the K-FAC prediction of a step's KL. ``damped`` adds
        ``γ‖d‖²``, i.e. ``dᵀ(F̂ + γI)d``: for ``d = (F̂ + γI)⁻¹g`` this is ACKTR's ``vᵀg``.
        """
        if not self.has_stats:
            raise RuntimeError("quadratic_form() before any update_stats()")
        mats, log_std = self._blocks(flat)
        total = flat.new_zeros(())
        for k, d in enumerate(mats):
            a, g = self.A[k], self.G[k]
            assert a is not None and g is not None
            total = total + (d * (g @ d @ a)).sum()  # tr(Dᵀ G D A) = Σ D ⊙ (G D A)
        if log_std is not None:
            total = total + 2.0 * (log_std * log_std).sum()
        if damped:
            total = total + self.damping * (flat * flat).sum()
        return total

    def dense(self) -> Tensor:
        """Undamped F̂ as a dense ``(P, P)`` matrix in flat-parameter order (small nets only)."""
        weight = self.layers[0].weight
        eye = torch.eye(self.numel, dtype=weight.dtype, device=weight.device)
        return torch.stack([self.product(e) for e in eye], dim=1)

    # ---- checkpointing ----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        def copy(xs: list[Tensor | None]) -> list[Tensor | None]:
            return [None if x is None else x.detach().clone() for x in xs]

        return {
            "A": copy(self.A),
            "G": copy(self.G),
            "QA": copy(self.QA),
            "dA": copy(self.dA),
            "QG": copy(self.QG),
            "dG": copy(self.dG),
            "stats_updates": self.stats_updates,
            "inverse_refreshes": self.inverse_refreshes,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = self.layers[0].weight.device

        def load(xs: list[Tensor | None]) -> list[Tensor | None]:
            if len(xs) != len(self.layers):
                raise ValueError(f"state has {len(xs)} blocks, the actor {len(self.layers)}")
            return [None if x is None else x.detach().clone().to(device) for x in xs]

        self.A, self.G = load(state["A"]), load(state["G"])
        self.QA, self.dA = load(state["QA"]), load(state["dA"])
        self.QG, self.dG = load(state["QG"]), load(state["dG"])
        self.stats_updates = int(state["stats_updates"])
        self.inverse_refreshes = int(state["inverse_refreshes"])
