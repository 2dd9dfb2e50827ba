"""``astro_neuron.AMSU``: the Astrocyte-Modulated Spiking Unit as an ``nn.Module``.

A thin wrapper: it owns the parameters (with their units) and the initial state,
validates input, and calls the pure functions of :mod:`astro_neuron.functional`.
Equations and options: docs/model.md.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
from torch import Tensor, nn

from astro_neuron.astrocytes import resolve_astro_model
from astro_neuron.functional import amsu as F_amsu
from astro_neuron.functional.amsu import (
    AMSUOutput, AMSUParams, AMSUSpec, AMSUState, amsu_step, init_state,
)
from astro_neuron.functional.finite import validation
from astro_neuron.validate import choice, finite_number, positive_int, positive_number

__all__ = ["AMSU", "MODES", "validation"]

MODES = F_amsu.FORMS


TauLike = Union[float, Sequence[float], Tensor]


def _tau_tensor(name: str, value: TauLike, shape: tuple[int, ...]) -> Tensor:
    """Time constant(s) as a float64 tensor of ``shape``; positive and finite."""
    t = torch.as_tensor(value, dtype=torch.float64)
    if t.numel() == 1:
        t = t.reshape(()).expand(shape)
    elif tuple(t.shape) != shape:
        raise ValueError(f"{name} must be a number or have shape {list(shape)}, "
                         f"got shape {list(t.shape)}")
    if not bool(torch.isfinite(t).all()) or bool((t <= 0).any()):
        raise ValueError(f"{name} must be positive and finite, got {value!r}")
    return t.clone()


TAU_ASTRO_INITS = ("retnet",)


def _astro_taus(tau_astro, A: int, dk: int, dt: float = 1.0) -> Tensor:
    """``tau_astro``: a number, a ``(low, high)`` tuple/list spread log-uniformly over
    the d_k key channels of every astrocyte, ``"retnet"`` (astrocyte ``a`` decays by
    ``1 - 2^(-5-a)`` per step, all its channels alike: RetNet's per-head decays), or a
    full ``[A, d_k]`` tensor."""
    if isinstance(tau_astro, str):
        choice("tau_astro", tau_astro, TAU_ASTRO_INITS)
        gamma = 1.0 - 2.0 ** (-5.0 - torch.arange(A, dtype=torch.float64))
        return (-dt / torch.log(gamma))[:, None].expand(A, dk).clone()
    if isinstance(tau_astro, (tuple, list)) and len(tau_astro) == 2:
        lo, hi = (float(x) for x in tau_astro)
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo <= 0 or hi < lo:
            raise ValueError("tau_astro=(low, high) needs 0 < low <= high, both finite; "
                             f"got {tau_astro!r}")
        row = torch.logspace(math.log10(lo), math.log10(hi), dk, dtype=torch.float64)
        return row.expand(A, dk).clone()
    return _tau_tensor("tau_astro", tau_astro, (A, dk))


class AMSU(nn.Module):
    """A layer of ``n_neurons`` AM-SU neurons with ``n_astrocytes`` astrocytes.

    Input ``[T, B, in_features]`` (time-major), output spikes ``[T, B, n_neurons]``.
    See docs/model.md for the equations and when each form applies.

    Args:
        in_features: size of the pre-synaptic input ``x_t``.
        n_neurons: number of neurons ``N`` (divisible by ``n_astrocytes``).
        n_astrocytes: astrocytes ``A``; each serves ``N / A`` neurons.
        d_key: the astrocyte's sensing dimension ``d_k``.
        tau_mem: membrane time constant(s), same unit as ``dt``; number or ``[N]``.
        tau_astro: astrocyte time constants: ``(low, high)`` spreads them
            log-uniformly over each astrocyte's key channels (choose ``high`` of the
            order of the longest span to remember); ``"retnet"``: astrocyte ``a``
            decays by ``1 - 2^(-5-a)`` per step (RetNet's per-head decays); or a number;
            or ``[A, d_k]``.
        threshold: firing threshold ``theta`` (number or ``[N]``), > 0.
        surrogate: spike gradient: ``astro_neuron.surrogate.*`` (default ``ATan()``) or
            any SpikingJelly / snnTorch surrogate callable.
        reset: ``"none"`` (default; the parallel form applies), ``"subtract"`` or ``"zero"``.
        synapse: ``"identity"`` (default) or ``"sigmoid"`` synaptic current.
        spike_levels: 1 for binary spikes, ``L > 1`` for graded spikes in ``{0..L}``.
        astrocyte: ``False`` removes the astrocyte (the "spiking neuron alone" ablation).
        neuron_path: ``False`` removes the membrane path (the "astrocyte alone" ablation).
        spiking: ``False`` replaces spikes by the surrogate's smooth step (non-spiking twin).
        astro_model: ``"linear"`` (the paper's, parallel-trainable) or a nonlinear,
            sequential-only model: ``"li_rinzel"`` (calcium/IP3; ``dt`` in ms) or a
            model object such as ``astro_neuron.astrocytes.LiRinzel(...)``; see
            :mod:`astro_neuron.astrocytes`. ``tau_astro`` is unused by nonlinear models.
        rotary: rotary positions on the astrocyte's keys and queries.
        rotary_base: the rotary frequency base.
        rotary_fraction: share of the ``d_key`` key/query channels the rotary turns
            (1: all, the default; e.g. 0.25 rotates a quarter of them, as GPT-NeoX's
            ``rotary_pct``; the rest carry no position).
        dt: the time step, in the unit of the time constants (1.0: "steps").
        astro_gain: initial per-neuron astrocyte gain ``g_astro``.
        bias: learn a synaptic bias ``b_I``.
        learn_tau: learn ``tau_mem`` and ``tau_astro`` (through their logarithms).
        learn_threshold: learn ``theta`` (through its logarithm, so it stays > 0).
        detach_reset: do not backpropagate through the reset.
        chunk_size: chunk length of the parallel form.
        readout_norm: ``"none"`` (``o = H^T q / sqrt(d_k)``) or ``"rms"``: each
            astrocyte's read-out RMS-normalised over its ``d_v`` neurons before
            ``g_astro`` (divisive gain control of the astrocyte's output; the
            language model's choice).
        conv_size: taps ``K`` of the pre-synaptic delay line on what the astrocyte
            senses: ``k_t, v_t <- sum_{j<K} w_j * (k, v)_{t-j}``, a learned per-channel
            causal filter (Zoology's "short convolution"); 1 (default): none, the paper.
            Its last ``K - 1`` inputs are part of the state (``AMSUState.conv``).
        retention: ``"fixed"`` (default, the paper: decay ``gamma``), ``"gated"``
            (``gamma * g_t``, an input-dependent retention
            ``g_t = sigmoid(W_G x_t + b_G) ** (1 / gate_temperature)``: activity-dependent
            uptake, GLA's gate) or ``"selective"`` (the same, and the write scaled by
            ``1 - g_t``: what is retained is not overwritten, as in Mamba).
        gate_temperature: the gate's temperature (GLA: 16).
        sensing: ``"identity"`` (default, the paper: signed ``k``, ``q``), ``"relu"``:
            ``k, q <- max(k, 0), max(q, 0)`` after the delay line, before the rotary
            positions; what the astrocyte senses is non-negative, as a transmitter
            concentration is (the feature map of linear attention; docs/model.md), or
            ``"relu2"``: their squares, a cooperative (Hill coefficient 2) response whose
            sharper kernel keeps different keys apart (docs/memory.md), or
            ``"relu-key"``: ``k <- max(k, 0)`` alone, the query signed, so that with
            rotary channels a key and a query can be any angle apart (docs/memory.md,
            the activity clock); in the integer export as file format 5.
        gate_bias: initial ``b_G``; larger keeps more at the start
            (``g = sigmoid(b) ** (1/temperature)``).
        clock: what turns the rotary channels of ``k`` and ``q`` (needs ``rotary=True``):
            ``"time"`` (default: the step count) or ``"activity"``: a phase ``p_t =
            p_{t-1} + a_t`` per astrocyte, advanced by its activity ``a_t = softplus(W_E
            x_t + b_E)``, which also scales what it writes (``k_t <- a_t k_t``); the
            frequencies are evenly spaced, ``2 pi f / n_rot``. The astrocyte stores by
            how much has happened, not by when: an order of events however far apart
            (Mamba's selective step; docs/model.md, docs/memory.md). The phase is part
            of the state (``AMSUState.phase``). No integer export (a clear error).
        clock_step: the activity at the start, ``softplus(b_E)`` (Mamba: 0.001-0.1).
        clock_rate: with ``clock="activity"``, how far a unit of phase turns the keys:
            pair ``f`` by ``clock_rate * 2 pi f / n_rot`` (default 1). A larger rate
            sharpens the count a learnt activity step resolves (docs/model.md); not a
            default anywhere.
        decay_clock: ``"time"`` (default, the paper: the astrocyte decays by ``gamma``
            every step) or ``"activity"`` (with ``clock="activity"``: by ``gamma **
            a_t``, so ``tau_astro`` counts units of activity, not steps: a quiet
            astrocyte holds its state, as in Mamba's ``exp(Delta_t A)``; docs/model.md).
        clock_threshold: with ``clock="activity"``, the activity ``a_t = max(softplus(W_E
            x_t + b_E) - clock_threshold, 0)``: input below it leaves the astrocyte
            silent (no turn, no write and, with ``decay_clock="activity"``, no decay).
            Default 0 (the softplus alone, never exactly 0).
    """

    def __init__(self, in_features: int, n_neurons: int, n_astrocytes: int = 4,
                 d_key: int = 16, tau_mem: TauLike = 2.0,
                 tau_astro: TauLike = (10.0, 1000.0), threshold: TauLike = 1.0,
                 surrogate=None, reset: str = "none", synapse: str = "identity",
                 spike_levels: int = 1, astrocyte: bool = True, neuron_path: bool = True,
                 spiking: bool = True, astro_model: str = "linear", rotary: bool = False,
                 rotary_base: float = 10000.0, dt: float = 1.0, astro_gain: float = 1.0,
                 bias: bool = True, learn_tau: bool = True, learn_threshold: bool = True,
                 detach_reset: bool = False, chunk_size: int = 64,
                 rotary_fraction: float = 1.0, readout_norm: str = "none",
                 conv_size: int = 1, retention: str = "fixed", gate_temperature: float = 16.0,
                 gate_bias: float = 0.0, sensing: str = "identity", clock: str = "time",
                 clock_step: float = 0.05, clock_rate: float = 1.0,
                 decay_clock: str = "time", clock_threshold: float = 0.0, device=None,
                 dtype=None) -> None:
        super().__init__()
        dt = positive_number("dt", float(dt))
        model = resolve_astro_model(astro_model, dt)
        self.spec = AMSUSpec(
            in_features=in_features, n_neurons=n_neurons, n_astrocytes=n_astrocytes,
            d_key=d_key, reset=reset, synapse=synapse, spike_levels=spike_levels,
            astrocyte=astrocyte, neuron_path=neuron_path, spiking=spiking, rotary=rotary,
            rotary_base=rotary_base, rotary_fraction=rotary_fraction,
            detach_reset=detach_reset, surrogate=surrogate, astro_model=model,
            readout_norm=readout_norm, conv_size=conv_size, retention=retention,
            gate_temperature=gate_temperature, sensing=sensing, clock=clock,
            clock_rate=clock_rate, decay_clock=decay_clock, clock_threshold=clock_threshold)
        positive_int("chunk_size", chunk_size)
        self.dt = dt
        self.chunk_size = chunk_size
        self.astro_model = model if isinstance(model, str) else model.name
        fk = {"device": device, "dtype": dtype or torch.get_default_dtype()}
        N, A = n_neurons, n_astrocytes

        self.weight = nn.Parameter(torch.empty(self.spec.proj_size, in_features, **fk))
        self.bias = nn.Parameter(torch.empty(N, **fk)) if (bias and neuron_path) else None
        log_tau_mem = torch.log(_tau_tensor("tau_mem", tau_mem, (N,)))
        log_tau_astro = torch.log(_astro_taus(tau_astro, A, d_key, dt))
        log_thr = torch.log(_tau_tensor("threshold", threshold, (N,)))
        gain = torch.full((N,), finite_number("astro_gain", float(astro_gain)),
                          dtype=torch.float64)
        self.log_tau_mem = nn.Parameter(log_tau_mem.to(**fk), requires_grad=learn_tau)
        self.log_tau_astro = nn.Parameter(log_tau_astro.to(**fk), requires_grad=learn_tau)
        self.log_threshold = nn.Parameter(log_thr.to(**fk), requires_grad=learn_threshold)
        self.astro_gain = nn.Parameter(gain.to(**fk))
        spec = self.spec
        self.conv = None
        if spec.conv_size > 1:                  # taps [K, A*d_k + N], row j: lag j
            self.conv = nn.Parameter(torch.empty(spec.conv_size, spec.d_conv, **fk))
        self.gate_bias = None
        self._gate_bias0 = finite_number("gate_bias", float(gate_bias))
        if spec.gated:
            self.gate_bias = nn.Parameter(torch.empty(A, d_key, **fk))
        self.clock_bias = None
        self._clock_step0 = positive_number("clock_step", float(clock_step))
        if spec.activity_clock:
            self.clock_bias = nn.Parameter(torch.empty(A, **fk))
        self.reset_parameters()

    # ---------------------------------------------------------------- parameters
    def reset_parameters(self) -> None:
        """Weights uniform in +-1/sqrt(in_features) (as ``nn.Linear``), bias too; the
        delay line's taps uniform in +-1/sqrt(conv_size) (as a depthwise ``nn.Conv1d``);
        the gate bias ``gate_bias``; the clock's bias ``softplus^-1(clock_step)``."""
        bound = 1.0 / math.sqrt(self.spec.in_features)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)
        if self.conv is not None:
            b = 1.0 / math.sqrt(self.spec.conv_size)
            nn.init.uniform_(self.conv, -b, b)
        if self.gate_bias is not None:
            nn.init.constant_(self.gate_bias, self._gate_bias0)
        if self.clock_bias is not None:                  # softplus(b) = clock_step
            nn.init.constant_(self.clock_bias, math.log(math.expm1(self._clock_step0)))

    @property
    def tau_mem(self) -> Tensor:
        """Membrane time constants ``[N]`` (unit of ``dt``)."""
        return self.log_tau_mem.exp()

    @property
    def tau_astro(self) -> Tensor:
        """Astrocyte time constants ``[A, d_k]`` (unit of ``dt``)."""
        return self.log_tau_astro.exp()

    @property
    def beta(self) -> Tensor:
        """Membrane decay ``exp(-dt / tau_mem)`` ``[N]``, in (0, 1)."""
        return torch.exp(-self.dt * torch.exp(-self.log_tau_mem))

    @property
    def gamma(self) -> Tensor:
        """Astrocyte decay ``exp(-dt / tau_astro)`` ``[A, d_k]``, in (0, 1)."""
        return torch.exp(-self.dt * torch.exp(-self.log_tau_astro))

    @property
    def threshold(self) -> Tensor:
        """Firing threshold ``theta`` ``[N]``."""
        return self.log_threshold.exp()

    def params(self) -> AMSUParams:
        """The layer's tensors in the form the functional API takes."""
        return AMSUParams(self.weight, self.bias, self.beta, self.gamma, self.threshold,
                          self.astro_gain, self.conv, self.gate_bias, self.clock_bias)

    # ---------------------------------------------------------------- state
    def init_state(self, batch_size: int, device=None, dtype=None) -> AMSUState:
        """The zero state ``AMSUState(u [B, N], H [B, A, d_k, d_v], t=0, conv, phase)``
        (``conv`` ``[B, conv_size - 1, A*d_k + N]``, None without delay line; ``phase``
        ``[B, A]``, None unless ``clock="activity"``)."""
        return init_state(self.spec, batch_size, device or self.weight.device,
                          dtype or self.weight.dtype)

    # ---------------------------------------------------------------- forward
    def run(self, x_seq: Tensor, state: Optional[AMSUState] = None,
            mode: str = "auto") -> tuple[AMSUOutput, AMSUState]:
        """Run ``x_seq`` ``[T, B, in]``; return ``(AMSUOutput(spikes, u, o), state)``.

        ``mode``: ``"auto"`` (chunked without reset, recurrent with a reset or a
        nonlinear astrocyte),
        ``"chunked"`` (parallel; an error with a reset), ``"recurrent"`` (exact loop
        with projections hoisted) or ``"loop"`` (the reference loop of steps).
        All go through :func:`astro_neuron.functional.amsu.run` (NaN/Inf checked;
        see :func:`astro_neuron.validation`).
        """
        choice("mode", mode, MODES)
        return F_amsu.run(x_seq, state, self.params(), self.spec, mode, self.chunk_size)

    def forward(self, x_seq: Tensor, state: Optional[AMSUState] = None,
                return_state: bool = False, mode: str = "auto"):
        """Spikes ``[T, B, N]`` of ``x_seq`` ``[T, B, in]`` (and the final state)."""
        out, state = self.run(x_seq, state, mode)
        return (out.spikes, state) if return_state else out.spikes

    def step(self, x_t: Tensor, state: Optional[AMSUState] = None) -> tuple[Tensor, AMSUState]:
        """One step for streaming: ``x_t`` ``[B, in]`` -> ``(spikes [B, N], state)``."""
        out, state = self.step_full(x_t, state)
        return out.spikes, state

    def step_full(self, x_t: Tensor, state: Optional[AMSUState] = None
                  ) -> tuple[AMSUOutput, AMSUState]:
        """Like :meth:`step` but returns ``AMSUOutput(spikes, u, o)`` of ``[B, N]``."""
        p = self.params()
        out, new = amsu_step(x_t, state, p, self.spec)
        F_amsu.check_run(x_t, state, p, out, new, seq=False)
        return out, new

    def extra_repr(self) -> str:
        s = self.spec
        parts = [f"{s.in_features}, {s.n_neurons}", f"n_astrocytes={s.n_astrocytes}",
                 f"d_key={s.d_key}", f"reset={s.reset!r}", f"dt={self.dt}"]
        for name, default in (("synapse", "identity"), ("spike_levels", 1),
                              ("astrocyte", True), ("neuron_path", True), ("spiking", True),
                              ("rotary", False), ("rotary_fraction", 1.0),
                              ("readout_norm", "none"), ("conv_size", 1),
                              ("retention", "fixed"), ("sensing", "identity"),
                              ("clock", "time"), ("clock_rate", 1.0),
                              ("decay_clock", "time"), ("clock_threshold", 0.0)):
            if getattr(s, name) != default:
                parts.append(f"{name}={getattr(s, name)!r}")
        if not s.linear_astro:
            parts.append(f"astro_model={self.astro_model!r}")
        parts.append(f"surrogate={s.surrogate!r}")
        return ", ".join(parts)
