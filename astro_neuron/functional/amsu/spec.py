"""What an AM-SU layer is: its options (:class:`AMSUSpec`), its tensors
(:class:`AMSUParams`), its state (:class:`AMSUState`) and what it emits
(:class:`AMSUOutput`). The row layout of the fused input projection (I | K | V | Q) is
written here once (:func:`projection_parts`, :func:`split_rows`); every form, the
decode step and the integer export read it from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple, Optional

import torch
from torch import Tensor

from astro_neuron.functional.rotary import rotary_dims
from astro_neuron.functional.surrogate import ATan, as_surrogate
from astro_neuron.validate import boolean, choice, number_in_range, positive_int

__all__ = [
    "RESETS", "SYNAPSES", "READOUT_NORMS", "READOUT_EPS", "RETENTIONS", "SENSINGS", "CLOCKS",
    "MAX_CONV_SIZE",
    "projection_parts", "split_rows",
    "AMSUSpec", "AMSUParams", "AMSUState", "AMSUOutput", "init_state", "check_state",
]

RESETS = ("none", "subtract", "zero")
SYNAPSES = ("identity", "sigmoid")
READOUT_NORMS = ("none", "rms")
READOUT_EPS = 1e-5                 # epsilon of the "rms" read-out norm
# "fixed": the paper's astrocyte, decay gamma; "gated": gamma * g_t with an input-dependent
# retention gate g_t (GLA-style); "selective": the same gate, and the write k_t v_t^T scaled
# by 1 - g_t (Mamba-style: what is kept is not overwritten). docs/model.md, "Options"
RETENTIONS = ("fixed", "gated", "selective")
# what the astrocyte senses: "identity" (the paper: signed k, q), "relu" (non-negative
# k and q, a concentration; the feature map of linear attention) or "relu2" (max(k, 0)^2,
# max(q, 0)^2: a cooperative, Hill-coefficient-2 response; sharper) or "relu-key"
# (non-negative k, what it senses, and a signed q, what it reads with: with rotary
# channels a key and a query can then be any angle apart), see docs/model.md
SENSINGS = ("identity", "relu", "relu2", "relu-key")
MAX_CONV_SIZE = 8                  # longest pre-synaptic delay line (taps)
# what turns the rotary channels of k and q: "time" (the step count t, the paper's
# language model) or "activity" (the astrocyte's own activity: a phase that advances by
# a_t = softplus(W_E x_t + b_E) per astrocyte, which also scales what it writes; the
# frequencies evenly spaced, 2 pi f / n_rot), see docs/model.md
CLOCKS = ("time", "activity")


def projection_parts(n_neurons: int, n_astrocytes: int, d_key: int, neuron_path: bool = True,
                     astrocyte: bool = True, gate: bool = False, activity: bool = False
                     ) -> tuple[tuple[str, int], ...]:
    """Row blocks ``(name, rows)`` of an AM-SU layer's fused input projection, in order
    I (neuron path), K, V, Q (astrocyte), G (the retention gate, ``gate=True``: an
    input-dependent retention), E (one row per astrocyte, ``activity=True``: the
    activity that drives its clock, ``clock="activity"``). The one definition of the
    layout, shared by the float layer and the integer network (``neuromorphic``), so
    their weight layouts cannot drift apart."""
    N, A, dk = n_neurons, n_astrocytes, d_key
    out = []
    if neuron_path:
        out.append(("I", N))
    if astrocyte:
        out += [("K", A * dk), ("V", N), ("Q", A * dk)]
        if gate:
            out.append(("G", A * dk))
        if activity:
            out.append(("E", A))
    return tuple(out)


def split_rows(z: Tensor, parts, dim: int = 0) -> dict[str, Tensor]:
    """``z`` split along ``dim`` into the named blocks of ``parts`` (``spec.parts``):
    ``{"I": ..., "K": ..., "V": ..., "Q": ...}`` (views, no copy). Use it on the
    weight (``dim=0``) or on projected activations (``dim=-1``)."""
    names = [n for n, _ in parts]
    return dict(zip(names, torch.split(z, [n for _, n in parts], dim=dim)))


@dataclass(frozen=True)
class AMSUSpec:
    """Structure and options of one AM-SU layer (see docs/model.md, "Options").

    The layer has ``n_neurons`` neurons split among ``n_astrocytes`` astrocytes;
    astrocyte ``a`` serves ``d_value = n_neurons / n_astrocytes`` neurons and senses
    in a ``d_key``-dimensional space.
    """

    in_features: int
    n_neurons: int
    n_astrocytes: int = 4
    d_key: int = 16
    reset: str = "none"            # "none" | "subtract" | "zero"
    synapse: str = "identity"      # sigma of I_t = sigma(W_I x + b): "identity" | "sigmoid"
    spike_levels: int = 1          # 1: binary spikes; L > 1: graded spikes in {0..L}
    astrocyte: bool = True         # False: the "spiking neuron alone" ablation (o = 0)
    neuron_path: bool = True       # False: the "astrocyte alone" ablation (u = 0)
    spiking: bool = True           # False: the non-spiking twin (smooth surrogate step)
    rotary: bool = False           # rotary positions on k, q (language model)
    rotary_base: float = 10000.0
    rotary_fraction: float = 1.0   # share of the d_k key channels rotated (partial rotary)
    detach_reset: bool = False     # reset does not pass gradient through the spikes
    surrogate: Any = field(default_factory=ATan)
    # "linear" (the paper's astrocyte) or a nonlinear model object (sequential only) with
    # state_shape(spec), init_state(spec, B, device, dtype) and step(H, k, v, q) -> (o_raw, H);
    # see astro_neuron.astrocytes
    astro_model: Any = "linear"
    # "none": o = H^T q / sqrt(d_k); "rms": each astrocyte's read-out RMS-normalised over
    # its d_v neurons (eps READOUT_EPS), no 1/sqrt(d_k); then g_astro in both cases
    readout_norm: str = "none"
    # taps of the pre-synaptic delay line on what the astrocyte senses (k and v): a
    # per-channel causal filter k_t <- sum_j w_j k_{t-j}, j < conv_size; 1: none (the paper)
    conv_size: int = 1
    # "fixed" (the paper: decay gamma), "gated" or "selective" (see RETENTIONS)
    retention: str = "fixed"
    # g_t = sigmoid(W_G x_t + b_G) ** (1 / gate_temperature) (GLA's normaliser: 16)
    gate_temperature: float = 16.0
    # "identity" (the paper), "relu": k, q <- max(k, 0), max(q, 0), "relu2": their
    # squares, or "relu-key": k <- max(k, 0), q signed; after the delay line and before
    # the rotary positions (SENSINGS)
    sensing: str = "identity"
    # "time" (the step count t) or "activity" (a phase advanced by the astrocyte's
    # activity a_t, which also scales its write): what turns the rotary channels (CLOCKS)
    clock: str = "time"
    # clock="activity": pair f turns by clock_rate * 2 pi f / n_rot per unit of phase
    # (1: the discrete Fourier basis at whole units; 2: at half units, a sharper count)
    clock_rate: float = 1.0
    # "time" (the paper: the astrocyte decays by gamma every step) or "activity" (by
    # gamma ** a_t: it clears its state as it is active, a quiet astrocyte holds it;
    # Mamba's exp(Delta_t A)); "activity" needs clock="activity" (CLOCKS)
    decay_clock: str = "time"
    # clock="activity": a_t = max(softplus(W_E x_t + b_E) - clock_threshold, 0): input
    # below the threshold leaves the astrocyte silent (0: the softplus alone, > 0)
    clock_threshold: float = 0.0

    def __post_init__(self) -> None:
        for name in ("in_features", "n_neurons", "n_astrocytes", "d_key", "spike_levels",
                     "conv_size"):
            positive_int(name, getattr(self, name))
        if self.n_neurons % self.n_astrocytes:
            raise ValueError(
                f"n_neurons ({self.n_neurons}) must be divisible by n_astrocytes "
                f"({self.n_astrocytes}): each astrocyte serves n_neurons / n_astrocytes neurons")
        choice("reset", self.reset, RESETS)
        choice("synapse", self.synapse, SYNAPSES)
        choice("readout_norm", self.readout_norm, READOUT_NORMS)
        choice("retention", self.retention, RETENTIONS)
        choice("sensing", self.sensing, SENSINGS)
        choice("clock", self.clock, CLOCKS)
        choice("decay_clock", self.decay_clock, CLOCKS)
        if self.conv_size > MAX_CONV_SIZE:
            raise ValueError(f"conv_size must be at most {MAX_CONV_SIZE} (a short delay line; "
                             f"1 = none), got {self.conv_size}")
        number_in_range("gate_temperature", self.gate_temperature, 0, lo_open=True)
        number_in_range("clock_rate", self.clock_rate, 0, lo_open=True)
        if self.clock_rate != 1 and not self.activity_clock:
            raise ValueError(f"clock_rate={self.clock_rate!r} is an option of "
                             "clock='activity' (how fast its phase turns the keys), but "
                             "clock='time'; use clock_rate=1")
        number_in_range("clock_threshold", self.clock_threshold, 0)
        if self.clock_threshold and not self.activity_clock:
            raise ValueError(f"clock_threshold={self.clock_threshold!r} is an option of "
                             "clock='activity' (the activity below which the astrocyte is "
                             "silent), but clock='time'; use clock_threshold=0")
        if self.activity_decay and not self.activity_clock:
            raise ValueError("decay_clock='activity' decays the astrocyte by its activity "
                             "a_t, which only clock='activity' has, but clock='time'; set "
                             "clock='activity' or use decay_clock='time'")
        for name in ("astrocyte", "neuron_path", "spiking", "rotary", "detach_reset"):
            boolean(name, getattr(self, name))
        if self.rotary and self.d_key % 2:
            raise ValueError(f"rotary positions need an even d_key, got {self.d_key}")
        if not (self.astrocyte or self.neuron_path):
            raise ValueError("astrocyte=False and neuron_path=False leave the unit no input")
        number_in_range("rotary_base", self.rotary_base, 1, lo_open=True)
        number_in_range("rotary_fraction", self.rotary_fraction, 0, 1)
        object.__setattr__(self, "surrogate", as_surrogate(self.surrogate))
        if self.astro_model != "linear" and not all(
                callable(getattr(self.astro_model, m, None))
                for m in ("state_shape", "init_state", "step")):
            raise ValueError("astro_model must be 'linear' or a nonlinear astrocyte model "
                             f"(see astro_neuron.astrocytes), got {self.astro_model!r}")
        if not self.astrocyte and (self.conv_size > 1 or self.gated):
            raise ValueError(f"conv_size={self.conv_size} and retention={self.retention!r} are "
                             "options of the astrocyte, but astrocyte=False has none "
                             "(use conv_size=1, retention='fixed')")
        if not self.astrocyte and self.sensing != "identity":
            raise ValueError(f"sensing={self.sensing!r} is an option of the astrocyte, but "
                             "astrocyte=False has none (use sensing='identity')")
        if self.activity_clock:
            if not self.astrocyte or not self.linear_astro:
                raise ValueError("clock='activity' is an option of the linear astrocyte (its "
                                 "activity turns the keys), but this layer has "
                                 + ("none (astrocyte=False)" if not self.astrocyte else
                                    f"astro_model={self.astro_model.name!r}")
                                 + "; use clock='time'")
            if self.rotary_dims < 4:
                raise ValueError("clock='activity' turns the rotary channels of k and q (pair 0 "
                                 "at frequency 0, so at least 4 channels), but rotary="
                                 f"{self.rotary}, rotary_fraction={self.rotary_fraction} leaves "
                                 f"{self.rotary_dims} of d_key={self.d_key}: set rotary=True and "
                                 "a larger rotary_fraction")
        if not self.linear_astro and (self.conv_size > 1 or self.gated):
            raise ValueError(f"conv_size and retention={self.retention!r} are options of the "
                             f"linear astrocyte; astro_model={self.astro_model.name!r} has its "
                             "own dynamics (use conv_size=1, retention='fixed')")

    @property
    def gated(self) -> bool:
        """True when the astrocyte's retention depends on the input (``retention`` is
        "gated" or "selective")."""
        return self.retention != "fixed"

    @property
    def activity_clock(self) -> bool:
        """True when the rotary channels turn with the astrocyte's activity
        (``clock="activity"``) rather than with time."""
        return self.clock == "activity"

    @property
    def activity_decay(self) -> bool:
        """True when the astrocyte decays by ``gamma ** a_t`` (its activity,
        ``decay_clock="activity"``) rather than by ``gamma`` every step."""
        return self.decay_clock == "activity"

    @property
    def d_conv(self) -> int:
        """Channels of the delay line: the K and V rows (``A * d_k + N``)."""
        return self.n_astrocytes * self.d_key + self.n_neurons

    @property
    def linear_astro(self) -> bool:
        """True for the paper's linear astrocyte (the parallel form applies)."""
        return isinstance(self.astro_model, str)

    @property
    def parallel(self) -> bool:
        """True when the chunked (parallel) form is exact: no reset, linear astrocyte."""
        return self.reset == "none" and (self.linear_astro or not self.astrocyte)

    @property
    def rotary_dims(self) -> int:
        """Key channels the rotary positions turn (0 without rotary; see
        :func:`~astro_neuron.functional.rotary.rotary`)."""
        return rotary_dims(self.d_key, self.rotary_fraction) if self.rotary else 0

    @property
    def d_value(self) -> int:
        return self.n_neurons // self.n_astrocytes

    @property
    def parts(self) -> tuple[tuple[str, int], ...]:
        """Row blocks of the fused input projection, in order: I, K, V, Q."""
        return projection_parts(self.n_neurons, self.n_astrocytes, self.d_key,
                                self.neuron_path, self.astrocyte, self.gated,
                                self.activity_clock)

    @property
    def proj_size(self) -> int:
        return sum(n for _, n in self.parts)


