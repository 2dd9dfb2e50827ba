"""The MQAR task of the field's protocol is learnable with its training loop: a small
Transformer beats chance by a wide margin in a few hundred steps (docs/memory.md,
"The tests"). A generator whose answers did not follow from the sequence (a key
paired with the wrong value, a target off its query), or a loop that did not train,
leaves the loss at ln 64 and the accuracy at 1/64."""

from __future__ import annotations

import math

import pytest
import torch

from astro_neuron.lm import AMSNetConfig, build_model
from astro_neuron.lm.tasks import (
    TASK_MODELS, copy_gap_batch, mqar_batch, task_accuracy, train_task,
)

T, PAIRS, EXAMPLES, BATCH, LR = 32, 2, 6400, 32, 3e-3


def _run(seed: int) -> tuple[float, float]:
    """Train a 2-layer d=32 Transformer on 6,400 MQAR sequences (T=32, 2 pairs, random
    noise); return (held-out accuracy, mean loss of the last 20 steps)."""
    torch.manual_seed(seed)
    model = build_model(AMSNetConfig(arch="transformer", block_size=T, n_layer=2, n_head=2,
                                     d_model=32))
    losses = train_task(model, "mqar", T, EXAMPLES, BATCH, lr=LR, seed=seed, progress=False,
                        n_pairs=PAIRS)
    x, y = mqar_batch(256, T, PAIRS, generator=torch.Generator().manual_seed(1000 + seed))
    return task_accuracy(model, x, y), sum(losses[-20:]) / 20


@pytest.mark.slow
def test_transformer_learns_mqar_well_above_chance():
    # Measured (docs/memory.md, "The tests"): seeds 0-3 reach 15.2%, 11.3%, 17.4%, 11.1%
    # accuracy (chance 1/64 = 1.6%) and a final query loss of 3.19, 3.18, 3.13, 3.37
    # (20-30 s a seed on the loaded 2-core machine, ~4 s quiet). Asserted with margin on two seeds:
    # accuracy above 3x chance (4.7%; the lowest measured is 2.4 times that) and the
    # loss 0.5 below the uniform guess over the values (ln 64 = 4.16, so < 3.66).
    for seed in (0, 1):
        acc, loss = _run(seed)
        assert acc > 3 / 64, (seed, acc)
        assert loss < math.log(64) - 0.5, (seed, loss)


def _copy_probe(seed: int, **overrides) -> float:
    """A 2-layer d=64 AM-SNet with non-negative sensing (``TASK_MODELS["AM-SNet
    relu"]``, ``overrides`` on top) trained on 6,400 copy-probe sequences (T=32, gap 6,
    random noise, batch 16, lr 3e-3); held-out accuracy on 500 sequences."""
    torch.manual_seed(seed)
    cfg = AMSNetConfig(block_size=32, n_layer=2, n_head=2, d_model=64,
                       **{**TASK_MODELS["AM-SNet relu"], **overrides})
    model = build_model(cfg)
    train_task(model, "gap", 32, 6400, 16, lr=3e-3, seed=seed, progress=False, gap=6)
    x, y = copy_gap_batch(500, 32, gap=6, generator=torch.Generator().manual_seed(10_000 + seed))
    return task_accuracy(model, x, y)


@pytest.mark.slow
def test_amsnet_with_relu_sensing_learns_the_copy_probe(one_thread):
    # docs/memory.md, "Non-negative sensing": seeds 0-5 all reach 100% in 400 steps
    # (10-17 s a seed on the loaded 2-core machine; chance 1/64 = 1.6%), where the
    # paper's defaults stay at 1.0% and 1.4% (seeds 0, 1); two threads give 100% too.
    # Asserted with margin on two seeds:
    # accuracy above 50%.
    for seed in (0, 1):
        acc = _copy_probe(seed)
        assert acc > 0.5, (seed, acc)
