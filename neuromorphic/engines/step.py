"""The step specification of the integer network: NumPy, int64, every width explicit.

Read it beside docs/neuromorphic.md. One time step of every process, written out as
the hardware does it (:func:`dense_step`, :func:`amsu_step`, :func:`lif_step`), and
:func:`run` over a sequence: every step runs every layer's Dense, then its neurons, in
order, as Lava does. This is the definition; every other engine is tested against it
bit for bit. Arrays are batch-first inside a step (``[B, ...]``) and time-major across
steps (``[T, B, ...]``).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from neuromorphic.engines.common import I64, RunOutput, check_input
from neuromorphic.spec import (
    ACT_SHIFT, DECAY_SHIFT, DECAY_UNITY, STATE_MAX, VTH_SHIFT, AMSULayer, LIFLayer,
    QuantizedNetwork,
)

__all__ = ["shr", "rtz_decay", "sat", "sat24", "wrap24", "bias_value", "dense_step",
           "delay_line_step", "amsu_step", "lif_step", "init_states", "split_parts", "run"]


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


def split_parts(layer: AMSULayer, a: np.ndarray) -> dict[str, np.ndarray]:
    out, start = {}, 0
    for name, n in layer.parts:
        out[name] = a[..., start:start + n]
        start += n
    return out


def delay_line_step(line: np.ndarray, x: np.ndarray, taps: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """One step of the pre-synaptic delay line (docs/neuromorphic.md, "Delay line").

    ``line`` ``[B, K-1, C]``: the last ``K - 1`` inputs, oldest first; ``x`` ``[B, C]``:
    this step's input; ``taps`` ``[K, C]`` (row ``j``: lag ``j``). Returns the sums
    ``acc[c] = sum_j taps[j, c] * x_{t-j}[c]`` (exact integers, not yet requantized)
    and the new line (the oldest value dropped, ``x`` appended).
    """
    K = taps.shape[0]
    x = np.asarray(x, dtype=I64)
    taps = np.asarray(taps, dtype=I64)
    acc = taps[0] * x
    for j in range(1, K):                       # lag j sits at position K - 1 - j
        acc = acc + taps[j] * line[:, K - 1 - j]
    return acc, np.concatenate([line[:, 1:], x[:, None]], axis=1)


def amsu_step(layer: AMSULayer, u: Optional[np.ndarray], H: Optional[np.ndarray],
              a: np.ndarray, conv: Optional[np.ndarray] = None):
    """One step of the integer AM-SU neurons (docs/neuromorphic.md, "AM-SU step").

    ``a`` ``[B, P]``: the synaptic input (the Dense's output this step);
    ``u`` ``[B, N]``; ``H`` ``[B, A, dk, dv]``; ``conv`` ``[B, conv_size - 1, A*dk + N]``
    the delay line (``layer.delay_line``; else None). Returns ``(s, u, H, conv)``: spikes
    ``[B, N]`` in ``{0..L}`` and the new states (``u`` after the reset).
    """
    part = split_parts(layer, np.asarray(a, dtype=I64))
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
        k = sat(shr(part["K"], layer.shift_k), b)                     # operands: b-bit
        v = sat(shr(part["V"], layer.shift_v), b)
        if layer.delay_line:                                          # k, v through the line
            acc, conv = delay_line_step(conv, np.concatenate([k, v], axis=1), layer.conv_taps)
            k = sat(shr(acc[:, :A * dk], layer.shift_ck), b)          # sums requantized, b-bit
            v = sat(shr(acc[:, A * dk:], layer.shift_cv), b)
        q = sat(shr(part["Q"], layer.shift_q), b)
        if layer.relu:                                                # sensing="relu": after
            k = np.maximum(k, 0)                                      # the line, k >= 0,
        if layer.relu_q:                                              # and q >= 0 (not with
            q = np.maximum(q, 0)                                      # "relu-key")
        if layer.square:                                              # "relu2": their squares,
            k = sat(shr(k * k, layer.shift_k2), b)                    # requantized, b-bit
            q = sat(shr(q * q, layer.shift_q2), b)
        k, v, q = k.reshape(B, A, dk), v.reshape(B, A, dv), q.reshape(B, A, dk)
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
    return s, u, H, conv


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


def run(net: QuantizedNetwork, x: np.ndarray, record_states: bool = True) -> RunOutput:
    """The step form over a sequence: ``x`` ``[T, B, n_in]`` integer spikes.

    Every step runs every layer's Dense, then its neurons, in order, as Lava does.
    """
    x = check_input(net, x)
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
            if layer.kind == "amsu":
                s, u, H, conv = amsu_step(layer, st[i].get("u"), st[i].get("H"), a,
                                          st[i].get("conv"))
                if layer.neuron_path:
                    st[i]["u"] = u
                if layer.astrocyte:
                    st[i]["H"] = H
                if layer.delay_line:
                    st[i]["conv"] = conv
            else:
                s, st[i]["u"], st[i]["v"] = lif_step(layer, st[i]["u"], st[i]["v"], a)
            spikes[i][t] = s
            if record_states:
                for k, val in st[i].items():
                    states[i][k][t] = val
            s_in = s
    return RunOutput(spikes, states)