class AMSUParams(NamedTuple):
    """Tensors of one layer, in the form the equations use."""

    weight: Tensor               # [proj_size, in_features]: rows I | K | V | Q (spec.parts)
    bias: Optional[Tensor]       # [N] synaptic bias b_I, or None
    beta: Tensor                 # [N] membrane decay exp(-dt/tau_mem), in (0, 1]
    gamma: Tensor                # [A, d_k] astrocyte decay exp(-dt/tau_astro), in (0, 1]
    threshold: Tensor            # [N] firing threshold theta > 0
    astro_gain: Tensor           # [N] per-neuron astrocyte gain g_astro
    conv: Optional[Tensor] = None       # [conv_size, A*d_k + N] delay-line taps (row j:
                                        # lag j) over the K | V channels; None: no delay line
    gate_bias: Optional[Tensor] = None  # [A, d_k] bias b_G of the retention gate, or None
    clock_bias: Optional[Tensor] = None  # [A] bias b_E of the activity clock, or None


class AMSUState(NamedTuple):
    """Recurrent state; its size does not depend on T."""

    u: Tensor                    # [B, N] membrane potential (after reset)
    H: Optional[Tensor]          # [B, A, d_k, d_v] astrocyte state (None: astrocyte off)
    t: int = 0                   # steps taken so far (rotary position of the next step)
    conv: Optional[Tensor] = None  # [B, conv_size - 1, A*d_k + N] the delay line: the last
                                   # K | V inputs, oldest first (None: conv_size = 1)
    phase: Optional[Tensor] = None  # [B, A] float64, the activity clock: sum of a_t so far
                                    # (None: clock="time"); float64 in every dtype, so that
                                    # every form sums it alike and long runs keep it exact


