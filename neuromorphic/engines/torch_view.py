"""The integer network in torch, with straight-through gradients (the QAT view).

Every value is an integer held in a float64 tensor: float64 represents every
integer below 2**53 exactly, and the network validation keeps every intermediate
below 2**52, so the forward pass here equals the NumPy reference bit for bit.
Rounding operations (``round``, ``floor``, ``trunc``) pass gradients straight
through (STE); saturations are ``clamp`` (no gradient outside the range); spikes use
the layer's surrogate gradient on ``(y - l*theta) * 2**scale_u`` (the float units of
the membrane), so training sees the same gradient scale as the float model.

Used by :class:`neuromorphic.convert.qat.QATNetwork` (parameters computed from the float
model on every forward) and by ``nm.simulate(..., backend="torch")`` (parameters
from a :class:`~neuromorphic.spec.QuantizedNetwork`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from astro_neuron.functional.surrogate import ATan
from neuromorphic.engines.common import RunOutput, single_torch_thread
from neuromorphic.spec import (
    ACT_SHIFT, DECAY_UNITY, STATE_MAX, VTH_SHIFT, AMSULayer, LIFLayer, QuantizedNetwork,
)

__all__ = ["ste_round", "ste_floor", "ste_trunc", "shr", "LayerTensors", "layer_forward",
           "network_forward", "tensors_from_layer", "run"]

F64 = torch.float64


class _STE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, op: str) -> Tensor:  # type: ignore[override]
        return getattr(torch, op)(x)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        return grad, None


def ste_round(x: Tensor) -> Tensor:
    """Round half to even forward (as ``torch.round``/``np.round``), identity backward."""
    return _STE.apply(x, "round")


def ste_floor(x: Tensor) -> Tensor:
    return _STE.apply(x, "floor")


def ste_trunc(x: Tensor) -> Tensor:
    return _STE.apply(x, "trunc")


def shr(x: Tensor, n: int) -> Tensor:
    """Requantizing shift (engines.step.shr): right by n rounding half up; n < 0: left."""
    if n > 0:
        return ste_floor((x + float(1 << (n - 1))) / float(1 << n))
    if n < 0:
        return x * float(1 << (-n))
    return x


def rtz_decay(x: Tensor, d: Tensor) -> Tensor:
    """``x * (4096 - d) / 4096`` rounded toward zero."""
    return ste_trunc(x * (DECAY_UNITY - d) / DECAY_UNITY)


def sat(x: Tensor, limit: int) -> Tensor:
    return torch.clamp(x, -float(limit), float(limit))


def wrap24(x: Tensor) -> Tensor:
    top = float(1 << 23)
    return torch.where(x > top, x - 2 * top, torch.where(x <= -top, x + 2 * top, x))


@dataclass
class LayerTensors:
    """One layer's integers as float64 tensors (possibly carrying STE gradients)."""

    layer: object                  # AMSULayer / LIFLayer: static fields (shifts, flags)
    weight: Tensor                 # effective Dense weights [P, n_in]
    bias: Optional[Tensor]         # effective bias mant << exp [N]
    du: Optional[Tensor]           # [N] (AMSU) or scalar (LIF)
    vth: Tensor                    # [N] (AMSU) or scalar (LIF)
    dv: Optional[Tensor] = None    # LIF only
    dH: Optional[Tensor] = None    # [A, dk]
    gain: Optional[Tensor] = None  # [N]
    surrogate: object = None
    spike_scale: float = 1.0       # float units per integer unit of the membrane
    taps: Optional[Tensor] = None  # [conv_size, A*dk + N] delay-line taps (delay line only)


