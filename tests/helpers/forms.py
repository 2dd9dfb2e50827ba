"""Shared by the tests that compare the AM-SU's forms: one run with gradients."""

from __future__ import annotations

import torch


def run_with_grads(layer, x, mode, state=None):
    """Run ``layer`` in ``mode`` on ``x`` from ``state`` and backpropagate a random
    projection of the spikes, the pre-threshold values, and the final states.
    Returns ``(out, final state, {parameter name | "input": gradient})``."""
    layer.zero_grad()
    x = x.clone().requires_grad_(True)
    out, st = layer.run(x, state, mode=mode)
    g = torch.Generator().manual_seed(1)
    r1 = torch.randn(out.spikes.shape, generator=g, dtype=x.dtype)
    r2 = torch.randn(out.u.shape, generator=g, dtype=x.dtype)
    r3 = torch.randn(st.H.shape, generator=g, dtype=x.dtype)
    loss = (out.spikes * r1).sum() + ((out.u + out.o) * r2).sum() + (st.u.sum() + (st.H * r3).sum())
    loss.backward()
    grads = {n: p.grad.clone() for n, p in layer.named_parameters() if p.requires_grad}
    grads["input"] = x.grad.clone()
    return out, st, grads
