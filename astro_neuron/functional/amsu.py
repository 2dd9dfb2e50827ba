"""The Astrocyte-Modulated Spiking Unit as pure functions (equations: docs/model.md).

Three forms of one layer, all time-major (``x_seq`` is ``[T, B, in_features]``):

* :func:`amsu_step`    one step; the definition of the unit.
* :func:`amsu_loop`    the step applied T times; the slow, obvious reference.
* :func:`amsu_chunked` the parallel form (no reset only): projections for all steps,
  the two linear recurrences in chunks (:mod:`.scan`), the threshold element-wise.

:func:`amsu_recurrent` is the loop with the projections hoisted out of it: exact for
every option (resets included) and the form the module uses when a reset is on.

Parameters travel as :class:`AMSUParams` (tensors, decays already in (0, 1]); the
static structure and options as :class:`AMSUSpec`; the state as
:class:`AMSUState`. Nothing here owns parameters: :class:`astro_neuron.AMSU` does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from astro_neuron.functional.rotary import rotary, rotary_dims
from astro_neuron.functional.scan import (
    astro_chunked, astro_read, astro_step, leaky_chunked, leaky_step,
)
from astro_neuron.functional.surrogate import ATan, as_surrogate

__all__ = [
    "AMSUSpec", "projection_parts", "AMSUParams", "AMSUState", "AMSUOutput",
    "RESETS", "SYNAPSES",
    "init_state", "project", "fire", "reset_membrane", "dynamics_step",
    "amsu_step", "amsu_loop", "amsu_recurrent", "amsu_chunked", "check_state",
]

RESETS = ("none", "subtract", "zero")
SYNAPSES = ("identity", "sigmoid")


def _pos_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def projection_parts(n_neurons: int, n_astrocytes: int, d_key: int, neuron_path: bool = True,
                     astrocyte: bool = True) -> tuple[tuple[str, int], ...]:
    """Row blocks ``(name, rows)`` of an AM-SU layer's fused input projection, in order
    I (neuron path), K, V, Q (astrocyte). One definition shared by the float layer and
    the integer network (``neuromorphic``), so their weight layouts cannot drift apart."""
    N, A, dk = n_neurons, n_astrocytes, d_key
    out = []
    if neuron_path:
        out.append(("I", N))
    if astrocyte:
        out += [("K", A * dk), ("V", N), ("Q", A * dk)]
    return tuple(out)


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

    def __post_init__(self) -> None:
        _pos_int("in_features", self.in_features)
        _pos_int("n_neurons", self.n_neurons)
        _pos_int("n_astrocytes", self.n_astrocytes)
        _pos_int("d_key", self.d_key)
        _pos_int("spike_levels", self.spike_levels)
        if self.n_neurons % self.n_astrocytes:
            raise ValueError(
                f"n_neurons ({self.n_neurons}) must be divisible by n_astrocytes "
                f"({self.n_astrocytes}): each astrocyte serves n_neurons / n_astrocytes neurons")
        if self.reset not in RESETS:
            raise ValueError(f"reset must be one of {RESETS}, got {self.reset!r}")
        if self.synapse not in SYNAPSES:
            raise ValueError(f"synapse must be one of {SYNAPSES}, got {self.synapse!r}")
        if self.rotary and self.d_key % 2:
            raise ValueError(f"rotary positions need an even d_key, got {self.d_key}")
        if not (self.astrocyte or self.neuron_path):
            raise ValueError("astrocyte=False and neuron_path=False leave the unit no input")
        if not math.isfinite(self.rotary_base) or self.rotary_base <= 1:
            raise ValueError(f"rotary_base must be > 1, got {self.rotary_base!r}")
        if isinstance(self.rotary_fraction, bool) or not isinstance(
                self.rotary_fraction, (int, float)) or not 0 <= self.rotary_fraction <= 1:
            raise ValueError(f"rotary_fraction must be a number in [0, 1], got "
                             f"{self.rotary_fraction!r}")
        object.__setattr__(self, "surrogate", as_surrogate(self.surrogate))
        if self.astro_model != "linear" and not all(
                callable(getattr(self.astro_model, m, None))
                for m in ("state_shape", "init_state", "step")):
            raise ValueError("astro_model must be 'linear' or a nonlinear astrocyte model "
                             f"(see astro_neuron.astrocytes), got {self.astro_model!r}")

    @property
    def linear_astro(self) -> bool:
        """True for the paper's linear astrocyte (the parallel form applies)."""
        return isinstance(self.astro_model, str)

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
                                self.neuron_path, self.astrocyte)

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


