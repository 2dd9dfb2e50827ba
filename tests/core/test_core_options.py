"""The options of the AM-SU added for long-range memory (docs/model.md, "Options"):
the pre-synaptic delay line (``conv_size``), the input-dependent retention
(``retention="gated"`` / ``"selective"``) and the RetNet decay initialisation
(``tau_astro="retnet"``) and the non-negative sensing (``sensing="relu"``, ``"relu2"``,
``"relu-key"``).
Every form (loop, recurrent, chunked, the streamed step, the fused decode step)
against the loop of steps on random inputs: outputs, final states (the delay line
included), gradients of every parameter and of the input; float32 and float64. Plus
the paper's unit as the default, the gated scan's stability and its gradcheck, and the
errors where an option cannot apply.
"""

from __future__ import annotations

import math

import pytest
import torch

import astro_neuron as an
from astro_neuron.functional import amsu
from astro_neuron.functional.rotary import rotary as rotary_positions
from astro_neuron.functional.scan import astro_gated_chunked, astro_gated_loop, astro_loop
from forms import decode_run
from tolerance import RTOL, assert_close

OPTIONS = [
    dict(conv_size=3),
    dict(retention="gated"),
    dict(retention="selective", conv_size=2),
    dict(retention="gated", conv_size=4, readout_norm="rms"),
    dict(sensing="relu"),
    dict(sensing="relu", conv_size=3, retention="selective"),
    dict(sensing="relu2"),
    dict(sensing="relu2", conv_size=2, retention="gated", readout_norm="rms"),
    dict(sensing="relu-key"),
    dict(sensing="relu-key", conv_size=3, retention="selective", readout_norm="rms"),
    # the activity clock (more of its tests: test_core_activity_clock.py)
    dict(clock="activity"),
    dict(clock="activity", sensing="relu", conv_size=3),
    dict(clock="activity", retention="selective", readout_norm="rms"),
    dict(clock="activity", retention="gated", conv_size=2, sensing="relu2", readout_norm="rms"),
    dict(clock="activity", sensing="relu-key"),
    dict(clock="activity", sensing="relu-key", conv_size=2, retention="gated"),
    dict(clock="activity", clock_rate=2.0, sensing="relu-key"),
    dict(clock="activity", clock_rate=0.5, retention="selective", conv_size=3),
    dict(clock="activity", decay_clock="activity", sensing="relu-key"),
    dict(clock="activity", decay_clock="activity", retention="gated", readout_norm="rms"),
    dict(clock="activity", decay_clock="activity", retention="selective", conv_size=3,
         clock_rate=2.0),
    dict(clock="activity", clock_threshold=0.5, sensing="relu-key"),
    dict(clock="activity", clock_threshold=0.5, decay_clock="activity", clock_rate=2.0,
         retention="gated", conv_size=2),
]


def _id(o):
    return ",".join(f"{k}={v}" for k, v in o.items())


def _layer(dtype, **kw):
    layer = an.AMSU(6, 12, n_astrocytes=3, d_key=4, rotary=True, **kw).to(dtype)
    with torch.no_grad():              # spread the learnable scalars so each one matters
        layer.astro_gain.uniform_(0.5, 1.5)
        layer.log_threshold.uniform_(-0.5, 0.5)
        layer.log_tau_mem.uniform_(0.0, 2.0)
        if layer.gate_bias is not None:
            layer.gate_bias.uniform_(-2.0, 2.0)
        if layer.clock_bias is not None:
            layer.clock_bias.uniform_(-1.0, 1.5)
    return layer


def _random_state(layer, B, dtype):
    st = layer.init_state(B)
    conv = None if st.conv is None else torch.randn_like(st.conv)
    phase = None if st.phase is None else 10 * torch.rand_like(st.phase)    # float64
    return an.AMSUState(torch.randn_like(st.u), torch.randn_like(st.H), 5, conv, phase)


def _run_grads(layer, x, mode, st0):
    layer.zero_grad()
    x = x.clone().requires_grad_(True)
    out, st = layer.run(x, st0, mode=mode)
    g = torch.Generator().manual_seed(1)
    loss = ((out.u + out.o) * torch.randn(out.u.shape, generator=g, dtype=x.dtype)).sum()
    loss = loss + (st.H * torch.randn(st.H.shape, generator=g, dtype=x.dtype)).sum()
    if st.conv is not None:
        loss = loss + (st.conv * torch.randn(st.conv.shape, generator=g, dtype=x.dtype)).sum()
    if st.phase is not None:
        loss = loss + (st.phase * torch.randn(st.phase.shape, generator=g,
                                              dtype=st.phase.dtype)).sum()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in layer.named_parameters() if p.grad is not None}
    grads["input"] = x.grad.clone()
    return out, st, grads


