"""The language-model demo stage with tiny settings (moved from
tests/lm/test_lm_tasks_demo.py)."""

from __future__ import annotations


def test_demo_stage_quick(tmp_path):
    from astro_neuron.apps.demo.lm import demo_stage
    from astro_neuron.lm.train import load_model

    s = demo_stage(tmp_path, quick=True, progress=False)
    assert s["val_bpb"] > 0 and s["sample"].startswith("def ")
    assert len(s["firing_rate"]) == 1 and 0 <= s["firing_rate"][0] <= 1
    model, ck = load_model(s["checkpoint"])
    assert model.config.arch == "amsnet" and ck["step"] == 6
