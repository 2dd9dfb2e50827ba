"""The fixed cost of a training step: the AM-SNet and the same-size Transformer on a
batch too small to cost anything but the Python and dispatch work of the step.

    python scripts/measure_step_overhead.py [--d-model 64] [--seq-len 8] [--repeats 60]

One thread, batch 1: medians of the forward and of forward + backward, with the
finiteness check on and off, and how many torch functions the AM-SNet's step calls
from Python (docs/benchmarks.md, "Ninth round").
"""

from __future__ import annotations

import argparse

import torch
from torch.overrides import TorchFunctionMode

import astro_neuron
from astro_neuron.allocator import retain_freed_memory
from lm_timing import lm_pair, median_ms, train_step


class _Count(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        return func(*args, **(kwargs or {}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--seq-len", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=60)
    a = ap.parse_args()
    retain_freed_memory()
    torch.set_num_threads(1)
    am, tf, idx = lm_pair(a.d_model, a.seq_len, 1)
    for name, m in (("AM-SNet", am), ("Transformer", tf)):
        def fwd():
            m(idx, idx)

        def both():
            train_step(m, idx)

        f, b = median_ms(fwd, a.repeats, 5), median_ms(both, a.repeats, 5)
        with astro_neuron.validation(check_finite=False):
            f0, b0 = median_ms(fwd, a.repeats, 5), median_ms(both, a.repeats, 5)
        with _Count() as count:
            both()
        print(f"{name}: forward {f:.2f} ms, backward {b - f:.2f} ms, step {b:.2f} ms "
              f"(no check: {f0:.2f} + {b0 - f0:.2f} = {b0:.2f} ms); "
              f"{count.calls} torch calls from Python a step")


if __name__ == "__main__":
    main()
