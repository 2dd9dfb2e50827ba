"""What every engine shares: the result type, the input check, batching, threads.

Every engine module has one entry point with the same signature and result::

    run(net: QuantizedNetwork, x: np.ndarray [T, B, n_in] int, record_states=True,
        **options) -> RunOutput
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass, field

import numpy as np

from neuromorphic.spec import QuantizedNetwork

__all__ = ["RunOutput", "check_input", "run_in_batches", "elements_per_step",
           "available_cpus", "single_torch_thread", "I64"]

I64 = np.int64
CHUNK_ELEMENTS = 1 << 22     # about 32 MB per all-steps int64 array


@dataclass
class RunOutput:
    """Per layer: ``spikes[l]`` ``[T, B, N_l]`` and ``states[l][name]`` ``[T, B, ...]``
    (the value after step t); ``saturation[l][name]``: how many values were clipped."""

    spikes: list
    states: list
    saturation: list = field(default_factory=list)


def check_input(net: QuantizedNetwork, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 3 or x.shape[2] != net.input_size:
        raise ValueError(f"input spikes must have shape [T, B, {net.input_size}], got "
                         f"{list(x.shape)}")
    if x.dtype.kind not in "iub":
        raise ValueError(f"input spikes must be integers, got dtype {x.dtype}")
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"need at least one step and one sequence, got shape {list(x.shape)}")
    return x.astype(I64)


def elements_per_step(layer) -> int:
    """Values one sequence keeps per step in a fast form (the largest array)."""
    n = layer.synapse.weight.shape[0] + layer.n_neurons
    if layer.kind == "amsu" and layer.astrocyte:
        n = max(n, layer.n_astrocytes * layer.d_key * layer.d_value)
    return n


def run_in_batches(net: QuantizedNetwork, x: np.ndarray, run_whole) -> RunOutput:
    """``run_whole(x_part)`` on pieces of the batch small enough that the all-steps
    arrays of a fast form stay near :data:`CHUNK_ELEMENTS` values; results joined."""
    T, B = x.shape[:2]
    per_seq = max(elements_per_step(l) for l in net.layers)
    chunk = max(1, CHUNK_ELEMENTS // max(1, T * per_seq))
    if B <= chunk:
        return run_whole(x)
    outs = [run_whole(x[:, b:b + chunk]) for b in range(0, B, chunk)]
    n = len(net.layers)
    sats = [{k: sum(o.saturation[i].get(k, 0) for o in outs)
             for k in set().union(*(o.saturation[i] for o in outs))} for i in range(n)]
    return RunOutput(
        [np.concatenate([o.spikes[i] for o in outs], 1) for i in range(n)],
        [{k: np.concatenate([o.states[i][k] for o in outs], 1) for k in outs[0].states[i]}
         for i in range(n)], sats)


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:             # pragma: no cover - not Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def single_torch_thread():
    """Hold torch at one intra-op thread (if torch is loaded): while Lava forks its workers
    (torch's pool threads can deadlock a forked child), and for many small per-step ops."""
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)
