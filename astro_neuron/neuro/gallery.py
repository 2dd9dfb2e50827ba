"""The paper figures of docs/gallery.md, drawn by ``astro-neuron figures --out DIR``.

Three small experiments, each recorded once, then drawn with :mod:`astro_neuron.plot`
and analysed with :mod:`astro_neuron.neuro.analysis` (Elephant):

* **ei**: the E/I network of :func:`astro_neuron.neuro.circuits.ei_network` (160
  excitatory and 40 inhibitory LIF neurons in mV / pA, 4 Li-Rinzel astrocytes with
  SIC over the excitatory neurons, 100 Poisson fibres at 20 Hz switched on from 200 to
  1200 ms, dt 0.5 ms, 2 s), run with the astrocytes acting and silenced: rasters of E
  and I with PSTH, the excitatory rate with and without astrocytes beside their
  calcium and SIC, membranes in mV against the threshold with the SIC, rates per
  territory and epoch;

* **stimulus**: a :class:`~astro_neuron.neuro.TripartitePopulation` (40 neurons, 4
  astrocytes over overlapping territories, 50 Poisson fibres at 15 Hz, 30 Hz during a
  300 ms stimulus), 20 trials: raster with epochs and PSTH, neurons by territory,
  ``u + o`` against each neuron's threshold, stacked traces, rates per territory and
  epoch, ISI / CV / Fano / correlations;
* **memory**: the delayed-recall network (:class:`~astro_neuron.tasks.MemoryNet`),
  trained here for a few steps (or loaded from ``--checkpoint``), 96 trials: raster
  and PSTH per cue class over cue / delay / recall, the astrocyte state per stored
  item, and decoding accuracy of the cue from spikes and from astrocytes with the
  chance line.

Every function ``fig_*`` takes the experiment's recording and returns a matplotlib
``Figure``; :func:`write_gallery` writes them all (atomically) and returns the paths.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from astro_neuron import plot
from astro_neuron.io import atomic_write
from astro_neuron.neuro import analysis
from astro_neuron.neuro.circuits import ei_network
from astro_neuron.neuro.figures import (
    _epochs, _figure, psth_bin, raster_psth_figure, record_memory_trials, u_unit,
)
from astro_neuron.neuro.inputs import poisson
from astro_neuron.neuro.population import TripartitePopulation
from astro_neuron.neuro.recording import Recording, record
from astro_neuron.neuro.territories import Territories
from astro_neuron.tasks import MemoryNet, RecallTask, evaluate, delayed_recall, train_memory_net
from astro_neuron.validate import positive_int

__all__ = ["FIGURES", "stimulus_experiment", "memory_experiment", "write_gallery"]

#: the stimulus epochs of :func:`stimulus_experiment`, in ms
STIMULUS_EPOCHS = {"baseline": (0.0, 200.0), "stimulus": (200.0, 500.0), "after": (500.0, 800.0)}


# ---------------------------------------------------------------- experiments

@torch.no_grad()
def stimulus_experiment(n_trials: int = 20, seed: int = 0) -> Recording:
    """A tripartite population driven by Poisson fibres with a stimulus epoch.

    40 neurons (thresholds drawn in [0.8, 1.2], membrane tau 20 ms, dt 1 ms: the
    ``"biology"`` preset), 4 astrocytes over tiled territories overlapping by 25 %,
    50 excitatory fibres with weights drawn uniformly in [0, 0.1] (threshold units)
    and no bias, firing at 15 Hz, 30 Hz from 200 to 500 ms. The weights are set here,
    not by ``nn.Linear``'s signed initialisation, so that the neurons respond to the
    stimulus."""
    n_trials = positive_int("n_trials", n_trials)
    torch.manual_seed(seed)
    N, n_in, T = 40, 50, 800
    pop = TripartitePopulation(n_in, N, Territories.tiled(N, 4, overlap=0.25), d_key=8,
                               bias=False)
    pop.synapses.weight.copy_(torch.rand(N, n_in) * 0.1)
    pop.neurons.log_threshold.copy_(torch.log(torch.empty(N).uniform_(0.8, 1.2)))
    rate = torch.full((T, 1), 15.0)
    a, b = (int(v) for v in STIMULUS_EPOCHS["stimulus"])
    rate[a:b] = 30.0
    x = poisson(rate, float(T), n=n_in, batch_size=n_trials,
                generator=torch.Generator().manual_seed(seed + 1))
    return record(pop, x, info={"epochs": {k: list(v) for k, v in STIMULUS_EPOCHS.items()},
                                "experiment": "stimulus"})


def memory_experiment(checkpoint=None, train_steps: int = 60, n_trials: int = 96,
                      seed: int = 0, progress: bool = False) -> tuple[Recording, float]:
    """Record ``n_trials`` delayed-recall trials (4 cue classes, 10-step cue, 100-step
    delay, 10-step recall) of a ``MemoryNet`` loaded from ``checkpoint`` or trained
    here for ``train_steps`` steps; the astrocytes' full state ``H`` is kept every 5
    steps. Returns the recording and the network's recall accuracy on 512 fresh
    trials."""
    if checkpoint is not None:
        net = MemoryNet.load(checkpoint, "memory-network checkpoint")
    else:
        torch.manual_seed(seed)
        net = MemoryNet(RecallTask())
        train_memory_net(net, steps=positive_int("train_steps", train_steps), seed=seed,
                         progress=progress, desc="train memory net")
    x, y = delayed_recall(net.task, 512, torch.Generator().manual_seed(seed + 100))
    acc = evaluate(net, x, y)
    rec = record_memory_trials(net, n_trials, seed=seed + 1, astro="full", every=5)
    rec.info["accuracy"] = acc
    return rec, acc


#: the epochs of :func:`ei_experiment`, in ms
EI_EPOCHS = {"before": (0.0, 200.0), "input": (200.0, 1200.0), "after": (1200.0, 2000.0)}


def ei_experiment(astro: str = "li_rinzel", dt: float = 0.5, seed: int = 0) -> dict:
    """Run the E/I network (:func:`~astro_neuron.neuro.circuits.ei_network`) for 2 s
    with its input on during :data:`EI_EPOCHS` ``"input"``, astrocytes acting and
    silenced (same seed, so the same connections and input). Returns ``{"on": rec,
    "off": rec, "run_on": NetworkRun, "net": Network}``; the recordings carry each E
    neuron's threshold (mV) and territory."""
    out = {}
    for cond, on in (("on", True), ("off", False)):
        net = ei_network(astro, dt=dt, seed=seed)
        net.groups["ext"].window = EI_EPOCHS["input"]
        run = net.simulate(EI_EPOCHS["after"][1], astro_on=on)
        rec = run.to_recording(info={"epochs": {k: list(v) for k, v in EI_EPOCHS.items()},
                                     "experiment": f"ei, astrocytes {cond}"})
        for g in ("E", "I"):
            n = rec[g]["spikes"].shape[2]
            rec.attrs[g].setdefault("thresholds", [net.groups[g].params.V_th] * n)
        terr = net.astro["astro"].territories
        rec.attrs["E"].setdefault("territory", _first_astrocyte(terr))
        out[cond], out[f"run_{cond}"], out["net"] = rec, run, net
    return out


