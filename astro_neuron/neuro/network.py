"""Spiking networks in biological units, with astrocytes (guide: docs/neuroscience.md).

A :class:`Network` holds named groups and the projections between them:

* **neurons** (:meth:`Network.neurons`): current-based LIF neurons with exponential
  synaptic currents (:class:`LIFParams`, NEST's ``iaf_psc_exp``, integrated exactly)
  or adaptive exponential neurons with alpha-shaped conductances and a slow inward
  current input (:class:`AdExParams`, NEST's ``aeif_cond_alpha_astro``, fixed-step
  RK4 sub-steps); each group is ``"excitatory"`` or ``"inhibitory"`` (Dale's law:
  every synapse a group makes has the group's sign);
* **sources** (:meth:`Network.poisson`, :meth:`Network.spike_source`): Poisson
  fibres in Hz or given spike times in ms;
* **projections** (:meth:`Network.connect`): pairwise probability or fixed in-degree,
  a weight in pA (LIF targets: the jump of the synaptic current) or nS (AdEx targets:
  the peak conductance of the alpha function), a delay in ms, static or
  Tsodyks-Markram synapses (:class:`~astro_neuron.neuro.synapses.TsodyksMarkram`);
* **astrocytes** (:meth:`Network.astrocytes`): over territories of a neuron group,
  either the AM-SU's linear astrocyte (:class:`LinearAstrocyte`) or the Li-Rinzel
  calcium astrocyte (:class:`LiRinzelAstrocyte`, NEST's ``astrocyte_lr_1994``). Both
  plug into the same coupling: they sense the pre-synaptic spikes of the excitatory
  synapses in their territory (and optionally the post-synaptic spikes), and act back
  through a slow inward current (SIC, as NEST's ``sic_connection``) and, optionally,
  gliotransmitter modulation of the release probability of the Tsodyks-Markram
  synapses they ensheathe (:class:`~astro_neuron.neuro.synapses.Gliotransmission`).

Units: time in ms, potentials in mV, currents in pA, conductances in nS, capacitance in
pF, rates in Hz, calcium and IP3 in µM. Every quantity is physical, so a network's
dynamics do not depend on ``dt`` beyond the step's resolution of spike times (the tests
run one network at 0.1, 0.5 and 1 ms).

Timing follows NEST, so an exported network runs the same way there: a neuron that
crosses threshold during step ``n`` (the interval ``(n dt, (n+1) dt]``) spikes at
``(n+1) dt``; a spike emitted at ``t`` with delay ``d`` is added to its target's
synaptic current (or IP3) at the end of the step that ends at ``t + d``; the SIC an
astrocyte computes at the end of a step reaches its neurons with the coupling's
delay in the same way. Integration runs in NumPy, float64, one step at a time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Optional, Sequence, Union

import numpy as np
import torch
from tqdm import tqdm

from astro_neuron.functional.li_rinzel import CA, H_GATE, IP3, LiRinzel, li_rinzel_advance
from astro_neuron.neuro.recording import Recording
from astro_neuron.neuro.synapses import Gliotransmission, TsodyksMarkram, tm_release
from astro_neuron.neuro.territories import Territories
from astro_neuron.validate import (
    choice, number_fields, positive_int, positive_number, probability,
)

__all__ = ["LIFParams", "AdExParams", "LinearAstrocyte", "LiRinzelAstrocyte", "Network",
           "NetworkRun", "NeuronGroup", "SourceGroup", "Projection", "AstrocyteGroup"]

KINDS = ("excitatory", "inhibitory")


# ---------------------------------------------------------------- neuron models

@dataclass(frozen=True)
class LIFParams:
    """Leaky integrate-and-fire neuron with exponential synaptic currents (NEST
    ``iaf_psc_exp``; defaults are NEST's). ``C_m dV/dt = -(V - E_L) C_m / tau_m +
    I_ex + I_in + I_e + I_SIC``; ``dI_x/dt = -I_x / tau_syn_x``; a spike of weight
    ``w`` pA adds ``w`` to ``I_ex`` (``w > 0``) or ``I_in`` (``w < 0``). Integrated
    exactly over each step (the propagator of Rotter & Diesmann 1999)."""

    C_m: float = 250.0        # pF
    tau_m: float = 10.0       # ms
    E_L: float = -70.0        # mV
    V_th: float = -55.0       # mV
    V_reset: float = -70.0    # mV
    t_ref: float = 2.0        # ms
    tau_syn_ex: float = 2.0   # ms
    tau_syn_in: float = 2.0   # ms
    I_e: float = 0.0          # pA

    nest_model = "iaf_psc_exp"
    weight_unit = "pA"

    def __post_init__(self) -> None:
        number_fields(self, positive=("C_m", "tau_m", "tau_syn_ex", "tau_syn_in"),
                      non_negative=("t_ref",))
        if self.V_reset >= self.V_th:
            raise ValueError(f"LIFParams: V_reset ({self.V_reset}) must be below V_th ({self.V_th})")


@dataclass(frozen=True)
class AdExParams:
    """Adaptive exponential integrate-and-fire neuron with alpha-shaped conductances
    and a slow inward current input (NEST ``aeif_cond_alpha_astro``; defaults are
    NEST's, after Brette & Gerstner 2005). A spike of weight ``w`` nS starts an alpha
    conductance that peaks at ``w`` after ``tau_syn``. Integrated with classical RK4
    sub-steps of at most ``max_substep`` ms (NEST: adaptive RKF45), ``V`` capped at
    ``V_peak`` in the right-hand side as NEST does."""

    C_m: float = 281.0        # pF
    g_L: float = 30.0         # nS
    E_L: float = -70.6        # mV
    V_th: float = -50.4       # mV
    Delta_T: float = 2.0      # mV
    V_peak: float = 0.0       # mV
    V_reset: float = -60.0    # mV
    t_ref: float = 0.0        # ms
    a: float = 4.0            # nS
    b: float = 80.5           # pA
    tau_w: float = 144.0      # ms
    E_ex: float = 0.0         # mV
    E_in: float = -85.0       # mV
    tau_syn_ex: float = 0.2   # ms
    tau_syn_in: float = 2.0   # ms
    I_e: float = 0.0          # pA
    max_substep: float = 0.01  # ms, longest RK4 sub-step (this project)

    nest_model = "aeif_cond_alpha_astro"
    weight_unit = "nS"

    def __post_init__(self) -> None:
        number_fields(self, positive=("C_m", "g_L", "Delta_T", "tau_w", "tau_syn_ex",
                                      "tau_syn_in", "max_substep"),
                      non_negative=("t_ref",))
        if not self.V_reset < self.V_peak or self.V_peak < self.V_th:
            raise ValueError("AdExParams needs V_reset < V_peak and V_th <= V_peak")


# ---------------------------------------------------------------- astrocyte models

@dataclass(frozen=True)
class LinearAstrocyte:
    """The AM-SU's linear astrocyte as a cell: its state equation ``H_t = gamma H_{t-1}
    + k_t v_t^T`` with one key and one value channel (``d_k = d_v = 1``), the key being
    the sensed spike weight of the step and the value 1, ``gamma = exp(-dt / tau)``.
    The state ``c`` (the "calcium-like" trace) is in units of sensed spike weight: a
    sensed spike of weight 1 adds 1, which then decays with ``tau`` ms.

    SIC (pA, before the contact's weight): ``min(SIC_scale * max(c - SIC_th, 0),
    SIC_max)``. The state has no ceiling; ``SIC_max`` (default none) caps the current
    the way the Li-Rinzel SIC is capped by bounded calcium and its logarithm, which
    keeps a recurrent network whose astrocytes sense its own excitatory synapses from
    running away (docs/neuroscience.md, "Which astrocyte")."""

    tau: float = 2000.0       # ms
    SIC_th: float = 1.0       # sensed spike weight
    SIC_scale: float = 1.0    # pA per unit of c above SIC_th
    SIC_max: float = math.inf  # pA, ceiling of the SIC

    name = "linear"
    signal = "c"
    signal_unit = "sensed spike weight"

    def __post_init__(self) -> None:
        v = self.SIC_max
        if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v) or v < 0:
            raise ValueError(f"LinearAstrocyte.SIC_max must be >= 0 (inf: none), got {v!r}")
        for k in ("tau", "SIC_th", "SIC_scale"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                    or v < 0 or (k == "tau" and v == 0):
                raise ValueError(f"LinearAstrocyte.{k} must be a finite number "
                                 f"{'> 0' if k == 'tau' else '>= 0'}, got {v!r}")

    def init(self, A: int) -> dict:
        return {"c": np.zeros(A)}

    def advance(self, st: dict, drive: np.ndarray, dt: float) -> None:
        st["c"] = st["c"] * math.exp(-dt / self.tau) + drive

    def calcium(self, st: dict) -> np.ndarray:
        return st["c"]

    def sic(self, st: dict) -> np.ndarray:
        return np.minimum(self.SIC_scale * np.maximum(st["c"] - self.SIC_th, 0.0), self.SIC_max)


@dataclass(frozen=True)
class LiRinzelAstrocyte:
    """The Li-Rinzel calcium astrocyte of NEST's ``astrocyte_lr_1994`` (the equations of
    :mod:`astro_neuron.functional.li_rinzel`, RK4 sub-steps). A sensed spike of weight
    ``w`` adds ``delta_IP3 * w`` µM to IP3 at the end of its step. SIC (pA, before the
    contact's weight), as NEST after Nadkarni & Jung 2003: ``SIC_scale * ln((Ca -
    SIC_th) * 1000)`` where ``(Ca - SIC_th) * 1000 > 1`` (Ca in nM above threshold),
    else 0.

    ``cell``: the Li-Rinzel parameters (``dt`` is set by the network). Default
    ``delta_IP3`` 0.5 µM and ``tau_IP3`` 2 ms...7142 ms: see the presets; NEST's own
    default ``delta_IP3`` is 0.0002 µM, its astrocyte examples use 0.5.
    """

    cell: LiRinzel = field(default_factory=lambda: LiRinzel(delta_IP3=0.5))
    SIC_th: float = 0.19669   # µM (NEST)
    SIC_scale: float = 1.0    # pA (NEST)
    start: str = "nest"       # initial state: "nest" (IP3_0, Ca 0.073, h 0.793) or "rest"

    name = "li_rinzel"
    signal = "Ca"
    signal_unit = "µM"

    def __post_init__(self) -> None:
        if not isinstance(self.cell, LiRinzel):
            raise TypeError(f"cell must be a LiRinzel, got {type(self.cell).__name__}")
        for k in ("SIC_th", "SIC_scale"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"LiRinzelAstrocyte.{k} must be a finite number >= 0, got {v!r}")
        choice("start", self.start, ("nest", "rest"))

    def init(self, A: int) -> dict:
        y0 = ((self.cell.IP3_0, 0.073, 0.793) if self.start == "nest" else self.cell.rest)
        return {"y": np.tile(np.asarray(y0, dtype=np.float64)[:, None], (1, A))}

    def advance(self, st: dict, drive, dt: float) -> None:
        """One step: RK4 sub-steps of the ODE, Ca clamped, then ``IP3 += delta_IP3 *
        drive``: :func:`~astro_neuron.functional.li_rinzel.li_rinzel_advance` in NumPy
        (tested equal to it), about 10x faster than torch on a few astrocytes."""
        p = self.cell
        n_sub = max(1, math.ceil(dt / p.max_substep - 1e-9))
        h = dt / n_sub
        y = st["y"]
        for _ in range(n_sub):
            k1 = _lr_rhs(y, p)
            k2 = _lr_rhs(y + 0.5 * h * k1, p)
            k3 = _lr_rhs(y + 0.5 * h * k2, p)
            k4 = _lr_rhs(y + h * k3, p)
            y = y + (h / 6.0) * (k1 + 2 * k2 + 2 * k3 + k4)
        y[CA] = np.clip(y[CA], 0.0, p.Ca_tot)
        y[IP3] = y[IP3] + p.delta_IP3 * drive
        st["y"] = y

    def advance_reference(self, st: dict, drive, dt: float) -> None:
        """The same step through the project's torch implementation (the reference)."""
        p = replace(self.cell, dt=dt)
        y = torch.from_numpy(st["y"])[None]                         # [1, 3, A]
        d = torch.as_tensor(np.broadcast_to(np.asarray(drive, np.float64), st["y"].shape[1:]).copy())
        with torch.no_grad():
            y = li_rinzel_advance(y, d[None].clone(), p)
        st["y"] = y[0].numpy()

    def calcium(self, st: dict) -> np.ndarray:
        return st["y"][CA]

    def ip3(self, st: dict) -> np.ndarray:
        return st["y"][IP3]

    def h(self, st: dict) -> np.ndarray:
        return st["y"][H_GATE]

    def sic(self, st: dict) -> np.ndarray:
        thr = (st["y"][CA] - self.SIC_th) * 1000.0
        out = np.zeros_like(thr)
        m = thr > 1.0
        out[m] = np.log(thr[m]) * self.SIC_scale
        return out


