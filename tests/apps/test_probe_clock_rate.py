"""scripts/probe_clock_rate.py: the activity steps docs/memory.md quotes, measured on a
clock whose activity is known, and the train-on-at-another-rate run (tiny settings)."""

import json
import math

import pytest
import torch
from safetensors.torch import save_file
from script_modules import load_script


@pytest.fixture(scope="module")
def probe():
    return load_script("probe_clock_rate")


def test_a_constant_activity_is_measured_at_every_kind_of_token(probe):
    """E rows at 0 and b_E = softplus^-1(0.25): every token advances the phase by 0.25,
    so data, noise and markers read 0.25, and the phase between writing the i-th data
    token and reading it is 0.25 times the steps between them (which vary)."""
    model = probe.build(1.0, 16, 0, block_size=64)
    for blk in model.blocks:
        with torch.no_grad():
            blk.amsu.weight[-2:].zero_()                       # the E rows (2 astrocytes)
            blk.amsu.clock_bias.fill_(math.log(math.expm1(0.25)))
    res = probe.activity_steps(model, 64, 20, 0)
    assert len(res) == 4
    for r in res:
        assert r["data"] == r["noise"] == r["marker"] == pytest.approx(0.25, abs=1e-4)
        assert 0.25 * 16 <= r["read_lag_mean"] <= 0.25 * 63 and r["read_lag_sd"] > 0


def test_weights_train_on_at_another_rate_and_are_measured(probe, tmp_path):
    w = tmp_path / "w.safetensors"
    save_file(probe.build(1.0, 16, 0).state_dict(), str(w))
    out = tmp_path / "rate2.safetensors"
    r = probe.main(["--weights", str(w), "--rate", "2", "--seq-len", "64", "--examples", "32",
                    "--d-model", "16", "--n-eval", "8", "--save", str(out)])
    assert r["rate"] == 2.0 and set(r["before"]) == set(r["after"]) == {"256", "1024"}
    assert math.isfinite(r["final_loss"]) and out.exists()
    s = probe.main(["--steps", str(out), "--seq-len", "64", "--d-model", "16", "--n-eval", "4"])
    assert [a["layer"] for a in s["astrocytes"]] == [0, 0, 1, 1]


def test_from_the_start_it_is_the_curriculum_first_stage(probe, tmp_path):
    """Without --weights the model trains from the start exactly as the first stage of
    scripts/probe_copy_curriculum.py (same model, data, schedule): the same final loss."""
    cur = load_script("probe_copy_curriculum")
    opts = json.dumps(probe.MODEL)
    c = cur.main(["--seq-len", "64", "--first-length", "52", "--tokens", "16",
                  "--examples", "16", "--first-examples", "48", "--n-eval", "8",
                  "--d-model", "16", "--out", str(tmp_path), "--model", f"m={opts}"])
    r = probe.main(["--rate", "1", "--seq-len", "52", "--examples", "48", "--d-model", "16",
                    "--n-eval", "8"])
    assert r["weights"] is None and r["lr"] == 1e-3
    assert r["final_loss"] == c["first_stage"]["final_loss"]


def test_steps_and_weights_are_not_both_given(probe):
    with pytest.raises(SystemExit):
        probe.main(["--steps", "a", "--weights", "b"])
    with pytest.raises(SystemExit):                 # --places only where nothing trains
        probe.main(["--places", "--examples", "32"])


def test_the_clock_options_train_score_at_any_length_and_graft_the_neuron_path(probe, tmp_path):
    """--decay-clock, --clock-threshold and --tau-astro reach the model; --examples 0
    scores only, at --lengths; --neuron-path loads weights without it (its rows at 0:
    the same accuracy before any training)."""
    out = tmp_path / "a.safetensors"
    new = ["--decay-clock", "activity", "--clock-threshold", "0.01"]
    r = probe.main(["--rate", "1", *new, "--tau-astro", "0.5", "50", "--seq-len", "64",
                    "--examples", "32", "--d-model", "16", "--n-eval", "8", "--save", str(out)])
    assert r["decay_clock"] == "activity" and r["clock_threshold"] == 0.01
    assert r["tau_astro"] == (0.5, 50.0) and math.isfinite(r["final_loss"])
    alone = probe.main(["--weights", str(out), *new, "--rate", "1", "--examples", "0",
                        "--d-model", "16", "--n-eval", "8", "--lengths", "64", "2048"])
    assert set(alone["before"]) == {"64", "2048"} and "after" not in alone
    placed = probe.main(["--weights", str(out), *new, "--rate", "1", "--examples", "0",
                         "--d-model", "16", "--n-eval", "8", "--lengths", "64", "--places"])
    assert len(placed["places"]["64"]["by_place"]) == 16
    full = probe.main(["--weights", str(out), *new, "--rate", "1", "--examples", "0",
                       "--d-model", "16", "--n-eval", "8", "--lengths", "64", "2048",
                       "--neuron-path"])
    assert full["neuron_path"] is True and full["before"] == alone["before"]
    steps = probe.main(["--steps", str(out), *new, "--seq-len", "64", "--d-model", "16",
                        "--n-eval", "4"])
    assert all(a["noise"] >= 0 for a in steps["astrocytes"])
