"""``astro-neuron zeroshot``: built-in and user files in the PIQA/SciQ formats, on an
AM-SNet checkpoint, offline; clear errors."""

from __future__ import annotations

import json

import torch

from astro_neuron.apps.cli import main
from astro_neuron.lm import AMSNetConfig, build_model
from astro_neuron.lm.harness import TASK_DIR
from astro_neuron.lm.train import save_lm_checkpoint


def test_zeroshot_command_scores_builtin_and_user_files(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    torch.manual_seed(0)
    model = build_model(AMSNetConfig(n_layer=1, d_model=32, n_head=2, block_size=32))
    ckpt = save_lm_checkpoint(tmp_path / "m.safetensors", model)
    mine = tmp_path / "my_sciq.jsonl"
    mine.write_text("\n".join((TASK_DIR / "stdlib_sciq.jsonl").read_text().splitlines()[:3]))
    out = tmp_path / "res.json"
    assert main(["zeroshot", str(ckpt), "--tasks", "stdlib_piqa", "--sciq", str(mine),
                 "--limit", "3", "--no-progress", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "stdlib_piqa" in printed and "my_sciq" in printed and "chance" in printed
    rows = {r["task"]: r for r in json.loads(out.read_text())["tasks"]}
    assert rows["stdlib_piqa"]["docs"] == 3 and rows["stdlib_piqa"]["chance"] == 0.5
    (sciq,) = [r for name, r in rows.items() if "my_sciq" in name]
    assert sciq["docs"] == 3 and sciq["chance"] == 0.25
    assert all(0 <= r["acc"] <= 1 for r in rows.values())


def test_zeroshot_errors_are_one_line(tmp_path, capsys):
    torch.manual_seed(0)
    ckpt = save_lm_checkpoint(tmp_path / "m.safetensors",
                              build_model(AMSNetConfig(n_layer=1, d_model=32, n_head=2)))
    assert main(["zeroshot", str(ckpt), "--tasks", "hellaswag"]) == 2
    assert "unknown built-in task" in capsys.readouterr().err
    assert main(["zeroshot", str(ckpt), "--tasks", ""]) == 2
    assert "no task" in capsys.readouterr().err
    assert main(["zeroshot", str(ckpt), "--piqa", str(tmp_path / "none.jsonl")]) == 2
    assert "not found" in capsys.readouterr().err


def test_bench_zeroshot_agrees_with_one_pass_per_choice(tmp_path, capsys):
    torch.manual_seed(0)
    ckpt = save_lm_checkpoint(tmp_path / "m.safetensors",
                              build_model(AMSNetConfig(n_layer=1, d_model=32, n_head=2)))
    assert main(["bench", "zeroshot", str(ckpt), "--task", "stdlib_piqa", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "64 choices of 32 contexts" in out and "speed-up" in out
    assert float(out.rsplit("difference", 1)[1]) < 1e-3
