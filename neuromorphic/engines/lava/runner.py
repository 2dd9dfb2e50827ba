"""Build a Lava process graph from a network and run it on the CPU simulator.

Graph (per layer ``l``)::

    RingBuffer source --> Dense_0 --> neurons_0 --> Dense_1 --> neurons_1 --> ...
                                         |                        |
                                     Extractor                Extractor
                                   (+ VarWire per state Var)

``neurons_l`` is this package's ``AMSUNeuron`` or Lava's stock ``LIF``; every
synapse is Lava's stock ``Dense``. A batch of ``B`` independent sequences runs as one
graph: the Dense weights are block-diagonal (``kron(I_B, W)``) and the neuron
populations hold ``B`` copies, so one compile serves the whole batch.

``fixed_pt`` runs the integer network (``Loihi2SimCfg(select_tag="fixed_pt")``, with
Dense's and LIF's bit-accurate models); ``floating_pt`` runs the float network of a
torch model (:class:`neuromorphic.convert.graph.FloatNetwork`).

Lava starts one OS process per Lava process with ``fork``; torch's worker threads in
the parent can deadlock a forked child, so every run holds torch at one thread
(:func:`single_torch_thread`).
"""

from __future__ import annotations

import multiprocessing as mp
import sys
import time
from typing import Optional

import numpy as np

from neuromorphic.engines.common import RunOutput, check_input, single_torch_thread
from neuromorphic.engines.lava._compat import install as install_lava_compat
from neuromorphic.spec import AMSU_FIELDS, QuantizedNetwork
from neuromorphic.spec.fields import shape_of

__all__ = ["run", "run_lava", "lava_available", "auto_batch"]


_LAVA_MP = "lava.magma.runtime.message_infrastructure.multiprocessing"


def _import_lava_runtime() -> None:
    """Import Lava's runtime even when the multiprocessing start method is already fixed.

    Lava calls ``multiprocessing.set_start_method('fork')`` when its runtime module is
    first imported, which raises "context has already been set" once anything (a tqdm
    progress bar's lock, a DataLoader, ...) has fixed the start method. During that one
    import we let an already-'fork' context pass and otherwise force 'fork', the only
    method Lava's runtime supports.
    """
    if _LAVA_MP in sys.modules:
        return
    original = mp.set_start_method

    def set_start_method(method, force=False):
        if mp.get_start_method(allow_none=True) in (None, method):
            if mp.get_start_method(allow_none=True) is None:
                original(method)
            return
        original(method, force=True)

    mp.set_start_method = set_start_method
    try:   # deferred: this function's purpose is the first import of Lava's runtime
        import lava.magma.runtime.runtime  # noqa: F401
    finally:
        mp.set_start_method = original


def lava_available() -> tuple[bool, str]:
    """(True, "") when Lava imports (through the project's Python 3.11 hook)."""
    install_lava_compat()
    try:   # deferred: this function probes whether Lava (heavy, optional) imports
        _import_lava_runtime()
        import lava.magma.core.run_configs  # noqa: F401
    except Exception as exc:  # ImportError, or the 3.11 dataclass error without the hook
        return False, f"{type(exc).__name__}: {exc}"
    return True, ""


def _import_lava():
    ok, why = lava_available()
    if not ok:
        raise ImportError(
            f"the Lava backend needs lava-nc 0.10.0 (install it with scripts/install.sh): {why}")


def _blockdiag(w: np.ndarray, batch: int) -> np.ndarray:
    return np.kron(np.eye(batch, dtype=w.dtype), w) if batch > 1 else w


def _sign_mode(name: str):
    # deferred: Lava (lava-nc) is imported only when a Lava run starts: it is heavy
    # (seconds) and optional, and its runtime fixes the multiprocessing start method
    from lava.utils.weightutils import SignMode

    return {"mixed": SignMode.MIXED, "excitatory": SignMode.EXCITATORY,
            "inhibitory": SignMode.INHIBITORY}[name]


