"""The CUDA path of the astrocyte scan (astro_neuron/functional/scan_fla.py), on CPU.

The GLA kernels themselves need CUDA; tests/core/test_core_cuda.py runs them against the
torch form and the loop on a GPU. Here: which scan the chunked form picks, the errors,
and the layout this module hands the kernel, checked with a stand-in that computes
flash-linear-attention's documented ``chunk_gla`` semantics (``[B, T, H, K]`` operands,
per-step log-gates, ``scale``, an initial state ``[B, H, K, V]`` in float32) by a plain
loop: the adapter, fed that stand-in, must equal the reference loop in values and
gradients, and the AM-SU's chunked form routed through it must equal its loop form.
"""

from __future__ import annotations

import pytest
import torch

import astro_neuron as an
from astro_neuron.functional import scan_fla
from astro_neuron.functional.scan import astro_gated_loop, astro_loop


def standin_chunk_gla(q, k, v, g, scale=None, initial_state=None, output_final_state=False):
    """fla.ops.gla.chunk_gla's contract, by a loop (float32 state, as the kernel keeps)."""
    B, T, H, K = q.shape
    scale = K ** -0.5 if scale is None else scale
    h = torch.zeros(B, H, K, v.shape[-1], dtype=torch.float32)
    if initial_state is not None:
        assert initial_state.dtype == torch.float32
        h = h + initial_state
    out = []
    for t in range(T):
        h = h * g[:, t].exp()[..., None] + k[:, t, :, :, None].float() * v[:, t, :, None, :]
        out.append(((q[:, t].float() * scale)[..., None] * h).sum(-2))
    o = torch.stack(out, 1).to(q.dtype)
    return o, (h if output_final_state else None)


@pytest.fixture
def standin(monkeypatch):
    monkeypatch.setattr(scan_fla, "_kernel", standin_chunk_gla)
    monkeypatch.setattr(scan_fla, "_kernel_error", None)


def _operands(T=37, B=2, A=3, dk=5, dv=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(T, B, A, dk, generator=g) for _ in range(2))
    v = torch.randn(T, B, A, dv, generator=g)
    tau = torch.exp(torch.empty(A, dk).uniform_(0.0, 7.0, generator=g))     # 1 .. 1100 steps
    decay = torch.exp(-1.0 / tau)
    H0 = torch.randn(B, A, dk, dv, generator=g)
    return q, k, v, decay, H0


def _grads(fn, *xs):
    xs = [x.clone().requires_grad_(True) for x in xs]
    o, H = fn(*xs)
    w = torch.linspace(-1, 1, o.numel()).reshape(o.shape)
    wh = torch.linspace(1, -1, H.numel()).reshape(H.shape)
    ((o * w).sum() + (H * wh).sum()).backward()
    return o.detach(), H.detach(), [x.grad for x in xs]


