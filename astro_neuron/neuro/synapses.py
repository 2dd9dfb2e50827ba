"""Synapses of a :class:`~astro_neuron.neuro.network.Network`: Tsodyks-Markram short-term
plasticity, and the gliotransmitter that modulates its release probability.

**Tsodyks-Markram** (Tsodyks, Pawelzik & Markram 1998; the event form of NEST's
``tsodyks2_synapse``, Fuhrmann et al. 2002). Each synapse keeps ``u`` (release
probability in use) and ``x`` (fraction of resources available). Between spikes ``u``
decays to 0 with ``tau_fac`` and ``x`` recovers to 1 with ``tau_rec``; at a
pre-synaptic spike, ``h`` ms after the previous one::

    u_n = U + u_{n-1} (1 - U) exp(-h / tau_fac)
    x_n = 1 + (x_{n-1} - u_{n-1} x_{n-1} - 1) exp(-h / tau_rec)
    r_n = u_n x_n          (the fraction released: the spike's efficacy)

and the post-synaptic neuron receives ``weight * r_n``. With ``u = 0, x = 1`` before
the first spike, the first spike releases ``U``. NEST 3.10's ``tsodyks2_synapse``
started with ``u = U, x = 1`` sends the same efficacies (checked with NEST's
``weight_recorder``: equal to the last digit; the export sets ``u = U``).

**Gliotransmitter modulation** (De Pitta et al. 2011; the Brian2 examples of Stimberg
et al. 2019): pre-synaptic receptors bound by gliotransmitter, a fraction
``Gamma`` in [0, 1], shift the synapse's resting release probability::

    U_eff = (1 - Gamma) U + alpha Gamma

``alpha < U``: release-decreasing gliotransmission (the examples' ``alpha = 0``),
``alpha > U``: release-increasing. ``Gamma`` is kept per astrocyte
(:class:`Gliotransmission`); a synapse onto neuron ``j`` sees the mean ``Gamma`` of
the astrocytes contacting ``j``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from astro_neuron.validate import number_fields

__all__ = ["TsodyksMarkram", "Gliotransmission", "tm_release", "tm_events", "tm_events_ode"]


@dataclass(frozen=True)
class TsodyksMarkram:
    """Short-term plasticity of a projection. Defaults: NEST ``tsodyks2_synapse``
    (``U`` 0.5, ``tau_rec`` 800 ms, ``tau_fac`` 0: depressing). Times in ms;
    ``tau_fac = 0`` means no facilitation (``u`` returns to 0 at once)."""

    U: float = 0.5            # resting release probability (1)
    tau_rec: float = 800.0    # ms, recovery of resources (depression)
    tau_fac: float = 0.0      # ms, decay of u (facilitation); 0: none

    def __post_init__(self) -> None:
        number_fields(self, positive=("tau_rec",), non_negative=("tau_fac",), unit=("U",))

    def decays(self, h_ms):
        """``(exp(-h / tau_fac), exp(-h / tau_rec))`` for intervals ``h`` (ms)."""
        h = np.asarray(h_ms, dtype=np.float64)
        fac = np.zeros_like(h) if self.tau_fac == 0 else np.exp(-h / self.tau_fac)
        return fac, np.exp(-h / self.tau_rec)


@dataclass(frozen=True)
class Gliotransmission:
    """Gliotransmitter release by an astrocyte and its effect on release probability.

    The astrocyte releases when its calcium signal crosses ``threshold`` upwards
    (Li-Rinzel: Ca in µM; linear astrocyte: its trace, in units of sensed spike
    weight). A release of a fraction ``U_A`` of its resources ``x_A`` raises the bound
    fraction of pre-synaptic receptors, ``Gamma += (1 - exp(-strength x_A)) (1 -
    Gamma)``, then ``x_A -= U_A x_A``; ``Gamma`` decays with ``tau_G``, ``x_A``
    recovers with ``tau_A``.

    Defaults from Stimberg et al. 2019 (Brian2 neuron-glia examples, after De Pitta
    et al. 2011): ``C_Theta`` 0.5 µM, ``Omega_A`` 0.6/s (``tau_A`` 1667 ms),
    ``U_A`` 0.6, ``Omega_G`` 0.5/min (``tau_G`` 120 s), ``alpha`` 0. ``strength``
    = ``O_G rho_e G_T U_A / Omega_e`` = 1.5/(µM s) x 6.5e-4 x 200 mM x 0.6 / (60/s)
    = 1.95 is the fast-clearance limit of their ``dGamma_S/dt = O_G G_A (1 - Gamma_S)
    - Omega_G Gamma_S``: the released gliotransmitter ``G_A`` is cleared in 1/60 s,
    far faster than ``Gamma`` changes, so a release acts as one jump.
    """

    threshold: float = 0.5    # calcium signal that triggers release (model's unit)
    alpha: float = 0.0        # release probability at full receptor occupancy (1)
    strength: float = 1.95    # jump exponent per release at full resources (1)
    U_A: float = 0.6          # fraction of gliotransmitter resources released (1)
    tau_A: float = 1000.0 / 0.6   # ms, recovery of gliotransmitter resources
    tau_G: float = 120000.0   # ms, unbinding of pre-synaptic receptors

    def __post_init__(self) -> None:
        number_fields(self, positive=("tau_A", "tau_G"), non_negative=("strength",),
                      unit=("alpha", "U_A"))

    def u_eff(self, U: float, gamma):
        """Resting release probability with receptor occupancy ``gamma``."""
        return (1.0 - gamma) * U + self.alpha * gamma


def tm_release(u, x, h_ms, U, p: TsodyksMarkram):
    """One pre-synaptic spike on synapses with state ``(u, x)`` (the values after the
    previous spike's update), ``h_ms`` after that spike, resting release probability
    ``U`` (a number or per synapse): returns ``(u_new, x_new, r)``. Vectorised form of
    the event equations (the network uses it; tested against :func:`tm_events`)."""
    ef, ed = p.decays(h_ms)
    x_new = 1.0 + (x - x * u - 1.0) * ed
    u_new = U + u * (1.0 - U) * ef
    return u_new, x_new, u_new * x_new


def tm_events(spike_times_ms, p: TsodyksMarkram, U_eff=None) -> np.ndarray:
    """Efficacies ``r_n`` of one synapse for a sorted train of spike times (ms): the
    event equations above, one spike at a time (the slow, obvious reference).
    ``U_eff``: per-spike resting release probability (default ``p.U``)."""
    t = np.asarray(spike_times_ms, dtype=np.float64)
    U = np.full(t.shape, p.U) if U_eff is None else np.asarray(U_eff, dtype=np.float64)
    u, x, last, out = 0.0, 1.0, 0.0, []
    for k, tk in enumerate(t):
        h = tk - last
        ef = 0.0 if p.tau_fac == 0 else math.exp(-h / p.tau_fac)
        x = 1.0 + (x - x * u - 1.0) * math.exp(-h / p.tau_rec)
        u = U[k] + u * (1.0 - U[k]) * ef
        out.append(u * x)
        last = tk
    return np.asarray(out)


def tm_events_ode(spike_times_ms, p: TsodyksMarkram, dt_ms: float = 0.001) -> np.ndarray:
    """The same efficacies from the differential equations, integrated with forward
    Euler steps of ``dt_ms`` (``du/dt = -u / tau_fac``, ``dx/dt = (1 - x) / tau_rec``;
    at a spike ``u += U (1 - u)``, ``r = u x``, ``x -= r``): an independent check of the
    closed form, accurate to ``O(dt_ms / tau)``."""
    t = np.asarray(spike_times_ms, dtype=np.float64)
    steps = np.rint(t / dt_ms).astype(np.int64)
    u, x, n, out = 0.0, 1.0, 0, []
    for s in steps:
        k = s - n
        # k Euler steps of the linear ODEs between spikes
        if p.tau_fac > 0:
            u *= (1.0 - dt_ms / p.tau_fac) ** k
        else:
            u = 0.0
        x = 1.0 - (1.0 - x) * (1.0 - dt_ms / p.tau_rec) ** k
        n = s
        u += p.U * (1.0 - u)
        r = u * x
        x -= r
        out.append(r)
    return np.asarray(out)
