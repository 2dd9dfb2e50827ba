"""Inputs in biological units: Poisson spike trains and injected currents.

Every generator returns a time-major tensor ``[T, B, n]`` (``T = round(duration /
dt)``), ready for an :class:`~astro_neuron.AMSU` or a
:class:`~astro_neuron.neuro.TripartitePopulation`. Rates are in Hz and times in ms
(``dt`` in ms), so ``rate_hz * dt / 1000`` is the spike probability per step.

    >>> from astro_neuron.neuro import poisson, step_current
    >>> x = poisson(rate_hz=20.0, duration_ms=1000.0, n=100, dt_ms=1.0)       # [1000, 1, 100]
    >>> I = step_current(1.5, 1000.0, n=80, onset_ms=200.0, offset_ms=700.0)   # [1000, 1, 80]
"""

from __future__ import annotations

import math
from typing import Optional, Union

import torch
from torch import Tensor

from astro_neuron.validate import positive_int

__all__ = ["n_steps", "poisson", "step_current", "sine_current"]

RateLike = Union[float, Tensor]


def _positive(name: str, v: float) -> float:
    v = float(v)
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be positive and finite, got {v!r}")
    return v


def _count(name: str, v: int) -> int:
    return positive_int(name, v)


def n_steps(duration_ms: float, dt_ms: float) -> int:
    """Number of steps of ``dt_ms`` in ``duration_ms`` (rounded to the nearest step)."""
    T = round(_positive("duration_ms", duration_ms) / _positive("dt_ms", dt_ms))
    if T < 1:
        raise ValueError(f"duration_ms={duration_ms} is shorter than one step (dt_ms={dt_ms})")
    return T


def poisson(rate_hz: RateLike, duration_ms: float, n: int, dt_ms: float = 1.0,
            batch_size: int = 1, generator: Optional[torch.Generator] = None,
            dtype: torch.dtype = torch.float32) -> Tensor:
    """Independent Poisson spike trains (Bernoulli per step), ``[T, B, n]`` of 0/1.

    ``rate_hz``: a number, per channel ``[n]``, or time-varying ``[T, n]`` / ``[T, 1]``
    (e.g. a stimulus switched on for a while). Needs ``rate_hz * dt_ms / 1000 <= 1``.
    """
    T = n_steps(duration_ms, dt_ms)
    n, B = _count("n", n), _count("batch_size", batch_size)
    rate = torch.as_tensor(rate_hz, dtype=torch.float64)
    if not bool(torch.isfinite(rate).all()) or bool((rate < 0).any()):
        raise ValueError("rate_hz must be finite and >= 0")
    if rate.dim() == 1:
        if rate.shape[0] != n:
            raise ValueError(f"rate_hz per channel must have shape [n]=[{n}], got {list(rate.shape)}")
        rate = rate[None]
    elif rate.dim() == 2:
        if rate.shape[0] != T or rate.shape[1] not in (1, n):
            raise ValueError(f"time-varying rate_hz must be [T, n] or [T, 1] with T={T} "
                             f"(duration / dt), got {list(rate.shape)}")
    elif rate.dim() != 0:
        raise ValueError(f"rate_hz must be a number, [n] or [T, n], got shape {list(rate.shape)}")
    p = rate * (dt_ms / 1000.0)
    if bool((p > 1).any()):
        raise ValueError(f"rate_hz up to {float(rate.max()):g} Hz exceeds one spike per step "
                         f"of {dt_ms} ms (max {1000.0 / dt_ms:g} Hz); lower the rate or dt_ms")
    p = p.to(torch.float32)
    if p.dim() == 2:
        p = p[:, None, :]                                   # [T, 1, n|1]
    p = p.expand(T, B, n)
    return torch.bernoulli(p, generator=generator).to(dtype)


def step_current(amplitude: float, duration_ms: float, n: int, dt_ms: float = 1.0,
                 onset_ms: float = 0.0, offset_ms: Optional[float] = None,
                 batch_size: int = 1, dtype: torch.dtype = torch.float32) -> Tensor:
    """A current step of ``amplitude`` from ``onset_ms`` to ``offset_ms`` (default: the
    end), ``[T, B, n]``. The amplitude is a physical current, constant in time, so the
    same step gives the same response at any ``dt``: for a
    :class:`~astro_neuron.neuro.TripartitePopulation` (``pop(x, current=I)``) it is in
    units of the threshold (the membrane potential it would hold; 1 = rheobase), for
    a :class:`~astro_neuron.neuro.network.Network` use ``I_e`` in pA instead."""
    T = n_steps(duration_ms, dt_ms)
    n, B = _count("n", n), _count("batch_size", batch_size)
    if not math.isfinite(float(amplitude)):
        raise ValueError(f"amplitude must be finite, got {amplitude!r}")
    offset_ms = duration_ms if offset_ms is None else offset_ms
    if not 0 <= onset_ms <= offset_ms:
        raise ValueError(f"need 0 <= onset_ms <= offset_ms, got {onset_ms} and {offset_ms}")
    t = torch.arange(T, dtype=torch.float64) * dt_ms
    on = ((t >= onset_ms) & (t < offset_ms)).to(dtype) * float(amplitude)
    return on[:, None, None].expand(T, B, n).clone()


def sine_current(amplitude: float, freq_hz: float, duration_ms: float, n: int,
                 dt_ms: float = 1.0, offset: float = 0.0, batch_size: int = 1,
                 dtype: torch.dtype = torch.float32) -> Tensor:
    """``offset + amplitude * sin(2 pi f t)``, ``[T, B, n]``."""
    T = n_steps(duration_ms, dt_ms)
    n, B = _count("n", n), _count("batch_size", batch_size)
    _positive("freq_hz", freq_hz)
    for name, v in (("amplitude", amplitude), ("offset", offset)):
        if not math.isfinite(float(v)):
            raise ValueError(f"{name} must be finite, got {v!r}")
    t = torch.arange(T, dtype=torch.float64) * (dt_ms / 1000.0)
    wave = offset + amplitude * torch.sin(2 * math.pi * freq_hz * t)
    return wave.to(dtype)[:, None, None].expand(T, B, n).clone()