class AMSUState(NamedTuple):
    """Recurrent state; its size does not depend on T."""

    u: Tensor                    # [B, N] membrane potential (after reset)
    H: Optional[Tensor]          # [B, A, d_k, d_v] astrocyte state (None: astrocyte off)
    t: int = 0                   # steps taken so far (rotary position of the next step)


class AMSUOutput(NamedTuple):
    """What a layer emits; each ``[T, B, N]`` (``[B, N]`` for one step)."""

    spikes: Tensor               # s_t in {0..L}
    u: Tensor                    # membrane u_t before reset (what the threshold saw)
    o: Tensor                    # astrocyte output g_astro * o_t (0 when astrocyte off)


# ---------------------------------------------------------------- pieces of the step

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
    return AMSUState(u, H, 0)


class _LinearSplit(torch.autograd.Function):
    """``x W^T`` split along the output features, with a backward that accumulates
    ``grad_x`` block by block (``addmm_``) and writes each block of ``grad_W`` in
    place, instead of first concatenating the blocks' gradients (a full-size copy)."""

    @staticmethod
    def forward(ctx, x, weight, sizes):  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.sizes = sizes
        return tuple(F.linear(x, weight).split(sizes, dim=-1))

    @staticmethod
    def backward(ctx, *grads):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        x2 = x.reshape(-1, x.shape[-1])
        need_x, need_w = ctx.needs_input_grad[:2]
        gx = None
        gw = torch.zeros_like(weight) if need_w else None
        off = 0
        for g, n in zip(grads, ctx.sizes):
            if g is not None:
                g2 = g.reshape(-1, n)
                w = weight[off:off + n]
                if need_x:
                    gx = g2 @ w if gx is None else gx.addmm_(g2, w)
                if need_w:
                    torch.mm(g2.t(), x2, out=gw[off:off + n])
            off += n
        if need_x:
            gx = torch.zeros_like(x) if gx is None else gx.reshape(x.shape)
        return gx, gw, None


def project(x: Tensor, p: AMSUParams, spec: AMSUSpec):
    """Input projections of ``x`` ``[..., in]`` -> ``(I, k, v, q)``.

    ``I`` ``[..., N]`` (None without neuron path); ``k, q`` ``[..., A, d_k]`` and
    ``v`` ``[..., A, d_v]`` (None without astrocyte).
    """
    sizes = [n for _, n in spec.parts]
    if len(sizes) == 1:
        z = (F.linear(x, p.weight),)
    else:
        z = _LinearSplit.apply(x, p.weight, sizes)
    chunks = dict(zip((name for name, _ in spec.parts), z))
    lead = x.shape[:-1]
    A = spec.n_astrocytes
    I = chunks.get("I")
    if I is not None:
        if p.bias is not None:
            I = I + p.bias
        if spec.synapse == "sigmoid":
            I = torch.sigmoid(I)
    k = v = q = None
    if spec.astrocyte:
        k = chunks["K"].reshape(*lead, A, spec.d_key)
        v = chunks["V"].reshape(*lead, A, spec.d_value)
        q = chunks["Q"].reshape(*lead, A, spec.d_key)
    return I, k, v, q


def fire(y: Tensor, threshold: Tensor, spec) -> Tensor:
    """Spikes of the drive ``y = u + o``: ``sum_l Theta(y - l * theta)``, l = 1..L.

    Binary (L = 1) is ``Theta(y - theta)`` with the strict ``>``; graded spikes count
    the levels crossed (equal to ``clamp(floor(y/theta), 0, L)`` except exactly on
    a level, where the strict comparison does not count it). The non-spiking twin
    replaces each step by the surrogate's smooth primitive.

    ``spec`` is any neuron spec (:class:`AMSUSpec`, :class:`~.lif.LIFSpec`): it
    supplies ``surrogate``, ``spiking`` and ``spike_levels``.
    """
    sg = spec.surrogate
    f = sg if spec.spiking else sg.primitive
    s = f(y - threshold)
    for level in range(2, spec.spike_levels + 1):
        s = s + f(y - level * threshold)
    return s


def reset_membrane(u: Tensor, s: Tensor, threshold: Tensor, spec) -> Tensor:
    """Reset after spikes ``s``: none, subtract ``s * theta``, or set to zero.

    ``spec`` supplies ``reset`` and ``detach_reset``.
    """
    if spec.reset == "none":
        return u
    sd = s.detach() if spec.detach_reset else s
    if spec.reset == "subtract":
        return u - sd * threshold
    return u * (1 - sd.clamp(max=1))


