"""The ALIF neuron (LSNN's adaptive LIF): its step and loop against a slow obvious
reference written per neuron (outputs, states, gradients), streaming == sequence,
every option (resets, graded spikes, non-spiking twin, recurrence), and its errors."""

from __future__ import annotations

import math

import pytest
import torch

from astro_neuron.alif import ALIF
from astro_neuron.functional import alif as F_alif
from astro_neuron.functional.alif import ALIFSpec, ALIFState
from astro_neuron.functional.finite import NonFiniteError, validation


class _Spike(torch.autograd.Function):
    """Heaviside forward, the ATan(alpha=2) derivative backward, written out."""

    @staticmethod
    def forward(ctx, y):
        ctx.save_for_backward(y)
        return (y > 0).to(y.dtype)

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * 1.0 / (1 + (math.pi / 2 * 2.0 * y) ** 2)


def reference(x, alpha, rho, thr, beta, w_rec=None, reset="subtract", levels=1, spiking=True):
    """The ALIF equations one scalar at a time: ``x`` [T, B, N] -> (z, v, A, (v, b, z))."""
    T, B, N = x.shape
    v = [[x.new_zeros(()) for _ in range(N)] for _ in range(B)]
    b = [[x.new_zeros(()) for _ in range(N)] for _ in range(B)]
    z = [[x.new_zeros(()) for _ in range(N)] for _ in range(B)]
    zs, vs, As = [], [], []
    for t in range(T):
        zt, vt, At = [], [], []
        z_prev = [row[:] for row in z]
        for i in range(B):
            zr, vr, Ar = [], [], []
            for n in range(N):
                drive = x[t, i, n]
                if w_rec is not None:
                    for m in range(N):
                        drive = drive + w_rec[n, m] * z_prev[i][m]
                b[i][n] = rho[n] * b[i][n] + (1 - rho[n]) * z_prev[i][n]
                vv = alpha[n] * v[i][n] + drive
                A = thr[n] + beta[n] * b[i][n]
                if spiking:
                    s = sum(_Spike.apply(vv - l * A) for l in range(1, levels + 1))
                else:
                    s = sum(torch.atan(math.pi * (vv - l * A)) / math.pi + 0.5
                            for l in range(1, levels + 1))
                if reset == "subtract":
                    v[i][n] = vv - s * thr[n]
                elif reset == "zero":
                    v[i][n] = vv * (1 - torch.clamp(s, max=1))
                else:
                    v[i][n] = vv
                z[i][n] = s
                zr.append(s)
                vr.append(vv)
                Ar.append(A)
            zt.append(torch.stack(zr))
            vt.append(torch.stack(vr))
            At.append(torch.stack(Ar))
        zs.append(torch.stack(zt))
        vs.append(torch.stack(vt))
        As.append(torch.stack(At))
    st = tuple(torch.stack([torch.stack(r) for r in s]) for s in (v, b, z))
    return torch.stack(zs), torch.stack(vs), torch.stack(As), st


OPTIONS = [dict(), dict(reset="zero"), dict(reset="none"), dict(spike_levels=2),
           dict(spiking=False), dict(recurrent=True), dict(recurrent=True, reset="zero")]