def test_adapter_equals_the_loop(standin):
    ops = _operands()
    o1, H1, g1 = _grads(scan_fla.astro_fla, *ops)
    o2, H2, g2 = _grads(astro_loop, *ops)
    torch.testing.assert_close(o1, o2, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(H1, H2, rtol=1e-5, atol=1e-5)
    for a, b, name in zip(g1, g2, "q k v decay H0".split()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4, msg=name)


def test_gated_adapter_equals_the_loop(standin):
    q, k, v, _, H0 = _operands(seed=1)
    lg = -torch.rand(*q.shape[:-1], q.shape[-1], generator=torch.Generator().manual_seed(2))
    o1, H1, g1 = _grads(scan_fla.astro_gated_fla, q, k, v, lg, H0)
    o2, H2, g2 = _grads(astro_gated_loop, q, k, v, lg, H0)
    torch.testing.assert_close(o1, o2, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(H1, H2, rtol=1e-5, atol=1e-5)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_adapter_zero_length_and_no_initial_state(standin):
    q, k, v, decay, _ = _operands(T=0)
    o, H = scan_fla.astro_fla(q, k, v, decay)
    assert o.shape == (0, 2, 3, 4) and torch.equal(H, torch.zeros(2, 3, 5, 4))
    q, k, v, decay, _ = _operands(T=5)
    o1, H1 = scan_fla.astro_fla(q, k, v, decay)
    o2, H2 = astro_loop(q, k, v, decay)
    torch.testing.assert_close(o1, o2)
    torch.testing.assert_close(H1, H2)


@pytest.mark.parametrize("gated", [False, True])
def test_chunked_amsu_routed_through_the_adapter_equals_its_loop(standin, monkeypatch, gated):
    """The dispatch in the chunked AM-SU (functional/amsu/chunk.py) hands the kernel the
    same operands the torch scan gets: forced onto the stand-in, the chunked layer equals
    the loop form (drive and gradients)."""
    torch.manual_seed(0)
    kw = {"retention": "gated"} if gated else {}
    layer = an.AMSU(6, 12, n_astrocytes=3, d_key=4, **kw)
    x = torch.randn(29, 2, 6)
    calls = []
    real = scan_fla._gla

    def counted(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(scan_fla, "_gla", counted)
    monkeypatch.setattr(scan_fla, "_unfit", lambda q, v: None)      # as on a GPU
    monkeypatch.setattr(scan_fla._SWITCH, "value", "auto")
    outs = []
    for mode in ("chunked", "loop"):
        layer.zero_grad()
        xs = x.clone().requires_grad_(True)
        out, st = layer.run(xs, mode=mode)
        drive = out.u + out.o
        w = torch.linspace(-1, 1, drive.numel()).reshape(drive.shape)
        ((drive * w).sum() + st.H.sum()).backward()
        outs.append((drive.detach(), st.H.detach(), xs.grad.clone(),
                     {n: p.grad.clone() for n, p in layer.named_parameters()
                      if p.grad is not None}))
    assert calls, "the chunked form did not route through the adapter"
    (d1, H1, gx1, gp1), (d2, H2, gx2, gp2) = outs
    torch.testing.assert_close(d1, d2, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(H1, H2, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gx1, gx2, rtol=1e-4, atol=1e-5)
    assert gp1.keys() == gp2.keys() and len(gp1) > 3
    for n in gp1:
        torch.testing.assert_close(gp1[n], gp2[n], rtol=1e-4, atol=1e-5, msg=n)


def test_auto_keeps_the_torch_form_on_cpu(monkeypatch):
    q, k, v, decay, _ = _operands()
    monkeypatch.delenv("ASTRO_NEURON_SCAN", raising=False)
    assert scan_fla._SWITCH.initial() == "torch"        # the default: the kernel is opt-in
    with scan_fla.scan_backend("auto"):
        assert not scan_fla.use_fla(q, v)
    assert not scan_fla.use_fla(q, v)
    with scan_fla.scan_backend("fla"), pytest.raises(RuntimeError, match="CUDA only"):
        scan_fla.use_fla(q, v)
    assert not scan_fla.use_fla(q, v)                   # the context restored the setting


def test_backend_errors(monkeypatch):
    with pytest.raises(ValueError, match="scan backend must be one of"):
        scan_fla.set_scan_backend("cuda")
    monkeypatch.setenv("ASTRO_NEURON_SCAN", "gpu")
    with pytest.raises(ValueError, match="ASTRO_NEURON_SCAN"):
        scan_fla._SWITCH.initial()
    monkeypatch.setenv("ASTRO_NEURON_SCAN", "Torch")
    assert scan_fla._SWITCH.initial() == "torch"


def test_unfit_says_why(monkeypatch):
    q, k, v, decay, _ = _operands()
    assert "CUDA only" in scan_fla._unfit(q, v)
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    assert "float64" in scan_fla._unfit(q.double(), v.double())
    big = torch.zeros(1, 1, 1, 300)
    assert "up to 256" in scan_fla._unfit(big, v)
    monkeypatch.setattr(scan_fla, "_kernel", None)
    monkeypatch.setattr(scan_fla, "_kernel_error", "ModuleNotFoundError: No module named 'fla'")
    assert "astro-neuron[cuda]" in scan_fla._unfit(q, v)
