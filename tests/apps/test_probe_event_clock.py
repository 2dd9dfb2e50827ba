"""scripts/probe_event_clock.py: what each clock counts (the oracle's ticks, the soft
clock's starting step, the tick rates docs/memory.md quotes) and a tiny run's JSON line
(seconds, tiny settings)."""

import json
import math
import subprocess
import sys

import pytest
import torch
from script_modules import ROOT, load_script


@pytest.fixture(scope="module")
def probe():
    return load_script("probe_event_clock")


def _capture_phase(model, idx):
    """The phase each layer's keys were turned by: a hook on rotate's tables."""
    seen = []
    real = model.blocks[0][1].forward.__globals__["rotate"]

    def spy(x, cos, sin):
        seen.append(cos)
        return real(x, cos, sin)
    model.blocks[0][1].forward.__globals__["rotate"] = spy
    try:
        with torch.no_grad():
            model(idx)
    finally:
        model.blocks[0][1].forward.__globals__["rotate"] = real
    return seen


def test_the_oracle_counts_data_separator_and_markers(probe):
    """``oracle``: +1 exactly on the 16 data tokens, the separator and the 16 markers,
    so the last step's phase is 33; ``oracle-data``: 16 (the data only). Pair 1 of the
    period-32 frequencies turns by 2 pi / 32 a tick."""
    torch.manual_seed(0)
    x, _ = probe.selective_copy_batch(2, 64, generator=torch.Generator().manual_seed(0))
    for clock, last in (("oracle", 33), ("oracle-data", 16)):
        model = probe.Probe(clock, period=32)
        cos = _capture_phase(model, x)[0]                       # (T, B, heads, d_k/2)
        angle = torch.acos(cos[-1, :, :, 1].clamp(-1, 1))       # pair 1 at the last step
        want = (2 * math.pi / 32 * last) % (2 * math.pi)
        want = min(want, 2 * math.pi - want)
        assert torch.allclose(angle, torch.full_like(angle, want), atol=1e-4), clock


def test_the_soft_clock_starts_at_its_step_and_rates_are_reported(probe):
    torch.manual_seed(0)
    model = probe.Probe("soft", period=32, step=0.01)
    for blk in model.blocks:
        assert float(torch.nn.functional.softplus(blk[1].tick.bias.detach()).mean()) == \
            pytest.approx(0.01, rel=1e-4)
    x, _ = probe.selective_copy_batch(4, 64, generator=torch.Generator().manual_seed(1))
    rates = probe.tick_rates(model, x)
    assert set(rates) == {"layer0", "layer1"}
    assert set(rates["layer0"]) == {"data", "sep", "mark", "noise"}
    assert all(0 < r < 0.1 for layer in rates.values() for r in layer.values())
    assert probe.tick_rates(probe.Probe("oracle"), x) == {}     # nothing learnt to report


def test_a_tiny_run_prints_its_json_line():
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "probe_event_clock.py"), "--clock", "soft",
         "--period", "32", "--seq-len", "64", "--examples", "64", "--batch-size", "16"],
        capture_output=True, text=True, check=True, cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert (r["clock"], r["period"], r["step"], r["seq_len"]) == ("soft", 32, 0.05, 64)
    assert 0.0 <= r["accuracy"] <= 1.0 and set(r["tick_rates"]) == {"layer0", "layer1"}
