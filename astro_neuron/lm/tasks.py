"""Generated memory-retention tasks for language models (docs/lm.md, "Memory tasks").

* **MQAR** (multi-query associative recall, Arora et al. 2023, "Zoology"): the
  sequence starts with ``n_pairs`` key-value pairs ``k1 v1 k2 v2 ...``; later, at
  random places in a filler stream, keys are asked again (``k_i v_i``) and the model
  must predict ``v_i`` right after ``k_i``. Longer sequences push queries further
  from their pairs.
* **Selective copy** (Gu & Dao 2023, "Mamba"): ``n_tokens`` data tokens sit at
  random positions in a filler stream; after a separator the model must reproduce
  them in order.

Each batch is ``(idx, targets)`` ``(B, T)`` for ``model(idx, targets)``; targets are
-1 (ignored) except where an answer is due. Accuracy = correct answers / answers.
:func:`run_memory_tasks` trains each model from scratch for each length and prints
accuracy against sequence length.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor

from astro_neuron.io import atomic_json
from astro_neuron.lm.config import AMSNetConfig
from astro_neuron.lm.model import LanguageModel, build_model

__all__ = ["mqar_batch", "selective_copy_batch", "task_accuracy", "train_task",
           "run_memory_tasks", "TASK_MODELS"]

FILLER, SEP = 0, 255
KEY0, VAL0, DATA0 = 1, 101, 1        # keys 1..100, values 101..200, copy data 1..n_symbols

TASK_MODELS = {"AM-SNet": {}, "astrocyte off": {"astrocyte": False},
               "Transformer": {"arch": "transformer"},
               # the plain read-out H^T q / sqrt(d_k): it can learn to recall through filler
               # where the RMS-normalised one cannot (docs/lm.md, "Memory-retention tasks")
               "AM-SNet plain read-out": {"astro_norm": False}}


def _check_len(name: str, T: int, need: int) -> None:
    if T < need:
        raise ValueError(f"seq_len={T} is too short for {name}: need at least {need}")


def mqar_batch(batch_size: int, seq_len: int, n_pairs: int = 4, n_keys: int = 16,
               generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor]:
    """MQAR sequences ``(B, T)`` and targets (the value after each queried key)."""
    if not 1 <= n_pairs <= n_keys <= 100:
        raise ValueError(f"need 1 <= n_pairs <= n_keys <= 100, got n_pairs={n_pairs}, "
                         f"n_keys={n_keys}")
    _check_len("MQAR", seq_len, 4 * n_pairs)
    g = generator
    B, N = batch_size, n_pairs
    keys = torch.argsort(torch.rand(B, n_keys, generator=g), dim=1)[:, :N] + KEY0   # distinct
    vals = torch.randint(VAL0, VAL0 + n_keys, (B, N), generator=g)
    idx = torch.full((B, seq_len), FILLER, dtype=torch.long)
    tgt = torch.full((B, seq_len), -1, dtype=torch.long)
    idx[:, 0:2 * N:2], idx[:, 1:2 * N:2] = keys, vals
    slots = (seq_len - 2 * N) // 2                                   # query slot pairs
    pos = torch.argsort(torch.rand(B, slots, generator=g), dim=1)[:, :N]
    pos = 2 * N + 2 * pos                                            # (B, N) query positions
    order = torch.argsort(torch.rand(B, N, generator=g), dim=1)      # which pair each asks
    qk, qv = keys.gather(1, order), vals.gather(1, order)
    idx.scatter_(1, pos, qk)
    idx.scatter_(1, pos + 1, qv)
    tgt.scatter_(1, pos, qv)
    return idx, tgt


def selective_copy_batch(batch_size: int, seq_len: int, n_tokens: int = 4,
                         n_symbols: int = 8, generator: Optional[torch.Generator] = None,
                         ) -> tuple[Tensor, Tensor]:
    """Selective-copy sequences ``(B, T)``: data in filler, separator, data again."""
    if not 1 <= n_symbols <= 200 or n_tokens < 1:
        raise ValueError(f"need n_tokens >= 1 and 1 <= n_symbols <= 200, got {n_tokens}, "
                         f"{n_symbols}")
    _check_len("selective copy", seq_len, 3 * n_tokens + 1)
    g = generator
    B, M = batch_size, n_tokens
    region = seq_len - M - 1
    data = torch.randint(DATA0, DATA0 + n_symbols, (B, M), generator=g)
    pos = torch.sort(torch.argsort(torch.rand(B, region, generator=g), dim=1)[:, :M]).values
    idx = torch.full((B, seq_len), FILLER, dtype=torch.long)
    idx.scatter_(1, pos, data)
    idx[:, region] = SEP
    idx[:, region + 1:] = data
    tgt = torch.full((B, seq_len), -1, dtype=torch.long)
    tgt[:, region:region + M] = data                                 # predict d1 after SEP ...
    return idx, tgt


_TASKS = {"mqar": mqar_batch, "copy": selective_copy_batch}


@torch.no_grad()
def task_accuracy(model: LanguageModel, idx: Tensor, tgt: Tensor, batch_size: int = 64) -> float:
    """Fraction of answer positions (``tgt >= 0``) where the argmax is right."""
    model.eval()
    right = total = 0
    dev = next(model.parameters()).device
    for i in range(0, idx.shape[0], batch_size):
        x, y = idx[i:i + batch_size].to(dev), tgt[i:i + batch_size].to(dev)
        logits, _ = model(x)
        m = y >= 0
        right += int((logits.argmax(-1)[m] == y[m]).sum())
        total += int(m.sum())
    model.train()
    return right / max(total, 1)


def train_task(model: LanguageModel, task: str, seq_len: int, steps: int,
               tokens_per_step: int = 8192, lr: float = 3e-3, seed: int = 0,
               progress: bool = True, desc: str = "", **task_kwargs) -> list[float]:
    """Train ``model`` on fresh batches of ``task``; batch = tokens_per_step / seq_len.

    ``task_kwargs`` go to the batch generator (``n_pairs``, ``n_tokens``, ...)."""
    from tqdm.auto import tqdm

    from astro_neuron.lm.train import TrainConfig, lr_at, make_optimizer

    if task not in _TASKS:
        raise ValueError(f"task must be one of {list(_TASKS)}, got {task!r}")
    tc = TrainConfig(lr=lr, min_lr=lr / 10, warmup_steps=max(1, steps // 10), max_steps=steps,
                     weight_decay=0.0)
    opt = make_optimizer(model, tc)
    g = torch.Generator().manual_seed(seed)
    B = max(1, tokens_per_step // seq_len)
    dev = next(model.parameters()).device
    losses = []
    model.train()
    for step in tqdm(range(steps), desc=desc or task, disable=not progress, leave=False):
        for grp in opt.param_groups:
            grp["lr"] = lr_at(step, tc)
        x, y = _TASKS[task](B, seq_len, generator=g, **task_kwargs)
        _, loss = model(x.to(dev), y.to(dev))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            raise FloatingPointError(f"{desc or task}: loss became {losses[-1]} at step {step}")
    return losses


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
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) \
            or lr <= 0:
        raise ValueError(f"lr must be a positive finite number, got {lr!r}")
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
            x_te, y_te = _TASKS[task](n_eval, T, generator=g)
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
    import matplotlib

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
