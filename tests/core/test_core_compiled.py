"""The compiled CPU kernels (functional/compiled.py): what they add to the forms tested
in test_core_scan.py (there both settings run against the loops).

The membrane scan's forward is the step's arithmetic in the step's order, so it equals
the loop bit for bit; torch's thread count changes nothing; the astrocyte scan's
decay-gradient sums equal their float64 torch forms; the backend switch picks the kernels
only where they can run and says so where they cannot.
"""

from __future__ import annotations

import pytest
import torch

from astro_neuron.functional import compiled
from astro_neuron.functional.lif import LIFSpec, lif_chunked, lif_loop
from astro_neuron.functional.scan import leaky_chunked, leaky_loop
from astro_neuron.functional.compiled import (
    cpu_kernels, get_cpu_kernels, set_cpu_kernels, use_compiled,
)


def _inputs(dtype, T=300, shape=(3, 7), seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, *shape, generator=g, dtype=torch.float64).to(dtype)
    d = (torch.rand(shape[-1], generator=g, dtype=torch.float64) * 0.9 + 0.05).to(dtype)
    u0 = torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)
    return x, d, u0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_forward_equals_the_loop_bit_for_bit(dtype):
    """``decay * u + x`` in the step's order: the same rounding as the loop's."""
    x, d, u0 = _inputs(dtype)
    with cpu_kernels("numba"):
        y, yT = leaky_chunked(x, d, u0)
    y_ref, yT_ref = leaky_loop(x, d, u0)
    assert torch.equal(y, y_ref) and torch.equal(yT, yT_ref)


@pytest.mark.parametrize("grads", ["sequence", "final", "both"])
def test_gradients_of_every_input_from_either_output(grads):
    """The sequence's gradient, the final state's, or both; x, decay and u0 against the
    loop (x and u0 to rounding, the decay's float64-accumulated sum to 1e-12)."""
    x, d, u0 = _inputs(torch.float64, T=57, seed=1)
    g = torch.Generator().manual_seed(2)
    gs, gT = torch.randn(x.shape, generator=g, dtype=x.dtype), torch.randn(u0.shape, generator=g,
                                                                           dtype=x.dtype)
    res = []
    for form in (leaky_loop, leaky_chunked):
        leaves = [t.clone().requires_grad_() for t in (x, d, u0)]
        with cpu_kernels("numba"):
            y, yT = form(*leaves)
        outs, w = {"sequence": ([y], [gs]), "final": ([yT], [gT]),
                   "both": ([y, yT], [gs, gT])}[grads]
        res.append(torch.autograd.grad(outs, leaves, w))
    for name, a, b in zip(("x", "decay", "u0"), *res):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=name)


def test_a_strided_input_with_a_decay_and_state_that_need_no_gradient():
    """A strided input (a slice of a wider tensor), a decay per (batch, neuron) and an
    initial state, neither needing a gradient: values and the input's gradient equal the
    loop's."""
    g = torch.Generator().manual_seed(3)
    wide = torch.randn(40, 2, 12, generator=g, dtype=torch.float64)
    x = wide[..., 2:7].requires_grad_()
    d = torch.rand(2, 5, generator=g, dtype=torch.float64)
    u0 = torch.randn(2, 5, generator=g, dtype=torch.float64)
    with cpu_kernels("numba"):
        y, _ = leaky_chunked(x, d, u0)
    (gx,) = torch.autograd.grad(y.sum(), (x,))
    y_ref, _ = leaky_loop(x, d, u0)
    (gx_ref,) = torch.autograd.grad(y_ref.sum(), (x,))
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-12, atol=1e-12)


def test_result_does_not_depend_on_torch_threads():
    x, d, u0 = _inputs(torch.float32, T=64, shape=(4, 33), seed=4)
    gs = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
    res = []
    before = torch.get_num_threads()
    for threads in (1, 2):
        torch.set_num_threads(threads)
        try:
            leaves = [t.clone().requires_grad_() for t in (x, d, u0)]
            with cpu_kernels("numba"):
                y, _ = leaky_chunked(*leaves)
            res.append((y, *torch.autograd.grad(y, leaves, gs)))
        finally:
            torch.set_num_threads(before)
    for a, b in zip(*res):
        assert torch.equal(a, b)


def test_lif_layer_spikes_equal_the_loop_with_either_scan():
    """The language model's channel mixing: spikes and membrane of the chunked LIF (both
    scans) equal the loop's."""
    spec = LIFSpec(6)
    g = torch.Generator().manual_seed(6)
    x = torch.randn(80, 2, 6, generator=g)
    beta = torch.rand(6, generator=g) * 0.5 + 0.4
    thr = torch.full((6,), 0.5)
    s_ref, u_ref, _ = lif_loop(x, None, beta, thr, spec)
    for backend in ("torch", "numba"):
        with cpu_kernels(backend):
            s, u, _ = lif_chunked(x, None, beta, thr, spec)
        torch.testing.assert_close(u, u_ref, rtol=1e-5, atol=1e-5)
        assert torch.equal(s, s_ref) or backend == "torch"   # numba: same bits, same spikes


