"""The chunked linear recurrences (functional/scan.py) against their step loops.

Outputs, final states and the gradients of every input (sequence inputs, decays and
initial state), float32 and float64, T from 1 to past 1000, chunk sizes that divide T
and that do not, batch 1 and more than 1, decays near 0 and near 1; the hand-written
backward of the leaky scan also against finite differences.
"""

from __future__ import annotations

import pytest
import torch

from astro_neuron.functional import astro_chunked, astro_loop, leaky_chunked, leaky_loop
from astro_neuron.functional.compiled import cpu_kernels
from tolerance import RTOL, assert_close

# both CPU kernel settings (functional/compiled.py): the torch forms (CUDA's, and any
# dtype's) and the compiled kernels the CPU runs by default (the membrane scan; the
# astrocyte scan's decay-gradient sums)
MEMBRANE = pytest.mark.parametrize("membrane", ["torch", "numba"])

DTYPES = pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
CASES = [  # (T, chunk, batch)
    (1, 64, 1),
    (7, 3, 2),
    (7, 64, 1),
    (64, 16, 3),
    (64, 24, 1),
    (1003, 50, 2),
    (1024, 64, 1),
]


def _grads(fn, inputs, weights):
    """Outputs of ``fn(*inputs)`` and the gradients of a random weighting of them."""
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    outs = fn(*leaves)
    sum(((o * w).sum() for o, w in zip(outs, weights))).backward()
    return [o.detach() for o in outs], [t.grad for t in leaves]


def _compare(ref, fast, inputs, weights, dtype, names, rtol, rtol_grad=None, where=None):
    """``rtol_grad``: optional {input name: tolerance} for single gradients;
    ``where``: optional {input name: mask of the gradient's elements compared}."""
    outs_r, grads_r = _grads(ref, inputs, weights)
    outs_f, grads_f = _grads(fast, inputs, weights)
    for name, a, e in zip(("sequence", "final state"), outs_f, outs_r):
        assert_close(a, e, dtype, name, rtol)
    for name, a, e in zip(names, grads_f, grads_r):
        if where and name in where:
            a, e = a[where[name]], e[where[name]]
        assert_close(a, e, dtype, f"d/d{name}", (rtol_grad or {}).get(name, rtol))


def _decays(shape, g, mode, dtype):
    d = torch.rand(shape, generator=g) * 0.9 + 0.05
    flat = d.view(-1)
    if mode == "near0":
        flat[0] = 1e-6
    elif mode == "near1":
        flat[0] = 1 - 1e-6
    elif mode == "exact0":
        flat[0] = 0.0
    elif mode == "exact1":
        flat[0] = 1.0
    return d.to(dtype)


@MEMBRANE
@DTYPES
@pytest.mark.parametrize("T,chunk,B", CASES)
def test_leaky_chunked_equals_loop(dtype, T, chunk, B, membrane):
    g = torch.Generator().manual_seed(T * 7 + chunk + B)
    N = 5
    x = torch.randn(T, B, N, generator=g).to(dtype)
    decay = _decays((N,), g, "none", dtype)
    u0 = torch.randn(B, N, generator=g).to(dtype)
    w = [torch.randn(T, B, N, generator=g).to(dtype), torch.randn(B, N, generator=g).to(dtype)]
    rtol = RTOL[dtype] * (10 if T < 1000 else 100)
    with cpu_kernels(membrane):
        _compare(leaky_loop, lambda x, d, u: leaky_chunked(x, d, u, chunk_size=chunk),
                 [x, decay, u0], w, dtype, ("x", "decay", "u0"), rtol)


@MEMBRANE
@DTYPES
@pytest.mark.parametrize("T,chunk,B", CASES)
def test_astro_chunked_equals_loop(dtype, T, chunk, B, membrane):
    g = torch.Generator().manual_seed(T * 5 + chunk + B)
    A, dk, dv = 2, 3, 4
    q, k = (torch.randn(T, B, A, dk, generator=g).to(dtype) for _ in range(2))
    v = torch.randn(T, B, A, dv, generator=g).to(dtype)
    gamma = _decays((A, dk), g, "none", dtype)
    H0 = torch.randn(B, A, dk, dv, generator=g).to(dtype)
    w = [torch.randn(T, B, A, dv, generator=g).to(dtype),
         torch.randn(B, A, dk, dv, generator=g).to(dtype)]
    rtol = RTOL[dtype] * (10 if T < 1000 else 100)
    with cpu_kernels(membrane):        # the decay gradient's sums: torch or compiled
        _compare(astro_loop,
                 lambda q, k, v, d, H: astro_chunked(q, k, v, d, H, chunk_size=chunk),
                 [q, k, v, gamma, H0], w, dtype, ("q", "k", "v", "gamma", "H0"), rtol)


