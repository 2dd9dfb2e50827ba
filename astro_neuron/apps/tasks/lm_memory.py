"""The memory-task runner of ``astro-neuron memory-tasks`` (docs/lm.md, "Memory tasks").

:func:`run_memory_tasks` trains each model from scratch for each task and length and
prints accuracy against sequence length. The tasks themselves (MQAR, selective copy),
the model variants and the training loop are library code: :mod:`astro_neuron.lm.tasks`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from astro_neuron.io import atomic_json
from astro_neuron.lm.config import AMSNetConfig
from astro_neuron.lm.model import build_model
from astro_neuron.lm.tasks import TASK_MODELS, TASKS, task_accuracy, train_task
from astro_neuron.validate import optional, positive_int, positive_number

__all__ = ["run_memory_tasks", "format_rows"]


@dataclass
class _Row:
    task: str
    model: str
    seq_len: int
    accuracy: float
    final_loss: float
    train_s: float


def run_memory_tasks(tasks=("mqar", "copy"), lengths=(64, 128, 256, 512, 1024),
                     models=("AM-SNet", "astrocyte off", "Transformer"), steps: int = 300,
                     batch_size: int = 32, d_model: int = 64, n_layer: int = 2,
                     n_head: int = 2, tokens_per_step: Optional[int] = None, seed: int = 0,
                     n_eval: int = 256, out_dir="out/memory-tasks", quick: bool = False,
                     progress: bool = True, lr: float = 1e-3) -> list[dict]:
    """Accuracy against sequence length for each task and model; prints a table,
    saves ``memory_tasks.json`` and ``memory_tasks.png`` in ``out_dir``.

    The batch holds ``tokens_per_step`` tokens (default ``batch_size * 256``) so every
    length gets the same token budget; ``lr`` is the peak learning rate of every model
    (1e-3: at 3e-3 the AM-SNet learned neither task, docs/lm.md).
    ``quick``: tiny settings for tests.
    """
    positive_number("lr", lr)
    for name, value in (("steps", steps), ("batch_size", batch_size), ("d_model", d_model),
                        ("n_layer", n_layer), ("n_head", n_head), ("n_eval", n_eval)):
        positive_int(name, value)
    optional(positive_int, "tokens_per_step", tokens_per_step)
    lengths = [positive_int("length", T) for T in lengths]
    bad = [m for m in models if m not in TASK_MODELS]
    if bad:
        raise ValueError(f"unknown model(s) {bad}; choose from {list(TASK_MODELS)}")
    if quick:
        steps, d_model, n_eval, tokens_per_step = min(steps, 5), min(d_model, 16), 16, 256
    tps = tokens_per_step or batch_size * 256
    out = Path(out_dir)
    rows = []
    for task in tasks:
        for T in lengths:
            g = torch.Generator().manual_seed(10_000 + seed)
            x_te, y_te = TASKS[task](n_eval, T, generator=g)
            for name in models:
                torch.manual_seed(seed)
                opts = dict(TASK_MODELS[name])
                cfg = AMSNetConfig(**{"vocab_size": 256, "block_size": T, "n_layer": n_layer,
                                      "n_head": n_head, "d_model": d_model, **opts})
                model = build_model(cfg)
                t0 = time.perf_counter()
                losses = train_task(model, task, T, steps, tps, lr=lr, seed=seed,
                                    progress=progress, desc=f"{task} T={T} {name}")
                acc = task_accuracy(model, x_te, y_te)
                r = _Row(task, name, T, acc, sum(losses[-10:]) / len(losses[-10:]),
                         round(time.perf_counter() - t0, 1))
                rows.append(r.__dict__)
                print(f"{task:5s} T={T:5d} {name:<14s} accuracy {acc:6.1%}  "
                      f"(loss {r.final_loss:.3f}, {r.train_s} s)", flush=True)
    print(format_rows(rows))
    atomic_json({"settings": {"steps": steps, "tokens_per_step": tps, "lr": lr,
                              "d_model": d_model, "n_layer": n_layer, "n_head": n_head, "seed": seed,
                              "n_eval": n_eval}, "results": rows}, out / "memory_tasks.json")
    _plot(rows, out / "memory_tasks.png")
    return rows


def format_rows(rows: list[dict]) -> str:
    lengths = sorted({r["seq_len"] for r in rows})
    w = max([14] + [len(r["model"]) for r in rows])        # the model column fits every name
    lines = []
    for task in dict.fromkeys(r["task"] for r in rows):
        lines.append(f"{task}: accuracy by sequence length")
        lines.append(f"  {'model':<{w}s}" + "".join(f"{T:>8d}" for T in lengths))
        for name in dict.fromkeys(r["model"] for r in rows if r["task"] == task):
            acc = {r["seq_len"]: r["accuracy"] for r in rows
                   if r["task"] == task and r["model"] == name}
            lines.append(f"  {name:<{w}s}" + "".join(
                f"{acc[T]:>8.1%}" if T in acc else f"{'':>8s}" for T in lengths))
    return "\n".join(lines)


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib  # deferred: slow to import, only the plot needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r["task"] for r in rows))
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for name in dict.fromkeys(r["model"] for r in rows):
            pts = sorted((r["seq_len"], r["accuracy"]) for r in rows
                         if r["task"] == task and r["model"] == name)
            ax.plot(*zip(*pts), "o-", label=name)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("sequence length")
        ax.set_ylabel("accuracy")
        ax.set_ylim(0, 1.02)
        ax.set_title(task)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
