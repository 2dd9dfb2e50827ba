"""Shared by the neuro plot tests and the neuro CLI tests (tests/apps): a short AM-SU
recording and a tiny trained MemoryNet checkpoint."""

from __future__ import annotations

import torch

import astro_neuron as an
from astro_neuron.io import atomic_torch_save
from astro_neuron.neuro import record
from astro_neuron.tasks import MemoryNet, RecallTask, train_memory_net


def small_recording():
    torch.manual_seed(0)
    layer = an.AMSU(4, 6, n_astrocytes=2, d_key=2)
    x = (torch.rand(40, 1, 4) < 0.4).float()
    return record(layer, x, info={"events": {"cue end": 10.0},
                                  "tokens": [chr(97 + i % 26) for i in range(40)]})


def tiny_memory_checkpoint(path):
    """A MemoryNet checkpoint (tiny task, 3 training steps) written to ``path``."""
    task = RecallTask(n_classes=2, channels_per_class=4, go_channels=4, cue_len=5, delay=20,
                      recall_len=5)
    torch.manual_seed(0)
    net = MemoryNet(task, n_neurons=16, n_astrocytes=2, d_key=4)
    train_memory_net(net, steps=3, batch_size=8, progress=False)
    atomic_torch_save(net.checkpoint(), path)
    return path
