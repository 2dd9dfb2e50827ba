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
* ``spike``: the same clock counting spikes, ``a_s = Theta(w . x_s + b)`` (surrogate
  gradient, the library's ATan): on what does not fire it stands exactly still;
* ``write``: the spike clock that also gates the write (``k_s <- a_s k_s``);
  ``write-detached``: the same, the clock passing no gradient to the detector;
* ``soft``: Mamba's step, ``a_s = softplus(w . x_s + b)`` (``softplus(b) = --step`` at
  the start, small), scaling the write and advancing the phase: what became the AM-SU's
  ``clock="activity"`` (fifteenth session);
* ``oracle``: the task's own events, ticking exactly on the data tokens, the separator
  and the markers (no learning: what an exact count gives); ``oracle-data``: on the
  data tokens only;
* ``none``:  no rotation.

``--period P`` turns pair ``f`` at ``2 pi f / P`` (evenly spaced) instead of the
library's ``10000^(-2f/d_k)``. For the learned clocks the JSON line also holds how often
each layer's clock ticks on data, noise, separator and markers (``tick_rates``).

Trained the memory tables' way (``train_task``: AdamW, cosine, clip 1) on selective
copying (16 data tokens, 16 symbols, random noise) and scored on 1,000 held-out
sequences; prints one JSON line.

    OMP_NUM_THREADS=1 python scripts/probe_event_clock.py --clock event --seq-len 256
    OMP_NUM_THREADS=1 python scripts/probe_event_clock.py --clock soft --period 32
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
from astro_neuron.functional.surrogate import ATan
from astro_neuron.lm.tasks import DATA0, MARK, SEP, selective_copy_batch, task_accuracy, train_task

VOCAB = 256


class Memory(nn.Module):
    def __init__(self, d: int, heads: int, d_k: int, clock: str, period: int = 0,
                 step: float = 0.05) -> None:
        super().__init__()
        self.h, self.dk, self.dv, self.clock = heads, d_k, d // heads, clock
        self.period = period
        self.qkv = nn.Linear(d, heads * (2 * d_k) + d, bias=False)
        self.out = nn.Linear(d, d, bias=False)
        tau = torch.logspace(math.log10(16), math.log10(4096), heads * d_k).reshape(heads, d_k)
        self.log_tau = nn.Parameter(tau.log())
        if clock in ("event", "spike", "write", "write-detached", "soft"):
            self.tick = nn.Linear(d, heads)
        if clock == "soft":                   # a small step at the start (Mamba: 0.001-0.1)
            nn.init.constant_(self.tick.bias, math.log(math.expm1(step)))

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
            elif self.clock.startswith("oracle"):  # ticks given by the task (see Probe)
                p = self.oracle.cumsum(0).expand(T, B, self.h)
            elif self.clock == "soft":        # Mamba's step size: softplus, small at first
                e = F.softplus(self.tick(x))                          # (T, B, heads)
                p = e.cumsum(0)
                k = k * e[..., None]
            elif self.clock in ("spike", "write", "write-detached"):
                e = ATan()(self.tick(x))                              # (T, B, heads)
                # "write-detached": the clock counts the writes but passes no gradient,
                # so the detector learns only from what the writes do to the answers
                p = (e.detach() if self.clock == "write-detached" else e).cumsum(0)
                if self.clock != "spike":     # the astrocyte writes only at its events
                    k = k * e[..., None]
            else:
                p = torch.sigmoid(self.tick(x)).cumsum(0)            # (T, B, heads)
            inv_freq = (10000.0 ** (-torch.arange(0, self.dk // 2, dtype=torch.float64)
                                    * 2 / self.dk)).to(x)             # the library's
            if self.period:                   # evenly spaced: 2 pi f / period, f < d_k / 2
                inv_freq = (2 * math.pi / self.period
                            * torch.arange(0, self.dk // 2, dtype=torch.float64)).to(x)
            ang = p[..., None] * inv_freq                             # rotary frequencies
            cos, sin = torch.cos(ang), torch.sin(ang)
            q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        gamma = torch.exp(-torch.exp(-self.log_tau))
        o, _ = astro_chunked(q, k, v, gamma)
        o = F.rms_norm(o, (self.dv,))                                # per astrocyte
        return self.out(o.reshape(T, B, -1))


class Probe(nn.Module):
    def __init__(self, clock: str, d: int = 64, layers: int = 2, heads: int = 2,
                 d_k: int = 32, period: int = 0, step: float = 0.05) -> None:
        super().__init__()
        self.clock = clock
        self.emb = nn.Embedding(VOCAB, d)
        self.blocks = nn.ModuleList(
            nn.ModuleList([nn.LayerNorm(d), Memory(d, heads, d_k, clock, period, step),
                           nn.LayerNorm(d),
                           nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))])
            for _ in range(layers))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, VOCAB, bias=False)

    def forward(self, idx, targets=None):
        x = self.emb(idx).transpose(0, 1)                            # (T, B, d)
        if self.clock.startswith("oracle"):
            i = idx.t()
            tick = (i >= DATA0) & (i < DATA0 + 16)                  # the data tokens
            if self.clock == "oracle":                              # and the answer cues
                tick = tick | (i == SEP) | (i == MARK)
            for blk in self.blocks:
                blk[1].oracle = tick[..., None].to(x.dtype)
        for n1, mem, n2, mlp in self.blocks:
            x = x + mem(n1(x))
            x = x + mlp(n2(x))
        logits = self.head(self.norm(x)).transpose(0, 1)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1),
                                   ignore_index=-1)
        return logits, loss


