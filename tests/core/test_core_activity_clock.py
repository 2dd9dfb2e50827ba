"""The activity clock of the AM-SU (``clock="activity"``, docs/model.md, "Options"): a
phase per astrocyte advanced by its activity ``a_t = softplus(W_E x_t + b_E)``, which
turns the rotary channels of ``k`` and ``q`` at evenly spaced frequencies and scales
what the astrocyte writes.

Checked against a slow, obvious reference (the read-out written as the double sum over
steps, ``o_t = sum_{s<=t} gamma^(t-s) (R(p_t) q_t) . (a_s R(p_s) k_s) v_s``), the
language model's step and prefill against its parallel form, the adapters' state
handling, the frequencies' discrete Fourier property, and the errors where the option
cannot apply. Every form of the unit against the loop with the other options (outputs,
final states, gradients; float64 and float32): ``OPTIONS`` of test_core_options.py.
"""

from __future__ import annotations

import math

import pytest
import torch

import astro_neuron as an
import neuromorphic as nm
from astro_neuron.functional import amsu
from astro_neuron.functional.rotary import phase_freqs, phase_table, rotate
from astro_neuron.lm.config import AMSNetConfig
from astro_neuron.lm.model import AMSNet
from tolerance import assert_close

def _layer(dtype, d_key=8, **kw):
    layer = an.AMSU(6, 12, n_astrocytes=3, d_key=d_key, rotary=True, clock="activity",
                    **kw).to(dtype)
    with torch.no_grad():              # spread the learnable scalars so each one matters
        layer.astro_gain.uniform_(0.5, 1.5)
        layer.log_threshold.uniform_(-0.5, 0.5)
        layer.clock_bias.uniform_(-1.0, 1.5)
        if layer.gate_bias is not None:
            layer.gate_bias.uniform_(-2.0, 2.0)
    return layer


def _random_state(layer, B):
    st = layer.init_state(B)
    conv = None if st.conv is None else torch.randn_like(st.conv)
    return an.AMSUState(torch.randn_like(st.u), torch.randn_like(st.H), 5, conv,
                        10 * torch.rand_like(st.phase))                 # float64


