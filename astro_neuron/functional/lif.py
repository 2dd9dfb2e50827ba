"""A plain leaky integrate-and-fire layer (no astrocyte, no projection): the one
definition and its forms.

``u_t = beta * u_{t-1} + x_t``; spikes and resets exactly as the AM-SU's
(:func:`~astro_neuron.functional.amsu.fire`, :func:`~astro_neuron.functional.amsu.reset_membrane`),
so an LIF layer equals an AM-SU with the astrocyte off fed with ``I_t = x_t``. Used
for the language model's channel mixing, the plain-spiking baselines, the neurons of
a tripartite population and Linear + LIF networks.

* :func:`lif_step`    one step: the definition;
* :func:`lif_loop`    the step applied T times: the reference;
* :func:`lif_chunked` the parallel form (no reset only; :mod:`.scan`);
* :func:`decode_step` the fused in-place step used for generation;
* :func:`run`         the dispatcher (``form="auto"``: chunked without reset, else loop)
  with the finiteness check.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import Tensor

from astro_neuron.functional.amsu.spec import RESETS
from astro_neuron.functional.amsu.step import fire, reset_membrane
from astro_neuron.functional.finite import check_finite, checking_finite
from astro_neuron.functional.scan import leaky_chunked, leaky_fire_chunked, leaky_step
from astro_neuron.functional.surrogate import ATan, as_surrogate
from astro_neuron.validate import boolean, choice, positive_int

__all__ = ["NeuronSpec", "LIFSpec", "lif_step", "lif_loop", "lif_chunked", "decode_step", "run", "check_run", "FORMS"]

FORMS = ("auto", "chunked", "loop")


@dataclass(frozen=True)
class NeuronSpec:
    """The options a leaky neuron layer shares with the AM-SU's neurons (same meaning as in
    :class:`~astro_neuron.functional.amsu.AMSUSpec`), validated once: the base of
    :class:`LIFSpec` and :class:`~astro_neuron.functional.alif.ALIFSpec`, which differ
    only in the default ``reset`` (and LIF's parallel form)."""

    n_neurons: int
    reset: str = "none"
    spike_levels: int = 1
    spiking: bool = True
    detach_reset: bool = False
    surrogate: Any = field(default_factory=ATan)

    def __post_init__(self) -> None:
        positive_int("n_neurons", self.n_neurons)
        positive_int("spike_levels", self.spike_levels)
        choice("reset", self.reset, RESETS)
        boolean("spiking", self.spiking)
        boolean("detach_reset", self.detach_reset)
        object.__setattr__(self, "surrogate", as_surrogate(self.surrogate))


@dataclass(frozen=True)
class LIFSpec(NeuronSpec):
    """Options of an LIF layer (same meaning as in :class:`~astro_neuron.functional.amsu.AMSUSpec`)."""

    @property
    def parallel(self) -> bool:
        """True when the chunked (parallel) form is exact (no reset)."""
        return self.reset == "none"


def _check(x: Tensor, n: int, rank: int) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"input must be a torch.Tensor, got {type(x).__name__}")
    layout = "[T, B, ..., N]" if rank == 3 else "[B, ..., N]"
    if x.dim() < rank - 1 or x.shape[-1] != n:
        raise ValueError(f"input must be {layout} with N={n}, got shape {list(x.shape)}")
    if x.device.type == "meta":
        raise ValueError("input is on the 'meta' device, which holds shapes but no values; "
                         "give a CPU or GPU tensor")


def _start(x_seq: Tensor, u0: Optional[Tensor]) -> Tensor:
    if u0 is None:
        return x_seq.new_zeros(x_seq.shape[1:])
    if not isinstance(u0, Tensor):
        raise TypeError(f"the LIF state must be the membrane tensor u [B, ..., N], got "
                        f"{type(u0).__name__}")
    if u0.shape != x_seq.shape[1:]:
        raise ValueError(f"the LIF state u must have shape {list(x_seq.shape[1:])} (one step "
                         f"of the input), got {list(u0.shape)}")
    return u0


def lif_step(x: Tensor, u: Tensor, beta: Tensor, threshold: Tensor,
             spec: LIFSpec, o: Optional[Tensor] = None) -> tuple[Tensor, Tensor, Tensor]:
    """One step: returns ``(spikes, u before reset, u after reset)``.

    ``o``: an optional drive added at the threshold only (spikes on ``u + o``, not
    integrated): the astrocyte output of a tripartite population's neurons.
    """
    u = leaky_step(u, x, beta)
    s = fire(u if o is None else u + o, threshold, spec)
    return s, u, reset_membrane(u, s, threshold, spec)


def decode_step(x: Tensor, u: Tensor, beta: Tensor) -> Tensor:
    """The fused decode form (generation): ``u = beta * u + x`` *in place*; returns ``u``
    (spikes are ``fire(u, threshold, spec)``; no reset, as the language model's)."""
    return u.mul_(beta).add_(x)


