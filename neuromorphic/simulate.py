"""``nm.simulate``: run an integer network on one of the engines, and compare runs.

* ``"reference"``: the fast form of the specification (numba, else NumPy);
* ``"torch"``: the quantization-aware torch view;
* ``"lava"``: Lava processes with ``Loihi2SimCfg(select_tag="fixed_pt")``;
* ``"step"``, ``"numpy"``, ``"numba"``: one engine by name (:mod:`neuromorphic.engines`).

All return the same integers: :func:`compare` says whether two runs agree bit for bit
and where they first differ.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from astro_neuron import validate
from neuromorphic.engines import ENGINES, engine
from neuromorphic.spec import QuantizedNetwork, check_spikes

__all__ = ["BACKENDS", "ENGINES", "SimResult", "simulate", "compare", "Difference", "pad_latency"]

BACKENDS = ("reference", "torch", "lava")   # the three a comparison runs; any of ENGINES works


@dataclass
class SimResult:
    """Output of :func:`simulate`; everything time-major.

    ``spikes[l]``: ``[T, B, N_l]`` int64 (``[T, N_l]`` if the input was ``[T, n_in]``);
    ``states[l]``: dict of ``[T, B, ...]`` int64, the value after each step (``a``:
    the synapse's buffer; ``u``, ``H`` for AM-SU layers; ``u`` current and ``v``
    voltage for stock-LIF layers). ``latency``: steps from input to the last layer.
    """

    spikes: list
    states: list
    backend: str
    latency: int
    seconds: float = 0.0
    info: dict = field(default_factory=dict)

    @property
    def output(self) -> np.ndarray:
        """Spikes of the last layer."""
        return self.spikes[-1]

    def aligned_output(self) -> np.ndarray:
        """Last layer's spikes with the latency removed: step ``t`` answers input step ``t``
        (meaningful when the input was padded with :func:`pad_latency`)."""
        return self.spikes[-1][self.latency:]


def pad_latency(x: np.ndarray, latency: int) -> np.ndarray:
    """Append ``latency`` silent steps to ``x`` ``[T, ...]``, so the last input step's
    response is still inside the run."""
    x = np.asarray(x)
    return np.concatenate([x, np.zeros((latency,) + x.shape[1:], dtype=x.dtype)], axis=0)


def _prepare(net: QuantizedNetwork, x_seq) -> tuple[np.ndarray, bool]:
    if not isinstance(net, QuantizedNetwork):
        raise TypeError(f"simulate() runs a QuantizedNetwork (from nm.quantize or nm.load), "
                        f"got {type(net).__name__}")
    squeeze = np.ndim(x_seq) == 2
    x = check_spikes(x_seq, net.input_size, "input spikes")
    if x.max(initial=0) > net.input_levels:
        raise ValueError(f"input spikes reach {x.max()} but the network takes values "
                         f"0..{net.input_levels} (its input_levels)")
    return x, squeeze


def simulate(net: QuantizedNetwork, x_seq, backend: str = "reference",
             record_states: bool = True, lava_batch: Optional[int] = None) -> SimResult:
    """Run ``net`` on input spikes ``x_seq`` (``[T, B, n_in]`` or ``[T, n_in]``).

    ``backend``: ``"reference"`` | ``"torch"`` | ``"lava"`` (or an engine of
    :data:`ENGINES`). ``record_states=False``
    returns spikes only. ``lava_batch``: how many sequences one Lava graph simulates
    at once (block-diagonal synapses; default: as many as keep the synapse matrix at
    most 2**22 elements, up to 16).
    """
    run = engine(validate.choice("backend", backend, ENGINES))
    x, squeeze = _prepare(net, x_seq)
    t0 = time.perf_counter()
    info: dict = {}
    if backend == "lava":
        out = run(net, x, record_states, max_batch=lava_batch, timings=info)
    else:
        out = run(net, x, record_states)
    seconds = time.perf_counter() - t0
    spikes, states = out.spikes, out.states
    if squeeze:
        spikes = [s[:, 0] for s in spikes]
        states = [{k: v[:, 0] for k, v in st.items()} for st in states]
    return SimResult(spikes, states, backend, net.latency, seconds, info)


@dataclass
class Difference:
    """Where two runs first differ (``None`` fields when they agree)."""

    equal: bool
    compared: int = 0                 # number of arrays compared
    layer: Optional[int] = None
    name: Optional[str] = None        # "spikes" or a state name
    step: Optional[int] = None
    index: Optional[tuple] = None     # index within the step (batch, ...)
    values: Optional[tuple] = None    # (a, b) there

    def __str__(self) -> str:
        if self.equal:
            return f"identical ({self.compared} arrays, every step)"
        return (f"first difference: layer {self.layer}, {self.name}, step {self.step}, index "
                f"{self.index}: {self.values[0]} vs {self.values[1]}")


def compare(a: SimResult, b: SimResult, states: bool = True) -> Difference:
    """Bit-for-bit comparison of two runs: spikes of every layer and (optionally) every
    state recorded by both. Returns the earliest difference in time."""
    first: Optional[Difference] = None
    n = 0
    if len(a.spikes) != len(b.spikes):
        return Difference(False, 0, name=f"layer count {len(a.spikes)} vs {len(b.spikes)}")
    for li in range(len(a.spikes)):
        pairs = [("spikes", a.spikes[li], b.spikes[li])]
        if states:
            for k in a.states[li]:
                if k in b.states[li]:
                    pairs.append((k, a.states[li][k], b.states[li][k]))
        for name, x, y in pairs:
            n += 1
            if x.shape != y.shape:
                d = Difference(False, n, li, f"{name} shape", 0, (), (x.shape, y.shape))
            else:
                diff = np.argwhere(x != y)
                if not len(diff):
                    continue
                idx = tuple(int(i) for i in diff[np.argmin(diff[:, 0])])
                d = Difference(False, n, li, name, idx[0], idx[1:], (x[idx].item(), y[idx].item()))
            if first is None or (d.step or 0) < (first.step or 0):
                first = d
    if first is None:
        return Difference(True, n)
    first.compared = n
    return first
