"""Shared test helpers: the one tolerance rule of the suite, and fixtures."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
# One torch/OpenMP thread for the whole suite (and, through the environment, for the
# example scripts it runs). Its tensors are small: on a loaded 2-core machine a second
# OpenMP thread made small ops wait for a scheduler slice (20 calls of a
# [32, 20] x [20, 128] matmul: 0.65 s on 2 threads, 0.0004 s on 1).
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

# Relative tolerance per dtype for "equal to float rounding" comparisons.
RTOL = {torch.float64: 1e-10, torch.float32: 1e-5}


def assert_close(actual, expected, dtype=None, rtol=None, what=""):
    """Compare with a relative tolerance scaled by the largest magnitude of ``expected``.

    ``max|a - e| <= rtol * max(1, max|e|)``: the error is measured against the size of
    the quantity, so elements near zero (where a relative error is meaningless) do
    not fail on rounding noise.
    """
    a = torch.as_tensor(actual).detach().to(torch.float64)
    e = torch.as_tensor(expected).detach().to(torch.float64)
    assert a.shape == e.shape, f"{what}: shape {tuple(a.shape)} != {tuple(e.shape)}"
    assert torch.isfinite(a).all(), f"{what}: non-finite values"
    if rtol is None:
        rtol = RTOL[dtype or torch.as_tensor(expected).dtype]
    scale = max(1.0, float(e.abs().max())) if e.numel() else 1.0
    err = float((a - e).abs().max()) if a.numel() else 0.0
    assert err <= rtol * scale, f"{what}: max abs err {err:.3g} > {rtol:.1g} * {scale:.3g}"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
