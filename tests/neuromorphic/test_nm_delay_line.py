"""The AM-SU's pre-synaptic delay line (``conv_size > 1``) in the integer network: every
engine identical to the step specification (spikes and every state, the line included,
``atol=0``), the torch/QAT view and Lava ``fixed_pt`` identical to the reference on
quantized float models, the float model and its integer network agreeing on a trained
task, the file (format version 2) round trip, and damaged delay-line fields refused by
name."""

from __future__ import annotations

import copy
import warnings

import h5py
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

import astro_neuron as an
import neuromorphic as nm
from h5files import assert_loads_same_or_refuses, corrupt, edited_copy
from neuromorphic import engines
from neuromorphic.convert.graph import float_network, float_reference
from neuromorphic.engines import step as S
from neuromorphic.randnet import random_network, random_spikes
from neuromorphic.spec import TAP_MAX

KINDS = [["amsu"], ["amsu-only", "amsu"], ["amsu", "lif"], ["amsu-off", "amsu"]]


def _assert_same(a, b, what=""):
    assert len(a.spikes) == len(b.spikes)
    for i in range(len(a.spikes)):
        np.testing.assert_array_equal(a.spikes[i], b.spikes[i], err_msg=f"{what} {i} spikes")
        assert set(a.states[i]) == set(b.states[i]), (what, i, set(a.states[i]), set(b.states[i]))
        for k in a.states[i]:
            np.testing.assert_array_equal(a.states[i][k], b.states[i][k],
                                          err_msg=f"{what} layer {i} state {k}")


def _quantize(model, calib):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", nm.SaturationWarning)
        return nm.quantize(model, calibration=calib)


# ----------------------------------------------------------------- integer networks

@pytest.mark.parametrize("conv_size", [2, 4])
@pytest.mark.parametrize("seed", range(4))
def test_engines_equal_step_form_with_delay_line(seed, conv_size):
    """Random integer networks with a delay line (every AM-SU kind, graded spikes): the
    fast forms (numpy; numba on 1-3 threads, split by sequence and by astrocyte) and the
    torch view equal the step specification, states (the line included) and counts."""
    kinds = KINDS[seed]
    net = random_network(seed, sizes=[16, 8][:len(kinds)], kinds=kinds, conv_size=conv_size,
                         spike_levels=1 + seed % 2, input_levels=1 + seed % 3)
    x = random_spikes(seed, 50, 1 + seed % 3, net.input_size, net.input_levels, rate=0.4)
    step = S.run(net, x)
    lines = [l for l in net.layers if l.kind == "amsu" and l.delay_line]
    assert lines and net.format_version == 2
    for i, l in enumerate(net.layers):
        if l.kind == "amsu" and l.delay_line:
            line = step.states[i]["conv"]
            assert line.shape == (50, x.shape[1], conv_size - 1, l.d_conv)
            assert np.abs(line).max() > 0, "the line never holds a value"
    assert sum(int(s.sum()) for s in step.spikes) > 0
    outs = {"numpy": engines.engine("numpy")(net, x, True, count_saturation=True)}
    for th in (1, 2, 3):
        outs[f"numba {th}"] = engines.engine("numba")(net, x, True, count_saturation=True,
                                                      threads=th)
    outs["torch"] = engines.engine("torch")(net, x, True)
    for name, out in outs.items():
        _assert_same(step, out, name)
        if name != "torch":
            assert out.saturation == outs["numpy"].saturation, name


