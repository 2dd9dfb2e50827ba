"""The astrocyte scan on CUDA: flash-linear-attention's GLA kernels (scan_fla.py) against
the torch chunked form on the same GPU and the float64 loop on the CPU (outputs, final
states, gradients of q, k, v, the decay or gate, and the initial state), and the AM-SU
and AM-SNet run through them against their torch forms.

Skipped without CUDA or without ``fla`` (CI has neither). Run on a GPU by
``scripts/device_check.sh``; docs/model.md gives the figures of the last run. Errors
are normwise (``|a - b| / |b|``): Triton's float32 matrix products use TF32 unless
``TRITON_F32_DEFAULT=ieee``, so the bound depends on that setting.
"""

from __future__ import annotations

import os

import pytest
import torch

import astro_neuron as an
from astro_neuron.functional import scan_fla
from astro_neuron.functional.scan import (
    astro_chunked, astro_gated_chunked, astro_gated_loop, astro_loop,
)

pytestmark = pytest.mark.skipif(
    not (torch.cuda.is_available() and scan_fla.fla_available()),
    reason="needs CUDA and flash-linear-attention (pip install 'astro-neuron[cuda]')")

IEEE = os.environ.get("TRITON_F32_DEFAULT", "").lower() == "ieee"
TOL = 2e-5 if IEEE else 4e-3          # normwise, float32 (TF32 keeps 10 mantissa bits)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().cpu(), b.double().cpu()
    return float((a - b).norm() / b.norm().clamp(min=1e-30))


def operands(T, B, A, dk, dv, seed, gated):
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(T, B, A, dk, generator=g) / dk ** 0.5 for _ in range(2))
    v = torch.randn(T, B, A, dv, generator=g)
    tau = torch.exp(torch.empty(A, dk).uniform_(0.0, 8.3, generator=g))      # 1 .. 4000
    if gated:
        decay = -torch.rand(T, B, A, dk, generator=g) * (1.0 / tau)          # log-gates
    else:
        decay = torch.exp(-1.0 / tau)
    H0 = torch.randn(B, A, dk, dv, generator=g)
    return [q, k, v, decay, H0]


def with_grads(fn, xs, device, dtype):
    xs = [x.to(device, dtype).requires_grad_(True) for x in xs]
    o, H = fn(*xs)
    gen = torch.Generator().manual_seed(99)
    wo = torch.randn(o.shape, generator=gen).to(device, dtype)
    wh = torch.randn(H.shape, generator=gen).to(device, dtype)
    ((o * wo).sum() + (H * wh).sum()).backward()
    return [o.detach(), H.detach()] + [x.grad for x in xs]


@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("T,dk,dv", [(1, 16, 32), (64, 16, 32), (100, 64, 64),
                                      (1000, 128, 64), (333, 32, 128)])
def test_gla_equals_torch_form_and_loop(T, dk, dv, gated):
    xs = operands(T, 2, 2, dk, dv, seed=T + dk, gated=gated)
    fla_fn = scan_fla.astro_gated_fla if gated else scan_fla.astro_fla
    torch_fn = astro_gated_chunked if gated else astro_chunked
    loop_fn = astro_gated_loop if gated else astro_loop
    got = with_grads(fla_fn, xs, "cuda", torch.float32)
    ref_gpu = with_grads(torch_fn, xs, "cuda", torch.float32)
    ref = with_grads(loop_fn, xs, "cpu", torch.float64)
    names = "o H_T dq dk dv ddecay dH0".split()
    for name, a, b, r in zip(names, got, ref_gpu, ref):
        assert a.shape == r.shape, name
        assert torch.isfinite(a).all(), name
        assert rel(a, r) < TOL, (name, rel(a, r), "fla vs float64 loop")
        assert rel(b, r) < 2e-5, (name, rel(b, r), "torch form vs float64 loop")


def test_long_sequence_decays_near_one():
    """T = 16384, time constants up to 1e5 steps: finite, equal to the torch form."""
    T, B, A, dk, dv = 16384, 1, 2, 64, 64
    xs = operands(T, B, A, dk, dv, seed=5, gated=False)
    xs[3] = torch.exp(-1.0 / torch.logspace(3, 5, A * dk).reshape(A, dk))
    got = with_grads(scan_fla.astro_fla, xs, "cuda", torch.float32)
    ref = with_grads(astro_chunked, xs, "cuda", torch.float32)
    for a, b in zip(got, ref):
        assert torch.isfinite(a).all()
        assert rel(a, b) < 4 * TOL


def test_bfloat16_runs_close():
    xs = operands(256, 4, 2, 64, 64, seed=3, gated=False)
    got = with_grads(scan_fla.astro_fla, xs[:3] + xs[3:], "cuda", torch.bfloat16)
    ref = with_grads(astro_loop, xs, "cpu", torch.float64)
    for a, r in zip(got[:3], ref[:3]):        # o, H_T, dq: bf16 operands, float32 state
        assert rel(a, r) < 3e-2


def _layer_grads(layer, x, mode, backend):
    layer.zero_grad()
    xs = x.clone().requires_grad_(True)
    with scan_fla.scan_backend(backend):
        out, st = layer.run(xs, mode=mode)
    drive = out.u + out.o
    w = torch.linspace(-1, 1, drive.numel(), device=x.device).reshape(drive.shape)
    ((drive * w).sum() + st.H.sum()).backward()
    return [drive.detach(), st.H.detach(), xs.grad] + [
        p.grad for _, p in sorted(layer.named_parameters()) if p.grad is not None]


@pytest.mark.parametrize("kw", [{}, {"retention": "gated"}, {"rotary": True},
                                {"conv_size": 4, "sensing": "relu"}])
def test_amsu_chunked_on_cuda_equals_its_loop(kw):
    torch.manual_seed(0)
    layer = an.AMSU(16, 64, n_astrocytes=2, d_key=32, **kw).cuda()
    x = torch.randn(200, 3, 16, device="cuda")
    fla_run = _layer_grads(layer, x, "chunked", "fla")
    loop = _layer_grads(layer, x, "loop", "torch")
    assert len(fla_run) == len(loop) > 5
    for a, b in zip(fla_run, loop):
        assert rel(a, b) < TOL, rel(a, b)


def test_amsnet_training_step_same_with_either_scan():
    from astro_neuron.lm.config import AMSNetConfig
    from astro_neuron.lm.model import build_model
    torch.manual_seed(0)
    cfg = AMSNetConfig(vocab_size=256, block_size=512, n_layer=2, n_head=2, d_model=128)
    model = build_model(cfg).cuda()
    idx = torch.randint(0, 256, (4, 512), device="cuda")
    res = []
    for backend in ("fla", "torch"):
        model.zero_grad()
        with scan_fla.scan_backend(backend):
            _, loss = model(idx, idx)
        loss.backward()
        res.append([loss.detach()] + [p.grad.clone() for p in model.parameters()
                                      if p.grad is not None])
    assert abs(res[0][0].item() - res[1][0].item()) < 1e-3 * abs(res[1][0].item())
    for a, b in zip(res[0][1:], res[1][1:]):
        assert rel(a, b) < 5e-2       # a spike flipped by rounding moves later layers
