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


def _recall_accuracy(seed: int, steps: int = 600) -> float:
    """docs/lm.md, "the smallest case": train the plain read-out (seed = model init and
    batches) and return its accuracy on 256 fresh sequences."""
    torch.manual_seed(seed)
    model = build_model(AMSNetConfig(n_layer=1, n_head=2, d_model=32, block_size=32,
                                     **TASK_MODELS["AM-SNet plain read-out"]))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x, y = _batch(32, 32, 10, g)
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, y = _batch(256, 32, 10, g)
    return task_accuracy(model, x, y)


def test_plain_readout_recalls_a_symbol_through_filler():
    # docs/lm.md, "the smallest case": one symbol (of 4) at position 10 among filler,
    # named at the separator 20 tokens later (chance 1/4). The RMS-normalised read-out
    # (the language-model default) stays at chance on this; the plain read-out learns it,
    # but not on every seed: the answer leaves the block as binary spikes, so learning
    # climbs in plateaus (1, 2, 3, then 4 of the 4 symbols told apart), and when it leaves
    # a plateau depends on float rounding, which differs between CPUs (AVX2 vs AVX-512
    # kernels). Measured after 600 steps (docs/lm.md): seeds 0, 1, 2 reach 0.71-1.0 on
    # every kernel setting tried, seed 3 stays at chance. The property, with margin:
    # at least 2 of seeds 0, 1, 2 tell at least 3 of the 4 symbols apart (> 0.6; the next
    # plateau down is 0.5). A model that does not learn it fails: with the astrocyte off,
    # seeds 0 and 1 give 0.24 and 0.27.
    accs = []
    for seed in (0, 1, 2):
        accs.append(_recall_accuracy(seed))
        if sum(a > 0.6 for a in accs) >= 2:
            break                                   # the property holds; save the third run
    assert sum(a > 0.6 for a in accs) >= 2, accs

