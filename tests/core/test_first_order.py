"""The clipped-ratio epoch's own helpers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from safebench.core.first_order import clip_grad_norm


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