def _reference(layer, x, st0):
    """The read-out as the double sum over steps, from the state's phase (zero H); pair
    ``f`` turned by ``clock_rate * 2 pi f / n_rot`` a unit of phase, written out here;
    what step ``s`` wrote decays by ``gamma^(t - s)`` by step ``t``, or with
    ``decay_clock="activity"`` by ``gamma^(p_t - p_s)``: the activity in between."""
    spec, p = layer.spec, layer.params()
    _, k, v, q, _, ze = amsu.project_all(x, p, spec)
    a = (torch.nn.functional.softplus(ze) - spec.clock_threshold).clamp(min=0)  # (T, B, A)
    phase = st0.phase + a.cumsum(0)
    n_rot = spec.rotary_dims
    f = torch.arange(spec.d_key // 2, dtype=torch.float64)
    w = torch.where(f < n_rot // 2, f * 2 * math.pi * spec.clock_rate / n_rot, 0 * f)
    ang = phase[..., None] * w
    cos, sin = torch.cos(ang).to(x.dtype), torch.sin(ang).to(x.dtype)
    k, q = rotate(k, cos, sin) * a[..., None], rotate(q, cos, sin)
    T = x.shape[0]
    o = torch.zeros_like(v)
    for t in range(T):
        for s in range(t + 1):
            if spec.decay_clock == "activity":
                age = (phase[t] - phase[s]).to(x.dtype)[..., None]          # (B, A, 1)
            else:
                age = t - s
            w = (layer.gamma ** age * q[t] * k[s]).sum(-1)                 # (B, A)
            o[t] = o[t] + w[..., None] * v[s]
    return o.flatten(-2) * p.astro_gain / math.sqrt(spec.d_key), phase[-1]


@pytest.mark.parametrize("fraction,rate,decay,threshold", [
    (1.0, 1.0, "time", 0.0), (0.5, 1.0, "time", 0.0), (1.0, 2.0, "time", 0.0),
    (0.5, 0.7, "time", 0.0), (1.0, 1.0, "activity", 0.0), (0.5, 2.0, "activity", 0.0),
    (1.0, 1.0, "time", 0.6), (1.0, 2.0, "activity", 0.6)])
def test_the_read_out_is_the_double_sum_over_steps(fraction, rate, decay, threshold):
    """Also: the activity's bias gets a gradient through the phase and the write (with
    a threshold, one where some steps are silent and others not)."""
    torch.manual_seed(0)
    layer = _layer(torch.float64, rotary_fraction=fraction, clock_rate=rate,
                   decay_clock=decay, tau_astro=(2.0, 20.0), clock_threshold=threshold)
    x = torch.randn(13, 2, 6, dtype=torch.float64)
    st0 = layer.init_state(2)
    st0 = st0._replace(phase=3 * torch.rand_like(st0.phase))
    o_ref, phase_ref = _reference(layer, x, st0)
    for mode in ("loop", "chunked"):
        out, st = layer.run(x, st0, mode=mode)
        assert_close(out.o, o_ref, torch.float64, f"{mode} read-out")
        assert_close(st.phase, phase_ref, torch.float64, f"{mode} phase")
    if threshold:                      # some steps silent (a_t = 0 exactly), some not
        ze = amsu.project_all(x, layer.params(), layer.spec)[5]
        a = amsu.activity(ze, layer.spec)
        assert 0.1 < float((a == 0).double().mean()) < 0.9
    layer.zero_grad()
    layer.run(x, st0)[0].o.square().sum().backward()
    assert float(layer.clock_bias.grad.abs().min()) > 0


def test_the_phase_sums_the_activity_and_the_write_is_scaled():
    """``p_t = p_{t-1} + softplus(W_E x_t + b_E)``; a zero-activity astrocyte (a very
    negative bias) neither writes nor turns: its state stays where it started."""
    torch.manual_seed(2)
    layer = _layer(torch.float64)
    x = torch.randn(9, 2, 6, dtype=torch.float64)
    ze = amsu.project_all(x, layer.params(), layer.spec)[5]
    _, st = layer.run(x)
    assert_close(st.phase, torch.nn.functional.softplus(ze).sum(0), torch.float64, "phase")
    with torch.no_grad():
        layer.clock_bias.fill_(-800.0)                     # softplus underflows to 0
        layer.weight[-3:].zero_()                          # the E rows
    st0 = _random_state(layer, 2)
    _, st = layer.run(x, st0)
    assert torch.equal(st.phase, st0.phase)
    assert_close(st.H, st0.H * layer.gamma[..., None] ** 9, torch.float64, "no write")


def test_activity_decay_holds_a_quiet_astrocyte_and_spends_tau_in_activity():
    """``decay_clock="activity"``: the state decays by ``gamma ** a_t``, so an astrocyte
    of zero activity keeps its state exactly however long it waits (the time decay
    loses it), and a state written once, then read after steps of known activity,
    has decayed by ``gamma`` to the power of the activity summed (not the steps)."""
    torch.manual_seed(5)
    kw = dict(tau_astro=(3.0, 30.0))
    quiet = {d: _layer(torch.float64, decay_clock=d, **kw) for d in ("time", "activity")}
    x = torch.randn(200, 2, 6, dtype=torch.float64)
    for d, layer in quiet.items():
        with torch.no_grad():
            layer.clock_bias.fill_(-800.0)                 # softplus underflows to 0
            layer.weight[-3:].zero_()                      # the E rows
        st0 = _random_state(layer, 2)
        _, st = layer.run(x, st0)
        st = st._replace(H=st.H.detach())
        if d == "activity":
            assert torch.equal(st.H, st0.H)
        else:
            assert float(st.H.abs().max()) < 1e-2 * float(st0.H.abs().max().detach())
    layer = _layer(torch.float64, decay_clock="activity", **kw)
    with torch.no_grad():
        layer.weight[-3:].zero_()                          # constant activity softplus(b)
    a = torch.nn.functional.softplus(layer.clock_bias.detach())            # (A,)
    st0 = _random_state(layer, 2)
    for mode in ("loop", "chunked"):
        _, st = layer.run(torch.zeros(0, 2, 6, dtype=torch.float64), st0, mode=mode)
        assert torch.equal(st.H, st0.H)
    with torch.no_grad():                                  # no write: keys of zero
        layer.weight[12:12 + 3 * 8].zero_()                # the K rows (after I's 12)
    for mode in ("loop", "chunked"):
        _, st = layer.run(x[:50], st0, mode=mode)
        want = st0.H * (layer.gamma ** (50 * a)[:, None])[None, ..., None]
        assert_close(st.H, want, torch.float64, f"{mode}: gamma ** (sum of a)")


@pytest.mark.parametrize("decay", ["time", "activity"])
def test_input_below_the_threshold_leaves_the_astrocyte_silent(decay):
    """``clock_threshold`` above every activity: no turn, no write, and with the
    activity decay no decay either; below it, the activity is the softplus less it."""
    torch.manual_seed(6)
    layer = _layer(torch.float64, decay_clock=decay, clock_threshold=50.0)
    x = torch.randn(30, 2, 6, dtype=torch.float64)
    st0 = _random_state(layer, 2)
    for mode in ("loop", "chunked"):
        _, st = layer.run(x, st0, mode=mode)
        assert torch.equal(st.phase, st0.phase)
        want = st0.H if decay == "activity" else st0.H * layer.gamma[..., None] ** 30
        assert_close(st.H.detach(), want.detach(), torch.float64, f"{mode}: silent")
    ze = amsu.project_all(x, layer.params(), layer.spec)[5]
    for theta in (0.0, 0.3):
        spec = an.AMSU(6, 12, n_astrocytes=3, d_key=8, rotary=True, clock="activity",
                       clock_threshold=theta).spec
        want = (torch.nn.functional.softplus(ze) - theta).clamp(min=0)
        assert torch.equal(amsu.activity(ze, spec), want)


@pytest.mark.parametrize("mode", ["loop", "chunked"])
def test_a_clock_that_stops_reads_the_same_however_many_silent_steps_between(mode):
    """With both options, steps below the threshold leave the astrocyte as it was, so
    what it reads at the active steps does not depend on how many silent steps were
    put between them (a sequence's length); with the time decay, or without the
    threshold, it does."""
    torch.manual_seed(7)
    active = torch.randn(6, 2, 6, dtype=torch.float64) + 2.0     # E rows see a large sum
    T_long = 6 * 9
    spread = torch.zeros(T_long, 2, 6, dtype=torch.float64)
    where = torch.tensor([0, 5, 13, 20, 37, 50])                  # gaps of 4-16 silent steps
    spread[where] = active
    reads = {}
    for name, kw in {"stop": dict(decay_clock="activity", clock_threshold=0.05),
                     "time decay": dict(clock_threshold=0.05),
                     "no threshold": dict(decay_clock="activity")}.items():
        torch.manual_seed(8)
        layer = _layer(torch.float64, neuron_path=False, **kw)
        with torch.no_grad():
            layer.weight[-3:].fill_(0.5)                 # E rows: activity from the input sum
            layer.clock_bias.fill_(-8.0)                 # softplus(-8) = 3e-4 at x = 0
        short = layer.run(active, mode=mode)[0].o
        long = layer.run(spread, mode=mode)[0].o[where]
        reads[name] = float((short - long).abs().max().detach())
    assert reads["stop"] < 1e-12
    assert reads["time decay"] > 0.1 and reads["no threshold"] > 0.1      # 5.3, 0.81


def test_the_clock_step_sets_the_starting_activity():
    layer = an.AMSU(6, 12, n_astrocytes=3, d_key=8, rotary=True, clock="activity",
                    clock_step=0.01)
    assert_close(torch.nn.functional.softplus(layer.clock_bias.detach().double()),
                 torch.full((3,), 0.01, dtype=torch.float64), torch.float32, "clock step")


@pytest.mark.parametrize("n_rot", [4, 8, 32])
def test_frequencies_put_whole_phase_steps_on_a_fourier_basis(n_rot):
    """Pair ``f`` turns by ``2 pi f / n_rot`` a unit of phase: summed over the pairs,
    ``cos(omega m)`` is ``n_rot/2`` at ``m = 0``, 0 at even and 1 at odd ``m`` in
    ``(0, n_rot)`` (the Dirichlet kernel); pairs past ``n_rot`` do not turn."""
    w = phase_freqs(n_rot + 4, n_rot)
    assert torch.equal(w[n_rot // 2:], torch.zeros(2, dtype=torch.float64))
    assert_close(w[:n_rot // 2], torch.arange(n_rot // 2) * 2 * math.pi / n_rot)
    for m in range(n_rot):
        got = float(torch.cos(w[:n_rot // 2] * m).sum())
        want = n_rot / 2 if m == 0 else (0.0 if m % 2 == 0 else 1.0)
        assert abs(got - want) < 1e-9, (m, got)


@pytest.mark.parametrize("rate", [2.0, 4.0])
def test_the_clock_rate_puts_the_basis_at_finer_phase_steps(rate):
    """``clock_rate`` r: pair ``f`` turns by ``r 2 pi f / n_rot`` a unit of phase, so
    the Dirichlet kernel of the test above holds at phase steps of ``1 / r``: keys an
    activity of ``1 / r`` apart are as distinct as whole units are at rate 1."""
    n_rot = 16
    w = phase_freqs(n_rot, n_rot, rate=rate)
    assert_close(w, phase_freqs(n_rot, n_rot) * rate)
    for m in range(n_rot):
        got = float(torch.cos(w * (m / rate)).sum())
        want = n_rot / 2 if m == 0 else (0.0 if m % 2 == 0 else 1.0)
        assert abs(got - want) < 1e-9, (m, got)
    cos, sin = phase_table(torch.tensor([0.25 / rate]), n_rot, n_rot, rate=rate)
    assert_close(cos, phase_table(torch.tensor([0.25]), n_rot, n_rot)[0])
    with pytest.raises(ValueError, match="rate"):
        phase_freqs(n_rot, n_rot, rate=0.0)


def test_time_is_the_default_and_the_option_adds_rows_and_state():
    plain = an.AMSU(6, 12, n_astrocytes=3, d_key=8, rotary=True)
    assert plain.spec.clock == "time" and plain.clock_bias is None
    assert plain.init_state(2).phase is None
    assert [n for n, _ in plain.spec.parts] == ["I", "K", "V", "Q"]
    layer = an.AMSU(6, 12, n_astrocytes=3, d_key=8, rotary=True, clock="activity")
    assert [n for n, _ in layer.spec.parts] == ["I", "K", "V", "Q", "E"]
    assert layer.weight.shape[0] == plain.weight.shape[0] + 3
    assert layer.init_state(2).phase.shape == (2, 3)
    assert "clock='activity'" in repr(layer) and "clock_rate" not in repr(layer)
    assert "clock_rate=2.0" in repr(an.AMSU(6, 12, n_astrocytes=3, d_key=8, rotary=True,
                                             clock="activity", clock_rate=2.0))
    assert layer.spec.decay_clock == "time" and "decay_clock" not in repr(layer)
    assert "decay_clock='activity'" in repr(an.AMSU(6, 12, n_astrocytes=3, d_key=8,
                                                    rotary=True, clock="activity",
                                                    decay_clock="activity"))


@pytest.mark.parametrize("kw,match", [
    (dict(clock="activity"), "clock='activity' turns the rotary channels"),
    (dict(clock="activity", rotary=True, rotary_fraction=0.25), "leaves 2 of d_key=8"),
    (dict(clock="activity", rotary=True, astrocyte=False), "astrocyte=False"),
    (dict(clock="activity", rotary=True, astro_model="li-rinzel"), "li-rinzel"),
    (dict(clock="space", rotary=True), "clock"),
    (dict(clock="activity", rotary=True, clock_step=0.0), "clock_step"),
    (dict(rotary=True, clock_rate=2.0), "clock_rate=2.0 is an option of clock='activity'"),
    (dict(clock="activity", rotary=True, clock_rate=0.0), "clock_rate"),
    (dict(clock="activity", rotary=True, clock_rate=float("nan")), "clock_rate"),
    (dict(rotary=True, decay_clock="activity"), "decay_clock='activity'.*only "
     "clock='activity' has"),
    (dict(clock="activity", rotary=True, decay_clock="space"), "decay_clock"),
    (dict(rotary=True, clock_threshold=0.1), "clock_threshold=0.1 is an option of "
     "clock='activity'"),
    (dict(clock="activity", rotary=True, clock_threshold=-0.1), "clock_threshold"),
    (dict(clock="activity", rotary=True, clock_threshold=float("nan")), "clock_threshold"),
])
def test_errors_where_the_option_cannot_apply(kw, match):
    with pytest.raises(ValueError, match=match):
        an.AMSU(6, 12, n_astrocytes=3, d_key=8, **kw)


def test_state_errors_name_the_phase():
    layer = an.AMSU(6, 12, n_astrocytes=3, d_key=8, rotary=True, clock="activity")
    st = layer.init_state(2)
    x = torch.randn(4, 2, 6)
    with pytest.raises(ValueError, match=r"state.phase must have shape \[2, 3\]"):
        layer.run(x, an.AMSUState(st.u, st.H, 0, None))
    with pytest.raises(ValueError, match=r"state.phase must have shape"):
        layer.run(x, st._replace(phase=torch.zeros(2, 4)))
    plain = an.AMSU(6, 12, n_astrocytes=3, d_key=8, rotary=True)
    with pytest.raises(ValueError, match="state.phase must be None"):
        plain.run(x, plain.init_state(2)._replace(phase=torch.zeros(2, 3)))
    with pytest.raises(TypeError, match="state.phase must be float64"):
        layer.run(x, st._replace(phase=torch.zeros(2, 3)))
    with an.validation(True), pytest.raises(ValueError, match="state.phase"):
        layer.run(x, st._replace(phase=torch.full((2, 3), float("nan"), dtype=torch.float64)))


def test_the_integer_export_refuses_the_option_by_name():
    m = an.AMSU(6, 8, n_astrocytes=2, d_key=4, rotary=True, clock="activity")
    with pytest.raises(ValueError, match="clock='activity'.*no integer form"):
        nm.quantize(m, calibration=torch.rand(10, 3, 6))


def test_spikingjelly_steps_and_sequence_carry_the_phase():
    pytest.importorskip("spikingjelly")
    from spikingjelly.activation_based import functional as sjf

    from astro_neuron.integrations.spikingjelly import AMSUNode
    torch.manual_seed(3)
    kw = dict(rotary=True, clock="activity", conv_size=2)
    node_s = AMSUNode(6, 12, 3, 8, step_mode="s", **kw).double()
    node_m = AMSUNode.from_amsu(node_s.amsu, step_mode="m")
    x = torch.randn(7, 2, 6, dtype=torch.float64)
    ys = torch.stack([node_s(x[t]) for t in range(7)])
    ym = node_m(x)
    assert torch.equal(ys, ym) or float((ys - ym).abs().max()) == 0.0
    assert_close(node_s.phase, node_m.phase, torch.float64, "phase memory")
    sjf.reset_net(node_m)
    assert node_m.phase is None
    line = AMSUNode.from_amsu(an.AMSU(6, 12, 3, 8, conv_size=3), step_mode="m")
    assert line(torch.randn(5, 2, 6)).shape == (5, 2, 12)   # the delay line alone: 4 memories
    assert line.conv.shape == (2, 2, 3 * 8 + 12)


def test_snntorch_cell_moves_and_detaches_the_phase():
    from astro_neuron.integrations.snntorch import AstroLeaky
    cell = AstroLeaky(6, 12, n_astrocytes=3, d_key=8, rotary=True, clock="activity",
                      init_hidden=True)
    x = torch.randn(5, 2, 6)
    cell.forward_sequence(x)
    assert cell.state.phase.shape == (2, 3) and cell.state.phase.requires_grad
    cell.detach_hidden()
    assert not cell.state.phase.requires_grad
    cell.double()
    assert cell.state.phase.dtype == torch.float64


@pytest.mark.parametrize("sensing,rate,decay,threshold", [
    ("identity", 1.0, "time", 0.0), ("relu-key", 1.0, "time", 0.0),
    ("relu-key", 2.0, "time", 0.0), ("relu-key", 2.0, "activity", 0.0),
    ("relu-key", 2.0, "activity", 0.05)])
def test_language_model_step_and_prefill_agree_with_the_parallel_form(sensing, rate, decay,
                                                                      threshold):
    torch.manual_seed(4)
    cfg = AMSNetConfig(vocab_size=64, block_size=64, n_layer=2, n_head=2, d_model=32,
                       clock="activity", astro_gain=1.0, spiking=False, conv_size=3,
                       sensing=sensing, clock_rate=rate, decay_clock=decay,
                       clock_threshold=threshold)
    m = AMSNet(cfg).double()
    x = torch.randint(0, 64, (3, 30))
    ref, _ = m(x)
    cache = m.init_cache(3)
    steps = torch.stack([m.step(x[:, t], cache)[0] for t in range(30)], 1)
    assert_close(steps, ref, torch.float64, "step logits")
    _, cache = m.prefill(x[:, :20])
    assert all(p.shape == (3, 2) for p in cache.phase)
    rest = torch.stack([m.step(x[:, t], cache)[0] for t in range(20, 30)], 1)
    assert_close(rest, ref[:, 20:], torch.float64, "prefill + step logits")


@pytest.mark.parametrize("kw,match", [
    (dict(clock="space"), "clock"),
    (dict(arch="transformer", clock="activity"), "clock='activity'"),
    (dict(clock_rate=2.0), "clock_rate=2.0 is an option of clock='activity'"),
    (dict(clock="activity", clock_rate=-1.0), "clock_rate"),
    (dict(decay_clock="activity"), "decay_clock='activity'"),
    (dict(clock="activity", decay_clock="steps"), "decay_clock"),
    (dict(arch="transformer", decay_clock="activity"), "decay_clock"),
    (dict(clock_threshold=0.1), "clock_threshold=0.1 is an option"),
    (dict(clock="activity", clock_threshold=-1.0), "clock_threshold"),
])
def test_language_model_config_refuses_a_clock_option_where_it_cannot_apply(kw, match):
    with pytest.raises(ValueError, match=match):
        AMSNetConfig(**kw)


@pytest.mark.parametrize("name,value", [("clock_rate", 2.0), ("decay_clock", "activity"),
                                        ("clock_threshold", 0.01)])
def test_language_model_config_gives_each_clock_option_to_the_unit(name, value):
    m = AMSNet(AMSNetConfig(vocab_size=64, n_layer=1, n_head=2, d_model=32,
                            clock="activity", **{name: value}))
    assert getattr(m.blocks[0].amsu.spec, name) == value


def test_language_model_config_checks_the_rotary_channels():
    with pytest.raises(ValueError, match="leaves 0"):
        AMSNet(AMSNetConfig(vocab_size=64, n_layer=1, n_head=2, d_model=32,
                            clock="activity", rotary_fraction=0.0))