def lif_loop(x_seq: Tensor, u0: Tensor | None, beta: Tensor, threshold: Tensor,
             spec: LIFSpec, o: Optional[Tensor] = None) -> tuple[Tensor, Tensor, Tensor]:
    """Reference loop: ``(spikes [T, ...], u before reset [T, ...], u_T)``; ``o``
    ``[T, ...]``: the drive at the threshold (see :func:`lif_step`)."""
    _check(x_seq, spec.n_neurons, 3)
    u = _start(x_seq, u0)
    ss, us = [], []
    os_ = [None] * x_seq.shape[0] if o is None else o.unbind(0)
    for x_t, o_t in zip(x_seq.unbind(0), os_):
        s, u_pre, u = lif_step(x_t, u, beta, threshold, spec, o_t)
        ss.append(s)
        us.append(u_pre)
    if not ss:
        return x_seq.clone(), x_seq.clone(), u
    return torch.stack(ss), torch.stack(us), u


def lif_chunked(x_seq: Tensor, u0: Tensor | None, beta: Tensor, threshold: Tensor,
                spec: LIFSpec, chunk_size: int = 64, o: Optional[Tensor] = None
                ) -> tuple[Tensor, Tensor, Tensor]:
    """Parallel form of :func:`lif_loop` (no reset only)."""
    if spec.reset != "none":
        raise ValueError(f"the parallel (chunked) form is exact only without a reset, got "
                         f"reset={spec.reset!r}; use the loop")
    _check(x_seq, spec.n_neurons, 3)
    if o is None and spec.spiking and spec.spike_levels == 1:   # one pass on the CPU
        return leaky_fire_chunked(x_seq, beta, _start(x_seq, u0), threshold, spec.surrogate,
                                  chunk_size)
    u, u_T = leaky_chunked(x_seq, beta, _start(x_seq, u0), chunk_size)
    return fire(u if o is None else u + o, threshold, spec), u, u_T


def run(x_seq: Tensor, u0: Optional[Tensor], beta: Tensor, threshold: Tensor, spec: LIFSpec,
        form: str = "auto", chunk_size: int = 64, check: Optional[bool] = None,
        name: str = "LIF", o: Optional[Tensor] = None) -> tuple[Tensor, Tensor, Tensor]:
    """Run ``x_seq`` ``[T, B, ..., N]`` from ``u0`` (None: zero) in one form:
    ``(spikes, u before reset, u_T)``. ``form``: ``"auto"`` (chunked without reset,
    else the loop), ``"chunked"`` or ``"loop"``. ``check``: the finiteness check (None:
    the setting of :func:`astro_neuron.validation`). ``o``: the drive at the threshold
    (see :func:`lif_step`)."""
    choice("form", form, FORMS)
    if form == "auto":
        form = "chunked" if spec.parallel else "loop"
    if form == "chunked":
        positive_int("chunk_size", chunk_size)
        out = lif_chunked(x_seq, u0, beta, threshold, spec, chunk_size, o)
    else:
        out = lif_loop(x_seq, u0, beta, threshold, spec, o)
    check_run(x_seq, u0, beta, threshold, out, check, name, spec=spec, o=o)
    return out


def check_run(x, u0: Optional[Tensor], beta: Tensor, threshold: Tensor, out: tuple,
              check: Optional[bool] = None, name: str = "LIF", seq: bool = True,
              spec: Optional[NeuronSpec] = None, o: Optional[Tensor] = None) -> None:
    """The finiteness check of a LIF run (``seq=False``: one step ``[B, ..., N]``):
    parameters, input, drive ``o`` and state in, then spikes, membrane and state out.

    Over a sequence the fast path sums only the small tensors, ``o`` and (for the
    non-spiking twin) the spikes: a NaN or Inf at any step of the input or the
    membrane stays in the membrane to its last step, whatever the decay or the reset
    (``beta * NaN`` and ``0 * Inf`` are NaN, ``beta * Inf`` is infinite, and so are
    ``u - theta s`` and ``u (1 - s)`` of a non-finite ``u``), so the final state
    covers them; binary or graded spikes are always finite. On failure every tensor is
    searched, causes first."""
    if not checking_finite(check):
        return
    s, u, u_T = out
    covered = []
    if seq:
        covered += [f"{name} input", f"{name} membrane u"]
        if spec is not None and spec.spiking:
            covered.append(f"{name} spikes")
    check_finite([(f"{name} decay beta", beta, False), (f"{name} threshold", threshold, False),
                  (f"{name} input", x, seq), (f"{name} drive o", o, seq),
                  (f"{name} state u (given)", u0, False),
                  (f"{name} membrane u", u, seq), (f"{name} spikes", s, seq),
                  (f"{name} final state u", u_T, False)], covered=covered)
