"""Presets, territories and inputs of astro_neuron.neuro."""

from __future__ import annotations

import pytest
import torch

import astro_neuron as an
from astro_neuron.neuro import (
    PRESETS, Preset, Territories, make_amsu, n_steps, poisson, preset, sine_current,
    step_current,
)


# ---------------------------------------------------------------- presets

def test_presets_carry_units_and_build_layers():
    bio, ml = preset("biology"), preset("ml")
    assert bio.time_unit == "ms" and bio.dt == 1.0 and bio.tau_mem == 20.0
    assert ml is PRESETS["machine_learning"] and ml.time_unit == "step"
    layer = make_amsu(10, 8, "biology", n_astrocytes=2, d_key=4)
    assert layer.dt == 1.0 and layer.spec.reset == "zero"
    torch.testing.assert_close(layer.tau_mem, torch.full((8,), 20.0))
    torch.testing.assert_close(layer.beta, torch.full((8,), float(torch.exp(torch.tensor(-1 / 20)))))
    assert float(layer.tau_astro.detach().min()) == pytest.approx(1000.0, rel=1e-5)
    fine = preset("bio", dt=0.1)
    assert fine.dt == 0.1 and fine.tau_mem == 20.0
    ml_layer = make_amsu(10, 8, "ml", n_astrocytes=2)               # the AMSU defaults
    ref = an.AMSU(10, 8, n_astrocytes=2)
    torch.testing.assert_close(ml_layer.beta, ref.beta)
    torch.testing.assert_close(ml_layer.gamma, ref.gamma)


def test_preset_errors():
    with pytest.raises(ValueError, match="unknown preset 'cortex'"):
        preset("cortex")
    with pytest.raises(TypeError, match="unknown fields"):
        preset("biology", tau=3.0)
    with pytest.raises(ValueError, match="dt must be positive"):
        preset("biology", dt=0.0)
    with pytest.raises(ValueError, match="time_unit"):
        Preset("x", "s", 1.0, 1.0, (1.0, 2.0), 1.0, "none")


# ---------------------------------------------------------------- territories

def test_blocks_are_the_amsu_layout():
    t = Territories.blocks(12, 3)
    assert t.slots().tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert not t.overlapping and t.coverage.tolist() == [1] * 12


@pytest.mark.parametrize("N,A", [(10, 3), (80, 4), (7, 7)])
def test_tiled_disjoint_covers_every_neuron_once(N, A):
    t = Territories.tiled(N, A)
    assert t.coverage.tolist() == [1] * N and not t.overlapping


def test_tiled_overlap_and_topographic_inputs():
    t = Territories.tiled(80, 4, overlap=0.5, n_inputs=40)
    assert t.overlapping and t.sizes.tolist() == [30] * 4
    assert t.coverage.min() == 1 and t.coverage.max() == 2
    assert t.inputs.shape == (4, 40) and t.inputs.sum(1).tolist() == [14] * 4
    # neighbours share neurons, opposite astrocytes do not
    assert bool((t.neurons[0] & t.neurons[1]).any()) and not bool((t.neurons[0] & t.neurons[2]).any())
    syn = t.synapse_mask(40)
    assert syn.shape == (4, 80, 40) and int(syn[0].sum()) == 30 * 14


def test_random_and_spatial_rules():
    g = torch.Generator().manual_seed(0)
    t = Territories.random(50, 5, 0.3, generator=g)
    assert t.n_astrocytes == 5 and bool((t.sizes >= 1).all())
    assert 0.15 < float(t.neurons.float().mean()) < 0.45
    pos = torch.arange(10.0)[:, None]
    s = Territories.spatial(pos, torch.tensor([[2.0], [7.0]]), radius=2.5)
    assert s.neurons.int().tolist() == [[1, 1, 1, 1, 1, 0, 0, 0, 0, 0],
                                        [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]]
    assert Territories.spatial(pos, torch.tensor([[3.0], [5.0]]), 2.0).overlapping


def test_territory_errors():
    with pytest.raises(ValueError, match=r"astrocytes \[1\] contact no neuron"):
        Territories([[1, 1], [0, 0]])
    with pytest.raises(ValueError, match="2-D mask"):
        Territories(torch.ones(2, 2, 2))
    with pytest.raises(ValueError, match="only 0/1"):
        Territories([[0.5, 1.0]])
    with pytest.raises(ValueError, match="inputs mask has 3 rows"):
        Territories(torch.ones(2, 4), inputs=torch.ones(3, 5))
    with pytest.raises(ValueError, match="divisible"):
        Territories.blocks(10, 3)
    with pytest.raises(ValueError, match="overlap must be >= 0"):
        Territories.tiled(10, 2, overlap=-1.0)
    with pytest.raises(ValueError, match="n_astrocytes .* exceeds"):
        Territories.tiled(3, 4)
    with pytest.raises(ValueError, match="has 5 fibres"):
        Territories(torch.ones(2, 4), inputs=torch.ones(2, 5)).input_mask(6)


# ---------------------------------------------------------------- inputs

def test_poisson_rate_statistics_and_shapes():
    g = torch.Generator().manual_seed(0)
    x = poisson(20.0, 2000.0, n=200, dt_ms=1.0, batch_size=3, generator=g)
    assert x.shape == (2000, 3, 200) and set(x.unique().tolist()) <= {0.0, 1.0}
    rate = float(x.mean()) * 1000.0                      # Hz
    assert abs(rate - 20.0) < 1.0                        # 12000 expected spikes: sd ~0.2 Hz
    per_channel = poisson(torch.tensor([0.0, 500.0]), 1000.0, n=2, generator=g)
    assert float(per_channel[:, 0, 0].sum()) == 0 and float(per_channel[:, 0, 1].mean()) > 0.4
    T = n_steps(100.0, 0.5)
    varying = torch.zeros(T, 1)
    varying[T // 2:] = 1000.0 / 0.5                      # one spike per step
    x = poisson(varying, 100.0, n=4, dt_ms=0.5, generator=g)
    assert float(x[: T // 2].sum()) == 0 and float(x[T // 2:].mean()) == 1.0


def test_poisson_errors():
    with pytest.raises(ValueError, match="exceeds one spike per step"):
        poisson(2000.0, 10.0, n=2, dt_ms=1.0)
    with pytest.raises(ValueError, match="rate_hz must be finite"):
        poisson(float("nan"), 10.0, n=2)
    with pytest.raises(ValueError, match=r"per channel must have shape \[n\]=\[3\]"):
        poisson(torch.ones(2), 10.0, n=3)
    with pytest.raises(ValueError, match="shorter than one step"):
        poisson(1.0, 0.1, n=2, dt_ms=1.0)
    with pytest.raises(ValueError, match="n must be a positive integer"):
        poisson(1.0, 10.0, n=0)


def test_currents():
    I = step_current(0.5, 100.0, n=3, dt_ms=0.5, onset_ms=20.0, offset_ms=60.0, batch_size=2)
    assert I.shape == (200, 2, 3)
    on = I[:, 0, 0] > 0
    assert int(on.sum()) == 80 and bool(on[40]) and not bool(on[39]) and not bool(on[120])
    assert float(I.max()) == 0.5
    s = sine_current(1.0, 10.0, 100.0, n=1, offset=0.5)
    assert abs(float(s[25, 0, 0]) - 1.5) < 1e-5          # 25 ms = a quarter period at 10 Hz
    with pytest.raises(ValueError, match="onset_ms <= offset_ms"):
        step_current(1.0, 10.0, n=1, onset_ms=5.0, offset_ms=2.0)
