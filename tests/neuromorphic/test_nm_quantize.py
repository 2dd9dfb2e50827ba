"""Quantization: clear errors for what has no integer form or bad data; values that do
not fit their width are clamped and counted in a SaturationWarning, never wrapped."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch

import astro_neuron as an
import neuromorphic as nm
from neuromorphic.spec import STATE_MAX


def _x(T=40, B=4, n=6, rate=0.4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(T, B, n, generator=g) < rate).float()


def test_ptq_and_exponents_make_states_fit():
    torch.manual_seed(0)
    m = an.AMSU(6, 8, n_astrocytes=2, d_key=4)
    x = _x()
    with warnings.catch_warnings():
        warnings.simplefilter("error", nm.SaturationWarning)   # a plain model: no clamps
        q = nm.quantize(m, calibration=x)
    out = nm.simulate(q, x)
    for name in ("u", "H"):
        peak = np.abs(out.states[0][name]).max()
        assert STATE_MAX / 8 < peak <= STATE_MAX / 2 + 1, (name, peak)   # 1 bit of headroom
    assert q.meta["calibration_saturation"] == {}


def test_state_saturation_is_counted_not_wrapped():
    """Inputs far denser than the calibration push the membrane to its limit: the run
    clamps at +-(2^23 - 1) and quantize() warns with counts."""
    torch.manual_seed(0)
    m = an.AMSU(6, 8, n_astrocytes=2, d_key=4, tau_mem=50.0)
    with torch.no_grad():
        m.weight.abs_()          # every input excites: dense input drives u up
        m.bias.zero_()
    sparse, dense = _x(rate=0.05), _x(rate=1.0, T=200, seed=1)
    qat = nm.prepare_qat(m, sparse)              # scales chosen on sparse input
    with pytest.warns(nm.SaturationWarning, match=r"'u': \d+"):
        q = nm.quantize(qat, calibration=dense)  # saturation counted on the dense input
    assert q.meta["calibration_saturation"]["amsu0"]["u"] > 0
    out = nm.simulate(q, dense)
    u = out.states[0]["u"]
    assert u.max() == STATE_MAX and u.min() >= -STATE_MAX       # clamped, not wrapped


def test_parameter_clamps_are_counted():
    """A membrane time constant too short for a 12-bit decay clamps du to 4095."""
    m = an.AMSU(6, 8, n_astrocytes=2, d_key=4, tau_mem=torch.tensor([0.05] * 3 + [2.0] * 5))
    with pytest.warns(nm.SaturationWarning) as rec:
        q = nm.quantize(m, calibration=_x())
    msg = " ".join(str(w.message) for w in rec)
    assert re.search(r"'du': 3\b", msg), msg
    assert q.layers[0].du[:3].tolist() == [4095] * 3
    assert q.meta["parameter_clamps"] == {"amsu0": {"du": 3}}


@pytest.mark.parametrize("kwargs,match", [
    (dict(synapse="sigmoid"), "synapse='sigmoid'"),
    (dict(rotary=True), "rotary"),
    (dict(spiking=False), "spiking=False"),
])
def test_unsupported_options_are_clear_errors(kwargs, match):
    m = torch.nn.Sequential(an.AMSU(6, 8, n_astrocytes=2, d_key=4, **kwargs))
    with pytest.raises(ValueError, match=match):
        nm.quantize(m, calibration=_x())


def test_unsupported_structures():
    with pytest.raises(ValueError, match="followed by an astro_neuron.LIF"):
        nm.quantize(torch.nn.Sequential(torch.nn.Linear(6, 4)), calibration=_x())
    with pytest.raises(ValueError, match="needs an nn.Linear before it"):
        nm.quantize(torch.nn.Sequential(an.LIF(6)), calibration=_x())
    with pytest.raises(ValueError, match="not supported"):
        nm.quantize(torch.nn.Sequential(torch.nn.ReLU()), calibration=_x())
    with pytest.raises(TypeError, match="nn.Sequential"):
        nm.quantize(torch.nn.Linear(6, 4), calibration=_x())


@pytest.mark.parametrize("bad,exc,match", [
    (_x() * 0.5, ValueError, "spike counts"),
    (-_x(), ValueError, "non-negative"),
    (_x(n=5), ValueError, "channels"),
    (torch.full((4, 2, 6), float("nan")), ValueError, "NaN"),
    (_x()[0, 0], ValueError, "shape"),
    ("spikes", TypeError, "numeric"),
])
def test_bad_calibration_data(bad, exc, match):
    m = an.AMSU(6, 8, n_astrocytes=2, d_key=4)
    with pytest.raises(exc, match=match):
        nm.quantize(m, calibration=bad)


def test_missing_calibration_and_nan_parameters():
    m = an.AMSU(6, 8, n_astrocytes=2, d_key=4)
    with pytest.raises(ValueError, match="calibration"):
        nm.quantize(m)
    with torch.no_grad():
        m.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="weight contains NaN"):
        nm.quantize(m, calibration=_x())


def test_simulate_rejects_inputs_beyond_the_network():
    m = an.AMSU(6, 8, n_astrocytes=2, d_key=4)
    q = nm.quantize(m, calibration=_x())
    assert q.input_levels == 1
    with pytest.raises(ValueError, match="input_levels"):
        nm.simulate(q, _x() * 2)
    with pytest.raises(ValueError, match="backend"):
        nm.simulate(q, _x(), backend="loihi")
    with pytest.raises(TypeError, match="QuantizedNetwork"):
        nm.simulate(m, _x())
    out = nm.simulate(q, _x()[:, 0])                      # [T, n_in] in, [T, N] out
    assert out.spikes[0].shape == (40, 8) and out.states[0]["H"].shape == (40, 2, 4, 4)


def test_operand_bits_option():
    torch.manual_seed(1)
    m = an.AMSU(6, 8, n_astrocytes=2, d_key=4)
    q4 = nm.quantize(m, calibration=_x(), operand_bits=4, check_saturation=False)
    assert q4.layers[0].operand_bits == 4
    with pytest.raises(ValueError, match="operand_bits"):
        nm.quantize(m, calibration=_x(), operand_bits=1)
