"""What the finiteness check costs in the language model's training step: the check as
the library runs it (membrane and spike sequences left out of the fast path, covered by
the final state), the same check summing every tensor (as before the twenty-third
session), no check, and the same-size Transformer, interleaved in one process.

    python scripts/measure_finite_check.py [--d-model 64] [--seq-len 256] [--threads 1]
        [--repeats 15]

Prints the medians, each check's cost over the unchecked step, and AM/TF for each
(docs/benchmarks.md, "Ninth round"; docs/model.md, "Non-finite values").
"""

from __future__ import annotations

import argparse
import contextlib

import torch

import astro_neuron
import astro_neuron.functional.amsu as F_amsu
import astro_neuron.functional.finite as F_finite
import astro_neuron.functional.lif as F_lif
from astro_neuron.allocator import retain_freed_memory
from lm_timing import interleaved_medians_ms, lm_pair, train_step

LIBRARY = F_finite.check_finite


def every_tensor(named, hint="", covered=()):
    """The check with nothing left out of its fast path."""
    return LIBRARY(named, hint)


@contextlib.contextmanager
def variant(name: str):
    fn = every_tensor if name == "every tensor" else LIBRARY
    F_lif.check_finite = F_amsu.check_finite = fn
    try:
        if name == "off":
            with astro_neuron.validation(check_finite=False):
                yield
        else:
            yield
    finally:
        F_lif.check_finite = F_amsu.check_finite = LIBRARY


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=15)
    a = ap.parse_args()
    retain_freed_memory()
    torch.set_num_threads(a.threads)
    T, B = a.seq_len, max(1, 4096 // a.seq_len)
    am, tf, idx = lm_pair(a.d_model, T, B)
    models = {"library": am, "every tensor": am, "off": am, "transformer": tf}

    def run(name: str):
        def one() -> None:
            with variant(name):
                train_step(models[name], idx)
        return one

    med = interleaved_medians_ms({k: run(k) for k in models}, a.repeats)
    print(f"d_model {a.d_model}, T {T}, batch {B}, {a.threads} thread(s), medians of "
          f"{a.repeats}: " + ", ".join(f"{k} {v:.1f} ms" for k, v in med.items()))
    for k in ("every tensor", "library"):
        print(f"  check as {k}: costs {med[k] / med['off'] - 1:+.1%} of the step, "
              f"AM/TF {med['transformer'] / med[k]:.3f}")
    print(f"  no check: AM/TF {med['transformer'] / med['off']:.3f}")


if __name__ == "__main__":
    main()
