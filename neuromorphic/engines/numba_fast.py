"""The numba engine: the fast form with compiled time loops, threaded.

Per layer: the Dense sums of all steps (one matrix product, in NumPy), then the
per-step recurrence compiled by numba (:mod:`neuromorphic.engines._numba_kernels`),
split over threads by sequence or by independent unit (an astrocyte and its neurons
depend on nothing else once the synaptic input is known). What the kernels derive
from a layer (transposed weights in the product's dtype, per-unit parameters) is
computed once per network and input range and kept in the network's ``derived``
cache (``net.derived["numba"]``): networks are immutable, so it never goes stale.
"""

from __future__ import annotations

import threading
from typing import Optional

import numpy as np

from astro_neuron import validate
from neuromorphic.engines import _numba_kernels as J
from neuromorphic.engines.common import (
    I64, RunOutput, available_cpus, check_input, elements_per_step, run_in_batches,
)
from neuromorphic.engines.step import bias_value
from neuromorphic.spec import ACT_SHIFT, DECAY_UNITY, STATE_MAX, VTH_SHIFT, QuantizedNetwork

__all__ = ["run", "default_threads", "prepared"]


def run(net: QuantizedNetwork, x: np.ndarray, record_states: bool = True,
        count_saturation: bool = False, threads: Optional[int] = None) -> RunOutput:
    """Same output as :func:`neuromorphic.engines.step.run`. The first call in a fresh
    install compiles the kernels (a few seconds), then they load from numba's on-disk
    cache. ``threads``: how many threads share each layer's recurrence (default: the
    CPUs available, fewer for small runs); the result does not depend on it."""
    if isinstance(threads, np.integer):
        threads = int(threads)
    threads = validate.optional(validate.positive_int, "threads", threads)
    x = check_input(net, x)
    return run_in_batches(net, x, lambda xb: _run_whole(net, xb, record_states,
                                                        count_saturation, threads))


_F32_EXACT = 1 << 24     # float32 holds every integer of magnitude up to 2**24


def _shift_pair(n: int) -> tuple[float, float]:
    """(half, scale) with ``shr(x, n) == floor((x + half) * scale)``."""
    return (float(1 << (n - 1)) if n > 0 else 0.0), 2.0 ** (-n)


def prepared(net: QuantizedNetwork, index: int, in_levels: int) -> dict:
    """What the compiled engine derives from layer ``index``'s fields, once per network
    and input range (kept in ``net.derived["numba"]``): the transposed effective weights
    in the product's dtype, and the kernel's parameters (per neuron / astrocyte, so that
    parts of the layer can be sliced out)."""
    layer = net.layers[index]
    syn = layer.synapse
    graded = syn.num_message_bits > 0
    key = (index, in_levels if graded else 1)
    cache = net.derived.setdefault("numba", {})
    if key in cache:
        return cache[key]
    w = syn.effective_weight()
    # (W @ s) in float32 when every partial sum is below 2**24 (exact), else float64
    # (exact below 2**52, which the network validation guarantees)
    worst = int(np.abs(w).sum(axis=1).max(initial=0)) * key[1]
    dtype = np.float32 if worst < _F32_EXACT else np.float64
    f64 = lambda v: np.ascontiguousarray(v, dtype=np.float64)   # noqa: E731
    N = layer.n_neurons
    prep = dict(dtype=dtype, wT=np.ascontiguousarray(w.T, dtype=dtype), graded=graded,
                exp=syn.weight_exp)
    if layer.kind == "amsu":
        A, dk, dv = layer.n_astrocytes, layer.d_key, layer.d_value
        npath, astro = layer.neuron_path, layer.astrocyte
        offs, start = {}, 0
        for name, n in layer.parts:
            offs[name] = start
            start += n
        zeros = np.zeros(N)
        prep.update(
            offs=offs,
            flags=(npath, astro, RESET_CODES[layer.reset], layer.spike_levels,
                   (1 if layer.relu_q else 2) if layer.relu else 0, layer.square),
            m_u=f64((DECAY_UNITY - layer.du) / DECAY_UNITY) if npath else zeros,
            bias=f64(bias_value(layer.bias_mant, layer.bias_exp)) if npath else zeros,
            theta=f64(layer.vth.astype(I64) << VTH_SHIFT),
            shifts=np.array([_shift_pair(getattr(layer, f"shift_{k}") if (
                npath if k == "i" else astro) else 0) for k in J.SHIFT_SLOTS]),
            opl=float((1 << (layer.operand_bits - 1)) - 1),
            m_H=f64((DECAY_UNITY - layer.dH) / DECAY_UNITY) if astro else np.zeros((1, 1)),
            gain=f64(layer.gain) if astro else zeros,
            # the delay line's taps split into key and value channels (one zero tap: none)
            taps_k=f64(layer.conv_taps[:, :A * dk]) if layer.delay_line else np.zeros((1, A * dk)),
            taps_v=f64(layer.conv_taps[:, A * dk:]) if layer.delay_line else np.zeros((1, N)),
            # independent units: an astrocyte with its dv neurons, or single neurons
            units=A if astro else N, unit_size=dv if astro else 1)
    else:
        prep.update(
            m_u=(DECAY_UNITY - (layer.du + 1)) / DECAY_UNITY,
            m_v=(DECAY_UNITY - layer.dv) / DECAY_UNITY,
            bias=f64(bias_value(layer.bias_mant, layer.bias_exp)),
            theta=float(int(layer.vth) << VTH_SHIFT), units=N, unit_size=1)
    cache[key] = prep
    return prep


