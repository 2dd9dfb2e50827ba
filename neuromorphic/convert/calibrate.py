"""Calibration: a float run of the model on spike inputs picks, per layer, the
power-of-two exponent of every quantity (weights per row block, membrane, operands
k/v/q, astrocyte state, read-out, gain) so that the observed range fits its width with
one bit of headroom (operands: no headroom, they saturate). docs/neuromorphic.md,
"From float to integer", lists the rules. The float run is the one AM-SU definition
(:mod:`astro_neuron.functional`: ``project`` then ``dynamics_step``) and the one LIF
step, in float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import Tensor, nn

from astro_neuron import validate
from astro_neuron.functional.amsu import (
    AMSUParams, delay_line, dynamics_step, init_state, project, sense,
)
from astro_neuron.functional.lif import lif_step
from astro_neuron.functional.scan import astro_read
from neuromorphic.convert.graph import LayerRef, extract_layers
from neuromorphic.spec import (
    ACT_SHIFT, GAIN_BITS, MAX_LEVELS, OPERAND_BITS_RANGE, SHIFT_RANGE, STATE_MAX, TAP_MAX,
    WEIGHT_EXP_RANGE, check_spikes,
)

__all__ = ["LayerPlan", "calibrate", "check_params", "W_MAX"]

W_MAX = 254           # even weight mantissas in [-254, 254]: every Dense sign mode keeps them
_HEADROOM = 2.0       # states: one bit of headroom over the calibrated maximum


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
    # the delay line (conv_size > 1): its inputs x_k, x_v and its taps per block K, V
    conv_size: int = 1
    e_xk: int = 0
    e_xv: int = 0
    e_c: dict = field(default_factory=dict)
    # sensing="relu2": the squares max(k, 0)^2, max(q, 0)^2 as operands
    square: bool = False
    e_k2: int = 0
    e_q2: int = 0

    def shifts(self) -> dict:
        """Requantization shifts of the AM-SU (docs/neuromorphic.md). With the delay line,
        ``shift_k``/``shift_v`` bring the synaptic input to the line's inputs and
        ``shift_ck``/``shift_cv`` its tap-weighted sums to the operands ``k``, ``v``."""
        line = self.conv_size > 1
        e_in_k, e_in_v = (self.e_xk, self.e_xv) if line else (self.e_k, self.e_v)
        # the operands of the products: k, q, or with the square (sensing="relu2") k2, q2
        e_op_k, e_op_q = (self.e_k2, self.e_q2) if self.square else (self.e_k, self.e_q)
        return dict(shift_i=self.e_u - self.e_w.get("I", 0),
                    shift_k=e_in_k - self.e_w.get("K", 0),
                    shift_v=e_in_v - self.e_w.get("V", 0),
                    shift_q=self.e_q - self.e_w.get("Q", 0),
                    shift_kv=self.e_H - e_op_k - self.e_v,
                    shift_r=self.e_r - self.e_H - e_op_q,
                    shift_o=self.e_u - self.e_r - self.e_g,
                    shift_ck=self.e_k - self.e_c.get("K", 0) - self.e_xk if line else 0,
                    shift_cv=self.e_v - self.e_c.get("V", 0) - self.e_xv if line else 0,
                    shift_k2=self.e_k2 - 2 * self.e_k if self.square else 0,
                    shift_q2=self.e_q2 - 2 * self.e_q if self.square else 0)


def _amax(t: Optional[Tensor]) -> float:
    return 0.0 if t is None or t.numel() == 0 else float(t.detach().abs().max())


@torch.no_grad()
def _observe_amsu(m, x: Tensor) -> tuple[Tensor, dict]:
    """Float64 run of an AMSU layer; returns (spikes, maxima of every quantity)."""
    spec = m.spec
    p = AMSUParams(*(None if t is None else t.detach().double() for t in m.params()))
    T, B = x.shape[:2]
    I, k, v, q = project(x, p, spec)
    obs = {"I": _amax(I)}
    ks, vs, qs = k, v, q      # the operands the astrocyte senses: after the line and the ReLU
    if spec.astrocyte:
        if spec.conv_size > 1 and T:     # the delay line's inputs, then its outputs
            obs.update(xk=_amax(k), xv=_amax(v))
            line0 = torch.zeros(B, spec.conv_size - 1, spec.d_conv, dtype=torch.float64)
            ks, vs, _ = delay_line(k, v, line0, p.conv, spec)
        if spec.sensing == "relu2":      # k, q >= 0 before the square, then the squares
            obs.update(k=_amax(torch.relu(ks)), q=_amax(torch.relu(q)))
            ks, qs = sense(ks, q, spec)
            obs.update(k2=_amax(ks), q2=_amax(qs), v=_amax(vs))
        else:
            ks, qs = sense(ks, q, spec)  # sensing="relu": k, q >= 0, ranges from 0 up
            obs.update(k=_amax(ks), v=_amax(vs), q=_amax(qs))
    state = init_state(spec, B, dtype=torch.float64)
    H_max = r_max = u_max = o_max = y_max = 0.0
    spikes = []
    at = lambda z, t: None if z is None else z[t]   # noqa: E731
    for t in range(T):   # from the projections: the step runs the line and the ReLU itself
        out, state = dynamics_step(at(I, t), at(k, t), at(v, t), at(q, t), state, p, spec)
        spikes.append(out.spikes)
        u_max = max(u_max, _amax(out.u))
        o_max = max(o_max, _amax(out.o))
        y_max = max(y_max, _amax(out.u + out.o))
        if spec.astrocyte:
            H_max = max(H_max, _amax(state.H))
            r_max = max(r_max, _amax(astro_read(state.H, qs[t])))
    obs.update(u=u_max, o=o_max, y=y_max, H=H_max, r=r_max)
    return torch.stack(spikes), obs


@torch.no_grad()
def _observe_lif(ref: LayerRef, x: Tensor) -> tuple[Tensor, dict]:
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
        e_w[name] = _exp_for(_amax(W[start:start + n]), W_MAX)
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
        if ref.sensing == "relu2":       # the squares, requantized to operands
            plan.square = True
            plan.e_k2 = _exp_for(obs["k2"], lim)
            plan.e_q2 = _exp_for(obs["q2"], lim)
        if ref.conv_size > 1:
            plan.conv_size = ref.conv_size
            plan.e_xk = _exp_for(obs["xk"], lim)
            plan.e_xv = _exp_for(obs["xv"], lim)
            taps = ref.conv().detach().double()
            n_k = ref.n_astrocytes * ref.d_key
            plan.e_c = {"K": _exp_for(_amax(taps[:, :n_k]), TAP_MAX),
                        "V": _exp_for(_amax(taps[:, n_k:]), TAP_MAX)}
        plan.e_H = _exp_for(obs["H"], STATE_MAX, _HEADROOM)
        plan.e_r = _exp_for(obs["r"], STATE_MAX, _HEADROOM)
        plan.e_g = _exp_for(_amax(ref.gain()), (1 << (GAIN_BITS - 1)) - 1)
    lo, hi = SHIFT_RANGE
    for name, value in plan.shifts().items():
        used = {"shift_i": ref.neuron_path, "shift_ck": plan.conv_size > 1,
                "shift_cv": plan.conv_size > 1, "shift_k2": plan.square,
                "shift_q2": plan.square}.get(name, ref.astrocyte)
        if used and not lo <= value <= hi:
            raise ValueError(
                f"{ref.name}: {name} = {value} is outside [{lo}, {hi}]: the layer's value ranges "
                f"(observed {plan.observed}) are too far apart for 24-bit states; check the "
                "calibration data or the trained parameters")
    return plan


def calibrate(model: nn.Module, calibration, operand_bits: int = 8) -> list[LayerPlan]:
    """Exponents for every layer of ``model`` from a float run on ``calibration``
    (spike counts ``[T, B, n_in]``). Refuses non-finite parameters and non-finite
    activations of the float run, naming the layer and the tensor."""
    operand_bits = validate.int_in_range("operand_bits", operand_bits, *OPERAND_BITS_RANGE)
    refs = extract_layers(model)
    x_np = check_spikes(calibration, refs[0].n_in, "calibration")
    check_params(refs)
    x = torch.as_tensor(x_np, dtype=torch.float64)
    levels = max(int(x_np.max()) if x_np.size else 1, 1)
    if levels > MAX_LEVELS:
        raise ValueError(f"calibration values go up to {levels}; input spikes carry at most "
                         f"{MAX_LEVELS}")
    plans = []
    for ref in refs:
        if ref.amsu is not None:
            s, obs = _observe_amsu(ref.amsu, x)
        else:
            s, obs = _observe_lif(ref, x)
        bad = sorted(k for k, v in obs.items() if not math.isfinite(v))
        if bad:
            raise ValueError(f"{ref.name}: the float run on the calibration data gives "
                             f"non-finite activations ({', '.join(bad)} reach NaN or Inf); the "
                             "model overflows float64 on these inputs and cannot be quantized")
        plans.append(_plan_layer(ref, obs, levels, operand_bits))
        x, levels = s, ref.spike_levels
    return plans


def check_params(refs: list[LayerRef]) -> None:
    """Every float parameter finite (named in the error), thresholds positive."""
    for ref in refs:
        for name, t in (("weight", ref.weight()), ("bias", ref.bias()), ("beta", ref.beta()),
                        ("threshold", ref.threshold())) + (
                (("gamma", ref.gamma()), ("astro_gain", ref.gain()), ("conv", ref.conv()))
                if ref.astrocyte else ()):
            if t is not None and not bool(torch.isfinite(t).all()):
                raise ValueError(f"{ref.name}: parameter {name} contains NaN or Inf")
        if bool((ref.threshold() <= 0).any()):
            raise ValueError(f"{ref.name}: thresholds must be positive")


# ----------------------------------------------------------------- integer parameters