def _build_fixed(net: QuantizedNetwork, batch: int):
    # deferred: Lava is heavy and optional (see _sign_mode)
    from lava.proc.dense.process import Dense
    from lava.proc.lif.process import LIF

    from neuromorphic.engines.lava.procs.amsu.process import AMSUNeuron

    pairs = []
    for i, layer in enumerate(net.layers):
        syn = layer.synapse
        dense = Dense(weights=_blockdiag(syn.weight.astype(np.int32), batch),
                      weight_exp=int(syn.weight_exp), num_weight_bits=int(syn.num_weight_bits),
                      sign_mode=_sign_mode(syn.sign_mode),
                      num_message_bits=int(syn.num_message_bits), name=f"dense{i}")
        N = layer.n_neurons
        if layer.kind == "lif":
            neu = LIF(shape=(batch * N,), du=int(layer.du), dv=int(layer.dv), vth=int(layer.vth),
                      bias_mant=np.tile(layer.bias_mant, batch).astype(np.int32),
                      bias_exp=np.tile(layer.bias_exp, batch).astype(np.int32),
                      name=f"lif{i}")
        else:
            kw = {f.name: getattr(layer, f.name) for f in AMSU_FIELDS if f.kind != "array"}
            for f in AMSU_FIELDS:
                if f.kind == "array":
                    v = getattr(layer, f.name)
                    kw[f.name] = np.zeros(shape_of(f.shape, layer.sizes()), np.int32) \
                        if v is None else v.astype(np.int32)
            neu = AMSUNeuron(batch=batch, name=f"amsu{i}", **kw)
        pairs.append((dense, neu, layer))
    return pairs


def _build_float(fnet, batch: int):
    # deferred: Lava is heavy and optional (see _sign_mode)
    from lava.proc.dense.process import Dense
    from lava.proc.lif.process import LIF

    from neuromorphic.engines.lava.procs.amsu.process import AMSUNeuron

    pairs = []
    for i, layer in enumerate(fnet.layers):
        dense = Dense(weights=_blockdiag(layer.weight, batch),
                      num_message_bits=0 if layer.in_levels <= 1 else 8, name=f"dense{i}")
        N = layer.n_neurons
        if layer.kind == "lif":
            neu = LIF(shape=(batch * N,), du=1.0, dv=float(1 - layer.beta[0]),
                      vth=float(layer.threshold[0]), bias_mant=np.tile(layer.bias, batch),
                      name=f"lif{i}")
        else:
            neu = AMSUNeuron(
                batch=batch, n_neurons=N, n_astrocytes=layer.n_astrocytes, d_key=layer.d_key,
                neuron_path=layer.neuron_path, astrocyte=layer.astrocyte, reset=layer.reset,
                spike_levels=layer.spike_levels, du=1 - layer.beta, bias_mant=layer.bias,
                bias_exp=np.zeros(N), vth=layer.threshold, dH=1 - layer.gamma,
                gain=layer.gain, conv_size=layer.conv_size, sensing=layer.sensing,
                conv_taps=np.zeros((1, layer.n_astrocytes * layer.d_key + N))
                if layer.conv is None else layer.conv,
                name=f"amsu{i}")
        pairs.append((dense, neu, layer))
    return pairs


_BLOCKDIAG_ELEMENTS = 1 << 22   # largest block-diagonal Dense weight matrix we build


def auto_batch(net, cap: int = 16) -> int:
    """Sequences per Lava graph: the block-diagonal weights ``kron(I_B, W)`` grow as
    ``B**2``, and Dense gathers a column per active input every step, so ``B`` is kept
    such that the largest one holds at most 2**22 elements (and ``B <= cap``)."""
    size = max(l.weight.size if hasattr(l, "weight") else l.synapse.weight.size
               for l in net.layers)
    return int(max(1, min(cap, np.sqrt(_BLOCKDIAG_ELEMENTS / max(1, size)))))


def run_lava(net, x: np.ndarray, record_states: bool = True, tag: str = "fixed_pt",
             max_batch: Optional[int] = None, timings: Optional[dict] = None):
    """Run ``net`` on Lava's CPU simulator; returns a :class:`~neuromorphic.engines.RunOutput`.

    ``net``: a :class:`QuantizedNetwork` (``tag="fixed_pt"``) or a
    :class:`~neuromorphic.convert.graph.FloatNetwork` (``tag="floating_pt"``). ``x``
    ``[T, B, n_in]`` input spikes. Batches larger than ``max_batch`` (default
    :func:`auto_batch`) run as several graphs, one after the other. ``record_states`` adds a ``VarWire`` on every state Var.
    ``timings`` (a dict) receives ``build_s``, ``run_s`` and ``steps``.
    """
    _import_lava()
    if tag not in ("fixed_pt", "floating_pt"):
        raise ValueError(f"tag must be 'fixed_pt' or 'floating_pt', got {tag!r}")
    if tag == "fixed_pt" and not isinstance(net, QuantizedNetwork):
        raise TypeError(f"fixed_pt runs a QuantizedNetwork, got {type(net).__name__}")
    x = np.asarray(x)
    if x.ndim != 3 or x.shape[2] != net.input_size:
        raise ValueError(f"input spikes must have shape [T, B, {net.input_size}], got "
                         f"{list(x.shape)}")
    T, B = x.shape[:2]
    if T < 1 or B < 1:
        raise ValueError(f"need at least one step and one sequence, got shape {list(x.shape)}")
    step = auto_batch(net) if max_batch is None else max(1, int(max_batch))
    outs = []
    for b0 in range(0, B, step):
        outs.append(_run_one(net, x[:, b0:b0 + step], record_states, tag, timings))
    if len(outs) == 1:
        return outs[0]
    spikes = [np.concatenate([o.spikes[i] for o in outs], axis=1) for i in range(len(net.layers))]
    states = [{k: np.concatenate([o.states[i][k] for o in outs], axis=1)
               for k in outs[0].states[i]} for i in range(len(net.layers))]
    return RunOutput(spikes, states)


