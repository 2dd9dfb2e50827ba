"""The neuro commands `plot` and `record` (moved from tests/neuro/test_neuro_plot.py)."""

from __future__ import annotations

import pytest

from astro_neuron.apps.cli import main
from astro_neuron.neuro import load_recording
from neuro_data import small_recording, tiny_memory_checkpoint


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A MemoryNet checkpoint (tiny task, 3 training steps), shared by the tests."""
    return tiny_memory_checkpoint(tmp_path_factory.mktemp("ckpt") / "memory_amsu.pt")


def test_cli_plot(tmp_path, capsys):
    run = small_recording().save(tmp_path / "run.npz")
    assert main(["plot", str(run), "--kinds", "raster,astro"]) == 0
    out_dir = tmp_path / "run_plots"
    assert sorted(p.name for p in out_dir.iterdir()) == ["astro_heatmap.png", "raster.png"]
    assert "wrote" in capsys.readouterr().out
    assert main(["plot", str(tmp_path / "none.npz")]) == 2
    assert "recording not found" in capsys.readouterr().err
    (tmp_path / "bad.npz").write_bytes(b"\x00" * 10)
    assert main(["plot", str(tmp_path / "bad.npz")]) == 2
    assert "not a .npz" in capsys.readouterr().err
    assert main(["plot", str(run), "--kinds", "raster,pie"]) == 2
    assert "unknown ['pie']" in capsys.readouterr().err


def test_cli_record(tmp_path, capsys, tiny_checkpoint):
    ckpt = tiny_checkpoint
    out = tmp_path / "trial.npz"
    assert main(["record", str(ckpt), "--out", str(out), "--label", "1", "--plot"]) == 0
    rec = load_recording(out)
    assert rec.info["label"] == 1
    assert (tmp_path / "trial_plots" / "raster.png").exists()
    assert main(["record", str(tmp_path / "no.pt"), "--out", str(out)]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["record", str(ckpt), "--out", str(tmp_path / "x.png")]) == 2
