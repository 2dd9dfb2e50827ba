"""The integer network file: HDF5 (h5py), versioned, self-describing, checksummed.

Layout (docs/neuromorphic.md, "The file"); the neuron fields are those of the layer's
table in :mod:`neuromorphic.spec.fields`, in its order::

    /                      attrs: format, format_version (1; 2 when a layer has a
                                  delay line; 3 when one has sensing = "relu";
                                  4 when one has sensing = "relu2"; 5 when one has
                                  sensing = "relu-key"),
                                  producer, dt, time_unit,
                                  input_size, input_levels, n_layers, checksum, meta (JSON)
    /graph                 attrs: kind = "chain"; dataset edges [n_layers, 2] (S32):
                                  ("input", "layer0"), ("layer0", "layer1"), ...
    /layers/<i>            attrs: type ("amsu" | "lif"), name
    /layers/<i>/synapse    dataset weight [P, n_in] int16;
                           attrs weight_exp, num_weight_bits, num_message_bits, sign_mode
    /layers/<i>/neuron     attrs: the int fields, flags (0/1) and choices;
                           datasets (int32): the array fields present
                           (fields of a later format version than the file's are absent)
    /layers/<i>/bits       attrs: the width of every quantity (must equal this format's)
    /layers/<i>/scale      attrs: power-of-two exponents for reading states as floats

The first 512 bytes are an HDF5 user block (HDF5 readers skip it; the HDF5 data
start at byte 512): a text line and the SHA-256 digest of every byte after it, the
*seal*. :func:`load` checks the seal on the raw bytes before the HDF5 library parses
anything, so damage anywhere in the HDF5 part is refused at once (a damaged attribute
header can otherwise make the HDF5 library loop forever, docs/notes.md). Files written
before the seal (no user block) load as before; a file edited on purpose with h5py
needs :func:`seal` again.

Writing is atomic (a temporary file in the same folder, then a rename). Loading
reads every field, checks presence, dtype, shape and range against the schema and
names the first bad field in a ``ValueError``; it then checks a SHA-256 checksum
over the canonical content (:func:`neuromorphic.spec.canonical_digest`), so a
corrupted value that happens to stay in range is still caught. The metadata are not
in the checksum: the task description the command line builds inputs from is
validated instead (:func:`neuromorphic.spec.check_task`). Nothing half-built ever
leaves :func:`load`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from astro_neuron import __version__
from astro_neuron.io import atomic_write
from neuromorphic.spec import (
    FORMAT, FORMAT_VERSION, LAYER_TYPES, READABLE_VERSIONS, SYNAPSE_FIELDS, QuantizedNetwork,
    Synapse, bits_for, canonical_digest, check_task,
)

__all__ = ["FORMAT", "FORMAT_VERSION", "save", "load", "seal", "canonical_digest"]

#: bytes of the HDF5 user block that holds the seal (HDF5's smallest user block)
USERBLOCK = 512
_SEAL = b"astro-neuron integer network; SHA-256 of bytes 512 to the end:\n"
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"

_SYN_ATTRS = tuple(f for f in SYNAPSE_FIELDS if f.kind != "array")


# ----------------------------------------------------------------- save

def save(net: QuantizedNetwork, path) -> Path:
    """Write ``net`` to ``path`` (HDF5) atomically; returns the path."""
    if not isinstance(net, QuantizedNetwork):
        raise TypeError(f"save() takes a QuantizedNetwork, got {type(net).__name__}")
    path = Path(path)
    try:
        meta_json = json.dumps(net.meta, sort_keys=True, default=str)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"net.meta must be JSON-serialisable: {exc}") from None

    version = net.format_version

    def write(tmp: str) -> None:
        with h5py.File(tmp, "w", userblock_size=USERBLOCK) as f:
            f.attrs["format"] = FORMAT
            f.attrs["format_version"] = version
            f.attrs["producer"] = f"astro-neuron {__version__}"
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
                w = SYNAPSE_FIELDS[0]
                sg.create_dataset(w.name, data=l.synapse.weight.astype(w.file_dtype))
                for fd in _SYN_ATTRS:
                    _write_attr(sg, fd, getattr(l.synapse, fd.name))
                ng = lg.create_group("neuron")
                for fd in _ordered(l.FIELDS, version):
                    value = getattr(l, fd.name)
                    if fd.kind != "array":
                        _write_attr(ng, fd, value)
                    elif value is not None:
                        ng.create_dataset(fd.name, data=np.asarray(value, dtype=fd.file_dtype))
                bg = lg.create_group("bits")
                for k, v in bits_for(version).items():
                    bg.attrs[k] = v
                cg = lg.create_group("scale")
                for k, v in l.scale.items():
                    cg.attrs[k] = int(v)
            f.attrs["checksum"] = canonical_digest(net)
        seal(tmp)

    return atomic_write(path, write)


def _body_digest(fh) -> str:
    fh.seek(USERBLOCK)
    h = hashlib.sha256()
    for block in iter(lambda: fh.read(1 << 20), b""):
        h.update(block)
    return h.hexdigest()


def seal(path) -> Path:
    """Write the seal (the SHA-256 digest of every byte after the 512-byte user block)
    into the user block of a file written by :func:`save`. :func:`save` does this
    itself; call it after editing a file on purpose with h5py (the file's own checksum
    and every field check still apply when it is loaded)."""
    path = Path(path)
    with open(path, "r+b") as fh:
        if fh.read(USERBLOCK + len(_HDF5_SIGNATURE))[USERBLOCK:] != _HDF5_SIGNATURE:
            raise ValueError(f"{path}: not a file written by neuromorphic.save with a "
                             f"{USERBLOCK}-byte user block (files written before the seal "
                             "have none: load and save the network again)")
        head = _SEAL + _body_digest(fh).encode() + b"\n"
        fh.seek(0)
        fh.write(head + bytes(USERBLOCK - len(head)))
    return path


def _check_seal(path: Path) -> None:
    """Refuse a file whose bytes after the user block do not match its seal, before
    h5py reads it. A file without a user block (written before the seal) passes."""
    with open(path, "rb") as fh:
        head = fh.read(USERBLOCK + len(_HDF5_SIGNATURE))
        sealed = head.startswith(_SEAL)
        if not sealed and head[USERBLOCK:] != _HDF5_SIGNATURE:
            return                      # no user block: an older file, checked field by field
        n = len(_SEAL)
        written = head[n:n + 64]
        if not sealed or head[n + 64:USERBLOCK] != b"\n" + bytes(USERBLOCK - n - 65) or \
                any(c not in b"0123456789abcdef" for c in written):
            raise ValueError(f"{path}: damaged file: its first {USERBLOCK} bytes (the seal "
                             "with the digest of the rest) are not as written")
        if _body_digest(fh) != written.decode():
            raise ValueError(f"{path}: damaged file: its bytes do not match the digest "
                             "written with them (truncated, or changed after it was "
                             "written; after a deliberate edit with h5py call "
                             "neuromorphic.fileio.seal)")


_KIND_ORDER = {"int": 0, "flag": 1, "choice": 2, "array": 3}


def _ordered(fields: tuple, version: int) -> list:
    """The fields a file of ``version`` stores, in the file's order: ints, flags, choices,
    arrays (each in table order)."""
    return sorted((f for f in fields if f.since <= version), key=lambda f: _KIND_ORDER[f.kind])


def _write_attr(group, fd, value) -> None:
    if fd.kind == "choice":
        group.attrs[fd.name] = value
    else:
        group.attrs[fd.name] = int(value)


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
        if kind in ("int", "flag"):
            if isinstance(val, (bool, np.bool_)) or not isinstance(val, (int, np.integer)):
                self.fail(field, f"must be an integer, got {val!r} ({type(val).__name__})")
            if kind == "flag":
                if int(val) not in (0, 1):
                    self.fail(field, f"must be 0 or 1, got {int(val)}")
                return bool(val)
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

    def stores(self, group: str, fd) -> bool:
        """Whether ``group`` holds field ``fd`` (a dataset or an attribute)."""
        if fd.kind == "array":
            return self.has(f"{group}/{fd.name}")
        try:
            return fd.name in self.node(group).attrs
        except ValueError:
            raise
        except Exception:
            return False

    def field(self, group: str, fd) -> Any:
        """One declared field of ``group`` (an absent array reads as None)."""
        if fd.kind == "array":
            name = f"{group}/{fd.name}"
            return self.array(name) if self.has(name) else None
        return self.attr(group, fd.name, "str" if fd.kind == "choice" else fd.kind)


def _read(r: _Reader) -> tuple[QuantizedNetwork, str]:
    fmt = r.attr("/", "format", "str")
    if fmt != FORMAT:
        r.fail("format", f"must be {FORMAT!r}, got {fmt!r}: not an integer network file")
    version = r.attr("/", "format_version", "int")
    if version not in READABLE_VERSIONS:
        r.fail("format_version", f"is {version}; this astro-neuron reads versions "
                                 f"{', '.join(map(str, READABLE_VERSIONS))} only")
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
        want_bits = bits_for(version)
        bits = {k: r.attr(f"{g}/bits", k, "int") for k in want_bits}
        for k, v in bits.items():
            if v != want_bits[k]:
                r.fail(f"{g}/bits/{k}", f"is {v}; format version {version} uses "
                                        f"{want_bits[k]}")
        sc = r.node(f"{g}/scale")
        try:
            scale_keys = list(sc.attrs.keys())
        except Exception as exc:
            r.fail(f"{g}/scale", f"cannot be read ({exc})")
        scale = {k: r.attr(f"{g}/scale", k, "int") for k in scale_keys}
        sy = f"{g}/synapse"
        syn = Synapse(r.array(f"{sy}/weight"), **{fd.name: r.field(sy, fd) for fd in _SYN_ATTRS})
        if typ not in LAYER_TYPES:
            r.fail(f"{g}/type", f"must be one of {sorted(LAYER_TYPES)}, got {typ!r}")
        cls = LAYER_TYPES[typ]
        kw = {}
        for fd in cls.FIELDS:
            if fd.since <= version:
                kw[fd.name] = r.field(f"{g}/neuron", fd)
            elif r.stores(f"{g}/neuron", fd):
                r.fail(f"{g}/neuron/{fd.name}", f"is not part of format version {version} "
                                                f"(it is a field of version {fd.since})")
        layers.append(cls(syn, name=name, scale=scale, **kw))
    net = QuantizedNetwork(tuple(layers), input_size=input_size, input_levels=input_levels,
                           dt=dt, meta=meta)
    if net.format_version != version:
        r.fail("format_version", f"is {version}, but the network it holds is of version "
                                 f"{net.format_version} (a file carries the lowest version "
                                 "that expresses its network: 2 only when a layer has a "
                                 "delay line, conv_size > 1; 3 only when one has "
                                 "sensing='relu'; 4 only when one has sensing='relu2'; 5 "
                                 "only when one has sensing='relu-key')")
    try:
        check_task(meta.get("task"), net.input_size)
    except ValueError as exc:
        r.fail("meta", str(exc))
    return net, checksum


def load(path) -> QuantizedNetwork:
    """Read and validate a file written by :func:`save`.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the
    field for anything else wrong: not HDF5, truncated, wrong format or version,
    missing field, wrong dtype or shape, out-of-range value, a task description out of
    bounds or not matching the network, checksum mismatch, bytes that do not match the
    file's seal (checked first, before the HDF5 library reads the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"integer network file not found: {path}")
    _check_seal(path)
    try:
        f = h5py.File(path, "r")
    except Exception as exc:
        raise ValueError(f"{path}: not a readable HDF5 file (truncated or corrupt?): "
                         f"{type(exc).__name__}: {exc}") from None
    try:
        with f:
            try:
                net, checksum = _read(_Reader(f, path))
            except (ValueError, TypeError) as exc:
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
