"""The parallel (chunked) form of the AM-SU, for training: exact without a reset and
with the linear astrocyte. Projections for all steps at once, the two linear
recurrences chunk by chunk (:mod:`astro_neuron.functional.scan`), the read-out and the
threshold element-wise. Cost O(T * C * d) for chunk size ``C``; no T x T matrix.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from astro_neuron.functional.amsu.naive import prepare
from astro_neuron.functional.amsu.spec import AMSUOutput, AMSUParams, AMSUSpec, AMSUState
from astro_neuron.functional.amsu.step import (
    activity, delay_line, fire, log_gate, project_all, readout, sense, turn,
)
from astro_neuron.functional.rotary import rotary_table, rotate
from astro_neuron.functional.scan import (
    _log_decay, astro_chunked, astro_gated_chunked, leaky_chunked,
)
from astro_neuron.functional.scan_fla import astro_fla, astro_gated_fla, use_fla

__all__ = ["amsu_chunked", "check_parallel"]


def check_parallel(spec: AMSUSpec) -> None:
    """Raise a clear error when the parallel form is not exact for ``spec``."""
    if spec.reset != "none":
        raise ValueError(
            f"the parallel (chunked) form is exact only without a reset, but reset="
            f"{spec.reset!r} couples the membrane to the spikes; use the recurrent form "
            "(mode='recurrent' or mode='loop')")
    if spec.astrocyte and not spec.linear_astro:
        raise ValueError(
            f"the parallel (chunked) form needs the linear astrocyte, but astro_model="
            f"{spec.astro_model.name!r} is nonlinear (sequential only); use mode='recurrent' "
            "or mode='loop'")


def amsu_chunked(x_seq: Tensor, state: Optional[AMSUState], p: AMSUParams, spec: AMSUSpec,
                 chunk_size: int = 64) -> tuple[AMSUOutput, AMSUState]:
    """Parallel form (training): same results as :func:`~.naive.amsu_loop` without a
    reset."""
    check_parallel(spec)
    state = prepare(x_seq, state, p, spec, seq=True)
    I, k, v, q, zg, ze = project_all(x_seq, p, spec)
    if spec.neuron_path:
        u, u_T = leaky_chunked(I, p.beta, state.u, chunk_size)
    else:
        u, u_T = state.u.expand(x_seq.shape[0], *state.u.shape), state.u
    H, conv, phase = state.H, state.conv, state.phase
    if spec.astrocyte:
        if spec.conv_size > 1 and x_seq.shape[0]:
            k, v, conv = delay_line(k, v, conv, p.conv, spec)
        k, q = sense(k, q, spec)
        if spec.activity_clock:
            a = activity(ze, spec)           # (T, B, A)
            if x_seq.shape[0]:               # the phase summed from the state's, in order
                ph = torch.cat([phase[None], a.to(phase.dtype)]).cumsum(0)[1:]  # float64
                k, q = turn(k, q, ph, a, spec)
                phase = ph[-1]
        elif spec.rotary:
            if spec.rotary_dims:             # one table for keys and queries
                cos, sin = rotary_table(state.t, k.shape, spec.rotary_base,
                                        spec.rotary_dims, k.dtype, k.device)
                k, q = rotate(k, cos, sin), rotate(q, cos, sin)
        if spec.gated or spec.activity_decay:   # input-dependent: exponents <= 0 only
            lam = _log_decay(p.gamma.to(k.dtype)).to(k.dtype)
            if spec.activity_decay:              # gamma ** a_t: lam a_t
                lam = lam * a[..., None].to(k.dtype)
            if spec.gated:
                lg = log_gate(zg, spec)
                if spec.retention == "selective":
                    k = k * -torch.expm1(lg)
                lam = lam + lg
            if use_fla(q, v):               # CUDA: the GLA kernels (scan_fla.py)
                o, H = astro_gated_fla(q, k, v, lam, H)
            else:
                o, H = astro_gated_chunked(q, k, v, lam, H, chunk_size)
        elif use_fla(q, v):
            o, H = astro_fla(q, k, v, p.gamma, H)
        else:
            o, H = astro_chunked(q, k, v, p.gamma, H, chunk_size)
        o = readout(o, p, spec)
    else:
        o = torch.zeros_like(u)
    s = fire(u + o, p.threshold, spec)
    return AMSUOutput(s, u, o), AMSUState(u_T, H, state.t + x_seq.shape[0], conv, phase)
