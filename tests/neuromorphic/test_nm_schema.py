"""The integer schema (neuromorphic.spec), the engines' one entry point, old files, and
the converter's refusals (non-finite values, options without an integer form)."""

from __future__ import annotations

import inspect
import json
import warnings
import weakref
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import astro_neuron as an
import neuromorphic as nm
from h5files import assert_same_run, edited_copy, file_layout
from neuromorphic import engines
from neuromorphic.engines import numba_fast
from neuromorphic.randnet import random_network, random_spikes
from neuromorphic.spec import (
    AMSU_FIELDS, LIF_FIELDS, SYNAPSE_FIELDS, canonical_digest, check_task, to_dict,
)

DATA = Path(__file__).parent / "data"
OLD = DATA / "net_v1_39121fa.h5"          # written by the code at commit 39121fa
OLD_DIGEST = "b71621cea6ea98ee46a9c886163964336f1170342309a3b7e84dd972bc14af64"


_layout = file_layout


def test_old_file_loads_and_simulates_as_it_did():
    net = nm.load(OLD)
    assert canonical_digest(net) == OLD_DIGEST
    run = np.load(DATA / "net_v1_39121fa_run.npz")
    assert_same_run(net, run)


def test_saving_writes_the_same_file_as_the_old_code(tmp_path):
    again = nm.save(nm.load(OLD), tmp_path / "again.h5")
    assert _layout(again) == _layout(OLD)


def test_every_declared_field_is_in_the_file_and_the_json(tmp_path):
    net = nm.load(OLD)
    doc = json.loads(json.dumps(to_dict(net)))
    with h5py.File(OLD) as f:
        for i, layer in enumerate(net.layers):
            fields = AMSU_FIELDS if layer.kind == "amsu" else LIF_FIELDS
            neuron = f[f"layers/{i}/neuron"]
            for fd in fields:
                # fields of a later format version are not in a version-1 file
                present = getattr(layer, fd.name) is not None and fd.since <= 1
                stored = fd.name in (neuron if fd.kind == "array" else neuron.attrs)
                assert stored == present, (i, fd.name)
                assert (fd.name in doc["layers"][i]) == present, (i, fd.name)
            for fd in SYNAPSE_FIELDS:
                assert fd.name in doc["layers"][i]["synapse"]


def test_engines_share_one_signature_and_agree():
    net = random_network(3, sizes=[12, 8], kinds=["amsu", "lif"])
    x = random_spikes(3, 30, 2, net.input_size)
    names = [n for n in engines.ENGINES if n != "lava"]
    for name in names:
        params = list(inspect.signature(engines.engine(name)).parameters)
        assert params[:3] == ["net", "x", "record_states"], name
    base = nm.simulate(net, x, backend="step")
    for name in names:
        assert nm.compare(base, nm.simulate(net, x, backend=name)).equal, name


def test_prepared_kernels_live_on_the_network_not_in_the_module():
    net = random_network(4, sizes=[8])
    x = random_spikes(4, 10, 1, net.input_size)
    assert net.derived == {}
    numba_fast.run(net, x)
    assert set(net.derived) == {"numba"} and net.derived["numba"]
    assert net.replace(meta={"x": 1}).derived == {}      # a new network, a new cache
    caches = [k for k, v in vars(numba_fast).items()
              if isinstance(v, (weakref.WeakKeyDictionary, weakref.WeakValueDictionary))]
    assert not caches and not hasattr(numba_fast, "_PREPARED")


# ----------------------------------------------------------------- task metadata

def _edited_copy(tmp_path, **task):
    def edit(f):
        meta = json.loads(f.attrs["meta"])
        meta["task"].update(task)
        f.attrs["meta"] = json.dumps(meta)
    return edited_copy(OLD, tmp_path / "edited.h5", edit)


@pytest.mark.parametrize("task, match", [
    ({"n_classes": 10 ** 9}, "meta/task/n_classes"),        # was: 3.8 TB allocation
    ({"n_classes": 3}, "network has 10 inputs"),
    ({"delay": 10 ** 6}, "meta/task/delay"),
    ({"delay": 60000, "cue_len": 60000}, "exceeds"),
    ({"p_cue": float("nan")}, "meta/task/p_cue"),
    ({"cue_len": "10"}, "meta/task/cue_len"),
    ({"extra": 1}, "unknown"),
])
def test_task_metadata_outside_the_checksum_is_validated(tmp_path, task, match):
    with pytest.raises(ValueError, match=match):
        nm.load(_edited_copy(tmp_path, **task))


