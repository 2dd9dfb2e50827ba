"""Memory-task generators and task accuracy (the demo stage: tests/apps/test_lm_demo.py)."""

from __future__ import annotations

import pytest
import torch

from astro_neuron.lm import AMSNetConfig, build_model
from astro_neuron.lm.tasks import (
    MARK, SEP, mqar_batch, selective_copy_batch, task_accuracy, train_task,
)


def test_mqar_answers_are_the_paired_values():
    g = torch.Generator().manual_seed(0)
    idx, tgt = mqar_batch(16, 96, n_pairs=6, generator=g)
    assert idx.shape == tgt.shape == (16, 96)
    for b in range(16):
        pairs = dict(zip(idx[b, 0:12:2].tolist(), idx[b, 1:12:2].tolist()))
        assert len(pairs) == 6                                   # distinct keys
        ask = (tgt[b] >= 0).nonzero().flatten().tolist()
        assert len(ask) == 6 and all(p >= 12 for p in ask)
        for p in ask:                                            # the key, alone
            assert tgt[b, p] == pairs[int(idx[b, p])]
    with pytest.raises(ValueError, match="too short"):
        mqar_batch(1, 10, n_pairs=6)


def test_selective_copy_answers_are_the_data_in_order():
    g = torch.Generator().manual_seed(0)
    idx, tgt = selective_copy_batch(8, 80, n_tokens=5, noise="constant", generator=g)
    for b in range(8):
        region = 80 - 5 - 1
        data = idx[b, :region][idx[b, :region] != 0].tolist()
        assert len(data) == 5 and idx[b, region] == SEP
        assert tgt[b, region:region + 5].tolist() == data
        assert (idx[b, region + 1:] == MARK).all()                # no data after SEP
        assert (tgt[b, :region] == -1).all() and tgt[b, -1] == -1


def test_task_training_beats_chance_on_easy_copy():
    torch.manual_seed(0)
    model = build_model(AMSNetConfig(arch="transformer", n_layer=1, n_head=2, d_model=32,
                                     block_size=32))
    g = torch.Generator().manual_seed(1)
    x, y = selective_copy_batch(64, 32, n_tokens=1, n_symbols=4, generator=g)
    before = task_accuracy(model, x, y)
    # 240 steps of 32 sequences at lr 3e-3 (Zoology's schedule: wd 0.1, cosine to 0):
    # 1.0 on seeds 0-5, 3-7 s each; at 120 steps and lr 1e-2 it gave 0.20-1.0
    train_task(model, "copy", 32, examples=7680, batch_size=32, lr=3e-3, progress=False,
               n_tokens=1, n_symbols=4)
    after = task_accuracy(model, x, y)
    assert after > max(before, 0.25) + 0.1, (before, after)     # chance is 1/4
    with pytest.raises(ValueError, match="task must be"):
        train_task(model, "sort", 32, 1)


def test_train_task_mixes_shorter_lengths_in_turn():
    model = build_model(AMSNetConfig(arch="transformer", n_layer=1, n_head=1, d_model=8,
                                     block_size=32))
    seen = []
    forward = model.forward
    model.forward = lambda x, y=None: (seen.append(x.shape[1]), forward(x, y))[1]
    losses = train_task(model, "mqar", 32, examples=5 * 4, batch_size=4, progress=False,
                        mix_lengths=(16, 24), n_pairs=2)
    assert seen == [32, 16, 24, 32, 16] and len(losses) == 5
    seen.clear()
    with pytest.raises(ValueError, match="mix_lengths"):
        train_task(model, "mqar", 32, 8, 4, mix_lengths=(64,), n_pairs=2)
    with pytest.raises(ValueError, match="too short"):         # 4 pairs need more than 8
        train_task(model, "mqar", 32, 8, 4, mix_lengths=(8,), n_pairs=4)
    assert seen == []                                          # refused before training