def test_backend_switch_picks_where_it_can_run_and_refuses_clearly(monkeypatch):
    monkeypatch.setattr(compiled._SWITCH, "value", "auto")   # whatever the environment says
    x32, x16 = torch.zeros(3, 2), torch.zeros(3, 2, dtype=torch.bfloat16)
    assert get_cpu_kernels() == "auto"
    assert use_compiled(x32) and not use_compiled(x16)          # auto: CPU f32/f64 only
    with cpu_kernels("torch"):
        assert get_cpu_kernels() == "torch" and not use_compiled(x32)
    assert get_cpu_kernels() == "auto"                     # restored
    with cpu_kernels("numba"):
        assert use_compiled(x32)
        with pytest.raises(ValueError, match="float32 or float64.*bfloat16"):
            use_compiled(x16)
    with pytest.raises(ValueError, match="cpu kernels must be one of"):
        set_cpu_kernels("gpu")
    # bfloat16 runs the torch form under auto (equal to the loop to bfloat16 rounding)
    x, d, u0 = (t.to(torch.bfloat16) for t in _inputs(torch.float32, T=20))
    y, _ = leaky_chunked(x, d, u0)
    y_ref, _ = leaky_loop(x.double(), d.double(), u0.double())
    torch.testing.assert_close(y.double(), y_ref, rtol=0.05, atol=0.05)


def test_environment_variable_sets_the_start(monkeypatch):
    monkeypatch.setenv("ASTRO_NEURON_CPU_KERNELS", " Torch ")
    assert compiled._SWITCH.initial() == "torch"
    monkeypatch.setenv("ASTRO_NEURON_CPU_KERNELS", "")
    assert compiled._SWITCH.initial() == "auto"
    monkeypatch.setenv("ASTRO_NEURON_CPU_KERNELS", "fast")
    with pytest.raises(ValueError, match="ASTRO_NEURON_CPU_KERNELS must be one of"):
        compiled._SWITCH.initial()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_decay_gradient_sums_equal_their_torch_forms(dtype):
    """The astrocyte scan's decay-gradient sums against the float64 sums of the float64
    products (the compiled sums form the products in float64, so they match to 1e-12
    even for float32 operands); a non-contiguous operand is taken as well."""
    g = torch.Generator().manual_seed(7)
    a, b, c, d = (torch.randn(3, 2, 4, 5, 6, generator=g, dtype=torch.float64).to(dtype)
                  for _ in range(4))
    a = torch.randn(3, 2, 4, 6, 5, generator=g, dtype=torch.float64).to(dtype).transpose(-1, -2)
    f64 = [t.double() for t in (a, b, c, d)]
    ref = (f64[0] * f64[1] - f64[2] * f64[3]).sum((0, 2))
    out = compiled.chunk_decay_sums(a, b, c, d)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(compiled.state_decay_sums(a, b), (f64[0] * f64[1]).sum((0, 2, 4)),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_a_decay_that_would_widen_the_state_is_refused_by_both_forms(backend):
    """A decay of shape (2, N) against a state of shape (N,): neither form can keep the
    state's shape, so both refuse it with the same clear error."""
    x = torch.randn(10, 5, dtype=torch.float64)
    with cpu_kernels(backend), pytest.raises(ValueError, match=r"decay of shape \[2, 5\]"):
        leaky_chunked(x, torch.rand(2, 5, dtype=torch.float64))


def test_without_numba_auto_falls_back_to_torch_and_numba_says_why(monkeypatch):
    """numba not importable (simulated): "auto" runs the torch forms, equal to the loop;
    "numba" raises an error that names the failed import."""
    monkeypatch.setattr(compiled, "_kernels", None)
    monkeypatch.setattr(compiled, "_load_error", None)

    def broken():
        raise ImportError("No module named 'numba'")
    monkeypatch.setattr(compiled, "_load", broken)
    x, d, u0 = _inputs(torch.float64, T=30)
    assert not compiled.available() and not use_compiled(x)
    y, _ = leaky_chunked(x, d, u0)
    torch.testing.assert_close(y, leaky_loop(x, d, u0)[0], rtol=1e-12, atol=1e-12)
    with cpu_kernels("numba"), pytest.raises(RuntimeError, match="need numba.*No module"):
        leaky_chunked(x, d, u0)


@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_an_in_place_edit_of_the_membrane_is_caught_at_backward_in_both_forms(backend):
    """Both forms return the membrane they saved (not a view of it): an in-place edit
    is allowed and then refused by autograd's version check at backward."""
    x = torch.randn(5, 3, requires_grad=True)
    d = torch.rand(3, requires_grad=True)
    with cpu_kernels(backend):
        y, _ = leaky_chunked(x, d)
    y.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


@pytest.mark.parametrize("T", [1, 15, 16, 17, 48])
def test_backward_across_block_boundaries(T):
    """The backward walks blocks of 16 steps (each read ascending first): every length
    around a block boundary gives the loop's gradients."""
    x, d, u0 = _inputs(torch.float64, T=T, seed=3)
    g = torch.Generator().manual_seed(4)
    gs = torch.randn(x.shape, generator=g, dtype=x.dtype)
    res = []
    for backend in ("torch", "numba"):
        leaves = [t.clone().requires_grad_() for t in (x, d, u0)]
        with cpu_kernels(backend):
            y, yT = leaky_chunked(*leaves)
        res.append(torch.autograd.grad([y, yT], leaves, [gs, torch.ones_like(yT)]))
    for name, a, b in zip(("x", "decay", "u0"), *res):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=name)


