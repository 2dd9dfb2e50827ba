"""The integer network: what a quantized AM-SU / LIF network *is*, built from the
field tables of :mod:`neuromorphic.spec.fields`.

A :class:`QuantizedNetwork` is a chain of layers; every layer is a synapse (a Lava
``Dense``: 8-bit weight mantissas, a shared exponent, a one-step delay) followed by
a neuron population:

* :class:`AMSULayer`: the integer AM-SU (membrane ``u`` and astrocyte state ``H``),
  run on Lava by this package's own ``AMSUNeuron`` process;
* :class:`LIFLayer`: Lava's stock ``LIF`` (current ``u``, voltage ``v``), used for
  ``Linear + LIF`` layers whose semantics it matches exactly.

The layer classes are generated from their tables (one attribute per declared field,
plus ``synapse``, ``name`` and ``scale``), so a field is declared once. Construction
validates everything (:meth:`QuantizedNetwork.validate`): a network object that
exists is one that every engine can run exactly. :func:`canonical_digest` is the
content checksum files carry; :func:`to_dict` the JSON form.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, make_dataclass, replace
from typing import Any, Union

import numpy as np

from astro_neuron import validate
from astro_neuron.functional.amsu import projection_parts
from neuromorphic.spec.fields import (
    AMSU_FIELDS, AMSU_STATES, LIF_FIELDS, LIF_STATES, REQUIRED, SYNAPSE_FIELDS, by_kind,
    check_array, check_choice, check_field, check_int, shape_of,
)
from neuromorphic.spec.widths import (
    ACT_SHIFT, EXACT_BITS, FORMAT, GAIN_BITS, MAX_LEVELS, MAX_UNITS, STATE_MAX, TAP_MAX,
    WEIGHT_EXP_RANGE, senses_relu, senses_relu_query, senses_square,
)

__all__ = ["Synapse", "AMSULayer", "LIFLayer", "Layer", "LAYER_TYPES", "QuantizedNetwork",
           "canonical_digest", "to_dict"]


def _fail(msg: str) -> None:
    raise ValueError(msg)


def _bits(x: int) -> int:
    return int(abs(int(x))).bit_length()


_SIGN_RANGE = {"mixed": (-256, 255), "excitatory": (0, 255), "inhibitory": (-255, 0)}


# ----------------------------------------------------------------- the synapse

class _SynapseMethods:
    """A Lava ``Dense`` connection, exactly as its bit-accurate model runs it.

    ``weight`` ``[n_rows, n_in]`` are the integers handed to ``Dense`` (8-bit
    mantissas; in ``"mixed"`` sign mode Lava keeps them in ``[-256, 255]`` and drops
    the lowest bit, so the quantizer writes even values). At each step the Dense
    sends the previous step's accumulation (a one-step delay) and accumulates
    ``W @ s_in`` shifted by ``weight_exp`` (left if > 0, arithmetic right otherwise).
    ``num_message_bits == 0``: binary input (any non-zero counts as 1); else graded.
    Fields: :data:`neuromorphic.spec.fields.SYNAPSE_FIELDS`.
    """

    FIELDS = SYNAPSE_FIELDS

    def validate(self, where: str, n_rows: int, n_in: int) -> "Synapse":
        kw = {f.name: check_field(f, getattr(self, f.name), where, {})
              for f in self.FIELDS if f.kind != "array"}
        lo, hi = _SIGN_RANGE[kw["sign_mode"]]
        kw["weight"] = check_array(f"{where}/weight", self.weight, (n_rows, n_in), lo, hi)
        return Synapse(**kw)

    @property
    def graded(self) -> bool:
        return self.num_message_bits > 0

    def effective_weight(self) -> np.ndarray:
        """The weights Lava's Dense actually uses: clipped to 8 bits by sign mode, then
        ``8 - num_weight_bits (+1 if mixed)`` low bits dropped (``lava.utils.weightutils``)."""
        w = np.asarray(self.weight, dtype=np.int64)
        w = np.clip(w, *_SIGN_RANGE[self.sign_mode])
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


def _dc_fields(fields: tuple) -> list:
    out = []
    for f in fields:
        if f.default is REQUIRED:
            out.append((f.name, Any))
        else:
            out.append((f.name, Any, field(default=f.default)))
    return out


def _generated(name: str, fields: list, base: type, doc: str):
    cls = make_dataclass(name, fields, bases=(base,), frozen=True, eq=False)
    cls.__module__ = __name__
    cls.__doc__ = doc
    return cls


Synapse = _generated("Synapse", _dc_fields(SYNAPSE_FIELDS), _SynapseMethods,
                     _SynapseMethods.__doc__)


# ----------------------------------------------------------------- layers

class _LayerMethods:
    """What every layer kind shares; ``FIELDS``/``STATES`` say what it holds."""

    kind = ""
    FIELDS: tuple = ()
    STATES: tuple = ()

    def _on(self, when) -> bool:
        return when is None or bool(getattr(self, when))

    @staticmethod
    def _cond(when, kw: dict) -> bool:
        """Whether a field of condition ``when`` exists, from the checked values ``kw``."""
        return when is None or bool(kw[when])

    @property
    def format_version(self) -> int:
        """The lowest file format version that expresses this layer."""
        return 1

    @property
    def n_out(self) -> int:
        return self.n_neurons

    def sizes(self, batch: int = 1) -> dict:
        return {"N": self.n_neurons, "P": self.synapse.weight.shape[0],
                "n_in": self.synapse.weight.shape[1], "B": batch}

    @property
    def state_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.STATES if self._on(s.when))

    def state_shapes(self, batch: int) -> dict[str, tuple[int, ...]]:
        sz = self.sizes(batch)
        return {s.name: shape_of(s.shape, sz) for s in self.STATES if self._on(s.when)}

    def validate(self, where: str, n_in: int, in_levels: int):
        """A checked copy (int64 read-only arrays); ``ValueError`` naming the first bad field."""
        nb = f"{where}/neuron"
        kw: dict[str, Any] = {}
        for f in by_kind(self.FIELDS, "flag"):
            kw[f.name] = check_field(f, getattr(self, f.name), nb, {})
        on = lambda when: self._cond(when, kw)   # noqa: E731
        for f in by_kind(self.FIELDS, "choice"):
            kw[f.name] = check_field(f, getattr(self, f.name), nb, {})
            if not on(f.when) and kw[f.name] != f.default:
                _fail(f"{nb}/{f.name} must be {f.default!r} when {f.when} is off, got "
                      f"{kw[f.name]!r}")
        for f in by_kind(self.FIELDS, "int"):
            kw[f.name] = check_field(f, getattr(self, f.name), nb, {}) if on(f.when) \
                else f.default
        sizes = self._check_sizes(nb, kw)
        for f in by_kind(self.FIELDS, "array"):
            value = getattr(self, f.name)
            if on(f.when):
                kw[f.name] = check_field(f, value, nb, sizes)
            elif value is not None:
                _fail(f"{nb}/{f.name} must be absent when {f.when} is off")
            else:
                kw[f.name] = None
        if not isinstance(self.synapse, Synapse):
            _fail(f"{where}/synapse is missing")
        syn = self.synapse.validate(f"{where}/synapse", sizes["P"], n_in)
        nmb = syn.num_message_bits
        if (nmb == 0) != (in_levels <= 1) or (in_levels > 1 and (1 << nmb) <= in_levels):
            _fail(f"{where}/synapse/num_message_bits ({nmb}) does not carry the layer's "
                  f"input values 0..{in_levels}")
        if not isinstance(self.name, str):
            _fail(f"{where}/name must be a string, got {type(self.name).__name__}")
        if not isinstance(self.scale, dict):
            _fail(f"{where}/scale must be a dict of integer exponents, got "
                  f"{type(self.scale).__name__}")
        scale = {str(k): check_int(f"{where}/scale/{k}", v, -128, 128)
                 for k, v in self.scale.items()}
        layer = type(self)(synapse=syn, name=self.name, scale=scale, **kw)
        layer._check_exact(where, in_levels)
        return layer

    def _check_sizes(self, where: str, kw: dict) -> dict:
        return {"N": kw["n_neurons"], "P": kw["n_neurons"]}

    def _check_exact(self, where: str, in_levels: int) -> None:
        raise NotImplementedError


class _AMSUMethods(_LayerMethods):
    """One integer AM-SU layer (neuron fields; see docs/neuromorphic.md, "AM-SU").

    Shapes: ``N = n_neurons``, ``A = n_astrocytes``, ``dk = d_key``,
    ``dv = N / A``. The synapse has ``P`` rows: ``I`` (N, if ``neuron_path``) then
    ``K`` (A*dk), ``V`` (N), ``Q`` (A*dk) if ``astrocyte``. Unused fields are None (arrays)
    or 0 (shifts). ``scale`` maps names to power-of-two exponents for reading states as
    floats (``u_float = u * 2**scale["u"]``); informational, not used by the dynamics.
    Fields: :data:`neuromorphic.spec.fields.AMSU_FIELDS`.
    """

    kind = "amsu"
    FIELDS = AMSU_FIELDS
    STATES = AMSU_STATES

    @property
    def d_value(self) -> int:
        return self.n_neurons // self.n_astrocytes

    @property
    def parts(self) -> tuple[tuple[str, int], ...]:
        """Row blocks of the Dense output feeding this layer (as the float AM-SU's)."""
        return projection_parts(self.n_neurons, self.n_astrocytes, self.d_key,
                                self.neuron_path, self.astrocyte)

    @property
    def units(self) -> int:
        """Independent units: an astrocyte with its neurons, or single neurons."""
        return self.n_astrocytes if self.astrocyte else self.n_neurons

    @property
    def delay_line(self) -> bool:
        """The astrocyte senses ``k``, ``v`` through a delay line (``conv_size > 1``)."""
        return bool(self.astrocyte) and self.conv_size > 1

    @property
    def d_conv(self) -> int:
        """Channels of the delay line: the K | V operands, ``A * dk + N``."""
        return self.n_astrocytes * self.d_key + self.n_neurons

    @property
    def relu(self) -> bool:
        """The astrocyte senses a non-negative ``k`` (``sensing`` ``"relu"``, ``"relu2"``,
        which squares it after the ReLU, or ``"relu-key"``)."""
        return senses_relu(self.astrocyte, self.sensing)

    @property
    def relu_q(self) -> bool:
        """The astrocyte senses a non-negative ``q`` as well (``"relu"``, ``"relu2"``; with
        ``"relu-key"`` the query stays signed)."""
        return senses_relu_query(self.astrocyte, self.sensing)

    @property
    def square(self) -> bool:
        """The astrocyte senses ``max(k, 0)^2``, ``max(q, 0)^2``, requantized to operands
        by ``shift_k2``, ``shift_q2`` (``sensing == "relu2"``)."""
        return senses_square(self.astrocyte, self.sensing)

    @property
    def format_version(self) -> int:
        return (5 if self.relu and not self.relu_q else 4 if self.square else 3 if self.relu
                else 2 if self.delay_line else 1)

    @staticmethod
    def _cond(when, kw: dict) -> bool:
        if when == "delay_line":
            return bool(kw["astrocyte"]) and kw["conv_size"] > 1
        if when == "square":
            return senses_square(kw["astrocyte"], kw["sensing"])
        return when is None or bool(kw[when])

    def sizes(self, batch: int = 1) -> dict:
        return {**super().sizes(batch), "A": self.n_astrocytes, "dk": self.d_key,
                "dv": self.d_value, "nc": self.conv_size, "lags": self.conv_size - 1,
                "dc": self.d_conv}

    def _check_sizes(self, where: str, kw: dict) -> dict:
        N, A, dk = kw["n_neurons"], kw["n_astrocytes"], kw["d_key"]
        if A > N or N % A:
            _fail(f"{where}/n_astrocytes ({A}) must divide n_neurons ({N})")
        if not (kw["neuron_path"] or kw["astrocyte"]):
            _fail(f"{where}: neuron_path and astrocyte are both off; the layer has no input")
        P = sum(n for _, n in projection_parts(N, A, dk, kw["neuron_path"], kw["astrocyte"]))
        nc = kw["conv_size"]
        return {"N": N, "A": A, "dk": dk, "dv": N // A, "P": P, "nc": nc, "lags": nc - 1,
                "dc": A * dk + N}

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
            if self.delay_line:
                worst["delay-line sum shifted"] = (self.conv_size * TAP_MAX * op) << max(
                    0, -min(self.shift_ck, self.shift_cv))
            if self.square:     # max(k, 0)^2, max(q, 0)^2 before their requantizing shift
                worst["squared operand shifted"] = (op * op) << max(
                    0, -min(self.shift_k2, self.shift_q2))
            worst["k v^T shifted"] = (op * op) << max(0, -self.shift_kv)
            worst["H^T q"] = self.d_key * STATE_MAX * op
            worst["r * gain shifted"] = (STATE_MAX << GAIN_BITS) << max(0, -self.shift_o)
        for what, value in worst.items():
            if _bits(value) > EXACT_BITS:
                _fail(f"{where}: the worst case of {what} needs {_bits(value)} bits (> "
                      f"{EXACT_BITS}); reduce the weights' range or the shifts")

    def describe(self) -> str:
        line = (f" conv_size={self.conv_size}" if self.delay_line else "") + \
            (f" sensing={self.sensing}" if self.relu else "")
        return (f"A={self.n_astrocytes} d_key={self.d_key} astrocyte={self.astrocyte}{line} "
                f"reset={self.reset} levels={self.spike_levels}")


class _LIFMethods(_LayerMethods):
    """A stock Lava ``LIF`` population behind a ``Dense`` (bit-accurate model).

    Per step (``lava/proc/lif/models.py``, ``PyLifModelBitAcc``)::

        u = wrap24(rtz(u * (4096 - (du + 1)) / 4096) + (a << 6))
        v = sat24(rtz(v * (4096 - dv) / 4096) + u + (bias_mant << bias_exp))
        s = v > (vth << 6);  v[s] = 0

    ``du``, ``dv``, ``vth`` are shared by the population (Lava's LIF has one of each).
    Fields: :data:`neuromorphic.spec.fields.LIF_FIELDS`.
    """

    kind = "lif"
    FIELDS = LIF_FIELDS
    STATES = LIF_STATES
    spike_levels = 1
    reset = "zero"

    @property
    def units(self) -> int:
        return self.n_neurons

    def _check_exact(self, where: str, in_levels: int) -> None:
        amax = self.synapse.max_abs_output(in_levels)
        if _bits(amax << ACT_SHIFT) > 31:
            _fail(f"{where}: the worst-case synaptic input << 6 needs "
                  f"{_bits(amax << ACT_SHIFT)} bits; Lava's LIF holds it in int32")

    def describe(self) -> str:
        return f"du={self.du} dv={self.dv} vth={self.vth}"


_NAME_SCALE = [("name", str, field(default="")), ("scale", dict, field(default_factory=dict))]


def _layer_class(name: str, base: type):
    return _generated(name, [("synapse", Any)] + _dc_fields(base.FIELDS) + _NAME_SCALE, base,
                      base.__doc__)


AMSULayer = _layer_class("AMSULayer", _AMSUMethods)
LIFLayer = _layer_class("LIFLayer", _LIFMethods)
Layer = Union[AMSULayer, LIFLayer]
LAYER_TYPES = {"amsu": AMSULayer, "lif": LIFLayer}


# ----------------------------------------------------------------- the network

@dataclass(frozen=True, eq=False)
class QuantizedNetwork:
    """A chain of integer layers: input spikes -> layer 0 -> layer 1 -> ...

    ``input_levels``: input values are spike counts in ``{0..input_levels}`` (1:
    binary). ``dt``: the time step of the float model it came from (in that model's
    time unit). ``latency``: every synapse delays by one step, so the last layer's
    response to input step ``t`` appears at step ``t + latency``. ``meta`` holds
    JSON-able notes (source, calibration report); the dynamics never read it.

    ``derived``: a cache of values computed from the (immutable) layers by an engine,
    keyed by the engine's name (e.g. the numba engine's transposed weights and kernel
    parameters). It is never part of the content: not compared, not saved, not hashed.
    """

    layers: tuple
    input_size: int
    input_levels: int = 1
    dt: float = 1.0
    meta: dict = field(default_factory=dict)
    derived: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if not isinstance(self.layers, (tuple, list)) or not self.layers:
            _fail("layers must be a non-empty sequence of AMSULayer / LIFLayer")
        n_in = check_int("input_size", self.input_size, 1, MAX_UNITS)
        levels = check_int("input_levels", self.input_levels, 1, MAX_LEVELS)
        dt = self.dt
        if isinstance(dt, np.floating):
            dt = float(dt)
        validate.positive_number("dt", dt)
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
    def format_version(self) -> int:
        """The lowest file format version that expresses the network (1; 2 when a layer
        has a delay line; 3 when one senses through a ReLU; 4 when one senses its square):
        what :func:`neuromorphic.save` writes and the checksum uses."""
        return max(l.format_version for l in self.layers)

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
            lines.append(f"  [{i}] {l.kind:<4} {l.name or '':<10} N={l.n_neurons:<5} "
                         f"{l.describe()}  Dense {list(syn.weight.shape)} exp={syn.weight_exp} "
                         f"{syn.sign_mode}")
        return "\n".join(lines)

    def equals(self, other: "QuantizedNetwork") -> bool:
        """Same structure and every integer equal (meta ignored)."""
        return canonical_digest(self) == canonical_digest(other)


# ----------------------------------------------------------------- canonical content

_SYN_SCALARS = ("weight_exp", "sign_mode", "num_weight_bits", "num_message_bits")


def _canonical(net: QuantizedNetwork) -> list:
    """Everything the dynamics depend on, in a fixed order (meta excluded): per layer its
    kind, name, synapse scalars and scale, the weights, then the fields of its table
    (ints, flags, choices as one tuple; then each array). Format 1 files' checksums are
    this list's digest: its order is part of the format. Fields of a later format version
    (``Field.since``) enter only the content of networks of that version, so a network
    without delay line has the digest it had in format 1, one without ReLU sensing the
    digest it had in format 2, and one without squared sensing the digest it had in
    format 3."""
    version = net.format_version
    items: list = [("format", FORMAT, version), ("input", net.input_size,
                   net.input_levels, repr(float(net.dt)))]
    for i, l in enumerate(net.layers):
        s = l.synapse
        items.append((f"layer{i}", l.kind, l.name) + tuple(getattr(s, k) for k in _SYN_SCALARS)
                     + (sorted(l.scale.items()),))
        items.append(np.ascontiguousarray(s.weight, dtype=np.int64))
        F = tuple(f for f in l.FIELDS if f.since <= version)
        items.append(tuple(int(getattr(l, f.name)) for f in by_kind(F, "int"))
                     + tuple(bool(getattr(l, f.name)) for f in by_kind(F, "flag"))
                     + tuple(getattr(l, f.name) for f in by_kind(F, "choice")))
        for f in by_kind(F, "array"):
            a = getattr(l, f.name)
            items.append((f.name, None) if a is None else np.ascontiguousarray(a, dtype=np.int64))
    return items


def canonical_digest(net: QuantizedNetwork) -> str:
    """SHA-256 of the canonical content: equal digests <=> equal integer networks."""
    h = hashlib.sha256()
    for item in _canonical(net):
        if isinstance(item, np.ndarray):
            h.update(repr(item.shape).encode())
            h.update(item.tobytes())
        else:
            h.update(repr(item).encode())
    return h.hexdigest()


# ----------------------------------------------------------------- JSON

def _plain(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (np.integer, np.bool_)):
        return v.item()
    return v


def to_dict(net: QuantizedNetwork) -> dict:
    """The network as JSON-able data: every declared field (absent parts omitted)."""
    layers = []
    version = net.format_version
    for l in net.layers:
        d: dict = {"type": l.kind, "name": l.name}
        d.update({f.name: _plain(getattr(l, f.name)) for f in l.FIELDS
                  if getattr(l, f.name) is not None and f.since <= version})
        d["synapse"] = {f.name: _plain(getattr(l.synapse, f.name)) for f in SYNAPSE_FIELDS}
        d["scale"] = dict(l.scale)
        layers.append(d)
    return {"format": FORMAT, "format_version": version, "input_size": net.input_size,
            "input_levels": net.input_levels, "dt": net.dt, "latency": net.latency,
            "meta": net.meta, "layers": layers}
