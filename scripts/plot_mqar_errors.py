"""Draw MQAR accuracy against the pair-to-query distance from ``probe_mqar_errors.py``.

    python scripts/plot_mqar_errors.py at256.json "scored at T=256" at1024.json \\
        "scored at T=1024" --out docs/figures/memory_mqar_distance.png

Each JSON file (one probe's output line) is drawn as accuracy per distance bin (a
point at the bin's middle, the bar its width), with chance (1/64) dashed and the
1/pairs of naming one of the sequence's values dotted; ``--train-length`` marks the
length the model was trained at.
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
    p.add_argument("pairs", nargs="+", help="JSON file, label, JSON file, label, ...")
    p.add_argument("--out", required=True)
    p.add_argument("--title", default="")
    p.add_argument("--train-length", type=int, help="mark the length the model trained at")
    a = p.parse_args()
    if len(a.pairs) % 2:
        p.error("give the files as FILE LABEL pairs")
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    n_pairs = None
    for path, lab in zip(a.pairs[::2], a.pairs[1::2]):
        with open(path) as f:
            d = json.load(f)
        n_pairs = d["settings"]["pairs"]
        xs, ys, ws = [], [], []
        for rng, (acc, _) in d["by_distance"].items():
            lo, hi = (int(v) for v in rng.split("-"))
            xs.append((lo + hi + 1) / 2)
            ws.append((hi + 1 - lo) / 2)
            ys.append(100 * acc)
        ax.errorbar(xs, ys, xerr=ws, marker="o", capsize=0,
                    label=f"{lab} ({100 * d['accuracy']:.1f}%)")
    ax.axhline(100 / 64, ls="--", c="gray", lw=1, label="chance (1/64)")
    if n_pairs:
        ax.axhline(100 / n_pairs, ls=":", c="gray", lw=1, label=f"1/pairs (1/{n_pairs})")
    if a.train_length:
        ax.axvline(a.train_length, c="k", lw=0.8, alpha=0.5)
        ax.text(a.train_length, 97, " training length", fontsize=8, va="top")
    ax.set_xscale("log")
    ax.set_xlabel("distance from the pair to its query (tokens)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    if a.title:
        ax.set_title(a.title, fontsize=10)
    ax.legend(fontsize=8, loc="lower left")
    print(save_figure(fig, a.out, 150))


if __name__ == "__main__":
    main()
