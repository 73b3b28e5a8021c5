"""Trust-region machinery shared by the second-order methods (TRPO-style, CPO, PCPO, C-TRPO).

Conventions are OmniSafe's (``omnisafe/utils/math.py``, ``natural_pg.py``, ``trpo.py``):

* KL̄ is ``kl_divergence(π_old, π_θ).mean()``: for a per-dimension Gaussian the mean runs over
  states **and** action dimensions, for a categorical policy over states;
* the Fisher-vector product is the Hessian of KL̄ at ``θ = θ_old`` times ``v`` plus
  ``damping · v``, by double back-propagation;
* conjugate gradient starts at ``x₀ = 0`` and guards its two divisions with ``eps = 1e-6``;
* the line search tries ``θ_old + decay^j · step``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.distributions import Categorical, Distribution, Normal, kl_divergence

from safebench.core.policies import Actor, GaussianActor


def _trainable(module: nn.Module) -> list[nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


def flat_params(module: nn.Module) -> Tensor:
    """All trainable parameters of ``module`` concatenated in ``parameters()`` order ``(P,)``.

    The result is a copy: later parameter updates do not change it.
    """
    return torch.cat([p.detach().reshape(-1) for p in _trainable(module)])


def set_flat_params(module: nn.Module, flat: Tensor) -> None:
    """Inverse of :func:`flat_params`: copy ``flat`` ``(P,)`` into the trainable parameters."""
    params = _trainable(module)
    total = sum(p.numel() for p in params)
    if flat.numel() != total:
        raise ValueError(f"flat vector has {flat.numel()} entries, module has {total} parameters")
    offset = 0
    with torch.no_grad():
        for p in params:
            n = p.numel()
            p.copy_(flat[offset : offset + n].view_as(p))
            offset += n


def flat_grad(
    output: Tensor,
    params: Iterable[Tensor],
    retain_graph: bool = False,
    create_graph: bool = False,
) -> Tensor:
    """``∂output/∂θ`` flattened to ``(P,)``; parameters ``output`` does not depend on get zeros."""
    plist = list(params)
    grads = torch.autograd.grad(
        output, plist, retain_graph=retain_graph, create_graph=create_graph, allow_unused=True
    )
    return torch.cat(
        [
            (torch.zeros_like(p) if g is None else g).reshape(-1)
            for g, p in zip(grads, plist, strict=True)
        ]
    )


def conjugate_gradient(
    Avp: Callable[[Tensor], Tensor],
    b: Tensor,
    iters: int = 15,
    residual_tol: float = 1e-10,
    eps: float = 1e-6,
) -> Tensor:
    """Approximate ``x = A⁻¹ b`` for symmetric positive-definite ``A`` given only ``v ↦ A v``.

    From ``x₀ = 0``, ``r₀ = p₀ = b``, for ``k = 0 … iters-1``:

        α_k = r_kᵀr_k / (p_kᵀ A p_k + eps)
        x_{k+1} = x_k + α_k p_k,   r_{k+1} = r_k - α_k A p_k
        stop if ‖r_{k+1}‖ < residual_tol
        β_k = r_{k+1}ᵀr_{k+1} / (r_kᵀr_k + eps),   p_{k+1} = r_{k+1} + β_k p_k

    Identical iterates to OmniSafe's ``conjugate_gradients`` (same ``eps`` placement), except
    that its initial ``A·0`` product is not evaluated (it is exactly zero for a linear map).

    Args:
        Avp: matrix-vector product ``(P,) -> (P,)``.
        b: right-hand side ``(P,)``.
        iters: maximum number of iterations (OmniSafe ``cg_iters`` = 15).
    """
    x = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    rdotr = torch.dot(r, r)
    for _ in range(iters):
        z = Avp(p)
        alpha = rdotr / (torch.dot(p, z) + eps)
        x = x + alpha * p
        r = r - alpha * z
        new_rdotr = torch.dot(r, r)
        if torch.sqrt(new_rdotr) < residual_tol:
            break
        p = r + (new_rdotr / (rdotr + eps)) * p
        rdotr = new_rdotr
    return x


# --------------------------------------------------------------------------------------------
# KL divergences and curvature products
# --------------------------------------------------------------------------------------------


def frozen_distribution(actor: Actor, obs: Tensor) -> Distribution:
    """π_θ_old(·|s) as a distribution that carries no autograd graph (``(B, …)`` batch)."""
    with torch.no_grad():
        dist = actor.distribution(obs)
    return _detached(dist)


def distribution_rows(dist: Distribution, idx: Tensor) -> Distribution:
    """The rows ``idx`` ``(b,)`` of a batched Gaussian or categorical distribution."""
    if isinstance(dist, Normal):
        return Normal(dist.loc[idx], dist.scale[idx], validate_args=False)
    if isinstance(dist, Categorical):
        return Categorical(logits=dist.logits[idx], validate_args=False)
    raise TypeError(f"unsupported distribution {type(dist).__name__}")


def _detached(dist: Distribution) -> Distribution:
    if isinstance(dist, Normal):
        return Normal(dist.loc.detach(), dist.scale.detach(), validate_args=False)
    if isinstance(dist, Categorical):
        return Categorical(logits=dist.logits.detach(), validate_args=False)
    raise TypeError(f"unsupported distribution {type(dist).__name__}")


def kl_mean(actor: Actor, obs: Tensor, old_dist: Distribution) -> Tensor:
    """``KL̄ = mean KL(π_old(·|s) ‖ π_θ(·|s))`` with OmniSafe's trust-region convention.

    Gaussian: ``kl_divergence`` is per action dimension ``(B, act_dim)`` and the mean runs over
    both axes, i.e. ``(1/(B·act_dim)) Σ_s Σ_i KL_i``. Categorical: mean over ``B`` states.
    Differentiable in the actor's parameters.
    """
    return kl_divergence(old_dist, actor.distribution(obs)).mean()


def kl_sum_dims(actor: Actor, obs: Tensor, old_dist: Distribution) -> Tensor:
    """``(1/B) Σ_s KL(π_old(·|s) ‖ π_θ(·|s))`` with the KL summed over action dimensions.

    This is the KL of the joint action distribution, used by OmniSafe's PPO-family
    (P3O) epoch-level early stop. For a Gaussian it is ``act_dim · kl_mean``.
    """
    kl = kl_divergence(old_dist, actor.distribution(obs))
    return kl.reshape(obs.shape[0], -1).sum(-1).mean()


def hessian_vector_product(
    scalar: Tensor, params: Sequence[Tensor], damping: float = 0.0
) -> Callable[[Tensor], Tensor]:
    """``v ↦ ∇²_θ scalar · v + damping · v`` by double back-propagation.

    The first-order graph ``g = ∇_θ scalar`` is built once (``create_graph=True``) and each call
    differentiates ``gᵀv``; ``retain_graph`` keeps it alive across the CG iterations, so a
    product costs one backward pass instead of a forward plus two backward passes.

    Args:
        scalar: 0-d tensor depending on ``params`` (e.g. KL̄ or C-TRPO's divergence).
        params: the parameters θ; products act on the flattened ``(P,)`` vector.
    """
    plist = list(params)
    grad = flat_grad(scalar, plist, retain_graph=True, create_graph=True)

    def product(v: Tensor) -> Tensor:
        hv = flat_grad(torch.dot(grad, v), plist, retain_graph=True)
        return hv + damping * v

    return product


def fisher_vector_product(
    actor: Actor, obs: Tensor, damping: float = 0.1
) -> Callable[[Tensor], Tensor]:
    """``v ↦ (∇²_θ KL̄(π_old ‖ π_θ)|_{θ=θ_old} + damping·I) v`` on the states ``obs``.

    ``π_old`` is the actor's current distribution and KL̄ follows :func:`kl_mean`. For the
    Gaussian actor the Hessian is the Fisher matrix divided by ``act_dim``:

        F̄ = (1/(B·d)) Σ_s [ J_sᵀ Σ⁻¹ J_s  ⊕  2·I_d ]

    with ``J_s = ∂μ(s)/∂φ`` ``(d, P_μ)``, ``Σ = diag(σ²)``, the ``2·I_d`` block on ``log σ``
    and no cross term at ``θ = θ_old``. The product is linear in ``v``.

    For a Gaussian actor whose mean is a plain MLP (the shared networks) the product is the
    Gauss–Newton form ``Jᵀ(Σ⁻¹/(B·d))(J v)``, exact at ``θ_old`` because the KL's gradient in
    the network output vanishes there; ``J v`` and ``Jᵀu`` are written out layer by layer
    over activations cached once per call of this factory. That does about a third of the
    arithmetic of double back-propagation, and the FVP over a 20000-state batch is the
    dominant cost of every CPO/PCPO/TRPO-style update. Other actors use double
    back-propagation (:func:`hessian_vector_product`), which gives the same numbers.

    Args:
        actor: policy whose trainable parameters (in ``parameters()`` order) form θ.
        obs: ``(B, obs_dim)`` states (OmniSafe ``fvp_obs``; every ``fvp_sample_freq``-th state).
        damping: OmniSafe ``cg_damping``.
    """
    if isinstance(actor, GaussianActor) and _is_plain_mlp(actor.mean_net):
        return _gaussian_mlp_fvp(actor, obs, damping)
    # One forward pass serves both sides: the detached copy is π_old, the live one π_θ.
    dist = actor.distribution(obs)
    kl = kl_divergence(_detached(dist), dist).mean()
    return hessian_vector_product(kl, _trainable(actor), damping)


def _is_plain_mlp(net: nn.Module) -> bool:
    mods = list(net.children()) if isinstance(net, nn.Sequential) else []
    if not mods or len(mods) % 2 == 0:
        return False
    linear_ok = all(isinstance(m, nn.Linear) for m in mods[::2])
    act_ok = all(isinstance(m, nn.Tanh | nn.ReLU) for m in mods[1::2])
    return linear_ok and act_ok and all(p.requires_grad for p in net.parameters())


def _gaussian_mlp_fvp(
    actor: GaussianActor, obs: Tensor, damping: float
) -> Callable[[Tensor], Tensor]:
    """Gauss–Newton FVP of :func:`fisher_vector_product` for ``GaussianActor`` + plain MLP.

    Forward mode through layer ``k`` (input ``h_k``, tangent ``ḣ_k``, ``ḣ_0 = 0``):
    ``ż_k = h_k Ẇ_kᵀ + ḃ_k + ḣ_k W_kᵀ``, ``ḣ_{k+1} = σ'(z_k) ⊙ ż_k``; the output tangent
    ``ż_L = J v`` ``(B, d)`` is scaled by ``Σ⁻¹/(B·d)`` to ``u``; reverse mode then gives
    ``Ŵ_k = g_kᵀ h_k``, ``b̂_k = Σ_B g_k``, ``g_{k−1} = (g_k W_k) ⊙ σ'(z_{k−1})``.
    """
    mods = list(actor.mean_net.children())
    linears: list[nn.Linear] = [m for m in mods if isinstance(m, nn.Linear)]
    tanh = isinstance(mods[1], nn.Tanh) if len(mods) > 1 else True
    log_std = actor.log_std
    params = _trainable(actor)
    if params[0] is not log_std:
        raise ValueError("expected log_std to be the actor's first parameter")
    act_dim = int(log_std.numel())
    with torch.no_grad():
        weights = [lin.weight.detach() for lin in linears]
        inputs = [obs.detach()]  # h_k, the input of linear k
        slopes = []  # σ'(z_k) for the hidden layers
        h = inputs[0]
        for k, lin in enumerate(linears[:-1]):
            z = torch.nn.functional.linear(h, weights[k], lin.bias.detach())
            if tanh:
                h = torch.tanh(z)
                slopes.append(1.0 - h * h)
            else:
                h = torch.relu(z)
                slopes.append((z > 0).to(z.dtype))
            inputs.append(h)
        batch = obs.shape[0]
        scale = torch.exp(-2.0 * log_std.detach()) / (batch * act_dim)  # Σ⁻¹/(B·d), (d,)
    sizes = [p.numel() for p in params]

    @torch.no_grad()
    def product(v: Tensor) -> Tensor:
        chunks = list(v.split(sizes))
        v_log_std, rest = chunks[0], chunks[1:]
        tangent: Tensor | None = None
        for k, lin in enumerate(linears):
            dw = rest[2 * k].view_as(lin.weight)
            db = rest[2 * k + 1]
            dz = torch.addmm(db, inputs[k], dw.T)
            if tangent is not None:
                dz.addmm_(tangent, weights[k].T)
            tangent = dz * slopes[k] if k < len(slopes) else dz
        assert tangent is not None
        g = tangent * scale
        out: list[Tensor] = []
        for k in range(len(linears) - 1, -1, -1):
            out.append(g.sum(0))
            out.append((g.T @ inputs[k]).reshape(-1))
            if k > 0:
                g = (g @ weights[k]) * slopes[k - 1]
        out.append((2.0 / act_dim) * v_log_std)
        return torch.cat(out[::-1]) + damping * v

    return product


# --------------------------------------------------------------------------------------------
# Backtracking line search
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LineSearchResult:
    """Outcome of :func:`backtracking_line_search`.

    ``fraction`` is the accepted step fraction ``decay^j`` (0.0 when nothing was accepted);
    ``tries`` the number of candidates evaluated; ``loss`` and ``kl`` the values at the accepted
    candidate, or at the last one tried when nothing was accepted (NaN if no try was made).
    """

    accepted: bool
    fraction: float
    tries: int
    loss: float
    kl: float


def backtracking_line_search(
    module: nn.Module,
    step: Tensor,
    evaluate: Callable[[], tuple[float, float]],
    accept: Callable[[float, float, float], bool],
    max_tries: int = 15,
    decay: float = 0.8,
) -> LineSearchResult:
    """Try ``θ = θ_old + decay^j · step`` for ``j = 0 … max_tries-1``; keep the first accepted.

    At each candidate the parameters of ``module`` are set, ``evaluate()`` returns
    ``(loss, kl)`` there, and ``accept(loss, kl, fraction)`` decides. A non-finite loss or KL is
    a rejection without calling ``accept``, and the step still shrinks. (OmniSafe 0.5.0's CPO
    search ``continue``-s on a non-finite KL *without* shrinking, which retries the same
    candidate until the tries run out; shrinking is what a backtracking search means.)

    On acceptance the module is left at the accepted parameters; otherwise the parameters are
    restored bit-for-bit to ``θ_old``.

    Args:
        module: the network whose trainable parameters form θ (flattened as :func:`flat_params`).
        step: full step ``(P,)`` (e.g. ``sqrt(2δ / xᵀHx) · x``).
        evaluate: ``() -> (loss, kl)`` at the module's current parameters, without gradients.
        accept: ``(loss, kl, fraction) -> bool``.
        max_tries: OmniSafe ``total_steps`` = 15.
        decay: OmniSafe ``decay`` = 0.8.
    """
    theta_old = flat_params(module)
    fraction = 1.0
    loss = kl = math.nan
    for j in range(max_tries):
        set_flat_params(module, theta_old + fraction * step)
        loss, kl = evaluate()
        loss, kl = float(loss), float(kl)
        if math.isfinite(loss) and math.isfinite(kl) and accept(loss, kl, fraction):
            return LineSearchResult(True, fraction, j + 1, loss, kl)
        fraction *= decay
    set_flat_params(module, theta_old)
    return LineSearchResult(False, 0.0, max_tries, loss, kl)
