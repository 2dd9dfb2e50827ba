"""Every ```python block of docs/integrations.md runs as it is."""

from __future__ import annotations

import pytest
from docblocks import DOCS, python_blocks, run_block

DOC = DOCS / "integrations.md"
BLOCKS = python_blocks(DOC)


def test_doc_has_examples():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("i", range(len(BLOCKS)))
def test_doc_block_runs(i, capsys):
    run_block(BLOCKS[i], f"{DOC.name}[block {i}]")
    if "as_surrogate(surrogate.ATan())(x)" in BLOCKS[i]:
        out = capsys.readouterr().out.splitlines()
        assert out == ["tensor([0., 1., 1.])", "tensor([0., 0., 1.])"], out
