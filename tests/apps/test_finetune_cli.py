"""``astro-neuron finetune``, ``chat`` (piped stdin, in a real process) and
``finetune-compare --quick``."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from astro_neuron.apps.cli import main
from astro_neuron.lm import AMSNetConfig, build_model
from astro_neuron.lm.chat import save_jsonl
from astro_neuron.lm.train import save_lm_checkpoint

ROOT = Path(__file__).resolve().parents[2]
CONVS = [[{"role": "user", "content": f"What does `m.f{i}` do?"},
          {"role": "assistant", "content": f"Return item {i}."}] for i in range(12)]


@pytest.fixture
def files(tmp_path):
    torch.manual_seed(0)
    m = build_model(AMSNetConfig(d_model=32, n_head=2, n_layer=1, block_size=64))
    base = save_lm_checkpoint(tmp_path / "base.safetensors", m)
    data = save_jsonl(CONVS[:8], tmp_path / "train.jsonl")
    held = save_jsonl(CONVS[8:], tmp_path / "held.jsonl")
    return base, data, held


def test_finetune_then_chat_from_piped_stdin(files, tmp_path, capsys):
    base, data, held = files
    out = tmp_path / "ft"
    assert main(["finetune", "--base", str(base), "--data", str(data), "--heldout", str(held),
                 "--out", str(out), "--steps", "4", "--batch-size", "2", "--rank", "2",
                 "--no-progress", "--merged"]) == 0
    text = capsys.readouterr().out
    assert "held-out assistant loss" in text and "adapter" in text
    assert (out / "adapter.safetensors").is_file() and (out / "merged.safetensors").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 4 and len(metrics["evals"]) == 1
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "astro_neuron", "chat", str(base), "--adapter",
                        str(out), "--max-new-tokens", "5"],
                       input="hello\n\nwhat now?\n", capture_output=True, text=True, env=env,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    users = [ln for ln in lines if ln.startswith("User: ")]
    answers = [ln for ln in lines if ln.startswith("Assistant: ")]
    assert users == ["User: hello", "User: what now?"] and len(answers) == 2


@pytest.mark.parametrize("argv, msg", [
    (["--data", "DATA_BAD"], "line 1: not valid JSON"),
    (["--data", "missing.jsonl"], "not found"),
    (["--rank", "0"], "--rank must be"),
    (["--steps", "0"], "--steps must be"),
])
def test_finetune_errors(files, tmp_path, capsys, argv, msg):
    base, data, held = files
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{oops\n")
    argv = [str(bad) if a == "DATA_BAD" else str(tmp_path / a) if a.endswith(".jsonl") else a
            for a in argv]
    rc = main(["finetune", "--base", str(base), "--out", str(tmp_path / "o"), "--heldout", "",
               "--no-progress", *argv])
    assert rc == 2
    assert msg in capsys.readouterr().err


def test_chat_refuses_an_adapter_of_another_base(files, tmp_path, capsys):
    base, data, _ = files
    assert main(["finetune", "--base", str(base), "--data", str(data), "--heldout", "",
                 "--out", str(tmp_path / "ft"), "--steps", "1", "--no-progress"]) == 0
    torch.manual_seed(1)
    other = save_lm_checkpoint(tmp_path / "other.safetensors",
                               build_model(AMSNetConfig(d_model=32, n_head=2, n_layer=1)))
    assert main(["chat", str(other), "--adapter", str(tmp_path / "ft")]) == 2
    assert "other base weights" in capsys.readouterr().err


def test_finetune_compare_quick(tmp_path, capsys, monkeypatch):
    import astro_neuron.apps.finetune_compare as fc
    from astro_neuron.lm.data import Corpus
    # small stand-ins for the built-in corpus and questions (reading and parsing the
    # standard library takes ~10 s; the demo test covers the real ones)
    text = torch.randint(32, 127, (4000,), generator=torch.Generator().manual_seed(0))
    corpus = Corpus("stdlib", text.to(torch.uint8), text[:600].to(torch.uint8),
                    text[:600].to(torch.uint8))
    monkeypatch.setattr(fc, "stdlib_corpus", lambda: corpus)
    monkeypatch.setattr(fc, "builtin_dialogues",
                        lambda split: CONVS[:8] if split == "train" else CONVS[8:])
    assert main(["finetune-compare", "--quick", "--base-steps", "2", "--steps", "2",
                 "--answers", "1", "--out", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "AM-SNet" in out and "Transformer" in out and "held-out before" in out
