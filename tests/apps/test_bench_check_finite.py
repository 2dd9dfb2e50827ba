"""`bench scan` and `bench generate --no-check-finite` time the forms with the NaN/Inf
checks off (issue 10: the switch's measured cost), and only inside the benchmark."""

from __future__ import annotations

import pytest

from astro_neuron.apps.cli import core, lm, main
from astro_neuron.functional.finite import checking_finite


@pytest.mark.parametrize("flag", [False, True])
def test_bench_scan_and_generate_switch_the_checks(monkeypatch, flag):
    seen = []
    monkeypatch.setattr(core, "bench_scan", lambda cfg: seen.append(checking_finite()) or [])
    monkeypatch.setattr(core, "format_table", lambda rows, cfg: "")
    monkeypatch.setattr(lm, "bench_generate", lambda *a, **k: seen.append(checking_finite()))
    extra = ["--no-check-finite"] if flag else []
    assert main(["bench", "scan", "--lengths", "8", *extra]) == 0
    assert main(["bench", "generate", "--contexts", "8", "--no-rss", *extra]) == 0
    assert seen == [not flag, not flag]
    assert checking_finite()                 # the default comes back after the command