def _first_astrocyte(terr: Territories) -> list[int]:
    mask = terr.neurons
    first = mask.to(torch.int8).argmax(0)
    return torch.where(mask.any(0), first, torch.full_like(first, -1)).tolist()


# ---------------------------------------------------------------- E/I figures

def fig_ei_raster(ei: dict):
    """E/I network: input fibres, excitatory and inhibitory neurons named, the
    epochs shaded, and the PSTH of E and I (astrocytes acting)."""
    fig, _ = raster_psth_figure(ei["on"], populations=["ext", "E", "I"], bin_width=20.0,
                                title="E/I network with Li-Rinzel astrocytes: 100 Poisson "
                                      "fibres (ext), 160 E, 40 I")
    return fig


def fig_ei_astro(ei: dict):
    """The excitatory rate with astrocytes acting and silenced (same network and
    input), the astrocytes' calcium, and the slow inward current they send."""
    on, off, run = ei["on"], ei["off"], ei["run_on"]
    ep = _epochs(on)
    fig, axes = _figure(3, row_height=1.7, sharex=True)
    for rec, lab, c in ((on, "astrocytes acting", "C3"), (off, "astrocytes silenced", "0.4")):
        r = analysis.population_rate(rec, "E", 20.0)
        plot.psth(r.times, r.rate, ax=axes[0], bin_width=20.0, unit=r.unit, label=lab,
                  color=c, time_unit="ms", epochs=ep if rec is on else None)
    axes[0].set_title("excitatory population rate (bins of 20 ms)")
    plot.shade_epochs(axes[0], {}, names=False)
    label = on.attrs["astro"].get("astro_label", "Ca (µM)")
    plot.calcium_traces(on.get("astro", "astro"), ax=axes[1], dt=on.dt, time_unit="ms",
                        label=label, title="astrocytes' calcium")
    sic = run.I_sic["E"]                                          # [T, n_E] pA
    terr = np.asarray(on.attrs["E"]["territory"])
    t = np.arange(sic.shape[0]) * on.dt
    for a in sorted(set(terr.tolist())):
        axes[2].plot(t, sic[:, terr == a].mean(1), lw=1.0, label=f"territory {a}")
    axes[2].set_ylabel("SIC (pA)")
    axes[2].set_xlabel("time (ms)")
    axes[2].set_title("slow inward current into the E neurons (mean per territory)")
    axes[2].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    for ax in axes[1:]:
        plot.shade_epochs(ax, ep, names=False)
    for ax in axes[:2]:
        ax.set_xlabel("")
    return fig