@torch.no_grad()
def tick_rates(model: Probe, idx: torch.Tensor) -> dict:
    """How often each layer's clock ticks (mean over its astrocytes) on data tokens,
    noise, the separator and the markers: what the learned clock counts."""
    if model.clock not in ("event", "spike", "write", "write-detached", "soft"):
        return {}
    i = idx.t()
    kinds = {"data": (i >= DATA0) & (i < DATA0 + 16), "sep": i == SEP, "mark": i == MARK}
    kinds["noise"] = ~(kinds["data"] | kinds["sep"] | kinds["mark"])
    x = model.emb(idx).transpose(0, 1)
    out = {}
    for n, (n1, mem, n2, mlp) in enumerate(model.blocks):
        z = mem.tick(n1(x))
        e = (torch.sigmoid(z) if model.clock == "event" else F.softplus(z)
             if model.clock == "soft" else (z > 0).to(z.dtype))
        out[f"layer{n}"] = {k: round(e[m].mean().item(), 3) for k, m in kinds.items()}
        x = x + mem(n1(x))
        x = x + mlp(n2(x))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clock", default="event",
                   choices=["time", "event", "spike", "write", "write-detached", "soft",
                            "oracle", "oracle-data", "none"])
    p.add_argument("--period", type=int, default=0,
                   help="rotary frequencies 2 pi f / period (f < d_k / 2) instead of the "
                        "library's base-10000 ones; 0: the library's")
    p.add_argument("--step", type=float, default=0.05,
                   help="the soft clock's step at the start (softplus of its bias)")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--examples", type=int, default=25600)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.manual_seed(a.seed)
    model = Probe(a.clock, period=a.period, step=a.step)
    t0 = time.perf_counter()
    losses = train_task(model, "copy", a.seq_len, a.examples, batch_size=a.batch_size,
                        lr=a.lr, seed=a.seed, progress=False)
    x, y = selective_copy_batch(1000, a.seq_len,
                                generator=torch.Generator().manual_seed(10_000 + a.seed))
    acc = task_accuracy(model, x, y)
    rates = tick_rates(model, x[:200])
    print(json.dumps({"clock": a.clock, "period": a.period, "step": a.step,
                      "seq_len": a.seq_len, "examples": a.examples,
                      "lr": a.lr, "seed": a.seed, "accuracy": round(acc, 4),
                      "final_loss": round(sum(losses[-20:]) / len(losses[-20:]), 3),
                      "seconds": round(time.perf_counter() - t0, 1), "tick_rates": rates}))


if __name__ == "__main__":
    main()
