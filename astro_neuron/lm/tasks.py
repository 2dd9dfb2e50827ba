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
The runner that trains each model from scratch for each length and prints accuracy
against sequence length (``astro-neuron memory-tasks``) is an application:
:func:`astro_neuron.apps.tasks.lm_memory.run_memory_tasks`.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor
from tqdm.auto import tqdm

from astro_neuron.lm.model import LanguageModel
from astro_neuron.lm.train import TrainConfig, lr_at, make_optimizer
from astro_neuron.validate import choice

__all__ = ["mqar_batch", "selective_copy_batch", "task_accuracy", "train_task", "TASKS",
           "TASK_MODELS"]

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


#: the task generators by name (``train_task``, the memory-task runner)
TASKS = {"mqar": mqar_batch, "copy": selective_copy_batch}


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

    choice("task", task, TASKS)
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
        x, y = TASKS[task](B, seq_len, generator=g, **task_kwargs)
        _, loss = model(x.to(dev), y.to(dev))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            raise FloatingPointError(f"{desc or task}: loss became {losses[-1]} at step {step}")
    return losses