def fig_ei_membrane(ei: dict, neurons=(0, 50, 100)):
    """Membrane potential (mV) of three E neurons against each one's threshold
    (dashed), spikes as ticks above it, and the SIC each receives."""
    rec, run = ei["on"], ei["run_on"]
    fig, (ax, ax2) = _figure(2, row_height=2.0, ratios=[1.6, 1], sharex=True)
    V, s = rec.get("E", "u"), rec.get("E", "spikes")
    thr = rec.thresholds("E")
    plot.membrane(V, ax=ax, dt=rec.dt, time_unit="ms", neurons=list(neurons), threshold=thr,
                  unit="mV", spikes=s, spike_marks="ticks",
                  title="V of 3 excitatory neurons; ticks: their spikes (a LIF resets at "
                        "threshold)")
    cols = [ln.get_color() for ln in ax.get_lines() if ln.get_label().startswith("neuron")]
    ax.set_ylabel("V (mV)")
    ax.set_xlabel("")
    plot.shade_epochs(ax, _epochs(rec))
    t = np.arange(run.I_sic["E"].shape[0]) * rec.dt
    for c, j in zip(cols, neurons):
        ax2.plot(t, run.I_sic["E"][:, j], color=c, lw=1.0)
    ax2.set_ylabel("SIC (pA)")
    ax2.set_xlabel("time (ms)")
    ax2.set_title("slow inward current from the astrocytes")
    plot.shade_epochs(ax2, _epochs(rec), names=False)
    return fig


def fig_ei_territory_rates(ei: dict):
    """Excitatory rate per astrocyte territory and epoch, astrocytes acting and
    silenced (mean over the territory's neurons, error bars: SEM over neurons)."""
    fig, axes = _figure(1, width=9.0, row_height=3.0)
    fig.clear()
    axes = fig.subplots(1, 2)
    for ax, cond in zip(axes, ("on", "off")):
        er = analysis.epoch_rates(ei[cond], "E")
        plot.epoch_bars(er.mean, er.sem, ax=ax, groups=er.groups, epochs=er.epochs,
                        unit=er.unit,
                        title=f"astrocytes {'acting' if cond == 'on' else 'silenced'}")
    top = max(ax.get_ylim()[1] for ax in axes)                     # one scale for both
    for ax in axes:
        ax.set_ylim(0, top)
    axes[1].set_ylabel("")
    return fig


# ---------------------------------------------------------------- stimulus figures

def fig_raster_psth(rec: Recording):
    """Input and population rasters (named), stimulus epochs shaded, PSTH below."""
    fig, _ = raster_psth_figure(rec, title="50 Poisson fibres (input) and 40 neurons "
                                           "(population), trial 0")
    return fig


