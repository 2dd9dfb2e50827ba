"""Plots of spiking activity and astrocyte state (matplotlib).

Each function takes ``ax=None``, draws on that Axes (or on a new figure's), and
returns the Axes; nothing calls ``plt.show()``. matplotlib is imported when a
function is called, not when this module is imported. Inputs are arrays or tensors
of one sample, time first:

* :func:`raster`          spikes ``[T, N]`` or a list of them (populations / layers, coloured
                          and named), or neurons coloured by group (territory)
* :func:`membrane`        membrane traces ``[T, N]``; with the astrocyte drive ``o``, ``u + o``
                          against each neuron's own threshold (what the spike rule compares)
* :func:`stacked_traces`  one trace per neuron, offset vertically, with a scale bar
* :func:`psth`            a binned rate (population rate, PSTH) as a step line
* :func:`epoch_bars`      rate per group (territory) and epoch, bars with error bars
* :func:`item_heatmap`    a value per item (stored cue) and unit (astrocyte) as an image
* :func:`accuracy`        accuracy over time or per condition, with the chance line
* :func:`astro_heatmap`   astrocyte state over time ``[T, A]`` as an image
* :func:`calcium_traces`  astrocyte state over time ``[T, A]`` as lines (calcium-like)
* :func:`rate_histogram`  firing rates per neuron
* :func:`token_raster`    one layer's spikes ``[T, N]`` across the tokens of a text
* :func:`mark_events`     vertical lines at named times (cue, delay, recall, ...)
* :func:`shade_epochs`    shaded, named spans (cue / delay / recall, stimulus on / off)

``time_unit="ms"`` labels the time axis in ms and gives rates in Hz.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence, Union

import numpy as np

__all__ = ["raster", "membrane", "stacked_traces", "psth", "epoch_bars", "item_heatmap",
           "accuracy", "astro_heatmap", "calcium_traces", "rate_histogram", "token_raster",
           "mark_events", "shade_epochs", "token_text", "group_colors"]


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
        return f"time ({'steps' if time_unit == 'step' else time_unit})"
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


def group_colors(n: int):
    """``n`` distinguishable colours (matplotlib's tab10, then tab20)."""
    from matplotlib import colormaps  # deferred: only drawing needs matplotlib
    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def raster(spikes, ax=None, dt: float = 1.0, labels: Optional[Sequence[str]] = None,
           colors: Optional[Sequence] = None, marker_size: float = 2.0, title: str = "",
           time_unit: Optional[str] = None, groups: Optional[Sequence] = None,
           group_label: str = "territory of astrocyte", epochs: Optional[Mapping] = None,
           name_axis: bool = False):
    """Spike raster of ``spikes`` ``[T, N]`` (or a list of such arrays, one per
    population, stacked bottom to top, each its own colour, named by ``labels``). One
    point per non-zero entry (graded spikes count once), at ``(t * dt, neuron)``.

    ``groups``: for a single population, one group per neuron (e.g. the astrocyte
    whose territory holds it): neurons are coloured by group, the legend names them
    ``"<group_label> <g>"`` (``-1``: ``"no astrocyte"``). ``epochs``: ``{name: (t0, t1)}``
    shaded (:func:`shade_epochs`). ``name_axis``: write the population names on the y
    axis at the middle of each block.
    """
    groups_list = spikes if isinstance(spikes, (list, tuple)) else [spikes]
    if not groups_list:
        raise ValueError("raster needs at least one [T, N] array")
    for name, seq in (("labels", labels), ("colors", colors)):
        if seq is not None and len(seq) != len(groups_list):
            raise ValueError(f"{name} has {len(seq)} entries for {len(groups_list)} populations")
    dt = _check_dt(dt)
    ax = _axes(ax)
    if epochs:
        shade_epochs(ax, epochs)
    offset = 0
    centres = []
    for i, group in enumerate(groups_list):
        s = _as_numpy(group)
        if s.ndim != 2:
            raise ValueError(f"raster needs [T, N] spikes per population, got shape {s.shape}")
        t, n = np.nonzero(s)
        if groups is not None:
            if len(groups_list) != 1:
                raise ValueError("groups colours the neurons of one population; pass one "
                                 "[T, N] array")
            g = np.asarray(groups)
            if g.shape != (s.shape[1],):
                raise ValueError(f"groups has {g.size} entries for {s.shape[1]} neurons")
            names = sorted(set(g.tolist()))
            cols = group_colors(len(names))
            for k, name in enumerate(names):
                sel = g[n] == name
                lab = "no astrocyte" if name == -1 else f"{group_label} {name}"
                ax.scatter(t[sel] * dt, n[sel], s=marker_size, marker="|", color=cols[k],
                           label=lab)
        else:
            kw = {}
            if colors is not None:
                kw["color"] = colors[i]
            ax.scatter(t * dt, n + offset, s=marker_size, marker="|",
                       label=None if labels is None else labels[i], **kw)
        if i and offset:
            ax.axhline(offset - 0.5, color="0.8", lw=0.5)
        centres.append(offset + (s.shape[1] - 1) / 2)
        offset += s.shape[1]
    ax.set_xlabel(_time_label(dt, time_unit))
    ax.set_ylabel("neuron")
    ax.set_ylim(-0.5, offset - 0.5)
    ax.set_xlim(0.0, max(_as_numpy(g).shape[0] for g in groups_list) * dt)
    if name_axis and labels is not None:
        ax.set_yticks(centres)
        ax.set_yticklabels(labels)
        ax.set_ylabel("neuron (population)")
    if groups is not None:
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), markerscale=4,
                  fontsize="small")
    elif labels is not None and not name_axis:
        ax.legend(loc="upper right", markerscale=4, fontsize="small")
    if title:
        ax.set_title(title)
    return ax


