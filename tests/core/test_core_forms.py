"""Every form of the AM-SU agrees with the loop of steps (the reference): recurrent,
chunked, the dispatcher, the streamed step and the fused decode step, for both
read-outs (``readout_norm`` "none" and "rms"); the LIF's forms likewise.

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
from astro_neuron.functional import fire
from forms import decode_run, lif_run_with_grads, run_with_grads   # tests/helpers
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


# ------------------------------------------------- every form of the unit, both read-outs

FORM_CASES = [  # (T, chunk, B, rotary)
    (1, 64, 1, False),
    (9, 4, 2, True),
    (70, 16, 3, True),
]


@pytest.mark.parametrize("readout_norm", ["none", "rms"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("T,chunk,B,rotary", FORM_CASES)
def test_every_form_agrees_with_the_loop(readout_norm, dtype, T, chunk, B, rotary):
    """step (streamed), recurrent, chunked, the dispatcher ``run`` and the fused decode
    step against the loop of steps: outputs, final states, gradients."""
    torch.manual_seed(T + B)
    layer = make_layer(dtype, rotary=rotary, chunk_size=chunk, readout_norm=readout_norm)
    x = torch.randn(T, B, 6, dtype=dtype)
    st0 = layer.init_state(B)
    st0 = an.AMSUState(torch.randn_like(st0.u), torch.randn_like(st0.H), 3)
    ref, st_ref, g_ref = run_with_grads(layer, x, "loop", st0)
    rtol = RTOL[dtype]
    band = 1e-4 if dtype == torch.float32 else 1e-9
    thr = layer.threshold.detach()
    for mode in ("recurrent", "chunked", "auto"):
        out, st, g = run_with_grads(layer, x, mode, st0)
        assert_close(out.u, ref.u, dtype, f"{mode} u", rtol)
        assert_close(out.o, ref.o, dtype, f"{mode} o", rtol)
        spikes_agree(out.spikes, ref.spikes, ref.u + ref.o, thr, 1, band)
        assert_close(st.u, st_ref.u, dtype, f"{mode} final u", rtol)
        assert_close(st.H, st_ref.H, dtype, f"{mode} final H", rtol)
        assert st.t == st_ref.t == 3 + T
        for name, gr in g_ref.items():
            assert_close(g[name], gr, dtype, f"{mode} grad {name}", rtol * 10)
    # the step form, streamed
    state, outs = st0, []
    for t in range(T):
        o_t, state = layer.step_full(x[t], state)
        outs.append(o_t)
    assert_close(torch.stack([o.u + o.o for o in outs]), ref.u + ref.o, dtype, "step drive", rtol)
    assert_close(state.H, st_ref.H, dtype, "step final H", rtol)
    # the fused decode step (inference only: no gradients)
    y, u_T, H_T = decode_run(layer, x.detach(), st0)
    assert_close(y, ref.u + ref.o, dtype, "decode drive", rtol)
    spikes_agree(fire(y, thr, layer.spec), ref.spikes, ref.u + ref.o, thr, 1, band)
    assert_close(u_T, st_ref.u, dtype, "decode final u", rtol)
    assert_close(H_T, st_ref.H, dtype, "decode final H", rtol)


@pytest.mark.parametrize("options", [
    dict(neuron_path=False), dict(astrocyte=False), dict(spike_levels=3),
    dict(synapse="sigmoid"), dict(bias=False), dict(rotary_fraction=0.5),
], ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
@pytest.mark.parametrize("readout_norm", ["none", "rms"])
def test_decode_step_options_f64(options, readout_norm):
    if options.get("synapse") == "sigmoid":
        pytest.skip("the fused decode step is the language model's: identity synapse")
    torch.manual_seed(0)
    layer = an.AMSU(5, 8, n_astrocytes=2, d_key=4, rotary=True, readout_norm=readout_norm,
                    **options).double()
    x = torch.randn(25, 2, 5, dtype=torch.float64)
    ref, st_ref = layer.run(x, mode="loop")
    y, u_T, H_T = decode_run(layer, x, layer.init_state(2))
    assert_close(y, ref.u + ref.o, torch.float64, "decode drive")
    assert_close(u_T, st_ref.u, torch.float64, "decode final u")
    if H_T is not None:
        assert_close(H_T, st_ref.H, torch.float64, "decode final H")


def test_rms_readout_is_the_normalised_readout():
    """readout_norm="rms": g_astro times each astrocyte's H^T q over its RMS (no
    1/sqrt(d_k)); "none": H^T q / sqrt(d_k). Same weights, same H."""
    torch.manual_seed(1)
    a = an.AMSU(6, 12, n_astrocytes=3, d_key=4).double()
    b = an.AMSU(6, 12, n_astrocytes=3, d_key=4, readout_norm="rms").double()
    b.load_state_dict(a.state_dict())
    x = torch.randn(10, 2, 6, dtype=torch.float64)
    oa, sa = a.run(x)
    ob, sb = b.run(x)
    assert torch.equal(sa.H, sb.H) and torch.equal(oa.u, ob.u)
    raw = (oa.o / (a.astro_gain / math.sqrt(4))).reshape(10, 2, 3, 4)
    want = raw / raw.pow(2).mean(-1, keepdim=True).add(1e-5).sqrt()
    assert_close(ob.o, want.flatten(-2) * b.astro_gain, torch.float64, "rms read-out")
    assert "readout_norm='rms'" in repr(b)
    with pytest.raises(ValueError, match="readout_norm"):
        an.AMSU(6, 12, n_astrocytes=3, d_key=4, readout_norm="layer")


# ------------------------------------------------- the LIF's forms

@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("T,chunk", [(1, 64), (13, 4), (200, 64)])
def test_lif_forms_agree_with_the_loop(dtype, T, chunk):
    torch.manual_seed(T)
    layer = an.LIF(7, chunk_size=chunk).to(dtype)
    with torch.no_grad():
        layer.log_tau_mem.uniform_(0.0, 2.0)
        layer.log_threshold.uniform_(-0.5, 0.5)
    x = torch.randn(T, 3, 7, dtype=dtype) * 2
    u0 = torch.randn(3, 7, dtype=dtype)
    (s_ref, u_ref, uT_ref), g_ref = lif_run_with_grads(layer, x, "loop", u0)
    band = 1e-4 if dtype == torch.float32 else 1e-9
    for mode in ("chunked", "auto"):
        (s, u, u_T), g = lif_run_with_grads(layer, x, mode, u0)
        assert_close(u, u_ref, dtype, f"{mode} u")
        spikes_agree(s, s_ref, u_ref, layer.threshold.detach(), 1, band)
        assert_close(u_T, uT_ref, dtype, f"{mode} u_T")
        for name, gr in g_ref.items():
            assert_close(g[name], gr, dtype, f"{mode} grad {name}", RTOL[dtype] * 10)
    u, ss = u0, []
    for t in range(T):                                    # the step, streamed
        s_t, u = layer.step(x[t], u)
        ss.append(s_t)
    assert torch.equal(torch.stack(ss), s_ref)
    assert_close(u, uT_ref, dtype, "step u_T")


@pytest.mark.parametrize("options", [dict(reset="subtract"), dict(reset="zero"),
                                     dict(spike_levels=3), dict(spiking=False)],
                         ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_lif_equals_amsu_without_astrocyte(options):
    """The LIF is the AM-SU with the astrocyte off fed with I = x: both run the same
    definition (every form, gradients included)."""
    torch.manual_seed(4)
    N, T = 6, 30
    lif = an.LIF(N, **options).double()
    amsu = an.AMSU(N, N, n_astrocytes=1, d_key=2, astrocyte=False, bias=False,
                   **options).double()
    with torch.no_grad():
        amsu.weight.copy_(torch.eye(N))
        amsu.log_tau_mem.copy_(lif.log_tau_mem)
        amsu.log_threshold.copy_(lif.log_threshold)
    x = torch.randn(T, 2, N, dtype=torch.float64) * 2
    s, u, u_T = lif.run(x, mode="loop")
    out, st = amsu.run(x, mode="loop")
    assert torch.equal(s, out.spikes)
    assert_close(u, out.u, torch.float64, "u")
    assert_close(u_T, st.u, torch.float64, "u_T")
