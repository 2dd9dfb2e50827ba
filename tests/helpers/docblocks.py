"""Helpers for tests that run the Python code blocks of the documentation."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def python_blocks(path: Path) -> list[str]:
    """The ```python fenced blocks of a Markdown file, in order."""
    return re.findall(r"```python\n(.*?)```", Path(path).read_text(encoding="utf-8"), flags=re.S)


def run_block(code: str, name: str, namespace: dict | None = None) -> dict:
    """Execute one block (in ``namespace``, or a fresh one) and return the namespace."""
    ns = {"__name__": "__doc_block__"} if namespace is None else namespace
    exec(compile(code, name, "exec"), ns)
    return ns
