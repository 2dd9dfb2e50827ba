"""A :class:`~astro_neuron.neuro.Recording` as Neo objects and as an NWB file.

* :func:`to_neo` -> ``neo.Block``: one ``Segment`` per batch sample (trial) holding a
  ``SpikeTrain`` per neuron and an ``AnalogSignal`` per trace field (``u``, ``o``,
  ``current``, ``astro``), one ``Group`` per population linking them across trials, the
  ``events``/``epochs`` of ``rec.info`` as ``neo.Event``/``neo.Epoch``. Any Neo IO can
  then write it; Elephant analyses it (:mod:`.analysis` does this for you).
* :func:`save_nwb` -> an NWB 2 file (pynwb): the ``Units`` table holds every spiking
  neuron's spike times (columns ``population``, ``neuron``), the trials table one row
  per batch sample (trials placed back to back), and one ``TimeSeries`` per trace field
  in ``acquisition`` (``"<population>_<field>"``, ``[time, neuron]``, with its unit and
  sampling rate). NWB keeps times in seconds: a recording in ms converts exactly; a
  recording in steps needs ``step_s`` (the duration of one step in seconds).
  Written atomically. :func:`load_nwb` reads such a file back into a ``Recording``.

Units (:func:`trace_unit`): the AM-SU's membrane ``u`` and drive ``o`` are in units of
the neuron's threshold (dimensionless, NWB unit ``"threshold"``), a network's membrane
in its ``attrs["u_unit"]`` (mV); the astrocyte summary is in µM for calcium (Li-Rinzel)
and arbitrary units otherwise (``|H|`` of the linear model).
"""

from __future__ import annotations

import json
import uuid
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import numpy as np

from astro_neuron.io import atomic_write
from astro_neuron.neuro.analysis import spike_times, spike_trains, time_quantity
from astro_neuron.neuro.recording import FORMAT, TRACE_FIELDS, Recording
from astro_neuron.validate import positive_number

__all__ = ["to_neo", "save_nwb", "load_nwb", "trace_unit"]

_NOTES_PREFIX = "astro-neuron recording metadata (JSON): "


def trace_unit(rec: Recording, population: str, field: str) -> str:
    """Unit of a trace field: ``attrs["u_unit"]`` (e.g. ``"mV"``) or ``"threshold"``
    for ``u`` and ``o`` (multiples of the neuron's threshold); ``"uM"`` for a calcium
    astrocyte (Li-Rinzel, or an ``astro_label`` in µM); else ``"a.u."``."""
    at = rec.attrs.get(population, {})
    if field in ("u", "o"):
        return at.get("u_unit") or "threshold"
    if field == "astro" and (at.get("astro_model") == "li_rinzel"
                             or "µM" in str(at.get("astro_label", ""))):
        return "uM"
    return "a.u."


def _check(rec) -> Recording:
    if not isinstance(rec, Recording):
        raise TypeError(f"rec must be a Recording, got {type(rec).__name__}")
    return rec