def fig_territories(rec: Recording):
    """Neurons coloured by the astrocyte territory that holds them; rates per
    territory and epoch (mean over neurons and trials, error bars: SEM over neurons)."""
    fig, (ax, ax2) = _figure(2, row_height=2.4, ratios=[1.3, 1])
    plot.raster(rec.get("population", "spikes"), ax=ax, dt=rec.dt, time_unit=rec.time_unit,
                groups=rec.attrs["population"]["territory"], epochs=_epochs(rec),
                title="population by territory (a neuron in two is coloured by the first)",
                marker_size=4)
    er = analysis.epoch_rates(rec, "population")
    plot.epoch_bars(er.mean, er.sem, ax=ax2, groups=er.groups, epochs=er.epochs,
                    unit=er.unit, group_label="territory",
                    title=f"rate per territory and epoch ({rec.batch_size} trials)")
    return fig


def fig_membrane(rec: Recording, neurons=(0, 11, 23)):
    """``u + o`` against each neuron's own threshold, then ``u`` and ``o`` stacked."""
    fig, axes = _figure(3, row_height=1.7, sharex=True)
    thr = rec.thresholds("population")
    u, o, s = (rec.get("population", f) for f in ("u", "o", "spikes"))
    unit = u_unit(rec, "population")
    kw = dict(dt=rec.dt, time_unit=rec.time_unit, neurons=list(neurons), every=rec.every)
    plot.membrane(u, ax=axes[0], o=o, threshold=thr, spikes=s, unit=unit,
                  title="u + o: what the spike rule compares with each neuron's threshold "
                        "(dashed); dots: spikes", **kw)
    plot.membrane(u, ax=axes[1], unit=unit, title="membrane u", **kw)
    plot.membrane(o, ax=axes[2], unit=unit, title="astrocyte drive o", **kw)
    axes[2].set_ylabel(f"o ({unit})")
    for ax in axes:
        plot.shade_epochs(ax, _epochs(rec), names=ax is axes[0])
    for ax in axes[:2]:
        ax.set_xlabel("")
    return fig


def fig_stacked(rec: Recording):
    """Stacked ``u + o`` of 8 neurons (2 per territory), coloured by territory, and
    the astrocytes' state."""
    fig, (ax, ax2) = _figure(2, row_height=2.4, ratios=[1.6, 1], sharex=True)
    terr = np.asarray(rec.attrs["population"]["territory"])
    pick = [int(j) for a in sorted(set(terr.tolist())) for j in np.nonzero(terr == a)[0][:2]]
    cols = plot.group_colors(len(set(terr.tolist())))
    names = sorted(set(terr.tolist()))
    v = rec.get("population", "u") + rec.get("population", "o")
    unit = u_unit(rec, "population")
    plot.stacked_traces(v, ax=ax, dt=rec.dt * rec.every, traces=pick, unit=unit,
                        colors=[cols[names.index(terr[j])] for j in pick],
                        time_unit=rec.time_unit,
                        title="u + o of 2 neurons per territory (colour: territory)")
    ax.set_ylabel("neuron")
    ax.set_xlabel("")
    label = rec.attrs["population"].get("astro_label", "astrocyte state")
    plot.calcium_traces(rec.get("population", "astro"), ax=ax2, dt=rec.dt * rec.every,
                        time_unit=rec.time_unit, label=label, title="astrocytes")
    for line, c in zip(ax2.get_lines(), cols):
        line.set_color(c)
    ax2.legend(loc="upper left", fontsize="small")
    for a in (ax, ax2):
        plot.shade_epochs(a, _epochs(rec), names=a is ax)
    return fig


