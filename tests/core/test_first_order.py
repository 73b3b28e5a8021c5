"""The clipped-ratio epoch's own helpers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from safebench.core.first_order import ActorAdam, clip_grad_norm


@pytest.mark.parametrize("scale", [1e-3, 1.0, 50.0])  # below, near and far above max_norm
@pytest.mark.parametrize("as_views", [False, True])
def test_clip_grad_norm_is_torchs_bit_for_bit(scale: float, as_views: bool) -> None:
    """The same gradients as ``nn.utils.clip_grad_norm_``, to the last bit, whether the
    gradients are separate tensors or views of one flat buffer (the fast actor step's)."""
    gen = torch.Generator().manual_seed(7)
    shapes = [(6,), (64, 17), (64,), (64, 64), (64,), (6, 64), (6,)]
    values = [torch.randn(s, generator=gen) * scale for s in shapes]
    reference = [nn.Parameter(torch.zeros(s)) for s in shapes]
    for p, v in zip(reference, values, strict=True):
        p.grad = v.clone()
    if as_views:
        flat = torch.cat([v.flatten() for v in values])
        grads, offset = [], 0
        for v in values:
            grads.append(flat[offset : offset + v.numel()].view_as(v))
            offset += v.numel()
    else:
        grads = [v.clone() for v in values]
    before = [g.clone() for g in grads]

    nn.utils.clip_grad_norm_(reference, 0.5)
    clip_grad_norm(grads, 0.5)

    for ours, theirs in zip(grads, reference, strict=True):
        assert theirs.grad is not None
        assert torch.equal(ours, theirs.grad)
    total = torch.linalg.vector_norm(torch.cat([g.flatten() for g in before]))
    if total <= 0.5:
        assert all(torch.equal(g, b) for g, b in zip(grads, before, strict=True))
    else:
        assert torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads])) == pytest.approx(
            0.5, rel=1e-5
        )


@pytest.mark.parametrize("fused", [True, False])
def test_bound_step_is_optim_step_bit_for_bit(fused: bool) -> None:
    """``ActorAdam.bound_step`` (for a fused group: the two kernels, called directly) leaves
    parameters and Adam state exactly where ``optim.step()`` does, across a learning-rate
    decay step."""
    torch.manual_seed(0)
    nets = [nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    optims = [ActorAdam(n.parameters(), 3e-4, True, fused=fused) for n in nets]
    for o in optims:
        o.set_schedule(4)
    step = optims[1].bound_step()
    for p in [*nets[0].parameters(), *nets[1].parameters()]:
        p.grad = torch.zeros_like(p)
    gen = torch.Generator().manual_seed(1)
    for _epoch in range(2):
        for _ in range(5):
            for a, b in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
                g = torch.randn(a.shape, generator=gen)
                assert a.grad is not None and b.grad is not None
                a.grad.copy_(g)
                b.grad.copy_(g)  # the same tensor bound_step gathered on its first call
            optims[0].optim.step()
            step()
        for o in optims:
            o.end_epoch()
    assert optims[1].lr == optims[0].lr < 3e-4
    for a, b in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        assert torch.equal(a, b)
        sa, sb = optims[0].optim.state[a], optims[1].optim.state[b]
        assert all(torch.equal(sa[k], sb[k]) for k in ("step", "exp_avg", "exp_avg_sq"))
