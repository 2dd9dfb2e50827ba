"""The Python code blocks of the README and of every docs page run as written.

Blocks of one page run in order in one namespace (a page may build on its earlier
blocks), in a temporary working directory. Pages with a test of their own, which also
checks what the blocks print, are listed in OWN_TESTS.
"""

from __future__ import annotations

import pytest
import torch
from docblocks import DOCS, ROOT, python_blocks, run_block

OWN_TESTS = {"integrations.md", "neuroscience.md"}
PAGES = [ROOT / "README.md"] + sorted(p for p in DOCS.glob("*.md") if p.name not in OWN_TESTS)


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_page_code_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    ns: dict = {"__name__": "__doc_block__"}
    for i, code in enumerate(python_blocks(page)):
        run_block(code, f"{page.name}[python block {i}]", ns)
