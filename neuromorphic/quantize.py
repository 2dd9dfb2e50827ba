"""From a trained float model to integers: calibration, PTQ, QAT.

1. **Calibration** (:func:`calibrate`) runs the float model on spike inputs and picks,
   per layer, the power-of-two exponent of every quantity (weights per row block,
   membrane, operands k/v/q, astrocyte state, read-out, gain) so that the observed
   range fits its width with one bit of headroom (operands: no headroom, they
   saturate). docs/neuromorphic.md, "From float to integer", lists the rules.
2. **Integer parameters** (:func:`layer_tensors`) are computed from the float
   parameters with straight-through rounding: the same function serves the QAT
   forward pass and the export, so what was trained is what is saved.
3. **PTQ**: :func:`quantize` ``(model, calibration=x)`` = calibrate + export, then a
   run of the integer reference on the calibration data counts saturations.
4. **QAT**: :func:`prepare_qat` returns a :class:`QATNetwork`, an ``nn.Module`` whose
   forward is the integer network (fake-quantized, STE) and whose parameters are the
   model's own; fine-tune it, then :func:`quantize` ``(qat)`` exports.

Values that do not fit their width at quantization time are never wrapped: they are
clamped and counted, and :class:`SaturationWarning` reports the counts.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
from torch import Tensor, nn

from astro_neuron.functional.amsu import AMSUParams, AMSUState, dynamics_step
from astro_neuron.functional.scan import astro_read
from neuromorphic.graph import LayerRef, extract_layers
from neuromorphic.spec import (
    ACT_SHIFT, BIAS_EXP_MAX, BIAS_MANT_BITS, DECAY_UNITY, GAIN_BITS, SHIFT_RANGE, STATE_MAX,
    VTH_BITS, VTH_SHIFT, WEIGHT_EXP_RANGE, AMSULayer, LIFLayer, QuantizedNetwork, Synapse,
    check_spikes, message_bits,
)
from neuromorphic.torch_view import LayerTensors, network_forward, ste_round

__all__ = ["SaturationWarning", "LayerPlan", "calibrate", "prepare_qat", "QATNetwork",
           "quantize", "check_spikes"]

_W_MAX = 254          # even weight mantissas in [-254, 254]: every Dense sign mode keeps them
_HEADROOM = 2.0       # states: one bit of headroom over the calibrated maximum


class SaturationWarning(UserWarning):
    """Some values were clamped to their width at quantization time (counted)."""


def _exp_for(maxval: float, limit: float, headroom: float = 1.0) -> int:
    """Smallest exponent e with ``maxval * headroom / 2**e <= limit``."""
    m = max(float(maxval) * headroom, 2.0 ** -40)
    return int(math.ceil(math.log2(m / limit) - 1e-12))


# ----------------------------------------------------------------- calibration

@dataclass
class LayerPlan:
    """Exponents of one layer (``value_float = value_int * 2**e``), fixed after calibration."""

    ref: LayerRef
    in_levels: int
    e_w: dict                      # per row block "I", "K", "V", "Q" (lif: "I")
    e_u: int
    weight_exp: int = 0            # Dense exponent (stock LIF layers)
    e_k: int = 0
    e_v: int = 0
    e_q: int = 0
    e_H: int = 0
    e_r: int = 0
    e_g: int = 0
    operand_bits: int = 8
    observed: dict = field(default_factory=dict)

    def shifts(self) -> dict:
        """Requantization shifts of the AM-SU (docs/neuromorphic.md)."""
        return dict(shift_i=self.e_u - self.e_w.get("I", 0),
                    shift_k=self.e_k - self.e_w.get("K", 0),
                    shift_v=self.e_v - self.e_w.get("V", 0),
                    shift_q=self.e_q - self.e_w.get("Q", 0),
                    shift_kv=self.e_H - self.e_k - self.e_v,
                    shift_r=self.e_r - self.e_H - self.e_q,
                    shift_o=self.e_u - self.e_r - self.e_g)


def _amax(t: Optional[Tensor]) -> float:
    return 0.0 if t is None or t.numel() == 0 else float(t.detach().abs().max())


@torch.no_grad()
def _observe_amsu(m, x: Tensor) -> tuple[Tensor, dict]:
    """Float64 run of an AMSU layer; returns (spikes, maxima of every quantity)."""
    spec = m.spec
    p = AMSUParams(*(None if t is None else t.detach().double() for t in m.params()))
    T, B = x.shape[:2]
    z = x @ p.weight.T
    parts = dict(zip((n for n, _ in spec.parts), torch.split(z, [n for _, n in spec.parts], -1)))
    A, dk, dv = spec.n_astrocytes, spec.d_key, spec.d_value
    I = parts.get("I")
    if I is not None and p.bias is not None:
        I = I + p.bias
    obs = {"I": _amax(I)}
    if spec.astrocyte:
        obs.update(k=_amax(parts["K"]), v=_amax(parts["V"]), q=_amax(parts["Q"]))
    state = AMSUState(torch.zeros(B, spec.n_neurons, dtype=torch.float64),
                      torch.zeros(B, A, dk, dv, dtype=torch.float64) if spec.astrocyte else None, 0)
    H_max = r_max = u_max = o_max = y_max = 0.0
    spikes = []
    for t in range(T):
        k = v = q = None
        if spec.astrocyte:
            k, v, q = (parts[n][t].reshape(B, A, w) for n, w in (("K", dk), ("V", dv), ("Q", dk)))
        out, state = dynamics_step(None if I is None else I[t], k, v, q, state, p, spec)
        spikes.append(out.spikes)
        u_max = max(u_max, _amax(out.u))
        o_max = max(o_max, _amax(out.o))
        y_max = max(y_max, _amax(out.u + out.o))
        if spec.astrocyte:
            H_max = max(H_max, _amax(state.H))
            r_max = max(r_max, _amax(astro_read(state.H, q)))
    obs.update(u=u_max, o=o_max, y=y_max, H=H_max, r=r_max)
    return torch.stack(spikes), obs


@torch.no_grad()
def _observe_lif(ref: LayerRef, x: Tensor) -> tuple[Tensor, dict]:
    from astro_neuron.functional.lif import lif_step

    lin, lif = ref.linear, ref.lif
    cur = x @ lin.weight.detach().double().T
    a_max = _amax(cur)
    if lin.bias is not None:
        cur = cur + lin.bias.detach().double()
    beta, th = lif.beta.detach().double(), lif.threshold.detach().double()
    u = torch.zeros_like(cur[0])
    ss, u_max = [], 0.0
    for t in range(cur.shape[0]):
        s, u_pre, u = lif_step(cur[t], u, beta, th, lif.spec)
        ss.append(s)
        u_max = max(u_max, _amax(u_pre))
    return torch.stack(ss), {"I": _amax(cur), "a": a_max, "u": u_max, "o": 0.0, "y": u_max}


def _plan_layer(ref: LayerRef, obs: dict, in_levels: int, operand_bits: int) -> LayerPlan:
    W = ref.weight().detach().double()
    e_w, start = {}, 0
    for name, n in ref.parts:
        e_w[name] = _exp_for(_amax(W[start:start + n]), _W_MAX)
        start += n
    theta = _amax(ref.threshold())
    L = ref.spike_levels
    bias = ref.bias()
    m_u = max(obs["u"], obs["y"], obs["o"], obs["I"], L * theta, _amax(bias))
    e_u = _exp_for(m_u, STATE_MAX, _HEADROOM)
    plan = LayerPlan(ref, in_levels, e_w, e_u, operand_bits=operand_bits,
                     observed={k: round(float(v), 6) for k, v in obs.items()})
    if ref.kind == "lif":
        # a << 6 enters the membrane's units: weight_exp = e_w - e_u - 6, within Dense's range.
        lo, hi = WEIGHT_EXP_RANGE
        wexp = e_w["I"] - e_u - ACT_SHIFT
        if wexp > hi:                       # weights too large for the state scale: coarser state
            plan.e_u = e_w["I"] - ACT_SHIFT - hi
            wexp = hi
        elif wexp < lo:                     # weights tiny: use a finer weight grid instead
            e_w["I"] = e_u + ACT_SHIFT + lo
            wexp = lo
        plan.weight_exp = wexp
        return plan
    if ref.astrocyte:
        lim = (1 << (operand_bits - 1)) - 1
        plan.e_k = _exp_for(obs["k"], lim)
        plan.e_v = _exp_for(obs["v"], lim)
        plan.e_q = _exp_for(obs["q"], lim)
        plan.e_H = _exp_for(obs["H"], STATE_MAX, _HEADROOM)
        plan.e_r = _exp_for(obs["r"], STATE_MAX, _HEADROOM)
        plan.e_g = _exp_for(_amax(ref.gain()), (1 << (GAIN_BITS - 1)) - 1)
    lo, hi = SHIFT_RANGE
    for name, value in plan.shifts().items():
        used = ref.neuron_path if name == "shift_i" else ref.astrocyte
        if used and not lo <= value <= hi:
            raise ValueError(
                f"{ref.name}: {name} = {value} is outside [{lo}, {hi}]: the layer's value ranges "
                f"(observed {plan.observed}) are too far apart for 24-bit states; check the "
                "calibration data or the trained parameters")
    return plan


def calibrate(model: nn.Module, calibration, operand_bits: int = 8) -> list[LayerPlan]:
    """Exponents for every layer of ``model`` from a float run on ``calibration``
    (spike counts ``[T, B, n_in]``)."""
    if isinstance(operand_bits, bool) or not isinstance(operand_bits, int) or \
            not 2 <= operand_bits <= 16:
        raise ValueError(f"operand_bits must be an integer in [2, 16], got {operand_bits!r}")
    refs = extract_layers(model)
    x_np = check_spikes(calibration, refs[0].n_in, "calibration")
    _check_params(refs)
    x = torch.as_tensor(x_np, dtype=torch.float64)
    levels = int(x_np.max()) if x_np.size else 1
    levels = max(levels, 1)
    if levels > 255:
        raise ValueError(f"calibration values go up to {levels}; input spikes carry at most 255")
    plans = []
    for ref in refs:
        if ref.amsu is not None:
            s, obs = _observe_amsu(ref.amsu, x)
        else:
            s, obs = _observe_lif(ref, x)
        plans.append(_plan_layer(ref, obs, levels, operand_bits))
        x, levels = s, ref.spike_levels
    return plans


def _check_params(refs: list[LayerRef]) -> None:
    for ref in refs:
        for name, t in (("weight", ref.weight()), ("bias", ref.bias()), ("beta", ref.beta()),
                        ("threshold", ref.threshold())) + (
                (("gamma", ref.gamma()), ("astro_gain", ref.gain())) if ref.astrocyte else ()):
            if t is not None and not bool(torch.isfinite(t).all()):
                raise ValueError(f"{ref.name}: parameter {name} contains NaN or Inf")
        if bool((ref.threshold() <= 0).any()):
            raise ValueError(f"{ref.name}: thresholds must be positive")


# ----------------------------------------------------------------- integer parameters

def _weight_mantissas(W: Tensor, e: int, counts: dict, key: str) -> Tensor:
    scaled = W * 2.0 ** (-e)
    m = 2 * ste_round(scaled / 2)
    counts[key] = counts.get(key, 0) + int((m.detach().abs() > _W_MAX).sum())
    return torch.clamp(m, -_W_MAX, _W_MAX)


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
                  num_message_bits=syn_bits, name=ref.name, **plan.shifts())
    scale.update({f"w{k}": v for k, v in plan.e_w.items()})
    du = bias = mant = exp = dH = gain = None
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
    static["scale"] = scale
    t = LayerTensors(None, Wq, bias, du, vth, dH=dH, gain=gain, surrogate=sg,
                     spike_scale=2.0 ** plan.e_u)
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
    assert np.array_equal(a, r), "integer parameter is not an integer"
    return r.astype(np.int64)


def _static_layer(static: dict, t: LayerTensors, bias_parts) -> object:
    """The frozen :mod:`neuromorphic.network` layer of ``(static, tensors)``."""
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
        for k in ("shift_k", "shift_v", "shift_q", "shift_kv", "shift_r", "shift_o"):
            kw[k] = 0
    return AMSULayer(syn, **kw)


# ----------------------------------------------------------------- QAT

class QATNetwork(nn.Module):
    """The integer network as a trainable module (fake quantization, STE).

    ``forward(x_seq)`` -> spikes of the last layer ``[T, B, N]`` (float tensor of the
    input's dtype), bit-identical to the integer reference; gradients reach the float
    parameters of ``model`` (which this module shares, so training it fine-tunes
    ``model`` in place). ``align=True`` compensates the network's latency (one step
    per synapse): the input is padded with ``latency`` silent steps and the first
    ``latency`` output steps are dropped, so output step ``t`` answers input step ``t``.
    """

    def __init__(self, model: nn.Module, plans: list[LayerPlan], input_levels: int) -> None:
        super().__init__()
        self.model = model
        self.plans = plans
        self.input_levels = input_levels
        self.last_counts: dict = {}

    @property
    def latency(self) -> int:
        return len(self.plans)

    def _tensors(self, counts: dict):
        out = []
        for i, plan in enumerate(self.plans):
            c = {}
            static, t, parts = layer_tensors(plan, c)
            counts[plan.ref.name] = c
            out.append((static, t, parts))
        return out

    def forward(self, x_seq: Tensor, align: bool = False, return_all: bool = False):
        if not isinstance(x_seq, Tensor):
            raise TypeError(f"x_seq must be a torch.Tensor, got {type(x_seq).__name__}")
        check_spikes(x_seq, self.plans[0].ref.n_in, "x_seq")
        dtype = x_seq.dtype if x_seq.is_floating_point() else torch.float32
        x = x_seq.to(torch.float64)
        if x.dim() == 2:
            x = x[:, None]
        if align:
            x = torch.cat([x, torch.zeros_like(x[: self.latency])], 0)
        counts: dict = {}
        layers = []
        for static, t, parts in self._tensors(counts):
            t.layer = _StaticView(static)
            layers.append(t)
        self.last_counts = counts
        spikes, states = network_forward(layers, x, record=return_all)
        if align:
            spikes = [s[self.latency:] for s in spikes]
        if return_all:
            return spikes, states
        return spikes[-1].to(dtype)

    @torch.no_grad()
    def export(self, meta: Optional[dict] = None, warn: bool = True) -> QuantizedNetwork:
        """The current parameters as a :class:`QuantizedNetwork` (integers frozen)."""
        counts: dict = {}
        layers = [_static_layer(static, t, parts) for static, t, parts in self._tensors(counts)]
        report = {name: {k: v for k, v in c.items() if v} for name, c in counts.items()}
        report = {k: v for k, v in report.items() if v}
        if warn and report:
            warnings.warn(SaturationWarning(
                f"quantization clamped parameters to their widths: {report}"), stacklevel=3)
        m = dict(meta or {})
        m.setdefault("source", type(self.model).__name__)
        m["parameter_clamps"] = report
        m["calibration_maxima"] = {p.ref.name: p.observed for p in self.plans}
        return QuantizedNetwork(tuple(layers), input_size=self.plans[0].ref.n_in,
                                input_levels=self.input_levels, dt=_model_dt(self.plans), meta=m)


class _StaticView:
    """Attribute access to a layer's static fields for :mod:`neuromorphic.torch_view`."""

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


