"""Draw selective-copying accuracy by output place (a serial-position curve).

    python scripts/plot_copy_places.py docs/figures/memory_copy_places.json \\
        --out docs/figures/memory_copy_places.png

The JSON file holds ``{"title": ..., "chance": 1/16, "panels": [{"title": ...,
"curves": [{"label": ..., "by_place": [place 1, place 2, ...], "source": ...}, ...]},
...]}`` (the ``by_place`` lists of ``scripts/probe_copy_curriculum.py``'s breakdown):
one panel each, accuracy against the place in the order in which the data token is
due, chance dashed, the legend below each panel. A curve may name its ``color`` (to
keep a seed's colour across panels) and ``style`` (a matplotlib format, ``"o-"``);
``legend_columns`` sets the legend's columns (2), ``width`` and ``height`` a panel's
size in inches (4.4, 4.0). A curve with ``by_length`` (``{"256":
accuracy, ...}``) instead of ``by_place`` is drawn against the sequence length (a log
axis): accuracy against length, every curve of its panel likewise.
"""

from __future__ import annotations

import argparse
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from astro_neuron.apps.savefig import save_figure  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", help="the JSON file described above")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    with open(a.data) as f:
        d = json.load(f)
    panels = d.get("panels") or []
    if not panels or any(not (c.get("by_place") or c.get("by_length"))
                         for pn in panels for c in pn["curves"]):
        p.error(f"{a.data}: give at least one panel, every curve with its by_place list "
                "or by_length map")
    fig, axes = plt.subplots(1, len(panels), squeeze=False, sharey=True,
                             figsize=(d.get("width", 4.4) * len(panels), d.get("height", 4.0)))
    for ax, pn in zip(axes[0], panels):
        by_length = any("by_length" in c for c in pn["curves"])
        for i, c in enumerate(pn["curves"]):
            if by_length:
                xs = sorted(int(T) for T in c["by_length"])
                ys = [c["by_length"][str(T)] for T in xs]
            else:
                xs, ys = range(1, len(c["by_place"]) + 1), c["by_place"]
            ax.plot(xs, [100 * v for v in ys], c.get("style", "o-"), ms=3,
                    color=c.get("color", f"C{i}"), label=c["label"])
        ax.axhline(100 * d.get("chance", 1 / 16), ls="--", c="gray", lw=1, label="chance")
        ax.set_title(pn["title"], fontsize=9)
        ax.set_ylim(0, 103)
        if by_length:
            lengths = sorted({int(T) for c in pn["curves"] for T in c["by_length"]})
            ax.set_xscale("log", base=2)
            ax.set_xticks(lengths, [str(T) for T in lengths])
            ax.set_xlabel("sequence length (tokens)")
        else:
            ax.set_xlabel("place in the order (the i-th data token due)")
            n = max(len(c["by_place"]) for c in pn["curves"])
            ax.set_xticks([1, *range(4, n + 1, 4)])
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.3),
                  ncol=d.get("legend_columns", 2), frameon=False)  # below the axis label
    axes[0][0].set_ylabel("accuracy (%)")
    if d.get("title"):
        fig.suptitle(d["title"], fontsize=10)
    save_figure(fig, a.out, dpi=150)


if __name__ == "__main__":
    main()
