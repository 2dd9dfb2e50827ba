"""The channel-mixing LIF's membrane scan and its ATan spikes fused into one compiled
pass each way, against the library's two steps (compiled scan, then the spike
function), alone and inside the language model's training step.

    python scripts/measure_fused_fire.py [--threads 1] [--d-model 64] [--seq-len 256]
        [--batch 16] [--repeats 9]

The fused forward writes the membrane and the spikes in the scan's own pass; the
fused backward turns the spikes' gradient into the membrane's inside the backward
scan (``g / (2/alpha + (2/alpha) c^2 e^2)``, ``e = u - theta``, Surrogate.grad_'s
arithmetic) and sums the threshold's gradient in float64 in the same pass. It first
checks the fused form against the library's ``lif_chunked`` (spikes, membrane, final
state and the gradients of input, decay, threshold and initial state), then times:
one layer of ``(T, batch, 4 d_model)`` forward and backward, and the AM-SNet's
training step with the channel-mixing LIF swapped in, interleaved with the library's
and the same-size Transformer. In the twenty-third session (docs/benchmarks.md,
"Ninth round") the fused forward was faster alone, the fused backward was not, and
the model step was slower; the library keeps the two steps.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np
import torch
from numba import njit
from torch.autograd.function import once_differentiable

import astro_neuron.functional.lif as F_lif
from astro_neuron.allocator import retain_freed_memory
from astro_neuron.functional.compiled import use_compiled
from astro_neuron.functional.surrogate import ATan
from astro_neuron.lm.config import AMSNetConfig, transformer_twin
from astro_neuron.lm.model import build_model

BLOCK, LINE = 16, 16            # as the library's membrane kernels (compiled.py)


@njit(nogil=True, cache=True)
def fire_forward(x, d, u0, thr, y, s):                          # pragma: no cover
    u = u0.copy()
    for t in range(x.shape[0]):
        xt, yt, st = x[t], y[t], s[t]
        for j in range(x.shape[1]):
            u[j] = d[j] * u[j] + xt[j]
            yt[j] = u[j]
            st[j] = u[j] > thr[j]


@njit(nogil=True, cache=True, error_model="numpy")
def fire_backward(gs, gT, d, thr, a, b, y, u0, gx, acc, acc_thr):   # pragma: no cover
    G = gT.copy()
    T, M = gs.shape
    a, b = y.dtype.type(a), y.dtype.type(b)
    touched = 0.0
    for blk in range((T + BLOCK - 1) // BLOCK - 1, -1, -1):
        t0 = blk * BLOCK
        t1 = min(T, t0 + BLOCK)
        for t in range(max(t0 - 1, 0), t1):                    # rows ascending first
            st, xt, yt = gs[t], gx[t], y[t]
            for j in range(0, M, LINE):
                touched += st[j] + xt[j] + yt[j]
        for t in range(t1 - 1, t0 - 1, -1):
            st, xt, yt = gs[t], gx[t], y[t]
            prev = y[t - 1] if t > 0 else u0
            for j in range(M):
                e = yt[j] - thr[j]
                h = st[j] / (a + b * e * e)
                acc_thr[j] += h
                G[j] = G[j] + h
                xt[j] = G[j]
                acc[j] += G[j] * prev[j]
                G[j] = d[j] * G[j]
    return touched


class FusedLeakyFire(torch.autograd.Function):
    """Spikes, membrane and final state of ``u_t = d u_{t-1} + x_t``, ``s_t = u_t >
    theta``; the membrane's own gradient is not taken (the language model uses only
    the spikes and the final state)."""

    @staticmethod
    def forward(ctx, x, decay, u0, threshold, alpha):  # type: ignore[override]
        T = x.shape[0]
        step_shape = x.shape[1:]
        M = int(np.prod(step_shape))
        d = decay.detach().to(x.dtype).expand(step_shape).reshape(M).contiguous()
        thr = threshold.detach().to(x.dtype).expand(step_shape).reshape(M).contiguous()
        u = u0.detach().reshape(M).contiguous()
        y = torch.empty(x.shape, dtype=x.dtype)
        s = torch.empty(x.shape, dtype=x.dtype)
        fire_forward(x.detach().reshape(T, M).contiguous().numpy(), d.numpy(), u.numpy(),
                     thr.numpy(), y.view(T, M).numpy(), s.view(T, M).numpy())
        ctx.save_for_backward(y, d, u, thr)
        ctx.set_materialize_grads(False)     # unused outputs' gradients stay None
        ctx.meta = (decay.shape, threshold.shape, step_shape, alpha)
        return s, y, y[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, g_s, g_seq, g_T):  # type: ignore[override]
        if g_seq is not None and bool(g_seq.ne(0).any()):
            raise NotImplementedError("the membrane's own gradient is not fused here")
        y, d, u, thr = ctx.saved_tensors
        decay_shape, thr_shape, step_shape, alpha = ctx.meta
        T, M = y.shape[0], d.shape[0]
        y = y.view(T, M)
        gs = (torch.zeros_like(y) if g_s is None else g_s.detach().reshape(T, M).contiguous())
        gT = torch.zeros(M, dtype=y.dtype) if g_T is None else g_T.detach().reshape(M)
        gx = torch.empty_like(y)
        acc = torch.zeros(M, dtype=torch.float64)
        acc_thr = torch.zeros(M, dtype=torch.float64)
        c = math.pi / 2 * alpha
        fire_backward(gs.numpy(), gT.contiguous().numpy(), d.numpy(), thr.numpy(), 2 / alpha,
                      c * c * 2 / alpha, y.numpy(), u.numpy(), gx.numpy(), acc.numpy(),
                      acc_thr.numpy())
        dd = acc.view(step_shape).sum_to_size(decay_shape).to(y.dtype)
        du0 = (gx[0] * d).view(step_shape)
        dthr = acc_thr.view(step_shape).sum_to_size(thr_shape).neg_().to(y.dtype)
        return gx.view(T, *step_shape), dd, du0, dthr, None


LIBRARY = F_lif.lif_chunked


def fused_lif_chunked(x_seq, u0, beta, threshold, spec, chunk_size=64, o=None):
    """``F_lif.lif_chunked`` with the fused kernels where they apply."""
    if (o is None and spec.spiking and spec.spike_levels == 1
            and type(spec.surrogate) is ATan and use_compiled(x_seq)):
        u = F_lif._start(x_seq, u0).expand_as(x_seq[0])
        return FusedLeakyFire.apply(x_seq, beta, u, threshold, spec.surrogate.alpha)
    return LIBRARY(x_seq, u0, beta, threshold, spec, chunk_size, o)


def check_equal() -> float:
    """Largest difference between the fused and the library's forms (values, grads)."""
    torch.manual_seed(0)
    T, B, N = 70, 3, 33
    x = torch.randn(T, B, N, requires_grad=True)
    beta = torch.rand(N).mul(0.9).add(0.05).requires_grad_()
    thr = torch.rand(N).add(0.5).requires_grad_()
    u0 = torch.randn(B, N, requires_grad=True)
    spec = F_lif.LIFSpec(N)
    w, w3 = torch.randn(T, B, N), torch.randn(B, N)
    outs = []
    for f in (LIBRARY, fused_lif_chunked):
        s, u, uT = f(x, u0, beta, thr, spec)
        loss = (s * w).sum() + (uT * w3).sum()
        outs.append((s, u, uT) + torch.autograd.grad(loss, (x, beta, thr, u0)))
    return max(float((a - b).abs().max()) for a, b in zip(*outs))


