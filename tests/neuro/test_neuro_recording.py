"""Recorders and run files: what is recorded, round trips, and clear errors."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import torch

import astro_neuron as an
from astro_neuron.astrocytes import astro_summary
from astro_neuron.neuro import (
    Recording, Territories, TripartitePopulation, load_recording, poisson, record,
)
from astro_neuron.tasks import MemoryNet, RecallTask


def test_record_amsu_matches_its_run_and_astrocyte_state():
    torch.manual_seed(0)
    layer = an.AMSU(6, 8, n_astrocytes=2, d_key=3)
    x = torch.rand(40, 2, 6)
    rec = record(layer, x)
    out, state = layer.run(x, mode="loop")
    assert rec.time_unit == "step" and rec.dt == 1.0 and rec.T == 40 and rec.batch_size == 2
    assert set(rec.populations) == {"input", "amsu"}
    assert set(rec.populations["input"]) == {"current"}           # analog input
    amsu = rec.populations["amsu"]
    np.testing.assert_allclose(amsu["u"], out.u.detach().numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(amsu["o"], out.o.detach().numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(amsu["spikes"], out.spikes.detach().numpy())
    assert amsu["astro"].shape == (40, 2, 2)
    np.testing.assert_allclose(amsu["astro"][-1], astro_summary(state.H).detach().numpy(),
                               rtol=1e-5)
    full = record(layer, x[:5], astro="full")
    assert full.populations["amsu"]["H"].shape == (5, 2, 2, 3, 4)
    assert rec.attrs["amsu"]["astro_model"] == "linear"


def test_record_population_with_current_and_memory_net():
    torch.manual_seed(0)
    pop = TripartitePopulation(5, 6, Territories.tiled(6, 2, overlap=0.5), d_key=3)
    x = poisson(80.0, 100.0, n=5)
    I = torch.full((100, 1, 6), 0.05)
    rec = record(pop, x, current=I)
    assert rec.time_unit == "ms" and set(rec.populations["input"]) == {"spikes"}
    out, _ = pop.run(x, current=I)
    np.testing.assert_allclose(rec.populations["population"]["u"], out.u.detach().numpy(),
                               rtol=1e-6, atol=1e-6)
    task = RecallTask(n_classes=2, channels_per_class=3, go_channels=2, cue_len=3, delay=5,
                      recall_len=3)
    net = MemoryNet(task, n_neurons=8, n_astrocytes=2, d_key=4)
    rec = record(net, torch.zeros(task.T, 1, task.n_in))
    assert set(rec.populations) == {"input", "amsu"}
    seq = torch.nn.Sequential(an.AMSU(4, 6, n_astrocytes=2, d_key=2),
                              an.AMSU(6, 4, n_astrocytes=2, d_key=2))
    rec = record(seq, torch.rand(10, 1, 4))
    assert list(rec.populations) == ["input", "layer0", "layer1"]


def test_record_li_rinzel_is_in_ms_with_calcium():
    layer = an.AMSU(4, 4, n_astrocytes=2, d_key=2, astro_model="li_rinzel", dt=10.0)
    rec = record(layer, torch.rand(20, 1, 4))
    assert rec.time_unit == "ms" and rec.dt == 10.0
    assert "µM" in rec.attrs["amsu"]["astro_label"]
    assert float(rec.populations["amsu"]["astro"].min()) > 0


def test_record_errors():
    layer = an.AMSU(4, 4, n_astrocytes=2, d_key=2)
    with pytest.raises(ValueError, match="astro must be one of"):
        record(layer, torch.rand(5, 1, 4), astro="mean")
    with pytest.raises(ValueError, match=r"\[T, B, in\]"):
        record(layer, torch.rand(5, 4))
    with pytest.raises(ValueError, match="NaN"):
        record(layer, torch.full((5, 1, 4), float("nan")))
    with pytest.raises(ValueError, match="current injection needs a single TripartitePopulation"):
        record(layer, torch.rand(5, 1, 4), current=torch.zeros(5, 1, 4))
    with pytest.raises(TypeError, match="record\\(\\) takes an AMSU"):
        record(torch.nn.Linear(4, 4), torch.rand(5, 1, 4))
    with pytest.raises(ValueError, match="no time steps"):
        record(layer, torch.rand(0, 1, 4))


def _rec() -> Recording:
    torch.manual_seed(0)
    layer = an.AMSU(4, 6, n_astrocytes=2, d_key=2)
    return record(layer, (torch.rand(30, 2, 4) < 0.3).float(),
                  info={"events": {"cue end": 10.0}, "tokens": list("abcdefghij" * 3)})


def test_save_load_round_trip(tmp_path):
    rec = _rec()
    path = rec.save(tmp_path / "run.npz")
    back = load_recording(path)
    assert back.dt == rec.dt and back.time_unit == rec.time_unit and back.info == rec.info
    assert back.attrs == rec.attrs
    for name, arrs in rec.populations.items():
        assert set(back.populations[name]) == set(arrs)
        for f, a in arrs.items():
            np.testing.assert_array_equal(back.populations[name][f], a)
    assert not list(tmp_path.glob(".*tmp"))                       # atomic: no leftovers
    with pytest.raises(ValueError, match="saved as .npz"):
        rec.save(tmp_path / "run.h5")


def _rewrite(src, dst, drop=(), meta_edit=None, replace=None):
    """Copy a run file, dropping entries, editing the metadata or replacing an array."""
    with np.load(src) as z:
        arrays = {k: z[k] for k in z.files if k not in drop}
    if meta_edit is not None:
        meta = json.loads(bytes(arrays["__meta__"]).decode())
        meta_edit(meta)
        arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    arrays.update(replace or {})
    with open(dst, "wb") as fh:
        np.savez(fh, **arrays)
    return dst


def test_load_errors(tmp_path):
    good = _rec().save(tmp_path / "good.npz")
    with pytest.raises(FileNotFoundError, match="recording not found"):
        load_recording(tmp_path / "missing.npz")
    with pytest.raises(IsADirectoryError):
        load_recording(tmp_path)
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(ValueError, match=r"not a .npz \(zip\) file"):
        load_recording(tmp_path / "text.npz")
    (tmp_path / "trunc.npz").write_bytes(good.read_bytes()[:200])
    with pytest.raises(ValueError, match="not a .npz"):
        load_recording(tmp_path / "trunc.npz")
    with pytest.raises(ValueError, match="no '__meta__' entry"):
        load_recording(_rewrite(good, tmp_path / "a.npz", drop=("__meta__",)))
    with pytest.raises(ValueError, match="lacks the array 'amsu/u'"):
        load_recording(_rewrite(good, tmp_path / "b.npz", drop=("amsu/u",)))
    with pytest.raises(ValueError, match="metadata lacks the field 'dt'"):
        load_recording(_rewrite(good, tmp_path / "c.npz", meta_edit=lambda m: m.pop("dt")))
    with pytest.raises(ValueError, match="version 99"):
        load_recording(_rewrite(good, tmp_path / "d.npz",
                                meta_edit=lambda m: m.update(version=99)))
    with pytest.raises(ValueError, match="format 'other'"):
        load_recording(_rewrite(good, tmp_path / "e.npz",
                                meta_edit=lambda m: m.update(format="other")))
    nan = np.full((30, 2, 6), np.nan, dtype=np.float32)
    with pytest.raises(ValueError, match="amsu/u contains NaN"):
        load_recording(_rewrite(good, tmp_path / "f.npz", replace={"amsu/u": nan}))
    with pytest.raises(ValueError, match=r"amsu/o has 29 time rows, expected"):
        load_recording(_rewrite(good, tmp_path / "g.npz",
                                replace={"amsu/o": np.zeros((29, 2, 6), np.float32)}))
    bad_json = tmp_path / "h.npz"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(bad_json, "w") as zout:
        for item in zin.namelist():
            data = zin.read(item)
            if item == "__meta__.npy":
                data = data.replace(b'"format"', b'"form\\xat"')
            zout.writestr(item, data)
    with pytest.raises(ValueError, match="recording .*h.npz"):
        load_recording(bad_json)


def test_recording_validation_in_memory():
    with pytest.raises(ValueError, match="needs at least one population"):
        Recording(1.0, "ms", {})
    with pytest.raises(ValueError, match="dt must be a positive number"):
        Recording(0.0, "ms", {"a": {"spikes": np.zeros((3, 1, 2))}})
    with pytest.raises(ValueError, match="unknown field 'v'"):
        Recording(1.0, "ms", {"a": {"v": np.zeros((3, 1, 2))}})
    with pytest.raises(ValueError, match="must be 3-D"):
        Recording(1.0, "ms", {"a": {"spikes": np.zeros((3, 2))}})
    with pytest.raises(ValueError, match="different neuron counts"):
        Recording(1.0, "ms", {"a": {"spikes": np.zeros((3, 1, 2)), "u": np.zeros((3, 1, 3))}})
