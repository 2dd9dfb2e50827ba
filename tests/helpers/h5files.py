"""Shared checks of the integer network's HDF5 files (tests/neuromorphic)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
from hypothesis import strategies as st

import neuromorphic as nm


def file_layout(path) -> list:
    """Every group, dataset (dtype, shape, bytes) and attribute of a file, in order, the
    producer string aside: two files with the same layout hold the same bytes."""
    out = []
    with h5py.File(path) as f:
        for k in f.attrs:
            out.append(("/", k, "" if k == "producer" else repr(f.attrs[k])))

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out.append((name, str(obj.dtype), obj.shape, obj[()].tobytes()))
            else:
                out.append((name, "group"))
            for k in obj.attrs:
                out.append((name, k, repr(obj.attrs[k])))
        f.visititems(visit)
    return out


def edited_copy(src, dst, edit) -> Path:
    """Copy ``src`` to ``dst``, apply ``edit(h5py.File)`` to the copy and seal it again
    (when it has a seal): a deliberate edit, so that what :func:`neuromorphic.load`
    says about the edited field is what is tested, not the seal."""
    dst = Path(dst)
    raw = Path(src).read_bytes()
    dst.write_bytes(raw)
    sealed = raw.startswith(b"astro-neuron")
    with h5py.File(dst, "r+") as f:
        edit(f)
    if sealed:
        nm.fileio.seal(dst)
    return dst


def corrupt(raw: bytearray, data, zero_runs: bool = False) -> bytearray:
    """A hypothesis-drawn damage of a file's bytes: a truncation, 1-8 flipped bits or
    (``zero_runs``) a run of up to 64 zero bytes."""
    kinds = ["truncate", "flip"] + (["zero_run"] if zero_runs else [])
    how = data.draw(st.sampled_from(kinds))
    if how == "truncate":
        return raw[:data.draw(st.integers(0, len(raw) - 1))]
    if how == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            i = data.draw(st.integers(0, len(raw) - 1))
            raw[i] ^= 1 << data.draw(st.integers(0, 7))
        return raw
    i = data.draw(st.integers(0, len(raw) - 1))
    n = data.draw(st.integers(1, 64))
    raw[i:i + n] = bytes(len(raw[i:i + n]))
    return raw


def assert_loads_same_or_refuses(raw: bytes, bad: Path, net) -> None:
    """Write ``raw`` to ``bad``: loading it gives back ``net`` or a ValueError naming the
    file, never another exception and never a different network."""
    bad.write_bytes(bytes(raw))
    try:
        back = nm.load(bad)
    except ValueError as exc:
        assert str(bad) in str(exc)
        return
    assert back.equals(net), "a corrupted file loaded as a different network"


def assert_same_run(net, run) -> None:
    """``net`` run on ``run["x"]`` in every engine but Lava gives the spikes and states
    saved in ``run`` (an ``.npz`` of ``spikes{i}`` and ``{state}{i}`` per layer)."""
    for backend in ("reference", "step", "numpy", "torch"):
        out = nm.simulate(net, run["x"], backend=backend)
        for i, layer in enumerate(net.layers):
            np.testing.assert_array_equal(out.spikes[i], run[f"spikes{i}"], err_msg=backend)
            for k in layer.state_names:
                np.testing.assert_array_equal(out.states[i][k], run[f"{k}{i}"],
                                              err_msg=f"{backend} {i} {k}")
