"""Draw MQAR accuracy per seed for several model settings, side by side.

    python scripts/plot_mqar_seeds.py docs/figures/memory_mqar_width.json \\
        --out docs/figures/memory_mqar_width.png

The JSON file holds ``{"title": ..., "chance": 1/64, "pairs": 8, "groups": [{"label":
..., "accuracy": [seed 0, seed 1, ...], "source": ...}, ...]}``: each group is drawn as
its seeds (dots) and their mean (a bar), with chance (dashed), the 1/pairs level of
naming one of the sequence's values (dotted) and an optional ``"target"`` line;
``"legend_loc"`` (optional) places the legend (matplotlib's ``loc``).
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
    groups = d["groups"]
    if not groups or any(not g["accuracy"] for g in groups):
        p.error(f"{a.data}: every group needs at least one accuracy")
    fig, ax = plt.subplots(figsize=(1.2 + 1.05 * len(groups), 3.8))
    for i, g in enumerate(groups):
        acc = [100 * v for v in g["accuracy"]]
        mean = sum(acc) / len(acc)
        ax.bar(i, mean, width=0.6, color="C0", alpha=0.35)
        ax.plot([i] * len(acc), acc, "o", color="C0", ms=4)
        ax.text(i, 2.5, f"{mean:.1f}", ha="center", va="bottom", fontsize=8)   # mean, at the foot
    ax.axhline(100 * d.get("chance", 1 / 64), ls="--", c="gray", lw=1, label="chance")
    if d.get("pairs"):
        ax.axhline(100 / d["pairs"], ls=":", c="gray", lw=1, label=f"1/pairs (1/{d['pairs']})")
    if d.get("target"):
        ax.axhline(100 * d["target"], c="C3", lw=0.8, label=f"target {100 * d['target']:.0f}%")
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([g["label"] for g in groups], fontsize=7)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 103)                          # dots at 100% drawn whole
    if d.get("title"):
        ax.set_title(d["title"], fontsize=9)
    ax.legend(fontsize=7, loc=d.get("legend_loc", "upper left"))
    print(save_figure(fig, a.out, 150))


if __name__ == "__main__":
    main()
