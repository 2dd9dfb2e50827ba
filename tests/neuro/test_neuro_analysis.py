"""neuro.analysis against hand-computed values on constructed spike trains, and
statistical properties of Bernoulli (discrete-time Poisson) trains with margins derived
from the sample size."""

from __future__ import annotations

import numpy as np
import pytest

from astro_neuron.neuro import Recording
from astro_neuron.neuro import analysis as na


def _rec(spikes, dt=1.0, unit="ms", **info) -> Recording:
    """A recording of one population ``"pop"`` with spikes ``[T, B, N]``."""
    return Recording(dt, unit, {"pop": {"spikes": np.asarray(spikes, dtype=np.float32)}},
                     info=info)


def _regular(T=1000, period=10, N=3, B=1, phase=0):
    s = np.zeros((T, B, N), dtype=np.float32)
    s[phase::period] = 1.0
    return s


def test_spike_times_and_trains_place_spike_t_at_t_dt():
    s = np.zeros((10, 1, 2), dtype=np.float32)
    s[[1, 4], 0, 0] = 1.0
    s[7, 0, 1] = 3.0                                   # graded: level 3 = 3 spikes at 7 dt
    rec = _rec(s, dt=0.5)
    times = na.spike_times(rec, "pop")
    np.testing.assert_allclose(times[0], [0.5, 2.0])
    np.testing.assert_allclose(times[1], [3.5, 3.5, 3.5])
    trains = na.spike_trains(rec, "pop")
    assert [len(t) for t in trains] == [2, 3]
    assert float(trains[0].t_stop) == 5.0 and str(trains[0].units.dimensionality) == "ms"
    assert trains[1].annotations["neuron"] == 1 and trains[1].annotations["population"] == "pop"
    w = na.spike_trains(rec, "pop", window=(1.0, 3.5))  # half-open: 3.5 excluded
    assert [len(t) for t in w] == [1, 0]


def test_psth_and_population_rate_hand_computed():
    # 2 neurons x 2 trials, T = 8 steps of 1 ms, bins of 4 ms
    s = np.zeros((8, 2, 2), dtype=np.float32)
    s[[0, 1, 5], 0, 0] = 1                              # trial 0 neuron 0: 2 | 1
    s[[2], 0, 1] = 1                                    # trial 0 neuron 1: 1 | 0
    s[[4, 6, 7], 1, 0] = 1                              # trial 1 neuron 0: 0 | 3
    rec = _rec(s)
    r = na.population_rate(rec, "pop", 4.0, sample=0)
    # bin 0: 3 spikes / (2 neurons * 4 ms) = 0.375 /ms = 375 Hz; bin 1: 1 spike -> 125 Hz
    np.testing.assert_allclose(r.rate, [375.0, 125.0])
    np.testing.assert_allclose(r.times, [0.0, 4.0])
    assert r.unit == "Hz" and r.n_trains == 2
    p = na.psth(rec, "pop", 4.0)
    # over 2 trials x 2 neurons: bin 0: 3 spikes / (4 * 4 ms); bin 1: 4 / (4 * 4 ms)
    np.testing.assert_allclose(p.rate, [187.5, 250.0])
    steps = _rec(s, unit="step")
    np.testing.assert_allclose(na.psth(steps, "pop", 4.0).rate, [3 / 16, 4 / 16])
    assert na.psth(steps, "pop", 4.0).unit == "1/step"
    with pytest.raises(ValueError, match="not a whole number of steps"):
        na.psth(_rec(s, dt=0.3), "pop", 1.0)
    with pytest.raises(ValueError, match="longer than the window"):
        na.psth(rec, "pop", 16.0)


def test_regular_trains_have_cv_zero_fano_zero_and_known_rate():
    rec = _rec(_regular(T=1000, period=10, N=3, B=4))
    for iv in na.isi(rec, "pop"):
        np.testing.assert_allclose(iv, 10.0)
    np.testing.assert_allclose(na.cv(rec, "pop"), 0.0, atol=1e-12)
    np.testing.assert_allclose(na.fano_factor(rec, "pop"), 0.0, atol=1e-12)
    np.testing.assert_allclose(na.psth(rec, "pop", 100.0).rate, 100.0)      # 1 per 10 ms
    few = np.zeros((100, 1, 1), dtype=np.float32)
    few[[3, 50]] = 1
    assert np.isnan(na.cv(_rec(few), "pop")[0])                              # 2 spikes: no CV


def test_fano_factor_hand_computed_and_by_bins():
    # counts across 4 trials: 1, 3, 1, 3 -> mean 2, population variance 1 -> F = 0.5
    s = np.zeros((20, 4, 1), dtype=np.float32)
    for trial, n in enumerate((1, 3, 1, 3)):
        s[:n, trial, 0] = 1
    rec = _rec(s)
    np.testing.assert_allclose(na.fano_factor(rec, "pop"), [0.5])
    # bins of 5 ms of trial 1 (spikes at 0, 1, 2): counts 3, 0, 0, 0 -> var 27/16 / (3/4)
    np.testing.assert_allclose(na.fano_factor(rec, "pop", samples=[1], bin_width=5.0),
                               [(27 / 16) / (3 / 4)])
    with pytest.raises(ValueError, match="at least 2 samples"):
        na.fano_factor(rec, "pop", samples=[0])


