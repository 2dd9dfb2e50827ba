"""Integer parameters from float ones: the same function serves the QAT forward pass
and the export, so what was trained is what is saved.

:func:`layer_tensors` computes a planned layer's integers as float64 tensors with
straight-through rounding (gradients reach the float parameters); :func:`frozen_layer`
turns them into the :mod:`neuromorphic.spec` layer. Values that do not fit their width
are never wrapped: they are clamped and counted (:class:`SaturationWarning`).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import Tensor

from neuromorphic.convert.calibrate import W_MAX, LayerPlan
from neuromorphic.engines.torch_view import LayerTensors, ste_round
from neuromorphic.spec import (
    BIAS_EXP_MAX, BIAS_MANT_BITS, DECAY_UNITY, GAIN_BITS, TAP_MAX, VTH_BITS, VTH_SHIFT,
    AMSULayer, LIFLayer, Synapse, message_bits, senses_relu, senses_relu_query,
    senses_square,
)

__all__ = ["SaturationWarning", "layer_tensors", "frozen_layer", "StaticView"]


class SaturationWarning(UserWarning):
    """Some values were clamped to their width at quantization time (counted)."""


def _weight_mantissas(W: Tensor, e: int, counts: dict, key: str) -> Tensor:
    scaled = W * 2.0 ** (-e)
    m = 2 * ste_round(scaled / 2)
    counts[key] = counts.get(key, 0) + int((m.detach().abs() > W_MAX).sum())
    return torch.clamp(m, -W_MAX, W_MAX)


def _bias_parts(b: Tensor, e_u: int, counts: dict, key: str) -> tuple[Tensor, Tensor]:
    """(mantissa, exponent) per neuron; effective bias = mant * 2**exp."""
    scaled = b * 2.0 ** (-e_u)
    bits = torch.floor(torch.log2(torch.round(scaled.detach()).abs().clamp(min=1))) + 1
    exp = (bits - (BIAS_MANT_BITS - 1)).clamp(min=0)
    counts[key + "_exp"] = counts.get(key + "_exp", 0) + int((exp > BIAS_EXP_MAX).sum())
    exp = exp.clamp(max=BIAS_EXP_MAX)
    mant = ste_round(scaled / 2.0 ** exp)
    hi = (1 << (BIAS_MANT_BITS - 1)) - 1
    counts[key] = counts.get(key, 0) + int(((mant.detach() > hi) | (mant.detach() < -hi - 1)).sum())
    return torch.clamp(mant, -hi - 1, hi), exp


def _decay(decay: Tensor, counts: dict, key: str) -> Tensor:
    d = ste_round(DECAY_UNITY * (1 - decay))
    counts[key] = counts.get(key, 0) + int(((d.detach() < 0) | (d.detach() > DECAY_UNITY - 1)).sum())
    return torch.clamp(d, 0, DECAY_UNITY - 1)


def _clamped(x: Tensor, lo: float, hi: float, counts: dict, key: str) -> Tensor:
    counts[key] = counts.get(key, 0) + int(((x.detach() < lo) | (x.detach() > hi)).sum())
    return torch.clamp(x, lo, hi)


def layer_tensors(plan: LayerPlan, counts: Optional[dict] = None):
    """``(static layer, LayerTensors)``: the integer parameters of a planned layer as
    float64 tensors carrying STE gradients to the float parameters."""
    counts = {} if counts is None else counts
    ref = plan.ref
    W = ref.weight().to(torch.float64)
    blocks, start = [], 0
    for name, n in ref.parts:
        blocks.append(_weight_mantissas(W[start:start + n], plan.e_w[name], counts, f"weight.{name}"))
        start += n
    Wq = torch.cat(blocks, 0)
    N = ref.n_neurons
    b = ref.bias()
    b = torch.zeros(N, dtype=torch.float64) if b is None else b.to(torch.float64)
    vth = _clamped(ste_round(ref.threshold().to(torch.float64) * 2.0 ** (-plan.e_u)
                             / (1 << VTH_SHIFT)), 0, (1 << VTH_BITS) - 1, counts, "vth")
    scale = {"u": plan.e_u}
    sg = (ref.amsu or ref.lif).spec.surrogate
    syn_bits = message_bits(plan.in_levels)
    if ref.kind == "lif":
        mant, exp = _bias_parts(b, plan.e_u, counts, "bias_mant")
        dv = _decay(ref.beta().to(torch.float64), counts, "dv")
        static = dict(kind="lif", n_neurons=N, du=DECAY_UNITY - 1, weight_exp=plan.weight_exp,
                      num_message_bits=syn_bits, scale={**scale, "w": plan.e_w["I"]}, name=ref.name)
        t = LayerTensors(None, Wq, mant * 2.0 ** exp, torch.tensor(float(DECAY_UNITY - 1),
                         dtype=torch.float64), vth[0], dv=dv[0], surrogate=sg,
                         spike_scale=2.0 ** plan.e_u)
        return static, t, (mant, exp)
    static = dict(kind="amsu", n_neurons=N, n_astrocytes=ref.n_astrocytes, d_key=ref.d_key,
                  neuron_path=ref.neuron_path, astrocyte=ref.astrocyte, reset=ref.reset,
                  spike_levels=ref.spike_levels, operand_bits=plan.operand_bits,
                  conv_size=plan.conv_size, sensing=ref.sensing, num_message_bits=syn_bits,
                  name=ref.name,
                  **plan.shifts())
    scale.update({f"w{k}": v for k, v in plan.e_w.items()})
    du = bias = mant = exp = dH = gain = taps = None
    if ref.neuron_path:
        du = _decay(ref.beta().to(torch.float64), counts, "du")
        mant, exp = _bias_parts(b, plan.e_u, counts, "bias_mant")
        bias = mant * 2.0 ** exp
    if ref.astrocyte:
        dH = _decay(ref.gamma().to(torch.float64), counts, "dH")
        gl = (1 << (GAIN_BITS - 1)) - 1
        gain = _clamped(ste_round(ref.gain().to(torch.float64) * 2.0 ** (-plan.e_g)), -gl, gl,
                        counts, "gain")
        scale.update(k=plan.e_k, v=plan.e_v, q=plan.e_q, H=plan.e_H, r=plan.e_r, g=plan.e_g)
        if plan.conv_size > 1:   # taps: 8-bit mantissas, one exponent per block K | V
            w = ref.conv().to(torch.float64)
            n_k = ref.n_astrocytes * ref.d_key
            taps = torch.cat([
                _clamped(ste_round(w[:, :n_k] * 2.0 ** (-plan.e_c["K"])), -TAP_MAX, TAP_MAX,
                         counts, "conv_taps"),
                _clamped(ste_round(w[:, n_k:] * 2.0 ** (-plan.e_c["V"])), -TAP_MAX, TAP_MAX,
                         counts, "conv_taps")], 1)
            scale.update(xk=plan.e_xk, xv=plan.e_xv, cK=plan.e_c["K"], cV=plan.e_c["V"])
        if plan.square:          # sensing="relu2": the squared operands' exponents
            scale.update(k2=plan.e_k2, q2=plan.e_q2)
    static["scale"] = scale
    t = LayerTensors(None, Wq, bias, du, vth, dH=dH, gain=gain, surrogate=sg,
                     spike_scale=2.0 ** plan.e_u, taps=taps)
    return static, t, (mant, exp)


def _sign_mode(w: np.ndarray) -> str:
    if w.size == 0 or w.min() >= 0:
        return "excitatory"
    if w.max() <= 0:
        return "inhibitory"
    return "mixed"


def _to_int(t: Tensor) -> np.ndarray:
    a = t.detach().cpu().numpy()
    r = np.rint(a)
    if not np.array_equal(a, r):     # a non-finite parameter (check_params refuses those)
        raise ValueError("an integer parameter is not an integer (NaN or Inf?)")
    return r.astype(np.int64)


def frozen_layer(static: dict, t: LayerTensors, bias_parts) -> object:
    """The frozen :mod:`neuromorphic.spec` layer of ``(static, tensors)``."""
    w = _to_int(t.weight)
    static = dict(static)
    syn = Synapse(w, weight_exp=static.pop("weight_exp", 0), sign_mode=_sign_mode(w),
                  num_message_bits=static.pop("num_message_bits"))
    kind = static.pop("kind")
    mant, exp = bias_parts
    if kind == "lif":
        return LIFLayer(syn, static["n_neurons"], du=int(static["du"]), dv=int(_to_int(t.dv)),
                        vth=int(_to_int(t.vth)), bias_mant=_to_int(mant), bias_exp=_to_int(exp),
                        name=static["name"], scale=static["scale"])
    kw = dict(static)
    kw["vth"] = _to_int(t.vth)
    if kw["neuron_path"]:
        kw.update(du=_to_int(t.du), bias_mant=_to_int(mant), bias_exp=_to_int(exp))
    else:
        kw["shift_i"] = 0
    if kw["astrocyte"]:
        kw.update(dH=_to_int(t.dH), gain=_to_int(t.gain))
    else:
        for k in ("shift_k", "shift_v", "shift_q", "shift_kv", "shift_r", "shift_o",
                  "shift_k2", "shift_q2"):
            kw[k] = 0
    if t.taps is not None:
        kw["conv_taps"] = _to_int(t.taps)
    else:
        kw.update(conv_size=1, shift_ck=0, shift_cv=0)
    return AMSULayer(syn, **kw)


# ----------------------------------------------------------------- QAT

class StaticView:
    """Attribute access to a layer's static fields for :mod:`neuromorphic.engines.torch_view`."""

    def __init__(self, static: dict) -> None:
        self.__dict__.update(static)
        kind = static["kind"]
        self._kind = kind
        self.synapse = Synapse(np.zeros((1, 1), np.int64), weight_exp=static.get("weight_exp", 0),
                               num_message_bits=static["num_message_bits"])
        if kind == "amsu":
            N, A, dk = static["n_neurons"], static["n_astrocytes"], static["d_key"]
            self.d_value = N // A
            parts = []
            if static["neuron_path"]:
                parts.append(("I", N))
            if static["astrocyte"]:
                parts += [("K", A * dk), ("V", N), ("Q", A * dk)]
            self.parts = tuple(parts)
            self.delay_line = bool(static["astrocyte"]) and static.get("conv_size", 1) > 1
            self.relu = senses_relu(static["astrocyte"], static.get("sensing"))
            self.relu_q = senses_relu_query(static["astrocyte"], static.get("sensing"))
            self.square = senses_square(static["astrocyte"], static.get("sensing"))