def dynamics_step(I: Optional[Tensor], k: Optional[Tensor], v: Optional[Tensor],
                  q: Optional[Tensor], state: AMSUState, p: AMSUParams,
                  spec: AMSUSpec) -> tuple[AMSUOutput, AMSUState]:
    """One step of the unit from already-projected inputs (``[B, ...]``)."""
    if spec.neuron_path:
        u = leaky_step(state.u, I, p.beta)
    else:
        u = state.u
    H = state.H
    if spec.astrocyte:
        if spec.rotary:
            k = rotary(k[None], state.t, spec.rotary_base, spec.rotary_dims)[0]
            q = rotary(q[None], state.t, spec.rotary_base, spec.rotary_dims)[0]
        if spec.linear_astro:
            H = astro_step(H, k, v, p.gamma)
            o = astro_read(H, q)
        else:
            o, H = spec.astro_model.step(H, k, v, q)
        o = o.flatten(-2) * (p.astro_gain / math.sqrt(spec.d_key))
    else:
        o = torch.zeros_like(u)
    s = fire(u + o, p.threshold, spec)
    u_next = reset_membrane(u, s, p.threshold, spec) if spec.neuron_path else u
    return AMSUOutput(s, u, o), AMSUState(u_next, H, state.t + 1)


# ---------------------------------------------------------------- checks

def _fail(msg: str, exc=ValueError):
    raise exc(msg)


def check_state(state: AMSUState, spec: AMSUSpec, batch: int, like: Tensor) -> None:
    """Raise a clear error when ``state`` does not belong to this layer and input."""
    if not isinstance(state, tuple) or len(state) != 3:
        _fail(f"state must be an AMSUState(u, H, t), got {type(state).__name__}", TypeError)
    u, H, t = state
    want_u = (batch, spec.n_neurons)
    if not isinstance(u, Tensor) or tuple(u.shape) != want_u:
        _fail(f"state.u must have shape {list(want_u)} [batch, n_neurons], got "
              f"{list(u.shape) if isinstance(u, Tensor) else type(u).__name__}: "
              "is this state from another layer or batch size?")
    if spec.astrocyte:
        want_H = (batch, spec.n_astrocytes, spec.d_key, spec.d_value)
        layout = "[batch, n_astrocytes, d_key, d_value]"
        if not spec.linear_astro:
            want_H = (batch, *spec.astro_model.state_shape(spec))
            layout = f"[batch, variables, n_astrocytes, d_key, d_value] ({spec.astro_model.name})"
        if not isinstance(H, Tensor) or tuple(H.shape) != want_H:
            _fail(f"state.H must have shape {list(want_H)} {layout}, "
                  f"got {list(H.shape) if isinstance(H, Tensor) else H!r}: "
                  "is this state from another layer?")
    elif H is not None:
        _fail("state.H must be None for a layer without astrocyte")
    if isinstance(t, bool) or not isinstance(t, int) or t < 0:
        _fail(f"state.t must be a non-negative int, got {t!r}", TypeError)
    for name, ten in (("state.u", u), ("state.H", H)):
        if ten is None:
            continue
        if ten.dtype != like.dtype:
            _fail(f"{name} has dtype {ten.dtype} but the input has {like.dtype}", TypeError)
        if ten.device != like.device:
            _fail(f"{name} is on {ten.device} but the input is on {like.device}")


def _check_input(x: Tensor, p: AMSUParams, spec: AMSUSpec, seq: bool) -> None:
    if not isinstance(x, Tensor):
        _fail(f"input must be a torch.Tensor, got {type(x).__name__}", TypeError)
    want = 3 if seq else 2
    layout = "[T, B, in_features]" if seq else "[B, in_features]"
    if x.dim() != want:
        _fail(f"input must have rank {want} {layout}, got shape {list(x.shape)}")
    if x.shape[-1] != spec.in_features:
        _fail(f"input has {x.shape[-1]} features (last dim of {list(x.shape)}), "
              f"the layer expects in_features={spec.in_features}")
    if not x.is_floating_point():
        _fail(f"input must be a floating-point tensor, got {x.dtype}", TypeError)
    w = p.weight
    if x.dtype != w.dtype:
        _fail(f"input dtype {x.dtype} differs from the layer's {w.dtype}; "
              "convert one (e.g. layer.to(x.dtype))", TypeError)
    if x.device != w.device:
        _fail(f"input is on {x.device} but the layer is on {w.device}; "
              "move one (e.g. layer.to(x.device))")


