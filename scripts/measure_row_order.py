"""Time the membrane scan's backward loop reading rows in descending order, as written
plainly and with the block-ascending reads of ``functional/compiled.py``.

    python scripts/measure_row_order.py [T] [M] [repeats]      # default 256 4096 30

Prints medians (one thread, float32) of four loops over a ``(T, M)`` array:
a read-only sum walking rows ascending and descending; the backward recurrence
``G = G + g_t; gx_t = G; G = d G`` walking down plainly; and the same after touching
each block of 16 rows once, ascending (the form the library uses). On the 2-core AMD
EPYC machine of docs/benchmarks.md ("Seventh round") the descending loops ran 3-5x
slower than ascending ones, and the block touch won most of it back. Results are
checked equal.
"""

from __future__ import annotations

import sys

import numpy as np
from numba import njit

from lm_timing import median_ms

BLOCK, LINE = 16, 16


@njit(nogil=True)
def read_ascending(g):
    acc = np.zeros(g.shape[1], np.float32)
    for t in range(g.shape[0]):
        for j in range(g.shape[1]):
            acc[j] += g[t, j]
    return acc


@njit(nogil=True)
def read_descending(g):
    acc = np.zeros(g.shape[1], np.float32)
    for t in range(g.shape[0] - 1, -1, -1):
        for j in range(g.shape[1]):
            acc[j] += g[t, j]
    return acc


@njit(nogil=True)
def backward_plain(g, d, gx):
    G = np.zeros(g.shape[1], np.float32)
    for t in range(g.shape[0] - 1, -1, -1):
        for j in range(g.shape[1]):
            G[j] = G[j] + g[t, j]
            gx[t, j] = G[j]
            G[j] = d[j] * G[j]


@njit(nogil=True)
def backward_blocks(g, d, gx):
    G = np.zeros(g.shape[1], np.float32)
    T, M = g.shape
    touched = 0.0
    for b in range((T + BLOCK - 1) // BLOCK - 1, -1, -1):
        t0, t1 = b * BLOCK, min(T, b * BLOCK + BLOCK)
        for t in range(t0, t1):
            for j in range(0, M, LINE):
                touched += g[t, j] + gx[t, j]
        for t in range(t1 - 1, t0 - 1, -1):
            for j in range(M):
                G[j] = G[j] + g[t, j]
                gx[t, j] = G[j]
                G[j] = d[j] * G[j]
    return touched


def main(T: int = 256, M: int = 4096, repeats: int = 30) -> None:
    rng = np.random.default_rng(0)
    g = rng.standard_normal((T, M)).astype(np.float32)
    d = rng.uniform(0.05, 0.95, M).astype(np.float32)
    a, b = np.empty_like(g), np.empty_like(g)
    backward_plain(g, d, a)
    backward_blocks(g, d, b)
    assert np.array_equal(a, b)
    rows = [("read, ascending", lambda: read_ascending(g)),
            ("read, descending", lambda: read_descending(g)),
            ("backward, descending", lambda: backward_plain(g, d, a)),
            ("backward, blocks read ascending", lambda: backward_blocks(g, d, b))]
    print(f"(T, M) = ({T}, {M}) float32, one thread, median of {repeats}")
    for name, f in rows:
        print(f"  {name:<34} {median_ms(f, repeats, warmup=3):7.3f} ms")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:4]))
