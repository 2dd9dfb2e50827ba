"""The command line: quantize, export, simulate --compare, bench simulate, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

import neuromorphic as nm
from astro_neuron.apps.cli import main

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def quantized(trained_memory_net, tmp_path_factory):
    _, ckpt = trained_memory_net
    out = tmp_path_factory.mktemp("cli") / "net.h5"
    assert main(["quantize", str(ckpt), "--out", str(out), "--calib-samples", "8",
                 "--eval-samples", "32", "--no-progress"]) == 0
    return ckpt, out


def test_quantize_prints_accuracy_and_writes(quantized, capsys):
    _, out = quantized
    assert out.is_file()
    ckpt, _ = quantized
    rc = main(["quantize", str(ckpt), "--out", str(out.with_name("qat.h5")), "--qat-steps", "2",
               "--calib-samples", "8", "--eval-samples", "16", "--no-progress"])
    text = capsys.readouterr().out
    assert rc == 0 and "integer QAT (2 steps)" in text and "accuracy" in text


def test_simulate_compare_all_backends(quantized, capsys, tmp_path):
    _, net = quantized
    rc = main(["simulate", str(net), "--backend", "reference", "--compare", "--samples", "1",
               "--save", str(tmp_path / "run.npz")])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "lava vs reference: identical" in text and "torch vs reference: identical" in text
    assert "backends agree bit for bit" in text
    data = np.load(tmp_path / "run.npz")
    assert data["spikes_0"].shape == (121, 1, 64) and "H_0" in data


def test_simulate_npy_input_and_export_json(quantized, capsys, tmp_path):
    _, net = quantized
    x = (np.random.default_rng(0).random((30, 2, 40)) < 0.2).astype(np.int64)
    np.save(tmp_path / "x.npy", x)
    assert main(["simulate", str(net), "--backend", "torch", "--input", str(tmp_path / "x.npy"),
                 "--no-states"]) == 0
    assert main(["export", str(net), "--to", "json", "--out", str(tmp_path / "n.json")]) == 0
    doc = json.loads((tmp_path / "n.json").read_text())
    assert doc["layers"][0]["type"] == "amsu" and len(doc["layers"][0]["vth"]) == 64
    # the network's own file version (1: no delay line, no relu), not the newest one
    assert doc["format_version"] == 1 < nm.FORMAT_VERSION


def test_export_nir_fails_clearly_for_the_amsu(quantized, capsys, tmp_path):
    ckpt, _ = quantized
    rc = main(["export", str(ckpt), "--to", "nir", "--out", str(tmp_path / "x.nir")])
    err = capsys.readouterr().err
    assert rc == 2 and "error:" in err and "astrocyte cannot be expressed in NIR" in err


@pytest.mark.parametrize("argv,match", [
    (["simulate", "missing.h5"], "not found"),
    (["quantize", "missing.pt"], "not found"),
    (["simulate", "{net}", "--input", "{bad}"], "not a readable .npy"),
    (["simulate", "{net}", "--input", "{wide}"], "channels"),
    (["quantize", "{net}"], "an HDF5 file (an integer network .h5?), not a safetensors"),
])
def test_user_errors_are_one_line(quantized, capsys, tmp_path, argv, match):
    _, net = quantized
    (tmp_path / "bad.npy").write_text("no")
    np.save(tmp_path / "wide.npy", np.zeros((5, 3), np.int64))
    argv = [a.format(net=net, bad=tmp_path / "bad.npy", wide=tmp_path / "wide.npy")
            for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and match in err and "Traceback" not in err


def test_bench_simulate_quick(capsys):
    assert main(["bench", "simulate", "--quick"]) == 0
    text = capsys.readouterr().out
    assert "Lava fixed_pt" in text and "NO" not in text.split("bit-exact", 1)[1]