AstroModel = Union[LinearAstrocyte, LiRinzelAstrocyte]


def _lr_rhs(y: np.ndarray, p: LiRinzel) -> np.ndarray:
    """:func:`~astro_neuron.functional.li_rinzel.li_rinzel_rhs` on a NumPy ``[3, ...]``."""
    ip3, h = y[IP3], y[H_GATE]
    ca = np.clip(y[CA], 0.0, p.Ca_tot)
    m_inf = ip3 / (ip3 + p.Kd_IP3_1)
    n_inf = ca / (ca + p.Kd_act)
    diff = (p.Ca_tot - ca) / p.ratio_ER_cyt - ca
    gate = m_inf * n_inf * h
    ca2 = ca * ca
    out = np.empty_like(y)
    out[IP3] = (p.IP3_0 - ip3) / p.tau_IP3
    out[CA] = (p.ratio_ER_cyt * p.rate_IP3R * gate ** 3 * diff
               - p.rate_SERCA * ca2 / (p.Km_SERCA ** 2 + ca2) + p.ratio_ER_cyt * p.rate_L * diff)
    alpha_h = p.k_IP3R * p.Kd_inh * (ip3 + p.Kd_IP3_1) / (ip3 + p.Kd_IP3_2)
    out[H_GATE] = alpha_h * (1.0 - h) - p.k_IP3R * ca * h
    return out


