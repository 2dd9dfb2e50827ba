"""``astro-neuron demo --quick``: every stage runs end to end into one folder."""

from __future__ import annotations

import json

import pytest

from astro_neuron.apps.cli import main


def test_demo_quick_all_stages(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--no-progress", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["stages"]) == {"memory", "lava", "lm", "zeroshot", "finetune", "plots"}
    assert summary["stages"]["lava"]["bit_exact"] is True
    for name in ("memory_amsu.safetensors", "memory_raster.png", "memory_amsu_int.h5", "lm_amsnet.safetensors",
                 "memory_run_raster.png", "lm_token_raster.png"):
        assert (out / name).stat().st_size > 0, name
    printed = capsys.readouterr().out
    assert "summary" in printed and "bit for bit: yes" in printed


def test_demo_stage_order_and_names_are_checked(tmp_path, capsys):
    assert main(["demo", "--quick", "--stages", "memory,bogus", "--out", str(tmp_path)]) == 2
    assert "unknown demo stage" in capsys.readouterr().err
    # a later stage alone needs the memory stage's checkpoint: a clear error, not a traceback
    assert main(["demo", "--quick", "--stages", "lava", "--out", str(tmp_path / "x")]) == 2
    assert "needs" in capsys.readouterr().err


@pytest.mark.parametrize("threads", ["0", "-1"])
def test_demo_threads_must_be_positive(tmp_path, threads, capsys):
    assert main(["demo", "--quick", "--threads", threads, "--out", str(tmp_path)]) == 2
    assert "threads" in capsys.readouterr().err
