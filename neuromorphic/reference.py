"""The integer reference: NumPy, int64, every width explicit. This is the specification.

Read it beside docs/neuromorphic.md. Two forms of one semantics:

* the **step form** (:func:`dense_step`, :func:`amsu_step`, :func:`lif_step`,
  :func:`run_steps`): one time step of every process, written out as the hardware
  does it. This is the definition.
* the **fast form** (:func:`run`): the same numbers, layer by layer. What does not
  depend on a layer's own state (the synaptic sums of all its steps, once the layer
  before has run) is one matrix product; the per-step recurrence (rounding,
  saturation, the astrocyte, spikes, resets) runs as compiled loops
  (:mod:`neuromorphic.reference_jit`, numba), or, with ``engine="numpy"`` or without
  numba, as NumPy with only the recurrences in a Python time loop. It is what
  ``nm.simulate(backend="reference")`` and the benchmark use; tests check both
  engines against the step form bit for bit.

Arrays are batch-first inside a step (``[B, ...]``) and time-major across steps
(``[T, B, ...]``). Nothing here imports torch or Lava.
"""

from __future__ import annotations

import os
import threading
import weakref
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from neuromorphic.spec import (
    ACT_SHIFT, DECAY_SHIFT, DECAY_UNITY, STATE_MAX, VTH_SHIFT, AMSULayer, LIFLayer,
    QuantizedNetwork,
)

__all__ = [
    "shr", "rtz_decay", "sat", "wrap24", "bias_value", "dense_step", "amsu_step",
    "lif_step", "init_states", "run_steps", "run", "RunOutput", "ENGINES", "jit_available",
]

I64 = np.int64


# ----------------------------------------------------------------- integer primitives

def shr(x: np.ndarray, n: int) -> np.ndarray:
    """Requantizing shift: right by ``n`` rounding half up (``(x + 2**(n-1)) >> n``);
    ``n < 0`` shifts left by ``-n`` (exact); ``n == 0`` is the identity."""
    x = np.asarray(x, dtype=I64)
    if n > 0:
        return (x + (1 << (n - 1))) >> n
    if n < 0:
        return x << (-n)
    return x


