"""The reference's fast form, both engines (compiled numba loops and NumPy), equals its
step form bit for bit: spikes, every state at every step, and the saturation counts."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from neuromorphic import engines
from neuromorphic.engines import RunOutput, jit_available, numba_fast
from neuromorphic.engines import step as S
from neuromorphic.engines.common import available_cpus
from neuromorphic.spec import STATE_MAX, AMSULayer, QuantizedNetwork, Synapse
from neuromorphic.randnet import random_network, random_spikes

ENGINES = ("numba", "numpy")
KINDS = [["amsu"], ["amsu", "lif"], ["amsu-off", "amsu", "amsu-only"], ["lif", "amsu"],
         ["amsu", "amsu"], ["amsu-only", "lif", "amsu-off"]]


def _fast(net, x, record_states=True, engine="reference", **options):
    """The fast form of the specification on ``engine`` (numba or numpy)."""
    return engines.engine(engine)(net, x, record_states, **options)


def _assert_same(step: RunOutput, fast: RunOutput, what: str = "") -> None:
    assert len(step.spikes) == len(fast.spikes)
    for i in range(len(step.spikes)):
        np.testing.assert_array_equal(step.spikes[i], fast.spikes[i], err_msg=f"{what} {i} s")
        assert fast.spikes[i].dtype == np.int64
        assert set(step.states[i]) == set(fast.states[i]), (what, i)
        for k in step.states[i]:
            assert fast.states[i][k].dtype == np.int64
            np.testing.assert_array_equal(step.states[i][k], fast.states[i][k],
                                          err_msg=f"{what} layer {i} state {k}")


def test_numba_engine_is_available():
    """numba is a dependency: the compiled engine must import, not silently fall back."""
    ok, why = jit_available()
    assert ok, why


@pytest.mark.parametrize("seed", range(24))
def test_engines_equal_step_form_on_random_networks(seed):
    """24 random networks: 1-3 layers of every kind; 1, 2, 4 astrocytes; keys of 1-8;
    binary and graded spikes (2-5 levels), graded input; every reset drawn at random."""
    kinds = KINDS[seed % len(KINDS)]
    rng = np.random.default_rng(seed)
    A = int(rng.choice([1, 2, 4]))
    net = random_network(seed, n_in=int(rng.integers(5, 20)),
                         sizes=[A * int(rng.integers(2, 6)) for _ in kinds], kinds=kinds,
                         n_astrocytes=A, d_key=int(rng.choice([1, 2, 4, 8])),
                         spike_levels=int(rng.choice([1, 1, 2, 5])),
                         input_levels=int(rng.choice([1, 2, 3])))
    B = 1 + seed % 3
    x = random_spikes(seed, 105, B, net.input_size, net.input_levels, rate=0.4)
    step = S.run(net, x)
    assert sum(int(s.sum()) for s in step.spikes) > 0, "test network never spikes"
    outs = {e: _fast(net, x, count_saturation=True, engine=e) for e in ENGINES}
    # the compiled engine split over threads: by sequence (B >= threads) or by astrocyte
    # / neuron (B < threads), in uneven parts
    outs.update({f"numba, {n} threads": _fast(net, x, count_saturation=True, engine="numba",
                                              threads=n) for n in (1, 2, 3)})
    for e, out in outs.items():
        _assert_same(step, out, e)
        assert out.saturation == outs["numpy"].saturation, e


def _saturating_network(seed: int) -> QuantizedNetwork:
    """AM-SU, LIF and AM-SU (subtract reset) layers pushed into every saturation: wide
    operands, left-shifted k v^T on a slow decay (H), small read-out shifts (r, o), a
    large membrane input (u), and a stock LIF whose current wraps."""
    rng = np.random.default_rng(seed)
    base = random_network(seed, n_in=12, sizes=[8, 8, 8], kinds=["amsu", "lif", "amsu"],
                          n_astrocytes=2, d_key=4, spike_levels=2, input_levels=3,
                          reset="subtract", operand_bits=12)
    a0, l1, a2 = base.layers

    def push(layer: AMSULayer, op: int) -> AMSULayer:
        return replace(layer, shift_k=op, shift_v=op, shift_q=op, shift_kv=-6, shift_r=0,
                       shift_o=-3, shift_i=-14, dH=np.ones((2, 4), np.int64),
                       du=rng.integers(0, 50, layer.n_neurons),
                       vth=rng.integers(10, 2000, layer.n_neurons))

    w_lif = rng.integers(60, 128, (8, 8)) * 2         # large, even, positive: u wraps
    lif = replace(l1, synapse=Synapse(w_lif, weight_exp=2, num_message_bits=2), du=0, dv=10,
                  vth=40000)
    return QuantizedNetwork((push(a0, -3), lif, push(a2, -7)), input_size=12,
                            input_levels=3)


@pytest.mark.parametrize("seed", range(3))
def test_engines_equal_step_form_when_everything_saturates(seed):
    net = _saturating_network(seed)
    x = random_spikes(seed, 150, 2, 12, 3, rate=0.5)
    step = S.run(net, x)
    outs = {e: _fast(net, x, count_saturation=True, engine=e) for e in ENGINES}
    outs["numba, 3 threads"] = _fast(net, x, count_saturation=True, engine="numba", threads=3)
    for e, out in outs.items():
        _assert_same(step, out, e)
        assert out.saturation == outs["numpy"].saturation, e
    sat = outs["numba"].saturation
    for i in (0, 2):
        for name in ("u", "k", "v", "q", "H", "r", "o"):
            assert sat[i][name] > 0, f"layer {i}: {name} never saturates ({sat[i]})"
        assert np.abs(step.states[i]["H"]).max() == STATE_MAX
    assert sat[1]["u_wrap"] > 0, sat[1]


def test_float64_synaptic_sums():
    """Sums beyond 2**24 take the float64 matrix product (float32 would round them);
    a negative weight exponent floors."""
    rng = np.random.default_rng(7)
    n_in, N = 1000, 8
    w = rng.integers(100, 128, (N, n_in)) * 2 * np.where(np.arange(N) % 4 == 0, -1, 1)[:, None]
    x = rng.integers(128, 256, (30, 2, n_in))
    exact = x @ w.T
    f32 = x.astype(np.float32) @ w.T.astype(np.float32)
    assert (f32 != exact).any(), "these sums must be beyond float32"
    for exp in (-3, 0, 2):
        syn = Synapse(w, weight_exp=exp, num_message_bits=8)
        layer = AMSULayer(syn, N, astrocyte=False, reset="subtract", du=rng.integers(0, 4096, N),
                          bias_mant=np.zeros(N, np.int64), bias_exp=np.zeros(N, np.int64),
                          shift_i=10, vth=rng.integers(5, 60, N))
        net = QuantizedNetwork((layer,), input_size=n_in, input_levels=255)
        assert numba_fast.prepared(net, 0, 255)["dtype"] == np.float64
        step = S.run(net, x)
        assert step.spikes[0].sum() > 0
        for e in ENGINES:
            _assert_same(step, _fast(net, x, engine=e), f"{e} exp {exp}")


def test_float32_sums_are_chosen_when_exact():
    net = random_network(3, sizes=[16], kinds=["amsu"])
    x = random_spikes(3, 20, 1, net.input_size)
    assert numba_fast.prepared(net, 0, 1)["dtype"] == np.float32


def test_shift_pair_is_shr():
    x = np.arange(-300, 301, dtype=np.int64)
    for n in range(-5, 9):
        half, scale = numba_fast._shift_pair(n)
        np.testing.assert_array_equal(np.floor((x + half) * scale).astype(np.int64),
                                      S.shr(x, n), err_msg=f"n={n}")


@pytest.mark.parametrize("engine", ENGINES)
def test_spikes_only_and_short_runs(engine):
    net = random_network(5, sizes=[8, 6], kinds=["amsu", "lif"], reset="zero")
    for T in (1, 2, 7):
        x = random_spikes(T, T, 3, net.input_size)
        step = S.run(net, x)
        _assert_same(step, _fast(net, x, engine=engine), f"T={T}")
        spikes_only = _fast(net, x, record_states=False, engine=engine)
        assert spikes_only.states == [{}, {}]
        for a, b in zip(step.spikes, spikes_only.spikes):
            np.testing.assert_array_equal(a, b)


def test_numba_batch_chunking_equals_one_pass(monkeypatch):
    net = random_network(2, sizes=[16, 8], kinds=["amsu", "amsu"])
    x = random_spikes(2, 40, 5, net.input_size)
    full = _fast(net, x, count_saturation=True, engine="numba")
    monkeypatch.setattr(engines.common, "CHUNK_ELEMENTS", 40 * 40)   # pieces of one or two sequences
    parts = _fast(net, x, count_saturation=True, engine="numba")
    _assert_same(full, parts)
    assert full.saturation == parts.saturation


def test_engine_and_threads_arguments_are_checked():
    net = random_network(0)
    x = np.zeros((3, 1, net.input_size), dtype=np.int64)
    with pytest.raises(ValueError, match="engine"):
        _fast(net, x, engine="fortran")
    for bad in (0, -2, 1.5, True, "2"):
        with pytest.raises(ValueError, match="threads"):
            _fast(net, x, threads=bad)


def test_default_threads_follow_the_work():
    """Small runs stay on one thread; large ones use the CPUs available (both give the
    same numbers, checked above)."""
    small = random_network(0, sizes=[16], kinds=["amsu"])
    big = random_network(0, n_in=64, sizes=[256], kinds=["amsu"], n_astrocytes=8, d_key=16)
    assert numba_fast.default_threads(small.layers[0], 100, 1) == 1
    assert numba_fast.default_threads(big.layers[0], 1000, 1) == min(available_cpus(), 8)
