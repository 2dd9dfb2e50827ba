"""scripts/plot_copy_places.py: the serial-position figures of docs/memory.md are drawn
from their JSON (colours kept per curve where given), and a file without curves is
refused."""

import json
import sys

import pytest
from script_modules import load_script


def _run(monkeypatch, *args):
    monkeypatch.setattr(sys, "argv", ["plot_copy_places.py", *map(str, args)])
    load_script("plot_copy_places").main()


def test_draws_every_panel_with_the_colours_given(monkeypatch, tmp_path):
    import matplotlib.pyplot as plt

    data = {"title": "t", "chance": 1 / 16, "legend_columns": 1, "panels": [
        {"title": "a", "curves": [{"label": "x", "by_place": [1.0, 0.5, 0.25, 0.9],
                                   "color": "C3"},
                                  {"label": "y", "by_place": [0.2, 0.2, 0.2, 0.2]}]},
        {"title": "b", "curves": [{"label": "z", "by_place": [0.5] * 4, "color": "0.5"}]}]}
    src = tmp_path / "d.json"
    src.write_text(json.dumps(data))
    drawn = {}
    monkeypatch.setattr(plt, "close", lambda fig=None: drawn.setdefault("fig", fig))
    _run(monkeypatch, src, "--out", tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 0
    axes = drawn["fig"].axes
    assert len(axes) == 2
    lines = axes[0].get_lines()
    assert lines[0].get_color() == "C3" and lines[1].get_color() == "C1"
    assert [round(v, 1) for v in lines[0].get_ydata()] == [100.0, 50.0, 25.0, 90.0]
    assert axes[1].get_lines()[0].get_color() == "0.5"


def test_draws_accuracy_against_length_on_a_log_axis(monkeypatch, tmp_path):
    import matplotlib.pyplot as plt

    data = {"panels": [{"title": "a", "curves": [
        {"label": "x", "by_length": {"1024": 0.5, "256": 1.0, "4096": 0.25}, "style": "s--"},
        {"label": "y", "by_length": {"256": 0.9}}]}]}
    src = tmp_path / "d.json"
    src.write_text(json.dumps(data))
    drawn = {}
    monkeypatch.setattr(plt, "close", lambda fig=None: drawn.setdefault("fig", fig))
    _run(monkeypatch, src, "--out", tmp_path / "f.png")
    ax = drawn["fig"].axes[0]
    line = ax.get_lines()[0]
    assert list(line.get_xdata()) == [256, 1024, 4096]
    assert [round(v) for v in line.get_ydata()] == [100, 50, 25]
    assert ax.get_xscale() == "log" and line.get_linestyle() == "--"


def test_refuses_a_file_without_curves(monkeypatch, tmp_path):
    src = tmp_path / "d.json"
    src.write_text(json.dumps({"panels": [{"title": "a", "curves": [{"label": "x",
                                                                     "by_place": []}]}]}))
    with pytest.raises(SystemExit):
        _run(monkeypatch, src, "--out", tmp_path / "f.png")