@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_alif_equals_reference(opts):
    torch.manual_seed(0)
    T, B, N = 12, 2, 3
    layer = ALIF(N, tau_mem=torch.tensor([3.0, 5.0, 8.0]), tau_adapt=torch.tensor([4.0, 9.0, 20.0]),
                 threshold=torch.tensor([0.6, 0.8, 1.0]), beta_adapt=torch.tensor([0.5, 1.5, 3.0]),
                 **opts).double()
    x = (torch.rand(T, B, N, dtype=torch.float64) * 1.6).requires_grad_()
    z, v, A, st = layer.run(x)
    levels = opts.get("spike_levels", 1)
    assert z.max() <= levels and z.min() >= 0
    if opts.get("spiking", True):
        assert 0 < float(z.detach().mean()) < levels          # some spikes, not all: the test means something
    ref = reference(x, layer.alpha, layer.rho, layer.threshold, layer.beta_adapt, layer.w_rec,
                    opts.get("reset", "subtract"), levels, opts.get("spiking", True))
    for got, want in zip((z, v, A, *st), (*ref[:3], *ref[3])):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    # gradients of a loss of every output w.r.t. the input and every parameter
    w = [torch.randn_like(t) for t in (z, v, A)]
    params = [x] + [p for p in layer.parameters() if p.requires_grad]

    def grads(outs):
        loss = sum((o * wi).sum() for o, wi in zip(outs, w)) + outs[3][0].sum() + outs[3][1].sum()
        return torch.autograd.grad(loss, params)

    for g, gr in zip(grads((z, v, A, st)), grads(ref)):
        torch.testing.assert_close(g, gr, rtol=1e-10, atol=1e-12)


def test_adaptation_raises_threshold_and_silences():
    """A constant drive: LIF-like firing first, then the threshold climbs and the rate falls."""
    layer = ALIF(1, tau_mem=5.0, tau_adapt=100.0, beta_adapt=180.0, learn_tau=False)
    z, _, A, st = layer.run(torch.full((300, 1, 1), 0.5))
    early, late = float(z[:30].detach().mean()), float(z[-100:].detach().mean())
    assert early > 2 * late > 0
    assert float(A[-1].detach()) > 1.5 and float(st.b[0, 0].detach()) > 0


def test_step_streaming_equals_sequence():
    torch.manual_seed(1)
    layer = ALIF(5, recurrent=True, tau_adapt=10.0).double()
    x = torch.rand(9, 3, 5, dtype=torch.float64) * 2
    z, st = layer(x, return_state=True)
    state = None
    for t in range(9):
        s_t, state = layer.step(x[t], state)
        torch.testing.assert_close(s_t, z[t], rtol=0, atol=0)
    for a, b in zip(state, st):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # a run continued from a state equals the whole run
    _, st1 = layer(x[:4], return_state=True)
    z2, st2 = layer(x[4:], st1, return_state=True)
    torch.testing.assert_close(z2, z[4:], rtol=0, atol=0)
    torch.testing.assert_close(st2.b, st.b, rtol=0, atol=0)


def test_functional_equals_module_and_empty_sequence():
    layer = ALIF(4)
    x = torch.rand(6, 2, 4)
    out = F_alif.run(x, None, layer.alpha, layer.rho, layer.threshold, layer.beta_adapt,
                     layer.spec)
    torch.testing.assert_close(out[0], layer(x))
    z, v, A, st = layer.run(torch.zeros(0, 2, 4))
    assert z.shape == (0, 2, 4) and st.v.shape == (2, 4)


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("kwargs, match", [
    (dict(n_neurons=0), "n_neurons must be a positive integer"),
    (dict(n_neurons=4, tau_adapt=-1.0), "tau_adapt must be positive"),
    (dict(n_neurons=4, tau_mem=float("nan")), "tau_mem must be positive and finite"),
    (dict(n_neurons=4, threshold=0.0), "threshold must be positive"),
    (dict(n_neurons=4, beta_adapt=-0.1), "beta_adapt must be a finite number >= 0"),
    (dict(n_neurons=4, beta_adapt=[1.0, 2.0]), "beta_adapt must be"),
    (dict(n_neurons=4, tau_adapt=[1.0, 2.0]), r"tau_adapt must be a number or have shape \[4\]"),
    (dict(n_neurons=4, reset="soft"), "reset must be one of"),
    (dict(n_neurons=4, spike_levels=0), "spike_levels must be a positive integer"),
    (dict(n_neurons=4, dt=0.0), "dt must be a positive finite number"),
    (dict(n_neurons=4, recurrent=True, rec_scale=-1.0), "rec_scale must be a positive"),
])
def test_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ALIF(**kwargs)


