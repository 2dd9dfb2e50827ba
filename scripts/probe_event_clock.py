"""Why the AM-SNet misses selective copying: a mechanism probe (docs/memory.md,
"Selective copying needs an order").

Selective copying asks for the data tokens in the order they came, at random places
among noise. A linear astrocyte memory reads ``o_t = sum_j (q_t . k_j) gamma^(t-j) v_j``.
With keys turned by rotary positions that count *time steps*, the score of the i-th
data token depends on where it happened to fall, not on its rank. If the keys were
turned by a clock that advances only on the items worth storing (an "event clock":
``p_t = sum_{s <= t} a_s``, ``a_s = sigmoid(w . x_s + b)`` learned), the i-th answer would
sit a fixed number of clock ticks (the number of data tokens) after the i-th item and
one rotary query could select it.

This script tests that reading with a small non-spiking model built from the library's
pieces (the chunked astrocyte scan ``astro_chunked`` and ``rotate``), not with the
AM-SU itself: 2 layers of [norm, astrocyte memory, norm, MLP], ``d_model`` 64,
2 astrocytes of ``d_k`` 32, learned decays spread over 16-4096 steps; the only
difference between the variants is what turns the keys:

* ``time``:  rotary positions ``p_t = t`` (what the AM-SU's ``rotary`` option does);
* ``event``: the event clock above, one per astrocyte;
* ``none``:  no rotation.

Trained the memory tables' way (``train_task``: AdamW, cosine, clip 1) on selective
copying (16 data tokens, 16 symbols, random noise) and scored on 1,000 held-out
sequences; prints one JSON line.

    OMP_NUM_THREADS=1 python scripts/probe_event_clock.py --clock event --seq-len 256
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
from torch import nn
from torch.nn import functional as F

from astro_neuron.functional.rotary import rotate
from astro_neuron.functional.scan import astro_chunked
from astro_neuron.lm.tasks import selective_copy_batch, task_accuracy, train_task

VOCAB = 256


class Memory(nn.Module):
    def __init__(self, d: int, heads: int, d_k: int, clock: str) -> None:
        super().__init__()
        self.h, self.dk, self.dv, self.clock = heads, d_k, d // heads, clock
        self.qkv = nn.Linear(d, heads * (2 * d_k) + d, bias=False)
        self.out = nn.Linear(d, d, bias=False)
        tau = torch.logspace(math.log10(16), math.log10(4096), heads * d_k).reshape(heads, d_k)
        self.log_tau = nn.Parameter(tau.log())
        if clock == "event":
            self.tick = nn.Linear(d, heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:          # x: (T, B, d)
        T, B, _ = x.shape
        q, k, v = self.qkv(x).split([self.h * self.dk, self.h * self.dk, self.h * self.dv], -1)
        q = q.reshape(T, B, self.h, self.dk)
        k = k.reshape(T, B, self.h, self.dk)
        v = v.reshape(T, B, self.h, self.dv)
        if self.clock != "none":
            if self.clock == "time":
                p = torch.arange(T, dtype=x.dtype, device=x.device)
                p = p[:, None, None].expand(T, B, self.h)
            else:
                p = torch.sigmoid(self.tick(x)).cumsum(0)            # (T, B, heads)
            inv_freq = (10000.0 ** (-torch.arange(0, self.dk // 2, dtype=torch.float64)
                                    * 2 / self.dk)).to(x)             # the library's
            ang = p[..., None] * inv_freq                             # rotary frequencies
            cos, sin = torch.cos(ang), torch.sin(ang)
            q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        gamma = torch.exp(-torch.exp(-self.log_tau))
        o, _ = astro_chunked(q, k, v, gamma)
        o = F.rms_norm(o, (self.dv,))                                # per astrocyte
        return self.out(o.reshape(T, B, -1))


class Probe(nn.Module):
    def __init__(self, clock: str, d: int = 64, layers: int = 2, heads: int = 2,
                 d_k: int = 32) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, d)
        self.blocks = nn.ModuleList(
            nn.ModuleList([nn.LayerNorm(d), Memory(d, heads, d_k, clock), nn.LayerNorm(d),
                           nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))])
            for _ in range(layers))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, VOCAB, bias=False)

    def forward(self, idx, targets=None):
        x = self.emb(idx).transpose(0, 1)                            # (T, B, d)
        for n1, mem, n2, mlp in self.blocks:
            x = x + mem(n1(x))
            x = x + mlp(n2(x))
        logits = self.head(self.norm(x)).transpose(0, 1)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1),
                                   ignore_index=-1)
        return logits, loss


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clock", choices=["time", "event", "none"], default="event")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--examples", type=int, default=25600)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.manual_seed(a.seed)
    model = Probe(a.clock)
    t0 = time.perf_counter()
    losses = train_task(model, "copy", a.seq_len, a.examples, batch_size=a.batch_size,
                        lr=a.lr, seed=a.seed, progress=False)
    x, y = selective_copy_batch(1000, a.seq_len,
                                generator=torch.Generator().manual_seed(10_000 + a.seed))
    acc = task_accuracy(model, x, y)
    print(json.dumps({"clock": a.clock, "seq_len": a.seq_len, "examples": a.examples,
                      "lr": a.lr, "seed": a.seed, "accuracy": round(acc, 4),
                      "final_loss": round(sum(losses[-20:]) / len(losses[-20:]), 3),
                      "seconds": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()
