"""Spike-train analysis of a :class:`~astro_neuron.neuro.Recording`, done by Elephant.

The recording's spikes become Neo ``SpikeTrain`` objects (:func:`spike_trains`) and the
statistics are Elephant's (``elephant.statistics``, ``elephant.spike_train_correlation``),
so the numbers are the ones the field's tools give; this module only selects the
spikes, checks the arguments and returns plain NumPy arrays with their units:

===============================  ============================================  =================
function                         what                                           done by
===============================  ============================================  =================
:func:`spike_trains`             one ``neo.SpikeTrain`` per neuron              Neo
:func:`population_rate`          mean rate over neurons per bin, one trial      ``time_histogram``
:func:`psth`                     the same, averaged over trials (samples)       ``time_histogram``
:func:`condition_average`        :func:`psth` per condition label               ``time_histogram``
:func:`isi`, :func:`cv`          inter-spike intervals, their CV per neuron     ``isi``, ``cv``
:func:`fano_factor`              spike-count Fano factor per neuron             ``fanofactor``
:func:`spike_count_correlation`  pairwise Pearson correlation of binned counts   ``correlation_coefficient``
:func:`epoch_rates`              rate per group (territory) and epoch           NumPy (a count)
:func:`decoding_accuracy`        cross-validated accuracy of a linear read-out  scikit-learn
===============================  ============================================  =================

Times and widths are in the recording's ``time_unit``: ms for populations in
biological units, steps otherwise. Rates come out in Hz (ms recordings) or spikes per
step (step recordings). A spike at step ``t`` happens at time ``t * dt``; a graded
spike of level ``L`` counts as ``L`` spikes at that time. Neo and Elephant are imported
when a function is called (importing them takes about 1.5 s).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from typing import Mapping, NamedTuple, Optional, Sequence

import numpy as np

from astro_neuron.neuro.recording import Recording
from astro_neuron.validate import positive_int

__all__ = ["Rate", "EpochRates", "time_quantity", "rate_unit", "spike_times", "spike_trains",
           "population_rate", "psth", "condition_average", "isi", "cv", "fano_factor",
           "spike_count_correlation", "epochs", "epoch_rates", "decoding_accuracy"]


class Rate(NamedTuple):
    """A binned rate: ``times`` ``[K]`` left bin edges, ``rate`` ``[K]``, ``unit``
    (``"Hz"`` or ``"1/step"``), ``bin_width`` in the recording's time unit, and
    ``n_trains`` (neurons x trials averaged)."""

    times: np.ndarray
    rate: np.ndarray
    unit: str
    bin_width: float
    n_trains: int


class EpochRates(NamedTuple):
    """``mean`` and ``sem`` ``[G, E]``: rate of the neurons of each group in each epoch
    (mean over the group's neurons of their trial-averaged rate, and its standard error
    over neurons), ``counts`` ``[G]`` neurons per group, the ``groups`` and ``epochs``
    names, and the rate ``unit``."""

    mean: np.ndarray
    sem: np.ndarray
    counts: np.ndarray
    groups: list
    epochs: list
    unit: str


@contextlib.contextmanager
def _quiet():
    """Elephant 1.1.1 passes ``copy=`` to quantities 0.16, which warns on every call."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*'copy' argument in Quantity is deprecated")
        yield


def _pq():
    import quantities as pq  # deferred: loaded with Neo/Elephant, only when analysing
    return pq


_STEP = None


def time_quantity(rec: Recording):
    """The ``quantities`` unit of ``rec``'s time axis: ``ms``, or a unit ``step`` for
    recordings in steps (Elephant needs a time unit; rates then come out in 1/step)."""
    global _STEP
    pq = _pq()
    if rec.time_unit == "ms":
        return pq.ms
    if _STEP is None:
        _STEP = pq.UnitTime("step", pq.s, symbol="step")
    return _STEP


def rate_unit(rec: Recording) -> str:
    """``"Hz"`` for ms recordings, ``"1/step"`` for step recordings."""
    return "Hz" if rec.time_unit == "ms" else "1/step"