def _model_dt(plans: list[LayerPlan]) -> float:
    m = plans[0].ref.amsu or plans[0].ref.lif
    return float(getattr(m, "dt", 1.0))


def prepare_qat(model: nn.Module, calibration, operand_bits: int = 8) -> QATNetwork:
    """Calibrate exponents on ``calibration`` spikes and wrap ``model`` for QAT."""
    plans = calibrate(model, calibration, operand_bits)
    return QATNetwork(model, plans, plans[0].in_levels)


def quantize(model: nn.Module, calibration=None, operand_bits: int = 8,
             check_saturation: bool = True, meta: Optional[dict] = None) -> QuantizedNetwork:
    """Post-training quantization, or the export of a :class:`QATNetwork`.

    ``quantize(model, calibration=x_seq)``: calibrate on ``x_seq`` (spike counts
    ``[T, B, n_in]``) and convert. ``quantize(qat)``: export the fine-tuned integers
    (its calibration is reused; pass ``calibration`` to also count saturations on it).
    With ``check_saturation`` the integer reference runs on the calibration data and
    a :class:`SaturationWarning` reports every state that had to be clamped.
    """
    if isinstance(model, QATNetwork):
        qat = model
    else:
        if calibration is None:
            raise ValueError("quantize(model) needs calibration=x_seq (input spikes [T, B, "
                             "n_in]) to choose the integer scales; or pass a QATNetwork")
        qat = prepare_qat(model, calibration, operand_bits)
    qnet = qat.export(meta=meta)
    if check_saturation and calibration is not None:
        from neuromorphic import reference

        x = check_spikes(calibration, qnet.input_size, "calibration")
        if x.max(initial=0) > qnet.input_levels:
            raise ValueError(f"calibration values reach {x.max()} but the network was "
                             f"calibrated for inputs up to {qnet.input_levels}")
        out = reference.run(qnet, x, record_states=False, count_saturation=True)
        sat = {layer.name or f"layer{i}": {k: v for k, v in c.items() if v}
               for i, (layer, c) in enumerate(zip(qnet.layers, out.saturation))}
        sat = {k: v for k, v in sat.items() if v}
        qnet.meta["calibration_saturation"] = sat
        if sat:
            warnings.warn(SaturationWarning(
                f"on the calibration data, the integer network clamped states to their "
                f"widths (counts of clamped values): {sat}"), stacklevel=2)
    return qnet
