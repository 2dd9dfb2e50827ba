"""The sequential forms of the AM-SU: the step, the loop of steps (the reference) and
the recurrent form (the loop with the projections hoisted out of it; exact for every
option, resets and nonlinear astrocytes included). Time-major: ``x_seq`` ``[T, B, in]``.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from astro_neuron.functional.amsu.spec import (
    AMSUOutput, AMSUParams, AMSUSpec, AMSUState, check_state, init_state,
)
from astro_neuron.functional.amsu.step import dynamics_step, project_all

__all__ = ["amsu_step", "amsu_loop", "amsu_recurrent", "check_input", "prepare"]


def check_input(x: Tensor, p: AMSUParams, spec: AMSUSpec, seq: bool) -> None:
    """Raise a clear error when ``x`` is not a ``[T, B, in]`` (``seq``) or ``[B, in]``
    floating-point tensor of the layer's dtype and device."""
    if not isinstance(x, Tensor):
        raise TypeError(f"input must be a torch.Tensor, got {type(x).__name__}")
    want = 3 if seq else 2
    layout = "[T, B, in_features]" if seq else "[B, in_features]"
    if x.dim() != want:
        raise ValueError(f"input must have rank {want} {layout}, got shape {list(x.shape)}")
    if x.shape[-1] != spec.in_features:
        raise ValueError(f"input has {x.shape[-1]} features (last dim of {list(x.shape)}), "
                         f"the layer expects in_features={spec.in_features}")
    if not x.is_floating_point():
        raise TypeError(f"input must be a floating-point tensor, got {x.dtype}")
    w = p.weight
    if x.dtype != w.dtype:
        raise TypeError(f"input dtype {x.dtype} differs from the layer's {w.dtype}; "
                        "convert one (e.g. layer.to(x.dtype))")
    if x.device != w.device:
        raise ValueError(f"input is on {x.device} but the layer is on {w.device}; "
                         "move one (e.g. layer.to(x.device))")
    if x.device.type == "meta":
        raise ValueError("input is on the 'meta' device, which holds shapes but no values; "
                         "the unit computes values: give a CPU or GPU tensor")


def prepare(x: Tensor, state: Optional[AMSUState], p: AMSUParams, spec: AMSUSpec,
            seq: bool) -> AMSUState:
    """Check ``x`` and ``state``; return the state to start from (zero when None)."""
    check_input(x, p, spec, seq)
    batch = x.shape[1] if seq else x.shape[0]
    if state is None:
        return init_state(spec, batch, x.device, x.dtype)
    check_state(state, spec, batch, x)
    return AMSUState(*state)


def _steps(seq: Optional[Tensor], T: int) -> list:
    """Per-step slices via ``unbind`` (its backward is one stack; indexing ``seq[t]``
    in a loop would allocate a full-size zero gradient at every step)."""
    return [None] * T if seq is None else list(seq.unbind(0))


def _stack(outs: list, x_seq: Tensor, spec: AMSUSpec) -> AMSUOutput:
    """The per-step outputs stacked to ``[T, B, N]`` (correctly shaped when T = 0)."""
    if not outs:
        empty = x_seq.new_zeros(0, x_seq.shape[1], spec.n_neurons)
        return AMSUOutput(empty, empty.clone(), empty.clone())
    return AMSUOutput(*(torch.stack(z) for z in zip(*outs)))


def amsu_step(x: Tensor, state: Optional[AMSUState], p: AMSUParams,
              spec: AMSUSpec) -> tuple[AMSUOutput, AMSUState]:
    """One step: ``x`` ``[B, in]`` -> (``AMSUOutput`` of ``[B, N]``, new state)."""
    state = prepare(x, state, p, spec, seq=False)
    I, k, v, q, zg, ze = project_all(x, p, spec)
    return dynamics_step(I, k, v, q, state, p, spec, zg, ze)


def amsu_loop(x_seq: Tensor, state: Optional[AMSUState], p: AMSUParams,
              spec: AMSUSpec) -> tuple[AMSUOutput, AMSUState]:
    """Reference: :func:`amsu_step` applied to each of the T steps of ``x_seq``."""
    state = prepare(x_seq, state, p, spec, seq=True)
    outs = []
    for x_t in _steps(x_seq, x_seq.shape[0]):
        out, state = amsu_step(x_t, state, p, spec)
        outs.append(out)
    return _stack(outs, x_seq, spec), state


def amsu_recurrent(x_seq: Tensor, state: Optional[AMSUState], p: AMSUParams,
                   spec: AMSUSpec) -> tuple[AMSUOutput, AMSUState]:
    """The loop with all projections done at once; exact for every option."""
    state = prepare(x_seq, state, p, spec, seq=True)
    T = x_seq.shape[0]
    I, k, v, q, zg, ze = (_steps(z, T) for z in project_all(x_seq, p, spec))
    outs = []
    for t in range(T):
        out, state = dynamics_step(I[t], k[t], v[t], q[t], state, p, spec, zg[t], ze[t])
        outs.append(out)
    return _stack(outs, x_seq, spec), state