def _median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


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
    print(f"largest difference, fused vs library (values and gradients): {check_equal():.3g}")

    T, B, f = a.seq_len, a.batch, 4 * a.d_model
    x = torch.randn(T, B, f, requires_grad=True)
    beta = torch.full((f,), 0.9, requires_grad=True)
    thr = torch.ones(f, requires_grad=True)
    spec, g = F_lif.LIFSpec(f), torch.randn(T, B, f)
    for name, fn in (("library", LIBRARY), ("fused", fused_lif_chunked)):
        fwd = _median_ms(lambda: fn(x, None, beta, thr, spec), a.repeats)
        both = _median_ms(lambda: torch.autograd.backward(
            [fn(x, None, beta, thr, spec)[0]], [g]), a.repeats)
        print(f"one layer ({T}, {B}, {f}), {name}: forward {fwd:.2f} ms, "
              f"backward {both - fwd:.2f} ms")

    cfg = AMSNetConfig(n_layer=2, d_model=a.d_model, n_head=max(1, a.d_model // 64),
                       block_size=T)
    torch.manual_seed(0)
    am = build_model(cfg)
    tf = build_model(transformer_twin(cfg))
    idx = torch.randint(0, 256, (B, T))

    def step(m):
        m.zero_grad(set_to_none=True)
        _, loss = m(idx, idx)
        loss.backward()

    runs = {"library": (am, LIBRARY), "fused": (am, fused_lif_chunked), "transformer": (tf, None)}
    times: dict = {k: [] for k in runs}
    for _ in range(a.repeats + 1):
        for k, (m, form) in runs.items():
            if form is not None:
                F_lif.lif_chunked = form
            t0 = time.perf_counter()
            step(m)
            times[k].append(time.perf_counter() - t0)
    F_lif.lif_chunked = LIBRARY
    med = {k: statistics.median(v[1:]) * 1e3 for k, v in times.items()}
    print(f"model step (d_model {a.d_model}, T {T}, batch {B}, {a.threads} thread(s)): "
          + ", ".join(f"{k} {v:.1f} ms" for k, v in med.items())
          + f"; AM/TF library {med['transformer'] / med['library']:.3f}, "
          f"fused {med['transformer'] / med['fused']:.3f}")


if __name__ == "__main__":
    main()
