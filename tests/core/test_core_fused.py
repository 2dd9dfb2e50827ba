"""The fused autograd nodes of the training path (issue 14) against the plain
formulations they replace: the spike function (``surrogate._Fire``) and the rotation
(``rotary._Rotate``)."""

from __future__ import annotations

import pytest
import torch

from astro_neuron import surrogate as sg
from astro_neuron.functional.rotary import rotary_angles, rotary_table, rotate
from astro_neuron.functional.surrogate import fire_levels

OURS = [sg.ATan(), sg.ATan(alpha=5.0), sg.Sigmoid(), sg.FastSigmoid(), sg.Triangle(width=0.3)]


def _plain_fire(y, thr, s, levels):
    out = s(y - thr)
    for level in range(2, levels + 1):
        out = out + s(y - level * thr)
    return out


def _inputs(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = (2 * torch.randn(9, 3, 6, generator=g, dtype=dtype)).requires_grad_()
    thr = (0.3 + torch.rand(6, generator=g, dtype=dtype)).requires_grad_()
    grad = torch.randn(9, 3, 6, generator=g, dtype=dtype)
    return y, thr, grad


@pytest.mark.parametrize("levels", [1, 3])
@pytest.mark.parametrize("s", OURS, ids=repr)
def test_fused_fire_equals_the_plain_sum_float64(s, levels):
    y, thr, grad = _inputs(torch.float64)
    out = fire_levels(y, thr, s, levels)
    ref = _plain_fire(y, thr, s, levels)
    assert torch.equal(out, ref)
    got = torch.autograd.grad(out, (y, thr), grad)
    want = torch.autograd.grad(ref, (y, thr), grad)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("s", OURS, ids=repr)
def test_fused_fire_float32_within_rounding(s):
    y, thr, grad = _inputs(torch.float32, seed=1)
    got = torch.autograd.grad(fire_levels(y, thr, s, 2), (y, thr), grad)
    want = torch.autograd.grad(_plain_fire(y, thr, s, 2), (y, thr), grad)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("levels", [1, 2])
@pytest.mark.parametrize("s", OURS, ids=repr)
def test_fused_fire_backward_is_the_gradient_of_the_primitive(s, levels):
    """gradcheck of the backward: it is the exact gradient of the smooth twin
    ``sum_l primitive(y - l theta)`` (differentiated by autograd, float64)."""
    y, thr, grad = _inputs(torch.float64, seed=2)
    got = torch.autograd.grad(fire_levels(y, thr, s, levels), (y, thr), grad)
    smooth = sum(s.primitive(y - lv * thr) for lv in range(1, levels + 1))
    want = torch.autograd.grad(smooth, (y, thr), grad)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_fused_fire_strict_comparison_and_double_backward():
    thr = torch.tensor([1.0, 0.5], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([[1.0, 0.5], [1.0 + 1e-12, 0.0]], dtype=torch.float64,
                     requires_grad=True)
    assert fire_levels(y, thr, sg.ATan()).tolist() == [[0.0, 0.0], [1.0, 0.0]]
    # create_graph: the backward falls back to differentiable operations
    (gy,) = torch.autograd.grad(fire_levels(y, thr, sg.ATan()).sum(), y, create_graph=True)
    (gy2,) = torch.autograd.grad(_plain_fire(y, thr, sg.ATan(), 1).sum(), y,
                                 create_graph=True)
    torch.testing.assert_close(gy, gy2)
    assert gy.requires_grad


def _plain_rotary(x, start, n_rot=None):
    T, d = x.shape[0], x.shape[-1]
    cos, sin = rotary_angles(torch.arange(start, start + T), d, 10000.0, n_rot)
    shape = (T,) + (1,) * (x.dim() - 2) + (d // 2,)
    cos, sin = cos.reshape(shape).to(x.dtype), sin.reshape(shape).to(x.dtype)
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


@pytest.mark.parametrize("n_rot", [None, 4])
def test_rotate_gradcheck_and_equals_the_plain_rotation(n_rot):
    g = torch.Generator().manual_seed(3)
    wide = torch.randn(7, 2, 3, 24, generator=g, dtype=torch.float64)
    x = wide[..., 8:16].requires_grad_()           # strided, as a projection slice
    cos, sin = rotary_table(5, x.shape, n_rot=n_rot, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: rotate(t, cos, sin), (x,))
    grad = torch.randn(7, 2, 3, 8, generator=g, dtype=torch.float64)
    out, ref = rotate(x, cos, sin), _plain_rotary(x, 5, n_rot)
    torch.testing.assert_close(out, ref, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(torch.autograd.grad(out, x, grad)[0],
                               torch.autograd.grad(ref, x, grad)[0], rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("membrane", ["torch", "numba"])
@pytest.mark.parametrize("T,c", [(37, 8), (64, 8), (5, 8), (1, 3)])
def test_out_of_place_leaky_scan_equals_the_loop_with_final_state_gradient(T, c, membrane):
    """The membrane scan writes its output (and, backwards, the input gradient) out of
    place; with a gradient on both the sequence and the final state, any remainder."""
    from astro_neuron.functional.scan import leaky_chunked, leaky_loop
    g = torch.Generator().manual_seed(T)
    x = torch.randn(T, 3, 5, generator=g, dtype=torch.float64).requires_grad_()
    dec = torch.rand(5, generator=g, dtype=torch.float64).requires_grad_()
    u0 = torch.randn(3, 5, generator=g, dtype=torch.float64).requires_grad_()
    gs = torch.randn(T, 3, 5, generator=g, dtype=torch.float64)
    gT = torch.randn(3, 5, generator=g, dtype=torch.float64)
    outs = []
    from astro_neuron.functional.compiled import cpu_kernels
    for f in (lambda: leaky_chunked(x, dec, u0, c), lambda: leaky_loop(x, dec, u0)):
        with cpu_kernels(membrane):
            y, uT = f()
            outs.append((y, uT, *torch.autograd.grad((y, uT), (x, dec, u0), (gs, gT))))
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