def test_the_line_is_the_documented_filter():
    """One layer written out by hand: k_in, v_in (sat_b(shr(a, shift))) through the taps
    (row j: lag j), the sums shifted by shift_ck / shift_cv and saturated to operands."""
    net = random_network(5, sizes=[8], kinds=["amsu"], conv_size=3, reset="none")
    layer = net.layers[0]
    x = random_spikes(5, 30, 2, net.input_size, rate=0.5)
    run = S.run(net, x)
    a = run.states[0]["a"]                                # Dense buffer; neurons get a[t-1]
    a_in = np.concatenate([np.zeros_like(a[:1]), a[:-1]])
    parts = S.split_parts(layer, a_in)
    b = layer.operand_bits
    xin = np.concatenate([S.sat(S.shr(parts["K"], layer.shift_k), b),
                          S.sat(S.shr(parts["V"], layer.shift_v), b)], -1)      # [T, B, C]
    padded = np.concatenate([np.zeros((2,) + xin.shape[1:], np.int64), xin])
    for t in range(30):
        np.testing.assert_array_equal(run.states[0]["conv"][t],
                                      padded[t + 1:t + 3].transpose(1, 0, 2))
    acc = sum(layer.conv_taps[j] * padded[2 - j:32 - j] for j in range(3))
    n_k = layer.n_astrocytes * layer.d_key
    k = S.sat(S.shr(acc[..., :n_k], layer.shift_ck), b)
    v = S.sat(S.shr(acc[..., n_k:], layer.shift_cv), b)
    # H after step 0 = shr(k v^T, shift_kv) (H starts at 0)
    A, dk, dv = layer.n_astrocytes, layer.d_key, layer.d_value
    kv0 = S.shr(k[0].reshape(-1, A, dk)[..., None] * v[0].reshape(-1, A, dv)[..., None, :],
                layer.shift_kv)
    np.testing.assert_array_equal(run.states[0]["H"][0], S.sat24(kv0))
    assert np.abs(run.states[0]["H"][1:]).max() > 0


def test_delay_line_saturation_is_counted():
    """Inputs of the line and its sums clip at the operand width, counted as xk, xv and
    k, v, identically in every form."""
    from dataclasses import replace

    base = random_network(9, sizes=[8], kinds=["amsu"], conv_size=4, operand_bits=6,
                          input_levels=3)
    layer = replace(base.layers[0], shift_k=-3, shift_v=-3, shift_ck=0, shift_cv=0)
    net = nm.QuantizedNetwork((layer,), input_size=base.input_size, input_levels=3)
    x = random_spikes(9, 60, 2, net.input_size, 3, rate=0.6)
    step = S.run(net, x)
    outs = {e: engines.engine(e)(net, x, True, count_saturation=True) for e in ("numpy", "numba")}
    for e, out in outs.items():
        _assert_same(step, out, e)
    sat = outs["numba"].saturation[0]
    assert sat == outs["numpy"].saturation[0]
    for name in ("xk", "xv", "k", "v"):
        assert sat[name] > 0, (name, sat)
    assert np.abs(step.states[0]["conv"]).max() == (1 << 5) - 1     # 6-bit operands


# ----------------------------------------------------------------- quantized float models

def _conv_model(seed: int, conv_size: int):
    """A random float model whose AM-SU layers have a delay line of ``conv_size`` taps:
    1-2 AM-SU layers (astrocyte on; the second with graded spikes or astrocyte alone)."""
    g = np.random.default_rng(seed)
    torch.manual_seed(seed)
    n_in = int(g.integers(6, 14))
    layers, width = [], n_in
    for i in range(1 + seed % 2):
        A = int(g.choice([1, 2, 4]))
        N = A * int(g.integers(2, 5))
        m = an.AMSU(width, N, n_astrocytes=A, d_key=int(g.choice([2, 4, 8])),
                    tau_mem=float(g.uniform(1.5, 8)), conv_size=conv_size,
                    tau_astro=float(g.uniform(5, 200)), threshold=float(g.uniform(0.3, 1.2)),
                    reset=str(g.choice(["none", "subtract", "zero"])),
                    spike_levels=int(g.choice([1, 2])), neuron_path=not (i == 1 and seed % 4 == 1),
                    astro_gain=float(g.uniform(-2, 2)))
        with torch.no_grad():
            m.weight.mul_(float(g.uniform(1, 3)))
            m.conv.mul_(float(g.uniform(1, 3)))
        layers.append(m)
        width = N
    return torch.nn.Sequential(*layers)


def _spikes(seed, T, B, n):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(T, B, n, generator=g) < 0.3).float()


@pytest.mark.parametrize("conv_size", [2, 4])
@pytest.mark.parametrize("seed", range(3))
def test_qat_view_torch_and_reference_identical(seed, conv_size):
    """Quantized random float models with a delay line: the QAT forward, the torch view
    of the exported network and the reference agree on spikes and every state."""
    model = _conv_model(seed, conv_size)
    n_in = model[0].spec.in_features
    calib, x = _spikes(seed, 60, 6, n_in), _spikes(seed + 1, 60, 2, n_in)
    qat = nm.prepare_qat(copy.deepcopy(model), calib)
    qnet = qat.export(warn=False)
    assert qnet.format_version == 2
    assert [l.conv_size for l in qnet.layers] == [conv_size] * len(qnet.layers)
    ref = nm.simulate(qnet, x)
    assert ref.spikes[0].sum() > 0
    _assert_same(ref, nm.simulate(qnet, x, backend="torch"), "torch")
    spikes, states = qat(x, return_all=True)
    for i, s in enumerate(spikes):
        np.testing.assert_array_equal(s.detach().numpy(), ref.spikes[i])
        assert set(states[i]) == set(ref.states[i])
        for k, v in states[i].items():
            np.testing.assert_array_equal(v.detach().numpy(), ref.states[i][k], err_msg=k)


