"""Probe: how fast does a minimal one-layer token mixer learn the copy probe?

The task is ``scripts/probe_copy_gap.py``'s (one value token ``gap`` positions before
the last, random filler, the model names it at the last position; chance 1/64), the
model the smallest that can do it: embedding -> RMSNorm -> one mixer (residual) ->
RMSNorm -> tied head, d_model 64, 2 heads, written here from the textbook formulas
(no astro_neuron code), so it tells what is a property of linear memory and what of
the AM-SNet. Mixers (``--kind``):

* ``softmax``: causal softmax attention (``scaled_dot_product_attention``);
* ``linear``: linear attention ``y_t = sum_{s<=t} (q_t . k_s) w(t-s) v_s / sqrt(d_k)``
  with signed ``q, k`` (the paper's astrocyte without spikes);
* ``relu`` / ``elu``: the same with ``max(q, 0), max(k, 0)`` or ``elu + 1``
  (Katharopoulos et al. 2020) feature maps;

``w(t-s)`` is 1 (no decay), ``exp(-(t-s)/tau)`` (``--tau``), or one decay per key
channel log-spread over ``--decays LOW,HIGH`` (the AM-SU's initialisation); ``--norm``
RMS-normalises each head's read-out (the AM-SNet's ``astro_norm``); ``--rotary`` puts
rotary positions on ``q, k`` after the feature map. Trained as the copy probe (AdamW,
weight decay 0.1, cosine to 0 from ``--lr``, clipping at 1, batch 16).

    OMP_NUM_THREADS=1 python scripts/probe_linear_memory.py --kind linear --norm
    OMP_NUM_THREADS=1 python scripts/probe_linear_memory.py --kind relu --norm

Prints one JSON line: the settings, the accuracy on 500 held-out sequences, the final
held-out loss and the run time (5-30 s on one thread).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from probe_copy_gap import batch  # noqa: E402  (the copy probe's data, one definition)

KINDS = ("softmax", "linear", "relu", "elu")


def rotate(x: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotary positions on adjacent channel pairs of ``x`` ``(..., T, d)``."""
    T, d = x.shape[-2], x.shape[-1]
    inv = base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    ang = (torch.arange(T, dtype=torch.float64)[:, None] * inv).to(x.dtype)
    c, s = ang.cos(), ang.sin()
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x1 * c - x2 * s, x1 * s + x2 * c), -1).flatten(-2)


class Mixer(nn.Module):
    def __init__(self, d: int, heads: int, a) -> None:
        super().__init__()
        self.a, self.h, self.dk = a, heads, d // heads
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.out = nn.Linear(d, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, d = x.shape
        a = self.a
        q, k, v = self.qkv(x).view(B, T, 3, self.h, self.dk).permute(2, 0, 3, 1, 4)
        if a.kind == "softmax":
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            if a.kind == "relu":
                q, k = F.relu(q), F.relu(k)
            elif a.kind == "elu":
                q, k = F.elu(q) + 1, F.elu(k) + 1
            if a.rotary:
                q, k = rotate(q), rotate(k)
            t = torch.arange(T)
            lag = (t[:, None] - t[None, :]).to(x.dtype)
            causal = lag >= 0
            if a.decays:
                lo, hi = a.decays
                tau = torch.exp(torch.linspace(math.log(lo), math.log(hi), self.dk))
                w = torch.where(causal[..., None], torch.exp(-lag.clamp(min=0)[..., None] / tau),
                                torch.zeros(()))
                scores = torch.einsum("bhtc,bhsc,tsc->bhts", q, k, w)
            else:
                w = causal.to(x.dtype)
                if a.tau > 0:
                    w = w * torch.exp(-lag.clamp(min=0) / a.tau)
                scores = (q @ k.transpose(-1, -2)) * w
            y = (scores / math.sqrt(self.dk)) @ v
            if a.norm:
                y = F.rms_norm(y, (self.dk,), eps=1e-5)
        return self.out(y.transpose(1, 2).reshape(B, T, d))


class Net(nn.Module):
    def __init__(self, a, d: int = 64, heads: int = 2, vocab: int = 256) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        nn.init.normal_(self.emb.weight, std=0.02)
        self.n1, self.mix, self.nf = nn.RMSNorm(d), Mixer(d, heads, a), nn.RMSNorm(d)

    def forward(self, idx: torch.Tensor, y: torch.Tensor):
        x = self.emb(idx)
        x = x + self.mix(self.n1(x))
        logits = self.nf(x) @ self.emb.weight.T
        return logits, F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=-1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kind", default="linear", choices=KINDS)
    ap.add_argument("--tau", type=float, default=0.0, help="one decay exp(-lag/tau); 0: none")
    ap.add_argument("--decays", default="", help="LOW,HIGH: per-channel time constants")
    ap.add_argument("--norm", action="store_true", help="RMS-normalise each head's read-out")
    ap.add_argument("--rotary", action="store_true", help="rotary positions on q, k")
    ap.add_argument("--gap", type=int, default=10)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    a.decays = tuple(float(v) for v in a.decays.split(",")) if a.decays else None
    if not 0 <= a.gap < 63:
        ap.error(f"--gap must lie in [0, 62], got {a.gap}")
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    model = Net(a)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.1, betas=(0.9, 0.999))
    g = torch.Generator().manual_seed(a.seed)
    t0 = time.perf_counter()
    for step in range(a.steps):
        for grp in opt.param_groups:
            grp["lr"] = a.lr * 0.5 * (1 + math.cos(math.pi * step / a.steps))
        x, y = batch(16, 64, a.gap, "random", g)
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    x, y = batch(500, 64, a.gap, "random", torch.Generator().manual_seed(10_000 + a.seed))
    with torch.no_grad():
        logits, loss = model(x, y)
    acc = float((logits[:, -1].argmax(-1) == y[:, -1]).float().mean())
    print(json.dumps({**vars(a), "accuracy": round(acc, 4), "loss": round(float(loss), 3),
                      "train_s": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()