def test_spec_shares_lif_fields_and_checks_but_keeps_its_reset():
    """ALIFSpec and LIFSpec are one base (NeuronSpec): same fields in the same order (a
    pickled spec of either loads field by field), same errors; only the default reset
    differs, and only LIF has the parallel form."""
    from dataclasses import astuple, fields

    from astro_neuron.functional.lif import LIFSpec

    assert [f.name for f in fields(ALIFSpec)] == [f.name for f in fields(LIFSpec)] == [
        "n_neurons", "reset", "spike_levels", "spiking", "detach_reset", "surrogate"]
    assert (ALIFSpec(4).reset, LIFSpec(4).reset) == ("subtract", "none")
    assert astuple(ALIFSpec(4, "zero", 3))[:5] == (4, "zero", 3, True, False)
    assert LIFSpec(4).parallel and not hasattr(ALIFSpec(4, reset="none"), "parallel")
    assert ALIFSpec(4, reset="none") != LIFSpec(4)
    for kwargs, err, match in ((dict(n_neurons=0), ValueError, "n_neurons must be a positive"),
                               (dict(n_neurons=4, reset="soft"), ValueError, "reset must be one of"),
                               (dict(n_neurons=4, spiking=1), TypeError, "spiking must be True or"),
                               (dict(n_neurons=4, detach_reset="no"), TypeError, "detach_reset")):
        for spec in (ALIFSpec, LIFSpec):
            with pytest.raises(err, match=match):
                spec(**kwargs)


def test_bad_kinds():
    with pytest.raises(TypeError, match="recurrent must be True or False"):
        ALIF(4, recurrent=1)
    with pytest.raises(TypeError, match="ALIF input must be a torch.Tensor"):
        ALIF(4)([[0.0] * 4])
    with pytest.raises(TypeError, match="floating-point"):
        ALIF(4)(torch.zeros(3, 2, 4, dtype=torch.long))
    with pytest.raises(TypeError, match=r"ALIFState\(v, b, z\)"):
        ALIF(4)(torch.zeros(3, 2, 4), torch.zeros(2, 4))


def test_bad_shapes():
    layer = ALIF(4)
    with pytest.raises(ValueError, match=r"ALIF input must be \[T, B, \.\.\., N\] with N=4, got shape \[3, 2, 5\]"):
        layer(torch.zeros(3, 2, 5))
    with pytest.raises(ValueError, match=r"ALIF input must be \[B, \.\.\., N\] with N=4"):
        layer.step(torch.zeros(2, 3))
    bad = ALIFState(torch.zeros(2, 4), torch.zeros(3, 4), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"state b must have shape \[2, 4\]"):
        layer(torch.zeros(3, 2, 4), bad)
    with pytest.raises(ValueError, match=r"state b must have shape \[2, 4\]"):
        layer.step(torch.zeros(2, 4), bad)
    spec = ALIFSpec(4)
    one = torch.ones(4)
    with pytest.raises(ValueError, match=r"recurrent weight must be \[N, N\] = \[4, 4\], got \[4, 3\]"):
        F_alif.alif_loop(torch.zeros(3, 2, 4), None, one, one, one, one, spec, torch.zeros(4, 3))


def test_nan_is_named():
    layer = ALIF(4)
    x = torch.zeros(6, 2, 4)
    x[3, 1, 2] = float("nan")
    with pytest.raises(NonFiniteError, match="ALIF input contains NaN or Inf from step 3 of 6"):
        layer(x)
    with pytest.raises(NonFiniteError, match="ALIF input"):
        layer.step(x[3])
    with torch.no_grad():
        layer.log_tau_adapt[1] = float("nan")
    with pytest.raises(NonFiniteError, match="ALIF adaptation decay rho"):
        layer(torch.zeros(6, 2, 4))
    with validation(check_finite=False):              # the switch turns the check off
        layer(torch.zeros(6, 2, 4))
    state = ALIFState(torch.zeros(2, 4), torch.full((2, 4), float("inf")), torch.zeros(2, 4))
    with pytest.raises(NonFiniteError, match=r"ALIF state b \(given\)"):
        ALIF(4)(torch.zeros(3, 2, 4), state)
