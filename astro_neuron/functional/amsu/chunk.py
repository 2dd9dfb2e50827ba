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
from astro_neuron.functional.amsu.step import fire, project, readout
from astro_neuron.functional.rotary import rotary
from astro_neuron.functional.scan import astro_chunked, leaky_chunked

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
    I, k, v, q = project(x_seq, p, spec)
    if spec.neuron_path:
        u, u_T = leaky_chunked(I, p.beta, state.u, chunk_size)
    else:
        u, u_T = state.u.expand(x_seq.shape[0], *state.u.shape), state.u
    H = state.H
    if spec.astrocyte:
        if spec.rotary:
            k = rotary(k, state.t, spec.rotary_base, spec.rotary_dims)
            q = rotary(q, state.t, spec.rotary_base, spec.rotary_dims)
        o, H = astro_chunked(q, k, v, p.gamma, H, chunk_size)
        o = readout(o, p, spec)
    else:
        o = torch.zeros_like(u)
    s = fire(u + o, p.threshold, spec)
    return AMSUOutput(s, u, o), AMSUState(u_T, H, state.t + x_seq.shape[0])
