"""Draw the twelfth session's GPU runs at T=1024: accuracy against the sequences each
run trained on, MQAR (8 pairs) and selective copying (16 tokens), chance dashed.

    python scripts/plot_device_t1024.py docs/figures/memory_device_h200_s12.json \
        --out docs/figures/memory_device_t1024.png

One marker a run (one seed, one learning rate: 1e-3); a run's sequences are what fitted
its time budget on the shared GPU (docs/memory.md "On a GPU, twelfth session").
"""

from __future__ import annotations

import argparse
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from astro_neuron.apps.savefig import save_figure  # noqa: E402


def label(r: dict) -> str:
    mix = r["settings"].get("mix_lengths") or []
    how = f"lengths 1024 + {', '.join(map(str, mix))}" if mix else "length 1024 only"
    return f"{r['model']} ({how})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", help="memory_device_h200_s12.json")
    p.add_argument("--out", default="docs/figures/memory_device_t1024.png")
    p.add_argument("--dpi", type=int, default=150)
    a = p.parse_args()
    with open(a.runs) as f:
        runs = [r for c in json.load(f)["calls"] for r in c["runs"]
                if "error" not in r and r["seq_len"] == 1024]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, task, title in ((axes[0], "mqar", "MQAR, T=1024, 8 pairs"),
                            (axes[1], "copy", "selective copying, T=1024, 16 tokens")):
        rs = [r for r in runs if r["task"] == task]
        for i, name in enumerate(sorted({label(r) for r in rs})):
            pts = sorted((r.get("examples_trained", r["settings"]["examples"]),
                          100 * r["accuracy"]) for r in rs if label(r) == name)
            ax.plot([x / 1000 for x, _ in pts], [y for _, y in pts], "o", ms=6,
                    color=f"C{i}", label=name)
        ax.axhline(100 * rs[0]["chance"], color="0.4", ls="--", lw=1, label="chance")
        if task == "mqar":
            ax.axhline(90, color="0.7", ls=":", lw=1, label="target (90%)")
        else:
            ax.axhline(95, color="0.7", ls=":", lw=1, label="target (95%)")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("sequences trained (thousands)")
        ax.set_xlim(0, None)
        ax.set_ylim(0, 100)
        ax.legend(fontsize=7, loc="center right" if task == "mqar" else "upper left")
    axes[0].set_ylabel("accuracy at the answers (%)")
    fig.suptitle("Trained at T=1024 on an H200 (d_model 128 AM-SNet, 64 d_model probe; "
                 "batch 64, lr 1e-3, one seed a marker)", fontsize=9)
    fig.tight_layout()
    print(save_figure(fig, a.out, a.dpi))


if __name__ == "__main__":
    main()
