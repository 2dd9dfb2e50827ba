"""The Python code blocks of docs/neuroscience.md run as written, in order."""

from __future__ import annotations

import re
from pathlib import Path

import torch

DOC = Path(__file__).resolve().parents[2] / "docs" / "neuroscience.md"


def test_neuroscience_guide_code_blocks_run(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) >= 5
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    for i, code in enumerate(blocks):
        namespace: dict = {}
        exec(compile(code, f"{DOC.name}[python block {i}]", "exec"), namespace)
    out = capsys.readouterr().out
    assert "steps of 1.0 ms" in out
    assert (tmp_path / "run.npz").exists() and (tmp_path / "plots" / "raster.png").exists()
    assert (tmp_path / "tokens.png").exists()
