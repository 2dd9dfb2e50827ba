"""A tripartite network: Poisson fibres, AM-SU neurons, astrocytes with territories.

    python examples/tripartite_network.py [--quick] [--out DIR] [--astro li_rinzel]

60 input fibres fire at 5 Hz; during a 1 s stimulus, the 15 fibres of the first tile
fire at 50 Hz. 80 neurons on a ring receive topographic, sparse, excitatory synapses.
4 astrocytes cover overlapping territories (tiles widened by half a tile), each
sensing the fibres of its own tile. Times in ms (the "biology" preset: dt 1 ms,
membrane 20 ms, astrocytes 1-10 s, reset to rest).

The same network runs twice, with the astrocytes silenced (gain 0) and active, and
the example prints firing rates per territory before, during and after the stimulus:
the stimulated territory's astrocyte, having integrated the stimulus, keeps its
neurons more excitable for seconds after the stimulus ends. The active run is saved
as ``run.npz`` and drawn into PNGs (raster, membrane, astrocyte heatmap and traces,
rates); re-draw with ``astro-neuron plot OUT/run.npz``. Guide: docs/neuroscience.md.
"""

import argparse
from pathlib import Path

import torch

from astro_neuron.astrocytes import LiRinzel
from astro_neuron.neuro import (
    Territories, TripartitePopulation, n_steps, plot_recording, poisson, record,
)

N_IN, N, A = 60, 80, 4


def build(astro_model: str, dt_ms: float, seed: int = 0) -> TripartitePopulation:
    g = torch.Generator().manual_seed(seed)
    terr = Territories.tiled(N, A, overlap=0.5, n_inputs=N_IN)
    # topographic connectivity: neuron j listens to fibres near its place on the ring
    pos_n = torch.arange(N) / N
    pos_i = torch.arange(N_IN) / N_IN
    dist = (pos_n[:, None] - pos_i[None, :]).abs()
    dist = torch.minimum(dist, 1 - dist)
    conn = ((dist < 0.15) & (torch.rand(N, N_IN, generator=g) < 0.6)).float()
    model = LiRinzel(delta_IP3=0.1) if astro_model == "li_rinzel" else "linear"
    pop = TripartitePopulation(N_IN, N, terr, d_key=8, preset="biology", dt=dt_ms,
                               astro_model=model, connectivity=conn)
    with torch.no_grad():                         # excitatory synapses and gliotransmission
        pop.synapses.weight.uniform_(0.1, 0.3, generator=g)
        pop.synapses.bias.zero_()
        pop.astrocytes.weight.uniform_(0.0, 0.3, generator=g)
        gain = 0.08 if astro_model == "linear" else 2.0
        pop.astrocytes.astro_gain.mul_(gain)
    return pop


def stimulus(quick: bool, dt_ms: float, seed: int = 0):
    total, on, off = (1500.0, 300.0, 800.0) if quick else (4000.0, 500.0, 1500.0)
    T = n_steps(total, dt_ms)
    rate = torch.full((T, N_IN), 5.0)
    t = torch.arange(T) * dt_ms
    rate[(t >= on) & (t < off), :15] = 50.0
    x = poisson(rate, total, n=N_IN, dt_ms=dt_ms, generator=torch.Generator().manual_seed(seed))
    return x, {"before": (0.0, on), "stimulus": (on, off), "after": (off, total)}


def rates(spikes: torch.Tensor, terr: Territories, epochs: dict, dt_ms: float) -> dict:
    """Mean rate (Hz) of each astrocyte's neurons in each epoch."""
    out = {}
    for e, (a, b) in epochs.items():
        s = spikes[int(a / dt_ms):int(b / dt_ms), 0]                  # [t, N]
        per_neuron = s.sum(0) / ((b - a) / 1000.0)
        out[e] = [float(per_neuron[terr.neurons[k]].mean()) for k in range(terr.n_astrocytes)]
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter simulation")
    ap.add_argument("--out", default="out/tripartite", help="output folder")
    ap.add_argument("--astro", default="linear", choices=["linear", "li_rinzel"],
                    help="astrocyte model (default linear)")
    args = ap.parse_args(argv)
    dt = 1.0
    out = Path(args.out)
    x, epochs = stimulus(args.quick, dt)
    pop = build(args.astro, dt)
    print(pop.territories)
    print(f"{x.shape[0]} steps of {dt:g} ms; stimulus on fibres 0-14 from "
          f"{epochs['stimulus'][0]:g} to {epochs['stimulus'][1]:g} ms")

    results = {}
    for label, silence in (("astrocytes silenced", True), (f"{args.astro} astrocytes", False)):
        net = build(args.astro, dt)
        if silence:
            with torch.no_grad():
                net.astrocytes.astro_gain.zero_()
        with torch.no_grad():
            spikes = net(x)
        results[label] = rates(spikes, net.territories, epochs, dt)
    print(f"\nmean rate (Hz) of each territory's neurons: {'':8}"
          + "  ".join(f"astro {k}" for k in range(A)))
    for label, r in results.items():
        for e, row in r.items():
            print(f"  {label:<24} {e:<9} " + "  ".join(f"{v:7.1f}" for v in row))

    rec = record(pop, x, info={"events": {"stimulus on": epochs["stimulus"][0],
                                          "stimulus off": epochs["stimulus"][1]}})
    path = rec.save(out / "run.npz")
    paths = plot_recording(rec, out)
    print(f"\nwrote {path} and {len(paths)} PNGs to {out}/ "
          f"(re-draw: astro-neuron plot {path})")
    return results


if __name__ == "__main__":
    main()
