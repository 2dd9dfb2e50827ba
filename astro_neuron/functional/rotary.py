"""Rotary position embedding (Su et al. 2021) for the astrocyte's keys and queries.

Pairs channel ``i`` with channel ``i + d/2`` (the "rotate half" layout) and rotates
each pair by ``pos * base^(-2i/d)``. Angles are computed in float64 and only the
rotated values are cast to the input dtype, so the step form (one position) and the
chunked form (a range of positions) rotate identically.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor

__all__ = ["rotary", "rotary_angles"]


def rotary_angles(positions: Tensor, dim: int, base: float = 10000.0) -> tuple[Tensor, Tensor]:
    """``cos`` and ``sin`` tables ``[len(positions), dim/2]`` (float64)."""
    if dim % 2:
        raise ValueError(f"rotary positions need an even key size, got d_key={dim}")
    ang = positions.to(torch.float64)[:, None] * _inv_freq(dim, float(base), positions.device)
    return torch.cos(ang), torch.sin(ang)


@lru_cache(maxsize=64)
def _inv_freq(dim: int, base: float, device: torch.device) -> Tensor:
    """``base^(-2i/dim)`` for i < dim/2, float64 (cached: the step calls this often)."""
    return base ** (-torch.arange(0, dim // 2, dtype=torch.float64, device=device) * 2 / dim)


def rotary(x: Tensor, start: int, base: float = 10000.0) -> Tensor:
    """Rotate ``x`` ``[T, ..., d]`` for positions ``start .. start + T - 1``."""
    T, d = x.shape[0], x.shape[-1]
    pos = torch.arange(start, start + T, device=x.device)
    cos, sin = rotary_angles(pos, d, base)
    shape = (T,) + (1,) * (x.dim() - 2) + (d // 2,)
    cos = cos.reshape(shape).to(x.dtype)
    sin = sin.reshape(shape).to(x.dtype)
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