def test_spike_count_correlation_identical_complementary_silent():
    g = np.random.default_rng(0)
    a = (g.random(400) < 0.3).astype(np.float32)
    s = np.stack([a, a, 1 - a, np.zeros_like(a)], axis=1)[:, None, :]  # [T, 1, 4]
    c = na.spike_count_correlation(_rec(s), "pop", 1.0)
    assert c.shape == (4, 4)
    assert c[0, 1] == pytest.approx(1.0) and c[0, 2] == pytest.approx(-1.0)
    assert np.isnan(c[3, 0]) and np.isnan(c[0, 3])                     # silent neuron


def test_poisson_statistics_within_margins_from_sample_size():
    """Bernoulli trains with p per step: ISIs are geometric, CV = sqrt(1 - p); counts
    are binomial, Fano = 1 - p. The CV estimate of n intervals has standard error
    about 1/sqrt(n) (delta method for an exponential: Var = 1/n); the Fano factor of
    K trials with mean count m about sqrt(2/(K-1) + 1/(m K)). Margins: 5 standard
    errors; independent trains' count correlations: 5/sqrt(bins)."""
    g = np.random.default_rng(1)
    p = 0.05
    long = (g.random((200_000, 1, 2)) < p).astype(np.float32)
    rec = _rec(long)
    n = min(len(iv) for iv in na.isi(rec, "pop"))
    assert n > 9000
    cvs = na.cv(rec, "pop")
    assert np.all(np.abs(cvs - np.sqrt(1 - p)) < 5 / np.sqrt(n)), cvs
    c = na.spike_count_correlation(rec, "pop", 100.0)
    assert abs(c[0, 1]) < 5 / np.sqrt(2000), c
    K, T, p2 = 1000, 400, 0.02
    trials = (g.random((T, K, 1)) < p2).astype(np.float32)
    m = T * p2
    ff = na.fano_factor(_rec(trials), "pop")[0]
    se = np.sqrt(2 / (K - 1) + 1 / (m * K))
    assert abs(ff - (1 - p2)) < 5 * se, (ff, se)


def test_condition_average_epochs_and_epoch_rates():
    s = np.zeros((100, 4, 4), dtype=np.float32)
    s[:50:5, [0, 2], :2] = 1                   # condition "a": neurons 0-1 fire in [0, 50)
    s[50::10, [1, 3], 2:] = 1                  # condition "b": neurons 2-3 fire in [50, 100)
    rec = _rec(s, labels=["a", "b", "a", "b"], epochs={"early": [0, 50], "late": [50, 100]})
    avg = na.condition_average(rec, "pop", 50.0)
    assert list(avg) == ["a", "b"]
    np.testing.assert_allclose(avg["a"].rate, [0.5 * 200.0, 0.0])     # half the neurons at 200 Hz
    np.testing.assert_allclose(avg["b"].rate, [0.0, 0.5 * 100.0])
    assert na.epochs(rec) == {"early": (0.0, 50.0), "late": (50.0, 100.0)}
    er = na.epoch_rates(rec, "pop", groups=[0, 0, 1, 1])
    # group 0 fires at 200 Hz in half the trials during "early": 100 Hz; never "late"
    np.testing.assert_allclose(er.mean, [[100.0, 0.0], [0.0, 50.0]])
    np.testing.assert_allclose(er.sem, 0.0)
    assert er.groups == [0, 1] and er.epochs == ["early", "late"] and list(er.counts) == [2, 2]
    ev = _rec(s, events={"cue end": 30.0, "recall": 80.0})
    assert na.epochs(ev) == {"start": (0.0, 30.0), "cue end": (30.0, 80.0),
                             "recall": (80.0, 100.0)}
    with pytest.raises(ValueError, match="labels has 3 entries for 4 samples"):
        na.condition_average(rec, "pop", 50.0, labels=[0, 1, 2])
    with pytest.raises(ValueError, match="groups has 3 entries"):
        na.epoch_rates(rec, "pop", groups=[0, 1, 2])


def test_decoding_accuracy_separable_and_chance():
    g = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 20)
    X = g.normal(size=(80, 6)) * 0.1
    X[np.arange(80), y] += 3.0
    assert na.decoding_accuracy(X, y) == 1.0
    noise = g.normal(size=(80, 6))
    # chance is 1/4; 80 trials: the accuracy's standard error is about sqrt(.25*.75/80)
    assert abs(na.decoding_accuracy(noise, y) - 0.25) < 5 * np.sqrt(0.25 * 0.75 / 80) + 0.05
    few = [0, 1, 2, 20, 21, 22]                               # 3 trials of 2 classes
    with pytest.raises(ValueError, match="needs >= 5 samples of every class"):
        na.decoding_accuracy(X[few], y[few])
    with pytest.raises(ValueError, match="at least 2 classes"):
        na.decoding_accuracy(X[:10], y[:10])


def test_argument_errors():
    rec = _rec(_regular(T=50, N=2))
    with pytest.raises(KeyError, match="no population 'x'"):
        na.psth(rec, "x", 5.0)
    with pytest.raises(ValueError, match=r"neurons \[5\] out of range \[0, 2\)"):
        na.cv(rec, "pop", neurons=[5])
    with pytest.raises(ValueError, match="samples must be indices"):
        na.psth(rec, "pop", 5.0, samples=[3])
    with pytest.raises(ValueError, match="window must be"):
        na.psth(rec, "pop", 5.0, window=(10, 5))
    with pytest.raises(ValueError, match="min_spikes must be >= 3"):
        na.cv(rec, "pop", min_spikes=2)
    traces = Recording(1.0, "ms", {"p": {"u": np.zeros((5, 1, 2))}})
    with pytest.raises(ValueError, match="has no spikes recorded"):
        na.psth(traces, "p", 1.0)
