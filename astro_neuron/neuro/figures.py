"""Write the plots of a :class:`~astro_neuron.neuro.Recording` as PNG files, and
record-and-plot one trial of a trained delayed-recall network (the demo's plots).

Figures are built with ``matplotlib.figure.Figure`` (no pyplot, no global state, no
display needed) and written atomically. The paper figures of the gallery
(docs/gallery.md, ``astro-neuron figures``) are in :mod:`astro_neuron.neuro.gallery`.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Optional, Sequence

import torch

from astro_neuron import plot
from astro_neuron.io import atomic_write
from astro_neuron.neuro import analysis
from astro_neuron.neuro.recording import Recording, record
from astro_neuron.tasks import MemoryNet, delayed_recall
from astro_neuron.validate import positive_int

__all__ = ["KINDS", "plot_recording", "record_memory_trial", "record_memory_trials",
           "demo_plots", "psth_bin", "u_unit"]

#: plot kinds of :func:`plot_recording` and the file each writes (after the prefix)
KINDS = {"raster": "raster.png", "membrane": "membrane.png", "astro": "astro_heatmap.png",
         "calcium": "calcium.png", "rates": "rates.png", "tokens": "token_raster.png"}


def _figure(rows: int, width: float = 9.0, row_height: float = 2.8, ratios=None,
            sharex: bool = False):
    try:  # deferred: importing astro_neuron.neuro must not load matplotlib (slow)
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - matplotlib is a core dependency
        raise ImportError("plotting needs matplotlib: pip install matplotlib") from None
    height = 0.8 + row_height * (rows if ratios is None else sum(ratios))
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(rows, 1, squeeze=False, sharex=sharex,
                        gridspec_kw=None if ratios is None else {"height_ratios": ratios})[:, 0]
    return fig, list(axes)


def psth_bin(rec: Recording, n_bins: int = 60) -> float:
    """A round bin width (1, 2, 5 x 10^k, a whole number of steps) giving about
    ``n_bins`` bins over the run, in ``rec.time_unit``."""
    target = rec.duration / max(1, n_bins)
    for k in range(-3, 7):
        for m in (1, 2, 5):
            b = m * 10.0 ** k
            steps = b / rec.dt
            if b >= target and abs(steps - round(steps)) < 1e-9 and round(steps) >= 1:
                return b
    return rec.dt


def u_unit(rec: Recording, population: str) -> str:
    """Unit of a population's membrane: ``attrs["u_unit"]`` (e.g. ``"mV"``) or
    ``"x threshold"`` (the AM-SU's membrane: dimensionless, in multiples of the
    threshold)."""
    return rec.attrs.get(population, {}).get("u_unit") or "x threshold"


def _most_active(spikes, n: int, k: int = 5) -> list[int]:
    """The ``k`` columns with the most spikes (in index order); the first ``k`` when
    there are no spikes."""
    if spikes is None:
        return list(range(min(n, k)))
    counts = (spikes != 0).sum(0)
    return sorted(int(j) for j in counts.argsort(kind="stable")[::-1][:k])


def _epochs(rec: Recording) -> dict:
    ep = analysis.epochs(rec)
    return {} if list(ep) == ["run"] else ep


def _save(fig, path: Path, dpi: int) -> Path:
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))


def _with(rec: Recording, field: str) -> list[str]:
    return [name for name, arrs in rec.populations.items() if field in arrs]


def plot_recording(rec: Recording, out_dir, sample: int = 0, prefix: str = "",
                   kinds: Optional[Sequence[str]] = None, dpi: int = 110) -> list[Path]:
    """Write the plots of ``rec`` (one batch ``sample``) into ``out_dir``; return the paths.

    ``kinds``: any of :data:`KINDS` (default: every kind the recording has data for:
    a raster of all spiking populations, membrane traces, astrocyte heatmap and
    calcium-like traces, firing-rate histogram, and a token raster when
    ``rec.info["tokens"]`` holds the text). Asking for a kind the recording cannot
    draw is an error.
    """
    if not isinstance(rec, Recording):
        raise TypeError(f"rec must be a Recording, got {type(rec).__name__}")
    if not 0 <= sample < rec.batch_size:
        raise ValueError(f"sample must be in [0, {rec.batch_size}), got {sample}")
    out_dir = Path(out_dir)
    spiking, with_u, with_astro = _with(rec, "spikes"), _with(rec, "u"), _with(rec, "astro")
    tokens = rec.info.get("tokens")
    available = {"raster": bool(spiking), "membrane": bool(with_u), "astro": bool(with_astro),
                 "calcium": bool(with_astro), "rates": bool(spiking),
                 "tokens": tokens is not None and bool(set(spiking) - {"input"})}
    if kinds is None:
        kinds = [k for k in KINDS if available[k]]
    for k in kinds:
        if k not in KINDS:
            raise ValueError(f"unknown plot kind {k!r}; choose from {list(KINDS)}")
        if not available[k]:
            need = {"raster": "spikes", "membrane": "u", "astro": "astro", "calcium": "astro",
                    "rates": "spikes", "tokens": "info['tokens'] and a spiking layer"}[k]
            raise ValueError(f"cannot draw {k!r}: the recording has no {need}")
    dt, unit = rec.dt, rec.time_unit
    events = rec.info.get("events") or {}
    paths = []
    for k in kinds:
        path = out_dir / f"{prefix}{KINDS[k]}"
        if k == "raster":
            fig, axes = raster_psth_figure(rec, sample=sample)
        elif k == "membrane":
            fig, axes = _figure(len(with_u))
            for ax, n in zip(axes, with_u):
                o = rec.get(n, "o", sample)
                s = rec.get(n, "spikes", sample)
                plot.membrane(rec.get(n, "u", sample), ax=ax, dt=dt, time_unit=unit,
                              threshold=rec.thresholds(n), o=o, every=rec.every, spikes=s,
                              names=rec.neuron_ids(n), unit=u_unit(rec, n),
                              neurons=_most_active(s, rec.get(n, "u", sample).shape[1]),
                              spike_marks="ticks" if "u_unit" in rec.attrs.get(n, {}) else "dots",
                              title=f"{n}: {'u + o' if o is not None else 'u'} of the most "
                                    "active neurons vs each one's threshold (dashed)")
                if _epochs(rec):
                    plot.shade_epochs(ax, _epochs(rec))
                else:
                    plot.mark_events(ax, events)
        elif k in ("astro", "calcium"):
            fig, axes = _figure(len(with_astro))
            for ax, n in zip(axes, with_astro):
                label = rec.attrs.get(n, {}).get("astro_label", "astrocyte state")
                fn = plot.astro_heatmap if k == "astro" else plot.calcium_traces
                fn(rec.get(n, "astro", sample), ax=ax, dt=dt * rec.every, time_unit=unit,
                   label=label,
                   title=f"{n}: astrocytes ({rec.attrs.get(n, {}).get('astro_model', '?')})")
                plot.mark_events(ax, events)
        elif k == "rates":
            fig, (ax,) = _figure(1)
            plot.rate_histogram([rec.get(n, "spikes", sample) for n in spiking], ax=ax, dt=dt,
                                time_unit=unit, labels=spiking, title="firing rates")
        else:
            name = rec.info.get("token_population") or [n for n in spiking if n != "input"][0]
            fig, (ax,) = _figure(1, width=max(6.0, min(0.18 * rec.T, 24.0)), row_height=3.6)
            plot.token_raster(rec.get(name, "spikes", sample), tokens, ax=ax,
                              title=f"{name}: spikes per token")
        paths.append(_save(fig, path, dpi))
    return paths


def raster_psth_figure(rec: Recording, sample: int = 0, populations=None,
                       bin_width: Optional[float] = None, title: str = "spike raster",
                       groups: Optional[str] = None):
    """A raster of the spiking ``populations`` (default all, named on the y axis),
    epochs shaded (``rec.info["epochs"]`` or the spans between its events), above a
    PSTH panel: each non-input population's rate averaged over its neurons and all
    batch samples, in bins of ``bin_width`` (default :func:`psth_bin`). ``groups``:
    the name of one population whose neurons are coloured by astrocyte territory.
    Returns ``(Figure, [raster Axes, PSTH Axes])``."""
    spiking = populations or _with(rec, "spikes")
    ep = _epochs(rec)
    fig, (ax, ax2) = _figure(2, row_height=1.6, ratios=[2.2, 1], sharex=True)
    if groups is not None:
        plot.raster(rec.get(groups, "spikes", sample), ax=ax, dt=rec.dt, time_unit=rec.time_unit,
                    groups=rec.attrs.get(groups, {}).get("territory"), epochs=ep, title=title)
    else:
        plot.raster([rec.get(n, "spikes", sample) for n in spiking], ax=ax, dt=rec.dt,
                    labels=spiking, time_unit=rec.time_unit, title=title, epochs=ep,
                    name_axis=len(spiking) > 1)
    if not ep:
        plot.mark_events(ax, rec.info.get("events") or {})
    ax.set_xlabel("")
    b = bin_width or psth_bin(rec, 60 if rec.batch_size > 1 else 30)
    shown = [n for n in ([groups] if groups else spiking) if n != "input"] or list(spiking)
    for n in shown:
        r = analysis.psth(rec, n, b)
        color = f"C{list(spiking).index(n)}" if groups is None else "k"   # as in the raster
        plot.psth(r.times, r.rate, ax=ax2, bin_width=b, unit=r.unit, color=color,
                  time_unit=rec.time_unit, label=n, epochs=ep if n == shown[0] else None)
    trials = f"{rec.batch_size} trials, " if rec.batch_size > 1 else ""
    tu = "steps" if rec.time_unit == "step" else rec.time_unit
    ax2.set_title(f"PSTH ({trials}bins of {b:g} {tu})", fontsize="medium")
    return fig, [ax, ax2]


@torch.no_grad()
def record_memory_trial(net, seed: int = 0, label: Optional[int] = None) -> Recording:
    """Record one delayed-recall trial of a trained ``MemoryNet`` (input, spikes,
    membrane, astrocyte drive and state); the trial's cue class is ``label`` (default:
    drawn). ``info`` holds the task, the label, the network's answer and the epochs
    ("cue end", "recall") as events."""
    task = net.task
    if label is not None and not 0 <= int(label) < task.n_classes:
        raise ValueError(f"label must be in [0, {task.n_classes}), got {label}")
    g = torch.Generator().manual_seed(seed)
    for _ in range(1000):
        x, y = delayed_recall(task, 1, g)
        if label is None or int(y) == int(label):
            break
    net.eval()
    pred = int(net(x).argmax(-1))
    rec = record(net, x, info={"task": asdict(task), "label": int(y), "prediction": pred,
                               "seed": seed})
    _memory_epochs(rec, task)
    return rec


def _memory_epochs(rec: Recording, task) -> None:
    rec.info["events"] = {"cue end": task.cue_len * rec.dt,
                          "recall": (task.cue_len + task.delay) * rec.dt}
    c, d = task.cue_len * rec.dt, (task.cue_len + task.delay) * rec.dt
    rec.info["epochs"] = {"cue": [0.0, c], "delay": [c, d], "recall": [d, task.T * rec.dt]}


@torch.no_grad()
def record_memory_trials(net, n_trials: int, seed: int = 0, astro: str = "summary",
                         every: int = 1) -> Recording:
    """Record ``n_trials`` delayed-recall trials of ``net`` as one batch: ``info``
    holds each trial's cue class (``labels``), the network's answers
    (``predictions``), the epochs cue / delay / recall and the task."""
    n_trials = positive_int("n_trials", n_trials)
    task = net.task
    g = torch.Generator().manual_seed(seed)
    x, y = delayed_recall(task, n_trials, g)
    net.eval()
    pred = net(x).argmax(-1)
    rec = record(net, x, astro=astro, every=every,
                 info={"task": asdict(task), "labels": y.tolist(),
                       "predictions": pred.tolist(), "seed": seed})
    _memory_epochs(rec, task)
    return rec


def demo_plots(out_dir: Path, checkpoint: Path) -> list[Path]:
    """Plots of the demo's trained memory network: load the ``MemoryNet`` checkpoint
    (``memory_amsu.safetensors`` of ``astro-neuron demo``), record one delayed-recall trial,
    save it as ``memory_run.npz`` (re-plot with ``astro-neuron plot``) and write
    ``memory_run_{raster,membrane,astro_heatmap,calcium,rates}.png``. Returns the PNG paths.
    """
    net = MemoryNet.load(checkpoint, "memory-network checkpoint")
    out_dir = Path(out_dir)
    rec = record_memory_trial(net)
    rec.save(out_dir / "memory_run.npz")
    return plot_recording(rec, out_dir, prefix="memory_run_")
