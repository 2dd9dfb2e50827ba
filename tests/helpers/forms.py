"""Shared by the tests that compare the forms of the AM-SU and the LIF: one run with
gradients, the fused decode form run over a sequence."""

from __future__ import annotations

import torch

from astro_neuron.functional.amsu import AMSUState
from astro_neuron.functional.amsu.decode import decode_shape, decode_step, fuse, rotary_rows


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


def lif_run_with_grads(layer, x, mode, u0=None):
    """As :func:`run_with_grads` for an :class:`astro_neuron.LIF`: spikes, the membrane
    before reset and the final membrane weighted randomly, then backpropagated.
    Returns ``((spikes, u, u_T), {parameter name | "input" | "u0": gradient})``."""
    layer.zero_grad()
    x = x.clone().requires_grad_(True)
    u0 = None if u0 is None else u0.clone().requires_grad_(True)
    s, u, u_T = layer.run(x, u0, mode=mode)
    g = torch.Generator().manual_seed(2)
    r1 = torch.randn(s.shape, generator=g, dtype=x.dtype)
    r2 = torch.randn(u.shape, generator=g, dtype=x.dtype)
    r3 = torch.randn(u_T.shape, generator=g, dtype=x.dtype)
    ((s * r1).sum() + (u * r2).sum() + (u_T * r3).sum()).backward()
    grads = {n: p.grad.clone() for n, p in layer.named_parameters() if p.grad is not None}
    grads["input"] = x.grad.clone()
    if u0 is not None:
        grads["u0"] = u0.grad.clone()
    return (s, u, u_T), grads


def decode_run(layer, x, state, full=False):
    """The fused decode form of an :class:`astro_neuron.AMSU` over ``x`` ``[T, B, in]``
    from ``state``: one :func:`~astro_neuron.functional.amsu.decode.decode_step` per
    step (in place on copies of the state, the delay line and the activity clock
    included). Returns ``(drive y [T, B, N], u_T, H_T)``, or with ``full`` ``(y, final
    AMSUState)``."""
    spec = layer.spec
    L, k = fuse(layer.params(), spec), decode_shape(spec)
    u = state.u.clone()
    H = None if state.H is None else state.H.clone()
    buf = None if state.conv is None else state.conv.clone()
    phase = None if state.phase is None else state.phase.clone()
    T = x.shape[0]
    C = S = None
    if spec.rotary:
        C, S = rotary_rows(torch.arange(state.t, state.t + T), spec.d_key, spec.rotary_base,
                           x.dtype, spec.rotary_dims)
    ys = []
    with torch.no_grad():
        for t in range(T):
            rows = (None, None) if C is None else (C[t], S[t])
            ys.append(decode_step(x[t], u, H, L, k, *rows, buf, phase).clone())
    if full:
        return torch.stack(ys), AMSUState(u, H, state.t + T, buf, phase)
    return torch.stack(ys), u, H
