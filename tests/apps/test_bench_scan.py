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


def test_the_step_loops_run_once_untimed_and_the_floor_ceiling_is_printed(monkeypatch):
    """Each slow form runs loop_repeats + 1 times (the first, a warm-up, is not timed),
    and the verdict gives the floor's own ratio to the step loop."""
    import astro_neuron.apps.bench.scan as scan_mod
    calls: dict[str, int] = {}
    real = scan_mod._fwd_bwd_amsu

    def counting(layer, x, mode):
        fn = real(layer, x, mode)

        def run():
            calls[mode] = calls.get(mode, 0) + 1
            fn()
        return run
    monkeypatch.setattr(scan_mod, "_fwd_bwd_amsu", counting)
    cfg = ScanBenchConfig(**{**TINY.__dict__, "loop_repeats": 2})
    with cpu_kernels("torch"):
        rows = bench_scan(cfg, progress=False)
    assert calls["loop"] == 3 and calls["recurrent"] == 3
    loop = next(r for r in rows if r["form"] == "step loop (reference)")
    assert f"the projection floor alone is {loop['x_floor']:.1f}x faster" in format_table(rows, cfg)
