"""A plain leaky integrate-and-fire layer (no astrocyte, no projection).

``u_t = beta * u_{t-1} + x_t``; spikes and resets exactly as the AM-SU's
(:func:`~.amsu.fire`, :func:`~.amsu.reset_membrane`), so an LIF layer equals an
AM-SU with the astrocyte off fed with ``I_t = x_t``. Used for the language model's
channel mixing, the plain-spiking baselines and Linear + LIF networks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from astro_neuron.functional.amsu import RESETS, _pos_int, fire, reset_membrane
from astro_neuron.functional.scan import leaky_chunked, leaky_step
from astro_neuron.functional.surrogate import ATan, as_surrogate

__all__ = ["LIFSpec", "lif_step", "lif_loop", "lif_chunked"]


@dataclass(frozen=True)
class LIFSpec:
    """Options of an LIF layer (same meaning as in :class:`~.amsu.AMSUSpec`)."""

    n_neurons: int
    reset: str = "none"
    spike_levels: int = 1
    spiking: bool = True
    detach_reset: bool = False
    surrogate: Any = field(default_factory=ATan)

    def __post_init__(self) -> None:
        _pos_int("n_neurons", self.n_neurons)
        _pos_int("spike_levels", self.spike_levels)
        if self.reset not in RESETS:
            raise ValueError(f"reset must be one of {RESETS}, got {self.reset!r}")
        object.__setattr__(self, "surrogate", as_surrogate(self.surrogate))


def _check(x: Tensor, n: int, rank: int) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"input must be a torch.Tensor, got {type(x).__name__}")
    layout = "[T, B, ..., N]" if rank == 3 else "[B, ..., N]"
    if x.dim() < rank - 1 or x.shape[-1] != n:
        raise ValueError(f"input must be {layout} with N={n}, got shape {list(x.shape)}")


def lif_step(x: Tensor, u: Tensor, beta: Tensor, threshold: Tensor,
             spec: LIFSpec) -> tuple[Tensor, Tensor, Tensor]:
    """One step: returns ``(spikes, u before reset, u after reset)``."""
    u = leaky_step(u, x, beta)
    s = fire(u, threshold, spec)
    return s, u, reset_membrane(u, s, threshold, spec)


def lif_loop(x_seq: Tensor, u0: Tensor | None, beta: Tensor, threshold: Tensor,
             spec: LIFSpec) -> tuple[Tensor, Tensor, Tensor]:
    """Reference loop: ``(spikes [T, ...], u before reset [T, ...], u_T)``."""
    _check(x_seq, spec.n_neurons, 3)
    u = torch.zeros_like(x_seq[0]) if u0 is None else u0
    ss, us = [], []
    for x_t in x_seq.unbind(0):
        s, u_pre, u = lif_step(x_t, u, beta, threshold, spec)
        ss.append(s)
        us.append(u_pre)
    if not ss:
        return x_seq.clone(), x_seq.clone(), u
    return torch.stack(ss), torch.stack(us), u


def lif_chunked(x_seq: Tensor, u0: Tensor | None, beta: Tensor, threshold: Tensor,
                spec: LIFSpec, chunk_size: int = 64) -> tuple[Tensor, Tensor, Tensor]:
    """Parallel form of :func:`lif_loop` (no reset only)."""
    if spec.reset != "none":
        raise ValueError(f"the parallel (chunked) form is exact only without a reset, got "
                         f"reset={spec.reset!r}; use the loop")
    _check(x_seq, spec.n_neurons, 3)
    u, u_T = leaky_chunked(x_seq, beta, u0, chunk_size)
    return fire(u, threshold, spec), u, u_T
