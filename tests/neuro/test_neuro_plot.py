"""Plots on the Agg backend check what was drawn; plot_recording and the demo plots write
PNG files (the `plot` and `record` commands: tests/apps/test_neuro_cli.py)."""

from __future__ import annotations

import time

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import astro_neuron as an  # noqa: E402
from astro_neuron import plot  # noqa: E402
from astro_neuron.neuro import demo_plots, load_recording, plot_recording  # noqa: E402
from neuro_data import small_recording, tiny_memory_checkpoint  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _spikes(T=50, N=7, p=0.2, seed=0):
    g = np.random.default_rng(seed)
    return (g.random((T, N)) < p).astype(np.float32)


def _n_points(ax) -> int:
    return sum(len(c.get_offsets()) for c in ax.collections)


def test_raster_one_point_per_spike_and_populations_stacked():
    a, b = _spikes(seed=1), _spikes(N=4, seed=2)
    b[3, 2] = 3.0                                          # a graded spike counts once
    ax = plot.raster([a, torch.from_numpy(b)], labels=["in", "out"], dt=0.5, time_unit="ms")
    assert _n_points(ax) == int((a != 0).sum() + (b != 0).sum())
    offs = ax.collections[1].get_offsets()
    assert offs[:, 1].min() >= 7                           # second population above the first
    t, n = np.nonzero(a)
    np.testing.assert_allclose(np.sort(ax.collections[0].get_offsets()[:, 0]), np.sort(t * 0.5))
    assert ax.get_xlabel() == "time (ms)"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["in", "out"]
    fig, ax2 = plt.subplots()
    assert plot.raster(a, ax=ax2, title="x") is ax2 and ax2.get_title() == "x"
    with pytest.raises(ValueError, match=r"\[T, N\]"):
        plot.raster(np.zeros((3, 4, 5)))
    with pytest.raises(ValueError, match="labels has 1 entries for 2"):
        plot.raster([a, a], labels=["x"])


def test_membrane_traces():
    u = np.cumsum(np.random.default_rng(0).normal(size=(60, 9)), 0)
    s = (u > 2).astype(float)
    ax = plot.membrane(u, threshold=1.0, spikes=s, neurons=[0, 3, 8], dt=2.0)
    traces = [ln for ln in ax.get_lines() if ln.get_label().startswith("neuron")]
    assert len(traces) == 3
    np.testing.assert_allclose(traces[1].get_ydata(), u[:, 3])
    np.testing.assert_allclose(traces[1].get_xdata(), np.arange(60) * 2.0)
    markers = [ln for ln in ax.get_lines() if ln.get_linestyle() == "None"]
    assert sum(len(m.get_xdata()) for m in markers) == int(s[:, [0, 3, 8]].sum())
    assert any(ln.get_label() == "threshold" for ln in ax.get_lines())
    assert len([ln for ln in plot.membrane(u).get_lines()]) == 5    # max_traces default
    with pytest.raises(ValueError, match=r"neurons \[9\] out of range"):
        plot.membrane(u, neurons=[9])
    with pytest.raises(ValueError, match="NaN"):
        plot.membrane(np.full((3, 2), np.nan))


def test_astro_heatmap_and_calcium_traces():
    a = np.random.default_rng(0).random((80, 4))
    ax = plot.astro_heatmap(a, dt=10.0, time_unit="ms", label="Ca (µM)")
    img = ax.images[0]
    assert img.get_array().shape == (4, 80)
    np.testing.assert_allclose(img.get_array(), a.T)
    assert img.get_extent()[1] == 800.0
    ax = plot.calcium_traces(a, astrocytes=[1, 2])
    assert len(ax.get_lines()) == 2
    np.testing.assert_allclose(ax.get_lines()[1].get_ydata(), a[:, 2])
    with pytest.raises(ValueError, match=r"\[T, A\]"):
        plot.astro_heatmap(np.zeros(5))


