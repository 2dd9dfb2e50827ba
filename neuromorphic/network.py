"""The integer network: what a quantized AM-SU / LIF network *is*, field by field.

A :class:`QuantizedNetwork` is a chain of layers; every layer is a synapse (a Lava
``Dense``: 8-bit weight mantissas, a shared exponent, a one-step delay) followed by
a neuron population:

* :class:`AMSULayer`: the integer AM-SU (membrane ``u`` and astrocyte state ``H``),
  run on Lava by this package's own ``AMSUNeuron`` process;
* :class:`LIFLayer`: Lava's stock ``LIF`` (current ``u``, voltage ``v``), used for
  ``Linear + LIF`` layers whose semantics it matches exactly.

Every field, its width and its range is listed in docs/neuromorphic.md; the
constants below are the single source of those numbers. Construction validates
everything (:meth:`QuantizedNetwork.validate`), so a network object that exists is
one that the reference, the torch view and Lava can all run exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Optional, Union

import numpy as np

from astro_neuron.functional.amsu import projection_parts

__all__ = [
    "STATE_BITS", "STATE_MAX", "DECAY_SHIFT", "DECAY_UNITY", "VTH_BITS", "VTH_SHIFT",
    "ACT_SHIFT", "BIAS_MANT_BITS", "BIAS_EXP_MAX", "GAIN_BITS", "WEIGHT_EXP_RANGE",
    "SHIFT_RANGE", "OPERAND_BITS_RANGE", "MAX_LEVELS", "SIGN_MODES", "RESETS",
    "Synapse", "AMSULayer", "LIFLayer", "Layer", "QuantizedNetwork", "message_bits",
]

# ----------------------------------------------------------------- widths (docs/neuromorphic.md)
STATE_BITS = 24                    # u, v, H, r, o: signed 24-bit
STATE_MAX = 2 ** (STATE_BITS - 1) - 1
DECAY_SHIFT = 12                   # decays are 12-bit: x * (4096 - d) >> 12, toward zero
DECAY_UNITY = 1 << DECAY_SHIFT
VTH_BITS = 17                      # threshold mantissa, unsigned; effective vth << 6
VTH_SHIFT = 6
ACT_SHIFT = 6                      # stock LIF: synaptic input << 6
BIAS_MANT_BITS = 13                # signed; effective bias = mant << exp
BIAS_EXP_MAX = 7                   # unsigned 3-bit
GAIN_BITS = 8                      # astrocyte gain, signed, symmetric
WEIGHT_EXP_RANGE = (-8, 7)         # Dense weight_exp (4-bit signed field)
SHIFT_RANGE = (-24, 40)            # requantization shifts of the AM-SU
OPERAND_BITS_RANGE = (2, 16)       # width of k, v, q before the products
MAX_LEVELS = 255                   # graded spikes / input values: at most 8 message bits
SIGN_MODES = ("mixed", "excitatory", "inhibitory")
RESETS = ("none", "subtract", "zero")
_EXACT_BITS = 52                   # every intermediate stays below 2**52 (float64-exact)


def message_bits(levels: int) -> int:
    """Lava ``num_message_bits`` for spikes in ``{0..levels}``: 0 means binary."""
    return 0 if levels <= 1 else int(levels).bit_length()


# ----------------------------------------------------------------- validation helpers

def _fail(msg: str) -> None:
    raise ValueError(msg)


def _int(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        _fail(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    value = int(value)
    if not lo <= value <= hi:
        _fail(f"{name} must lie in [{lo}, {hi}], got {value}")
    return value


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and int(value) in (0, 1):
        return bool(value)
    _fail(f"{name} must be a boolean, got {value!r}")


def _choice(name: str, value: Any, options: tuple) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str) or value not in options:
        _fail(f"{name} must be one of {list(options)}, got {value!r}")
    return value


def _array(name: str, value: Any, shape: tuple, lo: int, hi: int) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        _fail(f"{name} must be a numpy integer array, got {type(value).__name__}")
    if value.dtype.kind not in "iu":
        _fail(f"{name} must have an integer dtype, got {value.dtype}")
    if tuple(value.shape) != tuple(shape):
        _fail(f"{name} must have shape {list(shape)}, got {list(value.shape)}")
    if value.size:
        vmin, vmax = int(value.min()), int(value.max())
        if vmin < lo or vmax > hi:
            bad = vmin if vmin < lo else vmax
            _fail(f"{name} must lie in [{lo}, {hi}], got a value {bad}")
    out = value.astype(np.int64)
    out.setflags(write=False)
    return out


def _bits(x: int) -> int:
    return int(abs(int(x))).bit_length()


# ----------------------------------------------------------------- the synapse

@dataclass(frozen=True, eq=False)
class Synapse:
    """A Lava ``Dense`` connection, exactly as its bit-accurate model runs it.

    ``weight`` ``[n_rows, n_in]`` are the integers handed to ``Dense`` (8-bit
    mantissas; in ``"mixed"`` sign mode Lava keeps them in ``[-256, 255]`` and drops
    the lowest bit, so the quantizer writes even values). At each step the Dense
    sends the previous step's accumulation (a one-step delay) and accumulates
    ``W @ s_in`` shifted by ``weight_exp`` (left if > 0, arithmetic right otherwise).
    ``num_message_bits == 0``: binary input (any non-zero counts as 1); else graded.
    """

    weight: np.ndarray
    weight_exp: int = 0
    sign_mode: str = "mixed"
    num_weight_bits: int = 8
    num_message_bits: int = 0

    def validate(self, where: str, n_rows: int, n_in: int) -> "Synapse":
        sign = _choice(f"{where}/sign_mode", self.sign_mode, SIGN_MODES)
        lo, hi = {"mixed": (-256, 255), "excitatory": (0, 255), "inhibitory": (-255, 0)}[sign]
        w = _array(f"{where}/weight", self.weight, (n_rows, n_in), lo, hi)
        return Synapse(
            weight=w,
            weight_exp=_int(f"{where}/weight_exp", self.weight_exp, *WEIGHT_EXP_RANGE),
            sign_mode=sign,
            num_weight_bits=_int(f"{where}/num_weight_bits", self.num_weight_bits, 1, 8),
            num_message_bits=_int(f"{where}/num_message_bits", self.num_message_bits, 0, 8))

    def effective_weight(self) -> np.ndarray:
        """The weights Lava's Dense actually uses: clipped to 8 bits by sign mode, then
        ``8 - num_weight_bits (+1 if mixed)`` low bits dropped (``lava.utils.weightutils``)."""
        w = np.asarray(self.weight, dtype=np.int64)
        lo, hi = {"mixed": (-256, 255), "excitatory": (0, 255),
                  "inhibitory": (-255, 0)}[self.sign_mode]
        w = np.clip(w, lo, hi)
        drop = 8 - self.num_weight_bits + (self.sign_mode == "mixed")
        if self.sign_mode == "inhibitory":
            return -((-w >> drop) << drop)
        return (w >> drop) << drop

    def max_abs_output(self, in_levels: int) -> int:
        """Worst-case ``|a|`` sent to the neurons for inputs in ``{0..in_levels}``."""
        w = self.effective_weight()
        rows = np.abs(w).sum(axis=1) if w.size else np.zeros(1, np.int64)
        acc = int(rows.max(initial=0)) * (in_levels if self.num_message_bits else 1)
        return acc << self.weight_exp if self.weight_exp > 0 else acc


# ----------------------------------------------------------------- layers

@dataclass(frozen=True, eq=False)
class AMSULayer:
    """One integer AM-SU layer (neuron fields; see docs/neuromorphic.md, "AM-SU").

    Shapes: ``N = n_neurons``, ``A = n_astrocytes``, ``dk = d_key``,
    ``dv = N / A``. The synapse has ``P`` rows: ``I`` (N, if ``neuron_path``) then
    ``K`` (A*dk), ``V`` (N), ``Q`` (A*dk) if ``astrocyte``. Unused fields are None.
    ``scale`` maps names to power-of-two exponents for reading states as floats
    (``u_float = u * 2**scale["u"]``); informational, not used by the dynamics.
    """

    synapse: Synapse
    n_neurons: int
    n_astrocytes: int = 1
    d_key: int = 1
    neuron_path: bool = True
    astrocyte: bool = True
    reset: str = "none"
    spike_levels: int = 1
    operand_bits: int = 8
    # membrane
    du: Optional[np.ndarray] = None          # [N] 12-bit decay
    bias_mant: Optional[np.ndarray] = None   # [N] signed 13-bit
    bias_exp: Optional[np.ndarray] = None    # [N] 0..7
    shift_i: int = 0
    # threshold
    vth: Optional[np.ndarray] = None         # [N] unsigned 17-bit; effective vth << 6
    # astrocyte
    shift_k: int = 0
    shift_v: int = 0
    shift_q: int = 0
    dH: Optional[np.ndarray] = None          # [A, dk] 12-bit decay
    shift_kv: int = 0
    shift_r: int = 0
    gain: Optional[np.ndarray] = None        # [N] signed 8-bit
    shift_o: int = 0
    name: str = ""
    scale: dict = field(default_factory=dict)

    kind = "amsu"

    @property
    def d_value(self) -> int:
        return self.n_neurons // self.n_astrocytes

    @property
    def parts(self) -> tuple[tuple[str, int], ...]:
        """Row blocks of the Dense output feeding this layer (as the float AM-SU's)."""
        return projection_parts(self.n_neurons, self.n_astrocytes, self.d_key,
                                self.neuron_path, self.astrocyte)

    @property
    def n_out(self) -> int:
        return self.n_neurons

    @property
    def state_names(self) -> tuple[str, ...]:
        return ("a",) + (("u",) if self.neuron_path else ()) + (("H",) if self.astrocyte else ())

    def state_shapes(self, batch: int) -> dict[str, tuple[int, ...]]:
        P = sum(n for _, n in self.parts)
        out = {"a": (batch, P)}
        if self.neuron_path:
            out["u"] = (batch, self.n_neurons)
        if self.astrocyte:
            out["H"] = (batch, self.n_astrocytes, self.d_key, self.d_value)
        return out

    def validate(self, where: str, n_in: int, in_levels: int) -> "AMSULayer":
        N = _int(f"{where}/neuron/n_neurons", self.n_neurons, 1, 1 << 20)
        A = _int(f"{where}/neuron/n_astrocytes", self.n_astrocytes, 1, N)
        if N % A:
            _fail(f"{where}/neuron/n_astrocytes ({A}) must divide n_neurons ({N})")
        dk = _int(f"{where}/neuron/d_key", self.d_key, 1, 1 << 14)
        npath = _bool(f"{where}/neuron/neuron_path", self.neuron_path)
        astro = _bool(f"{where}/neuron/astrocyte", self.astrocyte)
        if not (npath or astro):
            _fail(f"{where}/neuron: neuron_path and astrocyte are both off; the layer has no input")
        L = _int(f"{where}/neuron/spike_levels", self.spike_levels, 1, MAX_LEVELS)
        ob = _int(f"{where}/neuron/operand_bits", self.operand_bits, *OPERAND_BITS_RANGE)
        kw: dict[str, Any] = dict(
            n_neurons=N, n_astrocytes=A, d_key=dk, neuron_path=npath, astrocyte=astro,
            reset=_choice(f"{where}/neuron/reset", self.reset, RESETS), spike_levels=L,
            operand_bits=ob, name=str(self.name), scale=_scale(where, self.scale))
        nb = f"{where}/neuron"
        kw["vth"] = _array(f"{nb}/vth", self.vth, (N,), 0, (1 << VTH_BITS) - 1)
        smin, smax = SHIFT_RANGE
        if npath:
            kw["du"] = _array(f"{nb}/du", self.du, (N,), 0, DECAY_UNITY - 1)
            bm = 1 << (BIAS_MANT_BITS - 1)
            kw["bias_mant"] = _array(f"{nb}/bias_mant", self.bias_mant, (N,), -bm, bm - 1)
            kw["bias_exp"] = _array(f"{nb}/bias_exp", self.bias_exp, (N,), 0, BIAS_EXP_MAX)
            kw["shift_i"] = _int(f"{nb}/shift_i", self.shift_i, smin, smax)
        else:
            for name in ("du", "bias_mant", "bias_exp"):
                if getattr(self, name) is not None:
                    _fail(f"{nb}/{name} must be absent when neuron_path is off")
        if astro:
            for name in ("shift_k", "shift_v", "shift_q", "shift_kv", "shift_r", "shift_o"):
                kw[name] = _int(f"{nb}/{name}", getattr(self, name), smin, smax)
            kw["dH"] = _array(f"{nb}/dH", self.dH, (A, dk), 0, DECAY_UNITY - 1)
            gm = (1 << (GAIN_BITS - 1)) - 1
            kw["gain"] = _array(f"{nb}/gain", self.gain, (N,), -gm, gm)
        else:
            for name in ("dH", "gain"):
                if getattr(self, name) is not None:
                    _fail(f"{nb}/{name} must be absent when the astrocyte is off")
        P = (N if npath else 0) + ((2 * A * dk + N) if astro else 0)
        kw["synapse"] = self.synapse.validate(f"{where}/synapse", P, n_in) \
            if isinstance(self.synapse, Synapse) else _fail(f"{where}/synapse is missing")
        if (kw["synapse"].num_message_bits == 0) != (in_levels <= 1) or \
                (in_levels > 1 and (1 << kw["synapse"].num_message_bits) <= in_levels):
            _fail(f"{where}/synapse/num_message_bits ({kw['synapse'].num_message_bits}) does "
                  f"not carry the layer's input values 0..{in_levels}")
        layer = AMSULayer(**kw)
        layer._check_exact(where, in_levels)
        return layer

    def _check_exact(self, where: str, in_levels: int) -> None:
        """Every intermediate value must stay below 2**52 (exact in int64 *and* float64)."""
        amax = self.synapse.max_abs_output(in_levels)
        worst = {"synaptic input": amax}
        if self.neuron_path:
            worst["I = shr(a_I, shift_i)"] = amax << max(0, -self.shift_i)
        if self.astrocyte:
            op = 1 << (self.operand_bits - 1)
            worst["operand shr(a, shift)"] = amax << max(0, -min(self.shift_k, self.shift_v,
                                                                 self.shift_q))
            worst["k v^T shifted"] = (op * op) << max(0, -self.shift_kv)
            worst["H^T q"] = self.d_key * STATE_MAX * op
            worst["r * gain shifted"] = (STATE_MAX << GAIN_BITS) << max(0, -self.shift_o)
        for what, value in worst.items():
            if _bits(value) > _EXACT_BITS:
                _fail(f"{where}: the worst case of {what} needs {_bits(value)} bits (> "
                      f"{_EXACT_BITS}); reduce the weights' range or the shifts")


@dataclass(frozen=True, eq=False)
class LIFLayer:
    """A stock Lava ``LIF`` population behind a ``Dense`` (bit-accurate model).

    Per step (``lava/proc/lif/models.py``, ``PyLifModelBitAcc``)::

        u = wrap24(rtz(u * (4096 - (du + 1)) / 4096) + (a << 6))
        v = sat24(rtz(v * (4096 - dv) / 4096) + u + (bias_mant << bias_exp))
        s = v > (vth << 6);  v[s] = 0

    ``du``, ``dv``, ``vth`` are shared by the population (Lava's LIF has one of each).
    """

    synapse: Synapse
    n_neurons: int
    du: int = 4095
    dv: int = 0
    vth: int = 1
    bias_mant: Optional[np.ndarray] = None   # [N]
    bias_exp: Optional[np.ndarray] = None    # [N]
    name: str = ""
    scale: dict = field(default_factory=dict)

    kind = "lif"
    spike_levels = 1
    reset = "zero"

    @property
    def n_out(self) -> int:
        return self.n_neurons

    @property
    def state_names(self) -> tuple[str, ...]:
        return ("a", "u", "v")

    def state_shapes(self, batch: int) -> dict[str, tuple[int, ...]]:
        N = self.n_neurons
        return {"a": (batch, N), "u": (batch, N), "v": (batch, N)}

    def validate(self, where: str, n_in: int, in_levels: int) -> "LIFLayer":
        nb = f"{where}/neuron"
        N = _int(f"{nb}/n_neurons", self.n_neurons, 1, 1 << 20)
        bm = 1 << (BIAS_MANT_BITS - 1)
        kw = dict(
            n_neurons=N,
            du=_int(f"{nb}/du", self.du, 0, DECAY_UNITY - 1),
            dv=_int(f"{nb}/dv", self.dv, 0, DECAY_UNITY - 1),
            vth=_int(f"{nb}/vth", self.vth, 0, (1 << VTH_BITS) - 1),
            bias_mant=_array(f"{nb}/bias_mant", self.bias_mant, (N,), -bm, bm - 1),
            bias_exp=_array(f"{nb}/bias_exp", self.bias_exp, (N,), 0, BIAS_EXP_MAX),
            name=str(self.name), scale=_scale(where, self.scale))
        if not isinstance(self.synapse, Synapse):
            _fail(f"{where}/synapse is missing")
        kw["synapse"] = self.synapse.validate(f"{where}/synapse", N, n_in)
        if (kw["synapse"].num_message_bits == 0) != (in_levels <= 1):
            _fail(f"{where}/synapse/num_message_bits ({kw['synapse'].num_message_bits}) does "
                  f"not match the layer's input values 0..{in_levels}")
        layer = LIFLayer(**kw)
        amax = layer.synapse.max_abs_output(in_levels)
        if _bits(amax << ACT_SHIFT) > 31:
            _fail(f"{where}: the worst-case synaptic input << 6 needs "
                  f"{_bits(amax << ACT_SHIFT)} bits; Lava's LIF holds it in int32")
        return layer


Layer = Union[AMSULayer, LIFLayer]
LAYER_TYPES = {"amsu": AMSULayer, "lif": LIFLayer}


def _scale(where: str, scale: Any) -> dict:
    if not isinstance(scale, dict):
        _fail(f"{where}/scale must be a dict of integer exponents, got {type(scale).__name__}")
    return {str(k): _int(f"{where}/scale/{k}", v, -128, 128) for k, v in scale.items()}


# ----------------------------------------------------------------- the network

@dataclass(frozen=True, eq=False)
class QuantizedNetwork:
    """A chain of integer layers: input spikes -> layer 0 -> layer 1 -> ...

    ``input_levels``: input values are spike counts in ``{0..input_levels}`` (1:
    binary). ``dt``: the time step of the float model it came from (in that model's
    time unit). ``latency``: every synapse delays by one step, so the last layer's
    response to input step ``t`` appears at step ``t + latency``. ``meta`` holds
    JSON-able notes (source, calibration report); the dynamics never read it.
    """

    layers: tuple
    input_size: int
    input_levels: int = 1
    dt: float = 1.0
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if not isinstance(self.layers, (tuple, list)) or not self.layers:
            _fail("layers must be a non-empty sequence of AMSULayer / LIFLayer")
        n_in = _int("input_size", self.input_size, 1, 1 << 20)
        levels = _int("input_levels", self.input_levels, 1, MAX_LEVELS)
        if isinstance(self.layers, list):
            object.__setattr__(self, "layers", tuple(self.layers))
        dt = self.dt
        if isinstance(dt, (bool, np.bool_)) or not isinstance(dt, (int, float, np.floating)) \
                or not np.isfinite(dt) or dt <= 0:
            _fail(f"dt must be a positive finite number, got {dt!r}")
        if not isinstance(self.meta, dict):
            _fail(f"meta must be a dict, got {type(self.meta).__name__}")
        checked = []
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, (AMSULayer, LIFLayer)):
                _fail(f"layers/{i} must be an AMSULayer or LIFLayer, got {type(layer).__name__}")
            layer = layer.validate(f"layers/{i}", n_in, levels)
            checked.append(layer)
            n_in, levels = layer.n_out, layer.spike_levels
        object.__setattr__(self, "layers", tuple(checked))
        object.__setattr__(self, "input_size", int(self.input_size))
        object.__setattr__(self, "input_levels", int(self.input_levels))
        object.__setattr__(self, "dt", float(dt))

    @property
    def latency(self) -> int:
        return len(self.layers)

    @property
    def output_size(self) -> int:
        return self.layers[-1].n_out

    def replace(self, **kw) -> "QuantizedNetwork":
        return replace(self, **kw)

    def summary(self) -> str:
        lines = [f"QuantizedNetwork: input {self.input_size} (values 0..{self.input_levels}), "
                 f"{len(self.layers)} layer(s), latency {self.latency} step(s), dt={self.dt}"]
        for i, l in enumerate(self.layers):
            syn = l.synapse
            head = f"  [{i}] {l.kind:<4} {l.name or '':<10} N={l.n_neurons:<5}"
            if isinstance(l, AMSULayer):
                head += (f" A={l.n_astrocytes} d_key={l.d_key} astrocyte={l.astrocyte} "
                         f"reset={l.reset} levels={l.spike_levels}")
            else:
                head += f" du={l.du} dv={l.dv} vth={l.vth}"
            head += f"  Dense {list(syn.weight.shape)} exp={syn.weight_exp} {syn.sign_mode}"
            lines.append(head)
        return "\n".join(lines)

    def equals(self, other: "QuantizedNetwork") -> bool:
        """Same structure and every integer equal (meta ignored)."""
        from neuromorphic.fileio import canonical_digest
        return canonical_digest(self) == canonical_digest(other)