def _prepare(x: Tensor, state: Optional[AMSUState], p: AMSUParams, spec: AMSUSpec,
             seq: bool) -> AMSUState:
    _check_input(x, p, spec, seq)
    batch = x.shape[1] if seq else x.shape[0]
    if state is None:
        return init_state(spec, batch, x.device, x.dtype)
    check_state(state, spec, batch, x)
    return AMSUState(*state)


def _stack(outs: list[AMSUOutput], like: Tensor) -> AMSUOutput:
    if not outs:
        empty = like.new_zeros(0, like.shape[1], 0)
        return AMSUOutput(empty, empty, empty)
    return AMSUOutput(*(torch.stack(z) for z in zip(*outs)))


# ---------------------------------------------------------------- the three forms

def amsu_step(x: Tensor, state: Optional[AMSUState], p: AMSUParams,
              spec: AMSUSpec) -> tuple[AMSUOutput, AMSUState]:
    """One step: ``x`` ``[B, in]`` -> (``AMSUOutput`` of ``[B, N]``, new state)."""
    state = _prepare(x, state, p, spec, seq=False)
    return dynamics_step(*project(x, p, spec), state, p, spec)


def _steps(seq: Optional[Tensor], T: int) -> list:
    """Per-step slices via ``unbind`` (its backward is one stack; indexing ``seq[t]``
    in a loop would allocate a full-size zero gradient at every step)."""
    return [None] * T if seq is None else list(seq.unbind(0))


def amsu_loop(x_seq: Tensor, state: Optional[AMSUState], p: AMSUParams,
              spec: AMSUSpec) -> tuple[AMSUOutput, AMSUState]:
    """Reference: :func:`amsu_step` applied to each of the T steps of ``x_seq``."""
    state = _prepare(x_seq, state, p, spec, seq=True)
    outs = []
    for x_t in _steps(x_seq, x_seq.shape[0]):
        out, state = amsu_step(x_t, state, p, spec)
        outs.append(out)
    return _stack(outs, x_seq.new_zeros(0, x_seq.shape[1], spec.n_neurons)), state


def amsu_recurrent(x_seq: Tensor, state: Optional[AMSUState], p: AMSUParams,
                   spec: AMSUSpec) -> tuple[AMSUOutput, AMSUState]:
    """The loop with all projections done at once; exact for every option."""
    state = _prepare(x_seq, state, p, spec, seq=True)
    T = x_seq.shape[0]
    I, k, v, q = (_steps(z, T) for z in project(x_seq, p, spec))
    outs = []
    for t in range(T):
        out, state = dynamics_step(I[t], k[t], v[t], q[t], state, p, spec)
        outs.append(out)
    return _stack(outs, x_seq.new_zeros(0, x_seq.shape[1], spec.n_neurons)), state


def amsu_chunked(x_seq: Tensor, state: Optional[AMSUState], p: AMSUParams, spec: AMSUSpec,
                 chunk_size: int = 64) -> tuple[AMSUOutput, AMSUState]:
    """Parallel form (training): same results as :func:`amsu_loop` without a reset.

    Cost O(T * C * d) for chunk size ``C``; no T x T matrix is ever formed.
    """
    if spec.reset != "none":
        raise ValueError(
            f"the parallel (chunked) form is exact only without a reset, but reset="
            f"{spec.reset!r} couples the membrane to the spikes; use the recurrent form "
            "(mode='recurrent' or mode='loop')")
    if spec.astrocyte and not spec.linear_astro:
        raise ValueError(
            f"the parallel (chunked) form needs the linear astrocyte, but astro_model="
            f"{spec.astro_model.name!r} is nonlinear (sequential only); use mode='recurrent' "
            "or mode='loop'")
    state = _prepare(x_seq, state, p, spec, seq=True)
    I, k, v, q = project(x_seq, p, spec)
    if spec.neuron_path:
        u, u_T = leaky_chunked(I, p.beta, state.u, chunk_size)
    else:
        u, u_T = state.u.expand(x_seq.shape[0], *state.u.shape), state.u
    H = state.H
    if spec.astrocyte:
        if spec.rotary:
            k = rotary(k, state.t, spec.rotary_base, spec.rotary_dims)
            q = rotary(q, state.t, spec.rotary_base, spec.rotary_dims)
        o, H = astro_chunked(q, k, v, p.gamma, H, chunk_size)
        o = o.flatten(-2) * (p.astro_gain / math.sqrt(spec.d_key))
    else:
        o = torch.zeros_like(u)
    s = fire(u + o, p.threshold, spec)
    return AMSUOutput(s, u, o), AMSUState(u_T, H, state.t + x_seq.shape[0])
