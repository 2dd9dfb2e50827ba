"""The AM-SU in a few lines: build a layer, run it in parallel and step by step.

    python examples/amsu_quickstart.py [--quick] [--out DIR]

Shows that the chunked (parallel) form and streaming one step at a time give the same
spikes and the same final state.
"""

import argparse

import torch

import astro_neuron as an


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny settings")
    ap.add_argument("--out", default=".", help="unused; accepted for uniformity")
    args = ap.parse_args(argv)
    T, B = (50, 2) if args.quick else (500, 8)
    torch.manual_seed(0)
    layer = an.AMSU(in_features=16, n_neurons=32, n_astrocytes=4, d_key=8,
                    tau_mem=2.0, tau_astro=(10.0, 1000.0))
    x_seq = torch.rand(T, B, 16)
    spikes, state = layer(x_seq, return_state=True)          # parallel (chunked) form

    stream_state = None
    stream = []
    for t in range(T):                                        # streaming, O(1) per step
        s_t, stream_state = layer.step(x_seq[t], stream_state)
        stream.append(s_t)
    stream = torch.stack(stream)
    print(f"T={T} B={B}: firing rate {spikes.mean():.3f}")
    print(f"spikes that differ between forms: {int((stream != spikes).sum())} "
          "(only where the drive is within rounding of the threshold)")
    print(f"final astrocyte state max difference: {(stream_state.H - state.H).abs().max():.2e}")


if __name__ == "__main__":
    main()
