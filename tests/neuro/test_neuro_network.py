"""Networks in biological units (astro_neuron.neuro.network): each piece against a slow,
obvious reference, dt-independence, Dale's law and the rules, and the E/I preset's
response to its input and to its astrocytes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from astro_neuron.functional.li_rinzel import LiRinzel
from astro_neuron.neuro import Territories
from astro_neuron.neuro.circuits import ei_network
from astro_neuron.neuro.network import (
    AdExParams, LIFParams, LiRinzelAstrocyte, LinearAstrocyte, Network,
)
from astro_neuron.neuro.synapses import (
    Gliotransmission, TsodyksMarkram, tm_events, tm_events_ode, tm_release,
)


# ---------------------------------------------------------------- Tsodyks-Markram

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tm_release_matches_event_loop_and_ode(seed):
    rng = np.random.default_rng(seed)
    p = TsodyksMarkram(U=rng.uniform(0.05, 0.9), tau_rec=rng.uniform(50, 900),
                       tau_fac=float(rng.choice([0.0, rng.uniform(10, 500)])))
    t = np.cumsum(rng.exponential(30.0, 40)) + 1.0
    U = rng.uniform(0.05, 0.9, t.size)                      # per-spike (glio-modulated) U
    ref = tm_events(t, p, U_eff=U)
    u, x, last, out = 0.0, 1.0, 0.0, []
    for k, tk in enumerate(t):                              # the vectorised step
        u, x, r = tm_release(np.array([u]), np.array([x]), np.array([tk - last]), U[k], p)
        u, x, last = u[0], x[0], tk
        out.append(r[0])
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-14)
    # the closed form against the differential equations (Euler, dt 1 µs: O(dt/tau))
    t_grid = np.round(t, 3)
    np.testing.assert_allclose(tm_events_ode(t_grid, p, 0.001), tm_events(t_grid, p),
                               rtol=0, atol=2e-4)


def test_tm_first_spike_releases_U_and_depresses():
    p = TsodyksMarkram(U=0.5, tau_rec=800.0)
    r = tm_events([10.0, 20.0, 30.0, 2000.0], p)
    assert r[0] == pytest.approx(0.5)
    assert r[1] < r[0] and r[2] < r[1]                      # depression at 100 Hz
    assert r[3] > 0.45                                       # recovered after ~2 s


# ---------------------------------------------------------------- neurons

def _single(dt, params, I_e, duration=500.0):
    net = Network(dt=dt)
    net.neurons("N", 1, replace_I(params, I_e))
    return net.simulate(duration)


def replace_I(params, I_e):
    from dataclasses import replace
    return replace(params, I_e=I_e)


def test_lif_subthreshold_is_exact_and_rate_independent_of_dt():
    p = LIFParams(C_m=200.0, tau_m=20.0, E_L=-60.0, V_th=-50.0, V_reset=-60.0, t_ref=5.0)
    # below threshold: V(t) = E_L + R I (1 - exp(-t / tau_m)), exactly at every step
    run = _single(0.1, p, 80.0, 100.0)
    t = run.times()
    ref = p.E_L + 80.0 * p.tau_m / p.C_m * (1 - np.exp(-t / p.tau_m))
    np.testing.assert_allclose(run.V["N"][:, 0], ref, rtol=0, atol=1e-10)
    # above threshold: the f-I point is the closed form's to within one step per ISI,
    # at every dt (the "52 Hz at 1 ms, 769 Hz at 0.1 ms" cannot happen)
    I = 150.0
    RI = I * p.tau_m / p.C_m
    isi = p.t_ref + p.tau_m * math.log(RI / (RI - (p.V_th - p.E_L)))
    for dt in (0.1, 0.5, 1.0):
        run = _single(dt, p, I, 2000.0)
        st = run.spike_times("N")[0]
        isi_sim = np.diff(st).mean()
        assert abs(isi_sim - isi) <= dt + 1e-9, (dt, isi_sim, isi)


def test_refractory_period_and_delay_timing():
    p = LIFParams(t_ref=3.0, tau_syn_ex=0.5)
    net = Network(dt=0.1)
    net.spike_source("in", [[10.0]])
    net.neurons("N", 1, p)
    net.connect("in", "N", "all_to_all", weight=5000.0, delay=2.5)
    run = net.simulate(40.0)
    V = run.V["N"][:, 0]
    t = run.times()
    # a spike at 10 ms with delay 2.5 ms enters the synaptic current at the end of the
    # step ending at 12.5 ms, so V first moves in the next step
    first = t[np.flatnonzero(V != p.E_L)[0]]
    assert first == pytest.approx(12.6)
    net = Network(dt=0.1)
    net.neurons("N", 1, replace_I(p, 20000.0))                 # V crosses in 0.19 ms
    st = net.simulate(200.0).spike_times("N")[0]
    assert np.diff(st).min() >= p.t_ref - 1e-9
    assert np.diff(st).max() <= p.t_ref + 0.3                  # the refractory period binds


def test_adex_matches_fine_step_reference():
    """Fixed-step RK4 (sub-steps of 0.01 ms) against itself at 0.0025 ms (RK4's error
    shrinks as h^4: 256 times smaller). A spike resets V inside a sub-step, so spike
    times are as precise as the sub-step: each spike within one step (0.1 ms) of the
    reference, V equal to 1e-5 mV until the first spike."""
    from dataclasses import replace
    p = AdExParams()
    runs = [_single(0.1, replace(p, max_substep=h), 1500.0, 22.0) for h in (0.01, 0.0025)]
    s0, s1 = (r.spike_times("N")[0] for r in runs)
    assert len(s0) >= 3 and len(s0) == len(s1)
    assert np.abs(s0 - s1).max() <= 0.1 + 1e-9
    t = runs[0].times()
    before = t < s0[0] - 0.5
    assert np.abs(runs[0].V["N"][before, 0] - runs[1].V["N"][before, 0]).max() < 1e-5


# ---------------------------------------------------------------- astrocytes

def test_li_rinzel_numpy_step_equals_the_torch_reference():
    rng = np.random.default_rng(0)
    m = LiRinzelAstrocyte(LiRinzel(delta_IP3=0.5))
    a, b = m.init(5), m.init(5)
    for _ in range(300):
        drive = rng.random(5) * (rng.random(5) < 0.2)
        m.advance(a, drive, 1.0)
        m.advance_reference(b, drive, 1.0)
    np.testing.assert_allclose(a["y"], b["y"], rtol=0, atol=1e-12)
    assert a["y"][1].max() > 0.2                                # calcium actually moved


def test_linear_astrocyte_is_the_amsu_state_equation():
    """With one key and one value channel, the AM-SU's H_t = gamma H + k v^T (run by
    the AM-SU's own step) is the linear astrocyte's trace."""
    from astro_neuron.functional.amsu import AMSUParams  # noqa: F401  (same library)
    from astro_neuron.amsu import AMSU
    from astro_neuron.neuro.traces import astro_trajectory
    tau, dt, T = 50.0, 1.0, 120
    layer = AMSU(2, 1, n_astrocytes=1, d_key=1, neuron_path=False, tau_astro=(tau, tau),
                 dt=dt, bias=False).double()
    with torch.no_grad():
        layer.weight.zero_()
        w = layer.weight                                       # rows K | V | Q
        names = [n for n, _ in layer.spec.parts]
        rows = {n: i for i, n in enumerate(names)}
        w[rows["K"], 0] = 1.0                                  # k = drive
        w[rows["V"], 1] = 1.0                                  # v = 1
    drive = (torch.rand(T, 1, 1, dtype=torch.float64) < 0.2).double() * 0.7
    x = torch.cat([drive, torch.ones_like(drive)], -1)
    _, _, H = astro_trajectory(x, None, layer.params(), layer.spec, keep="full")
    m = LinearAstrocyte(tau=tau)
    st = m.init(1)
    c = []
    for t in range(T):
        m.advance(st, drive[t, 0].numpy(), dt)
        c.append(st["c"][0])
    # rtol 1e-6: the AM-SU stores log(tau) from a float32 initialisation (tau = 50 to 5e-8)
    np.testing.assert_allclose(H.detach().reshape(T).numpy(), c, rtol=1e-6, atol=1e-12)


def test_sic_formulas():
    lr = LiRinzelAstrocyte()
    st = {"y": np.array([[0.2, 0.2, 0.2], [0.1, 0.19669 + 0.0005, 0.5], [0.8, 0.8, 0.8]])}
    np.testing.assert_allclose(lr.sic(st), [0.0, 0.0, math.log((0.5 - 0.19669) * 1000)])
    lin = LinearAstrocyte(SIC_th=1.0, SIC_scale=3.0)
    np.testing.assert_allclose(lin.sic({"c": np.array([0.5, 2.0])}), [0.0, 3.0])


def test_gliotransmission_follows_its_event_equations():
    """Gamma and x_A recorded by the network against a loop over the recorded calcium:
    a release at each upward threshold crossing, exponential relaxation between."""
    gl = Gliotransmission(threshold=0.3, alpha=1.0, tau_G=2000.0, tau_A=500.0)
    net = ei_network("li_rinzel", tsodyks=True, glio=gl, dt=0.5, seed=1, n_exc=40, n_inh=10,
                     n_ext=40, n_astrocytes=2)
    run = net.simulate(1500.0, record_V=False)
    ca, gam = run.astro["astro"]["Ca"], run.astro["astro"]["gamma"]
    assert (gam[-1] > 0.3).all()                               # releases happened
    prev = np.full(ca.shape[1], 0.073)
    g, xa, out = np.zeros(ca.shape[1]), np.ones(ca.shape[1]), []
    for n in range(ca.shape[0]):
        g = g * math.exp(-0.5 / gl.tau_G)
        xa = 1 - (1 - xa) * math.exp(-0.5 / gl.tau_A)
        rel = (ca[n] >= gl.threshold) & (prev < gl.threshold)
        g = np.where(rel, g + (1 - np.exp(-gl.strength * xa)) * (1 - g), g)
        xa = np.where(rel, xa * (1 - gl.U_A), xa)
        prev = ca[n]
        out.append(g)
    np.testing.assert_allclose(gam, np.array(out), rtol=0, atol=1e-12)


# ---------------------------------------------------------------- rules and Dale's law

def test_connection_rules_and_dales_law():
    net = Network(dt=0.1, seed=3)
    net.poisson("ext", 50, 10.0)
    net.neurons("E", 40)
    net.neurons("I", 10, kind="inhibitory")
    p = net.connect("ext", "E", "fixed_indegree", indegree=7, weight=10.0)
    assert (p.mask.sum(1) == 7).all()
    p = net.connect("E", "E", "pairwise_bernoulli", p=0.3, weight=10.0)
    assert not p.mask.diagonal().any()                         # no autapses
    assert 0.2 < p.mask.mean() < 0.4
    with pytest.raises(ValueError, match="Dale's law"):
        net.connect("I", "E", "all_to_all", weight=5.0)        # inhibitory must be <= 0
    with pytest.raises(ValueError, match="Dale's law"):
        net.connect("E", "I", "all_to_all", weight=-5.0)
    with pytest.raises(ValueError, match="shorter than one step"):
        net.connect("E", "I", "all_to_all", weight=5.0, delay=0.04)
    with pytest.raises(ValueError, match="indegree"):
        net.connect("ext", "I", "fixed_indegree", indegree=51)
    with pytest.raises(ValueError, match="exceeds one spike per step"):
        Network(dt=1.0).poisson("x", 3, 2000.0)
    with pytest.raises(ValueError, match="territories cover"):
        net.astrocytes("A", "E", Territories.tiled(30, 3))
    with pytest.raises(ValueError, match=r"weight must be a number or \[n_post, n_pre\]"):
        net.connect("ext", "E", "all_to_all", weight=np.ones((3, 3)))
    with pytest.raises(ValueError, match="weight contains NaN"):
        net.connect("ext", "E", "all_to_all", weight=float("nan"))
    with pytest.raises(ValueError, match="V_init"):
        net.neurons("X", 3, V_init=[1.0, 2.0])
    with pytest.raises(ValueError, match="no group"):
        net.connect("nope", "E", "all_to_all")


@pytest.mark.parametrize("make, match", [
    (lambda: LIFParams(C_m=0.0), r"LIFParams\.C_m must be positive, got 0\.0"),
    (lambda: LIFParams(t_ref=-1.0), r"LIFParams\.t_ref must be >= 0, got -1\.0"),
    (lambda: LIFParams(I_e=True), r"LIFParams\.I_e must be a finite number, got True"),
    (lambda: LIFParams(E_L=float("nan")), r"LIFParams\.E_L must be a finite number, got nan"),
    (lambda: LIFParams(V_reset=-50.0), r"V_reset \(-50\.0\) must be below V_th"),
    (lambda: AdExParams(max_substep=0), r"AdExParams\.max_substep must be positive"),
    (lambda: AdExParams(V_peak=-55.0), "V_th <= V_peak"),
    (lambda: TsodyksMarkram(U=1.5), r"TsodyksMarkram\.U must be in \[0, 1\], got 1\.5"),
    (lambda: TsodyksMarkram(tau_fac=-1.0), r"TsodyksMarkram\.tau_fac must be >= 0"),
    (lambda: TsodyksMarkram(tau_rec="800"), r"TsodyksMarkram\.tau_rec must be a finite"),
    (lambda: Gliotransmission(alpha=-0.1), r"Gliotransmission\.alpha must be in \[0, 1\]"),
    (lambda: Gliotransmission(tau_G=0.0), r"Gliotransmission\.tau_G must be positive"),
])
def test_parameter_sets_name_the_bad_field(make, match):
    """Neurons and synapses check their numbers with one rule set
    (astro_neuron.validate.number_fields): the message names Class.field."""
    with pytest.raises(ValueError, match=match):
        make()


# ---------------------------------------------------------------- the preset

@pytest.fixture(scope="module")
def runs():
    out = {}
    for dt in (0.1, 0.5, 1.0):
        out[("linear", dt)] = ei_network("linear", dt=dt).simulate(1000.0, record_V=False)
    out["no input"] = ei_network("linear", dt=0.5, input_rate_hz=0.0).simulate(
        1000.0, record_V=False)
    out["silenced"] = ei_network("linear", dt=0.5).simulate(1000.0, record_V=False,
                                                             astro_on=False)
    out["li_rinzel"] = ei_network("li_rinzel", dt=0.5).simulate(1000.0, record_V=False)
    out["li_rinzel silenced"] = ei_network("li_rinzel", dt=0.5).simulate(
        1000.0, record_V=False, astro_on=False)
    return out


def test_rates_do_not_depend_on_dt(runs):
    """Same network at dt 0.1 / 0.5 / 1 ms (measured: E 32.0 / 30.8 / 30.6 Hz)."""
    rates = [runs[("linear", dt)].rate_hz("E") for dt in (0.1, 0.5, 1.0)]
    assert max(rates) / min(rates) < 1.15, rates
    rates_i = [runs[("linear", dt)].rate_hz("I") for dt in (0.1, 0.5, 1.0)]
    assert max(rates_i) / min(rates_i) < 1.15, rates_i


def test_preset_responds_to_input_and_to_astrocytes(runs):
    on = runs[("linear", 0.5)].rate_hz("E")
    assert runs["no input"].rate_hz("E") < 0.5 and on > 10.0       # measured 0 vs 31 Hz
    silenced = runs["silenced"].rate_hz("E")                        # measured 18 Hz
    assert on > 1.3 * silenced
    lr_on, lr_off = runs["li_rinzel"].rate_hz("E"), runs["li_rinzel silenced"].rate_hz("E")
    assert lr_on > 1.3 * lr_off                                     # measured 38 vs 18 Hz
    assert runs["li_rinzel"].astro["astro"]["Ca"].max() > 0.5       # calcium rose (µM)


def test_post_synaptic_sensing_adds_drive():
    a = ei_network("linear", dt=1.0, seed=2)
    b = ei_network("linear", dt=1.0, seed=2)
    b.astro["astro"].sense = "pre+post"
    ra, rb = (n.simulate(300.0, record_V=False, astro_on=False) for n in (a, b))
    assert (rb.astro["astro"]["c"][-1] > ra.astro["astro"]["c"][-1]).all()


def test_gliotransmission_changes_release_as_its_equations_say():
    """A Tsodyks-Markram synapse modulated by an astrocyte: the neuron's membrane equals
    that of a static network whose spike k carries weight w r_k, r_k from the event
    loop with U_eff = (1 - Gamma) U + alpha Gamma and Gamma as recorded."""
    dt, w = 0.5, 400.0
    t = np.arange(10.0, 400.0, 40.0)
    p = TsodyksMarkram(U=0.2, tau_rec=300.0, tau_fac=20.0)
    lif = LIFParams(V_th=1000.0)                                # linear: never fires

    def modulated(alpha):
        net = Network(dt=dt)
        net.spike_source("pre", [t])
        net.neurons("N", 1, lif)
        net.connect("pre", "N", "all_to_all", weight=w, delay=1.0, synapse=p)
        gl = Gliotransmission(threshold=2.5, alpha=alpha, tau_G=500.0)
        net.astrocytes("A", "N", Territories.blocks(1, 1), LinearAstrocyte(tau=200.0),
                       sic_weight=0.0, glio=gl)
        return net.simulate(450.0), gl

    out = {}
    for alpha in (0.0, 0.9):
        run, gl = modulated(alpha)
        gamma = run.astro["A"]["gamma"][:, 0]
        assert gamma.max() > 0.5                                  # the astrocyte released
        steps = np.rint(t / dt).astype(int) - 1                   # the step of each spike
        r = tm_events(t, p, U_eff=gl.u_eff(p.U, gamma[steps]))
        ref = Network(dt=dt)
        ref.spike_source("pre", [[tk] for tk in t])               # one fibre per spike
        ref.neurons("N", 1, lif)
        ref.connect("pre", "N", "all_to_all", weight=(w * r)[None], delay=1.0)
        V_ref = ref.simulate(450.0).V["N"]
        np.testing.assert_allclose(run.V["N"], V_ref, rtol=0, atol=1e-9)
        out[alpha] = (run.V["N"] - lif.E_L).sum() * dt             # mV ms: total response
    plain = Network(dt=dt)
    plain.spike_source("pre", [t])
    plain.neurons("N", 1, lif)
    plain.connect("pre", "N", "all_to_all", weight=w, delay=1.0, synapse=p)
    V_plain = (plain.simulate(450.0).V["N"] - lif.E_L).sum() * dt
    # alpha = 0 < U decreases release, alpha = 0.9 > U increases it
    # (measured: 0.70 and 1.35 times the unmodulated synapse's response; no randomness)
    assert out[0.0] < 0.8 * V_plain and out[0.9] > 1.2 * V_plain