@DTYPES
@pytest.mark.parametrize("mode", ["near0", "near1", "exact0", "exact1"])
def test_extreme_decays_with_gradients(dtype, mode):
    """Decays of 0, 1e-6, 1 - 1e-6 and 1: values and gradients equal the loop's."""
    g = torch.Generator().manual_seed(11)
    T, B, N, A, dk, dv = 150, 2, 4, 2, 3, 2
    rtol = RTOL[dtype] * 10
    x = torch.randn(T, B, N, generator=g).to(dtype)
    beta = _decays((N,), g, mode, dtype)
    u0 = torch.randn(B, N, generator=g).to(dtype)
    w = [torch.randn(T, B, N, generator=g).to(dtype), torch.randn(B, N, generator=g).to(dtype)]
    for membrane in ("torch", "numba"):
        with cpu_kernels(membrane):
            _compare(leaky_loop, lambda x, d, u: leaky_chunked(x, d, u, chunk_size=64),
                     [x, beta, u0], w, dtype, ("x", "beta", "u0"), rtol)
    q, k = (torch.randn(T, B, A, dk, generator=g).to(dtype) for _ in range(2))
    v = torch.randn(T, B, A, dv, generator=g).to(dtype)
    gamma = _decays((A, dk), g, mode, dtype)
    H0 = torch.randn(B, A, dk, dv, generator=g).to(dtype)
    w = [torch.randn(T, B, A, dv, generator=g).to(dtype),
         torch.randn(B, A, dk, dv, generator=g).to(dtype)]
    # the chunked astrocyte differentiates through log(gamma): its decay gradient is
    # d/dlog(gamma) / gamma, so at gamma = 1e-6 rounding is amplified up to 1/gamma-fold
    # in the one channel that holds it (measured: 1e-9 relative in float64)
    loose = {"gamma": RTOL[dtype] * 1e3} if mode == "near0" else None
    # a decay of exactly 0 gets a zero gradient there (scan._log_decay); others compared
    where = {"gamma": gamma != 0}
    for membrane in ("torch", "numba"):
        with cpu_kernels(membrane):
            _compare(astro_loop,
                     lambda q, k, v, d, H: astro_chunked(q, k, v, d, H, chunk_size=64),
                     [q, k, v, gamma, H0], w, dtype, ("q", "k", "v", "gamma", "H0"), rtol,
                     loose, where)


@MEMBRANE
def test_leaky_long_sequence_gradients_finite_and_match_loop(membrane):
    """T = 16384, decay 0.9999 (float32): values and gradients finite and equal."""
    g = torch.Generator().manual_seed(5)
    T, B, N = 16384, 1, 8
    x = torch.randn(T, B, N, generator=g)
    beta = torch.full((N,), 0.9999)
    w = [torch.randn(T, B, N, generator=g), torch.randn(B, N, generator=g)]
    # float32 summation over 16384 steps: rounding grows like sqrt(T) * eps
    with cpu_kernels(membrane):
        _compare(leaky_loop, lambda x, d, u: leaky_chunked(x, d, u, chunk_size=64),
                 [x, beta, torch.zeros(B, N)], w, torch.float32, ("x", "beta", "u0"), 3e-5)


@MEMBRANE
@pytest.mark.parametrize("T,chunk", [(7, 3), (12, 4), (5, 8)])
def test_leaky_backward_gradcheck(T, chunk, membrane):
    g = torch.Generator().manual_seed(T)
    x = torch.randn(T, 2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    beta = (torch.rand(3, generator=g, dtype=torch.float64) * 0.8 + 0.1).requires_grad_(True)
    u0 = torch.randn(2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    with cpu_kernels(membrane):
        assert torch.autograd.gradcheck(
            lambda x, b, u: leaky_chunked(x, b, u, chunk_size=chunk), (x, beta, u0))


@MEMBRANE
def test_leaky_decay_broadcasts_and_u0_defaults_to_zero(membrane):
    """A per-(batch, neuron) decay and no initial state, as the LIF layers use them."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(40, 3, 4, generator=g, dtype=torch.float64)
    beta = torch.rand(3, 4, generator=g, dtype=torch.float64)
    u_ref, uT_ref = leaky_loop(x, beta)
    with cpu_kernels(membrane):
        u, uT = leaky_chunked(x, beta, chunk_size=16)
    assert_close(u, u_ref, torch.float64, "u")
    assert_close(uT, uT_ref, torch.float64, "u_T")