def rtz_decay(x: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Lava's decay: ``x * (4096 - d) / 4096`` rounded toward zero (``sign * (|p| >> 12)``)."""
    p = np.asarray(x, dtype=I64) * (DECAY_UNITY - np.asarray(d, dtype=I64))
    return np.sign(p) * (np.abs(p) >> DECAY_SHIFT)


def sat(x: np.ndarray, bits: int) -> np.ndarray:
    """Saturate to the symmetric signed range ``[-(2**(bits-1) - 1), 2**(bits-1) - 1]``."""
    m = (1 << (bits - 1)) - 1
    return np.clip(x, -m, m)


def sat24(x: np.ndarray) -> np.ndarray:
    return np.clip(x, -STATE_MAX, STATE_MAX)


def wrap24(x: np.ndarray) -> np.ndarray:
    """Lava LIF's current wrap: above ``2**23`` subtract ``2**24``; at or below
    ``-2**23`` add ``2**24`` (once, as ``PyLifModelBitAcc`` does)."""
    top = 1 << 23
    return np.where(x > top, x - 2 * top, np.where(x <= -top, x + 2 * top, x))


def bias_value(mant: np.ndarray, exp: np.ndarray) -> np.ndarray:
    """Effective bias ``mant << exp`` (exp in 0..7)."""
    return np.asarray(mant, dtype=I64) << np.asarray(exp, dtype=I64)


# ----------------------------------------------------------------- the step form

def dense_step(weight: np.ndarray, weight_exp: int, graded: bool, buf: np.ndarray,
               s_in: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One step of Lava's ``Dense`` (bit-accurate model).

    ``weight``: the *effective* weights ``[P, n_in]`` (:meth:`Synapse.effective_weight`);
    ``buf`` ``[B, P]``: the accumulation of the previous step; ``s_in`` ``[B, n_in]``.
    Returns ``(a_out, new_buf)``: ``a_out = buf`` (the one-step delay), ``new_buf =
    (W @ s) << weight_exp`` (arithmetic shift, floor for a negative exponent);
    binary mode counts any non-zero input as 1.
    """
    s = np.asarray(s_in, dtype=I64)
    if not graded:
        s = (s != 0).astype(I64)
    acc = s @ weight.T
    new = acc << weight_exp if weight_exp > 0 else acc >> (-weight_exp)
    return buf, new


def _split(layer: AMSULayer, a: np.ndarray) -> dict[str, np.ndarray]:
    out, start = {}, 0
    for name, n in layer.parts:
        out[name] = a[..., start:start + n]
        start += n
    return out


def amsu_step(layer: AMSULayer, u: Optional[np.ndarray], H: Optional[np.ndarray],
              a: np.ndarray):
    """One step of the integer AM-SU neurons (docs/neuromorphic.md, "AM-SU step").

    ``a`` ``[B, P]``: the synaptic input (the Dense's output this step);
    ``u`` ``[B, N]``; ``H`` ``[B, A, dk, dv]``. Returns ``(s, u, H)``: spikes
    ``[B, N]`` in ``{0..L}`` and the new states (``u`` after the reset).
    """
    part = _split(layer, np.asarray(a, dtype=I64))
    B = a.shape[0]
    N, A, dk, dv = layer.n_neurons, layer.n_astrocytes, layer.d_key, layer.d_value
    theta = layer.vth.astype(I64) << VTH_SHIFT                       # [N]
    y = np.zeros((B, N), dtype=I64)
    if layer.neuron_path:
        I = shr(part["I"], layer.shift_i) + bias_value(layer.bias_mant, layer.bias_exp)
        u = sat24(rtz_decay(u, layer.du) + I)                         # membrane: saturates
        y = y + u
    if layer.astrocyte:
        b = layer.operand_bits
        k = sat(shr(part["K"], layer.shift_k), b).reshape(B, A, dk)   # operands: b-bit
        v = sat(shr(part["V"], layer.shift_v), b).reshape(B, A, dv)
        q = sat(shr(part["Q"], layer.shift_q), b).reshape(B, A, dk)
        kv = shr(k[:, :, :, None] * v[:, :, None, :], layer.shift_kv)  # k v^T, requantized
        H = sat24(rtz_decay(H, layer.dH[:, :, None]) + kv)            # astrocyte: saturates
        r = sat24(shr(np.einsum("bakv,bak->bav", H, q), layer.shift_r))  # H^T q
        o = sat24(shr(r.reshape(B, N) * layer.gain.astype(I64), layer.shift_o))
        y = y + o                                                     # 25-bit transient
    s = np.zeros((B, N), dtype=I64)
    for level in range(1, layer.spike_levels + 1):                    # strict >, per level
        s += (y > level * theta).astype(I64)
    if layer.neuron_path:
        if layer.reset == "subtract":
            u = sat24(u - s * theta)
        elif layer.reset == "zero":
            u = np.where(s > 0, 0, u)
    return s, u, H


def lif_step(layer: LIFLayer, u: np.ndarray, v: np.ndarray, a: np.ndarray):
    """One step of Lava's stock LIF, bit-accurate model (``PyLifModelBitAcc``).

    Returns ``(s, u, v)`` with ``v`` after the reset to 0 of spiking neurons.
    """
    u = wrap24(rtz_decay(u, layer.du + 1) + (np.asarray(a, dtype=I64) << ACT_SHIFT))
    bias = bias_value(layer.bias_mant, layer.bias_exp)
    v = sat24(rtz_decay(v, layer.dv) + u + bias)
    s = (v > (int(layer.vth) << VTH_SHIFT)).astype(I64)
    v = np.where(s > 0, 0, v)
    return s, u, v


def init_states(net: QuantizedNetwork, batch: int) -> list[dict[str, np.ndarray]]:
    """All-zero states of every layer (``a`` is the Dense buffer)."""
    return [{k: np.zeros(shape, dtype=I64) for k, shape in layer.state_shapes(batch).items()}
            for layer in net.layers]


@dataclass
class RunOutput:
    """Per layer: ``spikes[l]`` ``[T, B, N_l]`` and ``states[l][name]`` ``[T, B, ...]``
    (the value after step t); ``saturation[l][name]``: how many values were clipped."""

    spikes: list
    states: list
    saturation: list = field(default_factory=list)


def _check_input(net: QuantizedNetwork, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 3 or x.shape[2] != net.input_size:
        raise ValueError(f"input spikes must have shape [T, B, {net.input_size}], got "
                         f"{list(x.shape)}")
    if x.dtype.kind not in "iub":
        raise ValueError(f"input spikes must be integers, got dtype {x.dtype}")
    return x.astype(I64)


def run_steps(net: QuantizedNetwork, x: np.ndarray, record_states: bool = True) -> RunOutput:
    """The step form over a sequence: ``x`` ``[T, B, n_in]`` integer spikes.

    Every step runs every layer's Dense, then its neurons, in order, as Lava does.
    """
    x = _check_input(net, x)
    T, B = x.shape[:2]
    st = init_states(net, B)
    weights = [layer.synapse.effective_weight() for layer in net.layers]
    spikes = [np.zeros((T, B, l.n_out), dtype=I64) for l in net.layers]
    states = [{k: np.zeros((T,) + v.shape, dtype=I64) for k, v in s.items()} if record_states
              else {} for s in st]
    for t in range(T):
        s_in = x[t]
        for i, layer in enumerate(net.layers):
            syn = layer.synapse
            a, st[i]["a"] = dense_step(weights[i], syn.weight_exp, syn.num_message_bits > 0,
                                       st[i]["a"], s_in)
            if isinstance(layer, AMSULayer):
                s, u, H = amsu_step(layer, st[i].get("u"), st[i].get("H"), a)
                if layer.neuron_path:
                    st[i]["u"] = u
                if layer.astrocyte:
                    st[i]["H"] = H
            else:
                s, st[i]["u"], st[i]["v"] = lif_step(layer, st[i]["u"], st[i]["v"], a)
            spikes[i][t] = s
            if record_states:
                for k, val in st[i].items():
                    states[i][k][t] = val
            s_in = s
    return RunOutput(spikes, states)


# ----------------------------------------------------------------- the fast form

def _dense_all(layer, x: np.ndarray) -> np.ndarray:
    """Dense buffers after every step, ``[T, B, P]`` (float64 holding integers):
    ``(W @ s_t) << exp`` (floor for a negative exponent).

    float64 is exact here because the network validation bounds every value of the
    fast form below 2**52; the sums use BLAS."""
    syn = layer.synapse
    w = syn.effective_weight().astype(np.float64)
    s = (x if syn.num_message_bits > 0 else (x != 0)).astype(np.float64)
    acc = s @ w.T
    e = syn.weight_exp
    return acc * float(1 << e) if e > 0 else (np.floor(acc / float(1 << -e)) if e < 0 else acc)


def _delayed(buf: np.ndarray) -> np.ndarray:
    """What the neurons receive at each step: the previous step's buffer (0 first)."""
    out = np.zeros_like(buf)
    out[1:] = buf[:-1]
    return out


def _shr_f(x: np.ndarray, n: int) -> np.ndarray:
    """:func:`shr` on float64 integers (exact below 2**52)."""
    if n > 0:
        return np.floor((x + float(1 << (n - 1))) / float(1 << n))
    if n < 0:
        return x * float(1 << (-n))
    return x


def _sat_f(x: np.ndarray, limit: int, counts: Optional[dict], name: str) -> np.ndarray:
    if counts is not None:
        counts[name] = counts.get(name, 0) + int(np.count_nonzero(np.abs(x) > limit))
    return np.clip(x, -float(limit), float(limit))


def _amsu_fast(layer: AMSULayer, a: np.ndarray, record: bool, counts: Optional[dict]):
    T, B = a.shape[:2]
    N, A, dk, dv = layer.n_neurons, layer.n_astrocytes, layer.d_key, layer.d_value
    part = _split(layer, a)
    theta = (layer.vth.astype(I64) << VTH_SHIFT).astype(np.float64)
    lim = STATE_MAX
    states = {}
    o = None
    if layer.astrocyte:
        opl = (1 << (layer.operand_bits - 1)) - 1
        ops = {}
        for name, sh, width in (("K", layer.shift_k, dk), ("V", layer.shift_v, dv),
                                ("Q", layer.shift_q, dk)):
            ops[name] = _sat_f(_shr_f(part[name], sh), opl, counts, name.lower()
                               ).reshape(T, B, A, width)
        kv = _shr_f(ops["K"][..., :, None] * ops["V"][..., None, :], layer.shift_kv)
        m_H = (DECAY_UNITY - layer.dH.astype(np.float64))[:, :, None] / DECAY_UNITY
        H_seq = np.empty((T, B, A, dk, dv))
        prev = np.zeros((B, A, dk, dv))
        n_sat = 0
        for t in range(T):   # H = sat24(rtz(H * (4096 - dH) / 4096) + kv): trunc = toward 0
            n_sat += _decay_add_sat(prev, m_H, kv[t], lim, H_seq[t], counts is not None)
            prev = H_seq[t]
        if counts is not None:
            counts["H"] = counts.get("H", 0) + n_sat
        if layer.neuron_path and layer.reset != "none":
            o = None     # the coupled loop below reads out step by step
        else:
            o = _readout_f(layer, H_seq, ops["Q"], counts)
        if record:
            states["H"] = H_seq.astype(I64)
    if layer.neuron_path:
        I = _shr_f(part["I"], layer.shift_i) + bias_value(layer.bias_mant, layer.bias_exp)
        m_u = (DECAY_UNITY - layer.du.astype(np.float64)) / DECAY_UNITY
        u = np.zeros((B, N))
        u_seq = np.empty((T, B, N))
        coupled = layer.reset != "none"
        s_seq = np.empty((T, B, N)) if coupled else None
        n_sat = 0
        for t in range(T):   # u = sat24(rtz(u * (4096 - du) / 4096) + I)
            n_sat += _decay_add_sat(u, m_u, I[t], lim, u, counts is not None)
            if coupled:      # the reset needs this step's spikes, hence its read-out
                y = u
                if layer.astrocyte:
                    y = u + _readout_f(layer, H_seq[t:t + 1], ops["Q"][t:t + 1], counts)[0]
                s = _fire(layer, y, theta)
                s_seq[t] = s
                if layer.reset == "subtract":
                    u = u - s * theta
                    if counts is not None:
                        n_sat += int(np.count_nonzero(np.abs(u) > lim))
                    np.clip(u, -lim, lim, out=u)
                else:
                    u = np.where(s > 0, 0.0, u)
            u_seq[t] = u
        if counts is not None:
            counts["u"] = counts.get("u", 0) + n_sat
        if record:
            states["u"] = u_seq.astype(I64)
        if coupled:
            return s_seq.astype(I64), states
        y = u_seq if o is None else u_seq + o
    else:
        y = o
    return _fire(layer, y, theta).astype(I64), states


def _decay_add_sat(prev: np.ndarray, m: np.ndarray, inc: np.ndarray, lim: float,
                   out: np.ndarray, count: bool) -> int:
    """``out = sat(trunc(prev * m) + inc)`` (the 12-bit decay rounded toward zero, then
    the increment, then saturation at ``±lim``); returns how many values were clipped
    when ``count``, else 0. ``out`` may be ``prev`` (updated in place)."""
    np.multiply(prev, m, out=out)
    np.trunc(out, out=out)
    np.add(out, inc, out=out)
    n = int(np.count_nonzero(np.abs(out) > lim)) if count else 0
    np.minimum(out, lim, out=out)
    np.maximum(out, -lim, out=out)
    return n


def _readout_f(layer: AMSULayer, H: np.ndarray, q: np.ndarray, counts) -> np.ndarray:
    """``o = sat24(shr(sat24(shr(H^T q, shift_r)) * gain, shift_o))`` for ``[T, B, ...]``."""
    T, B = H.shape[:2]
    r = _sat_f(_shr_f(np.einsum("tbakv,tbak->tbav", H, q), layer.shift_r), STATE_MAX,
               counts, "r")
    o = _shr_f(r.reshape(T, B, layer.n_neurons) * layer.gain.astype(np.float64), layer.shift_o)
    return _sat_f(o, STATE_MAX, counts, "o")


def _fire(layer: AMSULayer, y: np.ndarray, theta: np.ndarray) -> np.ndarray:
    if layer.spike_levels == 1:
        return (y > theta).astype(np.float64)
    s = np.zeros(y.shape)
    for level in range(1, layer.spike_levels + 1):
        s += y > level * theta
    return s


def _lif_fast(layer: LIFLayer, a: np.ndarray, record: bool, counts: Optional[dict]):
    """Lava's LIF over all steps, in float64 integers (exact: |values| < 2**37)."""
    T, B = a.shape[:2]
    N = layer.n_neurons
    act = a * float(1 << ACT_SHIFT)
    bias = bias_value(layer.bias_mant, layer.bias_exp).astype(np.float64)
    theta = float(int(layer.vth) << VTH_SHIFT)
    mu = (DECAY_UNITY - (layer.du + 1)) / DECAY_UNITY
    mv = (DECAY_UNITY - layer.dv) / DECAY_UNITY
    top, lim = float(1 << 23), float(STATE_MAX)
    u = np.zeros((B, N))
    v = np.zeros((B, N))
    s_seq = np.empty((T, B, N), dtype=bool)
    u_seq = np.empty((T, B, N))
    v_seq = np.empty((T, B, N))
    n_wrap = n_sat = 0
    for t in range(T):
        u = np.trunc(u * mu) + act[t]                       # rtz decay + (a << 6)
        if counts is not None:
            n_wrap += int(np.count_nonzero((u > top) | (u <= -top)))
        u = np.where(u > top, u - 2 * top, np.where(u <= -top, u + 2 * top, u))   # wrap24
        v = np.trunc(v * mv) + u + bias
        if counts is not None:
            n_sat += int(np.count_nonzero(np.abs(v) > lim))
        np.minimum(v, lim, out=v)
        np.maximum(v, -lim, out=v)
        s = np.greater(v, theta, out=s_seq[t])
        v[s] = 0.0
        u_seq[t], v_seq[t] = u, v
    if counts is not None:
        counts["u_wrap"] = counts.get("u_wrap", 0) + n_wrap
        counts["v"] = counts.get("v", 0) + n_sat
    states = {"u": u_seq.astype(I64), "v": v_seq.astype(I64)} if record else {}
    return s_seq.astype(I64), states


_CHUNK_ELEMENTS = 1 << 22     # about 32 MB per all-steps int64 array
ENGINES = ("auto", "numba", "numpy")


def jit_available() -> tuple[bool, str]:
    """Whether the compiled engine can run: ``(True, "")`` or ``(False, why)``."""
    try:
        import neuromorphic.reference_jit  # noqa: F401
    except ImportError as exc:      # numba missing or broken: the NumPy engine still works
        return False, f"numba is not importable ({exc})"
    return True, ""


def _elements_per_step(layer) -> int:
    """Values one sequence keeps per step in the fast form (the largest array)."""
    n = layer.synapse.weight.shape[0] + layer.n_neurons
    if isinstance(layer, AMSULayer) and layer.astrocyte:
        n = max(n, layer.n_astrocytes * layer.d_key * layer.d_value)
    return n


def run(net: QuantizedNetwork, x: np.ndarray, record_states: bool = True,
        count_saturation: bool = False, engine: str = "auto",
        threads: Optional[int] = None) -> RunOutput:
    """The fast form: same output as :func:`run_steps`, layer by layer.

    ``x`` ``[T, B, n_in]`` integer spikes. With ``count_saturation`` the output's
    ``saturation`` lists, per layer, how many values each saturating state clipped
    (and how often Lava's LIF current wrapped). ``engine``: ``"numba"`` (compiled
    time loops; the first call in a fresh install compiles them, a few seconds, then
    they load from numba's on-disk cache), ``"numpy"`` (no compiler), or ``"auto"``
    (numba when it imports). ``threads`` (numba engine): how many threads share each
    layer's recurrence, split by sequence or by astrocyte (an astrocyte and its
    neurons depend on nothing else once the synaptic input is known); default: the
    CPUs available, fewer for small runs. The result does not depend on it.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(
            threads, (int, np.integer)) or threads < 1):
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
    x = _check_input(net, x)
    if engine == "auto":
        engine = "numba" if jit_available()[0] else "numpy"
    elif engine == "numba":
        ok, why = jit_available()
        if not ok:
            raise ImportError(f"engine='numba' needs numba: {why}; use engine='numpy'")
    return _run_chunked(net, x, record_states, count_saturation, engine, threads)


def _run_chunked(net, x, record_states, count_saturation, engine, threads) -> RunOutput:
    T, B = x.shape[:2]
    per_seq = max(_elements_per_step(l) for l in net.layers)
    chunk = max(1, _CHUNK_ELEMENTS // max(1, T * per_seq))
    if B > chunk:     # bound the memory of the all-steps arrays: run the batch in pieces
        outs = [_run_chunked(net, x[:, b:b + chunk], record_states, count_saturation, engine,
                             threads)
                for b in range(0, B, chunk)]
        n = len(net.layers)
        sats = [{k: sum(o.saturation[i].get(k, 0) for o in outs)
                 for k in set().union(*(o.saturation[i] for o in outs))} for i in range(n)]
        return RunOutput(
            [np.concatenate([o.spikes[i] for o in outs], 1) for i in range(n)],
            [{k: np.concatenate([o.states[i][k] for o in outs], 1) for k in outs[0].states[i]}
             for i in range(n)], sats)
    if engine == "numba":
        return _run_numba(net, x, record_states, count_saturation, threads)
    spikes, states, sats = [], [], []
    s_in = x
    for layer in net.layers:
        counts = {} if count_saturation else None
        s, st = _layer_numpy(layer, s_in, record_states, counts)
        spikes.append(s)
        states.append(st)
        sats.append(counts or {})
        s_in = s
    return RunOutput(spikes, states, sats)


def _layer_numpy(layer, s_in: np.ndarray, record: bool, counts: Optional[dict]):
    buf = _dense_all(layer, s_in)
    a = _delayed(buf)
    if isinstance(layer, AMSULayer):
        s, st = _amsu_fast(layer, a, record, counts)
    else:
        s, st = _lif_fast(layer, a, record, counts)
    if record:
        st = {"a": buf.astype(I64), **st}
    return s, st


# ----------------------------------------------------------------- the compiled engine

_F32_EXACT = 1 << 24     # float32 holds every integer of magnitude up to 2**24


def _shift_pair(n: int) -> tuple[float, float]:
    """(half, scale) with ``shr(x, n) == floor((x + half) * scale)``."""
    return (float(1 << (n - 1)) if n > 0 else 0.0), 2.0 ** (-n)


_PREPARED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _prepared(layer, in_levels: int) -> dict:
    """What the compiled engine derives from a layer's fields, once per layer and input
    range (layers are immutable): the transposed effective weights in the product's
    dtype, and the kernel's parameters (per neuron / astrocyte, so that parts of the
    layer can be sliced out)."""
    syn = layer.synapse
    graded = syn.num_message_bits > 0
    key = in_levels if graded else 1
    cache = _PREPARED.setdefault(layer, {})
    if key in cache:
        return cache[key]
    w = syn.effective_weight()
    # (W @ s) in float32 when every partial sum is below 2**24 (exact), else float64
    # (exact below 2**52, which the network validation guarantees)
    worst = int(np.abs(w).sum(axis=1).max(initial=0)) * key
    dtype = np.float32 if worst < _F32_EXACT else np.float64
    f64 = lambda v: np.ascontiguousarray(v, dtype=np.float64)   # noqa: E731
    N = layer.n_neurons
    prep = dict(dtype=dtype, wT=np.ascontiguousarray(w.T, dtype=dtype), graded=graded,
                exp=syn.weight_exp)
    if isinstance(layer, AMSULayer):
        A, dk, dv = layer.n_astrocytes, layer.d_key, layer.d_value
        npath, astro = layer.neuron_path, layer.astrocyte
        offs, start = {}, 0
        for name, n in layer.parts:
            offs[name] = start
            start += n
        zeros = np.zeros(N)
        from neuromorphic.reference_jit import SHIFT_SLOTS
        prep.update(
            offs=offs,
            flags=(npath, astro, RESET_CODES[layer.reset], layer.spike_levels),
            m_u=f64((DECAY_UNITY - layer.du) / DECAY_UNITY) if npath else zeros,
            bias=f64(bias_value(layer.bias_mant, layer.bias_exp)) if npath else zeros,
            theta=f64(layer.vth.astype(I64) << VTH_SHIFT),
            shifts=np.array([_shift_pair(getattr(layer, f"shift_{k}") if (
                npath if k == "i" else astro) else 0) for k in SHIFT_SLOTS]),
            opl=float((1 << (layer.operand_bits - 1)) - 1),
            m_H=f64((DECAY_UNITY - layer.dH) / DECAY_UNITY) if astro else np.zeros((1, 1)),
            gain=f64(layer.gain) if astro else zeros,
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

    def __init__(self, layer, T: int, B: int, in_levels: int, record: bool):
        from neuromorphic import reference_jit as J

        self.layer, self.J, self.record = layer, J, record
        self.prep = _prepared(layer, in_levels)
        self.amsu = isinstance(layer, AMSULayer)
        N = layer.n_neurons
        self.buf = np.empty((T, B, self.prep["wT"].shape[1]), dtype=self.prep["dtype"])
        self.s_out = np.empty((T, B, N), dtype=I64)
        t_rec = T if record else 0
        if self.amsu:
            A, dk, dv = layer.n_astrocytes, layer.d_key, layer.d_value
            self.outs = {"u": np.empty((t_rec if layer.neuron_path else 0, B, N), dtype=I64),
                         "H": np.empty((t_rec if layer.astrocyte else 0, B, A, dk, dv),
                                       dtype=I64)}
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
        place = []
        if not whole:                    # the part writes its own arrays, copied back after
            part = []
            for out in outs:
                lo, hi = (u0, u1) if out.ndim == 5 else (n0, n1)
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
            dk = layer.d_key
            args = (self.buf, b0, b1, o.get("I", 0) + n0, o.get("K", 0) + a0 * dk,
                    o.get("V", 0) + n0, o.get("Q", 0) + a0 * dk, *prep["flags"],
                    prep["m_u"][n0:n1], prep["bias"][n0:n1], prep["theta"][n0:n1],
                    prep["shifts"], prep["opl"], prep["m_H"][a0:a1], prep["gain"][n0:n1],
                    float(STATE_MAX), *outs, counts)
            return J.amsu_steps, args, place
        args = (self.buf, b0, b1, n0, float(1 << ACT_SHIFT), prep["m_u"], prep["m_v"],
                prep["bias"][n0:n1], prep["theta"], float(STATE_MAX), *outs, counts)
        return J.lif_steps, args, place

    def result(self, counts: Optional[dict]) -> tuple[np.ndarray, dict]:
        J, layer = self.J, self.layer
        st = {}
        if self.record:
            st = {"a": self.buf.astype(I64)}
            st.update({k: v for k, v in self.outs.items() if v.shape[0]})
        if counts is not None:
            names = J.AMSU_COUNTS if self.amsu else J.LIF_COUNTS
            c = dict(zip(names, self.counts.tolist()))
            if self.amsu:                # the counters of the parts it has
                keep = (("u",) if layer.neuron_path else ()) + \
                    (("k", "v", "q", "H", "r", "o") if layer.astrocyte else ())
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


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:             # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _default_threads(layer, T: int, B: int) -> int:
    """As many threads as CPUs are available and the work is worth (at least
    :data:`_MIN_WORK_PER_THREAD` state updates each), at most one per unit or sequence."""
    units = layer.n_astrocytes if isinstance(layer, AMSULayer) and layer.astrocyte \
        else layer.n_neurons
    worth = T * B * _elements_per_step(layer) // _MIN_WORK_PER_THREAD
    return max(1, min(_available_cpus(), worth, max(units, B)))


def _run_numba(net: QuantizedNetwork, x: np.ndarray, record: bool, count: bool,
               threads: Optional[int]) -> RunOutput:
    """The compiled engine: layer by layer over the whole sequence."""
    T, B = x.shape[:2]
    levels = max(1, int(np.abs(x).max(initial=0)))        # the largest input value
    spikes, states, sats = [], [], []
    s_in = x
    for layer in net.layers:
        jl = _JitLayer(layer, T, B, levels, record)
        jl.advance(s_in, threads or _default_threads(layer, T, B))
        counts = {} if count else None
        s, st = jl.result(counts)
        spikes.append(s)
        states.append(st)
        sats.append(counts or {})
        s_in, levels = s, layer.spike_levels
    return RunOutput(spikes, states, sats)
