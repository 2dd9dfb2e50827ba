"""Plots of spiking activity (matplotlib). Each function takes ``ax=None``, draws
on that Axes (or a new one), and returns the Axes; nothing calls ``plt.show()``.
matplotlib is imported when a function is called, not when this module is imported.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

__all__ = ["raster"]


def _axes(ax):
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    return plt.figure(figsize=(8, 4)).add_subplot()


def _as_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def raster(spikes, ax=None, dt: float = 1.0, labels: Optional[Sequence[str]] = None,
           colors: Optional[Sequence] = None, marker_size: float = 2.0, title: str = ""):
    """Spike raster of ``spikes`` ``[T, N]`` (or a list of such arrays, one per
    population, stacked bottom to top and coloured). One point per non-zero entry
    (graded spikes count once), at ``(t * dt, neuron)``.
    """
    groups = spikes if isinstance(spikes, (list, tuple)) else [spikes]
    ax = _axes(ax)
    offset = 0
    for i, group in enumerate(groups):
        s = _as_numpy(group)
        if s.ndim != 2:
            raise ValueError(f"raster needs [T, N] spikes per population, got shape {s.shape}")
        t, n = np.nonzero(s)
        kw = {}
        if colors is not None:
            kw["color"] = colors[i]
        ax.scatter(t * dt, n + offset, s=marker_size, marker="|",
                   label=None if labels is None else labels[i], **kw)
        offset += s.shape[1]
    ax.set_xlabel("time" if dt == 1.0 else f"time (x{dt:g})")
    ax.set_ylabel("neuron")
    ax.set_ylim(-0.5, offset - 0.5)
    if labels is not None:
        ax.legend(loc="upper right", markerscale=4)
    if title:
        ax.set_title(title)
    return ax
