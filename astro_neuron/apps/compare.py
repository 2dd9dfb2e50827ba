"""``astro-neuron compare``: AM-SNet, its ablations and the Transformer, one budget.

Every variant is the same :class:`~astro_neuron.lm.train.RunConfig` with one model
option changed, trained by the same :func:`~astro_neuron.lm.train.train` on the same
batches (same seed) for the same number of tokens. The table reports validation
bits per byte, training tokens/s and parameters; the loss curves go to a PNG.

A finished variant (its ``metrics.json`` present with the same config) is not
trained again, so an interrupted comparison continues where it stopped.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Optional

from astro_neuron.apps.savefig import save_figure
from astro_neuron.io import atomic_json
from astro_neuron.lm.config import AMSNetConfig, config_from_dict, transformer_twin
from astro_neuron.lm.data import load_corpus
from astro_neuron.lm.train import RunConfig, train

__all__ = ["VARIANTS", "compare", "format_table", "plot_curves"]

# name -> model options changed from the AM-SNet config
VARIANTS: dict[str, dict] = {
    "AM-SNet": {},
    "astrocyte off": {"astrocyte": False},
    "neuron path off": {"neuron_path": False},
    "non-spiking twin": {"spiking": False},
    "Transformer": {"arch": "transformer"},
}


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")


def _variant_run(base: RunConfig, changes: dict, out_dir: Path) -> RunConfig:
    run = copy.deepcopy(base)
    d = (transformer_twin(run.model) if changes.get("arch") == "transformer"
         else run.model).to_dict()
    d.update(changes)
    run.model = config_from_dict(d)
    run.train.out_dir = str(out_dir)
    return run


def compare(base: RunConfig, out_dir, variants: Optional[list[str]] = None,
            progress: bool = True, corpus=None, plot: bool = True) -> list[dict]:
    """Train each variant of ``base`` for ``base.train.max_steps``; returns result rows."""
    # The variants are changes from the AM-SNet config: a base that is already a
    # Transformer or an ablation would be trained under the wrong name ("AM-SNet").
    changed = [f"model.{k}={v!r}" for k, v in (("arch", base.model.arch),
                                                ("astrocyte", base.model.astrocyte),
                                                ("neuron_path", base.model.neuron_path),
                                                ("spiking", base.model.spiking))
               if v != getattr(AMSNetConfig, k)]
    if changed:
        raise ValueError(f"compare builds each variant from the AM-SNet config; remove "
                         f"{', '.join(changed)} and pick variants with --variants")
    names = list(VARIANTS) if variants is None else list(variants)
    bad = [n for n in names if n not in VARIANTS]
    if bad:
        raise ValueError(f"unknown variant(s) {bad}; choose from {list(VARIANTS)}")
    out = Path(out_dir)
    corpus = corpus or load_corpus(base.data.corpus, base.data.path or None)
    if progress:
        print(corpus.describe())
    tokens = base.train.max_steps * base.train.batch_size * base.model.block_size
    print(f"budget: {tokens:,} training tokens per model ({base.train.max_steps} steps x "
          f"{base.train.batch_size} x {base.model.block_size})")
    rows = []
    for name in names:
        vdir = out / _slug(name)
        run = _variant_run(base, VARIANTS[name], vdir)
        metrics = vdir / "metrics.json"
        done = None
        if metrics.is_file():
            m = json.loads(metrics.read_text())
            if m.get("run_config") == run.to_dict():
                done = m
        if done is None:
            print(f"--- {name}")
            s = train(run, progress=progress, corpus=corpus)
            done = {k: v for k, v in s.items()}
            done["run_config"] = run.to_dict()
            atomic_json(done, metrics)
        else:
            print(f"--- {name}: already trained ({metrics}), reusing")
        rows.append({"name": name, "params": done["params"], "tokens": done["tokens"],
                     "tokens_per_s": done["tokens_per_s"], "val_bpb": done["final_val_bpb"],
                     "train_time_s": done["train_time_s"], "losses": done["losses"],
                     "evals": done["evals"]})
    table = format_table(rows)
    print(table)
    atomic_json({"budget_tokens": tokens, "base": base.to_dict(),
                 "results": [{k: v for k, v in r.items() if k != "losses"} for r in rows]},
                out / "compare.json")
    (out / "compare.txt").write_text(table + "\n")
    if plot:
        plot_curves(rows, out / "loss_curves.png")
        print(f"loss curves: {out / 'loss_curves.png'}")
    return rows


def format_table(rows: list[dict]) -> str:
    ref = {r["name"]: r["val_bpb"] for r in rows}
    lines = [f"{'model':<18} {'params':>9} {'tokens':>11} {'tok/s':>8} {'val bpb':>8} "
             f"{'vs AM-SNet':>10}",
             "-" * 68]
    base = ref.get("AM-SNet")
    for r in rows:
        rel = f"{(r['val_bpb'] / base - 1) * 100:+.1f}%" if base else ""
        lines.append(f"{r['name']:<18} {r['params']:>9,} {r['tokens']:>11,} "
                     f"{r['tokens_per_s']:>8,.0f} {r['val_bpb']:>8.4f} {rel:>10}")
    return "\n".join(lines)


def plot_curves(rows: list[dict], path) -> Path:
    """Training loss (bits/byte, smoothed) and validation bits/byte against tokens."""
    import matplotlib  # deferred: slow to import, only this function draws

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for r in rows:
        losses = [x / math.log(2) for x in r["losses"]]
        if not losses:
            continue
        tok_per_step = r["tokens"] / len(losses)
        k = max(1, len(losses) // 50)
        sm = [sum(losses[max(0, i - k + 1):i + 1]) / len(losses[max(0, i - k + 1):i + 1])
              for i in range(len(losses))]
        line, = ax.plot([(i + 1) * tok_per_step for i in range(len(sm))], sm, lw=1.2,
                        label=f"{r['name']} (val {r['val_bpb']:.3f})")
        ev = r["evals"]
        ax.plot([e["tokens"] for e in ev], [e["val_bpb"] for e in ev], "o",
                color=line.get_color(), ms=4)
    ax.set_xlabel("training tokens")
    ax.set_ylabel("bits per byte (line: train, dots: validation)")
    ax.set_title("AM-SNet, ablations and Transformer at one token budget")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, path, dpi=120)
