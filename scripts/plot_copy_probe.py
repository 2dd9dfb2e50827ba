"""Draw learning curves of the copy probe from ``probe_copy_gap.py --curve N`` output.

    python scripts/plot_copy_probe.py runs.jsonl --out docs/figures/memory_copy_probe.png

Each JSON line with a ``curve`` is one run; runs of one model (its ``arch`` and
``config``) share a colour, each seed a line; chance (1/64) dashed.
"""

from __future__ import annotations

import argparse
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from astro_neuron.apps.savefig import save_figure  # noqa: E402


def label(run: dict) -> str:
    if run["arch"] == "transformer":
        return "Transformer"
    cfg = run["config"]
    if cfg.get("sensing") == "relu":
        return "AM-SNet, non-negative sensing (AM-SNet relu)"
    return "AM-SNet (paper's signed sensing)" if not cfg else f"AM-SNet {json.dumps(cfg)}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("inputs", nargs="+", help="JSON-lines files of probe_copy_gap.py")
    ap.add_argument("--out", default="copy_probe.png")
    a = ap.parse_args()
    runs = [json.loads(line) for path in a.inputs for line in open(path) if line.strip()]
    runs = [r for r in runs if "curve" in r]
    if not runs:
        sys.exit("no run with a learning curve (probe_copy_gap.py --curve N)")
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    colours = {}
    for r in runs:
        name = label(r)
        c = colours.setdefault(name, f"C{len(colours)}")
        steps, acc = zip(*r["curve"])
        ax.plot(steps, [100 * v for v in acc], color=c, lw=1.5,
                ls="-" if r["seed"] == 0 else "--",
                label=f"{name}, seed {r['seed']}")
    ax.axhline(100 / 64, color="grey", ls=":", lw=1, label="chance (1/64)")
    gaps = sorted({r["gap"] for r in runs})
    ax.set_xlabel("training steps (batch 16)")
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_title(f"copy probe: name the token {', '.join(map(str, gaps))} positions back")
    ax.set_ylim(-2, 102)
    ax.legend(fontsize=7, loc="center right")
    print(save_figure(fig, a.out, dpi=150))


if __name__ == "__main__":
    main()