def fig_statistics(rec: Recording):
    """ISI distribution, CV and Fano factor per neuron (Poisson references at 1), and
    the pairwise spike-count correlations (Elephant)."""
    fig = _figure(1)[0]
    fig.clear()
    fig.set_size_inches(9.0, 6.4)
    axes = fig.subplots(2, 2)
    pop, unit = "population", rec.time_unit
    isis = np.concatenate([np.concatenate(analysis.isi(rec, pop, s) + [np.zeros(0)])
                           for s in range(rec.batch_size)])
    ax = axes[0, 0]
    ax.hist(isis, bins=np.arange(0, max(isis.max(), 1.0) + 10, 10), color="0.3")
    ax.set_xlabel(f"inter-spike interval ({unit})")
    ax.set_ylabel("intervals")
    ax.set_title(f"ISIs, all neurons and trials (n = {isis.size})")
    cvs = np.concatenate([analysis.cv(rec, pop, s) for s in range(rec.batch_size)])
    cvs = cvs[np.isfinite(cvs)]
    ax = axes[0, 1]
    ax.hist(cvs, bins=20, color="0.3")
    ax.axvline(1.0, color="C3", ls=":", label="Poisson (CV = 1)")
    ax.axvline(0.0, color="C0", ls=":", label="regular (CV = 0)")
    ax.set_xlabel("CV of ISIs (dimensionless)")
    ax.set_ylabel("neuron x trial")
    ax.set_title("coefficient of variation (>= 3 spikes)")
    ax.legend(fontsize="small")
    ff = analysis.fano_factor(rec, pop, window=STIMULUS_EPOCHS["stimulus"])
    ff = ff[np.isfinite(ff)]
    ax = axes[1, 0]
    ax.hist(ff, bins=15, color="0.3")
    ax.axvline(1.0, color="C3", ls=":", label="Poisson (F = 1)")
    ax.set_xlabel("Fano factor of counts in the stimulus (dimensionless)")
    ax.set_ylabel("neurons")
    ax.set_title(f"Fano factor across {rec.batch_size} trials")
    ax.legend(fontsize="small")
    c = analysis.spike_count_correlation(rec, pop, 20.0)
    ax = axes[1, 1]
    from matplotlib import colormaps  # deferred: only drawing needs matplotlib
    im = ax.imshow(np.where(np.eye(len(c), dtype=bool), np.nan, c), vmin=-1, vmax=1,
                   cmap=colormaps["RdBu_r"].with_extremes(bad="0.6"), interpolation="nearest")
    fig.colorbar(im, ax=ax, label="Pearson r of counts (20 ms bins)")
    ax.set_xlabel("neuron")
    ax.set_ylabel("neuron")
    ax.set_title("spike-count correlations, trial 0 (grey: diagonal, silent)")
    fig.set_layout_engine("constrained")
    return fig


# ---------------------------------------------------------------- memory figures

def fig_memory_trial(rec: Recording):
    """One trial's rasters over cue / delay / recall, and the PSTH per cue class."""
    fig, (ax, ax2) = _figure(2, row_height=1.6, ratios=[2.2, 1], sharex=True)
    ep = _epochs(rec)
    lab = rec.info["labels"][0]
    plot.raster([rec.get(n, "spikes", 0) for n in ("input", "amsu")], ax=ax, dt=rec.dt,
                labels=["input fibres", "AM-SU neurons"], time_unit=rec.time_unit,
                epochs=ep, name_axis=True, title=f"trial 0 (cue class {lab})")
    ax.set_xlabel("")
    b = psth_bin(rec, 24)
    cols = plot.group_colors(len(set(rec.info["labels"])))
    for k, (c, r) in enumerate(analysis.condition_average(rec, "amsu", b).items()):
        plot.psth(r.times, r.rate, ax=ax2, bin_width=b, unit=r.unit, time_unit=rec.time_unit,
                  label=f"cue {c} ({r.n_trains // rec['amsu']['spikes'].shape[2]} trials)",
                  color=cols[k], epochs=ep if k == 0 else None)
    ax2.set_title(f"AM-SU neurons' PSTH per cue class (bins of {b:g} steps)",
                  fontsize="medium")
    return fig


def _delay_end_row(rec: Recording) -> int:
    t = rec.info["epochs"]["delay"][1] - rec.dt                   # last step of the delay
    return int(t / rec.dt) // rec.every


