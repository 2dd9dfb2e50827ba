"""A single AM-SU neuron's dynamics, in milliseconds.

    python examples/single_neuron.py [--quick] [--out DIR]

1. f-I curve: the neuron alone (astrocyte off) driven by injected current steps.
2. Astrocytic facilitation: one input fibre sends sparse probe spikes (every 250 ms),
   then a 300 ms burst at 100 Hz, then probes again. A probe alone moves the membrane
   to 0.6 of threshold, so the neuron alone never answers a probe; the astrocyte,
   which integrates pre-synaptic activity over seconds, adds its output to the
   membrane drive and makes probes after the burst fire the neuron. Compared: the
   neuron alone, the paper's linear astrocyte (tau_astro = 2 s: facilitation at once,
   fading), and the Li-Rinzel calcium astrocyte (facilitation delayed by the calcium
   rise, then fading).

Prints spike counts per period and writes ``single_neuron.png`` (input, membrane
drive u + o, astrocyte state, output spikes) to ``--out``. Guide: docs/neuroscience.md.
"""

import argparse
from pathlib import Path

import torch

from astro_neuron import AMSU, plot
from astro_neuron.astrocytes import LiRinzel
from astro_neuron.neuro import n_steps, preset, record, step_current

W_SYN = 0.6          # membrane jump per input spike, in units of the threshold


def neuron(kind: str) -> AMSU:
    """One AM-SU neuron (1 fibre, 1 astrocyte, d_key = 1) with hand-set weights.

    k = v = q = the input spike, so the linear astrocyte holds a leaky count of recent
    input spikes (H) and adds ``gain * H`` to the drive at each input spike; the
    Li-Rinzel astrocyte turns each spike into IP3 and adds ``gain * (Ca - Ca_rest)``.
    """
    bio = preset("biology")                               # dt 1 ms, tau_mem 20 ms, reset to 0
    kw = dict(bio.amsu_kwargs(), tau_astro=2000.0, bias=False, learn_tau=False)
    if kind == "neuron alone":
        layer = AMSU(1, 1, n_astrocytes=1, d_key=1, astrocyte=False, **kw)
        weights = [W_SYN]
    elif kind == "linear astrocyte":
        layer = AMSU(1, 1, n_astrocytes=1, d_key=1, astro_gain=0.02, **kw)
        weights = [W_SYN, 1.0, 1.0, 1.0]                  # rows I | K | V | Q
    else:
        layer = AMSU(1, 1, n_astrocytes=1, d_key=1, astro_gain=0.6,
                     astro_model=LiRinzel(delta_IP3=0.05), **kw)
        weights = [W_SYN, 1.0, 1.0, 1.0]
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weights)[:, None])
    return layer


def protocol(quick: bool):
    """Probe spikes every 250 ms, a 100 Hz burst, probes again: ``[T, 1, 1]`` and epochs."""
    before, burst, after = (500.0, 200.0, 1300.0) if quick else (1000.0, 300.0, 2700.0)
    T = n_steps(before + burst + after, 1.0)
    x = torch.zeros(T, 1, 1)
    t = torch.arange(T, dtype=torch.float64)
    probes = (t % 250 == 125) & ((t < before) | (t >= before + burst))
    x[probes, 0, 0] = 1.0
    x[int(before):int(before + burst):10, 0, 0] = 1.0      # 100 Hz
    return x, {"before": (0, int(before)), "burst": (int(before), int(before + burst)),
               "after": (int(before + burst), T)}


def f_i_curve(quick: bool) -> list[tuple[float, float]]:
    """Firing rate (Hz) of the neuron alone for 1 s current steps (current = input x)."""
    layer = neuron("neuron alone")
    with torch.no_grad():
        layer.weight.fill_(1.0)                           # the input is the current itself
    rows = []
    for amp in (0.04, 0.06, 0.08, 0.12, 0.2) if not quick else (0.04, 0.08, 0.2):
        I = step_current(amp, 1000.0, n=1, dt_ms=1.0)
        with torch.no_grad():
            rows.append((amp, float(layer(I).sum())))     # spikes in 1 s = Hz
    return rows


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter protocol")
    ap.add_argument("--out", default="out/single_neuron", help="output folder")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    print("f-I curve of the neuron alone (tau_mem 20 ms, threshold 1, reset to 0):")
    for amp, rate in f_i_curve(args.quick):
        print(f"  current {amp:5.2f} per ms -> {rate:5.0f} Hz")

    x, epochs = protocol(args.quick)
    recs, counts = {}, {}
    for kind in ("neuron alone", "linear astrocyte", "Li-Rinzel astrocyte"):
        rec = record(neuron(kind), x, time_unit="ms")
        recs[kind] = rec
        s = rec.populations["amsu"]["spikes"][:, 0, 0]
        counts[kind] = {e: int(s[a:b].sum()) for e, (a, b) in epochs.items()}
    n_probe = {e: int(x[a:b].sum()) for e, (a, b) in epochs.items()}
    print("\noutput spikes per period (input spikes: "
          + ", ".join(f"{e} {n}" for e, n in n_probe.items()) + ")")
    print(f"  {'':<22}" + "".join(f"{e:>9}" for e in epochs))
    for kind, c in counts.items():
        print(f"  {kind:<22}" + "".join(f"{c[e]:>9}" for e in epochs))
    _figure(x, recs, epochs, out / "single_neuron.png")
    print(f"wrote {out / 'single_neuron.png'}")
    return {"counts": counts, "probes": n_probe}


def _figure(x, recs, epochs, path):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 9), layout="constrained")
    ax_in, ax_u, ax_h, ax_ca, ax_s = fig.subplots(5, 1, sharex=True)
    plot.raster(x[:, 0], ax=ax_in, marker_size=30, time_unit="ms", title="input spikes")
    drive = {k: r.populations["amsu"]["u"][:, 0] + r.populations["amsu"]["o"][:, 0]
             for k, r in recs.items()}
    for k, d in drive.items():
        ax_u.plot(d[:, 0], lw=0.8, label=k)
    ax_u.axhline(1.0, color="k", ls="--", lw=0.8)
    ax_u.set_ylabel("drive u + o")
    ax_u.legend(loc="upper right", fontsize="small")
    plot.calcium_traces(recs["linear astrocyte"].populations["amsu"]["astro"][:, 0], ax=ax_h,
                        time_unit="ms", label="|H| (linear)")
    plot.calcium_traces(recs["Li-Rinzel astrocyte"].populations["amsu"]["astro"][:, 0],
                        ax=ax_ca, time_unit="ms", label="Ca2+ (µM)")
    plot.raster([r.populations["amsu"]["spikes"][:, 0] for r in recs.values()], ax=ax_s,
                labels=list(recs), marker_size=30, time_unit="ms", title="output spikes")
    for ax in (ax_in, ax_u, ax_h, ax_ca, ax_s):
        plot.mark_events(ax, {"burst": epochs["burst"][0], "": epochs["burst"][1]})
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