def to_neo(rec: Recording, name: str = "astro-neuron recording"):
    """The recording as a ``neo.Block`` (see the module docstring)."""
    import neo  # deferred: Neo and quantities load only for an export
    import quantities as pq

    rec = _check(rec)
    tq = time_quantity(rec)
    units = {"threshold": pq.dimensionless, "uM": pq.uM, "a.u.": pq.dimensionless,
             "mV": pq.mV}
    block = neo.Block(name=name, dt=rec.dt, time_unit=rec.time_unit, every=rec.every,
                      n_steps=rec.T, info=json.dumps(rec.info))
    groups = {p: neo.Group(name=p, **{k: v for k, v in _plain(rec.attrs.get(p, {})).items()})
              for p in rec.populations}
    block.groups.extend(groups.values())
    ev = rec.info.get("events") or {}
    ep = rec.info.get("epochs") or {}
    for s in range(rec.batch_size):
        seg = neo.Segment(name=f"sample {s}", index=s)
        if "labels" in rec.info:
            seg.annotate(label=rec.info["labels"][s])
        for p, arrs in rec.populations.items():
            if "spikes" in arrs:
                trains = spike_trains(rec, p, s)
                seg.spiketrains.extend(trains)
                groups[p].spiketrains.extend(trains)
            for f in TRACE_FIELDS:
                if f not in arrs:
                    continue
                a = arrs[f][:, s]
                sig = neo.AnalogSignal(a.reshape(a.shape[0], -1),
                                       units=units.get(trace_unit(rec, p, f), pq.dimensionless),
                                       sampling_period=rec.dt * rec.every * tq,
                                       t_start=0 * tq, name=f"{p}_{f}", population=p,
                                       field=f, unit_name=trace_unit(rec, p, f),
                                       shape=list(a.shape[1:]))
                seg.analogsignals.append(sig)
                groups[p].analogsignals.append(sig)
        if ev:
            seg.events.append(neo.Event(np.asarray([float(t) for t in ev.values()]) * tq,
                                        labels=np.asarray(list(ev), dtype="U"), name="events"))
        if ep:
            starts = np.asarray([float(v[0]) for v in ep.values()])
            stops = np.asarray([float(v[1]) for v in ep.values()])
            seg.epochs.append(neo.Epoch(starts * tq, durations=(stops - starts) * tq,
                                        labels=np.asarray(list(ep), dtype="U"), name="epochs"))
        block.segments.append(seg)
    return block


def _plain(attrs: dict) -> dict:
    """Neo annotations must be simple values: lists become arrays, None is dropped."""
    out = {}
    for k, v in attrs.items():
        if v is None:
            continue
        out[k] = np.asarray(v) if isinstance(v, list) else v
    return out


def _seconds_per_unit(rec: Recording, step_s: Optional[float]) -> float:
    if rec.time_unit == "ms":
        if step_s is not None:
            raise ValueError("step_s is only for recordings in steps; this one is in ms")
        return 1e-3
    if step_s is None:
        raise ValueError("this recording's time unit is 'step': NWB stores seconds, so give "
                         "step_s, the duration of one step in seconds (e.g. step_s=1e-3)")
    return positive_number("step_s", step_s)


def save_nwb(rec: Recording, path, *, step_s: Optional[float] = None,
             session_description: str = "astro-neuron simulation",
             identifier: Optional[str] = None,
             session_start_time: Optional[datetime] = None) -> Path:
    """Write ``rec`` as an NWB file at ``path`` (``.nwb``), atomically; return the path.

    ``step_s``: seconds per time unit for recordings in steps (required for them).
    The astro-neuron metadata (``dt``, ``attrs``, ``info``) is kept as JSON in the
    file's ``notes`` so that :func:`load_nwb` restores the recording exactly.
    """
    from pynwb import NWBHDF5IO, NWBFile, TimeSeries  # deferred: pynwb takes seconds to import
    rec = _check(rec)
    path = Path(path)
    if path.suffix != ".nwb":
        raise ValueError(f"an NWB file ends in .nwb, got {path.name!r}")
    scale = _seconds_per_unit(rec, step_s)
    D = rec.duration * scale                                   # seconds per trial
    start = session_start_time or datetime.now(timezone.utc)
    if start.tzinfo is None:
        raise ValueError("session_start_time must be timezone-aware (e.g. tzinfo=timezone.utc)")
    meta = {"format": FORMAT, "dt": rec.dt, "time_unit": rec.time_unit, "every": rec.every,
            "n_steps": rec.T, "batch_size": rec.batch_size, "seconds_per_unit": scale,
            "attrs": rec.attrs, "info": rec.info,
            "fields": {p: sorted(a) for p, a in rec.populations.items()}}
    nwb = NWBFile(session_description=session_description,
                  identifier=identifier or str(uuid.uuid4()), session_start_time=start,
                  notes=_NOTES_PREFIX + json.dumps(meta))
    nwb.add_trial_column("sample", "index of the batch sample")
    labels = rec.info.get("labels")
    if labels is not None:
        nwb.add_trial_column("label", "condition of the sample (rec.info['labels'])")
    for s in range(rec.batch_size):
        row = {"start_time": s * D, "stop_time": (s + 1) * D, "sample": s}
        if labels is not None:
            row["label"] = str(labels[s])
        nwb.add_trial(**row)
    spiking = [p for p, a in rec.populations.items() if "spikes" in a]
    if spiking:
        nwb.add_unit_column("population", "population (layer) of the neuron")
        nwb.add_unit_column("neuron", "index of the neuron in its population")
    for p in spiking:
        ids = rec.neuron_ids(p)
        per_sample = [spike_times(rec, p, s) for s in range(rec.batch_size)]
        for j in range(len(ids)):
            times = np.concatenate([per_sample[s][j] * scale + s * D
                                    for s in range(rec.batch_size)])
            nwb.add_unit(spike_times=times, population=p, neuron=int(ids[j]))
    period = rec.dt * rec.every * scale
    uniform = rec.T % rec.every == 0                            # trials join without a gap
    for p, arrs in rec.populations.items():
        for f in TRACE_FIELDS:
            if f not in arrs:
                continue
            a = arrs[f]                                          # [rows, B, ...]
            rows = a.shape[0]
            data = np.ascontiguousarray(np.swapaxes(a, 0, 1).reshape(rows * rec.batch_size, -1))
            kw = {"rate": 1.0 / period, "starting_time": 0.0} if uniform else {
                "timestamps": (np.arange(rows)[None, :] * period +
                               np.arange(rec.batch_size)[:, None] * D).reshape(-1)}
            nwb.add_acquisition(TimeSeries(
                name=f"{p}_{f}", data=data, unit=trace_unit(rec, p, f),
                description=f"{p}: {f} [time, {'x'.join(map(str, a.shape[2:]))}] of each "
                            "trial, trials back to back",
                comments=json.dumps({"shape": list(a.shape[2:])}), **kw))

    def write(tmp: str) -> None:
        with warnings.catch_warnings():       # the temporary name does not end in .nwb
            warnings.filterwarnings("ignore", message=".*does not end in '.nwb'")
            with NWBHDF5IO(tmp, "w") as io:
                io.write(nwb)
    return atomic_write(path, write)