def fig_astro_by_item(rec: Recording):
    """The astrocytes' state at the end of the delay, per stored item (cue class):
    ``|H|`` of each astrocyte averaged over the trials of that class, and its
    deviation from the mean over classes."""
    H = rec["amsu"]["H"]                                            # [rows, B, A, dk, m]
    row = _delay_end_row(rec)
    norm = np.sqrt((H[row] ** 2).sum(axis=(-1, -2)))                # [B, A]
    labels = np.asarray(rec.info["labels"])
    classes = sorted(set(labels.tolist()))
    m = np.stack([norm[labels == c].mean(0) for c in classes])      # [C, A]
    fig, (ax, ax2) = _figure(2, width=7.0, row_height=2.2)
    plot.item_heatmap(m, ax=ax, items=classes, label="|H| (a.u.)",
                      title=f"astrocyte state |H| at the end of the delay (t = "
                            f"{row * rec.every * rec.dt:g} {rec.time_unit}), per stored cue")
    plot.item_heatmap(m - m.mean(0, keepdims=True), ax=ax2, items=classes, cmap="RdBu_r",
                      symmetric=True,
                      label="|H| - mean over cues (a.u.)",
                      title="the same, less each astrocyte's mean over cues")
    return fig


def fig_decoding(rec: Recording):
    """Cross-validated accuracy of decoding the cue class over time, from the
    neurons' spike counts (20-step windows) and from the astrocytes' state ``H``,
    with the chance line; the trained read-out's recall accuracy as a marker."""
    labels = np.asarray(rec.info["labels"])
    n_classes = rec.info["task"]["n_classes"]
    s = rec["amsu"]["spikes"]                                       # [T, B, N]
    H = rec["amsu"]["H"]                                            # [rows, B, ...]
    w = 20
    ts, acc_s = [], []
    for a in range(0, rec.T - w + 1, 10):
        ts.append((a + w / 2) * rec.dt)
        acc_s.append(analysis.decoding_accuracy(s[a:a + w].sum(0), labels))
    rows = range(0, H.shape[0], 2)
    th = [r * rec.every * rec.dt for r in rows]
    acc_h = [analysis.decoding_accuracy(H[r].reshape(H.shape[1], -1), labels) for r in rows]
    fig, (ax,) = _figure(1, width=8.0, row_height=3.2)
    plot.shade_epochs(ax, _epochs(rec))
    plot.accuracy(np.asarray(ts), np.asarray(acc_s), ax=ax, chance=1.0 / n_classes,
                  label="spike counts (20-step windows)", xlabel="time (steps)",
                  marker=".")
    plot.accuracy(np.asarray(th), np.asarray(acc_h), ax=ax, chance=1.0 / n_classes,
                  label="astrocyte state H", xlabel="time (steps)", marker=".")
    rw = rec.info["epochs"]["recall"]
    ax.plot([(rw[0] + rw[1]) / 2], [rec.info["accuracy"]], "k*", ms=10,
            label="trained read-out at recall")
    ax.legend(loc="center right", fontsize="small")
    ax.set_title(f"decoding the cue ({n_classes} classes, {len(labels)} trials, 5-fold "
                 "logistic regression)")
    return fig


#: file name -> (experiment, function, caption)
FIGURES: dict[str, tuple[str, Callable, str]] = {
    "ei_raster_psth.png": ("ei", fig_ei_raster, fig_ei_raster.__doc__),
    "ei_astrocytes.png": ("ei", fig_ei_astro, fig_ei_astro.__doc__),
    "ei_membrane.png": ("ei", fig_ei_membrane, fig_ei_membrane.__doc__),
    "ei_territory_rates.png": ("ei", fig_ei_territory_rates, fig_ei_territory_rates.__doc__),
    "raster_psth.png": ("stimulus", fig_raster_psth, fig_raster_psth.__doc__),
    "territories.png": ("stimulus", fig_territories, fig_territories.__doc__),
    "membrane.png": ("stimulus", fig_membrane, fig_membrane.__doc__),
    "stacked_traces.png": ("stimulus", fig_stacked, fig_stacked.__doc__),
    "spike_statistics.png": ("stimulus", fig_statistics, fig_statistics.__doc__),
    "memory_trial.png": ("memory", fig_memory_trial, fig_memory_trial.__doc__),
    "memory_astro_by_item.png": ("memory", fig_astro_by_item, fig_astro_by_item.__doc__),
    "memory_decoding.png": ("memory", fig_decoding, fig_decoding.__doc__),
}


