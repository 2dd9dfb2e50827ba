"""Is the Transformer's MQAR budget the missing delay line? A probe (docs/memory.md,
"The Transformer with a delay line").

On MQAR the AM-SNet that learns (``AM-SNet memory``) has a 4-tap pre-synaptic delay
line on what its astrocyte senses: each key is filtered together with the tokens just
before it, so a value arrives bound to its key in one step. The Transformer has no
such filter: to answer it must first learn a previous-token head (a query that finds
the step before through the rotary positions) and then an induction head on top, the
two-layer circuit whose learning starts after a long plateau. This probe gives the
library's width-init Transformer the same delay line, a causal depthwise filter of
``--taps`` taps on its keys and values (before the rotary positions; taps uniform in
+-1/sqrt(taps) as the AM-SU's), and trains it the memory tables' way: one cell of
``astro-neuron memory-tasks`` through the runner's own ``run_cell`` (its ``build``), so
the run file lands in the runner's layout and the accuracy is scored the same way.

It is a diagnostic, not a library model: the Transformer of the tables
(``TASK_MODELS["Transformer"]``) stays the plain one, as in Zoology.

    OMP_NUM_THREADS=1 python scripts/probe_transformer_delay.py --seq-len 256 --pairs 8 \\
        --examples 51200 --d-model 128 --out out/tf_delay
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from astro_neuron.apps.tasks.lm_memory import _task_kwargs, run_cell
from astro_neuron.lm.baselines import Attention, Transformer, _rope
from astro_neuron.lm.config import AMSNetConfig
from astro_neuron.lm.tasks import TASK_MODELS, TASKS, task_accuracy


class DelayAttention(Attention):
    """Causal attention whose keys and values pass a depthwise causal filter first:
    ``k'_t = sum_j w_k[j] * k_{t-j}`` per channel, the same for ``v`` (zeros before
    the sequence), ``j = 0 .. taps - 1``."""

    def __init__(self, cfg: AMSNetConfig, taps: int) -> None:
        super().__init__(cfg)
        self.taps = nn.Parameter(torch.empty(taps, 2 * cfg.d_model))
        b = 1.0 / math.sqrt(taps)
        nn.init.uniform_(self.taps, -b, b)

    def forward(self, x: Tensor, C: Tensor, S: Tensor):
        B, T, d = x.shape
        q, kv = self.qkv(x).split([d, 2 * d], -1)                  # (B, T, d), (B, T, 2d)
        y = kv * self.taps[0]
        for j in range(1, self.taps.shape[0]):
            y = y + F.pad(kv[:, :T - j], (0, 0, j, 0)) * self.taps[j]
        k, v = y.split(d, -1)
        heads = lambda z: z.view(B, T, self.n_head, self.hd).transpose(1, 2)  # noqa: E731
        q, k, v = heads(q), heads(k), heads(v)
        q, k = _rope(q, C, S), _rope(k, C, S)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(o.transpose(1, 2).reshape(B, T, d)), (k, v)


def delay_transformer(cfg: AMSNetConfig, taps: int) -> Transformer:
    """The library's Transformer (its init) with every attention replaced by
    :class:`DelayAttention` holding the same ``qkv`` and ``proj`` weights."""
    model = Transformer(cfg)
    for blk in model.blocks:
        new = DelayAttention(cfg, taps)
        new.qkv.weight.data.copy_(blk.attn.qkv.weight.data)
        new.proj.weight.data.copy_(blk.attn.proj.weight.data)
        blk.attn = new
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default="mqar", choices=("mqar", "copy"))
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--pairs", type=int, default=8, help="key-value pairs (MQAR) or data "
                    "tokens (copy)")
    ap.add_argument("--taps", type=int, default=4)
    ap.add_argument("--examples", type=int, default=51200)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--taps-off", action="store_true", help="the plain Transformer (no delay "
                    "line) through the same script, for --score-lengths")
    ap.add_argument("--score-lengths", type=int, nargs="*", default=[],
                    help="also score the trained model at these lengths (not trained there)")
    ap.add_argument("--out", default="out/tf_delay")
    a = ap.parse_args()
    if a.taps < 1:
        ap.error(f"--taps must be at least 1 (1: a per-channel gain, no delay), got {a.taps}")
    name = "Transformer" if a.taps_off else f"Transformer delay{a.taps}"
    ov = dict(TASK_MODELS["Transformer"])
    if not a.taps_off:
        ov["probe"] = f"delay line {a.taps} taps"
    cfg = AMSNetConfig(vocab_size=256, block_size=a.seq_len, n_layer=2, n_head=2,
                       d_model=a.d_model, arch="transformer", init_std="width")
    built = []

    def build():
        built.append(Transformer(cfg) if a.taps_off else delay_transformer(cfg, a.taps))
        return built[-1]

    settings = {"examples": a.examples, "batch_size": a.batch_size, "d_model": a.d_model,
                "n_layer": 2, "n_head": 2, "n_eval": 500, "query_dist": "uniform",
                "warmup": 0.0, "mix_lengths": [], "train_length": None}
    r = run_cell(a.task, a.seq_len, a.pairs, "random", name, ov, a.lr, a.seed, settings,
                 a.out, build=build)
    print(json.dumps({k: r.get(k) for k in ("model", "seq_len", "size", "lr", "seed",
                                            "accuracy", "final_loss", "train_s")}))
    if a.score_lengths:
        if not built:
            raise SystemExit("the run was read back from --out, not trained: remove its run "
                             "file to score it at other lengths")
        kw = _task_kwargs(a.task, a.pairs, "random", "uniform")
        scores = {}
        for T in a.score_lengths:            # held-out sequences as run_cell draws them
            g = torch.Generator().manual_seed(10_000 + a.seed)
            x, y = TASKS[a.task](settings["n_eval"], T, generator=g, **kw)
            scores[T] = task_accuracy(built[0], x, y)
        print(json.dumps({"trained_at": a.seq_len, "accuracy_at": scores}))
        Path(a.out, f"{name.replace(' ', '-')}_s{a.seed}_lengths.json").write_text(
            json.dumps({**r, "accuracy_at": scores}, indent=1))


if __name__ == "__main__":
    main()
