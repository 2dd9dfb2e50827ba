"""Lava: fixed_pt runs are bit-identical to the reference (spikes and every state, every
step); floating_pt runs match the float torch model to float rounding. Lava runs are
slow (one OS process per Lava process), so this file runs a handful of networks."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import neuromorphic as nm
from neuromorphic.convert.graph import float_network, float_reference
from neuromorphic.randnet import random_network, random_spikes

pytestmark = [pytest.mark.lava, pytest.mark.timeout(180)]


def _identical(a, b):
    d = nm.compare(a, b)
    assert d.equal, str(d)
    assert d.compared == sum(1 + len(s) for s in b.states)


@pytest.mark.parametrize("seed,kinds,levels", [
    (0, ["amsu", "lif"], 1),                     # AM-SU -> stock Dense + stock LIF
    (2, ["amsu-off", "amsu", "amsu-only"], 3),   # 3 layers, graded spikes, all AM-SU variants
    (3, ["lif", "amsu"], 2),                     # graded input into a stock LIF layer
])
def test_lava_fixed_pt_equals_reference_random_networks(seed, kinds, levels):
    net = random_network(seed, sizes=[16, 8, 12][:len(kinds)], kinds=kinds, spike_levels=levels,
                         input_levels=2 if seed % 2 else 1)
    x = random_spikes(seed, 100, 2, net.input_size, net.input_levels)
    _identical(nm.simulate(net, x, backend="lava"), nm.simulate(net, x))


@pytest.mark.parametrize("seed", range(20))
def test_lava_torch_reference_identical_on_random_quantized_models(random_model, seed):
    """20 random torch models (1-3 layers of AM-SU, astrocyte off / alone, Linear + LIF,
    stock LIF; 1, 2, 4 astrocytes; keys 2-8; binary and graded spikes; all resets),
    quantized: torch view, reference and Lava fixed_pt agree on spikes and every state
    at every step of 100+ steps (about 1 s each in Lava)."""
    model, calib, x = random_model(seed, T=100, B=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", nm.SaturationWarning)
        qnet = nm.quantize(model, calibration=calib)
    assert len(qnet.layers) == 1 + seed % 3
    x = nm.pad_latency(x.numpy().astype(np.int64), qnet.latency)
    ref = nm.simulate(qnet, x)
    _identical(nm.simulate(qnet, x, backend="lava"), ref)
    _identical(nm.simulate(qnet, x, backend="torch"), ref)


def test_lava_fixed_pt_on_the_trained_demo_network(trained_memory_net, tmp_path):
    """The demo's network (trained, then fine-tuned with QAT and saved) in Lava; the run
    follows heavy torch use in this process (training, QAT)."""
    from astro_neuron.tasks import delayed_recall

    net, _ = trained_memory_net
    x_cal, _ = delayed_recall(net.task, 16, torch.Generator().manual_seed(1))
    qat = nm.prepare_qat(net.core, x_cal)
    with torch.no_grad():
        qat(x_cal[:, :4])
    qnet = nm.quantize(qat, calibration=x_cal)
    nm.save(qnet, tmp_path / "net.h5")
    qnet = nm.load(tmp_path / "net.h5")
    x, _ = delayed_recall(net.task, 2, torch.Generator().manual_seed(2))
    x = nm.pad_latency(x.numpy().astype(np.int64), qnet.latency)
    ref = nm.simulate(qnet, x)
    assert ref.spikes[0].sum() > 0
    _identical(nm.simulate(qnet, x, backend="lava"), ref)
    _identical(nm.simulate(qnet, x, backend="torch"), ref)


def test_lava_after_multithreaded_torch(monkeypatch):
    """torch work with several threads before a Lava run must not hang its forked workers."""
    torch.set_num_threads(2)
    try:
        a = torch.randn(512, 512)
        for _ in range(5):
            a = torch.tanh(a @ a)
        net = random_network(7, sizes=[8], kinds=["amsu"])
        x = random_spikes(7, 30, 1, net.input_size)
        _identical(nm.simulate(net, x, backend="lava"), nm.simulate(net, x))
        assert torch.get_num_threads() == 2          # restored after the run
    finally:
        torch.set_num_threads(1)


def test_lava_floating_pt_matches_float_model(random_model):
    """The float network in Lava (stock Dense/LIF floating_pt + AMSUNeuron floating_pt)
    against the float torch model run in float64 with the synapses' one-step delay."""
    from neuromorphic.engines.lava import run_lava

    torch.manual_seed(0)
    import astro_neuron as an

    model = torch.nn.Sequential(
        an.AMSU(10, 8, n_astrocytes=2, d_key=4, reset="subtract", spike_levels=2),
        torch.nn.Linear(8, 6),
        an.LIF(6, tau_mem=3.0, threshold=0.4, reset="zero", learn_tau=False,
               learn_threshold=False))
    with torch.no_grad():
        model[0].weight.mul_(2.0)
        model[1].weight.mul_(2.0)
    x = (torch.rand(60, 2, 10) < 0.3).float().numpy()
    fnet = float_network(model)
    lav = run_lava(fnet, x, tag="floating_pt")
    ref = float_reference(model, x)
    assert [l.kind for l in fnet.layers] == ["amsu", "lif"]
    for i in range(2):
        assert ref.spikes[i].sum() > 0
        np.testing.assert_array_equal(lav.spikes[i], ref.spikes[i])
        for k, v in ref.states[i].items():
            scale = max(1.0, float(np.abs(v).max()))
            assert np.abs(lav.states[i][k] - v).max() <= 1e-9 * scale, (i, k)
    # the float reference with the delay is the torch model on delayed inputs
    with torch.no_grad():
        direct = model[0](torch.cat([torch.zeros(1, 2, 10), torch.tensor(x[:-1])]).float())
    assert (direct.numpy() != ref.spikes[0]).mean() < 0.01   # float32 vs float64 flips only
