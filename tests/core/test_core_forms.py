"""The three forms of the AM-SU agree: step loop (reference), recurrent, chunked.

Outputs, final states, and gradients of every parameter and of the input, on random
inputs, float32 and float64, several T / chunk sizes / batch sizes, with and without
rotary positions, and with decays near 0 and near 1. Spikes can flip where the drive
is within rounding of a threshold level, so spikes are compared away from that band
and the pre-threshold values are compared everywhere.
"""

from __future__ import annotations

import math

import pytest
import torch

import astro_neuron as an
from astro_neuron.functional import (
    astro_chunked, astro_loop, leaky_chunked, leaky_loop, stable_chunk_size,
)
from forms import run_with_grads   # tests/helpers
from tolerance import RTOL, assert_close


def spikes_agree(s1, s2, drive, threshold, levels, band):
    """Spikes equal wherever the drive is farther than ``band`` from every level."""
    lv = torch.arange(1, levels + 1, dtype=drive.dtype).reshape(-1, *[1] * drive.dim())
    dist = (drive.unsqueeze(0) - lv * threshold).abs().min(0).values
    safe = dist > band
    assert safe.float().mean() > 0.9, "too few spikes away from the rounding band"
    assert torch.equal(s1[safe], s2[safe])


def make_layer(dtype, rotary=False, n_in=6, N=12, A=3, dk=4, **kw):
    layer = an.AMSU(n_in, N, n_astrocytes=A, d_key=dk, rotary=rotary, **kw).to(dtype)
    with torch.no_grad():  # spread the learnable scalars so every parameter matters
        layer.astro_gain.uniform_(0.5, 1.5)
        layer.log_threshold.uniform_(-0.5, 0.5)
        layer.log_tau_mem.uniform_(0.0, 2.0)
    return layer