def load_nwb(path) -> Recording:
    """Read an NWB file written by :func:`save_nwb` back into a :class:`Recording`
    (spikes rebuilt from the ``Units`` table, traces from the ``TimeSeries``)."""
    from pynwb import NWBHDF5IO  # deferred: pynwb takes seconds to import
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"NWB file not found: {path}")
    with NWBHDF5IO(str(path), "r") as io:
        nwb = io.read()
        notes = nwb.notes or ""
        if not notes.startswith(_NOTES_PREFIX):
            raise ValueError(f"{path} was not written by astro-neuron's save_nwb (its notes "
                             "lack the recording metadata)")
        meta = json.loads(notes[len(_NOTES_PREFIX):])
        dt, T, B, every = meta["dt"], meta["n_steps"], meta["batch_size"], meta["every"]
        scale = meta["seconds_per_unit"]
        D = T * dt * scale
        pops: dict = {p: {} for p in meta["fields"]}
        if nwb.units is not None and len(nwb.units):
            units = nwb.units
            rows = {p: [] for p in pops if "spikes" in meta["fields"][p]}
            for i in range(len(units)):
                rows[units["population"][i]].append((int(units["neuron"][i]),
                                                     np.asarray(units["spike_times"][i])))
            for p, lst in rows.items():
                spikes = np.zeros((T, B, len(lst)), dtype=np.float32)
                for j, (_, times) in enumerate(lst):
                    trial = np.clip(np.floor(times / D + 1e-9).astype(np.int64), 0, B - 1)
                    step = np.rint((times - trial * D) / (dt * scale)).astype(np.int64)
                    np.add.at(spikes[:, :, j], (step, trial), 1.0)
                pops[p]["spikes"] = spikes
        for p, fields in meta["fields"].items():
            for f in fields:
                if f not in TRACE_FIELDS:
                    continue
                ts = nwb.acquisition[f"{p}_{f}"]
                shape = json.loads(ts.comments)["shape"]
                data = np.asarray(ts.data[:])
                rows = data.shape[0] // B
                pops[p][f] = np.swapaxes(data.reshape(B, rows, *shape), 0, 1)
    return Recording(dt, meta["time_unit"], pops, meta["attrs"], meta["info"], every=every,
                     n_steps=T)
