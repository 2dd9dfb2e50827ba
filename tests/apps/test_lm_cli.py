"""The ``lm`` commands of ``astro-neuron``, run in-process with tiny settings."""

from __future__ import annotations

import json

import pytest

from astro_neuron.apps.cli import main

TINY = ["model.d_model=16", "model.n_head=2", "model.n_layer=1", "model.block_size=16",
        "model.ffn_mult=2", "train.batch_size=4", "train.max_steps=6", "train.warmup_steps=2",
        "train.eval_interval=6", "train.eval_tokens=64", "train.ckpt_interval=6"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("train")
    assert main(["train", "--config", "tiny", "--out", str(out), "--device", "cpu",
                 "--no-progress", *TINY]) == 0
    return out / "ckpt.safetensors"


def test_train_eval_generate(ckpt, capsys):
    assert ckpt.is_file()
    assert main(["eval", str(ckpt), "--tokens", "256"]) == 0
    out = capsys.readouterr().out
    assert "stdlib val:" in out and "bits per byte" in out
    assert main(["generate", str(ckpt), "--prompt", "import ", "--max-new-tokens", "20",
                 "--num-samples", "2", "--top-k", "5"]) == 0
    out = capsys.readouterr().out
    assert out.count("--- sample") == 2 and out.count("import ") >= 2


def test_train_resume_continues(ckpt, capsys):
    out = ckpt.parent
    assert main(["train", "--config", "tiny", "--out", str(out), "--device", "cpu",
                 "--no-progress", "--resume", *TINY[:-4], "train.max_steps=8",
                 *TINY[-3:]]) == 0
    assert "resuming" not in capsys.readouterr().out          # --no-progress is quiet
    assert json.loads((out / "metrics.json").read_text())["steps"] == 8


@pytest.mark.parametrize("argv, match", [
    (["train", "model.d_model"], "table.key=value"),
    (["train", "--config", "nope"], "no built-in config"),
    (["eval", "missing.pt"], "checkpoint not found"),
    (["generate", "missing.pt"], "checkpoint not found"),
    (["train", "train.device='cuda:0'", "train.max_steps=1"], None),
    (["memory-tasks", "--lengths", "8", "--quick"], "too short"),
    (["bench", "generate", "--contexts", "0"], "positive"),
])
def test_user_errors_print_one_line(argv, match, capsys):
    import torch

    if match is None:                       # --device cuda without a GPU
        if torch.cuda.is_available():
            pytest.skip("a GPU is present: cuda is not an error here")
        match = "no CUDA GPU"
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and match in err and "Traceback" not in err


def test_compare_two_variants(tmp_path, capsys):
    assert main(["compare", "--out", str(tmp_path), "--no-progress",
                 "--variants", "AM-SNet,Transformer", *TINY]) == 0
    out = capsys.readouterr().out
    assert "budget: 384 training tokens" in out and "Transformer" in out
    res = json.loads((tmp_path / "compare.json").read_text())["results"]
    assert [r["name"] for r in res] == ["AM-SNet", "Transformer"]
    assert all(r["tokens"] == 384 and r["val_bpb"] > 0 for r in res)
    assert (tmp_path / "loss_curves.png").stat().st_size > 1000
    # a second call reuses finished variants
    assert main(["compare", "--out", str(tmp_path), "--no-progress",
                 "--variants", "AM-SNet", *TINY]) == 0
    assert "already trained" in capsys.readouterr().out
    assert main(["compare", "--out", str(tmp_path), "--variants", "GPT-5", *TINY]) == 2


def test_compare_transformer_is_the_twin_of_the_amsnet_config(tmp_path):
    """The Transformer variant of an AM-SNet with memory options keeps the shape and
    drops the options it cannot use (they would be an error in its config); the other
    variants keep them."""
    from astro_neuron.apps.compare import VARIANTS, _variant_run
    from astro_neuron.lm.train import RunConfig

    base = RunConfig.from_dict({"model": {"d_model": 32, "n_head": 2, "conv_size": 4,
                                          "sensing": "relu", "tau_astro": [256, 4096]}})
    tf = _variant_run(base, VARIANTS["Transformer"], tmp_path).model
    off = _variant_run(base, VARIANTS["astrocyte off"], tmp_path).model
    assert (tf.arch, tf.d_model, tf.n_head, tf.conv_size, tf.sensing) == (
        "transformer", 32, 2, 1, "identity")
    assert (off.astrocyte, off.conv_size, off.sensing, off.tau_astro) == (
        False, 4, "relu", (256.0, 4096.0))


def test_bench_generate_compile_columns(capsys, monkeypatch):
    """The --compile plumbing (columns, targets); torch.compile itself is tested in
    test_lm_decode.py, so here the "compiled" step is the eager one (no compile time)."""
    from astro_neuron.lm.base import LanguageModel

    monkeypatch.setattr(LanguageModel, "compiled", lambda self, fn: fn)
    assert main(["bench", "generate", "--contexts", "16", "--d-model", "16", "--n-layer",
                 "1", "--n-head", "2", "--tokens", "4", "--repeats", "1", "--no-rss",
                 "--compile"]) == 0
    out = capsys.readouterr().out
    assert "compile + warm-up AM-SNet" in out and "AM comp ms" in out
    assert "compiled: AM-SNet" in out and "2x faster at 2048: not measured" in out


def test_bench_generate_and_train(capsys):
    assert main(["bench", "generate", "--contexts", "64", "--d-model", "16", "--n-layer",
                 "1", "--n-head", "2", "--tokens", "4", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "speed-up" in out and "TF peak MiB" in out and out.count("context 64") == 1
    assert main(["bench", "generate", "--contexts", "16,32", "--d-model", "16", "--n-layer",
                 "1", "--n-head", "2", "--tokens", "4", "--repeats", "1", "--no-rss"]) == 0
    out = capsys.readouterr().out
    assert "context 32" in out and "peak" not in out
    assert main(["bench", "train", "--forms", "--d-models", "16", "--n-layer", "1",
                 "--lengths", "32", "--tokens", "64", "--threads", "1", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "chunked (parallel, training)" in out and "step loop (reference)" in out
    assert main(["bench", "train", "--d-models", "16", "--n-layer", "1", "--lengths", "32",
                 "--tokens", "64", "--threads", "1", "--repeats", "1", "--peak-n", "128"]) == 0
    out = capsys.readouterr().out
    assert "matmul peak" in out and "AM/TF" in out and "TF MFU" in out
    assert "threads 1, d 16, T 32: AM/TF" in out          # the target line of the point


def test_memory_tasks_quick(tmp_path, capsys):
    assert main(["memory-tasks", "--quick", "--lengths", "64", "--sizes", "4", "--lrs",
                 "1e-3,1e-2", "--seeds", "2", "--out", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "mqar, random noise, 4 pairs: accuracy by length" in out
    res = json.loads((tmp_path / "memory_mqar.json").read_text())
    # the default models, 2 rates with seed 0 and 1 more seed at the best rate each
    assert len(res["runs"]) == 3 * 4 and all(0 <= r["accuracy"] <= 1 for r in res["runs"])
    assert {s["model"] for s in res["summary"]} == {"AM-SNet", "AM-SNet memory",
                                                    "astrocyte off", "Transformer"}
    assert (tmp_path / "memory_mqar.png").is_file()