class AMSUOutput(NamedTuple):
    """What a layer emits; each ``[T, B, N]`` (``[B, N]`` for one step)."""

    spikes: Tensor               # s_t in {0..L}
    u: Tensor                    # membrane u_t before reset (what the threshold saw)
    o: Tensor                    # astrocyte output g_astro * o_t (0 when astrocyte off)


def init_state(spec: AMSUSpec, batch_size: int, device=None,
               dtype: torch.dtype = torch.float32) -> AMSUState:
    """The zero state for ``batch_size`` sequences."""
    u = torch.zeros(batch_size, spec.n_neurons, device=device, dtype=dtype)
    H = None
    if spec.astrocyte and not spec.linear_astro:
        H = spec.astro_model.init_state(spec, batch_size, device, dtype)
    elif spec.astrocyte:
        H = torch.zeros(batch_size, spec.n_astrocytes, spec.d_key, spec.d_value,
                        device=device, dtype=dtype)
    conv = None
    if spec.conv_size > 1:
        conv = torch.zeros(batch_size, spec.conv_size - 1, spec.d_conv, device=device,
                           dtype=dtype)
    phase = None
    if spec.activity_clock:
        phase = torch.zeros(batch_size, spec.n_astrocytes, device=device, dtype=torch.float64)
    return AMSUState(u, H, 0, conv, phase)


