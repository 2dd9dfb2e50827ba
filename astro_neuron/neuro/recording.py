"""Recorders: run a layer, a population or a small network and keep what happened.

:func:`record` returns a :class:`Recording`: for each population (the input
included), time-major arrays ``[T, B, ...]``:

==========  ==============  ==================================================
field       shape           meaning
==========  ==============  ==================================================
``spikes``  ``[T, B, N]``   spikes (0/1, or 0..L for graded spikes)
``u``       ``[T, B, N]``   membrane potential before reset (units of theta)
``o``       ``[T, B, N]``   astrocyte drive added before the threshold
``current`` ``[T, B, n]``   an analog input (for input populations)
``astro``   ``[T, B, A]``   one number per astrocyte: ``|H^a|`` (linear) or mean Ca2+ (µM)
``H``       ``[T, B, ...]`` the full astrocyte state (``astro="full"``)
==========  ==============  ==================================================

**Run file format** (``Recording.save`` / :func:`load_recording`): one ``.npz``
(NumPy zip, no pickle) holding the arrays as ``"<population>/<field>"`` and a
``"__meta__"`` entry, UTF-8 JSON::

    {"format": "astro-neuron-recording", "version": 1, "dt": 1.0, "time_unit": "ms",
     "populations": {"<name>": {"fields": [...], "attrs": {...}}}, "info": {...}}

``attrs`` carry per-population facts (``threshold``, ``astro_model``,
``astro_label``); ``info`` free JSON (e.g. ``events``: ``{"cue end": 200.0}`` in time
units, drawn as vertical lines; ``tokens``: a list of strings for a token raster).
Loading checks all of it and names what is missing or wrong.
"""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor, nn

from astro_neuron.amsu import AMSU
from astro_neuron.astrocytes import summary_label
from astro_neuron.io import atomic_write
from astro_neuron.neuro.population import TripartitePopulation
from astro_neuron.neuro.traces import TRACE_KINDS, astro_trajectory
from astro_neuron.validate import choice

__all__ = ["FORMAT", "VERSION", "FIELDS", "Recording", "record", "load_recording"]

FORMAT = "astro-neuron-recording"
VERSION = 1
#: field -> number of dimensions (None: at least 4)
FIELDS: dict[str, Optional[int]] = {"spikes": 3, "u": 3, "o": 3, "current": 3, "astro": 3,
                                    "H": None}
_META = "__meta__"


@dataclass
class Recording:
    """What a run produced; arrays are NumPy ``[T, B, ...]`` (see the module docstring)."""

    dt: float
    time_unit: str
    populations: dict[str, dict[str, np.ndarray]]
    attrs: dict[str, dict[str, Any]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _validate(self, "recording")

    @property
    def T(self) -> int:
        """Number of time steps."""
        return next(iter(next(iter(self.populations.values())).values())).shape[0]

    @property
    def batch_size(self) -> int:
        return next(iter(next(iter(self.populations.values())).values())).shape[1]

    def times(self) -> np.ndarray:
        """Time of each step ``[T]`` in ``time_unit``."""
        return np.arange(self.T) * self.dt

    def get(self, population: str, name: str, sample: int = 0) -> Optional[np.ndarray]:
        """``[T, ...]`` array of one sample, or ``None`` if not recorded."""
        if population not in self.populations:
            raise KeyError(f"no population {population!r} in this recording "
                           f"(has {list(self.populations)})")
        if not 0 <= sample < self.batch_size:
            raise ValueError(f"sample must be in [0, {self.batch_size}), got {sample}")
        arr = self.populations[population].get(name)
        return None if arr is None else arr[:, sample]

    # ------------------------------------------------------------ files
    def save(self, path) -> Path:
        """Write the run file (atomically: a reader never sees a partial file)."""
        path = Path(path)
        if path.suffix != ".npz":
            raise ValueError(f"a recording is saved as .npz, got {path.name!r}")
        meta = {"format": FORMAT, "version": VERSION, "dt": self.dt,
                "time_unit": self.time_unit, "info": self.info,
                "populations": {name: {"fields": sorted(arrs), "attrs": self.attrs.get(name, {})}
                                for name, arrs in self.populations.items()}}
        arrays = {f"{name}/{f}": a for name, arrs in self.populations.items()
                  for f, a in arrs.items()}
        arrays[_META] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)

        def write(tmp: str) -> None:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **arrays)
        return atomic_write(path, write)

    @classmethod
    def load(cls, path) -> "Recording":
        return load_recording(path)