def tensors_from_layer(layer, surrogate=None) -> LayerTensors:
    """Constant tensors of a stored layer (no gradients)."""
    t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64))  # noqa: E731
    syn_w = t(layer.synapse.effective_weight())
    scale = 2.0 ** layer.scale.get("u", 0)
    if layer.kind == "lif":
        bias = t(np.asarray(layer.bias_mant, np.int64) << np.asarray(layer.bias_exp, np.int64))
        return LayerTensors(layer, syn_w, bias, t(layer.du), t(layer.vth), dv=t(layer.dv),
                            surrogate=surrogate, spike_scale=scale)
    bias = None
    if layer.neuron_path:
        bias = t(np.asarray(layer.bias_mant, np.int64) << np.asarray(layer.bias_exp, np.int64))
    return LayerTensors(
        layer, syn_w, bias, None if layer.du is None else t(layer.du), t(layer.vth),
        dH=None if layer.dH is None else t(layer.dH),
        gain=None if layer.gain is None else t(layer.gain), surrogate=surrogate,
        spike_scale=scale, taps=t(layer.conv_taps) if layer.delay_line else None)


def _dense(p: LayerTensors, x: Tensor) -> Tensor:
    """Dense buffers after every step ``[T, B, P]``."""
    syn = p.layer.synapse
    s = x if syn.num_message_bits > 0 else (x != 0).to(F64) + (x - x.detach())
    acc = s @ p.weight.T
    e = syn.weight_exp
    return acc * float(1 << e) if e > 0 else (ste_floor(acc / float(1 << -e)) if e < 0 else acc)


def _delayed(buf: Tensor) -> Tensor:
    return torch.cat([torch.zeros_like(buf[:1]), buf[:-1]], dim=0)


def _delay_line(x: Tensor, taps: Tensor, record: bool):
    """The delay line over all steps: ``x`` ``[T, B, C]``, ``taps`` ``[K, C]`` (row j: lag
    j) -> the sums ``sum_j taps[j] * x[t - j]`` (zero before the first step) and, with
    ``record``, the line after every step ``[T, B, K-1, C]`` (oldest first)."""
    T, K = x.shape[0], taps.shape[0]
    padded = torch.cat([x.new_zeros((K - 1,) + x.shape[1:]), x], 0)    # x_t at t + K - 1
    acc = x * taps[0]
    for j in range(1, K):
        acc = acc + padded[K - 1 - j:K - 1 - j + T] * taps[j]
    line = torch.stack([padded[i + 1:i + 1 + T] for i in range(K - 1)], 2) if record else None
    return acc, line


def _fire(y: Tensor, theta: Tensor, levels: int, sg, scale: float) -> Tensor:
    sg = sg or ATan()
    s = sg((y - theta) * scale)
    for level in range(2, levels + 1):
        s = s + sg((y - level * theta) * scale)
    return s


def _amsu(p: LayerTensors, a: Tensor, record: bool):
    L: AMSULayer = p.layer
    T, B = a.shape[:2]
    N, A, dk, dv = L.n_neurons, L.n_astrocytes, L.d_key, L.d_value
    parts = dict(zip((n for n, _ in L.parts), torch.split(a, [n for _, n in L.parts], -1)))
    theta = p.vth * float(1 << VTH_SHIFT)
    lim = STATE_MAX
    states = {}
    if L.astrocyte:
        opl = (1 << (L.operand_bits - 1)) - 1
        k = sat(shr(parts["K"], L.shift_k), opl)
        v = sat(shr(parts["V"], L.shift_v), opl)
        if L.delay_line:         # k, v through the delay line, the sums requantized
            acc, line = _delay_line(torch.cat([k, v], -1), p.taps, record)
            k = sat(shr(acc[..., :A * dk], L.shift_ck), opl)
            v = sat(shr(acc[..., A * dk:], L.shift_cv), opl)
            if record:
                states["conv"] = line
        q = sat(shr(parts["Q"], L.shift_q), opl)
        if L.relu:               # sensing="relu": non-negative k (after the line) ...
            k = torch.relu(k)
        if L.relu_q:             # ... and q ("relu-key": the query stays signed)
            q = torch.relu(q)
        if L.square:             # sensing="relu2": their squares, requantized to operands
            k, q = sat(shr(k * k, L.shift_k2), opl), sat(shr(q * q, L.shift_q2), opl)
        k, v, q = k.reshape(T, B, A, dk), v.reshape(T, B, A, dv), q.reshape(T, B, A, dk)
        kv = shr(k[..., :, None] * v[..., None, :], L.shift_kv)
        H = torch.zeros(B, A, dk, dv, dtype=F64)
        Hs = []
        kv_t = kv.unbind(0)          # (indexing kv[t] would cost O(T) per step in backward)
        for t in range(T):
            H = sat(rtz_decay(H, p.dH[:, :, None]) + kv_t[t], lim)
            Hs.append(H)
        H_seq = torch.stack(Hs)
        r = sat(shr(torch.einsum("tbakv,tbak->tbav", H_seq, q), L.shift_r), lim)
        o = sat(shr(r.reshape(T, B, N) * p.gain, L.shift_o), lim)
        if record:
            states["H"] = H_seq
    else:
        o = None
    if L.neuron_path:
        I = shr(parts["I"], L.shift_i) + p.bias
        u = torch.zeros(B, N, dtype=F64)
        us, ss = [], []
        coupled = L.reset != "none"
        I_t = I.unbind(0)
        o_t = None if o is None else o.unbind(0)
        for t in range(T):
            u = sat(rtz_decay(u, p.du) + I_t[t], lim)
            if coupled:
                y = u if o is None else u + o_t[t]
                s = _fire(y, theta, L.spike_levels, p.surrogate, p.spike_scale)
                ss.append(s)
                if L.reset == "subtract":
                    u = sat(u - s * theta, lim)
                else:
                    u = u * (1 - s.clamp(max=1))
            us.append(u)
        u_seq = torch.stack(us)
        if record:
            states["u"] = u_seq
        if coupled:
            return torch.stack(ss), states
        y = u_seq if o is None else u_seq + o
    else:
        y = o
    return _fire(y, theta, L.spike_levels, p.surrogate, p.spike_scale), states


