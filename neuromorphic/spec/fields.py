"""Every field of an integer layer, declared once.

A :class:`Field` says what a quantity is called, how it is held (``kind``), its width,
its shape as a function of the layer's sizes, its range, when it exists and what it
means. Everything that handles a layer reads these tables instead of listing fields
again: construction and validation (:mod:`neuromorphic.spec.network`), the canonical
content and its checksum, the HDF5 file (:mod:`neuromorphic.fileio`), the JSON export
(:func:`neuromorphic.spec.network.to_dict`) and the Lava process's Vars
(``AMSUNeuron``). Adding a field to a layer = one entry here + the engines' use of it.

The order of each table is the order of the file and of the checksum: append new
fields at the end of their kind, never reorder (old files' checksums depend on it).

Sizes (the names a shape is written in): ``N`` neurons, ``A`` astrocytes, ``dk`` key
width, ``dv = N / A`` value width, ``P`` synapse rows, ``n_in`` inputs, ``B`` batch,
``nc`` taps of the delay line (``conv_size``), ``lags = nc - 1`` the values it holds,
``dc = A * dk + N`` its channels (the K | V operands).

``when`` names a flag of the layer or a condition derived from its fields
(``delay_line``: the astrocyte is on and ``conv_size > 1``; ``square``: the astrocyte is
on and ``sensing == "relu2"``). ``since``: the first file format version that has the
field; a file of an older version does not store it and it reads as its default (an old
file is a network without delay line, one of version 1 or 2 a network with ``sensing =
"identity"``, one of version 1 to 3 a network without the square's shifts).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from astro_neuron import validate
from neuromorphic.spec.widths import (
    BIAS_EXP_BITS, BIAS_EXP_MAX, BIAS_MANT_BITS, DECAY_SHIFT, DECAY_UNITY, GAIN_BITS,
    MAX_CONV_SIZE, MAX_LEVELS, MAX_UNITS, OPERAND_BITS_RANGE, RESETS, SENSINGS, SHIFT_RANGE,
    SIGN_MODES, STATE_BITS, TAP_BITS, TAP_MAX, VTH_BITS, VTH_SHIFT, WEIGHT_BITS,
    WEIGHT_EXP_RANGE,
)

__all__ = ["Field", "State", "REQUIRED", "AMSU_FIELDS", "LIF_FIELDS", "SYNAPSE_FIELDS",
           "AMSU_STATES", "LIF_STATES", "FIELDS", "STATES", "BITS", "BITS_SINCE", "bits_for",
           "by_kind", "field_map",
           "check_int", "check_flag", "check_choice", "check_array", "shape_of"]

REQUIRED = object()   # a field without a default (must be given)


@dataclass(frozen=True)
class Field:
    """One field of a layer.

    ``kind``: ``"int"`` (a scalar), ``"flag"`` (a boolean, stored as 0/1), ``"choice"``
    (a string out of ``options``), ``"array"`` (an integer array of ``shape``).
    ``lo``/``hi``: the range of an int or of every element of an array. ``bits``: the
    width on the hardware (Lava's ``precision``); ``None`` where the quantity is not a
    register (sizes, flags). ``when``: the flag that must be on for the field to exist
    (``None``: always); an int of an absent part is held at its default, a choice of an
    absent part must be its default, an array of an absent part must be ``None``.
    ``file_dtype``: the dtype of its HDF5 dataset.
    """

    name: str
    kind: str
    meaning: str
    lo: int = 0
    hi: int = 0
    shape: tuple = ()
    bits: Optional[int] = None
    when: Optional[str] = None
    options: tuple = ()
    default: Any = None
    file_dtype: str = "int32"
    since: int = 1

    def range_text(self) -> str:
        if self.kind == "choice":
            return " | ".join(self.options)
        if self.kind == "flag":
            return "0 | 1"
        return f"[{self.lo}, {self.hi}]"


@dataclass(frozen=True)
class State:
    """A state a layer keeps between steps (what the engines record), shape with ``B``."""

    name: str
    shape: tuple
    meaning: str
    when: Optional[str] = None


_DECAY = (0, DECAY_UNITY - 1)
_BIAS = (-(1 << (BIAS_MANT_BITS - 1)), (1 << (BIAS_MANT_BITS - 1)) - 1)
_GAIN = (1 << (GAIN_BITS - 1)) - 1
_VTH = (0, (1 << VTH_BITS) - 1)


def _shift(name: str, when: str, what: str, since: int = 1) -> Field:
    return Field(name, "int", f"requantizing shift of {what} (right, rounding half up; "
                              "negative: left)", *SHIFT_RANGE, when=when, default=0,
                 since=since)


# The integer AM-SU (docs/neuromorphic.md, "AM-SU step"), in file/checksum order per kind.
AMSU_FIELDS: tuple[Field, ...] = (
    Field("n_neurons", "int", "neurons N", 1, MAX_UNITS, default=REQUIRED),
    Field("n_astrocytes", "int", "astrocytes A (divides N)", 1, MAX_UNITS, default=1),
    Field("d_key", "int", "key width dk of an astrocyte", 1, 1 << 14, default=1),
    Field("spike_levels", "int", "spikes take values 0..L", 1, MAX_LEVELS, default=1),
    Field("operand_bits", "int", "width of the operands k, v, q", *OPERAND_BITS_RANGE,
          default=8),
    _shift("shift_i", "neuron_path", "the input current I"),
    _shift("shift_k", "astrocyte", "the key k"),
    _shift("shift_v", "astrocyte", "the value v"),
    _shift("shift_q", "astrocyte", "the query q"),
    _shift("shift_kv", "astrocyte", "k v^T"),
    _shift("shift_r", "astrocyte", "the read-out H^T q"),
    _shift("shift_o", "astrocyte", "r * gain"),
    Field("neuron_path", "flag", "the membrane u is on", default=True),
    Field("astrocyte", "flag", "the astrocyte H is on", default=True),
    Field("reset", "choice", "what a spike does to u", options=RESETS, default="none"),
    Field("du", "array", "membrane decay (x * (4096 - du) >> 12)", *_DECAY, ("N",),
          DECAY_SHIFT, "neuron_path"),
    Field("bias_mant", "array", "bias mantissa (bias = mant << exp)", *_BIAS, ("N",),
          BIAS_MANT_BITS, "neuron_path"),
    Field("bias_exp", "array", "bias exponent", 0, BIAS_EXP_MAX, ("N",), BIAS_EXP_BITS,
          "neuron_path"),
    Field("vth", "array", "threshold mantissa (effective vth << 6)", *_VTH, ("N",), VTH_BITS),
    Field("dH", "array", "astrocyte decay per (astrocyte, key)", *_DECAY, ("A", "dk"),
          DECAY_SHIFT, "astrocyte"),
    Field("gain", "array", "read-out gain", -_GAIN, _GAIN, ("N",), GAIN_BITS, "astrocyte"),
    # the pre-synaptic delay line on k and v (format 2; docs/neuromorphic.md, "Delay line")
    Field("conv_size", "int", "taps of the delay line on k, v (1: none)", 1, MAX_CONV_SIZE,
          when="astrocyte", default=1, since=2),
    _shift("shift_ck", "delay_line", "the delay line's key sum", since=2),
    _shift("shift_cv", "delay_line", "the delay line's value sum", since=2),
    Field("conv_taps", "array", "delay-line tap mantissas (row j: lag j; columns K | V)",
          -TAP_MAX, TAP_MAX, ("nc", "dc"), TAP_BITS, "delay_line", since=2),
    # what the astrocyte senses (format 3; docs/neuromorphic.md, "Non-negative sensing")
    Field("sensing", "choice", "k, q as they are, max(k, 0), max(q, 0) after the delay "
          "line, their squares (relu2, format 4), or max(k, 0) with q signed (relu-key, "
          "format 5)", when="astrocyte", options=SENSINGS,
          default="identity", since=3),
    # the squares of sensing="relu2" requantized to operands (format 4; docs/neuromorphic.md,
    # "Squared sensing")
    _shift("shift_k2", "square", "the squared key max(k, 0)^2", since=4),
    _shift("shift_q2", "square", "the squared query max(q, 0)^2", since=4),
)

# Lava's stock LIF (PyLifModelBitAcc); du, dv, vth shared by the population.
LIF_FIELDS: tuple[Field, ...] = (
    Field("n_neurons", "int", "neurons N", 1, MAX_UNITS, default=REQUIRED),
    Field("du", "int", "current decay (Lava adds 1: x * (4096 - (du + 1)) >> 12)", *_DECAY,
          bits=DECAY_SHIFT, default=DECAY_UNITY - 1),
    Field("dv", "int", "voltage decay", *_DECAY, bits=DECAY_SHIFT, default=0),
    Field("vth", "int", "threshold mantissa (effective vth << 6)", *_VTH, bits=VTH_BITS,
          default=1),
    Field("bias_mant", "array", "bias mantissa (bias = mant << exp)", *_BIAS, ("N",),
          BIAS_MANT_BITS),
    Field("bias_exp", "array", "bias exponent", 0, BIAS_EXP_MAX, ("N",), BIAS_EXP_BITS),
)

# Lava's Dense. The weight's range depends on sign_mode (Synapse.validate).
SYNAPSE_FIELDS: tuple[Field, ...] = (
    Field("weight", "array", "weight mantissas, rows I | K | V | Q", -256, 255, ("P", "n_in"),
          WEIGHT_BITS, file_dtype="int16", default=REQUIRED),
    Field("weight_exp", "int", "shared weight exponent", *WEIGHT_EXP_RANGE, default=0),
    Field("num_weight_bits", "int", "weight bits Dense keeps", 1, WEIGHT_BITS, default=8),
    Field("num_message_bits", "int", "input message bits (0: binary)", 0, 8, default=0),
    Field("sign_mode", "choice", "weight signs", options=SIGN_MODES, default="mixed"),
)

AMSU_STATES: tuple[State, ...] = (
    State("a", ("B", "P"), "the Dense buffer (the synaptic input of the next step)"),
    State("u", ("B", "N"), "membrane, 24-bit, after the reset", "neuron_path"),
    State("H", ("B", "A", "dk", "dv"), "astrocyte state, 24-bit", "astrocyte"),
    State("conv", ("B", "lags", "dc"), "the delay line: the last conv_size - 1 operands "
          "(k_in | v_in, operand_bits wide), oldest first", "delay_line"),
)
LIF_STATES: tuple[State, ...] = (
    State("a", ("B", "P"), "the Dense buffer"),
    State("u", ("B", "N"), "current, 24-bit (wraps)"),
    State("v", ("B", "N"), "voltage, 24-bit, after the reset"),
)

FIELDS = {"amsu": AMSU_FIELDS, "lif": LIF_FIELDS}
STATES = {"amsu": AMSU_STATES, "lif": LIF_STATES}

# widths a file records per layer (/layers/<i>/bits): a reader refuses other values
BITS = {"state": STATE_BITS, "decay": DECAY_SHIFT, "weight": WEIGHT_BITS, "threshold": VTH_BITS,
        "threshold_shift": VTH_SHIFT, "bias_mant": BIAS_MANT_BITS, "bias_exp": BIAS_EXP_BITS,
        "gain": GAIN_BITS, "tap": TAP_BITS}
BITS_SINCE = {"tap": 2}     # widths a file records from this format version on


def bits_for(version: int) -> dict:
    """The widths a file of format ``version`` records (and a reader checks)."""
    return {k: v for k, v in BITS.items() if BITS_SINCE.get(k, 1) <= version}


def by_kind(fields: tuple, kind: str) -> tuple[Field, ...]:
    return tuple(f for f in fields if f.kind == kind)


def field_map(fields: tuple) -> dict[str, Field]:
    return {f.name: f for f in fields}


def shape_of(shape: tuple, sizes: dict) -> tuple[int, ...]:
    """A declared shape (size names) as integers."""
    return tuple(int(sizes[s]) for s in shape)


# ----------------------------------------------------------------- checks

def _plain(value: Any) -> Any:
    """NumPy scalars as Python ones (validate takes Python ints only)."""
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def check_int(name: str, value: Any, lo: int, hi: int) -> int:
    return validate.int_in_range(name, _plain(value), lo, hi)


def check_flag(name: str, value: Any) -> bool:
    value = _plain(value)
    if isinstance(value, int) and value in (0, 1):
        value = bool(value)
    return validate.boolean(name, value)


def check_choice(name: str, value: Any, options: tuple) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return validate.choice(name, value, options)


def check_array(name: str, value: Any, shape: tuple, lo: int, hi: int) -> np.ndarray:
    """``value`` as a read-only int64 array of ``shape`` with every element in ``[lo, hi]``."""
    if not isinstance(value, np.ndarray):
        raise ValueError(f"{name} must be a numpy integer array, got {type(value).__name__}")
    if value.dtype.kind not in "iu":
        raise ValueError(f"{name} must have an integer dtype, got {value.dtype}")
    if tuple(value.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {list(shape)}, got {list(value.shape)}")
    if value.size:
        vmin, vmax = int(value.min()), int(value.max())
        if vmin < lo or vmax > hi:
            bad = vmin if vmin < lo else vmax
            raise ValueError(f"{name} must lie in [{lo}, {hi}], got a value {bad}")
    out = value.astype(np.int64)
    out.setflags(write=False)
    return out


def check_field(f: Field, value: Any, where: str, sizes: dict) -> Any:
    """``value`` of field ``f`` checked against its declaration (``where/name`` in errors)."""
    name = f"{where}/{f.name}"
    if f.kind == "int":
        return check_int(name, value, f.lo, f.hi)
    if f.kind == "flag":
        return check_flag(name, value)
    if f.kind == "choice":
        return check_choice(name, value, f.options)
    return check_array(name, value, shape_of(f.shape, sizes), f.lo, f.hi)