def _rms_reference(o, gain, eps=1e-6):
    return torch.nn.functional.rms_norm(o, (o.shape[-1],), eps=eps).flatten(-2) * gain


@pytest.mark.parametrize("shape,gain_shape", [((9, 3, 2, 8), (16,)), ((4, 1, 6), (6,)),
                                              ((5, 2, 3, 4), ()), ((2, 3, 4, 2, 8), (1,))],
                         ids=["seq", "step", "scalar-gain", "two-batch-dims"])
def test_rms_readout_equals_torch_and_passes_gradcheck(shape, gain_shape):
    """Values and both gradients against ``rms_norm(o) * gain`` (float64), and gradcheck."""
    g = torch.Generator().manual_seed(5)
    o = torch.randn(shape, generator=g, dtype=torch.float64, requires_grad=True)
    gain = (torch.rand(gain_shape, generator=g, dtype=torch.float64) + 0.1).requires_grad_()
    y, y_ref = compiled.rms_readout_compiled(o, gain, 1e-6), _rms_reference(o, gain)
    torch.testing.assert_close(y, y_ref, rtol=1e-13, atol=1e-13)
    w = torch.randn(y.shape, generator=g, dtype=y.dtype)
    for a, b, name in zip(torch.autograd.grad(y, (o, gain), w),
                          torch.autograd.grad(y_ref, (o, gain), w), ("o", "gain")):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=name)
    assert torch.autograd.gradcheck(lambda o, gain: compiled.rms_readout_compiled(o, gain, 1e-6),
                                    (o, gain))