@pytest.mark.parametrize("options", OPTIONS, ids=_id)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("T,chunk,B", [(1, 64, 1), (23, 8, 2), (40, 16, 2)])
def test_option_every_form_agrees_with_the_loop(options, dtype, T, chunk, B):
    torch.manual_seed(T + B)
    layer = _layer(dtype, chunk_size=chunk, **options)
    x = torch.randn(T, B, 6, dtype=dtype)
    st0 = _random_state(layer, B, dtype)
    ref, st_ref, g_ref = _run_grads(layer, x, "loop", st0)
    rtol = RTOL[dtype]
    for mode in ("recurrent", "chunked", "auto"):
        out, st, g = _run_grads(layer, x, mode, st0)
        assert_close(out.u + out.o, ref.u + ref.o, dtype, f"{mode} drive", rtol)
        assert_close(st.H, st_ref.H, dtype, f"{mode} final H", rtol)
        if st_ref.conv is not None:
            assert_close(st.conv, st_ref.conv, dtype, f"{mode} final delay line", rtol)
        if st_ref.phase is not None:
            assert_close(st.phase, st_ref.phase, dtype, f"{mode} final phase", rtol)
        assert st.t == st_ref.t == 5 + T
        for name, gr in g_ref.items():
            assert_close(g[name], gr, dtype, f"{mode} grad {name}", rtol * 10)
    state, ys = st0, []                                     # the step form, streamed
    for t in range(T):
        o_t, state = layer.step_full(x[t], state)
        ys.append(o_t.u + o_t.o)
    assert_close(torch.stack(ys), ref.u + ref.o, dtype, "step drive", rtol)
    assert_close(state.H, st_ref.H, dtype, "step final H", rtol)
    y, st_dec = decode_run(layer, x.detach(), st0, full=True)   # the fused decode step
    assert_close(y, ref.u + ref.o, dtype, "decode drive", rtol)
    assert_close(st_dec.H, st_ref.H, dtype, "decode final H", rtol)
    if st_dec.conv is not None:
        assert_close(st_dec.conv, st_ref.conv, dtype, "decode final delay line", rtol)
    if st_dec.phase is not None:
        assert_close(st_dec.phase, st_ref.phase, dtype, "decode final phase", rtol)
    # the sequence cut in two runs gives the same as one run (state carried)
    o1, s1 = layer.run(x[: T // 2], st0)
    o2, s2 = layer.run(x[T // 2:], s1)
    assert_close(torch.cat([o1.o, o2.o]), ref.o, dtype, "split run", rtol)


def test_paper_unit_is_the_default():
    layer = an.AMSU(6, 12, n_astrocytes=3, d_key=4)
    s = layer.spec
    assert (s.conv_size, s.retention) == (1, "fixed")
    assert layer.conv is None and layer.gate_bias is None
    assert layer.init_state(2).conv is None
    assert [n for n, _ in s.parts] == ["I", "K", "V", "Q"]


def test_delay_line_is_the_causal_filter():
    """conv_size=K: k_t = sum_j w_j k_{t-j} per channel (zero before the start)."""
    torch.manual_seed(0)
    a = an.AMSU(5, 8, n_astrocytes=2, d_key=4).double()
    b = an.AMSU(5, 8, n_astrocytes=2, d_key=4, conv_size=3).double()
    b.load_state_dict(a.state_dict(), strict=False)
    x = torch.randn(9, 2, 5, dtype=torch.float64)
    _, k, v, _ = amsu.project(x, a.params(), a.spec)
    kv = torch.cat([k.flatten(-2), v.flatten(-2)], -1)
    w = b.conv.detach()
    pad = torch.cat([kv.new_zeros(2, *kv.shape[1:]), kv])
    want = sum(w[j] * pad[2 - j:2 - j + 9] for j in range(3))
    nk = 8
    k2, v2 = want[..., :nk].reshape(k.shape), want[..., nk:].reshape(v.shape)
    o_ref, _ = astro_loop(amsu.project(x, b.params(), b.spec)[3], k2, v2, b.gamma)
    out, _ = b.run(x, mode="loop")
    assert_close(out.o, o_ref.flatten(-2) * b.astro_gain / 2, torch.float64, "delay line")


def _sensed(sensing, rotary, seed):
    """A plain layer, the same layer with ``sensing``, an input, the plain layer's ``k``,
    ``v``, ``q`` after its delay line, and the ``sensing`` layer's loop read-out."""
    torch.manual_seed(seed)
    kw = dict(n_astrocytes=2, d_key=4, conv_size=2, rotary=rotary)
    a = an.AMSU(5, 8, **kw).double()
    b = an.AMSU(5, 8, sensing=sensing, **kw).double()
    b.load_state_dict(a.state_dict())
    x = torch.randn(11, 3, 5, dtype=torch.float64)
    _, k, v, q = amsu.project(x, a.params(), a.spec)
    k, v, _ = amsu.delay_line(k, v, a.init_state(3).conv, a.conv, a.spec)
    return a, b, x, k, v, q, b.run(x, mode="loop")[0].o


def _read_out(b, k, v, q, rotary):
    """The paper's read-out of ``k``, ``v``, ``q`` as already sensed (rotary after)."""
    if rotary:
        k, q = rotary_positions(k, 0, 10000.0, 4), rotary_positions(q, 0, 10000.0, 4)
    return astro_loop(q, k, v, b.gamma)[0].flatten(-2) * b.astro_gain / 2


@pytest.mark.parametrize("rotary", [False, True])
def test_relu_sensing_is_the_astrocyte_fed_max_k_0_and_max_q_0(rotary):
    """sensing="relu": the astrocyte of the paper fed max(k, 0), max(q, 0), taken after
    the delay line and before the rotary positions; without rotary every score q.k of
    the read-out is then >= 0 (a weighted sum of the values sensed)."""
    a, b, x, k, v, q, o = _sensed("relu", rotary, 1)
    k, q = k.clamp(min=0), q.clamp(min=0)
    assert (k == 0).any() and (k > 0).any()                   # both sides of the kink
    if not rotary:
        scores = torch.einsum("tbac,sbac->btsa", q, k)
        assert bool((scores >= 0).all())
    assert_close(o, _read_out(b, k, v, q, rotary), torch.float64, "relu sensing")
    assert not torch.allclose(o, a.run(x, mode="loop")[0].o)  # the option acts


@pytest.mark.parametrize("rotary", [False, True])
def test_relu_key_sensing_clamps_the_key_alone(rotary):
    """sensing="relu-key": the paper's astrocyte fed max(k, 0) and the signed q (after
    the delay line, before the rotary positions). With rotary channels a non-negative
    key and a non-negative query are at most a quarter turn apart within a pair; a
    signed query is not: some pair of the read-out is more than a quarter turn from
    every key (what "relu" cannot do)."""
    a, b, x, k, v, q, o = _sensed("relu-key", rotary, 2)
    k = k.clamp(min=0)
    assert (k == 0).any() and (k > 0).any() and (q < 0).any()
    # within a pair (channel c and c + d_k/2), the angle between key and query
    ang = lambda z: torch.atan2(z[..., 2:], z[..., :2])      # noqa: E731
    gap = (ang(q)[:, None] - ang(k)[None]).remainder(2 * math.pi)
    gap = torch.minimum(gap, 2 * math.pi - gap)
    assert bool((gap > math.pi / 2 + 0.1).any())
    assert_close(o, _read_out(b, k, v, q, rotary), torch.float64, "relu-key")
    relu = an.AMSU(5, 8, n_astrocytes=2, d_key=4, conv_size=2, rotary=rotary,
                   sensing="relu").double()
    relu.load_state_dict(a.state_dict())
    for other in (a, relu):                                   # it differs from both
        assert not torch.allclose(o, other.run(x, mode="loop")[0].o)


@pytest.mark.parametrize("worst", [0.05, 3.0, 80.0])
def test_gated_scan_is_finite_and_exact_where_a_factorisation_would_overflow(worst):
    """Log-decays down to -``worst`` per step for 1,000 steps in float32 (-80: a gate
    that forgets everything; a chunk of 64 factorised naively would need e^2560): the
    chunk shrinks so every exponent stays bounded, finite and equal to the loop."""
    torch.manual_seed(0)
    T, B, A, dk, dv = 1000, 1, 2, 4, 3
    q, k = torch.randn(T, B, A, dk), torch.randn(T, B, A, dk)
    v = torch.randn(T, B, A, dv)
    lg = -worst * torch.rand(T, B, A, dk)
    lg[::7] = 0.0                                              # and some full retention
    o1, H1 = astro_gated_loop(q, k, v, lg)
    o2, H2 = astro_gated_chunked(q, k, v, lg)
    assert torch.isfinite(o2).all() and torch.isfinite(H2).all()
    assert_close(o2, o1, torch.float32, "gated chunked o")
    assert_close(H2, H1, torch.float32, "gated chunked H")


@pytest.mark.parametrize("T,chunk", [(7, 3), (10, 16)])
def test_gated_scan_gradcheck(T, chunk):
    g = torch.Generator().manual_seed(T)
    B, A, dk, dv = 2, 2, 3, 2
    q, k = torch.randn(T, B, A, dk, generator=g), torch.randn(T, B, A, dk, generator=g)
    v = torch.randn(T, B, A, dv, generator=g)
    lg = -3 * torch.rand(T, B, A, dk, generator=g)
    H0 = torch.randn(B, A, dk, dv, generator=g)
    args = [t.double().requires_grad_(True) for t in (q, k, v, lg, H0)]
    assert torch.autograd.gradcheck(
        lambda *a: astro_gated_chunked(*a, chunk_size=chunk), args, eps=1e-6, atol=1e-6,
        fast_mode=True)


def test_retention_gate_values():
    """gated: decay gamma * sigmoid(z)^(1/temperature); selective: the write scaled by
    1 - g. With a huge gate bias the gate is 1 and the unit is the paper's."""
    torch.manual_seed(2)
    x = torch.randn(12, 2, 6, dtype=torch.float64)
    paper = an.AMSU(6, 12, n_astrocytes=3, d_key=4).double()
    gated = an.AMSU(6, 12, n_astrocytes=3, d_key=4, retention="gated", gate_bias=60.0).double()
    with torch.no_grad():
        gated.weight[: paper.weight.shape[0]].copy_(paper.weight)
        gated.bias.copy_(paper.bias)
        gated.weight[paper.weight.shape[0]:].zero_()
    a, _ = paper.run(x)
    b, _ = gated.run(x)
    assert_close(b.o, a.o, torch.float64, "gate 1 == paper")
    sel = an.AMSU(6, 12, n_astrocytes=3, d_key=4, retention="selective", gate_bias=60.0).double()
    with torch.no_grad():
        sel.load_state_dict(gated.state_dict())
    c, st = sel.run(x)
    assert float(st.H.detach().abs().max()) < 1e-20         # g = 1: nothing is written
    with torch.no_grad():
        sel.gate_bias.fill_(0.0)
    lg = torch.nn.functional.logsigmoid(torch.zeros((), dtype=torch.float64)) / 16
    d, _ = sel.run(x[:1])
    _, k, v, q = amsu.project(x[:1], sel.params(), sel.spec)
    H = (-torch.expm1(lg) * k[0])[..., :, None] * v[0][..., None, :]
    want = torch.einsum("bakv,bak->bav", H, q[0]).flatten(-2) * sel.astro_gain / 2
    assert_close(d.o[0], want, torch.float64, "selective write")


def test_retnet_decay_init():
    layer = an.AMSU(6, 16, n_astrocytes=4, d_key=4, tau_astro="retnet").double()
    want = 1 - 2.0 ** (-5 - torch.arange(4, dtype=torch.float64))
    assert_close(layer.gamma, want[:, None].expand(4, 4), torch.float64, "retnet gamma", 1e-6)
    with pytest.raises(ValueError, match="tau_astro"):
        an.AMSU(6, 16, tau_astro="mamba")


@pytest.mark.parametrize("kw,match", [
    (dict(conv_size=0), "conv_size"),
    (dict(conv_size=99), "conv_size must be at most"),
    (dict(retention="forget"), "retention"),
    (dict(retention="gated", gate_temperature=0.0), "gate_temperature"),
    (dict(conv_size=2, astrocyte=False), "astrocyte=False"),
    (dict(sensing="softplus"), "sensing"),
    (dict(sensing="relu", astrocyte=False), "sensing='relu'.*astrocyte=False"),
    (dict(sensing="relu-key", astrocyte=False), "sensing='relu-key'.*astrocyte=False"),
    (dict(retention="gated", astro_model="li_rinzel"), "linear astrocyte"),
])
def test_option_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        an.AMSU(6, 12, n_astrocytes=3, d_key=4, **kw)


def test_state_without_delay_line_is_refused():
    layer = an.AMSU(6, 12, n_astrocytes=3, d_key=4, conv_size=3)
    st = layer.init_state(2)
    with pytest.raises(ValueError, match="state.conv must have shape"):
        layer.run(torch.randn(4, 2, 6), an.AMSUState(st.u, st.H, 0))
    plain = an.AMSU(6, 12, n_astrocytes=3, d_key=4)
    with pytest.raises(ValueError, match="state.conv must be None"):
        plain.run(torch.randn(4, 2, 6), an.AMSUState(st.u, st.H, 0, st.conv))


def test_nonfinite_delay_line_is_named():
    layer = an.AMSU(6, 12, n_astrocytes=3, d_key=4, conv_size=2)
    st = layer.init_state(1)
    st.conv[0, 0, 0] = math.nan
    with pytest.raises(ValueError, match="state.conv"):
        layer.run(torch.randn(3, 1, 6), st)
