"""Time ``astro_chunked`` forward + backward at several chunk sizes, interleaved in one
process, with freed memory kept (as the training commands run).

    python scripts/measure_chunk_sizes.py [--threads 1] [--chunks 16,32,64,128]
        [--shapes 1024x8x16x16,1024x8x8x32] [--repeats 25]

A shape is ``T x B x A x d`` (``d_k = d_v = d``); the decay is trainable, in
[0.79, 0.99]. Prints the median milliseconds per chunk size. In the twenty-second
session (docs/benchmarks.md, "Eighth round") a first process, minutes after the
machine started, had chunks of 32 ahead by 1.04-1.5x at ``d`` 16-32; three later ones
gave 0.98-1.03x. Run it more than once, in separate processes, before reading a gain.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from astro_neuron.allocator import retain_freed_memory
from astro_neuron.functional.scan import astro_chunked


def time_shape(shape: tuple[int, ...], chunks: list[int], repeats: int) -> dict[int, float]:
    T, B, A, d = shape
    torch.manual_seed(0)
    q, k, v = (torch.randn(T, B, A, d, requires_grad=True) for _ in range(3))
    decay = torch.rand(A, d).mul(0.2).add(0.79).requires_grad_()
    grad = torch.randn(T, B, A, d)

    def run(c: int) -> None:
        astro_chunked(q, k, v, decay, chunk_size=c)[0].backward(grad)

    for c in chunks:                              # warm-up: two runs each
        run(c)
        run(c)
    times: dict[int, list[float]] = {c: [] for c in chunks}
    for _ in range(repeats):
        for c in chunks:
            t0 = time.perf_counter()
            run(c)
            times[c].append(time.perf_counter() - t0)
    return {c: statistics.median(ts) * 1e3 for c, ts in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--chunks", default="16,32,64,128")
    ap.add_argument("--shapes", default="1024x8x16x16,1024x8x8x32,1024x8x4x64,256x16x1x64")
    ap.add_argument("--repeats", type=int, default=25)
    a = ap.parse_args()
    retain_freed_memory()
    torch.set_num_threads(a.threads)
    chunks = [int(c) for c in a.chunks.split(",")]
    for spec in a.shapes.split(","):
        shape = tuple(int(x) for x in spec.split("x"))
        ms = time_shape(shape, chunks, a.repeats)
        print(f"(T, B, A, d) = {shape}: " + "  ".join(f"C {c}: {m:.2f} ms" for c, m in ms.items()),
              flush=True)


if __name__ == "__main__":
    main()
