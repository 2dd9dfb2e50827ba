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

``attrs`` carry per-population facts (``threshold``: the mean, ``thresholds``: one per
recorded neuron, ``neurons``: the recorded neurons' indices in their population,
``territory``: the astrocyte whose territory holds each recorded neuron, ``astro_model``,
``astro_label``); ``info`` free JSON (e.g. ``events``: ``{"cue end": 200.0}`` in time
units, drawn as vertical lines; ``epochs``: ``{"cue": [0, 10], ...}`` in time units,
drawn as shaded spans; ``labels``: one condition per batch sample; ``tokens``: a list of
strings for a token raster). Version 2 adds ``"every"`` and ``"n_steps"`` (below);
version 1 files load with ``every = 1``. Loading checks all of it and names what is
missing or wrong.

**Getting arrays out**: ``rec["population"]["spikes"]`` is the ``[T, B, N]`` array
(``rec["population"]`` the dict of one population's fields); ``rec.get("population",
"u", sample=0)`` one sample ``[T, N]``; ``rec.times("u")`` the time of each row.

**Subsets and sampling interval** (``record(..., neurons=..., every=...)``): only the
chosen neurons are kept (their indices in ``attrs[pop]["neurons"]``); spikes are kept
at every step, the traces (``u``, ``o``, ``current``, ``astro``, ``H``) every ``every``-th
step, at steps ``0, every, 2 every, ...`` (``ceil(T / every)`` rows).
"""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor, nn

from astro_neuron.amsu import AMSU
from astro_neuron.astrocytes import summary_label
from astro_neuron.io import atomic_write
from astro_neuron.neuro.population import TripartitePopulation
from astro_neuron.neuro.traces import TRACE_KINDS, astro_trajectory
from astro_neuron.validate import choice, positive_int

__all__ = ["FORMAT", "VERSION", "FIELDS", "TRACE_FIELDS", "Recording", "record",
           "load_recording"]

FORMAT = "astro-neuron-recording"
VERSION = 2
#: field -> number of dimensions (None: at least 4)
FIELDS: dict[str, Optional[int]] = {"spikes": 3, "u": 3, "o": 3, "current": 3, "astro": 3,
                                    "H": None}
#: fields sampled every ``Recording.every`` steps (spikes are kept at every step)
TRACE_FIELDS = ("u", "o", "current", "astro", "H")
_META = "__meta__"


@dataclass
class Recording:
    """What a run produced; arrays are NumPy ``[T, B, ...]`` (see the module docstring)."""

    dt: float
    time_unit: str
    populations: dict[str, dict[str, np.ndarray]]
    attrs: dict[str, dict[str, Any]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    every: int = 1                       # steps between two rows of a trace field
    n_steps: Optional[int] = None        # T (derived from the arrays when None)

    def __post_init__(self) -> None:
        _validate(self, "recording")

    @property
    def T(self) -> int:
        """Number of time steps (of ``dt``) the run lasted."""
        return self.n_steps

    @property
    def duration(self) -> float:
        """``T * dt`` in ``time_unit``."""
        return self.T * self.dt

    @property
    def batch_size(self) -> int:
        return next(iter(next(iter(self.populations.values())).values())).shape[1]

    def times(self, name: str = "spikes") -> np.ndarray:
        """Time of each row of field ``name`` in ``time_unit``: every step for spikes
        ``[T]``, every ``every``-th step for traces ``[ceil(T / every)]``."""
        step = self.every if name in TRACE_FIELDS else 1
        return np.arange(0, self.T, step) * self.dt

    def __getitem__(self, population: str) -> dict[str, np.ndarray]:
        """``rec["population"]`` -> that population's fields, e.g.
        ``rec["population"]["spikes"]`` ``[T, B, N]``."""
        if population not in self.populations:
            raise KeyError(f"no population {population!r} in this recording "
                           f"(has {list(self.populations)})")
        return self.populations[population]

    def __contains__(self, population: str) -> bool:
        return population in self.populations

    def get(self, population: str, name: str, sample: int = 0) -> Optional[np.ndarray]:
        """``[T, ...]`` array of one sample, or ``None`` if not recorded."""
        arrs = self[population]
        if isinstance(sample, bool) or not isinstance(sample, (int, np.integer)) \
                or not 0 <= sample < self.batch_size:
            raise ValueError(f"sample must be in [0, {self.batch_size}), got {sample}")
        if name not in FIELDS:
            raise ValueError(f"unknown field {name!r}; fields are {list(FIELDS)}")
        arr = arrs.get(name)
        return None if arr is None else arr[:, sample]

    def neuron_ids(self, population: str) -> np.ndarray:
        """Index in its population of each recorded neuron (all neurons unless
        ``record(..., neurons=...)`` chose a subset)."""
        ids = self.attrs.get(population, {}).get("neurons")
        if ids is not None:
            return np.asarray(ids, dtype=np.int64)
        arrs = self[population]
        a = next((arrs[f] for f in ("spikes", "u", "o", "current") if f in arrs), None)
        if a is None:
            raise ValueError(f"population {population!r} has no per-neuron field")
        return np.arange(a.shape[2])

    def thresholds(self, population: str) -> Optional[np.ndarray]:
        """Each recorded neuron's threshold ``[N]`` (``None`` if not known)."""
        at = self.attrs.get(population, {})
        if "thresholds" in at:
            return np.asarray(at["thresholds"], dtype=np.float64)
        if "threshold" in at:
            return np.full(len(self.neuron_ids(population)), float(at["threshold"]))
        return None

    # ------------------------------------------------------------ files
    def save(self, path) -> Path:
        """Write the run file (atomically: a reader never sees a partial file)."""
        path = Path(path)
        if path.suffix != ".npz":
            raise ValueError(f"a recording is saved as .npz, got {path.name!r}")
        meta = {"format": FORMAT, "version": VERSION, "dt": self.dt,
                "time_unit": self.time_unit, "info": self.info, "every": self.every,
                "n_steps": self.n_steps,
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
    rec.every, rec.n_steps = meta.get("every", 1), meta.get("n_steps")
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
    every = rec.every
    if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
        raise ValueError(f"{what}: every must be an integer >= 1, got {every!r}")
    rec.every = int(every)
    n_steps = rec.n_steps
    if n_steps is not None and (isinstance(n_steps, bool) or not isinstance(
            n_steps, (int, np.integer)) or n_steps < 1):
        raise ValueError(f"{what}: n_steps must be an integer >= 1, got {n_steps!r}")
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
            if T is None and f not in TRACE_FIELDS:
                T = a.shape[0]
            if B is None:
                B = a.shape[1]
            if a.shape[1] != B:
                raise ValueError(f"{what}: {name}/{f} has batch size {a.shape[1]}, other "
                                 f"arrays have {B}")
            if not np.isfinite(a).all():
                raise ValueError(f"{what}: {name}/{f} contains NaN or Inf")
            arrs[f] = a
        ns = {f: a.shape[2] for f, a in arrs.items() if f in ("spikes", "u", "o")}
        if len(set(ns.values())) > 1:
            raise ValueError(f"{what}: population {name!r} has different neuron counts {ns}")
    if T is None:                                   # traces only
        T = n_steps if n_steps is not None else None
        if T is None:
            if rec.every != 1:
                raise ValueError(f"{what}: a recording of traces only with every="
                                 f"{rec.every} needs n_steps (the run's number of steps)")
            T = next(iter(next(iter(rec.populations.values())).values())).shape[0]
    if n_steps is not None and int(n_steps) != T:
        raise ValueError(f"{what}: n_steps={n_steps} but the spikes have {T} steps")
    if T == 0:
        raise ValueError(f"{what}: has no time steps")
    rec.n_steps = int(T)
    rows = -(-T // rec.every)
    for name, arrs in rec.populations.items():
        for f, a in arrs.items():
            want = rows if f in TRACE_FIELDS else T
            if a.shape[0] != want:
                kind = (f"ceil(T / every) = ceil({T} / {rec.every}) = {rows}"
                        if f in TRACE_FIELDS else f"T = {T}")
                raise ValueError(f"{what}: {name}/{f} has {a.shape[0]} time rows, expected "
                                 f"{kind}")


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


Selection = Union[Sequence[int], slice, range, np.ndarray, Tensor]


def _selection(sel, n: int, what: str) -> Optional[np.ndarray]:
    """Indices ``[k]`` chosen by ``sel`` among ``n`` neurons (``None``: all of them)."""
    if sel is None:
        return None
    if isinstance(sel, slice):
        idx = np.arange(n)[sel]
    else:
        if isinstance(sel, Tensor):
            sel = sel.detach().cpu().numpy()
        arr = np.asarray(sel)
        if arr.dtype == bool:
            if arr.shape != (n,):
                raise ValueError(f"{what}: a boolean mask must have shape [{n}], got "
                                 f"{list(arr.shape)}")
            idx = np.nonzero(arr)[0]
        else:
            if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
                raise TypeError(f"{what} must be a 1-D sequence of neuron indices, a slice or "
                                f"a boolean mask, got {sel!r}"[:200])
            idx = arr.astype(np.int64)
            bad = idx[(idx < 0) | (idx >= n)]
            if bad.size:
                raise ValueError(f"{what}: neuron indices {bad[:10].tolist()} out of range "
                                 f"[0, {n})")
            if len(np.unique(idx)) != len(idx):
                raise ValueError(f"{what}: neuron indices repeat")
    if idx.size == 0:
        raise ValueError(f"{what} selects no neuron (the population has {n})")
    return idx


def _territory_of(layer: nn.Module, n: int) -> list[int]:
    """For each neuron, the first astrocyte whose territory holds it (``-1``: none)."""
    if isinstance(layer, TripartitePopulation):
        mask = layer.territories.neurons                            # [A, N] bool
        first = mask.to(torch.int8).argmax(0)
        return torch.where(mask.any(0), first, torch.full_like(first, -1)).tolist()
    A = layer.spec.n_astrocytes if layer.spec.astrocyte else 0
    if not A or n % A:
        return [-1] * n
    return [j // (n // A) for j in range(n)]                        # the AM-SU's blocks


@torch.no_grad()
def record(module: nn.Module, x_seq: Tensor, *, current: Optional[Tensor] = None,
           astro: str = "summary", time_unit: Optional[str] = None,
           input_name: str = "input", info: Optional[dict] = None,
           neurons: Union[None, Selection, Mapping[str, Selection]] = None,
           every: int = 1) -> Recording:
    """Run ``module`` on ``x_seq`` ``[T, B, in]`` step by step and record it.

    ``module``: an :class:`~astro_neuron.AMSU`, a :class:`TripartitePopulation`, an
    ``nn.Sequential`` of them, or a network holding one as ``.core`` (``MemoryNet``).
    Records the input, then per layer spikes, membrane ``u``, astrocyte drive ``o``
    and the astrocyte state (``astro="summary"``: one number per astrocyte;
    ``"full"``: the whole state). ``current``: injected current for a single
    population (``[T, B, N]``-broadcastable). ``time_unit``: ``"ms"`` or ``"step"``
    (default: the population's preset; ``"ms"`` for nonlinear astrocytes; else
    ``"step"``).

    ``neurons``: keep only these neurons of every recorded layer (a list of indices, a
    ``slice``, a boolean mask), or a dict ``{population name: selection}`` (the input
    included); indices out of range are an error. ``every``: keep the traces (``u``,
    ``o``, input ``current``, ``astro``, ``H``) every ``every``-th step (spikes are kept at
    every step). The run itself still computes every neuron and every step; the
    selection decides what is kept and saved.
    """
    choice("astro", astro, TRACE_KINDS)
    every = positive_int("every", every)
    if not isinstance(x_seq, Tensor) or x_seq.dim() != 3:
        raise ValueError("x_seq must be a [T, B, in] tensor, got "
                         f"{list(x_seq.shape) if isinstance(x_seq, Tensor) else type(x_seq).__name__}")
    if not bool(torch.isfinite(x_seq).all()):
        raise ValueError("x_seq contains NaN or Inf")
    layers = _layers(module)
    if current is not None and not (len(layers) == 1 and isinstance(layers[0][1], TripartitePopulation)):
        raise ValueError("current injection needs a single TripartitePopulation; an AMSU "
                         "takes currents through its input x_seq")
    names = [input_name] + [name for name, _ in layers]
    if len(set(names)) != len(names):
        raise ValueError(f"population name {input_name!r} is used twice; pick another "
                         "input_name")
    if isinstance(neurons, Mapping):
        unknown = sorted(set(neurons) - set(names))
        if unknown:
            raise KeyError(f"neurons names populations {unknown} that this run does not "
                           f"have (it has {names})")
        select = dict(neurons)
    else:
        select = {name: neurons for name, _ in layers} if neurons is not None else {}
    first = layers[0][1]
    if time_unit is None:
        if isinstance(first, TripartitePopulation):
            time_unit = first.time_unit
        else:
            time_unit = "step" if first.spec.linear_astro else "ms"
    tr = slice(None, None, every)                                   # rows kept of a trace
    in_idx = _selection(select.get(input_name), x_seq.shape[2], f"neurons[{input_name!r}]")
    xin = x_seq if in_idx is None else x_seq[..., torch.as_tensor(in_idx)]
    binary = _is_binary(x_seq)
    pops: dict[str, dict[str, np.ndarray]] = {
        input_name: {"spikes": _np(xin)} if binary else {"current": _np(xin[tr])}}
    attrs: dict[str, dict] = {input_name: {"kind": "input"}}
    if in_idx is not None:
        attrs[input_name]["neurons"] = in_idx.tolist()
    x = x_seq
    for name, layer in layers:
        if isinstance(layer, TripartitePopulation):
            out, _ = layer.run(x, current=current, trace=astro)
            thr, model, A = layer.neurons.threshold, layer.astro_model, layer.n_astrocytes
        else:
            out, _, trace = astro_trajectory(x, None, layer.params(), layer.spec, keep=astro)
            thr, model, A = layer.threshold, layer.astro_model, layer.spec.n_astrocytes
            out = (out.spikes, out.u, out.o, trace)
        spikes, u, o, trace = out
        N = spikes.shape[-1]
        idx = _selection(select.get(name), N, f"neurons[{name!r}]" if isinstance(
            neurons, Mapping) else f"neurons (layer {name!r})")
        keep = np.arange(N) if idx is None else idx
        ki = torch.as_tensor(keep)
        pops[name] = {"spikes": _np(spikes[..., ki]), "u": _np(u[tr][..., ki]),
                      "o": _np(o[tr][..., ki])}
        if trace is not None:
            pops[name]["astro" if astro == "summary" else "H"] = _np(trace[tr])
        thr_n = thr.detach().cpu().to(torch.float64).expand(N)
        territory = _territory_of(layer, N)
        attrs[name] = {"kind": type(layer).__name__, "threshold": float(thr.mean()),
                       "thresholds": thr_n[ki].tolist(),
                       "territory": [territory[j] for j in keep.tolist()],
                       "astro_model": model, "n_astrocytes": A, "n_neurons": N,
                       "astro_label": summary_label(model)}
        if idx is not None:
            attrs[name]["neurons"] = keep.tolist()
        x = spikes
    dt = float(first.dt)
    return Recording(dt, time_unit, pops, attrs, dict(info or {}), every=every,
                     n_steps=int(x_seq.shape[0]))
