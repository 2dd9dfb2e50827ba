"""Fixtures of the neuromorphic tests: random float models (the trained demo network,
``trained_memory_net``, is in tests/conftest.py: the apps tests use it too)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import astro_neuron as an


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Small per-step tensor ops: one thread is fastest on a shared 2-core machine, and
    it is what Lava's forked workers need."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _make_model(seed: int) -> tuple[nn.Module, int]:
    """A random float model (1-3 layers, mixed kinds); returns (model, input levels)."""
    g = np.random.default_rng(seed)
    torch.manual_seed(seed)
    n_layers = 1 + seed % 3
    n_in = int(g.integers(6, 20))
    in_levels = 1 if seed % 4 else 3
    layers: list[nn.Module] = []
    width = n_in
    for i in range(n_layers):
        kind = ["amsu", "amsu", "lif", "stocklif", "amsu-off", "amsu-only"][(seed + i) % 6]
        A = int(g.choice([1, 2, 4]))
        dk = int(g.choice([2, 4, 8]))
        N = A * int(g.integers(2, 6))
        L = int(g.choice([1, 1, 2, 3]))
        reset = str(g.choice(["none", "subtract", "zero"]))
        if kind.startswith("amsu"):
            tau_astro = torch.tensor(np.exp(g.uniform(np.log(5), np.log(500), (A, dk))))
            m = an.AMSU(width, N, n_astrocytes=A, d_key=dk, tau_mem=float(g.uniform(1.5, 8)),
                        tau_astro=tau_astro,
                        threshold=float(g.uniform(0.3, 1.5)), reset=reset, spike_levels=L,
                        astrocyte=kind != "amsu-off", neuron_path=kind != "amsu-only",
                        astro_gain=float(g.uniform(-2, 2)))
            with torch.no_grad():
                m.weight.mul_(float(g.uniform(1, 3)))
                m.log_threshold.add_(torch.randn(N) * 0.2)
                m.astro_gain.add_(torch.randn(N) * 0.5)
            layers.append(m)
        else:
            lin = nn.Linear(width, N)
            with torch.no_grad():
                lin.weight.mul_(float(g.uniform(1, 3)))
            if kind == "stocklif":   # fits Lava's stock LIF: reset zero, binary, fixed tau/theta
                lif = an.LIF(N, tau_mem=float(g.uniform(1.5, 8)), threshold=float(g.uniform(0.2, 1)),
                             reset="zero", learn_tau=False, learn_threshold=False)
                L = 1
            else:
                lif = an.LIF(N, tau_mem=torch.tensor(g.uniform(1.5, 8, N)),
                             threshold=float(g.uniform(0.2, 1)), reset=reset, spike_levels=L)
            layers += [lin, lif]
        width = N
    return nn.Sequential(*layers), in_levels


def _spikes(seed: int, T: int, B: int, n_in: int, levels: int, rate: float = 0.3):
    g = np.random.default_rng(seed)
    x = (g.random((T, B, n_in)) < rate) * g.integers(1, levels + 1, (T, B, n_in))
    return torch.tensor(x, dtype=torch.float32)


@pytest.fixture(scope="session")
def random_model():
    """``random_model(seed)`` -> (model, calibration [T, B, n_in], test input)."""
    def make(seed: int, T: int = 120, B: int = 3):
        model, levels = _make_model(seed)
        n_in = next(p for p in model.parameters()).shape[1]
        return model, _spikes(seed + 1000, T, 8, n_in, levels), _spikes(seed + 2000, T, B, n_in,
                                                                          levels)
    return make
