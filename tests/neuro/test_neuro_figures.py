"""The paper figures: what each plot draws (Agg backend), the gallery and its command,
and docs/gallery.md listing every figure with a committed PNG."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from astro_neuron import plot  # noqa: E402
from astro_neuron.apps.cli import main  # noqa: E402
from astro_neuron.neuro import Territories, TripartitePopulation, poisson, record  # noqa: E402
from astro_neuron.neuro import analysis as na  # noqa: E402
from astro_neuron.neuro.figures import raster_psth_figure  # noqa: E402
from astro_neuron.neuro.gallery import FIGURES, write_gallery  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def rec():
    torch.manual_seed(0)
    pop = TripartitePopulation(20, 12, Territories.tiled(12, 3, overlap=0.3), d_key=4,
                               bias=False)
    with torch.no_grad():
        pop.synapses.weight.copy_(torch.rand(12, 20) * 0.15)
        pop.neurons.log_threshold.copy_(torch.log(torch.empty(12).uniform_(0.7, 1.3)))
        pop.astrocytes.astro_gain.mul_(20.0)            # a visible astrocyte drive o
    x = poisson(40.0, 200.0, n=20, batch_size=3, generator=torch.Generator().manual_seed(0))
    return record(pop, x, info={"epochs": {"off": [0, 100], "on": [100, 200]}})


def test_membrane_u_plus_o_every_spike_above_its_own_threshold(rec):
    u, o, s = (rec.get("population", f) for f in ("u", "o", "spikes"))
    thr = rec.thresholds("population")
    assert np.ptp(thr) > 0.2 and np.abs(o).max() > 0.05 and s.sum() > 20
    ax = plot.membrane(u, o=o, threshold=thr, spikes=s, neurons=range(12), max_traces=12)
    traces = [ln for ln in ax.get_lines() if ln.get_label().startswith("neuron")]
    np.testing.assert_allclose(traces[3].get_ydata(), u[:, 3] + o[:, 3], rtol=1e-6)
    dots = [ln for ln in ax.get_lines() if ln.get_linestyle() == "None"]
    assert sum(len(d.get_xdata()) for d in dots) == int((s != 0).sum())
    for j, d in enumerate(dots):                       # the spike rule: u + o > theta_j
        assert np.all(d.get_ydata() > thr[j]), j
    levels = sorted({round(ln.get_ydata()[0], 6) for ln in ax.get_lines()
                     if ln.get_linestyle() == "--" and len(ln.get_ydata()) == 2})
    np.testing.assert_allclose(levels, sorted(set(np.round(thr, 6))), rtol=1e-6)
    assert ax.get_ylabel() == "u + o (x threshold)"
    # the old way (u alone, one line at the mean threshold) puts spikes below the line
    assert ((u + o)[s > 0] > np.repeat(thr[None], len(u), 0)[s > 0]).all()
    # a sampled trace (every 4th step) keeps the spikes of the kept steps
    ax = plot.membrane(u[::4], o=o[::4], spikes=s, every=4, neurons=[0], dt=1.0)
    assert len([ln for ln in ax.get_lines() if ln.get_linestyle() == "None"][0].get_xdata()) \
        == int((s[::4, 0] != 0).sum())
    ax = plot.membrane(u, threshold=thr, spikes=s, neurons=[0, 1], spike_marks="ticks")
    ticks = ax.collections                             # one LineCollection per neuron
    assert [len(c.get_segments()) for c in ticks] == [int(s[:, 0].sum()), int(s[:, 1].sum())]
    assert all(seg[0, 1] > thr[j] for j, c in enumerate(ticks) for seg in c.get_segments())
    with pytest.raises(ValueError, match="spike_marks must be"):
        plot.membrane(u, spike_marks="stars")
    with pytest.raises(ValueError, match="threshold must be a number or one per neuron"):
        plot.membrane(u, threshold=[1.0, 2.0])
    with pytest.raises(ValueError, match="o .* and u .* differ"):
        plot.membrane(u, o=o[:, :3])


def test_raster_groups_epochs_names_and_psth_panel(rec):
    s = rec.get("population", "spikes")
    terr = rec.attrs["population"]["territory"]
    ax = plot.raster(s, groups=terr, epochs={"off": (0, 100), "on": (100, 200)},
                     time_unit="ms")
    assert len(ax.collections) == len(set(terr))
    assert sum(len(c.get_offsets()) for c in ax.collections) == int((s != 0).sum())
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts == [f"territory of astrocyte {a}" for a in sorted(set(terr))]
    assert len(ax.patches) == 2                                            # shaded epochs
    assert [t.get_text() for t in ax.texts] == ["off", "on"]
    with pytest.raises(ValueError, match="groups has 3 entries for 12 neurons"):
        plot.raster(s, groups=[0, 1, 2])
    fig, (ax1, ax2) = raster_psth_figure(rec)
    assert [t.get_text() for t in ax1.get_yticklabels()] == ["input", "population"]
    step = [p for p in ax2.patches if type(p).__name__ == "StepPatch"][0]
    r = na.psth(rec, "population", 5.0)
    np.testing.assert_allclose(step.get_data().values, r.rate)
    assert ax2.get_ylabel() == "rate (Hz)" and ax2.get_xlabel() == "time (ms)"


def test_stacked_bars_items_accuracy_draw_what_they_are_given():
    x = np.random.default_rng(0).normal(size=(50, 6))
    ax = plot.stacked_traces(x, traces=[0, 2, 4], unit="mV", dt=2.0, time_unit="ms")
    lines = ax.get_lines()[:3]
    for k, (ln, j) in enumerate(zip(lines, [0, 2, 4])):
        np.testing.assert_allclose(np.diff(ln.get_ydata()), np.diff(x[:, j]))
        assert ln.get_ydata().min() == pytest.approx(k * 1.1 * np.ptp(x[:, [0, 2, 4]], 0).max())
    assert [t.get_text() for t in ax.get_yticklabels()] == ["neuron 0", "neuron 2", "neuron 4"]
    assert any("mV" in t.get_text() for t in ax.texts)                    # scale bar unit
    mean = np.array([[1.0, 5.0], [2.0, 3.0]])
    ax = plot.epoch_bars(mean, np.full_like(mean, 0.5), groups=[0, 1], epochs=["pre", "stim"])
    np.testing.assert_allclose([p.get_height() for p in ax.patches], mean.ravel())
    assert ax.get_ylabel() == "firing rate (Hz)"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["pre", "stim"]
    ax = plot.item_heatmap(mean - 2, symmetric=True, label="|H| (a.u.)")
    assert ax.images[0].get_clim() == (-3.0, 3.0)
    ax = plot.accuracy(np.arange(5.0), np.array([.2, .5, .9, 1., .3]), chance=0.25,
                       xlabel="time (ms)")
    chance = [ln for ln in ax.get_lines() if ln.get_label() == "chance"]
    assert len(chance) == 1 and chance[0].get_ydata()[0] == 0.25
    assert ax.get_ylim() == (0.0, 1.02) and ax.get_ylabel() == "accuracy (fraction correct)"
    with pytest.raises(ValueError, match="fractions in"):
        plot.accuracy([0, 1], [0.5, 1.5])
    with pytest.raises(ValueError, match="chance must be in"):
        plot.accuracy([0, 1], [0.5, 1.0], chance=1.0)
    ax = plot.psth(np.array([0.0, 10.0]), np.array([4.0, 8.0]), unit="Hz", time_unit="ms")
    assert ax.get_ylabel() == "rate (Hz)" and ax.get_xlim() == (0.0, 20.0)


def test_gallery_writes_every_figure_and_the_command(tmp_path):
    summary: dict = {}
    paths = write_gallery(tmp_path / "all", train_steps=3, progress=False, dpi=40, small=True,
                          summary=summary)
    assert [p.name for p in paths] == list(FIGURES)
    assert all(p.read_bytes()[:8] == PNG for p in paths)
    on = summary["ei: E rate (Hz) per epoch, astrocytes on"]
    assert on["before"] == 0.0 and on["input"] > 5.0                   # responds to its input
    assert summary["memory: chance"] == 0.25
    assert main(["figures", "--out", str(tmp_path / "one"), "--only", "raster_psth.png",
                 "--dpi", "40", "--save-recordings"]) == 0
    assert (tmp_path / "one" / "raster_psth.png").read_bytes()[:8] == PNG
    assert main(["export-nwb", str(tmp_path / "one" / "stimulus.npz"), "--out",
                 str(tmp_path / "one" / "stimulus.nwb")]) == 0
    from astro_neuron.neuro import load_recording
    from astro_neuron.neuro.export import load_nwb
    a, b = load_recording(tmp_path / "one" / "stimulus.npz"), load_nwb(
        tmp_path / "one" / "stimulus.nwb")
    np.testing.assert_array_equal(a["population"]["spikes"], b["population"]["spikes"])
    assert main(["figures", "--out", str(tmp_path), "--only", "violin.png"]) == 2


def test_gallery_page_shows_every_figure_with_its_command():
    page = (ROOT / "docs" / "gallery.md").read_text(encoding="utf-8")
    assert "astro-neuron figures --out docs/figures" in page
    shown = re.findall(r"!\[[^\]]*\]\(figures/([^)]+)\)", page)
    assert sorted(shown) == sorted(FIGURES)
    for name in FIGURES:
        png = ROOT / "docs" / "figures" / name
        assert png.read_bytes()[:8] == PNG and png.stat().st_size < 300_000, name
    assert "gallery.md" in (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
