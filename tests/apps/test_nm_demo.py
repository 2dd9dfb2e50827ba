"""The demo stage with tiny settings: quantize, save, Lava, bit-exact, accuracies."""

from __future__ import annotations

import pytest

from astro_neuron.apps.demo.lava import demo_stage

pytestmark = pytest.mark.timeout(240)


def test_demo_stage_quick(trained_memory_net, tmp_path, capsys):
    _, ckpt = trained_memory_net
    s = demo_stage(tmp_path, ckpt, quick=True, progress=False)
    text = capsys.readouterr().out
    assert s["bit_exact"] is True
    assert "Lava fixed_pt vs reference: identical" in text
    assert (tmp_path / "memory_amsu_int.h5").is_file()
    for k in ("accuracy_float", "accuracy_ptq", "accuracy_qat"):
        assert 0.0 <= s[k] <= 1.0
    assert s["accuracy_float"] > 0.5               # the fixture network learned the task
    assert abs(s["accuracy_ptq"] - s["accuracy_float"]) <= 0.1
