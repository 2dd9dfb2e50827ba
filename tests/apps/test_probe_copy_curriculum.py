"""scripts/probe_copy_curriculum.py: the miss breakdown docs/memory.md quotes, and the
two-stage run (seconds, tiny settings)."""

import json

import pytest
import torch
from script_modules import load_script


@pytest.fixture(scope="module")
def probe():
    return load_script("probe_copy_curriculum")


def test_misses_counts_places_data_tokens_and_neighbours(probe):
    want = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    pred = torch.tensor([[1, 3, 3, 9],      # place 2 names place 3 (a neighbour); 4 not data
                         [5, 6, 5, 8]])     # place 3 names place 1 (two places away)
    r = probe._misses(pred, want)
    assert r["accuracy"] == pytest.approx(5 / 8)
    assert r["by_place"] == [1.0, 0.5, 0.5, 0.5]
    assert r["misses_naming_a_data_token"] == pytest.approx(2 / 3, abs=1e-4)
    assert r["miss_offset"] == {"1": 1, "2": 1}


def test_misses_takes_the_nearest_place_of_a_repeated_symbol(probe):
    want = torch.tensor([[4, 1, 2, 4]])
    r = probe._misses(torch.tensor([[4, 4, 2, 4]]), want)   # place 2 names 4: places 1 and 4
    assert r["miss_offset"] == {"1": 1}


def test_two_stages_resume_from_the_first_stage_weights(probe, tmp_path):
    args = ["--seq-len", "64", "--first-length", "32", "--tokens", "8", "--examples", "32",
            "--first-examples", "32", "--n-eval", "8", "--d-model", "16",
            "--first-weights", str(tmp_path / "first.safetensors"),
            "--save", str(tmp_path / "final.safetensors")]
    a = probe.main([*args, "--out", str(tmp_path / "a")])
    b = probe.main([*args, "--out", str(tmp_path / "b")])       # reads the first stage back
    assert (tmp_path / "first.safetensors").exists() and (tmp_path / "final.safetensors").exists()
    assert b["first_stage"]["accuracy"] == a["first_stage"]["accuracy"]
    assert b["accuracy"] == a["accuracy"] and b["final_loss"] == a["final_loss"]
    saved = json.loads((tmp_path / "a" / "curriculum_s0.json").read_text())
    assert saved["breakdown"]["seq_len"] == 64 and len(saved["breakdown"]["by_place"]) == 8
    assert set(saved["breakdown"]["middle_by_gap"]) <= {"1-1", "2-3", "4-7", "8-15", "16-31",
                                                         "32-63"}
    res = probe.main(["--seq-len", "64", "--first-length", "32", "--tokens", "8", "--n-eval", "8",
                      "--d-model", "16", "--analyse", str(tmp_path / "final.safetensors")])
    assert [x["seq_len"] for x in res["breakdown"]] == [32, 64]


def test_first_length_must_be_shorter(probe):
    with pytest.raises(SystemExit):
        probe.main(["--seq-len", "64", "--first-length", "64"])


def test_a_model_given_as_options_is_trained_with_them(probe, tmp_path):
    r = probe.main(["--seq-len", "64", "--first-length", "32", "--tokens", "8",
                    "--examples", "16", "--first-examples", "16", "--n-eval", "8",
                    "--d-model", "16", "--out", str(tmp_path),
                    "--model", 'clocked={"clock": "activity", "rotary_fraction": 1.0, '
                               '"sensing": "relu-key", "neuron_path": false}'])
    assert r["model"] == "clocked after T32"
    assert r["overrides"]["clock"] == "activity" and r["overrides"]["sensing"] == "relu-key"
    assert r["overrides"]["neuron_path"] is False


@pytest.mark.parametrize("model", ["no such model", 'bad={"clock": "sometimes"}', "bad=[1]"])
def test_an_unknown_model_or_option_is_refused_before_training(probe, tmp_path, model):
    with pytest.raises(SystemExit):
        probe.main(["--seq-len", "64", "--first-length", "32", "--out", str(tmp_path),
                    "--model", model])


def test_weights_without_the_neuron_path_start_the_full_model_where_they_were(probe,
                                                                                tmp_path):
    """--first-weights of the model without its neuron path load into the model with it:
    the neuron path's rows and bias at 0, the other rows where they were, so the logits
    are the loaded model's exactly; weights of another model are refused by name."""
    from safetensors.torch import save_file

    from astro_neuron.lm.config import AMSNetConfig
    from astro_neuron.lm.model import build_model

    ov = {"clock": "activity", "rotary_fraction": 1.0, "sensing": "relu-key"}
    cfg = dict(vocab_size=256, block_size=64, n_layer=2, n_head=2, d_model=16, **ov)
    torch.manual_seed(0)
    alone = build_model(AMSNetConfig(neuron_path=False, **cfg))
    path = tmp_path / "alone.safetensors"
    save_file({k: v.contiguous() for k, v in alone.state_dict().items()}, str(path))
    full = build_model(AMSNetConfig(**cfg))
    probe.load_weights(full, path)
    amsu = full.blocks[0].amsu
    n = dict(amsu.spec.parts)["I"]
    assert amsu.spec.parts[0][0] == "I"
    assert not amsu.weight[:n].any() and not amsu.bias.any()
    torch.testing.assert_close(amsu.weight[n:], alone.blocks[0].amsu.weight, rtol=0, atol=0)
    x = torch.randint(0, 256, (2, 40))
    alone.eval(), full.eval()
    with torch.no_grad():
        torch.testing.assert_close(full(x)[0], alone(x)[0], rtol=0, atol=0)
    other = build_model(AMSNetConfig(**{**cfg, "d_model": 32}))
    with pytest.raises(SystemExit, match="not weights of this model"):
        probe.load_weights(other, path)
