"""Rotary position embedding (Su et al. 2021) for the astrocyte's keys and queries.

Pairs channel ``i`` with channel ``i + d/2`` (the "rotate half" layout) and rotates
each pair by ``pos * base^(-2i/n)``, ``n = d`` by default. With ``n_rot < d``
(partial rotary, like GPT-NeoX's ``rotary_pct``) only the pairs ``i < n_rot/2`` turn,
with the frequencies of an ``n_rot``-channel rotary; the other pairs pass through
unchanged (cosine 1, sine 0). Angles are computed in float64 and only the rotated
values are cast to the input dtype, so the step form (one position) and the chunked
form (a range of positions) rotate identically.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Optional

import torch
from torch import Tensor

__all__ = ["rotary", "rotary_angles", "rotary_dims", "rotary_table", "rotate", "phase_freqs",
           "phase_table"]


def rotary_dims(d: int, fraction: float) -> int:
    """Rotated channels of a ``d``-channel key for ``fraction`` in [0, 1]: the even
    number nearest ``fraction * d`` (whole pairs)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"rotary_fraction must lie in [0, 1], got {fraction!r}")
    return 2 * int(round(fraction * d / 2))


def rotary_angles(positions: Tensor, dim: int, base: float = 10000.0,
                  n_rot: Optional[int] = None) -> tuple[Tensor, Tensor]:
    """``cos`` and ``sin`` tables ``[len(positions), dim/2]`` (float64).

    ``n_rot`` (even, <= ``dim``; default ``dim``): pairs ``i >= n_rot/2`` get
    ``cos = 1``, ``sin = 0`` (not rotated).
    """
    if dim % 2:
        raise ValueError(f"rotary positions need an even key size, got d_key={dim}")
    n = dim if n_rot is None else n_rot
    if n % 2 or not 0 <= n <= dim:
        raise ValueError(f"n_rot must be even and in [0, {dim}], got {n_rot!r}")
    pos = positions.to(torch.float64)[:, None]
    if n == 0:
        ang = pos * torch.zeros(dim // 2, dtype=torch.float64, device=positions.device)
        return torch.cos(ang), torch.sin(ang)
    ang = pos * _inv_freq(n, float(base), positions.device)
    cos, sin = torch.cos(ang), torch.sin(ang)
    if n < dim:
        pad = (0, (dim - n) // 2)
        cos = torch.nn.functional.pad(cos, pad, value=1.0)
        sin = torch.nn.functional.pad(sin, pad, value=0.0)
    return cos, sin


@lru_cache(maxsize=64)
def _inv_freq(dim: int, base: float, device: torch.device) -> Tensor:
    """``base^(-2i/dim)`` for i < dim/2, float64 (cached: the step calls this often)."""
    return base ** (-torch.arange(0, dim // 2, dtype=torch.float64, device=device) * 2 / dim)


def rotary_table(start: int, shape, base: float = 10000.0, n_rot: Optional[int] = None,
                 dtype: torch.dtype = torch.float32, device=None) -> tuple[Tensor, Tensor]:
    """``cos``, ``sin`` for a tensor of ``shape`` ``[T, ..., d]`` at positions
    ``start .. start + T - 1``: shaped ``[T, ..., d/2]`` and materialised (expanded over
    the middle dimensions), in ``dtype``; the angles in float64, as
    :func:`rotary_angles`. Build it once and :func:`rotate` every tensor of that shape
    and those positions with it (keys and queries, forward and backward): products with
    a broadcast ``[T, 1, .., d/2]`` table run several times slower on CPU than with a
    dense one, and building the dense one costs about one such product."""
    T, d = shape[0], shape[-1]
    pos = torch.arange(start, start + T, device=device)
    cos, sin = rotary_angles(pos, d, base, n_rot)
    view = (T,) + (1,) * (len(shape) - 2) + (d // 2,)
    full = tuple(shape[:-1]) + (d // 2,)
    return (cos.to(dtype).reshape(view).expand(full).contiguous(),
            sin.to(dtype).reshape(view).expand(full).contiguous())


def phase_freqs(dim: int, n_rot: int, device=None, rate: float = 1.0) -> Tensor:
    """Frequencies ``[dim/2]`` (float64) of a clock of phase ``p`` turning ``n_rot``
    channels: ``rate * 2 pi f / n_rot`` for pairs ``f < n_rot/2``, evenly spaced from 0
    (pair 0 never turns), and 0 for the pairs not rotated. At ``rate`` 1 a phase advanced
    by one unit turns pair ``f`` by ``f`` ``n_rot``-ths of a circle, so keys at phases
    that differ by a whole number ``m`` (``0 < m < n_rot``) are apart on a discrete
    Fourier basis: the clock holds its phase modulo ``n_rot`` as sharply as ``n_rot/2``
    pairs allow (the ``clock="activity"`` option of the AM-SU). ``rate`` (> 0, the
    AM-SU's ``clock_rate``) turns every pair ``rate`` times as far per unit of phase:
    the same basis at phase steps of ``1 / rate``."""
    if dim % 2 or n_rot % 2 or not 0 < n_rot <= dim:
        raise ValueError(f"phase_freqs needs an even dim and an even n_rot in (0, dim], got "
                         f"dim={dim}, n_rot={n_rot}")
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"phase_freqs needs a finite rate > 0, got {rate!r}")
    f = torch.arange(dim // 2, dtype=torch.float64, device=device)
    return torch.where(f < n_rot // 2, f * (2 * math.pi * rate / n_rot), torch.zeros_like(f))


def phase_table(phase: Tensor, dim: int, n_rot: int, dtype: Optional[torch.dtype] = None,
                rate: float = 1.0) -> tuple[Tensor, Tensor]:
    """``cos``, ``sin`` ``[*phase.shape, dim/2]`` of the phases ``phase`` (any shape, any
    floating dtype, differentiable) at the frequencies of :func:`phase_freqs`; the angles
    in float64, the tables in ``dtype`` (default ``phase.dtype``). :func:`rotate` a
    ``[..., dim]`` tensor with them (the gradient reaches ``phase`` through the tables);
    ``rate``: :func:`phase_freqs`'s."""
    dtype = dtype or phase.dtype
    ang = phase.to(torch.float64)[..., None] * phase_freqs(dim, n_rot, phase.device, rate)
    return torch.cos(ang).to(dtype), torch.sin(ang).to(dtype)


class _Rotate(torch.autograd.Function):
    """``[x1 cos - x2 sin, x1 sin + x2 cos]`` written into one new tensor (one
    half-width temporary, no ``cat``); the backward is the rotation by the opposite
    angle, written the same way. The tables take no gradient."""

    @staticmethod
    def forward(ctx, x, cos, sin):  # type: ignore[override]
        ctx.save_for_backward(cos, sin)
        return _turn(x, cos, sin, 1)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        cos, sin = ctx.saved_tensors
        return _turn(g, cos, sin, -1), None, None


def _turn(x: Tensor, cos: Tensor, sin: Tensor, sign: int) -> Tensor:
    # a key sliced from the fused projection is strided; the four half-width products
    # run 3-5x slower on it than one copy plus the products on a dense tensor
    x = x.contiguous()
    h = x.shape[-1] // 2
    x1, x2 = x[..., :h], x[..., h:]
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    o1, o2 = out[..., :h], out[..., h:]
    # products rounded, then added (no fused multiply-add: addcmul_ may fuse), so the
    # result is bitwise the decode step's ``x * C + swap_halves(x) * S``
    tmp = torch.mul(x2, sin)
    torch.mul(x1, cos, out=o1)
    o1.sub_(tmp) if sign > 0 else o1.add_(tmp)
    torch.mul(x1, sin, out=tmp)
    torch.mul(x2, cos, out=o2)
    o2.add_(tmp) if sign > 0 else o2.sub_(tmp)
    return out


def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate ``x`` ``[T, ..., d]`` by the tables of :func:`rotary_table` (or any
    ``cos``, ``sin`` that broadcast against ``x``'s halves)."""
    if torch.is_grad_enabled() and (cos.requires_grad or sin.requires_grad):
        h = x.shape[-1] // 2
        x1, x2 = x[..., :h], x[..., h:]
        return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return _Rotate.apply(x, cos, sin)


def rotary(x: Tensor, start: int, base: float = 10000.0, n_rot: Optional[int] = None) -> Tensor:
    """Rotate ``x`` ``[T, ..., d]`` for positions ``start .. start + T - 1``.

    ``n_rot``: rotate only the pairs ``(i, i + d/2)``, ``i < n_rot/2`` (default: all).
    """
    if n_rot == 0:
        return x
    cos, sin = rotary_table(start, x.shape, base, n_rot, x.dtype, x.device)
    return rotate(x, cos, sin)
