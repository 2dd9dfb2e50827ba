"""Step-by-step runs that keep the astrocyte state of every step (for recorders)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from astro_neuron.astrocytes import astro_summary
from astro_neuron.functional.amsu import AMSUOutput, AMSUParams, AMSUSpec, AMSUState, amsu_step
from astro_neuron.validate import choice

__all__ = ["TRACE_KINDS", "astro_trajectory"]

TRACE_KINDS = ("summary", "full")


def astro_trajectory(x_seq: Tensor, state: Optional[AMSUState], p: AMSUParams, spec: AMSUSpec,
                     keep: str = "summary") -> tuple[AMSUOutput, AMSUState, Optional[Tensor]]:
    """:func:`~astro_neuron.functional.amsu_step` over ``x_seq`` ``[T, B, in]``, keeping
    the astrocyte state after every step.

    Returns ``(AMSUOutput of [T, B, N], final state, trace)``; ``trace`` is
    ``[T, B, A]`` (``keep="summary"``: :func:`~astro_neuron.astrocytes.astro_summary`)
    or ``[T, B, *H.shape[1:]]`` (``keep="full"``), ``None`` without astrocyte.
    """
    choice("keep", keep, TRACE_KINDS)
    outs, trace = [], []
    for t in range(x_seq.shape[0]):
        out, state = amsu_step(x_seq[t], state, p, spec)
        outs.append(out)
        if state.H is not None:
            trace.append(astro_summary(state.H, spec.astro_model) if keep == "summary"
                         else state.H)
    if not outs:
        raise ValueError("x_seq has no time steps (T = 0): nothing to record")
    out = AMSUOutput(*(torch.stack(z) for z in zip(*outs)))
    return out, state, (torch.stack(trace) if trace else None)