# ---------------------------------------------------------------- groups

@dataclass
class NeuronGroup:
    name: str
    n: int
    params: Union[LIFParams, AdExParams]
    kind: str
    V_init: np.ndarray
    index: int = 0

    @property
    def model(self) -> str:
        return "lif" if isinstance(self.params, LIFParams) else "adex"


@dataclass
class SourceGroup:
    name: str
    n: int
    kind: str
    rate_hz: Optional[np.ndarray] = None          # [n] or [T?] callable-free: constant rates
    spike_times: Optional[list] = None            # list of n arrays (ms)
    window: Optional[tuple] = None                # (start, stop) ms of the rate
    index: int = 0


@dataclass
class Projection:
    pre: str
    post: str
    weight: np.ndarray                            # [n_post, n_pre], signed, 0 = no synapse
    mask: np.ndarray                              # [n_post, n_pre] bool
    delay: float                                  # ms
    synapse: Optional[TsodyksMarkram] = None
    rule: str = ""

    @property
    def n_synapses(self) -> int:
        return int(self.mask.sum())


@dataclass
class AstrocyteGroup:
    name: str
    target: str
    territories: Territories
    model: AstroModel
    sense: str                                    # "pre" or "pre+post"
    sense_weight: float
    sic_weight: float                             # pA per unit of SIC (NEST sic_connection weight)
    glio: Optional[Gliotransmission]
    delay: float                                  # ms, sensing and SIC
    sensed: dict = field(default_factory=dict)    # pre group -> [A, n_pre] sensed weights

    @property
    def n(self) -> int:
        return self.territories.n_astrocytes


# ---------------------------------------------------------------- the network

