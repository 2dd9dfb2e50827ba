"""Write the plots of a :class:`~astro_neuron.neuro.Recording` as PNG files, and
record-and-plot one trial of a trained delayed-recall network (the demo's plots).

Figures are built with ``matplotlib.figure.Figure`` (no pyplot, no global state, no
display needed) and written atomically.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Optional, Sequence

import torch

from astro_neuron import plot
from astro_neuron.io import atomic_write, load_checkpoint
from astro_neuron.neuro.recording import Recording, record
from astro_neuron.tasks import MemoryNet, delayed_recall

__all__ = ["KINDS", "plot_recording", "record_memory_trial", "demo_plots"]

#: plot kinds of :func:`plot_recording` and the file each writes (after the prefix)
KINDS = {"raster": "raster.png", "membrane": "membrane.png", "astro": "astro_heatmap.png",
         "calcium": "calcium.png", "rates": "rates.png", "tokens": "token_raster.png"}


def _figure(rows: int, width: float = 9.0, row_height: float = 2.8):
    try:  # deferred: importing astro_neuron.neuro must not load matplotlib (slow)
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - matplotlib is a core dependency
        raise ImportError("plotting needs matplotlib: pip install matplotlib") from None
    fig = Figure(figsize=(width, 0.8 + row_height * rows), layout="constrained")
    axes = fig.subplots(rows, 1, squeeze=False)[:, 0]
    return fig, list(axes)


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
            fig, (ax,) = _figure(1, row_height=3.6)
            plot.raster([rec.get(n, "spikes", sample) for n in spiking], ax=ax, dt=dt,
                        labels=spiking, time_unit=unit, title="spike raster")
            plot.mark_events(ax, events)
        elif k == "membrane":
            fig, axes = _figure(len(with_u))
            for ax, n in zip(axes, with_u):
                plot.membrane(rec.get(n, "u", sample), ax=ax, dt=dt, time_unit=unit,
                              threshold=rec.attrs.get(n, {}).get("threshold"),
                              spikes=rec.get(n, "spikes", sample), title=f"{n}: membrane")
                plot.mark_events(ax, events)
        elif k in ("astro", "calcium"):
            fig, axes = _figure(len(with_astro))
            for ax, n in zip(axes, with_astro):
                label = rec.attrs.get(n, {}).get("astro_label", "astrocyte state")
                fn = plot.astro_heatmap if k == "astro" else plot.calcium_traces
                fn(rec.get(n, "astro", sample), ax=ax, dt=dt, time_unit=unit, label=label,
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
    rec.info["events"] = {"cue end": task.cue_len * rec.dt,
                          "recall": (task.cue_len + task.delay) * rec.dt}
    return rec


def demo_plots(out_dir: Path, checkpoint: Path) -> list[Path]:
    """Plots of the demo's trained memory network: load the ``MemoryNet`` checkpoint
    (``memory_amsu.pt`` of ``astro-neuron demo``), record one delayed-recall trial,
    save it as ``memory_run.npz`` (re-plot with ``astro-neuron plot``) and write
    ``memory_run_{raster,membrane,astro_heatmap,calcium,rates}.png``. Returns the PNG paths.
    """
    ckpt = load_checkpoint(checkpoint, "memory-network checkpoint")
    missing = [k for k in ("task", "config", "state_dict") if k not in ckpt]
    if missing:
        raise ValueError(f"memory-network checkpoint {checkpoint} lacks {missing}: is it a "
                         "MemoryNet checkpoint (memory_amsu.pt)?")
    try:
        net = MemoryNet.from_checkpoint(ckpt)
    except (TypeError, RuntimeError, KeyError) as exc:
        raise ValueError(f"memory-network checkpoint {checkpoint} does not rebuild a "
                         f"MemoryNet ({type(exc).__name__}: {exc})") from None
    out_dir = Path(out_dir)
    rec = record_memory_trial(net)
    rec.save(out_dir / "memory_run.npz")
    return plot_recording(rec, out_dir, prefix="memory_run_")
