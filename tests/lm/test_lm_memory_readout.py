"""Memory tasks: the plain astrocyte read-out recalls a token through filler (docs/lm.md,
"Memory-retention tasks"; the runner's learning-rate check: tests/apps)."""

from __future__ import annotations

import torch

from astro_neuron.lm import AMSNetConfig, build_model
from astro_neuron.lm.tasks import TASK_MODELS, task_accuracy


def _batch(B, T, pos, g):
    d = torch.randint(1, 5, (B,), generator=g)
    x = torch.zeros(B, T, dtype=torch.long)
    x[:, pos], x[:, T - 2], x[:, T - 1] = d, 255, d
    y = torch.full((B, T), -1)
    y[:, T - 2] = d
    return x, y


def test_plain_readout_recalls_a_symbol_through_filler():
    # docs/lm.md, "the smallest case": one symbol (of 4) at position 10 among filler,
    # named at the separator 20 tokens later (chance 1/4). The RMS-normalised read-out
    # (the language-model default) stays at chance on this; the plain read-out learns it.
    torch.manual_seed(0)
    model = build_model(AMSNetConfig(n_layer=1, n_head=2, d_model=32, block_size=32,
                                     **TASK_MODELS["AM-SNet plain read-out"]))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0)
    g = torch.Generator().manual_seed(0)
    for _ in range(600):
        x, y = _batch(32, 32, 10, g)
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, y = _batch(256, 32, 10, g)
    assert task_accuracy(model, x, y) > 0.9