class Network:
    """A network of neuron groups, spike sources, projections and astrocytes, in ms.

    Args:
        dt: simulation step in ms (0.1 is NEST's default; every delay must be a
            multiple of it after rounding, and at least one step).
        seed: seed of the connectivity and Poisson draws (NumPy ``default_rng``).

    ::

        net = Network(dt=0.1, seed=1)
        net.poisson("ext", 100, rate_hz=20.0)
        net.neurons("E", 80, LIFParams(), kind="excitatory")
        net.connect("ext", "E", rule="fixed_indegree", indegree=20, weight=80.0, delay=1.0)
        net.astrocytes("astro", "E", Territories.tiled(80, 4), LinearAstrocyte())
        run = net.simulate(500.0)
    """

    def __init__(self, dt: float = 0.1, seed: int = 0) -> None:
        self.dt = positive_number("dt", dt)
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)
        self.groups: dict[str, Union[NeuronGroup, SourceGroup]] = {}
        self.projections: list[Projection] = []
        self.astro: dict[str, AstrocyteGroup] = {}

    # ------------------------------------------------------------ building
    def _new_name(self, name: str) -> str:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a group name must be a non-empty string, got {name!r}")
        if name in self.groups or name in self.astro:
            raise ValueError(f"the network already has a group named {name!r}")
        return name

    def neurons(self, name: str, n: int, params: Union[LIFParams, AdExParams, None] = None,
                kind: str = "excitatory", V_init=None) -> NeuronGroup:
        """Add ``n`` neurons. ``V_init``: initial membrane potential in mV (a number,
        ``[n]``, or ``(low, high)`` for uniform draws; default ``E_L``)."""
        self._new_name(name)
        n = positive_int("n", n)
        params = LIFParams() if params is None else params
        if not isinstance(params, (LIFParams, AdExParams)):
            raise TypeError(f"params must be LIFParams or AdExParams, got {type(params).__name__}")
        choice("kind", kind, KINDS)
        if V_init is None:
            v = np.full(n, params.E_L)
        elif isinstance(V_init, tuple) and len(V_init) == 2:
            v = self.rng.uniform(V_init[0], V_init[1], n)
        else:
            try:
                v = np.broadcast_to(np.asarray(V_init, dtype=np.float64), (n,)).copy()
            except (ValueError, TypeError):
                raise ValueError(f"V_init must be a number, [n] = [{n}] or (low, high), got "
                                 f"{V_init!r}") from None
        if not np.isfinite(v).all():
            raise ValueError("V_init contains NaN or Inf")
        g = NeuronGroup(name, n, params, kind, v)
        self.groups[name] = g
        return g

    def poisson(self, name: str, n: int, rate_hz, kind: str = "excitatory",
                start_ms: float = 0.0, stop_ms: Optional[float] = None) -> SourceGroup:
        """Add ``n`` independent Poisson fibres firing at ``rate_hz`` (a number or ``[n]``)
        between ``start_ms`` and ``stop_ms`` (default: the whole run)."""
        self._new_name(name)
        n = positive_int("n", n)
        choice("kind", kind, KINDS)
        try:
            r = np.broadcast_to(np.asarray(rate_hz, dtype=np.float64), (n,)).copy()
        except (ValueError, TypeError):
            raise ValueError(f"rate_hz must be a number or [n] = [{n}], got {rate_hz!r}") from None
        if not np.isfinite(r).all() or (r < 0).any():
            raise ValueError("rate_hz must be finite and >= 0")
        if r.max() * self.dt / 1000.0 > 1.0:
            raise ValueError(f"rate_hz up to {r.max():g} Hz exceeds one spike per step of {self.dt} ms")
        g = SourceGroup(name, n, kind, rate_hz=r, window=(float(start_ms), stop_ms))
        self.groups[name] = g
        return g

    def spike_source(self, name: str, spike_times_ms: Sequence, kind: str = "excitatory") -> SourceGroup:
        """Add fibres that fire at given times (one sequence of ms per fibre). A spike at
        ``t`` is emitted at the end of the step ending at ``t`` (``t`` is rounded to the
        grid and must be at least one step)."""
        self._new_name(name)
        choice("kind", kind, KINDS)
        trains = []
        for k, tr in enumerate(spike_times_ms):
            a = np.sort(np.asarray(tr, dtype=np.float64).ravel())
            if not np.isfinite(a).all() or (a.size and a[0] < self.dt - 1e-9):
                raise ValueError(f"spike times of fibre {k} must be finite and >= dt ({self.dt} ms)")
            trains.append(a)
        if not trains:
            raise ValueError("spike_times_ms needs at least one fibre")
        g = SourceGroup(name, len(trains), kind, spike_times=trains)
        self.groups[name] = g
        return g

    def connect(self, pre: str, post: str, rule: str = "pairwise_bernoulli", *,
                p: Optional[float] = None, indegree: Optional[int] = None, weight=1.0,
                delay: float = 1.0, synapse: Optional[TsodyksMarkram] = None,
                allow_autapses: bool = False, mask=None) -> Projection:
        """Connect group ``pre`` to neuron group ``post``.

        ``rule``: ``"pairwise_bernoulli"`` (each pair with probability ``p``),
        ``"fixed_indegree"`` (each target gets ``indegree`` distinct sources),
        ``"all_to_all"``, ``"one_to_one"`` or ``"mask"`` (``mask`` ``[n_post, n_pre]``).
        ``weight``: a number or ``[n_post, n_pre]``, in pA (LIF targets) or nS (AdEx
        targets); its sign must follow Dale's law (``>= 0`` from an excitatory group,
        ``<= 0`` from an inhibitory one). ``delay``: ms, rounded to the step, at least
        one step. ``synapse``: ``None`` (static) or a :class:`TsodyksMarkram`.
        """
        if pre not in self.groups:
            raise ValueError(f"connect: no group {pre!r} (have {sorted(self.groups)})")
        tgt = self.groups.get(post)
        if not isinstance(tgt, NeuronGroup):
            raise ValueError(f"connect: post must be a neuron group, got {post!r}")
        src = self.groups[pre]
        n_pre, n_post = src.n, tgt.n
        choice("rule", rule, ("pairwise_bernoulli", "fixed_indegree", "all_to_all",
                              "one_to_one", "mask"))
        same = pre == post
        if rule == "pairwise_bernoulli":
            p = probability("p", p)
            m = self.rng.random((n_post, n_pre)) < p
        elif rule == "fixed_indegree":
            k = positive_int("indegree", indegree)
            avail = n_pre - (1 if same and not allow_autapses else 0)
            if k > avail:
                raise ValueError(f"indegree {k} exceeds the {avail} possible sources in {pre!r}")
            m = np.zeros((n_post, n_pre), dtype=bool)
            for j in range(n_post):
                cand = np.arange(n_pre)
                if same and not allow_autapses:
                    cand = cand[cand != j]
                m[j, self.rng.choice(cand, size=k, replace=False)] = True
        elif rule == "all_to_all":
            m = np.ones((n_post, n_pre), dtype=bool)
        elif rule == "one_to_one":
            if n_pre != n_post:
                raise ValueError(f"one_to_one needs groups of equal size, got {n_pre} and {n_post}")
            m = np.eye(n_post, dtype=bool)
        else:
            if mask is None:
                raise ValueError("rule='mask' needs mask=[n_post, n_pre]")
            m = np.asarray(mask).astype(bool)
            if m.shape != (n_post, n_pre):
                raise ValueError(f"mask must have shape [{n_post}, {n_pre}], got {list(m.shape)}")
        if same and not allow_autapses:
            np.fill_diagonal(m, False)
        try:
            w = np.broadcast_to(np.asarray(weight, dtype=np.float64), (n_post, n_pre))
        except (ValueError, TypeError):
            raise ValueError(f"weight must be a number or [n_post, n_pre] = [{n_post}, {n_pre}], "
                             f"got shape {list(np.shape(weight))}") from None
        if not np.isfinite(w).all():
            raise ValueError("weight contains NaN or Inf")
        sign = 1.0 if src.kind == "excitatory" else -1.0
        bad = (w * sign < 0) & m
        if bad.any():
            raise ValueError(f"Dale's law: {pre!r} is {src.kind}, so its weights must be "
                             f"{'>= 0' if sign > 0 else '<= 0'}; {int(bad.sum())} are not")
        d = positive_number("delay", delay)
        if round(d / self.dt) < 1:
            raise ValueError(f"delay {d} ms is shorter than one step (dt = {self.dt} ms)")
        if synapse is not None and not isinstance(synapse, TsodyksMarkram):
            raise TypeError(f"synapse must be None or TsodyksMarkram, got {type(synapse).__name__}")
        proj = Projection(pre, post, np.where(m, w, 0.0), m, d, synapse, rule)
        self.projections.append(proj)
        return proj

    def astrocytes(self, name: str, target: str, territories: Territories,
                   model: Optional[AstroModel] = None, *, sense: str = "pre",
                   sense_weight: float = 1.0, sic_weight: float = 1.0,
                   glio: Optional[Gliotransmission] = None, delay: float = 1.0) -> AstrocyteGroup:
        """Astrocytes over the neuron group ``target``: astrocyte ``a`` contacts the
        neurons ``territories.neurons[a]`` and ensheathes the excitatory synapses onto
        them (from the fibres ``territories.inputs[a]`` when the territories name inputs,
        indexed over the pre-synaptic group of each projection).

        ``sense``: ``"pre"`` (the pre-synaptic spikes of those synapses, each sensed
        fibre once with ``sense_weight``) or ``"pre+post"`` (also the spikes of the
        contacted neurons). ``sic_weight``: pA per unit of the model's SIC, for each
        contact (NEST's ``sic_connection`` weight); 0 switches the SIC off.
        ``glio``: a :class:`Gliotransmission` modulating the Tsodyks-Markram synapses
        onto the contacted neurons. ``delay``: ms from a spike to the astrocyte and
        from the astrocyte's SIC to its neurons.
        """
        self._new_name(name)
        tgt = self.groups.get(target)
        if not isinstance(tgt, NeuronGroup):
            raise ValueError(f"astrocytes: target must be a neuron group, got {target!r}")
        if not isinstance(territories, Territories):
            raise TypeError(f"territories must be a Territories, got {type(territories).__name__}")
        if territories.n_neurons != tgt.n:
            raise ValueError(f"territories cover {territories.n_neurons} neurons, group "
                             f"{target!r} has {tgt.n}")
        model = LinearAstrocyte() if model is None else model
        if not isinstance(model, (LinearAstrocyte, LiRinzelAstrocyte)):
            raise TypeError(f"model must be LinearAstrocyte or LiRinzelAstrocyte, got {type(model).__name__}")
        choice("sense", sense, ("pre", "pre+post"))
        sw = float(sense_weight)
        if not math.isfinite(sw) or sw < 0:
            raise ValueError(f"sense_weight must be >= 0 (astrocytes take no negative input), got {sense_weight!r}")
        sic = float(sic_weight)
        if not math.isfinite(sic):
            raise ValueError(f"sic_weight must be finite, got {sic_weight!r}")
        if glio is not None and not isinstance(glio, Gliotransmission):
            raise TypeError(f"glio must be None or Gliotransmission, got {type(glio).__name__}")
        d = positive_number("delay", delay)
        if round(d / self.dt) < 1:
            raise ValueError(f"delay {d} ms is shorter than one step (dt = {self.dt} ms)")
        g = AstrocyteGroup(name, target, territories, model, sense, sw, sic, glio, d)
        self.astro[name] = g
        return g

    # ------------------------------------------------------------ derived structure
    def sensing(self, g: AstrocyteGroup) -> dict:
        """``{pre group: [A, n_pre]}`` weight with which each astrocyte senses each
        fibre: ``sense_weight`` where the fibre has an excitatory synapse onto a neuron
        of the astrocyte's territory (and, with ``territories.inputs``, is one of its
        fibres); with ``sense="pre+post"`` the contacted neurons' spikes add
        ``sense_weight`` more (``{target: ...}``)."""
        terr = g.territories.neurons.numpy()                          # [A, N]
        out: dict = {}
        for pr in self.projections:
            if pr.post != g.target or self.groups[pr.pre].kind != "excitatory":
                continue
            s = (terr[:, :, None] & pr.mask[None]).any(1)             # [A, n_pre]
            if g.territories.inputs is not None and g.territories.n_inputs == pr.mask.shape[1]:
                s &= g.territories.inputs.numpy()
            out[pr.pre] = np.maximum(out.get(pr.pre, 0.0), s * g.sense_weight)
        if g.sense == "pre+post":
            # the contacted neurons' own spikes, sensed at their post-synaptic side (in
            # addition to their pre-synaptic terminals, if these are in the territory)
            out[g.target] = out.get(g.target, 0.0) + terr * g.sense_weight
        return out

    def _delay_steps(self, d: float) -> int:
        return max(1, int(round(d / self.dt)))

    def summary(self) -> str:
        lines = [f"Network(dt={self.dt} ms, seed={self.seed})"]
        for g in self.groups.values():
            what = (g.model if isinstance(g, NeuronGroup) else
                    "poisson" if g.rate_hz is not None else "spike times")
            lines.append(f"  {g.name}: {g.n} {g.kind} {what}")
        for p in self.projections:
            syn = "static" if p.synapse is None else "tsodyks_markram"
            lines.append(f"  {p.pre} -> {p.post}: {p.n_synapses} synapses ({p.rule}), "
                         f"delay {p.delay} ms, {syn}")
        for a in self.astro.values():
            lines.append(f"  {a.name}: {a.n} {a.model.name} astrocytes on {a.target}, "
                         f"sense {a.sense}, SIC weight {a.sic_weight}, "
                         f"glio {'on' if a.glio else 'off'}")
        return "\n".join(lines)

    # ------------------------------------------------------------ simulation
    def simulate(self, duration_ms: float, record_V: bool = True,
                 astro_on: bool = True, progress: bool = False) -> "NetworkRun":
        """Run for ``duration_ms`` from the initial state; return a :class:`NetworkRun`.

        ``record_V``: keep the membrane potential and SIC of every neuron at every step.
        ``astro_on=False`` silences the astrocytes' action (no SIC, no modulation;
        they still sense and are recorded): the control condition.
        """
        return _simulate(self, duration_ms, record_V, astro_on, progress)


