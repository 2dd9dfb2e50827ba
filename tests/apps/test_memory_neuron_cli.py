"""``astro-neuron memory-neuron`` (docs/memory.md): bad arguments end as one ``error:``
line with status 2 before anything trains; a tiny run writes its table, JSON and plot,
chooses a learning rate on the validation batch, and an interrupted run resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from astro_neuron.apps.cli import main
from astro_neuron.apps.tasks.neuron_memory import run_neuron_memory

TINY = ["--models", "lif", "--delays", "5", "--seeds", "0", "--steps", "2", "--n-eval", "8",
        "--batch-size", "2", "--neurons", "8", "--no-progress"]


@pytest.mark.parametrize("argv, message", [
    (["--delays", "x"], "expected an integer, got 'x'"),
    (["--delays", "-1"], "--delays must be an integer in [0, 100000]"),
    (["--seeds", "0", "-3"], "--seeds must be an integer in [0, "),
    (["--lrs", "0"], "--lrs must be a finite number in (0, 10]"),
    (["--lrs", "nan"], "--lrs must be a finite number"),
    (["--steps", "0"], "--steps must be an integer in [1, "),
    (["--items", "0"], "--items must be an integer in [1, 8]"),
    (["--p-distract", "1.5"], "--p-distract must be a finite number in [0, 1]"),
    (["--jobs", "0"], "--jobs must be an integer in [1, 64]"),
    (["--neurons", "6"], "--neurons must be a multiple of 4, got 6"),
    (["--models", "amsu,gru"], "--models: unknown ['gru']"),
    (["--models", ","], "--models: unknown"),
])
def test_bad_arguments(argv, message, capsys, tmp_path):
    assert main(["memory-neuron", "--quick", "--out", str(tmp_path / "o"), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not (tmp_path / "o" / "results.json").exists()


def test_out_is_a_file(tmp_path, capsys):
    f = tmp_path / "f"
    f.write_text("x")
    assert main(["memory-neuron", *TINY, "--out", str(f)]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err


def test_library_errors(tmp_path):
    with pytest.raises(ValueError, match="models must be some of"):
        run_neuron_memory(models=["gru"], out_dir=tmp_path)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        run_neuron_memory(models=["lif"], steps=0, out_dir=tmp_path)
    with pytest.raises(ValueError, match="give at least one learning rate"):
        run_neuron_memory(models=["lif"], lrs=[], out_dir=tmp_path)


def test_tiny_run_sweeps_writes_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["memory-neuron", *TINY, "--lrs", "1e-3", "1e-2", "--seeds", "0", "1",
            "--out", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    res = json.loads((out / "results.json").read_text())
    assert set(res["lr_sweep"]) == {"lif/0.001", "lif/0.01"}
    assert res["lr"]["lif"] in (1e-3, 1e-2)
    assert set(res["cells"]) == {"lif/5/0", "lif/5/1"}
    assert res["cells"]["lif/5/0"]["from_sweep"] is True    # the chosen sweep run is the cell
    assert 0 <= res["table"]["lif/5"]["mean"] <= 1 and res["table"]["lif/5"]["n_seeds"] == 2
    assert "LIF" in text and "chance 25%" in text
    assert (out / "neuron_memory.png").stat().st_size > 10_000
    # a rerun with the same settings trains nothing new
    assert main(argv) == 0
    assert "resuming" in capsys.readouterr().out
    assert json.loads((out / "results.json").read_text())["cells"] == res["cells"]


@pytest.mark.slow          # starting a worker process imports torch again (10-40 s on 2 cores)
def test_worker_processes(tmp_path):
    res = run_neuron_memory(models=["lif", "alif"], delays=[3], seeds=[0], steps=1,
                            batch_size=2, n_eval=4, n_neurons=8, jobs=2, out_dir=tmp_path,
                            progress=False)
    assert set(res["cells"]) == {"lif/3/0", "alif/3/0"}
    assert Path(tmp_path / "neuron_memory.png").exists()