def _rate_values(q, rec: Recording) -> np.ndarray:
    pq = _pq()
    if rec.time_unit == "ms":
        q = q.rescale(pq.Hz)
    return np.asarray(q.magnitude, dtype=np.float64)


def _check_rec(rec, population: str) -> np.ndarray:
    if not isinstance(rec, Recording):
        raise TypeError(f"rec must be a Recording, got {type(rec).__name__}")
    spikes = rec[population].get("spikes")
    if spikes is None:
        raise ValueError(f"population {population!r} has no spikes recorded (fields: "
                         f"{sorted(rec[population])})")
    return spikes


def _samples(rec: Recording, samples) -> list[int]:
    if samples is None:
        return list(range(rec.batch_size))
    if isinstance(samples, (int, np.integer)) and not isinstance(samples, bool):
        samples = [samples]
    out = [int(s) for s in samples]
    bad = [s for s in out if not 0 <= s < rec.batch_size]
    if bad or not out:
        raise ValueError(f"samples must be indices in [0, {rec.batch_size}), got {samples}")
    return out


def _neurons(n: int, neurons) -> np.ndarray:
    if neurons is None:
        return np.arange(n)
    idx = np.asarray(neurons if not isinstance(neurons, slice) else np.arange(n)[neurons])
    if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"neurons must be a non-empty 1-D list of column indices, got {neurons!r}")
    bad = idx[(idx < 0) | (idx >= n)]
    if bad.size:
        raise ValueError(f"neurons {bad[:10].tolist()} out of range [0, {n}) (columns of the "
                         "recorded spikes)")
    return idx


def _window(rec: Recording, window) -> tuple[float, float]:
    if window is None:
        return 0.0, rec.duration
    t0, t1 = (float(v) for v in window)
    if not (math.isfinite(t0) and math.isfinite(t1)) or not 0.0 <= t0 < t1 <= rec.duration + 1e-9:
        raise ValueError(f"window must be (t0, t1) with 0 <= t0 < t1 <= duration "
                         f"{rec.duration:g} {rec.time_unit}, got {window}")
    return t0, t1


def spike_times(rec: Recording, population: str, sample: int = 0,
                neurons=None) -> list[np.ndarray]:
    """Spike times of each (chosen) neuron of one ``sample``, in ``rec.time_unit``:
    a list of sorted 1-D arrays (a graded spike of level ``L`` appears ``L`` times).
    ``neurons``: columns of the recorded spikes (default all). No Neo needed."""
    spikes = _check_rec(rec, population)
    (sample,) = _samples(rec, sample)
    s = spikes[:, sample]
    idx = _neurons(s.shape[1], neurons)
    out = []
    for j in idx:
        col = s[:, j]
        steps = np.nonzero(col)[0]
        reps = np.rint(col[steps]).astype(np.int64)
        out.append(np.repeat(steps, np.maximum(reps, 1)) * rec.dt)
    return out


def spike_trains(rec: Recording, population: str, sample: int = 0, neurons=None,
                 window=None) -> list:
    """One ``neo.SpikeTrain`` per (chosen) neuron of one ``sample``, over the run
    (``t_start = 0``, ``t_stop = T dt``) or ``window = (t0, t1)``, annotated with the
    population, the neuron's index in it and the sample."""
    import neo  # deferred: Neo is needed only when spike trains are built
    unit = time_quantity(rec)
    t0, t1 = _window(rec, window)
    ids = rec.neuron_ids(population)
    idx = _neurons(_check_rec(rec, population).shape[2], neurons)
    trains = []
    for j, times in zip(idx, spike_times(rec, population, sample, idx)):
        times = times[(times >= t0) & (times < t1)]
        trains.append(neo.SpikeTrain(times, units=unit, t_start=t0, t_stop=t1,
                                     name=f"{population}[{int(ids[j])}]",
                                     population=population, neuron=int(ids[j]),
                                     sample=int(sample)))
    return trains


