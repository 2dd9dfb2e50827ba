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


def _recall_accuracy(seed: int, steps: int = 600, **opts) -> float:
    """docs/lm.md, "the smallest case": train the plain read-out (seed = model init and
    batches; ``opts``: more model options) and return its accuracy on 256 fresh
    sequences."""
    torch.manual_seed(seed)
    model = build_model(AMSNetConfig(n_layer=1, n_head=2, d_model=32, block_size=32,
                                     **TASK_MODELS["AM-SNet plain read-out"], **opts))
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


def test_astrocyte_readout_recalls_a_symbol_through_filler():
    # docs/lm.md, "the smallest case": one symbol (of 4) at position 10 among filler,
    # named at the separator 20 tokens later (chance 1/4), by the plain astrocyte
    # read-out as the only path (neuron_path=False). The RMS-normalised read-out (the
    # language-model default) stays at chance on this. Whether one run learns it is
    # chaotic: the answer leaves the block as binary spikes, learning climbs in plateaus,
    # and a run either leaves chance early or stays there for good, decided by float
    # rounding (which differs between CPUs and kernels: docs/lm.md has the runs). Which
    # seeds learn moves with the rounding; the fraction did not: 5 of seeds 0-7 above
    # 60% after 600 steps in each of three settings (AVX-512 and AVX2 kernels, the
    # channel mixing's spikes fused or not). The property, with margin: at least 2 of
    # seeds 0-7 tell at least 3 of the 4 symbols apart (> 0.6; the next plateau down is
    # 0.5), stopping at the second. A model that does not learn it fails: with the
    # astrocyte off, seeds 0 and 1 stay at chance (0.24, 0.27).
    accs = []
    for seed in range(8):
        accs.append(_recall_accuracy(seed, neuron_path=False))
        if sum(a > 0.6 for a in accs) >= 2:
            break                                   # the property holds; save the rest
    assert sum(a > 0.6 for a in accs) >= 2, accs
