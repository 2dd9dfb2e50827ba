"""The Python code blocks of docs/neuroscience.md run as written, in order, in one
namespace; the quickstart network responds to its input and to its astrocytes."""

from __future__ import annotations

import torch
from docblocks import DOCS, python_blocks, run_block

DOC = DOCS / "neuroscience.md"


def test_neuroscience_guide_code_blocks_run(tmp_path, monkeypatch, capsys):
    blocks = python_blocks(DOC)
    assert len(blocks) >= 8
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    ns: dict = {"__name__": "__doc_block__"}
    for i, code in enumerate(blocks):
        run_block(code, f"{DOC.name}[python block {i}]", ns)
    out = capsys.readouterr().out
    # the quickstart: silent without input, far more active with it (measured 0 vs 31 Hz),
    # and its astrocytes matter (measured 31 Hz active vs 18 Hz silenced)
    rates = ns["rates"]
    assert rates["no input"] < 1.0 and rates["input"] > 10.0
    assert rates["input"] > 1.3 * rates["input, astrocytes silenced"]
    assert "steps of 1.0 ms" in out
    assert (tmp_path / "run.npz").exists() and (tmp_path / "plots" / "raster.png").exists()
    assert (tmp_path / "tokens.png").exists()
    assert (tmp_path / "nest_run" / "net.py").exists()
