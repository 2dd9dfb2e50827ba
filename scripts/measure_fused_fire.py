"""The channel-mixing LIF's membrane scan and its ATan spikes fused into one compiled
pass each way (the library's ``lif_chunked`` on the CPU since the twenty-third
session), against the two steps it replaced (the compiled scan, then the spike
function), alone and inside the language model's training step.

    python scripts/measure_fused_fire.py [--threads 1] [--d-model 64] [--seq-len 256]
        [--batch 16] [--repeats 9]

It first checks the two forms equal (spikes, membrane, final state and the gradients
of input, decay, threshold and initial state), then times one layer of ``(T, batch,
4 d_model)`` forward and backward, and the AM-SNet's training step with each form,
interleaved with the same-size Transformer (docs/benchmarks.md, "Ninth round").
"""

from __future__ import annotations

import argparse

import torch

import astro_neuron.functional.lif as F_lif
from astro_neuron.allocator import retain_freed_memory
from astro_neuron.functional.amsu.step import fire
from astro_neuron.functional.scan import leaky_chunked
from lm_timing import interleaved_medians_ms, lm_pair, median_ms, train_step

LIBRARY = F_lif.lif_chunked


def two_steps(x_seq, u0, beta, threshold, spec, chunk_size=64, o=None):
    """``lif_chunked`` as it was: the compiled scan, then the spike function."""
    u, u_T = leaky_chunked(x_seq, beta, F_lif._start(x_seq, u0), chunk_size)
    return fire(u if o is None else u + o, threshold, spec), u, u_T


def check_equal() -> float:
    """Largest difference between the two forms (values and gradients)."""
    torch.manual_seed(0)
    T, B, N = 70, 3, 33
    x = torch.randn(T, B, N, requires_grad=True)
    beta = torch.rand(N).mul(0.9).add(0.05).requires_grad_()
    thr = torch.rand(N).add(0.5).requires_grad_()
    u0 = torch.randn(B, N, requires_grad=True)
    spec = F_lif.LIFSpec(N)
    w, w3 = torch.randn(T, B, N), torch.randn(B, N)
    outs = []
    for f in (two_steps, LIBRARY):
        s, u, uT = f(x, u0, beta, thr, spec)
        loss = (s * w).sum() + (uT * w3).sum()
        outs.append((s, u, uT) + torch.autograd.grad(loss, (x, beta, thr, u0)))
    return max(float((a - b).abs().max()) for a, b in zip(*outs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=9)
    a = ap.parse_args()
    retain_freed_memory()
    torch.set_num_threads(a.threads)
    print(f"largest difference, fused vs two steps (values and gradients): {check_equal():.3g}")

    T, B, f = a.seq_len, a.batch, 4 * a.d_model
    x = torch.randn(T, B, f, requires_grad=True)
    beta = torch.full((f,), 0.9, requires_grad=True)
    thr = torch.ones(f, requires_grad=True)
    spec, g = F_lif.LIFSpec(f), torch.randn(T, B, f)
    for name, fn in (("two steps", two_steps), ("fused", LIBRARY)):
        fwd = median_ms(lambda: fn(x, None, beta, thr, spec), a.repeats)
        both = median_ms(lambda: torch.autograd.backward(
            [fn(x, None, beta, thr, spec)[0]], [g]), a.repeats)
        print(f"one layer ({T}, {B}, {f}), {name}: forward {fwd:.2f} ms, "
              f"backward {both - fwd:.2f} ms")

    am, tf, idx = lm_pair(a.d_model, T, B)
    forms = {"two steps": (am, two_steps), "fused": (am, LIBRARY), "transformer": (tf, LIBRARY)}

    def run(name: str):
        def one() -> None:
            m, F_lif.lif_chunked = forms[name]
            train_step(m, idx)
        return one

    try:
        med = interleaved_medians_ms({k: run(k) for k in forms}, a.repeats)
    finally:
        F_lif.lif_chunked = LIBRARY
    print(f"model step (d_model {a.d_model}, T {T}, batch {B}, {a.threads} thread(s)): "
          + ", ".join(f"{k} {v:.1f} ms" for k, v in med.items())
          + f"; AM/TF two steps {med['transformer'] / med['two steps']:.3f}, "
          f"fused {med['transformer'] / med['fused']:.3f}")


if __name__ == "__main__":
    main()
