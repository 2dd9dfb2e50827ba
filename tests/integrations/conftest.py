"""Integration tests run torch on one thread.

Their tensors are tiny; on a loaded 2-core machine torch's second OpenMP thread
made each small matmul wait for a scheduler slice (measured: 20 calls of a
[32, 20] x [20, 128] matmul took 0.65 s on 2 threads, 0.0004 s on 1).
"""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)