def test_rms_readout_float32_and_a_zero_row():
    """float32 to rounding; a row of zeros reads out zeros with finite gradients (eps)."""
    g = torch.Generator().manual_seed(6)
    o = torch.randn(64, 8, 2, 32, generator=g)
    o[3, 2] = 0.0
    o.requires_grad_()
    gain = torch.full((64,), 0.1, requires_grad=True)
    y, y_ref = compiled.rms_readout_compiled(o, gain, 1e-6), _rms_reference(o, gain)
    torch.testing.assert_close(y, y_ref, rtol=2e-6, atol=1e-7)
    assert torch.equal(y[3, 2], torch.zeros(64))
    w = torch.randn(y.shape, generator=g)
    a = torch.autograd.grad(y, (o, gain), w)
    b = torch.autograd.grad(y_ref, (o, gain), w)
    assert all(torch.isfinite(t).all() for t in a)
    torch.testing.assert_close(a[0], b[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a[1], b[1], rtol=1e-5, atol=1e-4)


def test_amsu_readout_takes_the_kernel_on_the_cpu_and_torch_elsewhere():
    """``readout`` with ``readout_norm="rms"``: the kernel under "auto"/"numba", the torch
    form under "torch", the same values; a second backward through the kernel (double
    differentiation) is refused clearly rather than answered wrongly."""
    from astro_neuron import AMSU
    from astro_neuron.functional.amsu import readout
    layer = AMSU(16, 16, n_astrocytes=2, d_key=8, readout_norm="rms")
    p, spec = layer.params(), layer.spec
    o = torch.randn(5, 3, 2, 8, requires_grad=True)
    with cpu_kernels("numba"):
        y = readout(o, p, spec)
    assert y.grad_fn.name().startswith("_CompiledRMSReadout")
    with cpu_kernels("torch"):
        y_ref = readout(o, p, spec)
    assert "CompiledRMSReadout" not in y_ref.grad_fn.name()
    torch.testing.assert_close(y, y_ref, rtol=2e-6, atol=1e-7)
    (gy,) = torch.autograd.grad(y.square().sum(), o, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|double backward|twice"):
        gy.sum().backward()


# ------------------------------------------- the membrane scan with its spikes, fused


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("grads", ["spikes", "spikes+membrane", "spikes+final", "all"])
def test_fused_spikes_equal_the_loop_in_values_and_gradients(dtype, grads):
    """lif_chunked with binary ATan spikes runs the fused kernels on the CPU: spikes,
    membrane and final state equal the loop's bit for bit; the gradients of the input,
    decay, threshold and initial state from any mix of the three outputs equal the
    loop's to rounding (the threshold's and decay's sums run in float64 here)."""
    x, d, u0 = _inputs(dtype, T=90, shape=(3, 17), seed=5)
    thr = (torch.rand(17, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
           + 0.3).to(dtype)
    spec = LIFSpec(17)
    g = torch.Generator().manual_seed(7)
    ws = [torch.randn(s, generator=g, dtype=torch.float64).to(dtype)
          for s in (x.shape, x.shape, u0.shape)]
    use = {"spikes": (0,), "spikes+membrane": (0, 1), "spikes+final": (0, 2),
           "all": (0, 1, 2)}[grads]
    res = []
    for form in (lif_loop, lif_chunked):
        leaves = [t.clone().requires_grad_() for t in (x, u0, d, thr)]
        with cpu_kernels("numba"):
            out = form(leaves[0], leaves[1], leaves[2], leaves[3], spec)
        loss = sum((out[i] * ws[i]).sum() for i in use)
        res.append((out, torch.autograd.grad(loss, leaves)))
    (out_ref, g_ref), (out, g_new) = res
    for name, a, b in zip(("spikes", "membrane", "final state"), out, out_ref):
        assert torch.equal(a, b), name
    tol = 2e-5 if dtype == torch.float32 else 1e-11
    for name, a, b in zip(("x", "u0", "decay", "threshold"), g_new, g_ref):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol, msg=name)


def test_fused_spikes_pass_gradcheck_and_take_the_fused_path():
    x, d, u0 = _inputs(torch.float64, T=12, shape=(2, 3), seed=8)
    thr = torch.full((3,), 0.4, dtype=torch.float64)
    spec = LIFSpec(3)
    calls = []
    real = compiled._CompiledLeakyFire.forward

    def spy(ctx, *a):
        calls.append(1)
        return real(ctx, *a)

    compiled._CompiledLeakyFire.forward = staticmethod(spy)
    try:
        with cpu_kernels("numba"):
            # the spikes' gradient is the surrogate's, not their derivative (0): gradcheck
            # the membrane and the final state (the spikes' gradient absent, None), and
            # the spikes against the loop in the test above
            assert torch.autograd.gradcheck(
                lambda x_, u_, d_, t_: tuple(lif_chunked(x_, u_, d_, t_, spec)[1:]),
                [t.clone().requires_grad_() for t in (x, u0, d, thr)],
                check_undefined_grad=False)
    finally:
        compiled._CompiledLeakyFire.forward = staticmethod(real)
    assert calls


@pytest.mark.parametrize("kw", [dict(spike_levels=2), dict(spiking=False)])
def test_graded_or_smooth_spikes_keep_the_two_steps(kw):
    """Only binary ATan spikes are fused; other specs run scan then spike function and
    still equal the loop."""
    x, d, u0 = _inputs(torch.float64, T=40, shape=(2, 5), seed=9)
    thr = torch.full((5,), 0.5, dtype=torch.float64)
    spec = LIFSpec(5, **kw)
    with cpu_kernels("numba"):
        s, u, uT = lif_chunked(x, u0, d, thr, spec)
    s_ref, u_ref, uT_ref = lif_loop(x, u0, d, thr, spec)
    torch.testing.assert_close(s, s_ref, rtol=1e-12, atol=1e-12)
    assert torch.equal(u, u_ref)


def test_a_threshold_of_another_dtype_keeps_the_two_steps():
    """Spikes of a float32 membrane against a float64 threshold promote to float64, as
    the spike function does; the fused kernel would not, so it is not used there."""
    x, d, u0 = _inputs(torch.float32, T=20, shape=(2, 5), seed=10)
    thr = torch.full((5,), 0.5, dtype=torch.float64)
    with cpu_kernels("numba"):
        s, _, _ = lif_chunked(x, u0, d, thr, LIFSpec(5))
    s_ref, _, _ = lif_loop(x, u0, d, thr, LIFSpec(5))
    assert s.dtype == s_ref.dtype == torch.float64
    assert torch.equal(s, s_ref)
