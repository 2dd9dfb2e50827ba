"""The integer network file: round trip, atomic writes, and validation of every field.

Property tests (hypothesis): any truncation or byte corruption of a valid file either
loads back the identical network or raises ValueError (never another exception, never
a half-built network); random valid networks round-trip; random bad values of a field
raise ValueError naming that field."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import neuromorphic as nm
from h5files import assert_loads_same_or_refuses, corrupt, edited_copy
from neuromorphic.fileio import canonical_digest
from neuromorphic.randnet import random_network, random_spikes

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
# the random corruptions are drawn the same way on every run (derandomize), so a failure
# reproduces. (They were made fixed when a rare corrupted HDF5 attribute was found to make
# h5py loop forever, docs/notes.md; the seal now refuses such a file before h5py reads it.)
CORRUPT = settings(SETTINGS, derandomize=True)


@pytest.fixture(scope="module")
def good_file(tmp_path_factory) -> tuple[Path, nm.QuantizedNetwork]:
    net = random_network(3, sizes=[12, 8], kinds=["amsu", "lif"], spike_levels=1)
    path = tmp_path_factory.mktemp("h5") / "net.h5"
    nm.save(net, path)
    return path, net


def test_round_trip_keeps_every_integer(good_file):
    path, net = good_file
    back = nm.load(path)
    assert back.equals(net)
    assert back.meta == net.meta
    x = random_spikes(0, 50, 2, net.input_size)
    assert nm.compare(nm.simulate(back, x), nm.simulate(net, x)).equal
    with h5py.File(path) as f:     # self-describing header
        assert f.attrs["format"] == nm.FORMAT and f.attrs["format_version"] == 1
        assert f.attrs["producer"].startswith("astro-neuron")
        assert dict(f["layers/0/bits"].attrs)["state"] == 24
        assert [tuple(e) for e in f["graph/edges"][()]] == [(b"input", b"layer0"),
                                                           (b"layer0", b"layer1")]


@SETTINGS
@given(seed=st.integers(0, 10_000), n_layers=st.integers(1, 3), levels=st.sampled_from([1, 3]),
       data=st.data())
def test_random_valid_networks_round_trip(tmp_path, seed, n_layers, levels, data):
    kinds = data.draw(st.lists(st.sampled_from(["amsu", "amsu-off", "amsu-only", "lif"]),
                               min_size=n_layers, max_size=n_layers))
    net = random_network(seed, sizes=[8, 6, 4][:n_layers], kinds=kinds, spike_levels=levels,
                         input_levels=levels, operand_bits=data.draw(st.integers(2, 12)))
    path = tmp_path / f"n{seed}.h5"
    nm.save(net, path)
    assert nm.load(path).equals(net)


@CORRUPT
@given(data=st.data())
def test_corrupted_files_fail_cleanly(good_file, tmp_path, data):
    path, net = good_file
    assert_loads_same_or_refuses(corrupt(bytearray(path.read_bytes()), data, zero_runs=True),
                                 tmp_path / "bad.h5", net)



def _replace(f, name, value):
    del f[name]
    f[name] = value


BAD_FIELDS = [
    ("format_version", lambda f: f.attrs.__setitem__("format_version", 6), "format_version"),
    # a version-1 network labelled version 2, 3 or 4 lacks the version-2 fields
    ("version 2 label", lambda f: f.attrs.__setitem__("format_version", 2), "layers/0/bits/tap"),
    ("version 3 label", lambda f: f.attrs.__setitem__("format_version", 3), "layers/0/bits/tap"),
    ("version 4 label", lambda f: f.attrs.__setitem__("format_version", 4), "layers/0/bits/tap"),
    ("version 5 label", lambda f: f.attrs.__setitem__("format_version", 5), "layers/0/bits/tap"),
    ("format", lambda f: f.attrs.__setitem__("format", "other"), "'format'"),
    ("missing du", lambda f: f.__delitem__("layers/0/neuron/du"), "layers/0/neuron/du"),
    ("du dtype", lambda f: _replace(f, "layers/0/neuron/du",
                                    f["layers/0/neuron/du"][()].astype(np.float32)),
     "layers/0/neuron/du"),
    ("du shape", lambda f: _replace(f, "layers/0/neuron/du", f["layers/0/neuron/du"][:-1]),
     "layers/0/neuron/du"),
    ("du range", lambda f: _replace(f, "layers/0/neuron/du",
                                    np.full(f["layers/0/neuron/du"].shape, 4096, np.int32)),
     "layers/0/neuron/du"),
    ("vth range", lambda f: _replace(f, "layers/0/neuron/vth",
                                     np.full(f["layers/0/neuron/vth"].shape, -1, np.int32)),
     "layers/0/neuron/vth"),
    ("weight range", lambda f: _replace(f, "layers/0/synapse/weight",
                                        f["layers/0/synapse/weight"][()] * 0 + 300),
     "layers/0/synapse/weight"),
    ("weight_exp", lambda f: f["layers/1/synapse"].attrs.__setitem__("weight_exp", 9),
     "layers/1/synapse/weight_exp"),
    ("sign_mode", lambda f: f["layers/1/synapse"].attrs.__setitem__("sign_mode", "both"),
     "layers/1/synapse/sign_mode"),
    ("reset", lambda f: f["layers/0/neuron"].attrs.__setitem__("reset", "maybe"),
     "layers/0/neuron/reset"),
    ("shift", lambda f: f["layers/0/neuron"].attrs.__setitem__("shift_r", 99),
     "layers/0/neuron/shift_r"),
    ("bits", lambda f: f["layers/1/bits"].attrs.__setitem__("state", 32), "layers/1/bits/state"),
    ("n_layers", lambda f: f.attrs.__setitem__("n_layers", 3), "graph/edges"),
    ("layer type", lambda f: f["layers/1"].attrs.__setitem__("type", "conv"), "layers/1/type"),
    ("in-range value", lambda f: _replace(f, "layers/0/neuron/du",
                                          f["layers/0/neuron/du"][()] ^ 1), "checksum"),
    ("meta", lambda f: f.attrs.__setitem__("meta", "{not json"), "meta"),
]


@pytest.mark.parametrize("label,edit,field", BAD_FIELDS, ids=[b[0] for b in BAD_FIELDS])
def test_bad_fields_are_named(good_file, tmp_path, label, edit, field):
    path, _ = good_file
    bad = edited_copy(path, tmp_path / "bad.h5", edit)
    with pytest.raises(ValueError) as info:
        nm.load(bad)
    assert field in str(info.value), str(info.value)


@SETTINGS
@given(value=st.one_of(st.integers(-2**20, 2**20), st.floats(allow_nan=True)),
       field=st.sampled_from(["du", "vth", "bias_mant", "bias_exp", "dH", "gain"]))
def test_random_field_values_are_validated(good_file, tmp_path, value, field):
    """Setting a whole array to one random value: loads iff the value is legal for it."""
    path, net = good_file
    name = f"layers/0/neuron/{field}"
    with h5py.File(path) as f:
        shape = f[name].shape
    arr = np.full(shape, value, dtype=np.float64 if isinstance(value, float) else np.int64)
    bad = edited_copy(path, tmp_path / "v.h5", lambda f: _replace(f, name, arr))
    legal = {"du": (0, 4095), "vth": (0, 2**17 - 1), "bias_mant": (-4096, 4095),
             "bias_exp": (0, 7), "dH": (0, 4095), "gain": (-127, 127)}[field]
    with pytest.raises(ValueError) as info:      # legal values still fail the checksum
        nm.load(bad)
    msg = str(info.value)
    if isinstance(value, float) or not legal[0] <= value <= legal[1]:
        assert name in msg
    else:
        assert "checksum" in msg or name in msg   # (worst-case bounds may also refuse it)


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        nm.load(tmp_path / "none.h5")
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(ValueError, match="not a readable HDF5"):
        nm.load(tmp_path / "text.h5")


SIGNATURE = b"\x89HDF\r\n\x1a\n"


def test_the_seal_refuses_damage_before_the_hdf5_library_reads_the_file(good_file, tmp_path,
                                                                        monkeypatch):
    """Every flipped bit and every truncation of a sealed file is refused by the seal,
    with h5py never opening it (a damaged attribute header can make the HDF5 library
    loop forever)."""
    path, net = good_file
    raw = path.read_bytes()
    assert raw.startswith(b"astro-neuron integer network") and raw[512:520] == SIGNATURE
    monkeypatch.setattr(h5py, "File", lambda *a, **k: pytest.fail("h5py opened a damaged file"))
    rng = np.random.default_rng(0)
    bad = tmp_path / "bad.h5"
    places = [0, 63, 64, 127, 128, 300, 511, 512, 519, 520, len(raw) // 2, len(raw) - 1]
    for i in places + [int(j) for j in rng.integers(0, len(raw), 40)]:
        b = bytearray(raw)
        b[i] ^= 1 << int(rng.integers(8))
        bad.write_bytes(bytes(b))
        with pytest.raises(ValueError, match="damaged file") as e:
            nm.load(bad)
        assert str(bad) in str(e.value)
    for n in (64, 200, 512, 520, 4096, len(raw) - 1):
        bad.write_bytes(raw[:n])
        with pytest.raises(ValueError, match="damaged file"):
            nm.load(bad)
    monkeypatch.undo()
    assert nm.load(path).equals(net)


def test_the_corruption_that_hangs_hdf5_is_refused_when_sealed(tmp_path, monkeypatch):
    """Bit 0 of byte 2057 of the version-1 fixture sits in an attribute header: flipped,
    the HDF5 library loops forever reading that unsealed file (measured: `nm.load` still
    running after 20 s; not run here). The same network saved now has the same HDF5 bytes
    after its 512-byte seal (but for the producer and checksum), and the same flip there
    is refused before h5py is called."""
    old = Path(__file__).parent / "data" / "net_v1_39121fa.h5"
    path = nm.save(nm.load(old), tmp_path / "sealed.h5")
    raw = bytearray(path.read_bytes())
    assert raw[512 + 2057] == old.read_bytes()[2057]
    raw[512 + 2057] ^= 1
    path.write_bytes(bytes(raw))
    monkeypatch.setattr(h5py, "File", lambda *a, **k: pytest.fail("h5py opened a damaged file"))
    with pytest.raises(ValueError, match="do not match the digest"):
        nm.load(path)


def test_an_edit_needs_a_new_seal_and_old_files_have_none(good_file, tmp_path):
    path, net = good_file
    edited = tmp_path / "edited.h5"
    edited.write_bytes(path.read_bytes())
    with h5py.File(edited, "r+") as f:             # a deliberate edit of the metadata
        f.attrs["meta"] = '{"note": "edited"}'
    with pytest.raises(ValueError, match="do not match the digest"):
        nm.load(edited)
    nm.fileio.seal(edited)
    back = nm.load(edited)
    assert back.equals(net) and back.meta == {"note": "edited"}
    old = tmp_path / "old.h5"                          # written before the seal existed
    old.write_bytes((Path(__file__).parent / "data" / "net_v1_39121fa.h5").read_bytes())
    assert old.read_bytes()[512:520] != SIGNATURE
    nm.load(old)
    with pytest.raises(ValueError, match="user block"):
        nm.fileio.seal(old)


def test_save_is_atomic(good_file, tmp_path, monkeypatch):
    """A failing write leaves the previous file intact and no temporary file behind."""
    path, net = good_file
    target = tmp_path / "net.h5"
    nm.save(net, target)
    before = target.read_bytes()
    import neuromorphic.fileio as fio

    def boom(_net):
        raise RuntimeError("disk full")

    monkeypatch.setattr(fio, "canonical_digest", boom)
    with pytest.raises(RuntimeError):
        nm.save(net, target)
    assert target.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["net.h5"]


def test_invalid_networks_cannot_be_built():
    net = random_network(0)
    layer = net.layers[0]
    from dataclasses import replace

    with pytest.raises(ValueError, match="layers/0/neuron/du"):
        nm.QuantizedNetwork((replace(layer, du=layer.du * 0 + 5000),), input_size=net.input_size)
    with pytest.raises(ValueError, match="num_message_bits"):
        nm.QuantizedNetwork(net.layers, input_size=net.input_size, input_levels=3)
    with pytest.raises(ValueError, match="shift_i"):
        nm.QuantizedNetwork((replace(layer, shift_i=-30),), input_size=net.input_size)
    assert canonical_digest(net) == canonical_digest(random_network(0))