def membrane(u, ax=None, dt: float = 1.0, neurons: Optional[Sequence[int]] = None,
             threshold=None, spikes=None, time_unit: Optional[str] = None,
             title: str = "", max_traces: int = 5, o=None, every: int = 1,
             names: Optional[Sequence] = None, unit: str = "x threshold",
             spike_marks: str = "dots"):
    """Membrane traces of the chosen ``neurons`` (columns; default the first
    ``max_traces``), one line each.

    ``o`` ``[T, N]``: the astrocyte drive; then ``u + o`` is drawn, the quantity the
    spike rule compares with the threshold (a neuron fires when ``u + o > theta``).
    ``threshold``: a number, or one per neuron ``[N]``: each drawn neuron's own
    threshold is a dashed line in its colour. ``spikes`` ``[T_s, N]`` marks each spike
    of a drawn neuron with a dot on its trace; ``every``: the traces hold every
    ``every``-th step of the spikes' steps (``record(..., every=k)``), so ``T_s`` may be
    up to ``every`` times longer. ``names``: the neurons' labels (default ``neuron j``);
    ``unit``: of the membrane (the y axis). ``spike_marks``: ``"dots"`` on the trace
    (the AM-SU records ``u`` before its reset, so a spike sits above threshold) or
    ``"ticks"`` above the neuron's threshold (for a membrane recorded after its reset,
    as a LIF in mV is, where the trace never shows the crossing).
    """
    if spike_marks not in ("dots", "ticks"):
        raise ValueError(f"spike_marks must be 'dots' or 'ticks', got {spike_marks!r}")
    u = _array("u", u)
    dt = _check_dt(dt)
    every = int(every)
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    idx = _pick(u.shape[1], neurons, max_traces, "neurons")
    v = u
    if o is not None:
        o = _array("o", o)
        if o.shape != u.shape:
            raise ValueError(f"o {list(o.shape)} and u {list(u.shape)} differ in shape")
        v = u + o
    thr = None
    if threshold is not None:
        thr = np.broadcast_to(np.asarray(threshold, dtype=float), (u.shape[1],)) \
            if np.ndim(threshold) == 0 else np.asarray(threshold, dtype=float)
        if thr.shape != (u.shape[1],):
            raise ValueError(f"threshold must be a number or one per neuron [{u.shape[1]}], "
                             f"got shape {list(thr.shape)}")
    if names is not None and len(names) != u.shape[1]:
        raise ValueError(f"names has {len(names)} entries for {u.shape[1]} neurons")
    ax = _axes(ax)
    t = np.arange(u.shape[0]) * dt * every
    s = None
    if spikes is not None:
        s = _array("spikes", spikes)
        if s.shape[1] != u.shape[1] or not (s.shape[0] == u.shape[0] or
                                            -(-s.shape[0] // every) == u.shape[0]):
            raise ValueError(f"spikes {list(s.shape)} and u {list(u.shape)} differ in shape "
                             f"(every={every})")
    for j in idx:
        name = f"neuron {j}" if names is None else f"neuron {names[j]}"
        line, = ax.plot(t, v[:, j], lw=0.9, label=name)
        if s is not None and spike_marks == "ticks":
            top = thr[j] if thr is not None else float(v[:, idx].max())
            span = float(np.ptp(v[:, idx])) or 1.0
            ts = np.nonzero(s[:, j])[0]
            ax.vlines(ts * dt, top + 0.04 * span, top + 0.14 * span, color=line.get_color(),
                      lw=1.0)
        elif s is not None:
            ts = np.nonzero(s[:, j])[0]
            ts = ts[ts % every == 0]                   # steps whose trace was kept
            ax.plot(ts * dt, v[ts // every, j], ".", color=line.get_color(), ms=4)
        if thr is not None:
            ax.axhline(thr[j], color=line.get_color(), ls="--", lw=0.8)
    if thr is not None and idx:
        ax.plot([], [], color="k", ls="--", lw=0.8,
                label="threshold" if np.ndim(threshold) == 0 else "own threshold")
    ax.set_xlabel(_time_label(dt, time_unit))
    ax.set_ylabel(f"u + o ({unit})" if o is not None else f"membrane u ({unit})")
    if idx:
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    if title:
        ax.set_title(title)
    return ax


def stacked_traces(x, ax=None, dt: float = 1.0, traces: Optional[Sequence[int]] = None,
                   spacing: Optional[float] = None, names: Optional[Sequence] = None,
                   colors: Optional[Sequence] = None, unit: str = "",
                   time_unit: Optional[str] = None, title: str = "", max_traces: int = 10,
                   scale_bar: Optional[float] = None):
    """Traces ``[T, N]`` of the chosen columns drawn one above the other (the first at
    the bottom), ``spacing`` apart (default: 1.1 x the largest range), each labelled
    on the y axis; a vertical scale bar of ``scale_bar`` (default: a round number
    near half the spacing) in ``unit`` gives the amplitude."""
    x = _array("x", x)
    dt = _check_dt(dt)
    idx = _pick(x.shape[1], traces, max_traces, "traces")
    if colors is not None and len(colors) != len(idx):
        raise ValueError(f"colors has {len(colors)} entries for {len(idx)} traces")
    ax = _axes(ax)
    t = np.arange(x.shape[0]) * dt
    rng = float(np.ptp(x[:, idx], axis=0).max()) if idx else 0.0
    spacing = float(spacing) if spacing is not None else (1.1 * rng if rng > 0 else 1.0)
    for k, j in enumerate(idx):
        kw = {"color": colors[k]} if colors is not None else {}
        ax.plot(t, x[:, j] - x[:, j].min() + k * spacing, lw=0.8, **kw)
    ax.set_yticks([k * spacing + spacing / 2.2 for k in range(len(idx))])
    ax.set_yticklabels([f"{'neuron ' if names is None else ''}{j if names is None else names[j]}"
                        for j in idx])
    if scale_bar is None:
        raw = spacing / 2
        scale_bar = float(f"{raw:.1g}") if raw > 0 else 1.0
    x0 = t[-1] * 1.01 if len(t) else 0.0
    ax.plot([x0, x0], [0, scale_bar], color="k", lw=2)
    ax.annotate(f"{scale_bar:g}\n{unit}".strip(), (x0, scale_bar / 2), xytext=(3, 0),
                textcoords="offset points", va="center", ha="left", fontsize=7)
    ax.set_xlim(0, x0 * 1.09 if x0 > 0 else 1)
    ax.set_xlabel(_time_label(dt, time_unit))
    if title:
        ax.set_title(title)
    return ax


def psth(times, rate, ax=None, bin_width: Optional[float] = None, unit: str = "Hz",
         time_unit: Optional[str] = None, label: Optional[str] = None, title: str = "",
         color=None, epochs: Optional[Mapping] = None):
    """A binned rate (``times`` ``[K]`` left bin edges, ``rate`` ``[K]``), e.g. an
    :class:`astro_neuron.neuro.analysis.Rate`, as a step line; ``unit`` labels the y
    axis (``"Hz"``, ``"1/step"``)."""
    times, rate = _array("times", times, 1, "[K]"), _array("rate", rate, 1, "[K]")
    if times.shape != rate.shape or times.size == 0:
        raise ValueError(f"times {list(times.shape)} and rate {list(rate.shape)} must be the "
                         "same non-empty length")
    if bin_width is None:
        bin_width = float(times[1] - times[0]) if times.size > 1 else 1.0
    ax = _axes(ax)
    if epochs:
        shade_epochs(ax, epochs, names=False)
    edges = np.append(times, times[-1] + bin_width)
    from matplotlib.patches import StepPatch  # deferred: only drawing needs matplotlib
    earlier = any(isinstance(p, StepPatch) for p in ax.patches)     # another rate drawn here
    prev_top = ax.get_ylim()[1] if earlier else 0.0
    ax.stairs(rate, edges, label=label, color=color, lw=1.2)
    ax.set_xlabel(_time_label(1.0, time_unit))
    ax.set_ylabel(f"rate ({unit})")
    ax.set_xlim(edges[0], edges[-1])
    top = max(float(rate.max()) * 1.08, prev_top)
    ax.set_ylim(0, top if top > 0 else 1.0)
    if label is not None:
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    if title:
        ax.set_title(title)
    return ax


def epoch_bars(mean, sem=None, ax=None, groups: Optional[Sequence] = None,
               epochs: Optional[Sequence[str]] = None, unit: str = "Hz",
               group_label: str = "territory", title: str = ""):
    """Grouped bars: ``mean`` ``[G, E]`` (e.g. the rate of each territory in each
    epoch, :func:`astro_neuron.neuro.analysis.epoch_rates`), error bars ``sem``; one
    cluster per epoch, one bar per group."""
    mean = _array("mean", mean, 2, "[G, E]")
    G, E = mean.shape
    sem = None if sem is None else _array("sem", sem, 2, "[G, E]")
    if sem is not None and sem.shape != mean.shape:
        raise ValueError(f"sem {list(sem.shape)} and mean {list(mean.shape)} differ in shape")
    groups = list(range(G)) if groups is None else list(groups)
    epochs = [str(e) for e in range(E)] if epochs is None else list(epochs)
    if len(groups) != G or len(epochs) != E:
        raise ValueError(f"groups ({len(groups)}) / epochs ({len(epochs)}) do not match "
                         f"mean {[G, E]}")
    ax = _axes(ax)
    width = 0.8 / G
    cols = group_colors(G)
    for g in range(G):
        pos = np.arange(E) + (g - (G - 1) / 2) * width
        ax.bar(pos, mean[g], width, yerr=None if sem is None else sem[g], capsize=2,
               color=cols[g], label=f"{group_label} {groups[g]}")
    hi = float(np.nanmax(mean + (0 if sem is None else sem))) if mean.size else 0.0
    ax.set_ylim(0, 1.3 * hi if hi > 0 else 1.0)                # room for the legend
    ax.set_xticks(range(E))
    ax.set_xticklabels(epochs)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"firing rate ({unit})")
    ax.legend(fontsize="small", ncols=min(G, 2))
    if title:
        ax.set_title(title)
    return ax


def item_heatmap(values, ax=None, items: Optional[Sequence] = None,
                 units: Optional[Sequence] = None, item_label: str = "stored item",
                 unit_label: str = "astrocyte", label: str = "state (a.u.)",
                 title: str = "", cmap: str = "magma", symmetric: bool = False):
    """``values`` ``[I, U]`` (e.g. each astrocyte's state after storing each item) as
    an image: items on the y axis, units on x, a colour bar labelled ``label``;
    ``symmetric``: colour limits ``+-max|values|`` (for a diverging map around 0)."""
    v = _array("values", values, 2, "[I, U]")
    I, U = v.shape
    items = list(range(I)) if items is None else list(items)
    units = list(range(U)) if units is None else list(units)
    if len(items) != I or len(units) != U:
        raise ValueError(f"items ({len(items)}) / units ({len(units)}) do not match {[I, U]}")
    ax = _axes(ax)
    lim = float(np.abs(v).max()) or 1.0
    im = ax.imshow(v, aspect="auto", origin="lower", interpolation="nearest", cmap=cmap,
                   **({"vmin": -lim, "vmax": lim} if symmetric else {}))
    ax.figure.colorbar(im, ax=ax, label=label)
    ax.set_xticks(range(U))
    ax.set_xticklabels([str(x) for x in units])
    ax.set_yticks(range(I))
    ax.set_yticklabels([str(x) for x in items])
    ax.set_xlabel(unit_label)
    ax.set_ylabel(item_label)
    if title:
        ax.set_title(title)
    return ax


def accuracy(x, acc, ax=None, chance: Optional[float] = None, label: Optional[str] = None,
             xlabel: str = "time", title: str = "", color=None, marker: str = ""):
    """Accuracy ``acc`` ``[K]`` (fractions in [0, 1]) against ``x`` ``[K]``, y axis
    from 0 to 1, and the ``chance`` level as a dotted line (``1 / n_classes``)."""
    x, acc = _array("x", x, 1, "[K]"), _array("acc", acc, 1, "[K]")
    if x.shape != acc.shape:
        raise ValueError(f"x {list(x.shape)} and acc {list(acc.shape)} differ in shape")
    if ((acc < 0) | (acc > 1)).any():
        raise ValueError("accuracies must be fractions in [0, 1]")
    ax = _axes(ax)
    ax.plot(x, acc, marker=marker, label=label, color=color)
    if chance is not None:
        chance = float(chance)
        if not 0 < chance < 1:
            raise ValueError(f"chance must be in (0, 1), got {chance}")
        if not any(ln.get_label() == "chance" for ln in ax.get_lines()):
            ax.axhline(chance, color="0.4", ls=":", lw=1.0, label="chance")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy (fraction correct)")
    if label is not None or chance is not None:
        ax.legend(loc="lower right", fontsize="small")
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


def shade_epochs(ax, epochs: Mapping[str, Sequence[float]], alpha: float = 0.12,
                 names: bool = True):
    """Shade each epoch ``name -> (t0, t1)`` (in the axis' time unit) in its own
    colour, named at the top of the Axes when ``names``. Returns the Axes."""
    cols = group_colors(max(len(epochs), 1))
    for k, (name, span) in enumerate(epochs.items()):
        t0, t1 = (float(v) for v in span)
        if not (np.isfinite(t0) and np.isfinite(t1)) or t1 <= t0:
            raise ValueError(f"epoch {name!r} must be (t0, t1) with t0 < t1, got {span}")
        ax.axvspan(t0, t1, color=cols[k], alpha=alpha, lw=0)
        if names:
            ax.annotate(str(name), ((t0 + t1) / 2, 1.0), xycoords=("data", "axes fraction"),
                        xytext=(0, -2), textcoords="offset points", ha="center", va="top",
                        fontsize=8, color="0.25",
                        bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none",
                              "alpha": 0.7})
    return ax
