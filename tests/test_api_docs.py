"""The API reference builds from the docstrings (``make docs`` runs the same script)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "build_api_docs.py"


def test_pdoc_builds_the_api_reference(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    pages = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.html")}
    for page in ("astro_neuron.html", "astro_neuron/functional/amsu.html",
                 "neuromorphic.html", "astro_neuron/integrations/spikingjelly.html"):
        assert page in pages, sorted(pages)[:20]
    assert "AMSU" in (tmp_path / "astro_neuron.html").read_text()
