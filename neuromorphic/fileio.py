"""The integer network file: HDF5 (h5py), versioned, self-describing, checksummed.

Layout (docs/neuromorphic.md, "The file")::

    /                      attrs: format, format_version, producer, dt, time_unit,
                                  input_size, input_levels, n_layers, checksum, meta (JSON)
    /graph                 attrs: kind = "chain"; dataset edges [n_layers, 2] (S32):
                                  ("input", "layer0"), ("layer0", "layer1"), ...
    /layers/<i>            attrs: type ("amsu" | "lif"), name
    /layers/<i>/synapse    dataset weight [P, n_in] int16;
                           attrs weight_exp, sign_mode, num_weight_bits, num_message_bits
    /layers/<i>/neuron     datasets: the integer arrays (du, vth, bias_mant, ...);
                           attrs: the integer scalars and flags (shifts, reset, ...)
    /layers/<i>/bits       attrs: the width of every quantity (must equal this format's)
    /layers/<i>/scale      attrs: power-of-two exponents for reading states as floats

Writing is atomic (a temporary file in the same folder, then a rename). Loading
reads every field, checks presence, dtype, shape and range against the format and
names the first bad field in a ``ValueError``; it then checks a SHA-256 checksum
over the canonical content, so a corrupted value that happens to stay in range is
still caught. Nothing half-built ever leaves :func:`load`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from neuromorphic.network import (
    BIAS_MANT_BITS, DECAY_SHIFT, GAIN_BITS, STATE_BITS, VTH_BITS, VTH_SHIFT,
    AMSULayer, LIFLayer, QuantizedNetwork, Synapse,
)

__all__ = ["FORMAT", "FORMAT_VERSION", "save", "load", "canonical_digest"]

FORMAT = "astro-neuron/integer-snn"
FORMAT_VERSION = 1

BITS = {"state": STATE_BITS, "decay": DECAY_SHIFT, "weight": 8, "threshold": VTH_BITS,
        "threshold_shift": VTH_SHIFT, "bias_mant": BIAS_MANT_BITS, "bias_exp": 3, "gain": GAIN_BITS}

_AMSU_ARRAYS = ("du", "bias_mant", "bias_exp", "vth", "dH", "gain")
_AMSU_SCALARS = ("n_neurons", "n_astrocytes", "d_key", "spike_levels", "operand_bits",
                 "shift_i", "shift_k", "shift_v", "shift_q", "shift_kv", "shift_r", "shift_o")
_AMSU_FLAGS = ("neuron_path", "astrocyte")
_LIF_SCALARS = ("n_neurons", "du", "dv", "vth")
_LIF_ARRAYS = ("bias_mant", "bias_exp")


# ----------------------------------------------------------------- canonical content

def _canonical(net: QuantizedNetwork) -> list:
    """Everything the dynamics depend on, in a fixed order (meta excluded)."""
    items: list = [("format", FORMAT, FORMAT_VERSION), ("input", net.input_size,
                   net.input_levels, repr(float(net.dt)))]
    for i, l in enumerate(net.layers):
        s = l.synapse
        items.append((f"layer{i}", l.kind, l.name, s.weight_exp, s.sign_mode, s.num_weight_bits,
                      s.num_message_bits, sorted(l.scale.items())))
        items.append(np.ascontiguousarray(s.weight, dtype=np.int64))
        if isinstance(l, LIFLayer):
            items.append(tuple(int(getattr(l, k)) for k in _LIF_SCALARS))
            arrays = _LIF_ARRAYS
        else:
            items.append(tuple(int(getattr(l, k)) for k in _AMSU_SCALARS) +
                         tuple(bool(getattr(l, k)) for k in _AMSU_FLAGS) + (l.reset,))
            arrays = _AMSU_ARRAYS
        for k in arrays:
            a = getattr(l, k)
            items.append((k, None) if a is None else np.ascontiguousarray(a, dtype=np.int64))
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


# ----------------------------------------------------------------- save

def _producer() -> str:
    from astro_neuron import __version__

    return f"astro-neuron {__version__}"


def save(net: QuantizedNetwork, path) -> Path:
    """Write ``net`` to ``path`` (HDF5) atomically; returns the path."""
    import h5py

    from astro_neuron.io import atomic_write

    if not isinstance(net, QuantizedNetwork):
        raise TypeError(f"save() takes a QuantizedNetwork, got {type(net).__name__}")
    path = Path(path)
    try:
        meta_json = json.dumps(net.meta, sort_keys=True, default=str)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"net.meta must be JSON-serialisable: {exc}") from None

    def write(tmp: str) -> None:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["producer"] = _producer()
            f.attrs["dt"] = float(net.dt)
            f.attrs["time_unit"] = "step of the source model (unit of its time constants)"
            f.attrs["input_size"] = int(net.input_size)
            f.attrs["input_levels"] = int(net.input_levels)
            f.attrs["n_layers"] = len(net.layers)
            f.attrs["meta"] = meta_json
            g = f.create_group("graph")
            g.attrs["kind"] = "chain"
            names = ["input"] + [f"layer{i}" for i in range(len(net.layers))]
            g.create_dataset("edges", data=np.array(list(zip(names[:-1], names[1:])), dtype="S32"))
            for i, l in enumerate(net.layers):
                lg = f.create_group(f"layers/{i}")
                lg.attrs["type"] = l.kind
                lg.attrs["name"] = l.name
                sg = lg.create_group("synapse")
                sg.create_dataset("weight", data=l.synapse.weight.astype(np.int16))
                for k in ("weight_exp", "num_weight_bits", "num_message_bits"):
                    sg.attrs[k] = int(getattr(l.synapse, k))
                sg.attrs["sign_mode"] = l.synapse.sign_mode
                ng = lg.create_group("neuron")
                if isinstance(l, LIFLayer):
                    for k in _LIF_SCALARS:
                        ng.attrs[k] = int(getattr(l, k))
                    arrays = _LIF_ARRAYS
                else:
                    for k in _AMSU_SCALARS:
                        ng.attrs[k] = int(getattr(l, k))
                    for k in _AMSU_FLAGS:
                        ng.attrs[k] = int(bool(getattr(l, k)))
                    ng.attrs["reset"] = l.reset
                    arrays = _AMSU_ARRAYS
                for k in arrays:
                    a = getattr(l, k)
                    if a is not None:
                        ng.create_dataset(k, data=np.asarray(a, dtype=np.int32))
                bg = lg.create_group("bits")
                for k, v in BITS.items():
                    bg.attrs[k] = v
                cg = lg.create_group("scale")
                for k, v in l.scale.items():
                    cg.attrs[k] = int(v)
            f.attrs["checksum"] = canonical_digest(net)

    return atomic_write(path, write)


# ----------------------------------------------------------------- load

class _Reader:
    """Reads fields with clear errors naming them (``where`` is the HDF5 path)."""

    def __init__(self, f, path: Path) -> None:
        self.f, self.path = f, path

    def fail(self, field: str, msg: str):
        raise ValueError(f"{self.path}: field '{field}' {msg}")

    def node(self, name: str):
        try:
            obj = self.f[name]
        except KeyError:
            self.fail(name, "is missing")
        except Exception as exc:
            self.fail(name, f"cannot be read ({type(exc).__name__}: {exc})")
        return obj

    def attr(self, group: str, key: str, kind: str):
        field = f"{group}/{key}" if group != "/" else key
        g = self.node(group)
        try:
            if key not in g.attrs:
                self.fail(field, "is missing")
            val = g.attrs[key]
        except ValueError:
            raise
        except Exception as exc:
            self.fail(field, f"cannot be read ({type(exc).__name__}: {exc})")
        if kind == "str":
            if isinstance(val, bytes):
                try:
                    val = val.decode("utf-8")
                except UnicodeDecodeError:
                    self.fail(field, "is not valid UTF-8 text")
            if not isinstance(val, str):
                self.fail(field, f"must be a string, got {type(val).__name__}")
            return val
        if isinstance(val, np.ndarray):
            if val.shape not in ((), (1,)):
                self.fail(field, f"must be a scalar, got an array of shape {list(val.shape)}")
            val = val.reshape(())[()]
        if kind == "int":
            if isinstance(val, (bool, np.bool_)) or not isinstance(val, (int, np.integer)):
                self.fail(field, f"must be an integer, got {val!r} ({type(val).__name__})")
            return int(val)
        if kind == "float":
            if isinstance(val, (bool, np.bool_)) or not isinstance(val, (int, float, np.integer,
                                                                         np.floating)):
                self.fail(field, f"must be a number, got {val!r}")
            return float(val)
        raise AssertionError(kind)

    def array(self, name: str) -> np.ndarray:
        ds = self.node(name)
        if not hasattr(ds, "dtype") or not hasattr(ds, "shape"):
            self.fail(name, "must be a dataset")
        if ds.dtype.kind not in "iu":
            self.fail(name, f"must have an integer dtype, got {ds.dtype}")
        try:
            return np.asarray(ds[()])
        except Exception as exc:
            self.fail(name, f"cannot be read ({type(exc).__name__}: {exc})")

    def has(self, name: str) -> bool:
        try:
            return name in self.f
        except Exception:
            return False


def _read(r: _Reader) -> tuple[QuantizedNetwork, str]:
    fmt = r.attr("/", "format", "str")
    if fmt != FORMAT:
        r.fail("format", f"must be {FORMAT!r}, got {fmt!r}: not an integer network file")
    version = r.attr("/", "format_version", "int")
    if version != FORMAT_VERSION:
        r.fail("format_version", f"is {version}; this astro-neuron reads version "
                                 f"{FORMAT_VERSION} only")
    r.attr("/", "producer", "str")
    dt = r.attr("/", "dt", "float")
    n_layers = r.attr("/", "n_layers", "int")
    if not 1 <= n_layers <= 1024:
        r.fail("n_layers", f"must lie in [1, 1024], got {n_layers}")
    input_size = r.attr("/", "input_size", "int")
    input_levels = r.attr("/", "input_levels", "int")
    meta_s = r.attr("/", "meta", "str")
    try:
        meta = json.loads(meta_s)
    except ValueError as exc:
        r.fail("meta", f"is not valid JSON ({exc})")
    if not isinstance(meta, dict):
        r.fail("meta", "must be a JSON object")
    checksum = r.attr("/", "checksum", "str")
    kind = r.attr("graph", "kind", "str")
    if kind != "chain":
        r.fail("graph/kind", f"must be 'chain' (layers in sequence), got {kind!r}")
    edges = r.node("graph/edges")
    try:
        edges = [tuple(x.decode("ascii") for x in row) for row in np.asarray(edges[()])]
    except Exception:
        r.fail("graph/edges", "must be an [n_layers, 2] array of ASCII names")
    names = ["input"] + [f"layer{i}" for i in range(n_layers)]
    if edges != list(zip(names[:-1], names[1:])):
        r.fail("graph/edges", f"must chain input -> layer0 -> ... -> layer{n_layers - 1}, "
                              f"got {edges}")
    if r.has(f"layers/{n_layers}"):
        r.fail(f"layers/{n_layers}", f"exists but n_layers is {n_layers}")
    layers = []
    for i in range(n_layers):
        g = f"layers/{i}"
        typ = r.attr(g, "type", "str")
        name = r.attr(g, "name", "str")
        bits = {k: r.attr(f"{g}/bits", k, "int") for k in BITS}
        for k, v in bits.items():
            if v != BITS[k]:
                r.fail(f"{g}/bits/{k}", f"is {v}; format version {FORMAT_VERSION} uses "
                                        f"{BITS[k]}")
        sc = r.node(f"{g}/scale")
        try:
            scale_keys = list(sc.attrs.keys())
        except Exception as exc:
            r.fail(f"{g}/scale", f"cannot be read ({exc})")
        scale = {k: r.attr(f"{g}/scale", k, "int") for k in scale_keys}
        sy = f"{g}/synapse"
        syn = Synapse(r.array(f"{sy}/weight"), weight_exp=r.attr(sy, "weight_exp", "int"),
                      sign_mode=r.attr(sy, "sign_mode", "str"),
                      num_weight_bits=r.attr(sy, "num_weight_bits", "int"),
                      num_message_bits=r.attr(sy, "num_message_bits", "int"))
        nb = f"{g}/neuron"
        if typ == "lif":
            kw: dict[str, Any] = {k: r.attr(nb, k, "int") for k in _LIF_SCALARS}
            kw.update({k: r.array(f"{nb}/{k}") for k in _LIF_ARRAYS})
            layers.append(LIFLayer(syn, name=name, scale=scale, **kw))
        elif typ == "amsu":
            kw = {k: r.attr(nb, k, "int") for k in _AMSU_SCALARS}
            for k in _AMSU_FLAGS:
                v = r.attr(nb, k, "int")
                if v not in (0, 1):
                    r.fail(f"{nb}/{k}", f"must be 0 or 1, got {v}")
                kw[k] = bool(v)
            kw["reset"] = r.attr(nb, "reset", "str")
            for k in _AMSU_ARRAYS:
                kw[k] = r.array(f"{nb}/{k}") if r.has(f"{nb}/{k}") else None
            layers.append(AMSULayer(syn, name=name, scale=scale, **kw))
        else:
            r.fail(f"{g}/type", f"must be 'amsu' or 'lif', got {typ!r}")
    net = QuantizedNetwork(tuple(layers), input_size=input_size, input_levels=input_levels,
                           dt=dt, meta=meta)
    return net, checksum


def load(path) -> QuantizedNetwork:
    """Read and validate a file written by :func:`save`.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the
    field for anything else wrong: not HDF5, truncated, wrong format or version,
    missing field, wrong dtype or shape, out-of-range value, checksum mismatch.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"integer network file not found: {path}")
    try:
        f = h5py.File(path, "r")
    except Exception as exc:
        raise ValueError(f"{path}: not a readable HDF5 file (truncated or corrupt?): "
                         f"{type(exc).__name__}: {exc}") from None
    try:
        with f:
            try:
                net, checksum = _read(_Reader(f, path))
            except ValueError as exc:
                msg = str(exc)
                if not msg.startswith(str(path)):
                    msg = f"{path}: {msg}"
                raise ValueError(msg) from None
            except Exception as exc:   # h5py/HDF5 errors on a damaged file
                raise ValueError(f"{path}: damaged file ({type(exc).__name__}: {exc})") from None
    except ValueError:
        raise
    except Exception as exc:           # errors while closing a damaged file
        raise ValueError(f"{path}: damaged file ({type(exc).__name__}: {exc})") from None
    if canonical_digest(net) != checksum:
        raise ValueError(f"{path}: field 'checksum' does not match the content: the file was "
                         "modified or corrupted after it was written")
    return net
