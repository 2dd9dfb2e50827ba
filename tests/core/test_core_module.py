"""The AMSU / LIF module contract: functional == module, streaming == sequence,
initial state, state_dict round trip, dtype moves, parameter units."""

from __future__ import annotations

import math

import pytest
import torch

import astro_neuron as an
from astro_neuron.functional import amsu_loop, lif_loop


def test_module_equals_functional():
    layer = an.AMSU(5, 8, n_astrocytes=2, d_key=4).double()
    x = torch.randn(20, 3, 5, dtype=torch.float64)
    out, st = layer.run(x, mode="loop")
    ref, st_ref = amsu_loop(x, None, layer.params(), layer.spec)
    assert torch.equal(out.spikes, ref.spikes) and torch.equal(st.H, st_ref.H)


def test_initial_state_is_zero_and_none_means_initial():
    layer = an.AMSU(5, 8, n_astrocytes=2, d_key=4)
    st = layer.init_state(3)
    assert st.u.shape == (3, 8) and st.H.shape == (3, 2, 4, 4) and st.t == 0
    assert not st.u.any() and not st.H.any()
    x = torch.randn(10, 3, 5)
    assert torch.equal(layer(x), layer(x, state=st))


def test_state_dict_round_trip_and_dtype_moves(tmp_path):
    layer = an.AMSU(5, 8, n_astrocytes=2, d_key=4, tau_mem=3.0, tau_astro=(5.0, 50.0))
    torch.save(layer.state_dict(), tmp_path / "l.pt")
    other = an.AMSU(5, 8, n_astrocytes=2, d_key=4)
    other.load_state_dict(torch.load(tmp_path / "l.pt"))
    x = torch.randn(12, 2, 5)
    assert torch.equal(layer(x), other(x))
    d = layer.double()
    assert all(p.dtype == torch.float64 for p in d.parameters())
    assert d(x.double()).dtype == torch.float64


def test_parameters_carry_units():
    layer = an.AMSU(4, 8, n_astrocytes=2, d_key=3, tau_mem=20.0, tau_astro=(100.0, 1000.0),
                    dt=0.5, threshold=2.0)
    torch.testing.assert_close(layer.tau_mem, torch.full((8,), 20.0))
    torch.testing.assert_close(layer.beta, torch.full((8,), math.exp(-0.5 / 20.0)))
    torch.testing.assert_close(layer.tau_astro[0], torch.tensor([100.0, 316.22777, 1000.0]))
    torch.testing.assert_close(layer.gamma, torch.exp(-0.5 / layer.tau_astro))
    torch.testing.assert_close(layer.threshold, torch.full((8,), 2.0))
    assert ((layer.beta > 0) & (layer.beta < 1)).all()


def test_every_parameter_is_learnable_and_gets_gradient():
    layer = an.AMSU(5, 8, n_astrocytes=2, d_key=4)
    x = torch.rand(30, 4, 5) * 2
    out, st = layer.run(x)
    (out.spikes.sum() + st.H.sum()).backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_ablation_options_change_structure():
    full = an.AMSU(5, 8, n_astrocytes=2, d_key=4)
    no_astro = an.AMSU(5, 8, n_astrocytes=2, d_key=4, astrocyte=False)
    no_neuron = an.AMSU(5, 8, n_astrocytes=2, d_key=4, neuron_path=False)
    assert full.weight.shape[0] == 8 + 8 + 8 + 8
    assert no_astro.weight.shape[0] == 8
    assert no_neuron.weight.shape[0] == 8 + 8 + 8 and no_neuron.bias is None
    out, st = no_astro.run(torch.randn(5, 2, 5))
    assert st.H is None and not out.o.any()
    out, _ = no_neuron.run(torch.randn(5, 2, 5))
    assert not out.u.any()
    twin = an.AMSU(5, 8, n_astrocytes=2, d_key=4, spiking=False)
    s = twin(torch.randn(5, 2, 5))
    assert ((s > 0) & (s < 1)).any()  # smooth values, not spikes


def test_lif_equals_amsu_without_astrocyte():
    amsu = an.AMSU(6, 6, n_astrocytes=1, d_key=2, astrocyte=False, bias=False,
                   reset="subtract", tau_mem=3.0).double()
    with torch.no_grad():
        amsu.weight.copy_(torch.eye(6))
    lif = an.LIF(6, tau_mem=3.0, reset="subtract").double()
    x = torch.randn(25, 2, 6, dtype=torch.float64) * 2
    a, _ = amsu.run(x)
    s, u, _ = lif.run(x)
    assert torch.equal(a.spikes, s)
    torch.testing.assert_close(a.u, u)
    s2, _, _ = lif_loop(x, None, lif.beta, lif.threshold, lif.spec)
    assert torch.equal(s, s2)


def test_validation_context_turns_off_finite_check():
    layer = an.AMSU(3, 4, n_astrocytes=1, d_key=2)
    x = torch.full((2, 1, 3), float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        layer(x)
    with an.validation(check_finite=False):
        assert torch.isnan(layer.run(x)[0].u).all()