def write_gallery(out_dir, *, checkpoint=None, train_steps: int = 60,
                  only: Optional[list[str]] = None, dpi: int = 90, seed: int = 0,
                  progress: bool = True, save_recordings: bool = False,
                  small: bool = False, summary: Optional[dict] = None) -> list[Path]:
    """Run the experiments and write every figure of :data:`FIGURES` (or ``only``
    those) as PNG into ``out_dir``; return the paths. ``save_recordings`` also writes
    the recordings (``stimulus.npz``, ``memory.npz``, ``ei_on.npz``, ``ei_off.npz``).
    ``small``: fewer trials (stimulus 4, memory 48) and dt = 1 ms for the E/I network,
    for tests; the gallery's figures are drawn without it. ``summary``: a dict that
    receives the experiments' key numbers (rates per epoch, accuracies)."""
    out_dir = Path(out_dir)
    names = list(FIGURES) if only is None else list(only)
    bad = [n for n in names if n not in FIGURES]
    if bad:
        raise ValueError(f"unknown figures {bad}; choose from {list(FIGURES)}")
    needed = {FIGURES[n][0] for n in names}
    recs = {}
    bar = tqdm(total=len(needed) + len(names), desc="figures", disable=not progress,
               leave=False)
    if "ei" in needed:
        recs["ei"] = ei_experiment(dt=1.0 if small else 0.5, seed=seed)
        bar.update()
    if "stimulus" in needed:
        recs["stimulus"] = stimulus_experiment(n_trials=4 if small else 20, seed=seed)
        bar.update()
    if "memory" in needed:
        recs["memory"], _ = memory_experiment(checkpoint, train_steps, seed=seed,
                                              n_trials=48 if small else 96)
        bar.update()
    if summary is not None:
        summary.update(_summary(recs))
    if save_recordings:
        for k, r in recs.items():
            if k == "ei":
                r["on"].save(out_dir / "ei_on.npz")
                r["off"].save(out_dir / "ei_off.npz")
            else:
                r.save(out_dir / f"{k}.npz")
    paths = []
    for n in names:
        exp, fn, _ = FIGURES[n]
        fig = fn(recs[exp])
        paths.append(atomic_write(out_dir / n, lambda tmp, f=fig: f.savefig(
            tmp, format="png", dpi=dpi)))
        bar.update()
    bar.close()
    return paths


def _summary(recs: dict) -> dict:
    """Key numbers of the experiments (printed by ``astro-neuron figures``)."""
    out = {}
    if "ei" in recs:
        for cond in ("on", "off"):
            er = analysis.epoch_rates(recs["ei"][cond], "E", groups=[0] * recs["ei"][cond][
                "E"]["spikes"].shape[2])
            out[f"ei: E rate (Hz) per epoch, astrocytes {cond}"] = dict(
                zip(er.epochs, np.round(er.mean[0], 2).tolist()))
    if "stimulus" in recs:
        r = recs["stimulus"]
        er = analysis.epoch_rates(r, "population", groups=[0] * r["population"]["spikes"].shape[2])
        out["stimulus: population rate (Hz) per epoch"] = dict(
            zip(er.epochs, np.round(er.mean[0], 2).tolist()))
        cvs = np.concatenate([analysis.cv(r, "population", s) for s in range(r.batch_size)])
        out["stimulus: median CV of ISIs"] = round(float(np.nanmedian(cvs)), 3)
    if "memory" in recs:
        r = recs["memory"]
        out["memory: recall accuracy of the trained read-out (512 trials)"] = round(
            r.info["accuracy"], 3)
        labels = np.asarray(r.info["labels"])
        row = _delay_end_row(r)
        a = int(r.info["epochs"]["delay"][1] / r.dt)
        out["memory: decoding accuracy at the end of the delay, spikes (last 20 steps)"] = round(
            analysis.decoding_accuracy(r["amsu"]["spikes"][a - 20:a].sum(0), labels), 3)
        out["memory: decoding accuracy at the end of the delay, astrocyte state H"] = round(
            analysis.decoding_accuracy(r["amsu"]["H"][row].reshape(len(labels), -1), labels), 3)
        out["memory: chance"] = round(1.0 / r.info["task"]["n_classes"], 3)
    return out
