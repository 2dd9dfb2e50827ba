"""Generated memory tasks for language models, with the field's protocol (docs/memory.md).

* **MQAR** (multi-query associative recall, Arora et al. 2023, "Zoology"): the
  sequence starts with ``n_pairs`` key-value pairs ``k1 v1 k2 v2 ...`` (keys and
  values from disjoint vocabularies, each drawn without replacement); later, at
  random places among noise, each key is asked once more on its own, and the model
  must predict its value at that position. The loss and the accuracy count only
  these query positions.
* **Selective copy** (Gu & Dao 2023, "Mamba"): ``n_tokens`` data tokens sit at
  random places among noise; after a separator come ``n_tokens`` blank markers and
  the model must output the data tokens in order, one at each marker.

Noise between the items (``noise``): ``"random"`` draws every other position
uniformly from a noise vocabulary disjoint from keys, values and data (the default;
each noise token writes into a recurrent state), ``"constant"`` uses one filler token.
Query places (``query_dist``): ``"uniform"`` over the whole rest of the sequence
(the default: longer sequences push queries further from their pairs) or
``"power"`` (Zoology's power law with a = 0.01, most queries soon after the pairs).

Token layout (vocabulary 256, the byte models): 0 filler, keys 1..64, values 65..128,
copy data 1..n_symbols, noise 129..253, 254 copy marker, 255 separator.

Each batch is ``(idx, targets)`` ``(B, T)`` for ``model(idx, targets)``; targets are
-1 (ignored) except where an answer is due. The training loop :func:`train_task`
follows Zoology: AdamW (weight decay 0.1), cosine from the peak rate to 0, fresh
examples every step. The runner (``astro-neuron memory-tasks``) is an application:
:func:`astro_neuron.apps.tasks.lm_memory.run_memory_tasks`.
"""

from __future__ import annotations

import math
import time
from typing import Optional, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from astro_neuron.lm.model import LanguageModel
from astro_neuron.lm.train import TrainConfig, lr_at, make_optimizer
from astro_neuron.validate import choice, int_in_range, non_negative_int, positive_int, \
    positive_number

__all__ = ["mqar_batch", "selective_copy_batch", "copy_gap_batch", "task_accuracy", "train_task",
           "chance", "TASKS", "TASK_MODELS", "NOISE", "QUERY_DIST", "N_KEYS", "N_VALUES", "VOCAB"]

VOCAB = 256
FILLER, SEP, MARK = 0, 255, 254
KEY0, N_KEYS = 1, 64                 # keys 1..64
VAL0, N_VALUES = 65, 64              # values 65..128
NOISE0, N_NOISE = 129, 125           # noise 129..253
DATA0, MAX_SYMBOLS = 1, 128          # copy data 1..n_symbols
NOISE = ("random", "constant")
QUERY_DIST = ("uniform", "power")
POWER_A = 0.01                       # Zoology's power_a

# non-negative sensing, astrocyte gain 1, no rotary (docs/memory.md, "Non-negative sensing")
_RELU = {"sensing": "relu", "astro_gain": 1.0, "rotary_fraction": 0.0}

#: the models of the tables: AM-SNet (the language model's defaults), its ablation
#: without astrocyte, the same-size Transformer (config overrides of AMSNetConfig)
TASK_MODELS = {"AM-SNet": {}, "astrocyte off": {"astrocyte": False},
               # init std 1 / sqrt(d_model): with GPT-2's 0.02 at d_model 64-128 attention
               # stays at the 1/pairs plateau on MQAR (docs/memory.md, "The Transformer's init")
               "Transformer": {"arch": "transformer", "init_std": "width"},
               "Transformer GPT-2 init": {"arch": "transformer"},
               # the plain read-out H^T q / sqrt(d_k) (docs/lm.md, "Memory-retention tasks")
               "AM-SNet plain read-out": {"astro_norm": False},
               # _RELU; "astrocyte off" is its ablation too
               "AM-SNet relu": dict(_RELU),
               # the same with the 4-tap pre-synaptic delay line: binds keys to values
               "AM-SNet memory": {**_RELU, "conv_size": 4}}


def _check_common(batch_size, seq_len, noise, generator) -> None:
    positive_int("batch_size", batch_size)
    positive_int("seq_len", seq_len)
    choice("noise", noise, NOISE)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")


