"""The Li-Rinzel astrocyte (IP3, Ca, h) as pure functions: a nonlinear calcium model
that can replace the AM-SU's linear astrocyte (``AMSU(astro_model="li_rinzel")``).

Equations, units, parameters and their sources: docs/neuroscience.md, "The Li-Rinzel
astrocyte". In short, each entry ``(c, j)`` of the astrocyte state (key channel ``c``
of astrocyte ``a`` meeting the synapses of its neuron ``j``, the place where the
linear model keeps ``H[a, c, j]``) is one Li-Rinzel calcium compartment, as NEST's
``astrocyte_lr_1994`` writes it:

* pre-synaptic activity sensed through the key and value, ``relu(k_c v_j)``, adds
  ``delta_IP3 * relu(k_c v_j)`` to IP3 (as NEST adds ``delta_IP3`` times the summed
  weight of incoming spikes);
* between steps, IP3 relaxes to ``IP3_0`` and calcium moves through the IP3 receptor
  channel, the ER leak and the SERCA pump; ``h`` is the IP3R's inactivation gate;
* the astrocyte feeds the neuron as the linear one does: ``o = (Ca - Ca_rest)^T q``,
  read by the query, scaled by ``g_astro / sqrt(d_k)`` before the threshold.

The state is one tensor ``[B, 3, A, d_k, d_v]`` holding (IP3 µM, Ca µM, h in [0, 1]).
Time is in milliseconds: ``dt`` is the step in ms. The ODE is integrated with
classical Runge-Kutta (RK4) sub-steps of at most ``max_substep`` ms (NEST uses an
adaptive RKF45; the tests compare this integrator with scipy's ``solve_ivp``). The
backward pass is the RK4 adjoint written out (one autograd node per step, saving only
the step's start), tested against autograd through every operation
(:func:`li_rinzel_advance_reference`). Sequential only: there is no parallel form of
a nonlinear recurrence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from functools import cached_property
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from astro_neuron.functional.scan import astro_read

__all__ = ["LiRinzel", "li_rinzel_rhs", "li_rinzel_rhs_vjp", "li_rinzel_advance",
           "li_rinzel_advance_reference", "IP3", "CA", "H_GATE"]

IP3, CA, H_GATE = 0, 1, 2  # index of each variable in the state's variable axis


@dataclass(frozen=True)
class LiRinzel:
    """Parameters of the Li-Rinzel astrocyte; defaults from NEST ``astrocyte_lr_1994``
    (after Li & Rinzel 1994, De Young & Keizer 1992, Nadkarni & Jung 2003) except
    ``delta_IP3`` (see docs/neuroscience.md). Concentrations in µM, times in ms.
    """

    dt: float = 1.0               # ms per step (set by the layer from its ``dt``)
    Ca_tot: float = 2.0           # µM, total free Ca2+ in cytosol-volume terms
    IP3_0: float = 0.16           # µM, baseline IP3
    Kd_IP3_1: float = 0.13        # µM, IP3R dissociation constant of IP3
    Kd_IP3_2: float = 0.9434      # µM, second IP3 dissociation constant (inactivation)
    Kd_act: float = 0.08234       # µM, IP3R activation constant of Ca2+
    Kd_inh: float = 1.049         # µM, IP3R inhibition constant of Ca2+
    Km_SERCA: float = 0.1         # µM, SERCA pump half-activation
    delta_IP3: float = 0.5        # µM per unit of sensed drive relu(k v) (NEST: 0.0002 per spike weight)
    k_IP3R: float = 0.0002        # 1/(µM ms), IP3R inactivation binding rate
    rate_IP3R: float = 0.006      # 1/ms, maximal IP3R channel flux rate
    rate_L: float = 0.00011       # 1/ms, ER leak rate
    rate_SERCA: float = 0.0009    # µM/ms, maximal SERCA uptake
    ratio_ER_cyt: float = 0.185   # ER / cytosol volume ratio
    tau_IP3: float = 7142.0       # ms, IP3 decay time constant
    max_substep: float = 20.0     # ms, longest RK4 sub-step inside one step

    name: ClassVar[str] = "li_rinzel"
    n_vars: ClassVar[int] = 3

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"LiRinzel.{f.name} must be a finite number, got {v!r}")
            non_negative = f.name in ("IP3_0", "Kd_inh", "delta_IP3", "k_IP3R", "rate_IP3R",
                                      "rate_L", "rate_SERCA")
            if v < 0 or (v == 0 and not non_negative):
                kind = "non-negative" if non_negative else "positive"
                raise ValueError(f"LiRinzel.{f.name} must be {kind}, got {v!r}")

    # ------------------------------------------------------------ rest state
    @cached_property
    def rest(self) -> tuple[float, float, float]:
        """Resting ``(IP3, Ca, h)``: the fixed point of the ODE with ``IP3 = IP3_0``.

        ``h`` at rest is ``alpha_h / (alpha_h + beta_h)``; ``Ca`` solves ``dCa/dt = 0``
        by bisection on ``[0, Ca_tot]`` (the flux is positive at 0 and negative at
        ``Ca_tot``).
        """
        ip3 = self.IP3_0

        def h_inf(ca: float) -> float:
            a = self.k_IP3R * self.Kd_inh * (ip3 + self.Kd_IP3_1) / (ip3 + self.Kd_IP3_2)
            b = self.k_IP3R * ca
            return a / (a + b) if a + b > 0 else 1.0

        def flux(ca: float) -> float:
            _, dca, _ = _rhs_floats(self, ip3, ca, h_inf(ca))
            return dca

        lo, hi = 0.0, self.Ca_tot
        for _ in range(80):                     # 2^-80 * Ca_tot: below float64 resolution
            mid = 0.5 * (lo + hi)
            if flux(mid) > 0:
                lo = mid
            else:
                hi = mid
        ca = 0.5 * (lo + hi)
        return ip3, ca, h_inf(ca)

    # ------------------------------------------------------------ AM-SU protocol
    def state_shape(self, spec) -> tuple[int, ...]:
        """Per-sample state shape ``(3, A, d_k, d_v)``."""
        return (self.n_vars, spec.n_astrocytes, spec.d_key, spec.d_value)

    def init_state(self, spec, batch_size: int, device=None,
                   dtype: torch.dtype = torch.float32) -> Tensor:
        """The resting state for ``batch_size`` sequences, ``[B, 3, A, d_k, d_v]``."""
        rest = torch.tensor(self.rest, device=device, dtype=dtype)
        shape = (batch_size, *self.state_shape(spec))
        return rest.reshape(1, 3, 1, 1, 1).expand(shape).clone()

    def step(self, H: Tensor, k: Tensor, v: Tensor, q: Tensor) -> tuple[Tensor, Tensor]:
        """One step: ``(o_raw [B, A, d_v], H_new)`` from ``H`` ``[B, 3, A, d_k, d_v]``,
        ``k, q`` ``[B, A, d_k]``, ``v`` ``[B, A, d_v]``; ``o_raw`` is unscaled like
        :func:`~.scan.astro_read` (the caller applies ``g_astro / sqrt(d_k)``)."""
        H = li_rinzel_advance(H, F.relu(k[..., :, None] * v[..., None, :]), self)
        return astro_read(H[:, CA] - self.rest[CA], q), H


# ---------------------------------------------------------------- the equations

def _rhs_floats(p: LiRinzel, ip3: float, ca: float, h: float) -> tuple[float, float, float]:
    """Right-hand side on Python floats (used for the rest state)."""
    out = li_rinzel_rhs(torch.tensor([ip3], dtype=torch.float64),
                        torch.tensor([ca], dtype=torch.float64),
                        torch.tensor([h], dtype=torch.float64), p)
    return tuple(float(x) for x in out)  # type: ignore[return-value]


def li_rinzel_rhs(ip3: Tensor, ca: Tensor, h: Tensor, p: LiRinzel
                  ) -> tuple[Tensor, Tensor, Tensor]:
    """``(dIP3/dt, dCa/dt, dh/dt)`` in µM/ms and 1/ms (NEST ``astrocyte_lr_1994``).

    Calcium enters the fluxes clamped to ``[0, Ca_tot]``, as in NEST.
    """
    ca = ca.clamp(0.0, p.Ca_tot)
    m_inf = ip3 / (ip3 + p.Kd_IP3_1)
    n_inf = ca / (ca + p.Kd_act)
    ca_er = (p.Ca_tot - ca) / p.ratio_ER_cyt
    gate = m_inf * n_inf * h
    j_channel = p.ratio_ER_cyt * p.rate_IP3R * gate ** 3 * (ca_er - ca)
    j_leak = p.ratio_ER_cyt * p.rate_L * (ca_er - ca)
    ca2 = ca * ca
    j_pump = p.rate_SERCA * ca2 / (p.Km_SERCA ** 2 + ca2)
    alpha_h = p.k_IP3R * p.Kd_inh * (ip3 + p.Kd_IP3_1) / (ip3 + p.Kd_IP3_2)
    beta_h = p.k_IP3R * ca
    d_ip3 = (p.IP3_0 - ip3) / p.tau_IP3
    d_ca = j_channel - j_pump + j_leak
    d_h = alpha_h * (1.0 - h) - beta_h * h
    return d_ip3, d_ca, d_h


def _rk4(y: tuple[Tensor, Tensor, Tensor], p: LiRinzel, h_step: float):
    """One classical Runge-Kutta step of :func:`li_rinzel_rhs`; also returns the stages."""
    def add(a, b, s):
        return tuple(x + s * dx for x, dx in zip(a, b))

    y1 = add(y, k1 := li_rinzel_rhs(*y, p), h_step / 2)
    y2 = add(y, k2 := li_rinzel_rhs(*y1, p), h_step / 2)
    y3 = add(y, k3 := li_rinzel_rhs(*y2, p), h_step)
    k4 = li_rinzel_rhs(*y3, p)
    out = tuple(x + (h_step / 6) * (a + 2 * b + 2 * c + d)
                for x, a, b, c, d in zip(y, k1, k2, k3, k4))
    return out, (y, y1, y2, y3), (k1, k2, k3)


def _substeps(p: LiRinzel) -> tuple[int, float]:
    n_sub = max(1, math.ceil(p.dt / p.max_substep - 1e-9))
    return n_sub, p.dt / n_sub


def li_rinzel_rhs_vjp(ip3: Tensor, ca: Tensor, h: Tensor, g_ip3: Tensor, g_ca: Tensor,
                      g_h: Tensor, p: LiRinzel) -> tuple[Tensor, Tensor, Tensor]:
    """``J^T g``: the vector-Jacobian product of :func:`li_rinzel_rhs` at ``(ip3, ca, h)``
    with ``g = (g_ip3, g_ca, g_h)``, written out (tested against autograd)."""
    ca_c = ca.clamp(0.0, p.Ca_tot)
    inside = ca_c == ca                                         # torch.clamp's gradient mask
    ca = ca_c
    inv_k1 = (ip3 + p.Kd_IP3_1).reciprocal()
    m_inf = ip3 * inv_k1
    inv_ka = (ca + p.Kd_act).reciprocal()
    n_inf = ca * inv_ka
    diff = p.Ca_tot / p.ratio_ER_cyt - (1.0 + 1.0 / p.ratio_ER_cyt) * ca   # Ca_ER - Ca
    mh = m_inf * h
    gate = mh * n_inf
    gate2 = gate * gate
    a_ch = p.ratio_ER_cyt * p.rate_IP3R
    flux_rate = a_ch * gate2 * gate + p.ratio_ER_cyt * p.rate_L  # d(J_ch + J_leak)/d diff
    u = g_ca * gate2 * diff * (3.0 * a_ch)                       # g_ca * dJ_ch/d gate
    km2 = p.Km_SERCA ** 2
    inv_den = (ca * ca + km2).reciprocal()
    d_pump = ca * inv_den * inv_den * (2.0 * p.rate_SERCA * km2)
    inv_k2 = (ip3 + p.Kd_IP3_2).reciprocal()
    k_inh = p.k_IP3R * p.Kd_inh
    alpha = (ip3 + p.Kd_IP3_1) * inv_k2 * k_inh
    d_alpha = inv_k2 * inv_k2 * (k_inh * (p.Kd_IP3_2 - p.Kd_IP3_1))
    g_i = (u * n_inf * h * inv_k1 * inv_k1 * p.Kd_IP3_1 + g_h * d_alpha * (1.0 - h)
           - g_ip3 / p.tau_IP3)
    g_c = (u * mh * inv_ka * inv_ka * p.Kd_act
           - g_ca * (flux_rate * (1.0 + 1.0 / p.ratio_ER_cyt) + d_pump)
           - g_h * h * p.k_IP3R)
    g_c = torch.where(inside, g_c, 0.0)
    g_hh = u * m_inf * n_inf - g_h * (alpha + ca * p.k_IP3R)
    return g_i, g_c, g_hh


class _Integrate(torch.autograd.Function):
    """RK4 over one step of ``p.dt`` ms with a hand-written backward (the adjoint of
    the RK4 stages, :func:`li_rinzel_rhs_vjp`): the graph holds one node per step and
    keeps the RK4 stage states, not every intermediate of 4 x n_sub right-hand sides."""

    @staticmethod
    def forward(ctx, ip3: Tensor, ca: Tensor, h: Tensor, p: LiRinzel):  # type: ignore[override]
        ctx.p = p
        n_sub, h_step = _substeps(p)
        y, saved = (ip3, ca, h), []
        for _ in range(n_sub):
            y, stages, _ = _rk4(y, p, h_step)
            saved += [t for stage in stages for t in stage]         # 4 stages x 3 variables
        ctx.save_for_backward(*saved)
        return y

    @staticmethod
    def backward(ctx, *grads):  # type: ignore[override]
        p = ctx.p
        _, h_step = _substeps(p)
        saved = ctx.saved_tensors
        g = tuple(torch.zeros_like(saved[0]) if gr is None else gr for gr in grads)
        # y_next = y0 + h/6 (k1 + 2 k2 + 2 k3 + k4), k1 = f(y0), k2 = f(y0 + h/2 k1),
        # k3 = f(y0 + h/2 k2), k4 = f(y0 + h k3): back through k4, k3, k2, k1
        for s in reversed(range(0, len(saved), 12)):
            y0, y1, y2, y3 = (saved[s + 3 * i: s + 3 * i + 3] for i in range(4))
            yb = li_rinzel_rhs_vjp(*y3, *(x * (h_step / 6) for x in g), p)
            acc = [a + b for a, b in zip(g, yb)]
            yb = li_rinzel_rhs_vjp(*y2, *(x * (h_step / 3) + b * h_step for x, b in zip(g, yb)), p)
            acc = [a + b for a, b in zip(acc, yb)]
            yb = li_rinzel_rhs_vjp(*y1, *(x * (h_step / 3) + b * (h_step / 2)
                                          for x, b in zip(g, yb)), p)
            acc = [a + b for a, b in zip(acc, yb)]
            yb = li_rinzel_rhs_vjp(*y0, *(x * (h_step / 6) + b * (h_step / 2)
                                          for x, b in zip(g, yb)), p)
            g = tuple(a + b for a, b in zip(acc, yb))
        return (*g, None)


def li_rinzel_advance(H: Tensor, drive: Tensor, p: LiRinzel) -> Tensor:
    """Advance the state ``H`` ``[B, 3, ...]`` by one step of ``p.dt`` ms.

    As NEST's update: integrate the ODE over the step (RK4 sub-steps), clamp Ca to
    ``[0, Ca_tot]``, then add the step's input to IP3 (``+ delta_IP3 * drive``,
    ``drive >= 0``). Gradients use the hand-written RK4 adjoint (:class:`_Integrate`);
    :func:`li_rinzel_advance_reference` is the same step through plain autograd.
    """
    ip3, ca, h = _Integrate.apply(H[:, IP3], H[:, CA], H[:, H_GATE], p)
    return torch.stack((ip3 + p.delta_IP3 * drive, ca.clamp(0.0, p.Ca_tot), h), dim=1)


def li_rinzel_advance_reference(H: Tensor, drive: Tensor, p: LiRinzel) -> Tensor:
    """:func:`li_rinzel_advance` with autograd through every RK4 operation (the slow,
    obvious reference the tests compare with)."""
    n_sub, h_step = _substeps(p)
    y = (H[:, IP3], H[:, CA], H[:, H_GATE])
    for _ in range(n_sub):
        y = _rk4(y, p, h_step)[0]
    ip3, ca, h = y
    return torch.stack((ip3 + p.delta_IP3 * drive, ca.clamp(0.0, p.Ca_tot), h), dim=1)