def load_recording(path) -> Recording:
    """Read a run file written by :meth:`Recording.save`, with clear errors for a
    missing, corrupt or incomplete file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"recording not found: {path}")
    if not path.is_file():
        raise IsADirectoryError(f"recording path is not a file: {path}")
    what = f"recording {path}"
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{what} is not a .npz (zip) file: corrupt, truncated, or another "
                         "kind of file")
    try:
        with np.load(path, allow_pickle=False) as z:
            files = set(z.files)
            if _META not in files:
                raise ValueError(f"{what} has no {_META!r} entry: not an astro-neuron "
                                 "recording (write one with Recording.save)")
            try:
                meta = json.loads(bytes(z[_META]).decode("utf-8"))
            except (ValueError, UnicodeDecodeError) as exc:
                raise ValueError(f"{what}: its metadata is not valid JSON ({exc})") from None
            if not isinstance(meta, dict):
                raise ValueError(f"{what}: its metadata must be a JSON object")
            if meta.get("format") != FORMAT:
                raise ValueError(f"{what} has format {meta.get('format')!r}, expected {FORMAT!r}")
            version = meta.get("version")
            if not isinstance(version, int) or version > VERSION or version < 1:
                raise ValueError(f"{what} has version {version!r}; this astro-neuron reads "
                                 f"versions 1..{VERSION}")
            for key in ("dt", "time_unit", "populations"):
                if key not in meta:
                    raise ValueError(f"{what}: metadata lacks the field {key!r}")
            pops_meta = meta["populations"]
            if not isinstance(pops_meta, dict) or not pops_meta:
                raise ValueError(f"{what}: metadata 'populations' must be a non-empty object")
            populations, attrs = {}, {}
            for name, pm in pops_meta.items():
                if not isinstance(pm, dict) or not isinstance(pm.get("fields"), list):
                    raise ValueError(f"{what}: population {name!r} lacks its list of 'fields'")
                arrs = {}
                for f in pm["fields"]:
                    key = f"{name}/{f}"
                    if key not in files:
                        raise ValueError(f"{what} lacks the array {key!r} listed in its "
                                         "metadata (truncated or edited file?)")
                    arrs[f] = z[key]
                populations[name] = arrs
                attrs[name] = pm.get("attrs", {})
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise ValueError(f"{what} is not a readable .npz file ({type(exc).__name__}: {exc})") \
            from None
    except ValueError as exc:
        if str(exc).startswith(what):
            raise
        raise ValueError(f"{what} is corrupt ({exc})") from None
    rec = Recording.__new__(Recording)
    rec.dt, rec.time_unit = meta["dt"], meta["time_unit"]
    rec.populations, rec.attrs, rec.info = populations, attrs, meta.get("info", {})
    _validate(rec, what)
    return rec


def _validate(rec: Recording, what: str) -> None:
    dt = rec.dt
    if isinstance(dt, bool) or not isinstance(dt, (int, float)) or not math.isfinite(dt) or dt <= 0:
        raise ValueError(f"{what}: dt must be a positive number, got {dt!r}")
    rec.dt = float(dt)
    if rec.time_unit not in ("ms", "step"):
        raise ValueError(f"{what}: time_unit must be 'ms' or 'step', got {rec.time_unit!r}")
    if not isinstance(rec.populations, dict) or not rec.populations:
        raise ValueError(f"{what}: needs at least one population")
    if not isinstance(rec.info, dict):
        raise ValueError(f"{what}: info must be a dict")
    T = B = None
    for name, arrs in rec.populations.items():
        if not isinstance(name, str) or not name or "/" in name:
            raise ValueError(f"{what}: population names must be non-empty strings without "
                             f"'/', got {name!r}")
        if not isinstance(arrs, dict) or not arrs:
            raise ValueError(f"{what}: population {name!r} has no recorded field")
        for f, a in list(arrs.items()):
            if f not in FIELDS:
                raise ValueError(f"{what}: unknown field {f!r} in population {name!r} "
                                 f"(known: {list(FIELDS)})")
            a = np.asarray(a)
            if not np.issubdtype(a.dtype, np.number):
                raise ValueError(f"{what}: {name}/{f} is not numeric (dtype {a.dtype})")
            nd = FIELDS[f]
            if (nd is not None and a.ndim != nd) or (nd is None and a.ndim < 4):
                want = f"{nd}-D [T, B, ...]" if nd else "at least 4-D [T, B, ...]"
                raise ValueError(f"{what}: {name}/{f} must be {want}, got shape {list(a.shape)}")
            if T is None:
                T, B = a.shape[:2]
            if a.shape[:2] != (T, B):
                raise ValueError(f"{what}: {name}/{f} has [T, B] = {list(a.shape[:2])}, other "
                                 f"arrays have {[T, B]}")
            if not np.isfinite(a).all():
                raise ValueError(f"{what}: {name}/{f} contains NaN or Inf")
            arrs[f] = a
        ns = {f: a.shape[2] for f, a in arrs.items() if f in ("spikes", "u", "o")}
        if len(set(ns.values())) > 1:
            raise ValueError(f"{what}: population {name!r} has different neuron counts {ns}")
    if T == 0:
        raise ValueError(f"{what}: has no time steps")


# ---------------------------------------------------------------- recording

def _np(t: Tensor) -> np.ndarray:
    return t.detach().cpu().to(torch.float32).numpy()


def _is_binary(x: Tensor) -> bool:
    return bool(((x == 0) | (x == 1)).all())


def _layers(module: nn.Module) -> list[tuple[str, nn.Module]]:
    if isinstance(module, (AMSU, TripartitePopulation)):
        return [("population" if isinstance(module, TripartitePopulation) else "amsu", module)]
    seq = getattr(module, "core", module)                    # MemoryNet keeps its layers in .core
    if isinstance(seq, nn.Sequential) and len(seq) and all(
            isinstance(m, (AMSU, TripartitePopulation)) for m in seq):
        if len(seq) == 1:
            return _layers(seq[0])
        return [(f"layer{i}", m) for i, m in enumerate(seq)]
    raise TypeError("record() takes an AMSU, a TripartitePopulation, an nn.Sequential of them "
                    f"or a network with such a .core (MemoryNet); got {type(module).__name__}")


@torch.no_grad()
def record(module: nn.Module, x_seq: Tensor, *, current: Optional[Tensor] = None,
           astro: str = "summary", time_unit: Optional[str] = None,
           input_name: str = "input", info: Optional[dict] = None) -> Recording:
    """Run ``module`` on ``x_seq`` ``[T, B, in]`` step by step and record it.

    ``module``: an :class:`~astro_neuron.AMSU`, a :class:`TripartitePopulation`, an
    ``nn.Sequential`` of them, or a network holding one as ``.core`` (``MemoryNet``).
    Records the input, then per layer spikes, membrane ``u``, astrocyte drive ``o``
    and the astrocyte state (``astro="summary"``: one number per astrocyte;
    ``"full"``: the whole state). ``current``: injected current for a single
    population (``[T, B, N]``-broadcastable). ``time_unit``: ``"ms"`` or ``"step"``
    (default: the population's preset; ``"ms"`` for nonlinear astrocytes; else
    ``"step"``).
    """
    choice("astro", astro, TRACE_KINDS)
    if not isinstance(x_seq, Tensor) or x_seq.dim() != 3:
        raise ValueError("x_seq must be a [T, B, in] tensor, got "
                         f"{list(x_seq.shape) if isinstance(x_seq, Tensor) else type(x_seq).__name__}")
    if not bool(torch.isfinite(x_seq).all()):
        raise ValueError("x_seq contains NaN or Inf")
    layers = _layers(module)
    if current is not None and not (len(layers) == 1 and isinstance(layers[0][1], TripartitePopulation)):
        raise ValueError("current injection needs a single TripartitePopulation; an AMSU "
                         "takes currents through its input x_seq")
    first = layers[0][1]
    if time_unit is None:
        if isinstance(first, TripartitePopulation):
            time_unit = first.time_unit
        else:
            time_unit = "step" if first.spec.linear_astro else "ms"
    pops: dict[str, dict[str, np.ndarray]] = {
        input_name: {"spikes" if _is_binary(x_seq) else "current": _np(x_seq)}}
    attrs: dict[str, dict] = {input_name: {"kind": "input"}}
    x = x_seq
    for name, layer in layers:
        if name in pops:
            raise ValueError(f"population name {name!r} is used twice; pick another input_name")
        if isinstance(layer, TripartitePopulation):
            out, _ = layer.run(x, current=current, trace=astro)
            thr, model, A = layer.neurons.threshold, layer.astro_model, layer.n_astrocytes
        else:
            out, _, trace = astro_trajectory(x, None, layer.params(), layer.spec, keep=astro)
            thr, model, A = layer.threshold, layer.astro_model, layer.spec.n_astrocytes
            out = (out.spikes, out.u, out.o, trace)
        spikes, u, o, trace = out
        pops[name] = {"spikes": _np(spikes), "u": _np(u), "o": _np(o)}
        if trace is not None:
            pops[name]["astro" if astro == "summary" else "H"] = _np(trace)
        attrs[name] = {"kind": type(layer).__name__, "threshold": float(thr.mean()),
                       "astro_model": model, "n_astrocytes": A,
                       "astro_label": summary_label(model)}
        x = spikes
    dt = float(first.dt)
    return Recording(dt, time_unit, pops, attrs, dict(info or {}))