class _JitLayer:
    """One layer on the compiled engine: its Dense buffers and outputs for a whole run
    (:meth:`advance`)."""

    def __init__(self, net: QuantizedNetwork, index: int, T: int, B: int, in_levels: int,
                 record: bool):
        layer = net.layers[index]
        self.layer, self.J, self.record = layer, J, record
        self.prep = prepared(net, index, in_levels)
        self.amsu = layer.kind == "amsu"
        N = layer.n_neurons
        self.buf = np.empty((T, B, self.prep["wT"].shape[1]), dtype=self.prep["dtype"])
        self.s_out = np.empty((T, B, N), dtype=I64)
        t_rec = T if record else 0
        if self.amsu:
            A, dk, dv = layer.n_astrocytes, layer.d_key, layer.d_value
            lags = max(layer.conv_size - 1, 1)
            t_line = t_rec if layer.delay_line else 0
            self.outs = {"u": np.empty((t_rec if layer.neuron_path else 0, B, N), dtype=I64),
                         "H": np.empty((t_rec if layer.astrocyte else 0, B, A, dk, dv),
                                       dtype=I64),
                         "conv_k": np.empty((t_line, B, A * dk, lags), dtype=I64),
                         "conv_v": np.empty((t_line, B, N, lags), dtype=I64)}
            self.counts = np.zeros(len(J.AMSU_COUNTS), dtype=I64)
        else:
            self.outs = {k: np.empty((t_rec, B, N), dtype=I64) for k in ("u", "v")}
            self.counts = np.zeros(len(J.LIF_COUNTS), dtype=I64)

    def advance(self, s_in: np.ndarray, threads: int) -> None:
        """Run every step: the Dense sums of all input spikes ``s_in`` ``[T, B, n_in]``
        (one matrix product; stateless), then the compiled per-step recurrence, split
        over up to ``threads`` threads by sequence or by independent unit."""
        prep = self.prep
        s = s_in if prep["graded"] else s_in != 0
        rows = self.buf.reshape(-1, prep["wT"].shape[1])
        np.matmul(s.reshape(rows.shape[0], -1).astype(prep["dtype"]), prep["wT"], out=rows)
        e = prep["exp"]
        if e > 0:                        # << exp; >> -exp is a floor
            rows *= prep["dtype"](1 << e)
        elif e < 0:
            rows *= prep["dtype"](1.0 / (1 << -e))
            np.floor(rows, out=rows)
        T, B = self.buf.shape[:2]
        if B >= threads:                 # whole layers, sequences split among threads
            calls = [self._call(b0, b1, 0, prep["units"]) for b0, b1 in _ranges(B, threads)]
        else:                            # every sequence, units split among threads
            calls = [self._call(0, B, u0, u1) for u0, u1 in _ranges(prep["units"], threads)]
        if len(calls) == 1:
            fn, args, _ = calls[0]
            fn(*args)
        else:
            _in_threads([(fn, args) for fn, args, _ in calls])
        for _, args, place in calls:
            self.counts += args[-1]
            for mine, dst, lo, hi in place:     # a part's outputs into the layer's
                dst[:, :, lo:hi] = mine

    def _call(self, b0: int, b1: int, u0: int, u1: int) -> tuple:
        """The kernel call for sequences ``b0 .. b1 - 1`` and units ``u0 .. u1 - 1``:
        ``(kernel, args, place)``; ``place`` lists the part's own output arrays (when it
        does not cover every unit) with where they go."""
        prep, layer, J = self.prep, self.layer, self.J
        us = prep["unit_size"]
        n0, n1 = u0 * us, u1 * us
        whole = (u0, u1) == (0, prep["units"])
        T, B = self.buf.shape[:2]
        outs = [self.s_out] + list(self.outs.values())
        # each output's part along its axis 2: neurons, astrocytes (H) or key channels
        dk = layer.d_key if self.amsu else 1
        ranges = {"H": (u0, u1), "conv_k": (u0 * dk, u1 * dk)}
        names = ["s"] + list(self.outs)
        place = []
        if not whole:                    # the part writes its own arrays, copied back after
            part = []
            for name, out in zip(names, outs):
                lo, hi = ranges.get(name, (n0, n1))
                mine = np.empty(out.shape[:2] + (hi - lo,) + out.shape[3:], I64) \
                    if out.shape[0] else out
                if out.shape[0]:
                    place.append((mine, out, lo, hi))
                part.append(mine)
            outs = part
        counts = np.zeros_like(self.counts)
        if self.amsu:
            o = prep["offs"]
            a0, a1 = (u0, u1) if layer.astrocyte else (0, 1)
            args = (self.buf, b0, b1, o.get("I", 0) + n0, o.get("K", 0) + a0 * dk,
                    o.get("V", 0) + n0, o.get("Q", 0) + a0 * dk, *prep["flags"],
                    prep["m_u"][n0:n1], prep["bias"][n0:n1], prep["theta"][n0:n1],
                    prep["shifts"], prep["opl"], prep["m_H"][a0:a1], prep["gain"][n0:n1],
                    float(STATE_MAX), np.ascontiguousarray(prep["taps_k"][:, a0 * dk:a1 * dk]),
                    np.ascontiguousarray(prep["taps_v"][:, n0:n1]), *outs, counts)
            return J.amsu_steps, args, place
        args = (self.buf, b0, b1, n0, float(1 << ACT_SHIFT), prep["m_u"], prep["m_v"],
                prep["bias"][n0:n1], prep["theta"], float(STATE_MAX), *outs, counts)
        return J.lif_steps, args, place

    def result(self, counts: Optional[dict]) -> tuple[np.ndarray, dict]:
        J, layer = self.J, self.layer
        st = {}
        if self.record:
            st = {"a": self.buf.astype(I64)}
            st.update({k: v for k, v in self.outs.items() if v.shape[0]
                       and k not in ("conv_k", "conv_v")})
            if self.amsu and layer.delay_line:    # channel-major K | V -> [T, B, K-1, C]
                line = np.concatenate([self.outs["conv_k"], self.outs["conv_v"]], axis=2)
                st["conv"] = np.ascontiguousarray(line.transpose(0, 1, 3, 2))
        if counts is not None:
            names = J.AMSU_COUNTS if self.amsu else J.LIF_COUNTS
            c = dict(zip(names, self.counts.tolist()))
            if self.amsu:                # the counters of the parts it has
                keep = (("u",) if layer.neuron_path else ()) + \
                    (("k", "v", "q", "H", "r", "o") if layer.astrocyte else ()) + \
                    (("xk", "xv") if layer.delay_line else ()) + \
                    (("k2", "q2") if layer.square else ())
                c = {k: c[k] for k in keep}
            counts.update(c)
        return self.s_out, st


