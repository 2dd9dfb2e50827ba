"""The NumPy fast engine: the step specification's numbers, layer by layer.

What does not depend on a layer's own state (the synaptic sums of all its steps, once
the layer before has run) is one matrix product; the per-step recurrence (rounding,
saturation, the astrocyte, spikes, resets) runs as NumPy with only the recurrences in
a Python time loop. All values are float64 holding integers: exact, because the
network validation bounds every intermediate below 2**52.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from neuromorphic.engines.common import I64, RunOutput, check_input, run_in_batches
from neuromorphic.engines.step import bias_value, split_parts
from neuromorphic.spec import (
    ACT_SHIFT, DECAY_UNITY, STATE_MAX, VTH_SHIFT, AMSULayer, LIFLayer, QuantizedNetwork,
)

__all__ = ["run"]


def run(net: QuantizedNetwork, x: np.ndarray, record_states: bool = True,
        count_saturation: bool = False) -> RunOutput:
    """Same output as :func:`neuromorphic.engines.step.run`. With ``count_saturation``
    the output's ``saturation`` lists, per layer, how many values each saturating state
    clipped (and how often Lava's LIF current wrapped)."""
    x = check_input(net, x)
    return run_in_batches(net, x, lambda xb: _run_whole(net, xb, record_states,
                                                        count_saturation))


def _run_whole(net, x, record_states, count_saturation) -> RunOutput:
    spikes, states, sats = [], [], []
    s_in = x
    for layer in net.layers:
        counts = {} if count_saturation else None
        s, st = _layer(layer, s_in, record_states, counts)
        spikes.append(s)
        states.append(st)
        sats.append(counts or {})
        s_in = s
    return RunOutput(spikes, states, sats)


def _layer(layer, s_in: np.ndarray, record: bool, counts: Optional[dict]):
    buf = _dense_all(layer, s_in)
    a = _delayed(buf)
    if layer.kind == "amsu":
        s, st = _amsu_fast(layer, a, record, counts)
    else:
        s, st = _lif_fast(layer, a, record, counts)
    if record:
        st = {"a": buf.astype(I64), **st}
    return s, st


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


def _sat_f(x: np.ndarray, limit: int, counts: Optional[dict], name: str,
           relu: bool = False) -> np.ndarray:
    """``sat(x)`` (``relu``: ``sat(max(x, 0))``, equal to ``max(sat(x), 0)``; a negative
    value is then not counted as clipped, the ReLU zeroes it whatever its size)."""
    if relu:
        x = np.maximum(x, 0.0)
    if counts is not None:
        counts[name] = counts.get(name, 0) + int(np.count_nonzero(np.abs(x) > limit))
    return np.clip(x, -float(limit), float(limit))


def _amsu_fast(layer: AMSULayer, a: np.ndarray, record: bool, counts: Optional[dict]):
    T, B = a.shape[:2]
    N, A, dk, dv = layer.n_neurons, layer.n_astrocytes, layer.d_key, layer.d_value
    part = split_parts(layer, a)
    theta = (layer.vth.astype(I64) << VTH_SHIFT).astype(np.float64)
    lim = STATE_MAX
    states = {}
    o = None
    if layer.astrocyte:
        opl = (1 << (layer.operand_bits - 1)) - 1
        ops = {}
        relu = layer.relu        # sensing="relu"|"relu2"|"relu-key": k >= 0 (after the line)
        relu_q = layer.relu_q    # "relu"|"relu2": q >= 0 too ("relu-key": signed; v as is)
        if layer.delay_line:     # k, v through the delay line (its inputs count as xk, xv)
            x = np.concatenate([_sat_f(_shr_f(part["K"], layer.shift_k), opl, counts, "xk"),
                                _sat_f(_shr_f(part["V"], layer.shift_v), opl, counts, "xv")], -1)
            acc, line = _delay_line_f(x, layer.conv_taps, record)
            ops["K"] = _sat_f(_shr_f(acc[..., :A * dk], layer.shift_ck), opl, counts, "k", relu)
            ops["V"] = _sat_f(_shr_f(acc[..., A * dk:], layer.shift_cv), opl, counts, "v")
            if record:
                states["conv"] = line
        else:
            ops["K"] = _sat_f(_shr_f(part["K"], layer.shift_k), opl, counts, "k", relu)
            ops["V"] = _sat_f(_shr_f(part["V"], layer.shift_v), opl, counts, "v")
        ops["K"] = ops["K"].reshape(T, B, A, dk)
        ops["V"] = ops["V"].reshape(T, B, A, dv)
        ops["Q"] = _sat_f(_shr_f(part["Q"], layer.shift_q), opl, counts, "q",
                          relu_q).reshape(T, B, A, dk)
        if layer.square:         # sensing="relu2": the squares requantized (count k2, q2)
            ops["K"] = _sat_f(_shr_f(ops["K"] * ops["K"], layer.shift_k2), opl, counts, "k2")
            ops["Q"] = _sat_f(_shr_f(ops["Q"] * ops["Q"], layer.shift_q2), opl, counts, "q2")
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


def _delay_line_f(x: np.ndarray, taps: np.ndarray, record: bool):
    """The delay line over all steps: ``x`` ``[T, B, C]`` its inputs, ``taps`` ``[K, C]``.
    Returns the sums ``acc[t] = sum_j taps[j] * x[t - j]`` (zero before the first step)
    and, with ``record``, the line after every step ``[T, B, K-1, C]`` (oldest first)."""
    T = x.shape[0]
    K = taps.shape[0]
    w = taps.astype(np.float64)
    acc = x * w[0]
    for j in range(1, min(K, T + 1)):
        acc[j:] += x[:T - j] * w[j]
    line = None
    if record:
        padded = np.concatenate([np.zeros((K - 1,) + x.shape[1:]), x], 0)   # x_t at t + K-1
        line = np.stack([padded[i + 1:i + 1 + T] for i in range(K - 1)], 2).astype(I64)
    return acc, line


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