def _background(B: int, T: int, noise: str, g) -> Tensor:
    if noise == "constant":
        return torch.full((B, T), FILLER, dtype=torch.long)
    return torch.randint(NOISE0, NOISE0 + N_NOISE, (B, T), generator=g)


def _distinct(B: int, n: int, k: int, g) -> Tensor:
    """``(B, k)`` distinct draws from ``0..n-1`` per row."""
    return torch.argsort(torch.rand(B, n, generator=g), dim=1)[:, :k]


def mqar_batch(batch_size: int, seq_len: int, n_pairs: int = 8, noise: str = "random",
               query_dist: str = "uniform", generator: Optional[torch.Generator] = None,
               ) -> tuple[Tensor, Tensor]:
    """MQAR sequences ``(B, T)`` and targets (the value at each lone query key).

    ``idx = k1 v1 ... kN vN`` then noise with each key once more at a random place;
    ``targets`` holds ``v_i`` at the position of the queried ``k_i`` and -1 elsewhere.
    """
    _check_common(batch_size, seq_len, noise, generator)
    choice("query_dist", query_dist, QUERY_DIST)
    int_in_range("n_pairs", n_pairs, 1, N_KEYS)
    if seq_len < 4 * n_pairs:
        raise ValueError(f"seq_len={seq_len} is too short for MQAR with {n_pairs} pairs: "
                         f"need at least {4 * n_pairs}")
    g = generator
    B, N = batch_size, n_pairs
    keys = _distinct(B, N_KEYS, N, g) + KEY0
    vals = _distinct(B, N_VALUES, N, g) + VAL0
    idx = _background(B, seq_len, noise, g)
    tgt = torch.full((B, seq_len), -1, dtype=torch.long)
    idx[:, 0:2 * N:2], idx[:, 1:2 * N:2] = keys, vals
    slots = (seq_len - 2 * N) // 2                      # query slots, every other position
    if query_dist == "uniform":
        gap = _distinct(B, slots, N, g)
    else:                                               # p(gap i) ~ i^(a-1), i = 1..slots
        p = torch.arange(1, slots + 1, dtype=torch.float64) ** (POWER_A - 1)
        gap = torch.multinomial(p.expand(B, slots), N, replacement=False, generator=g)
    pos = 2 * N + 2 * gap                               # (B, N) query positions
    idx.scatter_(1, pos, keys)                          # every key asked once
    tgt.scatter_(1, pos, vals)
    return idx, tgt


def selective_copy_batch(batch_size: int, seq_len: int, n_tokens: int = 16,
                         n_symbols: int = 16, noise: str = "random",
                         generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor]:
    """Selective-copy sequences ``(B, T)``: data among noise, separator, then blank
    markers at which the data is due in order (``targets``; -1 elsewhere)."""
    _check_common(batch_size, seq_len, noise, generator)
    positive_int("n_tokens", n_tokens)
    int_in_range("n_symbols", n_symbols, 1, MAX_SYMBOLS)
    if seq_len < 3 * n_tokens + 1:
        raise ValueError(f"seq_len={seq_len} is too short for selective copy of {n_tokens} "
                         f"tokens: need at least {3 * n_tokens + 1}")
    g = generator
    B, M = batch_size, n_tokens
    region = seq_len - M - 1                            # data + noise, then SEP, M markers
    data = torch.randint(DATA0, DATA0 + n_symbols, (B, M), generator=g)
    pos = torch.sort(_distinct(B, region, M, g), dim=1).values
    idx = _background(B, seq_len, noise, g)
    idx.scatter_(1, pos, data)
    idx[:, region] = SEP
    idx[:, region + 1:] = MARK
    tgt = torch.full((B, seq_len), -1, dtype=torch.long)
    tgt[:, region:region + M] = data                    # d1 at SEP, d2 at the 1st marker...
    return idx, tgt


def copy_gap_batch(batch_size: int, seq_len: int, gap: int = 10, noise: str = "random",
                   generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor]:
    """The copy probe (docs/memory.md, "The smallest piece"): noise (or the constant
    filler), one value token (``VAL0 .. VAL0 + N_VALUES - 1``) ``gap`` positions before
    the last; ``targets`` holds it at the last position and -1 elsewhere. A recall at
    a fixed distance with nothing to match: the smallest piece of MQAR."""
    _check_common(batch_size, seq_len, noise, generator)
    int_in_range("gap", gap, 0, seq_len - 2)
    B, T = batch_size, seq_len
    idx = _background(B, T, noise, generator)
    v = torch.randint(VAL0, VAL0 + N_VALUES, (B,), generator=generator)
    idx[:, T - 1 - gap] = v
    tgt = torch.full((B, T), -1, dtype=torch.long)
    tgt[:, T - 1] = v
    return idx, tgt


