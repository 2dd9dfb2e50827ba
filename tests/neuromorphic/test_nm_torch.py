"""The quantization-aware torch view equals the NumPy reference bit for bit (atol=0),
and its straight-through gradients reach every float parameter."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch

import neuromorphic as nm
from neuromorphic.spec import AMSULayer, LIFLayer
from neuromorphic.randnet import random_network, random_spikes

N_MODELS = 24


def _quantize(model, calib):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", nm.SaturationWarning)
        return nm.quantize(model, calibration=calib)


def _assert_identical(a, b):
    d = nm.compare(a, b)
    assert d.equal, str(d)
    assert d.compared == sum(1 + len(s) for s in a.states)


@pytest.mark.parametrize("seed", range(N_MODELS))
def test_torch_view_equals_reference_on_random_quantized_models(seed, random_model):
    model, calib, x = random_model(seed, T=120)
    qnet = _quantize(model, calib)
    ref = nm.simulate(qnet, x, backend="reference")
    tor = nm.simulate(qnet, x, backend="torch")
    _assert_identical(tor, ref)
    steps = nm.simulate(qnet, x, backend="reference")   # and the reference's step form:
    from neuromorphic.engines.step import run as run_steps

    spec = run_steps(qnet, x.numpy().astype(np.int64))
    for i, s in enumerate(spec.spikes):
        np.testing.assert_array_equal(s, steps.spikes[i])


def test_random_models_cover_the_variants(random_model):
    """The 24 models above span 1-3 layers, both layer kinds, astrocyte on/off/alone,
    several astrocyte counts and key sizes, graded spikes and all resets."""
    seen = {"layers": set(), "kind": set(), "A": set(), "dk": set(), "levels": set(),
            "reset": set(), "astro": set(), "input_levels": set(), "spiking": 0}
    for seed in range(N_MODELS):
        model, calib, x = random_model(seed, T=120)
        q = _quantize(model, calib)
        seen["layers"].add(len(q.layers))
        seen["input_levels"].add(q.input_levels)
        out = nm.simulate(q, x, record_states=False)
        seen["spiking"] += all(s.sum() > 0 for s in out.spikes)
        for l in q.layers:
            seen["kind"].add(l.kind)
            seen["levels"].add(l.spike_levels)
            seen["reset"].add(l.reset)
            if isinstance(l, AMSULayer):
                seen["astro"].add((l.neuron_path, l.astrocyte))
                if l.astrocyte:
                    seen["A"].add(l.n_astrocytes)
                    seen["dk"].add(l.d_key)
    assert seen["layers"] == {1, 2, 3}
    assert seen["kind"] == {"amsu", "lif"}
    assert len(seen["A"]) >= 3 and len(seen["dk"]) >= 3
    assert {1, 2, 3} <= seen["levels"] and seen["input_levels"] == {1, 3}
    assert seen["reset"] == {"none", "subtract", "zero"}
    assert seen["astro"] == {(True, True), (True, False), (False, True)}
    assert seen["spiking"] >= N_MODELS // 2, "most random models should spike in every layer"


@pytest.mark.parametrize("seed", range(4))
def test_torch_view_equals_reference_with_saturation(seed):
    """Random integer networks whose operands and read-outs saturate."""
    kinds = [["amsu"], ["amsu-off", "amsu", "amsu-only"], ["lif", "amsu"], ["amsu", "lif"]][seed]
    net = random_network(seed + 40, sizes=[16, 8, 12][:len(kinds)], kinds=kinds,
                         spike_levels=3 if seed % 2 else 1, input_levels=2)
    x = random_spikes(seed, 120, 3, net.input_size, 2)
    ref = nm.simulate(net, x)
    _assert_identical(nm.simulate(net, x, backend="torch"), ref)


def test_qat_forward_is_the_exported_network(random_model):
    model, calib, x = random_model(3)
    qat = nm.prepare_qat(copy.deepcopy(model), calib)
    spikes, states = qat(x, return_all=True)
    qnet = qat.export(warn=False)
    ref = nm.simulate(qnet, x)
    for i, s in enumerate(spikes):
        np.testing.assert_array_equal(s.detach().numpy(), ref.spikes[i])
        for k, v in states[i].items():
            np.testing.assert_array_equal(v.detach().numpy(), ref.states[i][k])
    aligned = qat(x, align=True)
    full = nm.simulate(qnet, nm.pad_latency(x.numpy().astype(np.int64), qnet.latency))
    np.testing.assert_array_equal(aligned.detach().numpy(), full.aligned_output())


def test_qat_gradients_reach_every_float_parameter(random_model):
    model, calib, x = random_model(0, T=60)     # AM-SU with astrocyte
    qat = nm.prepare_qat(model, calib)
    out = qat(x)
    (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
    grads = {n: p.grad for n, p in qat.named_parameters() if p.requires_grad}
    assert grads
    for name, g in grads.items():
        assert g is not None, name
        assert torch.isfinite(g).all(), name
        assert g.abs().sum() > 0, f"no gradient reaches {name}"


def test_qat_fine_tuning_changes_the_integers(random_model):
    model, calib, x = random_model(1, T=40)
    qat = nm.prepare_qat(model, calib)
    before = qat.export(warn=False)
    opt = torch.optim.SGD(qat.parameters(), lr=0.5)
    for _ in range(3):
        opt.zero_grad()
        qat(x).sum().backward()
        opt.step()
    after = qat.export(warn=False)
    assert not before.equals(after)
    _assert_identical(nm.simulate(after, x, backend="torch"), nm.simulate(after, x))


def test_ste_rounding_has_identity_gradient():
    from neuromorphic.engines.torch_view import shr, ste_floor, ste_round, ste_trunc

    x = torch.tensor([-2.5, -1.5, 0.5, 1.5, 2.7], dtype=torch.float64, requires_grad=True)
    for f in (ste_round, ste_floor, ste_trunc):
        x.grad = None
        f(x).sum().backward()
        assert torch.equal(x.grad, torch.ones_like(x))
    np.testing.assert_array_equal(ste_round(x).detach().numpy(), np.round(x.detach().numpy()))
    x.grad = None
    shr(x * 8, 3).sum().backward()                 # d/dx floor((8x + 4) / 8) = 1
    assert torch.equal(x.grad, torch.ones_like(x))


def test_stock_lif_layer_is_chosen_only_when_exact():
    import astro_neuron as an

    fixed = torch.nn.Sequential(torch.nn.Linear(4, 6),
                                an.LIF(6, reset="zero", learn_tau=False, learn_threshold=False))
    learn = torch.nn.Sequential(torch.nn.Linear(4, 6), an.LIF(6, reset="zero"))
    x = (torch.rand(30, 2, 4) < 0.5).float()
    assert isinstance(_quantize(fixed, x).layers[0], LIFLayer)
    assert isinstance(_quantize(learn, x).layers[0], AMSULayer)
