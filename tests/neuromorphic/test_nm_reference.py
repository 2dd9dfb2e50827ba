"""The NumPy reference: its fast form equals its step form; its primitives follow Lava."""

from __future__ import annotations

import numpy as np
import pytest

from neuromorphic import engines
from neuromorphic.engines import RunOutput, jit_available, numba_fast
from neuromorphic.engines import step as S
from neuromorphic.engines.common import available_cpus
from neuromorphic.spec import Synapse
from neuromorphic.randnet import random_network, random_spikes

KINDS = [["amsu"], ["amsu", "lif"], ["amsu-off", "amsu", "amsu-only"], ["lif", "amsu"],
         ["amsu", "amsu"]]


def _fast(net, x, record_states=True, engine="reference", **options):
    """The fast form of the specification on ``engine`` (numba or numpy)."""
    return engines.engine(engine)(net, x, record_states, **options)


@pytest.mark.parametrize("seed", range(10))
def test_fast_form_equals_step_form(seed):
    kinds = KINDS[seed % len(KINDS)]
    net = random_network(seed, sizes=[16, 8, 12][:len(kinds)], kinds=kinds,
                         spike_levels=1 if seed % 3 else 3, input_levels=1 if seed % 2 else 2)
    x = random_spikes(seed, 110, 3, net.input_size, net.input_levels)
    a = S.run(net, x)
    b = _fast(net, x, count_saturation=True)
    for i in range(len(net.layers)):
        np.testing.assert_array_equal(a.spikes[i], b.spikes[i])
        assert set(a.states[i]) == set(b.states[i])
        for k in a.states[i]:
            np.testing.assert_array_equal(a.states[i][k], b.states[i][k], err_msg=f"{i} {k}")
    assert sum(int(s.sum()) for s in a.spikes) > 0, "test network never spikes"


def test_saturation_is_exercised_and_counted():
    """Random nets with wide operands saturate; both forms clip identically and the fast
    form counts the clipped values."""
    net = random_network(6, sizes=[16, 8, 12], kinds=KINDS[2], spike_levels=3, input_levels=2)
    x = random_spikes(6, 110, 3, net.input_size, net.input_levels)
    out = _fast(net, x, count_saturation=True)
    total = sum(sum(c.values()) for c in out.saturation)
    assert total > 0
    step = S.run(net, x)
    for i in range(3):
        np.testing.assert_array_equal(step.spikes[i], out.spikes[i])


def test_batch_chunking_equals_one_pass(monkeypatch):
    net = random_network(1, sizes=[16, 8], kinds=["amsu", "lif"])
    x = random_spikes(1, 40, 7, net.input_size)
    full = _fast(net, x)
    monkeypatch.setattr(engines.common, "CHUNK_ELEMENTS", 40 * 40)   # forces pieces of 1-2 sequences
    parts = _fast(net, x)
    for a, b in zip(full.spikes, parts.spikes):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(full.states[0]["H"], parts.states[0]["H"])


def test_primitives():
    x = np.array([-7, -6, -5, -1, 0, 1, 5, 6, 7])
    np.testing.assert_array_equal(S.shr(x, 1), np.floor((x + 1) / 2))     # half up
    np.testing.assert_array_equal(S.shr(x, -2), x * 4)
    # round toward zero, as Lava's LIF: -4095/4096 -> 0, not -1
    np.testing.assert_array_equal(S.rtz_decay(np.array([-1, 1, -4097, 4097]), 1),
                                  [0, 0, -4095, 4095])
    np.testing.assert_array_equal(S.wrap24(np.array([2**23, 2**23 + 1, -2**23, -2**23 - 1])),
                                  [2**23, -2**23 + 1, 2**23, 2**23 - 1])
    np.testing.assert_array_equal(S.sat(np.array([-200, 200]), 8), [-127, 127])


def test_dense_weight_rule_matches_lava():
    """Lava's Dense clips to 8 bits by sign mode and drops the low bit in mixed mode."""
    from neuromorphic.engines.lava import lava_available

    assert lava_available()[0]
    from lava.utils.weightutils import SignMode, clip_weights, truncate_weights

    rng = np.random.default_rng(0)
    for mode, lo, hi, sm in (("mixed", -256, 255, SignMode.MIXED),
                             ("excitatory", 0, 255, SignMode.EXCITATORY),
                             ("inhibitory", -255, 0, SignMode.INHIBITORY)):
        for bits in (8, 6, 3):
            w = rng.integers(lo, hi + 1, (5, 7))
            ours = Synapse(w, sign_mode=mode, num_weight_bits=bits).effective_weight()
            lava = truncate_weights(clip_weights(w, sm, num_bits=8), sm, bits)
            np.testing.assert_array_equal(ours, lava)
    w = Synapse(np.array([[101, -3]]), sign_mode="mixed").effective_weight()
    np.testing.assert_array_equal(w, [[100, -4]])     # the documented example


def test_dense_delay_and_exponent():
    w = np.array([[3, -5]])
    buf = np.zeros((1, 1), dtype=np.int64)
    out, buf = S.dense_step(w, -1, False, buf, np.array([[1, 1]]))
    assert out.item() == 0 and buf.item() == -1        # (3 - 5) >> 1 = floor(-1) = -1
    out, buf = S.dense_step(w, 2, True, buf, np.array([[2, 0]]))
    assert out.item() == -1 and buf.item() == 24       # graded: 2 * 3 << 2


def test_input_validation():
    net = random_network(0)
    with pytest.raises(ValueError, match="shape"):
        _fast(net, np.zeros((5, 1, net.input_size + 1), dtype=np.int64))
    with pytest.raises(ValueError, match="integers"):
        _fast(net, np.zeros((5, 1, net.input_size)))