def _bin(rec: Recording, bin_width: float, t0: float, t1: float) -> tuple[float, int]:
    b = float(bin_width)
    if not math.isfinite(b) or b <= 0:
        raise ValueError(f"bin_width must be positive and finite, got {bin_width!r}")
    k = b / rec.dt
    if abs(k - round(k)) > 1e-6 * max(1.0, k):
        raise ValueError(f"bin_width {b:g} {rec.time_unit} is not a whole number of steps "
                         f"(dt = {rec.dt:g} {rec.time_unit}): bins would alias the steps")
    n = int(math.floor((t1 - t0) / b + 1e-9))
    if n < 1:
        raise ValueError(f"bin_width {b:g} {rec.time_unit} is longer than the window "
                         f"{t1 - t0:g} {rec.time_unit}")
    return b, n


def _histogram(rec: Recording, trains: list, b: float, n: int, t0: float) -> Rate:
    # deferred: Elephant imports scikit-learn and scipy.stats (seconds)
    from elephant.statistics import time_histogram
    unit = time_quantity(rec)
    t1 = t0 + n * b                         # the trains span [t0, t1) (spike_trains' window)
    with _quiet():
        h = time_histogram(trains, bin_size=b * unit, t_start=t0 * unit, t_stop=t1 * unit,
                           output="rate")
    rate = _rate_values(h, rec).reshape(-1)
    return Rate(t0 + b * np.arange(n), rate, rate_unit(rec), b, len(trains))


def population_rate(rec: Recording, population: str, bin_width: float, sample: int = 0,
                    neurons=None, window=None) -> Rate:
    """Mean firing rate of the population's neurons in bins of ``bin_width`` (a whole
    number of steps, in ``rec.time_unit``) in one ``sample``
    (``elephant.statistics.time_histogram(output="rate")``)."""
    t0, t1 = _window(rec, window)
    b, n = _bin(rec, bin_width, t0, t1)
    trains = spike_trains(rec, population, sample, neurons, (t0, t0 + n * b))
    return _histogram(rec, trains, b, n, t0)


def psth(rec: Recording, population: str, bin_width: float, samples=None, neurons=None,
         window=None) -> Rate:
    """Peri-stimulus time histogram: the population rate averaged over the trials
    ``samples`` (default: every batch sample) and neurons, in bins of ``bin_width``."""
    t0, t1 = _window(rec, window)
    b, n = _bin(rec, bin_width, t0, t1)
    trains = [st for s in _samples(rec, samples)
              for st in spike_trains(rec, population, s, neurons, (t0, t0 + n * b))]
    return _histogram(rec, trains, b, n, t0)


def _labels(rec: Recording, labels) -> list:
    if labels is None:
        labels = rec.info.get("labels")
        if labels is None:
            raise ValueError("no labels given and rec.info has no 'labels' (one condition "
                             "per batch sample)")
    labels = list(np.asarray(labels).tolist())
    if len(labels) != rec.batch_size:
        raise ValueError(f"labels has {len(labels)} entries for {rec.batch_size} samples")
    return labels


def condition_average(rec: Recording, population: str, bin_width: float, labels=None,
                      neurons=None, window=None) -> dict:
    """Trial average by condition: ``{label: psth over the samples with that label}``.
    ``labels``: one per batch sample (default ``rec.info["labels"]``), sorted in the
    result."""
    labels = _labels(rec, labels)
    out = {}
    for lab in sorted(set(labels)):
        samples = [i for i, x in enumerate(labels) if x == lab]
        out[lab] = psth(rec, population, bin_width, samples, neurons, window)
    return out


def isi(rec: Recording, population: str, sample: int = 0, neurons=None) -> list[np.ndarray]:
    """Inter-spike intervals of each neuron (``elephant.statistics.isi``), in
    ``rec.time_unit``; an empty array for a neuron with fewer than two spikes."""
    # deferred: Elephant imports scikit-learn and scipy.stats (seconds)
    from elephant.statistics import isi as _isi
    with _quiet():
        return [np.asarray(_isi(st).magnitude, dtype=np.float64)
                for st in spike_trains(rec, population, sample, neurons)]