def test_check_task_passes_other_tasks_and_valid_ones():
    assert check_task({"name": "something else", "n": 10 ** 12}, 10)["n"] == 10 ** 12
    assert check_task(None, 10) is None
    assert nm.load(OLD).meta["task"]["n_classes"] == 2


# ----------------------------------------------------------------- converter refusals

def _x(T=30, B=4, n=6, seed=0):
    return (torch.rand(T, B, n, generator=torch.Generator().manual_seed(seed)) < 0.3).float()


def test_quantize_refuses_non_finite_calibration_activations():
    torch.manual_seed(0)
    m = an.AMSU(6, 8, n_astrocytes=2, d_key=4).double()
    with torch.no_grad():
        m.weight.mul_(1e200)            # finite float64 weights, but k v^T overflows
    with pytest.raises(ValueError, match=r"amsu0: .*non-finite activations \(.*H"):
        nm.quantize(m, calibration=_x())


@pytest.mark.parametrize("name", ["bias", "log_threshold", "astro_gain"])
def test_quantize_refuses_non_finite_parameters(name):
    torch.manual_seed(0)
    m = an.AMSU(6, 8, n_astrocytes=2, d_key=4)
    with torch.no_grad():
        getattr(m, name).view(-1)[0] = float("inf")
    with pytest.raises(ValueError, match="contains NaN or Inf"):
        nm.quantize(m, calibration=_x())


def test_qat_export_refuses_parameters_that_became_non_finite():
    torch.manual_seed(0)
    m = an.AMSU(6, 8, n_astrocytes=2, d_key=4)
    qat = nm.prepare_qat(m, calibration=_x())
    with torch.no_grad():
        m.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="weight contains NaN"):
        nm.quantize(qat)


def test_quantize_refuses_a_normalised_readout():
    m = an.AMSU(6, 8, n_astrocytes=2, d_key=4)
    object.__setattr__(m.spec, "readout_norm", "rms")   # the LM's unit (option of the spec)
    with pytest.raises(ValueError, match="readout_norm='rms'.*not integer-expressible"):
        nm.quantize(m, calibration=_x())


@pytest.mark.parametrize("kw,match", [
    (dict(retention="gated"), "retention='gated'.*not integer-expressible"),
    (dict(retention="selective"), "retention='selective'.*not integer-expressible"),
    (dict(retention="gated", conv_size=3), "retention='gated'.*not integer-expressible"),
])
def test_quantize_refuses_the_input_dependent_retention_by_name(kw, match):
    """The input-dependent retention has no integer form: refused with an error naming
    the option (the delay line, conv_size > 1, is exported: test_nm_delay_line.py)."""
    m = an.AMSU(6, 8, n_astrocytes=2, d_key=4, **kw)
    with pytest.raises(ValueError, match=match):
        nm.quantize(m, calibration=_x())


def test_quantize_accepts_the_delay_line():
    torch.manual_seed(0)
    m = an.AMSU(6, 8, n_astrocytes=2, d_key=4, conv_size=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", nm.SaturationWarning)   # bias clamps, not the line
        q = nm.quantize(m, calibration=_x(), check_saturation=False)
    assert q.layers[0].conv_size == 3 and q.layers[0].conv_taps.shape == (3, 2 * 4 + 8)


@pytest.mark.parametrize("sensing,version", [("relu", 3), ("relu2", 4), ("relu-key", 5)])
def test_quantize_accepts_relu_sensing(sensing, version):
    """sensing='relu', 'relu2' and 'relu-key' are exported (test_nm_relu_sensing.py),
    alone and with the line, and the integer network agrees with its torch view."""
    torch.manual_seed(0)
    for conv_size in (1, 3):
        m = an.AMSU(6, 8, n_astrocytes=2, d_key=4, conv_size=conv_size, sensing=sensing)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", nm.SaturationWarning)
            q = nm.quantize(m, calibration=_x(), check_saturation=False)
        assert (q.layers[0].sensing, q.layers[0].conv_size, q.format_version) == \
            (sensing, conv_size, version)
        x = _x()
        assert nm.compare(nm.simulate(q, x), nm.simulate(q, x, backend="torch")).equal


def test_quantize_refuses_a_sensing_the_integer_network_lacks():
    m = an.AMSU(6, 8, n_astrocytes=2, d_key=4)
    object.__setattr__(m.spec, "sensing", "elu+1")   # a float option not exported
    with pytest.raises(ValueError, match="sensing='elu\\+1' has no integer form"):
        nm.quantize(m, calibration=_x())