# ---------------------------------------------------------------- results

@dataclass
class NetworkRun:
    """What a run produced. ``spikes[group]`` bool ``[T, n]`` (step ``n`` = time
    ``(n+1) dt``); ``V``, ``I_sic`` ``[T, n]`` in mV and pA; ``astro[name]`` a dict of
    ``[T, A]`` arrays (``"Ca"`` µM or ``"c"``, ``"IP3"``, ``"sic"`` pA, ``"gamma"``),
    after each step."""

    dt: float
    T: int
    spikes: dict
    V: dict
    I_sic: dict
    astro: dict
    kinds: dict
    thresholds: dict = field(default_factory=dict)   # neuron group -> V_th (mV)

    def times(self) -> np.ndarray:
        """Time (ms) at the end of each step ``[T]``: the stamps NEST gives."""
        return (np.arange(self.T) + 1) * self.dt

    def spike_times(self, group: str) -> list:
        """Spike times in ms of each neuron of ``group`` (a list of arrays)."""
        s = self.spikes[group]
        t = self.times()
        return [t[s[:, j]] for j in range(s.shape[1])]

    def rate_hz(self, group: str, start_ms: float = 0.0, stop_ms: Optional[float] = None) -> float:
        """Mean firing rate (Hz) of ``group`` between ``start_ms`` and ``stop_ms``."""
        stop = self.T * self.dt if stop_ms is None else stop_ms
        t = self.times()
        sel = (t > start_ms) & (t <= stop + 1e-9)
        n = self.spikes[group].shape[1]
        return float(self.spikes[group][sel].sum()) / (n * (stop - start_ms) / 1000.0)

    def to_recording(self, info: Optional[dict] = None):
        """A :class:`~astro_neuron.neuro.Recording` (batch of one): per neuron group
        ``spikes`` and ``u`` (the membrane potential, mV, attrs ``u_unit`` and
        ``threshold``: V_th, or V_peak for AdEx), per astrocyte group ``astro`` (its
        calcium signal), sources as ``spikes``. A Recording puts step ``n`` at time
        ``n dt`` (the start of the step), the run at ``(n+1) dt`` (its end)."""
        pops, attrs = {}, {}
        for name, s in self.spikes.items():
            pops[name] = {"spikes": s[:, None].astype(np.float32)}
            attrs[name] = {"kind": self.kinds.get(name, "")}
            if name in self.V:
                pops[name]["u"] = self.V[name][:, None].astype(np.float32)
                attrs[name]["u_unit"] = "mV"
                if name in self.thresholds:
                    attrs[name]["threshold"] = float(self.thresholds[name])
        for name, d in self.astro.items():
            key = "Ca" if "Ca" in d else "c"
            pops[name] = {"astro": d[key][:, None].astype(np.float32)}
            attrs[name] = {"kind": "astrocytes", "astro_label": f"{key} ({'µM' if key == 'Ca' else 'sensed spike weight'})"}
        return Recording(self.dt, "ms", pops, attrs, dict(info or {}))


