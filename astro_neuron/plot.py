"""Plots of spiking activity and astrocyte state (matplotlib).

Each function takes ``ax=None``, draws on that Axes (or on a new figure's), and
returns the Axes; nothing calls ``plt.show()``. matplotlib is imported when a
function is called, not when this module is imported. Inputs are arrays or tensors
of one sample, time first:

* :func:`raster`          spikes ``[T, N]`` or a list of them (populations / layers, coloured)
* :func:`membrane`        membrane potential traces ``[T, N]``
* :func:`astro_heatmap`   astrocyte state over time ``[T, A]`` as an image
* :func:`calcium_traces`  astrocyte state over time ``[T, A]`` as lines (calcium-like)
* :func:`rate_histogram`  firing rates per neuron
* :func:`token_raster`    one layer's spikes ``[T, N]`` across the tokens of a text
* :func:`mark_events`     vertical lines at named times (cue, delay, recall, ...)

``time_unit="ms"`` labels the time axis in ms and gives rates in Hz.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence, Union

import numpy as np

__all__ = ["raster", "membrane", "astro_heatmap", "calcium_traces", "rate_histogram",
           "token_raster", "mark_events", "token_text"]


def _axes(ax, figsize=(8, 4)):
    if ax is not None:
        return ax
    try:  # deferred: importing astro_neuron.plot must not load matplotlib (slow)
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is a core dependency
        raise ImportError("astro_neuron.plot needs matplotlib: pip install matplotlib") from None
    return plt.figure(figsize=figsize).add_subplot()


def _as_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _array(name: str, x, ndim: int = 2, layout: str = "[T, N]") -> np.ndarray:
    a = _as_numpy(x)
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {layout}, got shape {list(a.shape)}")
    if not np.issubdtype(a.dtype, np.number) and a.dtype != bool:
        raise TypeError(f"{name} must be numeric, got dtype {a.dtype}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or Inf")
    return a


def _time_label(dt: float, time_unit: Optional[str]) -> str:
    if time_unit:
        return f"time ({time_unit})"
    return "time" if dt == 1.0 else f"time (x{dt:g})"


def _check_dt(dt: float) -> float:
    dt = float(dt)
    if not np.isfinite(dt) or dt <= 0:
        raise ValueError(f"dt must be positive and finite, got {dt!r}")
    return dt


def _pick(n: int, chosen: Optional[Sequence[int]], limit: int, what: str) -> list[int]:
    if chosen is None:
        return list(range(min(n, limit)))
    chosen = [int(i) for i in chosen]
    bad = [i for i in chosen if not 0 <= i < n]
    if bad:
        raise ValueError(f"{what} {bad} out of range [0, {n})")
    return chosen


def raster(spikes, ax=None, dt: float = 1.0, labels: Optional[Sequence[str]] = None,
           colors: Optional[Sequence] = None, marker_size: float = 2.0, title: str = "",
           time_unit: Optional[str] = None):
    """Spike raster of ``spikes`` ``[T, N]`` (or a list of such arrays, one per
    population, stacked bottom to top, each its own colour). One point per non-zero
    entry (graded spikes count once), at ``(t * dt, neuron)``.
    """
    groups = spikes if isinstance(spikes, (list, tuple)) else [spikes]
    if not groups:
        raise ValueError("raster needs at least one [T, N] array")
    for name, seq in (("labels", labels), ("colors", colors)):
        if seq is not None and len(seq) != len(groups):
            raise ValueError(f"{name} has {len(seq)} entries for {len(groups)} populations")
    dt = _check_dt(dt)
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
        if i and offset:
            ax.axhline(offset - 0.5, color="0.8", lw=0.5)
        offset += s.shape[1]
    ax.set_xlabel(_time_label(dt, time_unit))
    ax.set_ylabel("neuron")
    ax.set_ylim(-0.5, offset - 0.5)
    if labels is not None:
        ax.legend(loc="upper right", markerscale=4)
    if title:
        ax.set_title(title)
    return ax


def membrane(u, ax=None, dt: float = 1.0, neurons: Optional[Sequence[int]] = None,
             threshold: Optional[float] = None, spikes=None, time_unit: Optional[str] = None,
             title: str = "", max_traces: int = 5):
    """Membrane potential ``u`` ``[T, N]`` of the chosen ``neurons`` (default: the first
    ``max_traces``), one line each; ``threshold`` draws a dashed line; ``spikes``
    ``[T, N]`` marks each spike of a drawn neuron with a dot on its trace."""
    u = _array("u", u)
    dt = _check_dt(dt)
    idx = _pick(u.shape[1], neurons, max_traces, "neurons")
    ax = _axes(ax)
    t = np.arange(u.shape[0]) * dt
    for j in idx:
        line, = ax.plot(t, u[:, j], lw=0.9, label=f"neuron {j}")
        if spikes is not None:
            s = _array("spikes", spikes)
            if s.shape != u.shape:
                raise ValueError(f"spikes {list(s.shape)} and u {list(u.shape)} differ in shape")
            ts = np.nonzero(s[:, j])[0]
            ax.plot(ts * dt, u[ts, j], ".", color=line.get_color(), ms=4)
    if threshold is not None:
        ax.axhline(float(threshold), color="k", ls="--", lw=0.8, label="threshold")
    ax.set_xlabel(_time_label(dt, time_unit))
    ax.set_ylabel("membrane u (units of threshold)")
    if idx:
        ax.legend(loc="upper right", fontsize="small")
    if title:
        ax.set_title(title)
    return ax


def astro_heatmap(astro, ax=None, dt: float = 1.0, time_unit: Optional[str] = None,
                  label: str = "astrocyte state", title: str = "", cmap: str = "viridis",
                  colorbar: bool = True):
    """Astrocyte state ``[T, A]`` (one number per astrocyte and step, e.g. the
    recorder's ``astro`` field) as an image: astrocytes on the y axis, time on x."""
    a = _array("astro", astro, layout="[T, A]")
    dt = _check_dt(dt)
    ax = _axes(ax)
    T, A = a.shape
    im = ax.imshow(a.T, aspect="auto", origin="lower", interpolation="nearest", cmap=cmap,
                   extent=(0.0, T * dt, -0.5, A - 0.5))
    if colorbar:
        ax.figure.colorbar(im, ax=ax, label=label)
    ax.set_xlabel(_time_label(dt, time_unit))
    ax.set_ylabel("astrocyte")
    if A <= 20:
        ax.set_yticks(range(A))
    if title:
        ax.set_title(title)
    return ax


def calcium_traces(astro, ax=None, dt: float = 1.0, astrocytes: Optional[Sequence[int]] = None,
                   time_unit: Optional[str] = None, label: str = "astrocyte state",
                   title: str = "", max_traces: int = 8):
    """Astrocyte state ``[T, A]`` as one line per astrocyte (a calcium-like trace)."""
    a = _array("astro", astro, layout="[T, A]")
    dt = _check_dt(dt)
    idx = _pick(a.shape[1], astrocytes, max_traces, "astrocytes")
    ax = _axes(ax)
    t = np.arange(a.shape[0]) * dt
    for j in idx:
        ax.plot(t, a[:, j], lw=1.2, label=f"astrocyte {j}")
    ax.set_xlabel(_time_label(dt, time_unit))
    ax.set_ylabel(label)
    if idx:
        ax.legend(loc="upper right", fontsize="small")
    if title:
        ax.set_title(title)
    return ax


def rate_histogram(spikes, ax=None, dt: float = 1.0, time_unit: Optional[str] = None,
                   bins: Union[int, Sequence[float]] = 20,
                   labels: Optional[Sequence[str]] = None, title: str = ""):
    """Histogram of per-neuron firing rates of ``spikes`` ``[T, N]`` (or a list, one
    per population, overlaid). Rate = spike count (graded spikes count their level) /
    duration: in Hz when ``time_unit="ms"``, else per time unit. Each population's
    bar heights sum to its number of neurons."""
    groups = spikes if isinstance(spikes, (list, tuple)) else [spikes]
    if labels is not None and len(labels) != len(groups):
        raise ValueError(f"labels has {len(labels)} entries for {len(groups)} populations")
    dt = _check_dt(dt)
    arrays = [_array("spikes", g) for g in groups]
    ax = _axes(ax)
    scale = 1000.0 if time_unit == "ms" else 1.0
    rates = [s.sum(0) / (s.shape[0] * dt) * scale for s in arrays]
    if isinstance(bins, int):
        hi = max(float(r.max()) for r in rates)
        bins = np.linspace(0.0, hi if hi > 0 else 1.0, bins + 1)
    for i, r in enumerate(rates):
        ax.hist(r, bins=bins, alpha=0.6 if len(rates) > 1 else 1.0,
                label=None if labels is None else labels[i])
    unit = "Hz" if time_unit == "ms" else (f"spikes / {time_unit}" if time_unit else
                                           "spikes per time unit")
    ax.set_xlabel(f"firing rate ({unit})")
    ax.set_ylabel("neurons")
    if labels is not None:
        ax.legend(loc="upper right")
    if title:
        ax.set_title(title)
    return ax


_VISIBLE = {"\n": "\u21b5", "\t": "\u21e5", " ": "\u2423", "\r": "\\r"}


def token_text(token) -> str:
    """Printable text of a token: ``str``, ``bytes`` (UTF-8, invalid bytes as ``\\xNN``)
    or a byte value ``int``; spaces, newlines and control characters made visible."""
    if isinstance(token, (bytes, bytearray)):
        token = bytes(token).decode("utf-8", errors="backslashreplace")
    elif isinstance(token, (int, np.integer)) and not isinstance(token, bool):
        token = chr(int(token)) if 32 <= int(token) < 127 or int(token) in (9, 10, 13) \
            else f"\\x{int(token):02x}" if 0 <= int(token) < 256 else f"<{int(token)}>"
    elif not isinstance(token, str):
        raise TypeError(f"tokens must be str, bytes or int, got {type(token).__name__}")
    out = []
    for ch in token:
        if ch in _VISIBLE:
            out.append(_VISIBLE[ch])
        elif ord(ch) < 32 or ord(ch) == 127:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


def token_raster(spikes, tokens: Sequence, ax=None, neurons: Optional[Sequence[int]] = None,
                 title: str = "", marker_size: float = 6.0, max_labels: int = 120,
                 color=None):
    """Raster of one layer's spikes ``[T, N]`` across the ``T`` tokens of a sample,
    the token text along the x axis (every token when ``T <= max_labels``, else
    evenly spaced ones). ``neurons`` selects rows (default all). One point per
    non-zero entry."""
    s = _array("spikes", spikes)
    tokens = list(tokens)
    if len(tokens) != s.shape[0]:
        raise ValueError(f"got {len(tokens)} tokens for spikes of {s.shape[0]} steps "
                         "(spikes must be [T, N] with one step per token)")
    idx = _pick(s.shape[1], neurons, s.shape[1], "neurons")
    s = s[:, idx]
    text = [token_text(t) for t in tokens]
    ax = _axes(ax, figsize=(max(6.0, min(0.18 * len(tokens), 24.0)), 4))
    t, n = np.nonzero(s)
    ax.scatter(t, n, s=marker_size, marker="|", color=color)
    step = max(1, -(-len(tokens) // max(1, max_labels)))
    ticks = list(range(0, len(tokens), step))
    ax.set_xticks(ticks)
    ax.set_xticklabels([text[i] for i in ticks], rotation=90, fontsize=7, family="monospace")
    ax.set_xlim(-0.5, len(tokens) - 0.5)
    ax.set_ylim(-0.5, len(idx) - 0.5)
    ax.set_xlabel("token")
    ax.set_ylabel("neuron")
    if title:
        ax.set_title(title)
    return ax


def mark_events(ax, events: Mapping[str, float], color: str = "grey"):
    """Dashed vertical lines at ``events`` (name -> time, in the axis' time unit),
    named at the top of the Axes. Returns the Axes."""
    for name, t in events.items():
        t = float(t)
        if not np.isfinite(t):
            raise ValueError(f"event {name!r} has a non-finite time {t!r}")
        ax.axvline(t, color=color, lw=0.8, ls="--")
        ax.annotate(name, (t, 1.0), xycoords=("data", "axes fraction"), fontsize=7,
                    color=color, rotation=90, va="top", ha="right")
    return ax
