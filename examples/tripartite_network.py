"""A tripartite E/I network in biological units: a stimulus, astrocytes, their SIC.

    python examples/tripartite_network.py [--quick] [--out DIR] [--astro li_rinzel]
                                          [--glio] [--nest-script]

The network is the preset :func:`astro_neuron.neuro.circuits.ei_network` with its
documented parameters, nothing overridden: 160 excitatory and 40 inhibitory LIF
neurons (Vogels-Abbott time constants, delays 1 ms, refractory 5 ms), 100 Poisson
fibres at 20 Hz, 4 astrocytes tiling the excitatory neurons. On top of it this script
adds one thing, a stimulus: 20 more fibres at 40 Hz onto the first astrocyte's
territory, from ``on`` to ``off`` ms. It runs the network twice, with the astrocytes'
action silenced (no SIC, no modulation) and active, and prints the excitatory rate of
each territory before, during and after the stimulus, and each astrocyte's calcium
signal at the end of each epoch. ``--glio`` makes the E -> E synapses Tsodyks-Markram
with release-increasing gliotransmission (alpha = 1). ``--nest-script`` also writes
``net.py`` + ``net.npz``: the same network with AdEx neurons and Li-Rinzel astrocytes
for NEST (``mpirun -np 4 python net.py``).

The active run is saved as ``run.npz`` (a Recording) and drawn into PNGs.
Guide: docs/neuroscience.md.
"""

import argparse
import time
from pathlib import Path

import numpy as np

from astro_neuron.neuro import plot_recording
from astro_neuron.neuro.circuits import ei_network
from astro_neuron.neuro.synapses import Gliotransmission


def build(astro: str, glio: bool, epochs: dict, dt: float):
    g = Gliotransmission(alpha=1.0, threshold=0.5 if astro == "li_rinzel" else 10.0) if glio else None
    net = ei_network(astro, tsodyks=glio, glio=g, dt=dt, seed=0)
    on, off = epochs["stimulus"]
    net.poisson("stim", 20, rate_hz=40.0, start_ms=on, stop_ms=off)
    terr0 = net.astro["astro"].territories.neurons[0].numpy()
    mask = np.zeros((net.groups["E"].n, 20), dtype=bool)
    mask[terr0] = True
    net.connect("stim", "E", "mask", mask=mask, weight=60.0, delay=1.0)
    return net


def territory_rates(run, net, epochs: dict) -> dict:
    """Mean rate (Hz) of each territory's excitatory neurons in each epoch."""
    terr = net.astro["astro"].territories.neurons.numpy()
    t = run.times()
    out = {}
    for e, (a, b) in epochs.items():
        sel = (t > a) & (t <= b)
        per_neuron = run.spikes["E"][sel].sum(0) / ((b - a) / 1000.0)
        out[e] = [float(per_neuron[m].mean()) for m in terr]
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter run, dt 1 ms")
    ap.add_argument("--out", default="out/tripartite", help="output folder")
    ap.add_argument("--astro", default="linear", choices=["linear", "li_rinzel"])
    ap.add_argument("--glio", action="store_true", help="TM synapses with gliotransmission")
    ap.add_argument("--nest-script", action="store_true", help="also write a NEST script")
    args = ap.parse_args(argv)
    total, on, off = (1500.0, 300.0, 800.0) if args.quick else (4000.0, 1000.0, 2000.0)
    dt = 1.0 if args.quick else 0.5
    epochs = {"before": (0.0, on), "stimulus": (on, off), "after": (off, total)}
    out = Path(args.out)
    net = build(args.astro, args.glio, epochs, dt)
    print(net.summary())
    print(f"{total:g} ms in steps of {dt:g} ms; stimulus on territory 0 from {on:g} to {off:g} ms")

    results, runs = {}, {}
    for label, active in (("astrocytes silenced", False), (f"{args.astro} astrocytes", True)):
        t0 = time.time()
        run = build(args.astro, args.glio, epochs, dt).simulate(total, astro_on=active)
        runs[label] = run
        results[label] = territory_rates(run, net, epochs)
        print(f"  ran '{label}' in {time.time() - t0:.1f} s")
    print("\nexcitatory rate (Hz) per territory:   " + "  ".join(f"astro {k}" for k in range(4)))
    for label, r in results.items():
        for e, row in r.items():
            print(f"  {label:<22} {e:<9} " + "  ".join(f"{v:7.1f}" for v in row))
    run = runs[f"{args.astro} astrocytes"]
    a = run.astro["astro"]
    key = "Ca" if "Ca" in a else "c"
    unit = "µM" if key == "Ca" else "(sensed spike weight)"
    print(f"\nastrocyte signal {key} {unit} at the end of each epoch:")
    for e, (_, b) in epochs.items():
        print(f"  {e:<9} " + "  ".join(f"{v:7.3f}" for v in a[key][int(round(b / dt)) - 1]))

    rec = run.to_recording(info={"events": {"stimulus on": on, "stimulus off": off}})
    path = rec.save(out / "run.npz")
    paths = plot_recording(rec, out)
    print(f"\nwrote {path} and {len(paths)} PNGs to {out}/")
    if args.nest_script:
        from astro_neuron.neuro.circuits import ei_network as _ei
        from astro_neuron.neuro.nest_export import write_nest_script
        nnet = _ei("li_rinzel", neuron="adex", dt=0.1, seed=0)
        script = write_nest_script(nnet, out, total, name="net")
        print(f"wrote {script} (run: python {script}  or  mpirun -np 4 python {script})")
    return results


if __name__ == "__main__":
    main()
