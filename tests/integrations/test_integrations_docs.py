"""Every ```python block of docs/integrations.md runs as it is."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "integrations.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_doc_has_examples():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("i", range(len(BLOCKS)))
def test_doc_block_runs(i, capsys):
    exec(compile(BLOCKS[i], f"{DOC.name}[block {i}]", "exec"), {"__name__": "__doc_block__"})
    if "as_surrogate(surrogate.ATan())(x)" in BLOCKS[i]:
        out = capsys.readouterr().out.splitlines()
        assert out == ["tensor([0., 1., 1.])", "tensor([0., 0., 1.])"], out
