"""The Python code blocks of docs/neuroscience.md run as written, in order."""

from __future__ import annotations

import torch
from docblocks import DOCS, python_blocks, run_block

DOC = DOCS / "neuroscience.md"


def test_neuroscience_guide_code_blocks_run(tmp_path, monkeypatch, capsys):
    blocks = python_blocks(DOC)
    assert len(blocks) >= 5
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    for i, code in enumerate(blocks):
        run_block(code, f"{DOC.name}[python block {i}]")
    out = capsys.readouterr().out
    assert "steps of 1.0 ms" in out
    assert (tmp_path / "run.npz").exists() and (tmp_path / "plots" / "raster.png").exists()
    assert (tmp_path / "tokens.png").exists()