def test_rate_histogram_counts_every_neuron_and_uses_hz():
    a, b = _spikes(T=200, N=30, p=0.05), _spikes(T=200, N=12, p=0.2, seed=3)
    ax = plot.rate_histogram([a, b], dt=1.0, time_unit="ms", labels=["a", "b"], bins=10)
    heights = [p.get_height() for p in ax.patches]
    assert sum(heights[:10]) == 30 and sum(heights[10:]) == 12
    rates = a.sum(0) / 200 * 1000.0                         # Hz
    assert ax.patches[0].get_x() == 0.0
    assert max(p.get_x() + p.get_width() for p in ax.patches) == pytest.approx(
        max(rates.max(), (b.sum(0) / 200 * 1000).max()))
    assert "Hz" in ax.get_xlabel()


def test_token_raster_labels_tokens():
    tokens = ["T", "he", " ", "c", "at", "\n", b"\xff", 97]
    s = _spikes(T=8, N=5, p=0.4)
    ax = plot.token_raster(s, tokens)
    assert _n_points(ax) == int(s.sum())
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["T", "he", "\u2423", "c", "at", "\u21b5", "\\xff", "a"]
    assert list(ax.get_xticks()) == list(range(8))
    long = _spikes(T=300, N=3)
    ax = plot.token_raster(long, ["x"] * 300, max_labels=50)
    assert len(ax.get_xticks()) <= 50
    with pytest.raises(ValueError, match="got 3 tokens for spikes of 8 steps"):
        plot.token_raster(s, ["a", "b", "c"])
    with pytest.raises(TypeError, match="tokens must be str, bytes or int"):
        plot.token_raster(s, [1.5] * 8)


def test_plot_recording_writes_pngs(tmp_path):
    paths = plot_recording(small_recording(), tmp_path, prefix="r_")
    assert [p.name for p in paths] == ["r_raster.png", "r_membrane.png", "r_astro_heatmap.png",
                                       "r_calcium.png", "r_rates.png", "r_token_raster.png"]
    for p in paths:
        assert p.read_bytes()[:8] == PNG
    with pytest.raises(ValueError, match="unknown plot kind 'violin'"):
        plot_recording(small_recording(), tmp_path, kinds=["violin"])
    rec = small_recording()
    rec.info.pop("tokens")
    with pytest.raises(ValueError, match="cannot draw 'tokens'"):
        plot_recording(rec, tmp_path, kinds=["tokens"])
    with pytest.raises(ValueError, match="sample must be in"):
        plot_recording(rec, tmp_path, sample=3)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A MemoryNet checkpoint (tiny task, 3 training steps), shared by the tests."""
    return tiny_memory_checkpoint(tmp_path_factory.mktemp("ckpt") / "memory_amsu.pt")


def test_demo_plots_from_a_memory_checkpoint(tmp_path, tiny_checkpoint):
    ckpt = tiny_checkpoint
    t0 = time.perf_counter()
    paths = demo_plots(tmp_path / "out", ckpt)
    elapsed = time.perf_counter() - t0
    assert [p.name for p in paths] == [f"memory_run_{k}.png" for k in
                                       ("raster", "membrane", "astro_heatmap", "calcium", "rates")]
    assert all(p.read_bytes()[:8] == PNG for p in paths)
    rec = load_recording(tmp_path / "out" / "memory_run.npz")
    assert rec.info["label"] in (0, 1) and set(rec.info["events"]) == {"cue end", "recall"}
    assert elapsed < 20, elapsed
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a readable torch file"):
        demo_plots(tmp_path / "out", tmp_path / "junk.pt")
    torch.save({"config": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"lacks \['task', 'state_dict'\]"):
        demo_plots(tmp_path / "out", tmp_path / "other.pt")


def test_plot_module_does_not_import_matplotlib_at_import():
    import subprocess
    import sys

    code = ("import sys, astro_neuron.plot, astro_neuron.neuro; "
            "assert 'matplotlib' not in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr
