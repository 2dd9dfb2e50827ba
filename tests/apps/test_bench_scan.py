"""``astro-neuron bench scan`` on a tiny layer: its rows and verdict lines (the timings
themselves are benchmarks, not tests)."""

from __future__ import annotations

from astro_neuron.apps.bench.scan import TORCH_KERNELS, ScanBenchConfig, bench_scan, format_table
from astro_neuron.functional.compiled import cpu_kernels

TINY = ScanBenchConfig(batch=1, lengths=(16,), n_neurons=8, n_astrocytes=2, d_key=4,
                       in_features=8, repeats=1, loop_repeats=1, frameworks=False)


def test_rows_include_the_torch_kernels_on_the_cpu_and_the_table_says_their_ratio():
    with cpu_kernels("auto"):                   # whatever ASTRO_NEURON_CPU_KERNELS says
        rows = bench_scan(TINY, progress=False)
    forms = [r["form"] for r in rows]
    assert forms[:3] == ["chunked", "projections (floor)", TORCH_KERNELS]
    assert {"step loop (reference)", "recurrent (hoisted projections)"} <= set(forms)
    assert all(r["median_s"] > 0 and r["x_chunked"] > 0 for r in rows)
    table = format_table(rows, TINY)
    assert "the compiled CPU kernels make the chunked form" in table
    with cpu_kernels("torch"):                  # nothing compiled to compare against
        rows = bench_scan(TINY, progress=False)
    assert TORCH_KERNELS not in [r["form"] for r in rows]
    assert "compiled CPU kernels" not in format_table(rows, TINY)