# ---------------------------------------------------------------- the integrators

def lif_propagators(p: LIFParams, dt: float) -> dict:
    """Exact one-step propagators of ``iaf_psc_exp`` for step ``dt`` (ms)."""
    P22 = math.exp(-dt / p.tau_m)
    P20 = p.tau_m / p.C_m * (1.0 - P22)

    def p21(tau_s: float) -> float:
        # V response to a unit synaptic current decaying with tau_s, over one step
        if abs(tau_s - p.tau_m) < 1e-9 * p.tau_m:
            return dt / p.C_m * math.exp(-dt / p.tau_m)
        return (tau_s * p.tau_m / (p.C_m * (p.tau_m - tau_s))
                * (math.exp(-dt / p.tau_m) - math.exp(-dt / tau_s)))

    return {"P22": P22, "P20": P20, "P21ex": p21(p.tau_syn_ex), "P21in": p21(p.tau_syn_in),
            "P11ex": math.exp(-dt / p.tau_syn_ex), "P11in": math.exp(-dt / p.tau_syn_in),
            "ref": int(round(p.t_ref / dt))}


def adex_rhs(p: AdExParams, y: np.ndarray, I_ext: np.ndarray, refractory: np.ndarray) -> np.ndarray:
    """``dy/dt`` of ``aeif_cond_alpha_astro``; ``y`` ``[6, n]`` = (V, dg_ex, g_ex, dg_in,
    g_in, w); ``I_ext`` = ``I_e + I_SIC`` (pA)."""
    V = np.where(refractory, p.V_reset, np.minimum(y[0], p.V_peak))
    dg_ex, g_ex, dg_in, g_in, w = y[1], y[2], y[3], y[4], y[5]
    I_spike = p.g_L * p.Delta_T * np.exp((V - p.V_th) / p.Delta_T)
    dV = (-p.g_L * (V - p.E_L) + I_spike - g_ex * (V - p.E_ex) - g_in * (V - p.E_in) - w
          + I_ext) / p.C_m
    out = np.empty_like(y)
    out[0] = np.where(refractory, 0.0, dV)
    out[1] = -dg_ex / p.tau_syn_ex
    out[2] = dg_ex - g_ex / p.tau_syn_ex
    out[3] = -dg_in / p.tau_syn_in
    out[4] = dg_in - g_in / p.tau_syn_in
    out[5] = (p.a * (V - p.E_L) - w) / p.tau_w
    return out


