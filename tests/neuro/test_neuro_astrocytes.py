"""The nonlinear (Li-Rinzel) astrocyte: equations, integration, and its use in AMSU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import astro_neuron as an
from astro_neuron.astrocytes import (
    ASTRO_MODELS, LiRinzel, astro_summary, resolve_astro_model, summary_label,
)
from astro_neuron.functional.li_rinzel import (
    CA, H_GATE, IP3, li_rinzel_advance, li_rinzel_advance_reference, li_rinzel_rhs,
    li_rinzel_rhs_vjp,
)


def _rest(p: LiRinzel, n: int) -> torch.Tensor:
    return torch.tensor(p.rest, dtype=torch.float64).reshape(1, 3, 1).repeat(1, 1, n)


def _run(p: LiRinzel, drive: torch.Tensor) -> torch.Tensor:
    """Trajectory [T, 3, n] of the pure step for drive [T, n]."""
    H = _rest(p, drive.shape[1])
    out = []
    for t in range(drive.shape[0]):
        H = li_rinzel_advance(H, drive[t][None], p)
        out.append(H[0])
    return torch.stack(out)


def test_rest_state_is_a_fixed_point_close_to_nest_initial_values():
    p = LiRinzel()
    ip3, ca, h = p.rest
    d = li_rinzel_rhs(*(torch.tensor([v], dtype=torch.float64) for v in p.rest), p)
    assert max(abs(float(x)) for x in d) < 1e-12
    # NEST starts astrocyte_lr_1994 at Ca 0.073 µM, h 0.793 (Nadkarni & Jung 2003)
    assert ip3 == p.IP3_0 and abs(ca - 0.073) < 2e-3 and abs(h - 0.793) < 2e-3
    traj = _run(LiRinzel(dt=10.0), torch.zeros(1000, 1, dtype=torch.float64))  # 10 s
    assert float((traj[-1, :, 0] - torch.tensor(p.rest, dtype=torch.float64)).abs().max()) < 1e-9


def test_input_raises_ip3_then_calcium_which_returns_to_rest():
    p = LiRinzel(dt=10.0)
    drive = torch.zeros(1500, 1, dtype=torch.float64)
    drive[:20] = 0.1                                    # 200 ms of input
    traj = _run(p, drive)[:, :, 0]
    ca = traj[:, CA]
    rest_ca = p.rest[CA]
    assert float(traj[19, IP3]) > p.IP3_0 + 0.5         # IP3 jumped
    peak = int(ca.argmax())
    assert float(ca[peak]) > rest_ca + 0.2              # calcium response
    assert 20 < peak < 500                              # after the input, within 5 s
    assert abs(float(ca[-1]) - rest_ca) < 0.1 * (float(ca[peak]) - rest_ca)  # decays back


def test_calcium_positive_and_gate_bounded_without_clamping():
    p = LiRinzel(dt=20.0)
    g = torch.Generator().manual_seed(1)
    drive = torch.rand(400, 64, generator=g, dtype=torch.float64) * 2
    drive = drive * (torch.rand(400, 64, generator=g) < 0.2)
    traj = _run(p, drive)
    ca, h = traj[:, CA], traj[:, H_GATE]
    # strictly inside the clamp range: the clamp never acted
    assert float(ca.min()) > 0 and float(ca.max()) < p.Ca_tot
    assert float(h.min()) > 0 and float(h.max()) < 1
    assert float(traj[:, IP3].min()) >= p.IP3_0 * 0.99


@pytest.mark.parametrize("dt", [1.0, 20.0])
def test_agrees_with_scipy_solve_ivp(dt):
    """RK4 sub-steps against scipy's adaptive DOP853 at tight tolerances; same step
    rule (integrate over dt, clamp Ca, add the input to IP3)."""
    from scipy.integrate import solve_ivp

    p = LiRinzel(dt=dt)
    T, n = (150, 3) if dt == 1.0 else (120, 3)
    g = torch.Generator().manual_seed(0)
    drive = torch.rand(T, n, generator=g, dtype=torch.float64) * 2
    drive = drive * (torch.rand(T, n, generator=g) < 0.1)
    ours = _run(p, drive).numpy()

    def f(_t, y):
        y = torch.from_numpy(y).reshape(3, n)
        return torch.stack(li_rinzel_rhs(y[0], y[1], y[2], p)).reshape(-1).numpy()

    y = np.array([p.rest] * n).T.copy()
    ref = []
    for t in range(T):
        y = solve_ivp(f, (0.0, dt), y.reshape(-1), method="DOP853", rtol=1e-11,
                      atol=1e-13).y[:, -1].reshape(3, n)
        y[CA] = np.clip(y[CA], 0.0, p.Ca_tot)
        y[IP3] = y[IP3] + p.delta_IP3 * drive[t].numpy()
        ref.append(y.copy())
    ref = np.array(ref)
    assert ref[:, CA].max() > p.rest[CA] + 0.05          # the comparison saw a response
    err = np.abs(ours - ref).max(axis=(0, 2))
    assert err[CA] < 1e-6 and err[H_GATE] < 1e-6 and err[IP3] < 1e-9, err


def _layer(**kw):
    kw = {"n_astrocytes": 2, "d_key": 4, "astro_model": "li_rinzel", "dt": 20.0, **kw}
    return an.AMSU(6, 8, **kw)


def test_amsu_li_rinzel_step_loop_recurrent_agree_and_chunked_refuses():
    torch.manual_seed(0)
    layer = _layer().double()
    x = torch.rand(40, 3, 6, dtype=torch.float64)
    rec, s_rec = layer.run(x, mode="recurrent")
    loop, s_loop = layer.run(x, mode="loop")
    auto, _ = layer.run(x)                              # auto -> recurrent
    state, steps = None, []
    for t in range(x.shape[0]):
        out, state = layer.step_full(x[t], state)
        steps.append(out.o)
    torch.testing.assert_close(loop.o, rec.o, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(torch.stack(steps), rec.o, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(auto.o, rec.o, rtol=0, atol=0)
    torch.testing.assert_close(s_loop.H, s_rec.H, rtol=1e-10, atol=1e-12)
    assert s_rec.H.shape == (3, 3, 2, 4, 4)
    assert float(rec.o.detach().abs().max()) > 0        # the astrocyte did respond
    with pytest.raises(ValueError, match="chunked.*nonlinear"):
        layer.run(x, mode="chunked")


def test_amsu_li_rinzel_state_rest_and_output_zero_without_input():
    layer = _layer()
    out, state = layer.run(torch.zeros(10, 2, 6))
    assert float(out.o.detach().abs().max()) < 1e-6
    st = layer.init_state(2)
    assert st.H.shape == (2, 3, 2, 4, 4)
    torch.testing.assert_close(st.H[:, CA], torch.full((2, 2, 4, 4), LiRinzel().rest[CA]))


def test_amsu_li_rinzel_gradients_flow():
    torch.manual_seed(0)
    layer = _layer().double()
    x = torch.rand(25, 2, 6, dtype=torch.float64)
    out, _ = layer.run(x)
    (out.o.square().sum() + out.spikes.sum()).backward()
    K_rows = slice(8, 8 + 2 * 4)                       # rows I | K | V | Q
    assert float(layer.weight.grad[K_rows].abs().sum()) > 0
    assert float(layer.astro_gain.grad.abs().sum()) > 0


@pytest.mark.parametrize("dt,max_substep", [(20.0, 20.0), (20.0, 7.0), (1.0, 20.0)])
def test_rk4_adjoint_equals_autograd_reference(dt, max_substep):
    """The hand-written backward of li_rinzel_advance against autograd through every
    operation (li_rinzel_advance_reference), clamped calcium included."""
    p = LiRinzel(dt=dt, max_substep=max_substep)
    g = torch.Generator().manual_seed(0)
    H = _rest(p, 6).repeat(3, 1, 1)
    H[:, IP3] += torch.rand(3, 6, generator=g, dtype=torch.float64)
    H[:, CA] += 0.5 * torch.rand(3, 6, generator=g, dtype=torch.float64)
    H[0, CA, 0] = p.Ca_tot + 0.3                        # outside the clamp range
    H.requires_grad_()
    drive = torch.rand(3, 6, generator=g, dtype=torch.float64, requires_grad=True)
    fast, ref = li_rinzel_advance(H, drive, p), li_rinzel_advance_reference(H, drive, p)
    torch.testing.assert_close(fast, ref, rtol=0, atol=0)
    w = torch.randn(fast.shape, generator=g, dtype=torch.float64)
    g_fast = torch.autograd.grad((fast * w).sum(), (H, drive))
    g_ref = torch.autograd.grad((ref * w).sum(), (H, drive))
    for a, b in zip(g_fast, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)


def test_rhs_vjp_equals_autograd():
    p = LiRinzel()
    g = torch.Generator().manual_seed(2)
    y = [torch.rand(50, generator=g, dtype=torch.float64) * s for s in (2.0, 2.4, 1.0)]
    y = [t.requires_grad_() for t in y]
    w = [torch.randn(50, generator=g, dtype=torch.float64) for _ in range(3)]
    out = li_rinzel_rhs(*y, p)
    ref = torch.autograd.grad(sum((o * v).sum() for o, v in zip(out, w)), y)
    fast = li_rinzel_rhs_vjp(*(t.detach() for t in y), *w, p)
    for a, b in zip(fast, ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)


def test_registry_and_errors():
    assert set(ASTRO_MODELS) == {"linear", "li_rinzel"}
    assert resolve_astro_model("linear", 1.0) == "linear"
    assert resolve_astro_model("li_rinzel", 7.0).dt == 7.0
    assert resolve_astro_model(LiRinzel(delta_IP3=2.0), 3.0) == LiRinzel(dt=3.0, delta_IP3=2.0)
    with pytest.raises(ValueError, match="astro_model must be one of"):
        an.AMSU(4, 4, n_astrocytes=1, astro_model="hodgkin")
    with pytest.raises(TypeError, match="astro_model must be a name"):
        an.AMSU(4, 4, n_astrocytes=1, astro_model=3)
    with pytest.raises(ValueError, match="tau_IP3 must be positive"):
        LiRinzel(tau_IP3=0.0)
    with pytest.raises(ValueError, match="Ca_tot must be a finite number"):
        LiRinzel(Ca_tot=float("nan"))
    layer = _layer()
    bad = an.AMSUState(torch.zeros(2, 8), torch.zeros(2, 2, 4, 4), 0)   # a linear H
    with pytest.raises(ValueError, match=r"state.H must have shape \[2, 3, 2, 4, 4\]"):
        layer.run(torch.rand(5, 2, 6), bad)


def test_astro_summary():
    H = torch.randn(7, 2, 3, 4, 5)
    s = astro_summary(H, "linear")
    torch.testing.assert_close(s, H.flatten(-2).norm(dim=-1))
    Hn = torch.rand(7, 2, 3, 3, 4, 5)
    torch.testing.assert_close(astro_summary(Hn, "li_rinzel"), Hn[:, :, CA].mean((-2, -1)))
    assert "µM" in summary_label("li_rinzel") and "|H|" in summary_label("linear")
    with pytest.raises(ValueError, match="unknown astro_model"):
        astro_summary(H, "nope")
