"""torch.compile (Inductor, CPU) of the AM-SU's element-wise chain after the scans
in training: read-out RMS norm x gain, ``u + o`` and the spike function, forward and
backward, against the eager model, one thread (docs/benchmarks.md, issue 14, third
round: tried, not adopted). Prints the first step's time (the compile), the loss and
gradient differences from eager, and the step times of ``rounds`` interleaved rounds.

    PYTHONPATH=$PWD python scripts/compile_amsu_chain.py [d_model T batch rounds]

The library's spike function (``surrogate._Fire``) is not traceable by dynamo
(``torch.result_type`` in its forward), so the compiled chain uses a traceable twin
with the same forward (strict ``>``) and the same surrogate derivative.
"""

from __future__ import annotations

import statistics
import sys
import time

import torch
import torch.nn.functional as F

import astro_neuron.functional.amsu as famsu
import astro_neuron.functional.amsu.chunk as chunk
from astro_neuron.functional.amsu.naive import prepare
from astro_neuron.functional.amsu.spec import READOUT_EPS, AMSUOutput, AMSUState
from astro_neuron.functional.rotary import rotary_table, rotate
from astro_neuron.functional.scan import astro_chunked, leaky_chunked
from astro_neuron.lm.config import AMSNetConfig
from astro_neuron.lm.model import build_model


class _FireT(torch.autograd.Function):
    """Binary spikes, traceable: ``(y > thr)`` forward, ``sg.derivative`` backward."""

    @staticmethod
    def forward(ctx, y, thr, sg):  # type: ignore[override]
        ctx.save_for_backward(y, thr)
        ctx.sg = sg
        return (y > thr).to(y.dtype)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        y, thr = ctx.saved_tensors
        t = g * ctx.sg.derivative(y - thr)
        return t, -t.sum_to_size(thr.shape), None


def chain(o_raw, u, gain, thr, dv: int, sg):
    o = F.rms_norm(o_raw, (dv,), eps=READOUT_EPS).flatten(-2) * gain
    return _FireT.apply(u + o, thr, sg), o


compiled_chain = torch.compile(chain, fullgraph=True, dynamic=False)
eager_form = chunk.amsu_chunked
USE = {"compiled": False}


def amsu_chunked(x_seq, state, p, spec, chunk_size=64):
    """The model's configuration only (neuron path, rotary, fixed retention, RMS
    read-out, binary spikes); the scans and projections as in the library."""
    if not USE["compiled"]:
        return eager_form(x_seq, state, p, spec, chunk_size)
    state = prepare(x_seq, state, p, spec, seq=True)
    I, k, v, q, _ = chunk.project_all(x_seq, p, spec)
    u, u_T = leaky_chunked(I, p.beta, state.u, chunk_size)
    cos, sin = rotary_table(state.t, k.shape, spec.rotary_base, spec.rotary_dims, k.dtype,
                            k.device)
    k, q = rotate(k, cos, sin), rotate(q, cos, sin)
    o, H = astro_chunked(q, k, v, p.gamma, state.H, chunk_size)
    s, o = compiled_chain(o, u, p.astro_gain, p.threshold, spec.d_value, spec.surrogate)
    return AMSUOutput(s, u, o), AMSUState(u_T, H, state.t + x_seq.shape[0], state.conv)


def main() -> None:
    torch.set_num_threads(1)
    d, T, B, rounds = (int(a) for a in sys.argv[1:5]) if len(sys.argv) > 4 else (128, 256, 16, 21)
    chunk.amsu_chunked = famsu.amsu_chunked = amsu_chunked
    torch.manual_seed(0)
    m = build_model(AMSNetConfig(n_layer=2, d_model=d, n_head=max(1, d // 64), block_size=T))
    x = torch.randint(0, 256, (B, T))

    def step(compiled: bool):
        USE["compiled"] = compiled
        m.zero_grad(set_to_none=True)
        _, loss = m(x, x)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in m.named_parameters()
                               if p.grad is not None}

    ref_loss, ref = step(False)
    t0 = time.perf_counter()
    loss, g = step(True)
    rel = max(float((g[n] - ref[n]).abs().max() / ref[n].abs().max().clamp_min(1e-30))
              for n in ref)
    print(f"d_model {d}, T {T}, batch {B}: first compiled step {time.perf_counter() - t0:.1f} s; "
          f"loss difference {abs(float(loss - ref_loss)):.3g}; largest relative gradient "
          f"difference {rel:.3g}; gradients bitwise equal: "
          f"{all(torch.equal(g[n], ref[n]) for n in ref)}")
    step(False), step(True)
    times: dict = {False: [], True: []}
    for _ in range(rounds):
        for c in (False, True):
            t0 = time.perf_counter()
            step(c)
            times[c].append(time.perf_counter() - t0)
    ratios = sorted(a / b for a, b in zip(times[False], times[True]))
    print(f"{rounds} interleaved rounds: median step eager {statistics.median(times[False]) * 1e3:.1f} ms, "
          f"compiled {statistics.median(times[True]) * 1e3:.1f} ms; per-round eager/compiled "
          f"median {statistics.median(ratios):.3f}x (min {ratios[0]:.3f}x, max {ratios[-1]:.3f}x)")


if __name__ == "__main__":
    main()