#: the task generators by name (``train_task``, the memory-task runner)
TASKS = {"mqar": mqar_batch, "copy": selective_copy_batch, "gap": copy_gap_batch}


def chance(task: str, **task_kwargs) -> float:
    """Accuracy of a uniform guess among the answers a task can have: 1 / values for
    MQAR and the copy probe (``N_VALUES``), 1 / symbols for selective copy."""
    choice("task", task, TASKS)
    if task in ("mqar", "gap"):
        return 1.0 / N_VALUES
    return 1.0 / task_kwargs.get("n_symbols", 16)


@torch.no_grad()
def task_accuracy(model: LanguageModel, idx: Tensor, tgt: Tensor, batch_size: int = 64) -> float:
    """Fraction of answer positions (``tgt >= 0``) where the argmax is right."""
    was = model.training
    model.eval()
    right = total = 0
    dev = next(model.parameters()).device
    for i in range(0, idx.shape[0], batch_size):
        x, y = idx[i:i + batch_size].to(dev), tgt[i:i + batch_size].to(dev)
        logits, _ = model(x)
        m = y >= 0
        right += int((logits.argmax(-1)[m] == y[m]).sum())
        total += int(m.sum())
    model.train(was)
    return right / max(total, 1)


def train_task(model: LanguageModel, task: str, seq_len: int, examples: int,
               batch_size: int = 64, lr: float = 1e-3, weight_decay: float = 0.1,
               warmup_steps: int = 0, seed: int = 0, progress: bool = True, desc: str = "",
               mix_lengths: Sequence[int] = (), time_limit: Optional[float] = None,
               **task_kwargs) -> list[float]:
    """Train ``model`` on ``examples`` fresh sequences of ``task`` (``batch_size`` per
    step; the last step may be smaller), Zoology's way: AdamW with weight decay 0.1
    on the matrices, the learning rate cosine from ``lr`` to 0 (after an optional
    linear warm-up), gradients clipped at norm 1. ``task_kwargs`` go to the batch
    generator (``n_pairs``, ``noise``, ...). ``time_limit`` (seconds, None: none): stop
    after the step that spends it (fewer losses than steps tell the caller).
    ``mix_lengths``: shorter sequence lengths mixed into training (Zoology trains MQAR
    on several lengths at once): the steps cycle over ``seq_len`` and these (one length
    per batch), the number of sequences unchanged. Returns the loss of every step."""
    choice("task", task, TASKS)
    positive_int("seq_len", seq_len)
    for L in mix_lengths:
        int_in_range("mix_lengths", L, 1, seq_len)
    lengths = [seq_len, *mix_lengths]
    for L in mix_lengths:             # the generator's own checks (pairs fit ...), before training
        TASKS[task](1, L, generator=torch.Generator().manual_seed(0), **task_kwargs)
    positive_int("examples", examples)
    positive_int("batch_size", batch_size)
    non_negative_int("warmup_steps", warmup_steps)
    if time_limit is not None:
        positive_number("time_limit", time_limit)
    t_end = None if time_limit is None else time.perf_counter() + time_limit
    steps = math.ceil(examples / batch_size)
    tc = TrainConfig(lr=lr, min_lr=0.0, warmup_steps=min(warmup_steps, steps - 1),
                     max_steps=steps, weight_decay=weight_decay, beta2=0.999)
    opt = make_optimizer(model, tc)
    g = torch.Generator().manual_seed(seed)
    dev = next(model.parameters()).device
    losses = []
    model.train()
    for step in tqdm(range(steps), desc=desc or task, disable=not progress, leave=False):
        for grp in opt.param_groups:
            grp["lr"] = lr_at(step, tc)
        B = min(batch_size, examples - step * batch_size)
        x, y = TASKS[task](B, lengths[step % len(lengths)], generator=g, **task_kwargs)
        _, loss = model(x.to(dev), y.to(dev))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            raise FloatingPointError(f"{desc or task}: loss became {losses[-1]} at step {step}")
        if t_end is not None and time.perf_counter() > t_end:
            break
    return losses
