"""Suite-wide set-up and fixtures (the tolerance rule is tests/helpers/tolerance.py)."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
# One torch/OpenMP thread for the whole suite (and, through the environment, for the
# example scripts it runs). Its tensors are small: on a loaded 2-core machine a second
# OpenMP thread made small ops wait for a scheduler slice (20 calls of a
# [32, 20] x [20, 128] matmul: 0.65 s on 2 threads, 0.0004 s on 1).
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)
# A private torch.compile (Inductor) cache per test session: with several checkouts
# compiling the decode step at once on one machine, a shared /tmp/torchinductor_$USER
# once served a kernel that failed its bounds check (seen 2026-12-03, not reproducible
# alone). Set TORCHINDUCTOR_CACHE_DIR yourself to keep a cache between runs.
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="an-inductor-"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """One torch thread for a test, restored after it: for tests that call code which
    sets the thread count itself (the benchmarks, the CLI), so a test's setting does
    not leak into the next. Tiny ops on a shared 2-core machine are also far faster
    without OpenMP's spin-waiting, and results do not depend on the thread count."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def trained_memory_net(tmp_path_factory):
    """A MemoryNet trained as the demo does (fewer steps): (net, checkpoint path)."""
    from astro_neuron.tasks import MemoryNet, train_memory_net

    torch.manual_seed(0)
    net = MemoryNet()
    train_memory_net(net, steps=60, batch_size=32, progress=False)
    path = tmp_path_factory.mktemp("memnet") / "memory_amsu.safetensors"
    return net, net.save(path)