CASES = [  # (T, chunk, batch, rotary)
    (1, 64, 1, False),
    (7, 3, 2, True),
    (7, 64, 1, False),
    (64, 16, 3, True),
    (64, 24, 1, False),
    (1000, 64, 2, True),
    (1003, 50, 1, False),
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("T,chunk,B,rotary", CASES)
def test_loop_recurrent_chunked_agree(dtype, T, chunk, B, rotary):
    torch.manual_seed(T + chunk + B)
    layer = make_layer(dtype, rotary=rotary, chunk_size=chunk)
    x = torch.randn(T, B, 6, dtype=dtype)
    state0 = layer.init_state(B)
    state0 = an.AMSUState(torch.randn_like(state0.u), torch.randn_like(state0.H), 5)
    ref, st_ref, g_ref = run_with_grads(layer, x, "loop", state0)
    rtol = RTOL[dtype] * (10 if T >= 1000 else 1)  # float32 sums over 1000 steps
    for mode in ("recurrent", "chunked"):
        out, st, g = run_with_grads(layer, x, mode, state0)
        assert_close(out.u + out.o, ref.u + ref.o, dtype, f"{mode} drive", rtol)
        assert_close(out.u, ref.u, dtype, f"{mode} u", rtol)
        assert_close(out.o, ref.o, dtype, f"{mode} o", rtol)
        spikes_agree(out.spikes, ref.spikes, ref.u + ref.o, layer.threshold.detach(), 1,
                     band=1e-4 if dtype == torch.float32 else 1e-9)
        assert_close(st.u, st_ref.u, dtype, f"{mode} final u", rtol)
        assert_close(st.H, st_ref.H, dtype, f"{mode} final H", rtol)
        assert st.t == st_ref.t == 5 + T
        for name, gr in g_ref.items():
            assert_close(g[name], gr, dtype, f"{mode} grad {name}", rtol * 10)


@pytest.mark.parametrize("options", [
    dict(reset="subtract"), dict(reset="zero"), dict(reset="subtract", spike_levels=3),
    dict(spike_levels=4), dict(synapse="sigmoid"), dict(astrocyte=False),
    dict(neuron_path=False), dict(spiking=False), dict(reset="zero", detach_reset=True),
], ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_options_forms_agree_f64(options):
    dtype = torch.float64
    layer = an.AMSU(5, 8, n_astrocytes=2, d_key=4, rotary=True, chunk_size=8, **options).to(dtype)
    x = torch.randn(40, 3, 5, dtype=dtype) * 2
    ref, st_ref = layer.run(x, mode="loop")
    modes = ["recurrent"] + (["chunked"] if layer.spec.reset == "none" else [])
    for mode in modes:
        out, st = layer.run(x, mode=mode)
        assert_close(out.u + out.o, ref.u + ref.o, dtype, f"{mode} drive")
        assert torch.equal(out.spikes, ref.spikes) or not layer.spec.spiking
        assert_close(out.spikes, ref.spikes, dtype, f"{mode} spikes")
        assert_close(st.u, st_ref.u, dtype, f"{mode} final u")
        if st.H is not None:
            assert_close(st.H, st_ref.H, dtype, f"{mode} final H")
    assert ref.spikes.max() <= layer.spec.spike_levels
    if layer.spec.spiking:
        assert set(ref.spikes.unique().tolist()) <= set(range(layer.spec.spike_levels + 1))


def test_graded_spikes_count_levels_strictly():
    layer = an.AMSU(1, 4, n_astrocytes=1, d_key=2, spike_levels=3, astrocyte=False,
                    tau_mem=1e-9, bias=False).double()  # beta ~ 0: u_t = x_t
    with torch.no_grad():
        layer.weight.fill_(1.0)
    x = torch.tensor([0.5, 1.0, 1.0 + 1e-9, 2.5, 3.0, 7.0], dtype=torch.float64)
    s = layer(x.reshape(-1, 1, 1))[:, 0, 0]
    assert s.tolist() == [0, 0, 1, 2, 2, 3]  # strict >: exactly on a level does not count


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("decay", ["near0", "near1", "exact0", "exact1"])
def test_extreme_decays(dtype, decay):
    T, B, A, dk, dv = 200, 2, 3, 4, 5
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(T, B, A, dk, generator=g), torch.randn(T, B, A, dk, generator=g)
    v = torch.randn(T, B, A, dv, generator=g)
    gamma = torch.rand(A, dk, generator=g) * 0.9 + 0.05
    value = {"near0": 1e-6, "near1": 1 - 1e-6, "exact0": 0.0, "exact1": 1.0}[decay]
    gamma[0] = value
    q, k, v, gamma = (t.to(dtype) for t in (q, k, v, gamma))
    o_ref, H_ref = astro_loop(q, k, v, gamma)
    o, H = astro_chunked(q, k, v, gamma, chunk_size=64)
    assert_close(o, o_ref, dtype, "o", RTOL[dtype] * 10)
    assert_close(H, H_ref, dtype, "H", RTOL[dtype] * 10)
    x = torch.randn(T, B, 7, generator=g).to(dtype)
    beta = torch.full((7,), value, dtype=dtype)
    u_ref, uT_ref = leaky_loop(x, beta)
    u, uT = leaky_chunked(x, beta, chunk_size=64)
    assert_close(u, u_ref, dtype, "u", RTOL[dtype] * 10)
    assert_close(uT, uT_ref, dtype, "u_T", RTOL[dtype] * 10)


def test_chunk_shrinks_only_when_powers_would_overflow():
    """Chunks shrink only for decays whose factorised powers would pass e^8 (the cap
    that keeps the decay gradient accurate, scan.stable_chunk_size) or overflow."""
    lam = torch.log(torch.tensor([0.9, 0.78]))
    assert stable_chunk_size(lam, 64, torch.float32) == 64
    assert stable_chunk_size(torch.log(torch.tensor([0.5])), 64, torch.float32) < 64
    tiny = torch.log(torch.tensor([1e-6], dtype=torch.float64))
    c = stable_chunk_size(tiny, 64, torch.float32)
    assert 1 <= c < 64
    budget = min(math.log(torch.finfo(torch.float32).max) / 4, 8.0)
    assert (c - 1) / 2 * abs(float(tiny)) <= budget


def test_long_sequence_slow_decay_is_finite_and_matches_loop():
    """T = 16384 with a decay of 0.9999: no gamma^-t blow-up, agrees with the loop."""
    T, B, A, dk, dv = 16384, 1, 2, 4, 4
    g = torch.Generator().manual_seed(3)
    q, k = torch.randn(T, B, A, dk, generator=g), torch.randn(T, B, A, dk, generator=g)
    v = torch.randn(T, B, A, dv, generator=g)
    gamma = torch.full((A, dk), 0.9999)
    with torch.no_grad():
        o_ref, H_ref = astro_loop(q, k, v, gamma)
        o, H = astro_chunked(q, k, v, gamma, chunk_size=64)
        x = torch.randn(T, B, 8, generator=g)
        u_ref, _ = leaky_loop(x, torch.full((8,), 0.9999))
        u, _ = leaky_chunked(x, torch.full((8,), 0.9999), chunk_size=64)
    assert torch.isfinite(o).all() and torch.isfinite(H).all() and torch.isfinite(u).all()
    # float32 summation over 16384 steps: rounding grows like sqrt(T) * eps
    assert_close(o, o_ref, torch.float32, "o", 3e-5)
    assert_close(H, H_ref, torch.float32, "H", 3e-5)
    assert_close(u, u_ref, torch.float32, "u", 3e-5)


def test_step_stream_equals_forward():
    layer = make_layer(torch.float64, rotary=True)
    x = torch.randn(30, 2, 6, dtype=torch.float64)
    spikes, st = layer(x, return_state=True)
    state = None
    outs = []
    for t in range(30):
        s, state = layer.step(x[t], state)
        outs.append(s)
    assert torch.equal(torch.stack(outs), spikes)
    assert_close(state.H, st.H, torch.float64, "H")
    # continuing from a carried state equals one long run
    a, sa = layer(x[:13], return_state=True)
    b, sb = layer(x[13:], state=sa, return_state=True)
    assert torch.equal(torch.cat([a, b]), spikes)
    assert_close(sb.H, st.H, torch.float64, "H after split")


@pytest.mark.parametrize("T,chunk,tiny", [(7, 3, False), (12, 4, False), (9, 8, True)])
def test_chunked_astrocyte_backward_gradcheck(T, chunk, tiny):
    """The hand-written backward of the chunked astrocyte scan, against finite
    differences: q, k, v, the decays and the initial state (float64)."""
    g = torch.Generator().manual_seed(T)
    B, A, dk, dv = 2, 2, 3, 2
    q, k = torch.randn(T, B, A, dk, generator=g), torch.randn(T, B, A, dk, generator=g)
    v = torch.randn(T, B, A, dv, generator=g)
    gamma = torch.rand(A, dk, generator=g) * 0.6 + 0.3
    if tiny:
        gamma[0, 0] = 1e-3                      # forces a smaller chunk for this call
    H0 = torch.randn(B, A, dk, dv, generator=g)
    args = [t.double().requires_grad_(True) for t in (q, k, v, gamma, H0)]

    def f(q, k, v, gamma, H0):
        return astro_chunked(q, k, v, gamma, H0, chunk_size=chunk)

    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-6, rtol=1e-5)
