"""The membrane scan's compiled kernels split over neurons with numba's ``prange``,
against the library's one-thread kernels, inside the language model's training step.

    [NUMBA_LAYER=omp] python scripts/measure_parallel_kernels.py [--threads 2]
        [--d-model 64] [--seq-len 256] [--batch 16] [--repeats 12]

Times, interleaved in one process with freed memory kept: the AM-SNet's forward +
backward with the library's kernels, the same with the split kernels, and the
same-size Transformer; prints the medians, AM/TF for both, and how long the library's
compiled kernels take per step (their share of the step). numba's threads are its
workqueue layer unless ``NUMBA_LAYER`` names another; ``omp`` loads the system's
libgomp beside torch's own. In the twenty-second session (docs/benchmarks.md,
"Eighth round") the split was slower at every setting tried (AM/TF 0.83 -> 0.79 at
d 64 and 0.90 -> 0.79 at d 128 with workqueue, two threads). Set
``OMP_WAIT_POLICY=PASSIVE`` in the environment to try torch's workers without spinning.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numba

numba.config.THREADING_LAYER = os.environ.get("NUMBA_LAYER", "workqueue")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from numba import njit, prange  # noqa: E402

import astro_neuron.functional.compiled as compiled  # noqa: E402
from astro_neuron.allocator import retain_freed_memory  # noqa: E402
from astro_neuron.lm.config import AMSNetConfig, transformer_twin  # noqa: E402
from astro_neuron.lm.model import build_model  # noqa: E402

BLOCK, LINE, PARTS = 16, 16, 2


@njit(nogil=True, parallel=True)
def forward(x, d, u0, y):                                  # pragma: no cover - compiled
    M = x.shape[1]
    for p in prange(PARTS):
        j0, j1 = (M * p) // PARTS, (M * (p + 1)) // PARTS
        u = u0[j0:j1].copy()
        for t in range(x.shape[0]):
            xt, yt = x[t], y[t]
            for j in range(j1 - j0):
                u[j] = d[j0 + j] * u[j] + xt[j0 + j]
                yt[j0 + j] = u[j]


@njit(nogil=True, parallel=True)
def backward(g, gT, d, y, u0, gx, acc):                   # pragma: no cover - compiled
    T, M = g.shape
    total = 0.0
    for p in prange(PARTS):
        j0, j1 = (M * p) // PARTS, (M * (p + 1)) // PARTS
        G = gT[j0:j1].copy()
        touched = 0.0
        for b in range((T + BLOCK - 1) // BLOCK - 1, -1, -1):
            t0, t1 = b * BLOCK, min(T, b * BLOCK + BLOCK)
            for t in range(max(t0 - 1, 0), t1):           # block rows read ascending
                gt, xt, yt = g[t], gx[t], y[t]
                for j in range(j0, j1, LINE):
                    touched += gt[j] + xt[j] + yt[j]
            for t in range(t1 - 1, t0 - 1, -1):
                gt, xt = g[t], gx[t]
                prev = y[t - 1] if t > 0 else u0
                for j in range(j1 - j0):
                    Gj = G[j] + gt[j0 + j]
                    xt[j0 + j] = Gj
                    acc[j0 + j] += Gj * prev[j0 + j]
                    G[j] = d[j0 + j] * Gj
        total += touched
    return total


def check_equal(serial, split) -> None:
    """The split kernels give the library's results bit for bit (a 100 x 1001 scan)."""
    rng = np.random.default_rng(0)
    x, g = (rng.standard_normal((100, 1001)).astype(np.float32) for _ in range(2))
    d = rng.uniform(0.5, 0.99, 1001).astype(np.float32)
    u0, gT = (rng.standard_normal(1001).astype(np.float32) for _ in range(2))
    out = []
    for k in (serial, split):
        y, gx, acc = np.empty_like(x), np.empty_like(x), np.zeros(1001)
        k.leaky_forward(x, d, u0, y)
        k.leaky_backward(g, gT, d, y, u0, gx, acc)
        out.append((y, gx, acc))
    assert all(np.array_equal(a, b) for a, b in zip(*out)), "split kernels differ"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=12)
    a = ap.parse_args()
    retain_freed_memory()
    torch.set_num_threads(a.threads)
    cfg = AMSNetConfig(d_model=a.d_model, n_layer=2, n_head=max(1, a.d_model // 64),
                       block_size=a.seq_len)
    torch.manual_seed(0)
    am, tf = build_model(cfg), build_model(transformer_twin(cfg))
    x = torch.randint(0, 256, (a.batch, a.seq_len))
    serial = compiled._load()
    split = serial._replace(leaky_forward=forward, leaky_backward=backward)
    spent = [0.0]

    def timed(f):
        def run(*args):
            t0 = time.perf_counter()
            out = f(*args)
            spent[0] += time.perf_counter() - t0
            return out
        return run
    serial_timed = compiled._Kernels(*[timed(f) for f in serial])

    def step(m) -> float:
        m.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        _, loss = m(x, x)
        loss.backward()
        return time.perf_counter() - t0

    check_equal(serial, split)
    kernels = {"library": serial_timed, "split": split}
    for k in (*kernels.values(), *kernels.values()):      # warm-up (compiles the split)
        compiled._kernels = k
        step(am)
        step(tf)
    times: dict[str, list[float]] = {"library": [], "split": [], "Transformer": []}
    spent[0] = 0.0
    for _ in range(a.repeats):
        for name, k in kernels.items():
            compiled._kernels = k
            times[name].append(step(am))
        times["Transformer"].append(step(tf))
    compiled._kernels = serial
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    print(f"d_model {a.d_model}, T {a.seq_len}, batch {a.batch}, {a.threads} thread(s), numba "
          f"layer {numba.threading_layer()}: AM-SNet {med['library']:.1f} ms (library kernels), "
          f"{med['split']:.1f} ms (split), Transformer {med['Transformer']:.1f} ms; AM/TF "
          f"{med['Transformer'] / med['library']:.3f} -> {med['Transformer'] / med['split']:.3f}; "
          f"the library's compiled kernels {spent[0] / a.repeats * 1e3:.1f} ms a step")


if __name__ == "__main__":
    main()