RESET_CODES = {"none": 0, "subtract": 1, "zero": 2}
_MIN_WORK_PER_THREAD = 1 << 18     # state updates (steps x values) worth a thread


def _ranges(n: int, parts: int) -> list:
    """``n`` items in at most ``parts`` contiguous, nearly equal, non-empty ranges."""
    bounds = np.linspace(0, n, min(parts, n) + 1).round().astype(int)
    return list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))


def _in_threads(calls: list) -> None:
    """Run ``fn(*args)`` for each pair, the first in this thread and the others in
    threads of their own (the kernels release the GIL); re-raise the first error."""
    errors: list = []

    def call(fn, args):
        try:
            fn(*args)
        except BaseException as exc:   # pragma: no cover - re-raised below
            errors.append(exc)

    workers = [threading.Thread(target=call, args=c, daemon=True) for c in calls[1:]]
    for w in workers:
        w.start()
    call(*calls[0])
    for w in workers:
        w.join()
    if errors:
        raise errors[0]


def default_threads(layer, T: int, B: int) -> int:
    """As many threads as CPUs are available and the work is worth (at least
    :data:`_MIN_WORK_PER_THREAD` state updates each), at most one per unit or sequence."""
    worth = T * B * elements_per_step(layer) // _MIN_WORK_PER_THREAD
    return max(1, min(available_cpus(), worth, max(layer.units, B)))


def _run_whole(net: QuantizedNetwork, x: np.ndarray, record: bool, count: bool,
               threads: Optional[int]) -> RunOutput:
    """The compiled engine: layer by layer over the whole sequence."""
    T, B = x.shape[:2]
    levels = max(1, int(np.abs(x).max(initial=0)))        # the largest input value
    spikes, states, sats = [], [], []
    s_in = x
    for i, layer in enumerate(net.layers):
        jl = _JitLayer(net, i, T, B, levels, record)
        jl.advance(s_in, threads or default_threads(layer, T, B))
        counts = {} if count else None
        s, st = jl.result(counts)
        spikes.append(s)
        states.append(st)
        sats.append(counts or {})
        s_in, levels = s, layer.spike_levels
    return RunOutput(spikes, states, sats)
