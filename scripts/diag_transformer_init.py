"""Why the memory tables' Transformer sat at the 1/pairs level on MQAR: its init.

The smallest MQAR (T=32, 2 pairs, constant filler, batch 64, AdamW lr 1e-3, weight
decay 0.1, d_model 64, 2 layers, 2 heads), trained and scored every fifth of the steps
on 256 held-out sequences, for

* ``gpt2``: the project's Transformer as the language model builds it (N(0, 0.02));
* ``width``: the same with ``init_std="width"`` (1/sqrt(d_model) = 0.125);
* ``no-rotary``: ``gpt2`` with the rotary rows set to the identity;
* ``reference``: PyTorch's own ``nn.TransformerEncoder`` (pre-norm, learned absolute
  positions, PyTorch's default init), an outside check that the task is learnable.

    OMP_NUM_THREADS=1 python scripts/diag_transformer_init.py --variant width --steps 2500

docs/memory.md ("The Transformer's init") gives the figures of a run.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from astro_neuron.lm import baselines
from astro_neuron.lm.config import AMSNetConfig
from astro_neuron.lm.model import build_model
from astro_neuron.lm.tasks import mqar_batch, task_accuracy

T, PAIRS, BATCH, D = 32, 2, 64, 64


class Reference(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb, self.pos = nn.Embedding(256, D), nn.Embedding(T, D)
        layer = nn.TransformerEncoderLayer(D, 2, 4 * D, dropout=0.0, batch_first=True,
                                           norm_first=True)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(D, 256)

    def forward(self, x, y=None):
        h = self.emb(x) + self.pos(torch.arange(x.shape[1]))
        mask = nn.Transformer.generate_square_subsequent_mask(x.shape[1])
        logits = self.head(self.enc(h, mask=mask, is_causal=True))
        loss = None if y is None else nn.functional.cross_entropy(
            logits.reshape(-1, 256), y.reshape(-1), ignore_index=-1)
        return logits, loss


def build(variant: str) -> nn.Module:
    if variant == "reference":
        return Reference()
    if variant == "no-rotary":
        def _rope(self, n):
            w = self.wte.weight
            hd = self.config.head_size
            return (torch.ones(n, hd, dtype=w.dtype, device=w.device),
                    torch.zeros(n, hd, dtype=w.dtype, device=w.device))
        baselines.Transformer._rope = _rope
    extra = {"init_std": "width"} if variant == "width" else {}
    return build_model(AMSNetConfig(vocab_size=256, block_size=T, n_layer=2, n_head=2,
                                    d_model=D, arch="transformer", **extra))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", choices=["gpt2", "width", "no-rotary", "reference"],
                   default="width")
    p.add_argument("--steps", type=int, default=2500)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.manual_seed(a.seed)
    model = build(a.variant)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    g = torch.Generator().manual_seed(a.seed)
    x_te, y_te = mqar_batch(256, T, n_pairs=PAIRS, noise="constant",
                            generator=torch.Generator().manual_seed(10_000 + a.seed))
    t0 = time.perf_counter()
    for s in range(a.steps):
        x, y = mqar_batch(BATCH, T, n_pairs=PAIRS, noise="constant", generator=g)
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (s + 1) % max(a.steps // 5, 1) == 0:
            acc = task_accuracy(model, x_te, y_te, batch_size=256)    # one batch: all 256
            print(f"{a.variant} step {s + 1}: query loss {loss.item():.3f}, accuracy "
                  f"{acc:.1%} ({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