def test_qat_gradients_reach_the_taps():
    model = _conv_model(0, 4)
    n_in = model[0].spec.in_features
    qat = nm.prepare_qat(model, _spikes(0, 60, 6, n_in))
    out = qat(_spikes(1, 60, 2, n_in))
    (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
    g = model[0].conv.grad
    assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0


def test_taps_are_8_bit_mantissas_with_a_power_of_two_per_block():
    model = _conv_model(2, 4)
    n_in = model[0].spec.in_features
    qnet = _quantize(model, _spikes(2, 60, 6, n_in))
    layer = qnet.layers[0]
    w = model[0].conv.detach().double().numpy()
    n_k = layer.n_astrocytes * layer.d_key
    for block, cols in (("cK", slice(0, n_k)), ("cV", slice(n_k, None))):
        m = layer.conv_taps[:, cols]
        assert np.abs(m).max() <= TAP_MAX and np.abs(m).max() > TAP_MAX // 2   # range used
        e = layer.scale[block]
        np.testing.assert_allclose(m * 2.0 ** e, w[:, cols], atol=2.0 ** e / 2 + 1e-12)
    assert layer.shift_ck == layer.scale["k"] - layer.scale["cK"] - layer.scale["xk"]
    assert layer.shift_k == layer.scale["xk"] - layer.scale["wK"]


# ----------------------------------------------------------------- Lava

@pytest.mark.lava
@pytest.mark.timeout(180)
@pytest.mark.parametrize("seed,conv_size", [(0, 2), (1, 4)])
def test_lava_fixed_pt_identical_with_delay_line(seed, conv_size):
    """A quantized float model with a delay line in Lava fixed_pt: spikes and every state
    (Dense buffer, u, H and the line) equal the reference and the torch view."""
    model = _conv_model(seed, conv_size)
    n_in = model[0].spec.in_features
    qnet = _quantize(model, _spikes(seed, 60, 6, n_in))
    x = nm.pad_latency(_spikes(seed + 1, 30, 2, n_in).numpy().astype(np.int64), qnet.latency)
    ref = nm.simulate(qnet, x)
    lav = nm.simulate(qnet, x, backend="lava")
    assert "conv" in lav.states[0]
    d = nm.compare(lav, ref)
    assert d.equal, str(d)
    assert d.compared == sum(1 + len(s) for s in ref.states)


@pytest.mark.lava
@pytest.mark.timeout(180)
def test_lava_fixed_pt_identical_on_a_random_integer_network_with_delay_line():
    """Astrocyte alone then AM-SU, graded spikes and input, both with a 4-tap line whose
    inputs and sums saturate: Lava = reference, every state at every step."""
    net = random_network(1, sizes=[16, 8], kinds=["amsu-only", "amsu"], conv_size=4,
                         spike_levels=2, input_levels=2)
    x = random_spikes(1, 40, 2, net.input_size, 2, rate=0.4)
    ref = nm.simulate(net, x)
    sat = engines.engine("numpy")(net, x, False, count_saturation=True).saturation
    assert sum(c["xk"] + c["xv"] + c["k"] + c["v"] for c in sat) > 0
    d = nm.compare(nm.simulate(net, x, backend="lava"), ref)
    assert d.equal, str(d)
    assert d.compared == sum(1 + len(s) for s in ref.states)


@pytest.mark.lava
@pytest.mark.timeout(180)
def test_lava_floating_pt_with_delay_line_matches_the_float_model():
    from neuromorphic.engines.lava import run_lava

    model = _conv_model(3, 3)
    x = _spikes(4, 40, 2, model[0].spec.in_features).numpy()
    fnet = float_network(model)
    lav = run_lava(fnet, x, tag="floating_pt")
    ref = float_reference(model, x)
    for i in range(len(model)):
        np.testing.assert_array_equal(lav.spikes[i], ref.spikes[i])
        assert "conv" in ref.states[i]
        for k, v in ref.states[i].items():
            scale = max(1.0, float(np.abs(v).max()))
            assert np.abs(lav.states[i][k] - v).max() <= 1e-9 * scale, (i, k)


# ----------------------------------------------------------------- float vs integer

def test_trained_network_with_delay_line_keeps_its_accuracy_in_integers():
    """A MemoryNet with conv_size=4 trained on delayed recall: its integer network (PTQ)
    answers as the float one does, within the tolerance the demo test allows for
    conv_size=1 (0.1 accuracy)."""
    from astro_neuron.apps.demo.lava import integer_accuracy
    from astro_neuron.tasks import MemoryNet, RecallTask, delayed_recall, evaluate, train_memory_net

    torch.manual_seed(0)
    task = RecallTask(delay=20)
    net = MemoryNet(task, n_neurons=32, n_astrocytes=4, d_key=8, conv_size=4)
    train_memory_net(net, steps=60, batch_size=32, lr=1e-2, progress=False)
    x_cal, _ = delayed_recall(task, 16, torch.Generator().manual_seed(1))
    x, y = delayed_recall(task, 128, torch.Generator().manual_seed(2))
    acc_float = evaluate(net, x, y)
    qnet = _quantize(net.core, x_cal)
    assert qnet.layers[0].conv_size == 4
    acc_int = integer_accuracy(qnet, net, x, y)
    assert acc_float >= 0.6, acc_float          # learned (chance: 1 / n_classes)
    assert abs(acc_int - acc_float) <= 0.1, (acc_float, acc_int)


# ----------------------------------------------------------------- the file

@pytest.fixture(scope="module")
def line_file(tmp_path_factory):
    net = random_network(3, sizes=[12, 8], kinds=["amsu", "lif"], conv_size=3)
    path = tmp_path_factory.mktemp("h5") / "line.h5"
    nm.save(net, path)
    return path, net


def test_file_round_trip_with_delay_line(line_file):
    path, net = line_file
    back = nm.load(path)
    assert back.equals(net) and back.layers[0].conv_size == 3
    np.testing.assert_array_equal(back.layers[0].conv_taps, net.layers[0].conv_taps)
    x = random_spikes(0, 30, 2, net.input_size)
    _assert_same(nm.simulate(back, x), nm.simulate(net, x))
    with h5py.File(path) as f:
        assert f.attrs["format_version"] == 2
        ng = f["layers/0/neuron"]
        assert ng.attrs["conv_size"] == 3 and ng["conv_taps"].shape == (3, net.layers[0].d_conv)
        assert f["layers/0/bits"].attrs["tap"] == 8
    assert nm.spec.to_dict(net)["layers"][0]["conv_size"] == 3


def test_networks_without_delay_line_stay_format_1(tmp_path):
    """No delay line: version 1, no new field in the file or the JSON; a version-1 file
    reads as conv_size 1."""
    net = random_network(3, sizes=[12], kinds=["amsu"])
    nm.save(net, tmp_path / "v1.h5")
    with h5py.File(tmp_path / "v1.h5") as f:
        assert f.attrs["format_version"] == 1
        assert "conv_size" not in f["layers/0/neuron"].attrs
        assert "conv_taps" not in f["layers/0/neuron"] and "tap" not in f["layers/0/bits"].attrs
    back = nm.load(tmp_path / "v1.h5")
    assert back.layers[0].conv_size == 1 and not back.layers[0].delay_line
    assert "conv" not in nm.simulate(back, random_spikes(0, 5, 1, net.input_size)).states[0]
    assert "conv_size" not in nm.spec.to_dict(net)["layers"][0]



def _replace(f, name, value):
    del f[name]
    f[name] = value


TAPS = "layers/0/neuron/conv_taps"
BAD = [
    ("taps out of range", lambda f: _replace(f, TAPS, np.full(f[TAPS].shape, 200, np.int32)),
     r"layers/0/neuron/conv_taps must lie in \[-127, 127\], got a value 200"),
    ("taps -128", lambda f: _replace(f, TAPS, np.full(f[TAPS].shape, -128, np.int32)),
     r"layers/0/neuron/conv_taps must lie in \[-127, 127\]"),
    ("taps shape", lambda f: _replace(f, TAPS, f[TAPS][:-1]),
     "layers/0/neuron/conv_taps must have shape"),
    ("taps dtype", lambda f: _replace(f, TAPS, f[TAPS][()].astype(np.float32)),
     "layers/0/neuron/conv_taps.*integer dtype"),
    ("taps missing", lambda f: f.__delitem__(TAPS), "layers/0/neuron/conv_taps"),
    ("taps in range, changed", lambda f: _replace(f, TAPS, np.clip(f[TAPS][()] + 1, -127, 127)),
     "checksum"),
    ("conv_size range", lambda f: f["layers/0/neuron"].attrs.__setitem__("conv_size", 9),
     r"layers/0/neuron/conv_size must .*\[1, 8\]"),
    ("conv_size vs taps", lambda f: f["layers/0/neuron"].attrs.__setitem__("conv_size", 2),
     "layers/0/neuron/conv_taps must have shape"),
    ("shift_ck", lambda f: f["layers/0/neuron"].attrs.__setitem__("shift_ck", 99),
     "layers/0/neuron/shift_ck"),
    ("tap bits", lambda f: f["layers/0/bits"].attrs.__setitem__("tap", 16), "layers/0/bits/tap"),
    ("version 1 label", lambda f: f.attrs.__setitem__("format_version", 1),
     "layers/0/neuron/conv_size' is not part of format version 1"),
    ("no line left", lambda f: f["layers/0/neuron"].attrs.__setitem__("astrocyte", 0),
     "absent when|format_version"),
    ("unknown version", lambda f: f.attrs.__setitem__("format_version", 6),
     "format_version.*reads versions 1, 2, 3, 4, 5"),
    # a version-2 network labelled version 3 or 4 lacks the version-3 field (sensing)
    ("version 3 label", lambda f: f.attrs.__setitem__("format_version", 3),
     "layers/0/neuron/sensing' is missing"),
    ("version 4 label", lambda f: f.attrs.__setitem__("format_version", 4),
     "layers/0/neuron/sensing' is missing"),
    ("version 2 without a line", lambda f: (f["layers/0/neuron"].attrs.__setitem__("conv_size", 1),
                                            f.__delitem__(TAPS)),
     "format_version' is 2, but the network it holds is of version 1"),
]


@pytest.mark.parametrize("label,edit,match", BAD, ids=[b[0] for b in BAD])
def test_damaged_delay_line_fields_are_refused_by_name(line_file, tmp_path, label, edit, match):
    path, _ = line_file
    with pytest.raises(ValueError, match=match):
        nm.load(edited_copy(path, tmp_path / "bad.h5", edit))


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_corrupted_version_2_files_fail_cleanly(line_file, tmp_path, data):
    """Any truncation or byte corruption of a file with a delay line loads back the same
    network or raises ValueError naming the file (never another exception)."""
    path, net = line_file
    assert_loads_same_or_refuses(corrupt(bytearray(path.read_bytes()), data),
                                 tmp_path / "bad.h5", net)


def test_a_delay_line_without_astrocyte_or_taps_cannot_be_built():
    from dataclasses import replace

    net = random_network(2, sizes=[8], kinds=["amsu"], conv_size=2)
    layer = net.layers[0]
    with pytest.raises(ValueError, match="layers/0/neuron/conv_taps must be a numpy"):
        nm.QuantizedNetwork((replace(layer, conv_taps=None),), input_size=net.input_size)
    with pytest.raises(ValueError, match=r"conv_taps must lie in \[-127, 127\]"):
        nm.QuantizedNetwork((replace(layer, conv_taps=layer.conv_taps * 0 + 128),),
                            input_size=net.input_size)
    off = random_network(2, sizes=[8], kinds=["amsu-off"]).layers[0]
    with pytest.raises(ValueError, match="conv_taps must be absent when delay_line is off"):
        nm.QuantizedNetwork((replace(off, conv_taps=np.zeros((1, off.d_conv), np.int64)),),
                            input_size=net.input_size)


def test_operation_count_includes_the_delay_line():
    from neuromorphic.energy import synaptic_ops

    net = random_network(4, sizes=[8], kinds=["amsu"], conv_size=3)
    plain = random_network(4, sizes=[8], kinds=["amsu"])
    x = random_spikes(4, 20, 1, net.input_size)
    l = net.layers[0]
    with_line, without = synaptic_ops(net, x)[0], synaptic_ops(plain, x)[0]
    assert with_line.astro_ops - without.astro_ops == 3 * (l.n_astrocytes * l.d_key + l.n_neurons)
