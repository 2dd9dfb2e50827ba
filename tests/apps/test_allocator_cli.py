"""The command line's training commands keep freed memory (astro_neuron/allocator.py)."""

from __future__ import annotations

from astro_neuron import allocator


def test_training_commands_apply_it_and_bench_scan_says_so(monkeypatch, capsys):
    """The command line calls it for its training commands only (bench scan prints the
    allocator in force); a bad value of the variable is a one-line error."""
    from astro_neuron.apps.cli import build_parser, main
    parser = build_parser()
    assert parser.parse_args(["bench", "scan"]).retain_memory
    assert parser.parse_args(["train"]).retain_memory
    assert not getattr(parser.parse_args(["bench", "generate"]), "retain_memory", False)
    monkeypatch.setenv(allocator.ENV, "system")
    assert main(["bench", "scan", "--lengths", "16", "--batch", "2", "--neurons", "8",
                 "--in-features", "8", "--astrocytes", "2", "--d-key", "4", "--repeats", "1",
                 "--loop-repeats", "1", "--no-frameworks", "--threads", "1"]) == 0
    assert "allocator: the C library's defaults" in capsys.readouterr().out
    monkeypatch.setenv(allocator.ENV, "bogus")
    assert main(["bench", "scan", "--lengths", "16"]) == 2
    assert "ASTRO_NEURON_MALLOC must be" in capsys.readouterr().err
