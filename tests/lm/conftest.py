"""Fixtures of the language-model tests."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: tiny ops on a shared 2-core machine are far faster without
    OpenMP's spin-waiting, and results do not depend on the thread count."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
