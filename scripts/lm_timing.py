"""Helpers shared by the measurement scripts (``measure_finite_check.py``,
``measure_fused_fire.py``, ``measure_step_overhead.py``, ``measure_row_order.py``): the
AM-SNet and its same-size Transformer built alike, one training step, a median in
milliseconds, and interleaved medians by the benchmarks' own loop. Not a script
itself."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch

from astro_neuron.apps.bench.lm import _interleaved
from astro_neuron.lm.config import AMSNetConfig, transformer_twin
from astro_neuron.lm.model import build_model


def lm_pair(d_model: int, seq_len: int, batch: int):
    """``(am_snet, transformer, idx)``: the two-layer models ``bench train`` times (same
    config, n_head = d_model / 64, seed 0) and a batch of random bytes ``(batch, T)``."""
    cfg = AMSNetConfig(n_layer=2, d_model=d_model, n_head=max(1, d_model // 64),
                       block_size=seq_len)
    torch.manual_seed(0)
    am = build_model(cfg)
    tf = build_model(transformer_twin(cfg))
    return am, tf, torch.randint(0, 256, (batch, seq_len))


def train_step(model, idx) -> None:
    """Forward and backward of one batch (next-byte loss on the batch itself)."""
    model.zero_grad(set_to_none=True)
    _, loss = model(idx, idx)
    loss.backward()


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in ms over ``repeats`` calls after ``warmup``."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def interleaved_medians_ms(runs: dict[str, Callable[[], object]],
                           repeats: int) -> dict[str, float]:
    """Median ms of each ``runs[name]()`` over ``repeats`` rounds, the names interleaved
    within each round (``bench``'s own loop); a first warm-up round is left out."""
    def timed(name: str) -> float:
        t0 = time.perf_counter()
        runs[name]()
        return time.perf_counter() - t0

    times = _interleaved(list(runs), repeats + 1, timed)
    return {k: statistics.median(v[1:]) * 1e3 for k, v in times.items()}
