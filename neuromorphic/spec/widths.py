"""The widths of the integer network (docs/neuromorphic.md, "Widths"): the one source of
these numbers for the schema, the engines, the converter and the Lava models."""

from __future__ import annotations

__all__ = [
    "FORMAT", "FORMAT_VERSION", "STATE_BITS", "STATE_MAX", "DECAY_SHIFT", "DECAY_UNITY",
    "VTH_BITS", "VTH_SHIFT", "ACT_SHIFT", "BIAS_MANT_BITS", "BIAS_EXP_BITS", "BIAS_EXP_MAX",
    "GAIN_BITS", "WEIGHT_BITS", "WEIGHT_EXP_RANGE", "SHIFT_RANGE", "OPERAND_BITS_RANGE",
    "MAX_LEVELS", "MAX_UNITS", "SIGN_MODES", "RESETS", "EXACT_BITS", "message_bits",
    "READABLE_VERSIONS", "TAP_BITS", "TAP_MAX", "MAX_CONV_SIZE", "SENSINGS",
    "senses_relu", "senses_relu_query", "senses_square",
]

# the file format these widths belong to (neuromorphic.fileio); it changes only if the bytes do.
# A file carries the lowest version that expresses its network: 1 without a delay line (the
# bytes of every file written before the delay line existed), 2 when a layer has one
# (fields conv_size, shift_ck, shift_cv, conv_taps), 3 when a layer senses through a ReLU
# (field sensing = "relu"), 4 when one senses the ReLU's square (sensing = "relu2"; fields
# shift_k2, shift_q2), 5 when one clamps the key alone (sensing = "relu-key"; no new field,
# a value of sensing that readers of versions 3 and 4 do not know). FORMAT_VERSION is the
# newest.
FORMAT = "astro-neuron/integer-snn"
FORMAT_VERSION = 5
READABLE_VERSIONS = (1, 2, 3, 4, 5)

STATE_BITS = 24                    # u, v, H, r, o: signed 24-bit
STATE_MAX = 2 ** (STATE_BITS - 1) - 1
DECAY_SHIFT = 12                   # decays are 12-bit: x * (4096 - d) >> 12, toward zero
DECAY_UNITY = 1 << DECAY_SHIFT
VTH_BITS = 17                      # threshold mantissa, unsigned; effective vth << 6
VTH_SHIFT = 6
ACT_SHIFT = 6                      # stock LIF: synaptic input << 6
BIAS_MANT_BITS = 13                # signed; effective bias = mant << exp
BIAS_EXP_BITS = 3
BIAS_EXP_MAX = (1 << BIAS_EXP_BITS) - 1
GAIN_BITS = 8                      # astrocyte gain, signed, symmetric
WEIGHT_BITS = 8                    # Dense weight mantissas
WEIGHT_EXP_RANGE = (-8, 7)         # Dense weight_exp (4-bit signed field)
SHIFT_RANGE = (-24, 40)            # requantization shifts of the AM-SU
OPERAND_BITS_RANGE = (2, 16)       # width of k, v, q before the products
MAX_LEVELS = 255                   # graded spikes / input values: at most 8 message bits
MAX_UNITS = 1 << 20                # neurons of a layer, inputs of a network
SIGN_MODES = ("mixed", "excitatory", "inhibitory")
RESETS = ("none", "subtract", "zero")
TAP_BITS = 8                       # delay-line tap mantissas, signed, symmetric (as gain)
TAP_MAX = (1 << (TAP_BITS - 1)) - 1
MAX_CONV_SIZE = 8                  # taps of the delay line (astro_neuron's AMSUSpec allows 8)
# what the astrocyte senses: k, q; max(k, 0), max(q, 0); their squares, requantized; or
# max(k, 0) with the query signed
SENSINGS = ("identity", "relu", "relu2", "relu-key")
EXACT_BITS = 52                    # every intermediate stays below 2**52 (float64-exact)


def senses_relu(astrocyte, sensing) -> bool:
    """A layer's astrocyte clamps ``k`` at 0 after the delay line (``"relu"``, ``"relu2"``,
    which squares it after, and ``"relu-key"``): the one rule every engine and reader
    uses; :func:`senses_relu_query` says whether ``q`` is clamped too."""
    return bool(astrocyte) and str(sensing) in ("relu", "relu2", "relu-key")


def senses_relu_query(astrocyte, sensing) -> bool:
    """A layer's astrocyte clamps ``q`` at 0 as well (``"relu"``, ``"relu2"``; not
    ``"relu-key"``, whose query stays signed)."""
    return bool(astrocyte) and str(sensing) in ("relu", "relu2")


def senses_square(astrocyte, sensing) -> bool:
    """A layer's astrocyte squares the clamped ``k``, ``q`` (``sensing == "relu2"``)."""
    return bool(astrocyte) and str(sensing) == "relu2"


def message_bits(levels: int) -> int:
    """Lava ``num_message_bits`` for spikes in ``{0..levels}``: 0 means binary."""
    return 0 if levels <= 1 else int(levels).bit_length()