def _lif(p: LayerTensors, a: Tensor, record: bool):
    L: LIFLayer = p.layer
    T, B = a.shape[:2]
    act = a * float(1 << ACT_SHIFT)
    theta = p.vth * float(1 << VTH_SHIFT)
    u = torch.zeros(B, L.n_neurons, dtype=F64)
    v = torch.zeros_like(u)
    ss, us, vs = [], [], []
    act_t = act.unbind(0)
    for t in range(T):
        u = wrap24(rtz_decay(u, p.du + 1) + act_t[t])
        v = sat(rtz_decay(v, p.dv) + u + p.bias, STATE_MAX)
        s = _fire(v, theta, 1, p.surrogate, p.spike_scale)
        v = v * (1 - s)
        ss.append(s)
        us.append(u)
        vs.append(v)
    st = {"u": torch.stack(us), "v": torch.stack(vs)} if record else {}
    return torch.stack(ss), st


def layer_forward(p: LayerTensors, x: Tensor, record: bool = True):
    """One layer over a sequence: ``x`` ``[T, B, n_in]`` -> (spikes, states incl. ``a``)."""
    buf = _dense(p, x)
    a = _delayed(buf)
    if p.layer.kind == "lif":
        s, st = _lif(p, a, record)
    else:
        s, st = _amsu(p, a, record)
    if record:
        st = {"a": buf, **st}
    return s, st


def network_forward(layers: list[LayerTensors], x: Tensor, record: bool = True):
    """All layers; returns (list of spikes ``[T, B, N_l]``, list of state dicts)."""
    spikes, states = [], []
    for p in layers:
        x, st = layer_forward(p, x, record)
        spikes.append(x)
        states.append(st)
    return spikes, states


def run(net: QuantizedNetwork, x: np.ndarray, record_states: bool = True) -> RunOutput:
    """``nm.simulate(backend="torch")``: the stored integers through this module."""
    xt = torch.as_tensor(np.asarray(x, dtype=np.float64))
    # many small per-step ops: one thread avoids pool contention on busy machines
    with torch.no_grad(), single_torch_thread():
        spikes, states = network_forward([tensors_from_layer(l) for l in net.layers], xt,
                                         record_states)
    to_i = lambda t: np.rint(t.numpy()).astype(np.int64)  # noqa: E731  (values are integers)
    return RunOutput([to_i(s) for s in spikes],
                     [{k: to_i(v) for k, v in st.items()} for st in states])