def cv(rec: Recording, population: str, sample: int = 0, neurons=None,
       min_spikes: int = 3) -> np.ndarray:
    """Coefficient of variation of each neuron's inter-spike intervals (std / mean,
    ``elephant.statistics.cv``; 0 for a regular train, 1 for a Poisson one). NaN for
    a neuron with fewer than ``min_spikes`` spikes (at least 3: two intervals)."""
    # deferred: Elephant imports scikit-learn and scipy.stats (seconds)
    from elephant.statistics import cv as _cv
    min_spikes = positive_int("min_spikes", min_spikes)
    if min_spikes < 3:
        raise ValueError(f"min_spikes must be >= 3 (a CV needs two intervals), got {min_spikes}")
    out = []
    for iv in isi(rec, population, sample, neurons):
        out.append(float(_cv(iv)) if len(iv) + 1 >= min_spikes else np.nan)
    return np.asarray(out, dtype=np.float64)


def fano_factor(rec: Recording, population: str, samples=None, neurons=None,
                window=None, bin_width: Optional[float] = None) -> np.ndarray:
    """Fano factor (variance / mean of spike counts, ``elephant.statistics.fanofactor``,
    population variance) of each neuron.

    Default: across trials, the count in ``window`` (default the whole run) of each
    of ``samples`` (at least 2). With ``bin_width``: across the consecutive bins of
    that width inside ``window``, pooled over ``samples`` (one long trial is enough).
    NaN for a neuron that never fires.
    """
    # deferred: Elephant imports scikit-learn and scipy.stats (seconds)
    from elephant.statistics import fanofactor
    samples = _samples(rec, samples)
    t0, t1 = _window(rec, window)
    unit = time_quantity(rec)
    if bin_width is None:
        if len(samples) < 2:
            raise ValueError("a Fano factor across trials needs at least 2 samples; give "
                             "bin_width to use consecutive bins of one trial")
        per = [spike_trains(rec, population, s, neurons, (t0, t1)) for s in samples]
        groups = [list(g) for g in zip(*per)]
    else:
        b, n = _bin(rec, bin_width, t0, t1)
        if n < 2:
            raise ValueError(f"bin_width {b:g} leaves fewer than 2 bins in the window")
        per = [spike_trains(rec, population, s, neurons, (t0, t1)) for s in samples]
        groups = []
        for trains in zip(*per):
            g = []
            for st in trains:
                for k in range(n):
                    a, z = (t0 + k * b) * unit, (t0 + (k + 1) * b) * unit
                    piece = st.time_slice(a, z)
                    piece = piece[piece < z] if len(piece) else piece   # [a, z): half-open
                    g.append(piece)
            groups.append(g)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.asarray([fanofactor(g) if any(len(x) for x in g) else np.nan
                           for g in groups], dtype=np.float64)


def spike_count_correlation(rec: Recording, population: str, bin_width: float,
                            sample: int = 0, neurons=None, window=None) -> np.ndarray:
    """Pairwise Pearson correlation ``[N, N]`` of the neurons' spike counts in bins of
    ``bin_width`` (``elephant.spike_train_correlation.correlation_coefficient`` of a
    ``BinnedSpikeTrain``); NaN rows and columns for neurons without spikes."""
    # deferred: Elephant imports scikit-learn and scipy.stats (seconds)
    from elephant.conversion import BinnedSpikeTrain
    from elephant.spike_train_correlation import correlation_coefficient
    t0, t1 = _window(rec, window)
    b, n = _bin(rec, bin_width, t0, t1)
    unit = time_quantity(rec)
    t1 = t0 + n * b
    trains = spike_trains(rec, population, sample, neurons, (t0, t1))
    if len(trains) < 2:
        raise ValueError("correlations need at least 2 neurons")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        binned = BinnedSpikeTrain(trains, bin_size=b * unit, t_start=t0 * unit,
                                  t_stop=t1 * unit)
        return np.asarray(correlation_coefficient(binned), dtype=np.float64)


