"""Surrogates: exact strict Heaviside forward, backward = derivative of the primitive."""

from __future__ import annotations

import pytest
import torch

from astro_neuron import surrogate as sg

OURS = [sg.ATan(), sg.ATan(alpha=5.0), sg.Sigmoid(), sg.FastSigmoid(), sg.Triangle(),
        sg.Triangle(width=0.3)]


class _Smooth(torch.autograd.Function):
    """The primitive with the surrogate's *manual* derivative as backward."""

    @staticmethod
    def forward(ctx, x, s):
        ctx.save_for_backward(x)
        ctx.s = s
        return s.primitive(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * ctx.s.derivative(x), None


@pytest.mark.parametrize("s", OURS, ids=repr)
def test_forward_is_strict_heaviside(s):
    x = torch.tensor([-1.0, -1e-30, 0.0, 1e-30, 2.0])
    assert s(x).tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]


@pytest.mark.parametrize("s", OURS, ids=repr)
def test_manual_backward_is_derivative_of_primitive_gradcheck(s):
    # random points avoid the (measure-zero) kinks of the triangle
    x = (torch.rand(64, dtype=torch.float64) * 4 - 2).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: _Smooth.apply(z, s), (x,), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("s", OURS, ids=repr)
def test_spike_backward_equals_autograd_of_primitive(s):
    x = (torch.randn(200, dtype=torch.float64) * 2).requires_grad_(True)
    (g_spike,) = torch.autograd.grad(s(x).sum(), x)
    x2 = x.detach().clone().requires_grad_(True)
    (g_prim,) = torch.autograd.grad(s.primitive(x2).sum(), x2)
    torch.testing.assert_close(g_spike, g_prim, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("s", OURS, ids=repr)
def test_primitive_is_a_normalised_step(s):
    # derivative == primitive' is checked by gradcheck; here: 0 -> 1, monotone, 1/2 at 0
    x = torch.linspace(-2000, 2000, 400001, dtype=torch.float64)
    p = s.primitive(x)
    assert p[0] < 1e-3 and p[-1] > 1 - 1e-3
    assert (p.diff() >= -1e-15).all()
    assert abs(float(s.primitive(torch.zeros((), dtype=torch.float64))) - 0.5) < 1e-12
    assert (s.derivative(x) >= 0).all()


def test_spikingjelly_and_snntorch_surrogates_are_accepted_with_strict_forward():
    sj = pytest.importorskip("spikingjelly.activation_based.surrogate")
    snn = pytest.importorskip("snntorch.surrogate")
    x = torch.tensor([-1.0, 0.0, 0.5], requires_grad=True)
    for foreign in (sj.ATan(alpha=2.0), snn.atan(alpha=2.0)):
        f = sg.as_surrogate(foreign)
        y = f(x)
        assert y.tolist() == [0.0, 0.0, 1.0]  # SpikingJelly alone would give 1 at x == 0
        (g,) = torch.autograd.grad(y.sum(), x)
        xr = x.detach().clone().requires_grad_(True)
        (g_ref,) = torch.autograd.grad(sg.ATan(2.0)(xr).sum(), xr)
        torch.testing.assert_close(g, g_ref)


def test_bad_surrogates_are_clear_errors():
    with pytest.raises(ValueError, match="alpha"):
        sg.ATan(alpha=-1)
    with pytest.raises(TypeError, match="instance"):
        sg.as_surrogate(sg.ATan)
    with pytest.raises(TypeError, match="callable"):
        sg.as_surrogate(3)
    bad = sg.as_surrogate(lambda x: x.sum())
    with pytest.raises(TypeError, match="same shape"):
        bad(torch.zeros(3))