def _run_one(net, x: np.ndarray, record_states: bool, tag: str, timings):
    """One graph for the whole (sub-)batch. Spikes leave through ``io.extractor.Extractor``
    and states through ``io.extractor.VarWire`` processes: both stream one array per step
    over a channel sized for the whole run. (``Var.get()``, which ``io.sink.RingBuffer``
    and ``Monitor`` need, transfers one element per message: seconds per thousand steps.)
    """
    # deferred: Lava is heavy and optional (see _sign_mode)
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.extractor import (
        Extractor, PyLoihiExtractorModel, PyLoihiVarWireModel, VarWire,
    )
    from lava.proc.io.source import RingBuffer as Source

    T, B = x.shape[:2]
    t0 = time.perf_counter()
    fixed = tag == "fixed_pt"
    data = x.transpose(1, 2, 0).reshape(B * x.shape[2], T)     # [B * n_in, T], batch-major
    source = Source(data=data.astype(np.int32) if fixed else data.astype(np.float64))
    pairs = _build_fixed(net, B) if fixed else _build_float(net, B)
    prev = source.s_out
    taps = []
    for dense, neu, layer in pairs:
        prev.connect(dense.s_in)
        dense.a_out.connect(neu.a_in)
        spikes_out = Extractor(shape=(B * layer.n_neurons,), buffer_size=T)
        neu.s_out.connect(spikes_out.in_port)
        wires = {}
        if record_states:
            for name in layer.state_names:
                var = dense.a_buff if name == "a" else getattr(neu, name)
                wire = VarWire(buffer_size=T)
                wire.connect_var(var)
                wires[name] = wire
        taps.append((spikes_out, wires))
        prev = neu.s_out
    cfg = Loihi2SimCfg(select_tag=tag, exception_proc_model_map={
        Extractor: PyLoihiExtractorModel, VarWire: PyLoihiVarWireModel})
    t1 = time.perf_counter()
    with single_torch_thread():
        try:
            # the first step compiles the graph and starts the workers; the rest is stepping
            source.run(condition=RunSteps(num_steps=1, blocking=True), run_cfg=cfg)
            t_first = time.perf_counter()
            if T > 1:
                source.run(condition=RunSteps(num_steps=T - 1, blocking=True), run_cfg=cfg)
            t2 = time.perf_counter()
            spikes, states = [], []
            for (dense, neu, layer), (spikes_out, wires) in zip(pairs, taps):
                s = np.stack([spikes_out.receive() for _ in range(T)])   # [T, B * N]
                spikes.append(_cast(s.reshape(T, B, layer.n_neurons), fixed))
                st = {}
                for name, wire in wires.items():
                    rec = np.stack([wire.receive() for _ in range(T)])
                    st[name] = _cast(rec.reshape((T,) + layer.state_shapes(B)[name]), fixed)
                states.append(st)
            t3 = time.perf_counter()
        finally:
            source.stop()
    if timings is not None:
        timings["build_s"] = timings.get("build_s", 0.0) + (t1 - t0)
        timings["run_s"] = timings.get("run_s", 0.0) + (t2 - t1)
        timings["start_s"] = timings.get("start_s", 0.0) + (t_first - t1)
        timings["step_s"] = timings.get("step_s", 0.0) + (t2 - t_first)
        timings["read_s"] = timings.get("read_s", 0.0) + (t3 - t2)
        timings["steps"] = T
    return RunOutput(spikes, states)


def _cast(a: np.ndarray, fixed: bool) -> np.ndarray:
    if not fixed:
        return np.asarray(a, dtype=np.float64)
    r = np.rint(a)
    if not np.array_equal(r, a):
        raise RuntimeError("Lava returned non-integer values from a fixed_pt run")
    return r.astype(np.int64)


def run(net, x: np.ndarray, record_states: bool = True, max_batch: Optional[int] = None,
        timings: Optional[dict] = None) -> RunOutput:
    """The engine entry point: ``net`` on Lava's ``fixed_pt`` models (bit-accurate)."""
    if not isinstance(net, QuantizedNetwork):
        raise TypeError(f"fixed_pt runs a QuantizedNetwork, got {type(net).__name__}")
    return run_lava(net, check_input(net, x), record_states, "fixed_pt", max_batch, timings)