def _shape(x) -> str:
    return str(list(x.shape)) if isinstance(x, Tensor) else type(x).__name__


def check_state(state: AMSUState, spec: AMSUSpec, batch: int, like: Tensor) -> None:
    """Raise a clear error when ``state`` does not belong to this layer and input."""
    if not isinstance(state, tuple) or len(state) not in (3, 4, 5):
        got = type(state).__name__
        if isinstance(state, tuple):
            got += f" of {len(state)} items"
        raise TypeError(f"state must be an AMSUState(u, H, t) (and conv, the delay line, when "
                        f"conv_size > 1, and phase, when clock='activity'; from init_state or "
                        f"a previous run), got {got}")
    u, H, t = state[:3]
    conv = state[3] if len(state) > 3 else None
    phase = state[4] if len(state) > 4 else None
    want_u = (batch, spec.n_neurons)
    if not isinstance(u, Tensor) or tuple(u.shape) != want_u:
        raise ValueError(f"state.u must have shape {list(want_u)} [batch, n_neurons], got "
                         f"{_shape(u)}: is this state from another layer or batch size?")
    if spec.astrocyte:
        want_H = (batch, spec.n_astrocytes, spec.d_key, spec.d_value)
        layout = "[batch, n_astrocytes, d_key, d_value]"
        if not spec.linear_astro:
            want_H = (batch, *spec.astro_model.state_shape(spec))
            layout = f"[batch, variables, n_astrocytes, d_key, d_value] ({spec.astro_model.name})"
        if not isinstance(H, Tensor) or tuple(H.shape) != want_H:
            raise ValueError(f"state.H must have shape {list(want_H)} {layout}, got "
                             f"{_shape(H) if H is not None else None}: is this state from "
                             "another layer?")
    elif H is not None:
        raise ValueError("state.H must be None for a layer without astrocyte")
    if isinstance(t, bool) or not isinstance(t, int) or t < 0:
        raise TypeError(f"state.t must be a non-negative int, got {t!r}")
    if spec.conv_size > 1:
        want_c = (batch, spec.conv_size - 1, spec.d_conv)
        if not isinstance(conv, Tensor) or tuple(conv.shape) != want_c:
            raise ValueError(f"state.conv must have shape {list(want_c)} [batch, conv_size - 1, "
                             f"A*d_k + N] (the delay line of conv_size={spec.conv_size}), got "
                             f"{_shape(conv) if conv is not None else None}")
    elif conv is not None:
        raise ValueError("state.conv must be None for a layer without delay line (conv_size=1)")
    if spec.activity_clock:
        want_p = (batch, spec.n_astrocytes)
        if not isinstance(phase, Tensor) or tuple(phase.shape) != want_p:
            raise ValueError(f"state.phase must have shape {list(want_p)} [batch, n_astrocytes] "
                             "(the activity clock of clock='activity'), got "
                             f"{_shape(phase) if phase is not None else None}")
        if phase.dtype != torch.float64:
            raise TypeError(f"state.phase must be float64 (the activity clock is summed in "
                            f"double precision in every dtype), got {phase.dtype}")
    elif phase is not None:
        raise ValueError("state.phase must be None for a layer whose clock is time "
                         "(clock='time')")
    if phase is not None and phase.device != like.device:
        raise ValueError(f"state.phase is on {phase.device} but the input is on {like.device}")
    for name, ten in (("state.u", u), ("state.H", H), ("state.conv", conv)):
        if ten is None:
            continue
        if ten.dtype != like.dtype:
            raise TypeError(f"{name} has dtype {ten.dtype} but the input has {like.dtype}")
        if ten.device != like.device:
            raise ValueError(f"{name} is on {ten.device} but the input is on {like.device}")