def epochs(rec: Recording) -> dict[str, tuple[float, float]]:
    """Named epochs ``{name: (t0, t1)}`` in ``rec.time_unit``: ``rec.info["epochs"]``
    when present, else the spans between ``rec.info["events"]`` (named after the event
    that opens them, the first one ``"start"``), else the whole run as ``"run"``."""
    if rec.info.get("epochs"):
        out = {}
        for name, span in rec.info["epochs"].items():
            t0, t1 = (float(v) for v in span)
            if not 0 <= t0 < t1 <= rec.duration + 1e-9:
                raise ValueError(f"epoch {name!r} = {span} is not inside the run "
                                 f"[0, {rec.duration:g}] {rec.time_unit}")
            out[str(name)] = (t0, t1)
        return out
    events = sorted((float(t), str(n)) for n, t in (rec.info.get("events") or {}).items()
                    if 0 < float(t) < rec.duration)
    if not events:
        return {"run": (0.0, rec.duration)}
    edges = [0.0] + [t for t, _ in events] + [rec.duration]
    names = ["start"] + [n for _, n in events]
    return {names[i]: (edges[i], edges[i + 1]) for i in range(len(names))}


def epoch_rates(rec: Recording, population: str, epochs_: Optional[Mapping] = None,
                groups: Optional[Sequence] = None, samples=None) -> EpochRates:
    """Firing rate of each group of neurons in each epoch, averaged over ``samples``.

    ``epochs_``: ``{name: (t0, t1)}`` (default :func:`epochs`); ``groups``: one group
    label per recorded neuron (default: its astrocyte territory,
    ``rec.attrs[population]["territory"]``). A neuron's rate in an epoch is its spike
    count there / the epoch's length; the table holds the mean over the group's
    neurons and its standard error."""
    spikes = _check_rec(rec, population)
    samples = _samples(rec, samples)
    ep = epochs(rec) if epochs_ is None else {k: (float(a), float(b)) for k, (a, b) in
                                             dict(epochs_).items()}
    N = spikes.shape[2]
    if groups is None:
        groups = rec.attrs.get(population, {}).get("territory")
        if groups is None:
            groups = [0] * N
    groups = list(groups)
    if len(groups) != N:
        raise ValueError(f"groups has {len(groups)} entries for {N} recorded neurons")
    names = sorted(set(groups))
    scale = 1000.0 if rec.time_unit == "ms" else 1.0
    s = spikes[:, samples]                                          # [T, S, N]
    per_neuron = np.empty((len(ep), N))
    for e, (t0, t1) in enumerate(ep.values()):
        a, z = int(round(t0 / rec.dt)), int(round(t1 / rec.dt))
        if not 0 <= a < z <= rec.T:
            raise ValueError(f"epoch ({t0:g}, {t1:g}) is not inside the run")
        per_neuron[e] = s[a:z].sum(0).mean(0) / ((z - a) * rec.dt) * scale
    g = np.asarray([names.index(x) for x in groups])
    mean = np.zeros((len(names), len(ep)))
    sem = np.zeros_like(mean)
    counts = np.bincount(g, minlength=len(names))
    for k in range(len(names)):
        r = per_neuron[:, g == k]                                    # [E, n_k]
        mean[k] = r.mean(1)
        sem[k] = r.std(1, ddof=1) / np.sqrt(r.shape[1]) if r.shape[1] > 1 else 0.0
    return EpochRates(mean, sem, counts, names, list(ep), rate_unit(rec))


def decoding_accuracy(features, labels, folds: int = 5, seed: int = 0) -> float:
    """Cross-validated accuracy of a linear read-out (scikit-learn's
    ``LogisticRegression`` on standardised ``features`` ``[B, F]``) predicting
    ``labels`` ``[B]`` (stratified ``folds``-fold). Chance is ``1 / n_classes`` for
    balanced labels."""
    # deferred: scikit-learn takes seconds to import; only decoding uses it
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    X = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    if X.ndim != 2 or y.ndim != 1 or X.shape[0] != y.shape[0]:
        raise ValueError(f"features must be [B, F] and labels [B], got {list(X.shape)} and "
                         f"{list(y.shape)}")
    if not np.isfinite(X).all():
        raise ValueError("features contain NaN or Inf")
    folds = positive_int("folds", folds)
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise ValueError(f"decoding needs at least 2 classes, got {classes.tolist()}")
    smallest = counts.min()
    if folds < 2 or smallest < folds:
        raise ValueError(f"{folds}-fold cross-validation needs >= {folds} samples of every "
                         f"class (smallest class has {smallest}) and folds >= 2")
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    cvs = StratifiedKFold(folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(cross_val_score(model, X, y, cv=cvs).mean())
