"""The suite's one tolerance rule, for tests that compare forms to float rounding."""

from __future__ import annotations

import torch

# Relative tolerance per dtype for "equal to float rounding" comparisons.
RTOL = {torch.float64: 1e-10, torch.float32: 1e-5}


def assert_close(actual, expected, dtype=None, what="", rtol=None):
    """Compare with a relative tolerance scaled by the largest magnitude of ``expected``.

    ``max|a - e| <= rtol * max(1, max|e|)``: the error is measured against the size of
    the quantity, so elements near zero (where a relative error is meaningless) do
    not fail on rounding noise. ``rtol`` defaults to ``RTOL[dtype]`` (``dtype``
    defaults to ``expected``'s); ``rtol=0`` asks for exact equality.
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