def _simulate(net: Network, duration_ms: float, record_V: bool, astro_on: bool,
              progress: bool) -> NetworkRun:
    dt = net.dt
    T = int(round(positive_number("duration_ms", duration_ms) / dt))
    if T < 1:
        raise ValueError(f"duration_ms={duration_ms} is shorter than one step ({dt} ms)")
    rng = np.random.default_rng(net.rng.integers(2 ** 63))
    groups = net.groups
    neurons = {k: g for k, g in groups.items() if isinstance(g, NeuronGroup)}
    if not neurons:
        raise ValueError("the network has no neuron group: add one with Network.neurons")

    # ring buffers of arriving input: per neuron group (ex, in, sic), per astrocyte group
    max_d = max([net._delay_steps(p.delay) for p in net.projections]
                + [net._delay_steps(a.delay) for a in net.astro.values()] + [1])
    L = max_d + 1
    buf = {k: {"ex": np.zeros((L, g.n)), "in": np.zeros((L, g.n)), "sic": np.zeros((L, g.n))}
           for k, g in neurons.items()}
    abuf = {k: np.zeros((L, a.n)) for k, a in net.astro.items()}

    # neuron state
    st = {}
    for k, g in neurons.items():
        if g.model == "lif":
            st[k] = {"V": g.V_init - g.params.E_L, "Iex": np.zeros(g.n), "Iin": np.zeros(g.n),
                     "r": np.zeros(g.n, dtype=np.int64), "sic": np.zeros(g.n),
                     "P": lif_propagators(g.params, dt)}
        else:
            y = np.zeros((6, g.n))
            y[0] = g.V_init
            n_sub = max(1, math.ceil(dt / g.params.max_substep - 1e-9))
            st[k] = {"y": y, "r": np.zeros(g.n, dtype=np.int64), "sic": np.zeros(g.n),
                     "n_sub": n_sub, "ref": int(round(g.params.t_ref / dt)),
                     "g0ex": math.e / g.params.tau_syn_ex, "g0in": math.e / g.params.tau_syn_in}

    # sources: spike trains as step indices (a spike at t is emitted by the step ending at t)
    src_steps = {}
    for k, g in groups.items():
        if isinstance(g, SourceGroup) and g.spike_times is not None:
            s = np.zeros((T, g.n), dtype=bool)
            for j, tr in enumerate(g.spike_times):
                idx = np.rint(tr / dt).astype(np.int64) - 1
                idx = idx[(idx >= 0) & (idx < T)]
                s[idx, j] = True
            src_steps[k] = s

    # astrocytes
    ast = {}
    for k, a in net.astro.items():
        terr = a.territories.neurons.numpy().astype(np.float64)          # [A, N]
        cover = terr.sum(0)
        ast[k] = {"state": a.model.init(a.n), "sense": net.sensing(a), "terr": terr,
                  "mean": terr / np.maximum(cover, 1)[None],             # [A, N] mean over contacts
                  "gamma": np.zeros(a.n), "xA": np.ones(a.n),
                  "prev": a.model.calcium(a.model.init(a.n)).copy(), "d": net._delay_steps(a.delay)}

    # Tsodyks-Markram state per projection (per synapse), last pre spike time per fibre
    tm = {}
    for i, p in enumerate(net.projections):
        if p.synapse is not None:
            tm[i] = {"u": np.zeros(p.mask.shape), "x": np.ones(p.mask.shape),
                     "last": np.zeros(p.mask.shape[1])}
    glio_of = {}                                                       # post group -> astro names
    for k, a in net.astro.items():
        if a.glio is not None:
            glio_of.setdefault(a.target, []).append(k)
            if not any(p.post == a.target and p.synapse is not None for p in net.projections):
                raise ValueError(f"astrocytes {k!r} have gliotransmission but no Tsodyks-Markram "
                                 f"projection onto {a.target!r} to modulate")

    spikes = {k: np.zeros((T, g.n), dtype=bool) for k, g in groups.items()}
    V_rec = {k: np.zeros((T, g.n)) for k, g in neurons.items()} if record_V else {}
    S_rec = {k: np.zeros((T, g.n)) for k, g in neurons.items()} if record_V else {}
    A_rec = {}
    for k, a in net.astro.items():
        keys = [a.model.signal, "sic", "gamma"] + (["IP3"] if a.model.name == "li_rinzel" else [])
        A_rec[k] = {key: np.zeros((T, a.n)) for key in keys}

    it = range(T)
    if progress:
        it = tqdm(it, desc="simulate", unit="step", mininterval=1.0)
    for n in it:
        slot = n % L
        # 1. neurons: integrate over the step, add this step's arrivals, threshold
        for k, g in neurons.items():
            s = st[k]
            b = buf[k]
            if g.model == "lif":
                P, prm = s["P"], g.params
                free = s["r"] == 0
                Vn = (P["P22"] * s["V"] + P["P20"] * (prm.I_e + s["sic"])
                      + P["P21ex"] * s["Iex"] + P["P21in"] * s["Iin"])
                s["V"] = np.where(free, Vn, s["V"])
                s["r"] = np.where(free, 0, s["r"] - 1)
                s["Iex"] = s["Iex"] * P["P11ex"] + b["ex"][slot]
                s["Iin"] = s["Iin"] * P["P11in"] + b["in"][slot]
                fire = s["V"] >= prm.V_th - prm.E_L
                if fire.any():
                    s["V"][fire] = prm.V_reset - prm.E_L
                    s["r"][fire] = P["ref"]
                spikes[k][n] = fire
                if record_V:
                    V_rec[k][n] = s["V"] + prm.E_L
            else:
                prm = g.params
                y, h = s["y"], dt / s["n_sub"]
                fire = np.zeros(g.n, dtype=bool)
                I_ext = prm.I_e + s["sic"]
                for _ in range(s["n_sub"]):
                    refr = s["r"] > 0
                    k1 = adex_rhs(prm, y, I_ext, refr)
                    k2 = adex_rhs(prm, y + 0.5 * h * k1, I_ext, refr)
                    k3 = adex_rhs(prm, y + 0.5 * h * k2, I_ext, refr)
                    k4 = adex_rhs(prm, y + h * k3, I_ext, refr)
                    y = y + (h / 6.0) * (k1 + 2 * k2 + 2 * k3 + k4)
                    y[0] = np.where(refr, prm.V_reset, y[0])
                    up = (~refr) & (y[0] >= prm.V_peak)
                    if up.any():
                        y[0, up] = prm.V_reset
                        y[5, up] += prm.b
                        s["r"][up] = s["ref"] + 1 if s["ref"] > 0 else 0
                        fire |= up
                s["r"] = np.maximum(s["r"] - 1, 0)
                y[1] += b["ex"][slot] * s["g0ex"]
                y[3] += b["in"][slot] * s["g0in"]
                s["y"] = y
                spikes[k][n] = fire
                if record_V:
                    V_rec[k][n] = y[0]
            # SIC for the next step (NEST: I_sic is read at the end of the step)
            s["sic"] = b["sic"][slot].copy() if astro_on else np.zeros(g.n)
            if record_V:
                S_rec[k][n] = s["sic"]
            b["ex"][slot] = 0.0
            b["in"][slot] = 0.0
            b["sic"][slot] = 0.0

        # 2. sources
        for k, g in groups.items():
            if isinstance(g, SourceGroup):
                if g.spike_times is not None:
                    spikes[k][n] = src_steps[k][n]
                else:
                    t_end = (n + 1) * dt
                    a0, a1 = g.window
                    if t_end > a0 and (a1 is None or t_end <= a1):
                        spikes[k][n] = rng.random(g.n) < g.rate_hz * (dt / 1000.0)

        # 3. astrocytes: integrate, add sensed input, SIC and gliotransmission
        for k, a in net.astro.items():
            s = ast[k]
            a.model.advance(s["state"], abuf[k][slot], dt)
            abuf[k][slot] = 0.0
            ca = a.model.calcium(s["state"])
            sic = a.model.sic(s["state"])
            if a.glio is not None:
                gl = a.glio
                s["gamma"] *= math.exp(-dt / gl.tau_G)
                s["xA"] = 1.0 - (1.0 - s["xA"]) * math.exp(-dt / gl.tau_A)
                rel = (ca >= gl.threshold) & (s["prev"] < gl.threshold)
                if rel.any():
                    jump = 1.0 - np.exp(-gl.strength * s["xA"][rel])
                    s["gamma"][rel] += jump * (1.0 - s["gamma"][rel])
                    s["xA"][rel] -= gl.U_A * s["xA"][rel]
            s["prev"] = ca.copy()
            rec = A_rec[k]
            rec[a.model.signal][n] = ca
            rec["sic"][n] = sic
            rec["gamma"][n] = s["gamma"]
            if "IP3" in rec:
                rec["IP3"][n] = a.model.ip3(s["state"])
            if a.sic_weight != 0.0:
                tgt_slot = (n + s["d"]) % L
                buf[a.target]["sic"][tgt_slot] += a.sic_weight * (s["terr"].T @ sic)

        # 4. deliver this step's spikes (arrive delay steps later)
        for i, p in enumerate(net.projections):
            sp = spikes[p.pre][n]
            if not sp.any():
                continue
            cols = np.flatnonzero(sp)
            W = p.weight[:, cols]
            if p.synapse is not None:
                q = tm[i]
                h = (n + 1) * dt - q["last"][cols]
                U = p.synapse.U
                if astro_on and p.post in glio_of:
                    gam = sum(ast[k]["mean"].T @ ast[k]["gamma"] for k in glio_of[p.post])
                    gam = gam / len(glio_of[p.post])
                    U = net.astro[glio_of[p.post][0]].glio.u_eff(p.synapse.U, gam)[:, None]
                u1, x1, r = tm_release(q["u"][:, cols], q["x"][:, cols], h[None], U, p.synapse)
                q["u"][:, cols], q["x"][:, cols] = u1, x1
                q["last"][cols] = (n + 1) * dt
                W = W * r
            tslot = (n + net._delay_steps(p.delay)) % L
            inp = W.sum(1)
            key = "ex" if groups[p.pre].kind == "excitatory" else "in"
            buf[p.post][key][tslot] += np.abs(inp) if key == "in" and groups[p.post].model == "adex" else inp
        for k, a in net.astro.items():
            s = ast[k]
            drive = 0.0
            for pre, S in s["sense"].items():
                sp = spikes[pre][n]
                if sp.any():
                    drive = drive + S[:, sp].sum(1)
            if not np.isscalar(drive):
                abuf[k][(n + s["d"]) % L] += drive

    kinds = {k: g.kind for k, g in groups.items()}
    thr = {k: g.params.V_th if g.model == "lif" else g.params.V_peak for k, g in neurons.items()}
    return NetworkRun(dt, T, spikes, V_rec, S_rec, A_rec, kinds, thr)
