"""The adaptive leaky integrate-and-fire neuron (ALIF) of LSNNs (Bellec et al. 2018,
"Long short-term memory and learning-to-learn in networks of spiking neurons"): the
standard spiking baseline for working memory. One definition and its loop.

Per neuron, with ``z`` the spikes, ``v`` the membrane, ``b`` the adaptation::

    b_t = rho * b_{t-1} + (1 - rho) * z_{t-1}          rho   = exp(-dt / tau_adapt)
    v_t = alpha * v_{t-1} + x_t (+ W_rec z_{t-1})       alpha = exp(-dt / tau_mem)
    A_t = v_th + beta_adapt * b_t                        (the adaptive threshold)
    z_t = Theta(v_t - A_t)                               (surrogate gradient, also into A_t)
    v_t <- reset(v_t, z_t, v_th)                         (subtract v_th by default, as LSNN)

A neuron that fired raises its own threshold for ``tau_adapt`` steps; that trace is
the memory (``tau_adapt`` of the order of the delay to bridge). Spikes, graded
levels, the non-spiking twin and resets follow the AM-SU's rules
(:func:`~astro_neuron.functional.amsu.fire`, :func:`~astro_neuron.functional.amsu.reset_membrane`).

* :func:`alif_step` one step: the definition;
* :func:`alif_loop` the step applied T times (there is no parallel form: the
  threshold depends on the spikes);
* :func:`run`       the loop with the finiteness check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from astro_neuron.functional.amsu.step import fire, reset_membrane
from astro_neuron.functional.finite import check_finite, checking_finite
from astro_neuron.functional.lif import NeuronSpec

__all__ = ["ALIFSpec", "ALIFState", "alif_step", "alif_loop", "run", "check_run",
           "init_state"]


@dataclass(frozen=True)
class ALIFSpec(NeuronSpec):
    """Options of an ALIF layer (same meaning as in
    :class:`~astro_neuron.functional.lif.LIFSpec`; the default reset is LSNN's
    ``"subtract"``). No ``parallel``: there is no parallel form."""

    reset: str = "subtract"        # keeps its place among the fields (after n_neurons)


class ALIFState(NamedTuple):
    """``v`` membrane (after reset), ``b`` adaptation, ``z`` last spikes; each ``[B, ..., N]``."""

    v: Tensor
    b: Tensor
    z: Tensor


def init_state(x_t: Tensor) -> ALIFState:
    """The zero state for one step of input ``x_t`` ``[B, ..., N]``."""
    z = torch.zeros_like(x_t)
    return ALIFState(z, z.clone(), z.clone())


def _check_input(x: Tensor, n: int, seq: bool) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"ALIF input must be a torch.Tensor, got {type(x).__name__}")
    layout = "[T, B, ..., N]" if seq else "[B, ..., N]"
    if x.dim() < (2 if seq else 1) or x.shape[-1] != n:
        raise ValueError(f"ALIF input must be {layout} with N={n}, got shape {list(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"ALIF input must be a floating-point tensor, got {x.dtype}")


def _check_state(state, shape) -> ALIFState:
    if not (isinstance(state, tuple) and len(state) == 3
            and all(isinstance(t, Tensor) for t in state)):
        raise TypeError("the ALIF state must be ALIFState(v, b, z) of three tensors "
                        f"[B, ..., N], got {type(state).__name__}")
    for name, t in zip(ALIFState._fields, state):
        if tuple(t.shape) != tuple(shape):
            raise ValueError(f"the ALIF state {name} must have shape {list(shape)} (one step "
                             f"of the input), got {list(t.shape)}")
    return ALIFState(*state)


def _check_rec(w_rec: Optional[Tensor], n: int) -> None:
    if w_rec is not None and (not isinstance(w_rec, Tensor) or tuple(w_rec.shape) != (n, n)):
        got = list(w_rec.shape) if isinstance(w_rec, Tensor) else type(w_rec).__name__
        raise ValueError(f"the ALIF recurrent weight must be [N, N] = [{n}, {n}], got {got}")


def alif_step(x: Tensor, state: ALIFState, alpha: Tensor, rho: Tensor, threshold: Tensor,
              beta_adapt: Tensor, spec: ALIFSpec, w_rec: Optional[Tensor] = None
              ) -> tuple[Tensor, Tensor, Tensor, ALIFState]:
    """One step (the definition): ``(spikes z_t, v_t before reset, threshold A_t, state)``.

    ``alpha``, ``rho``, ``threshold`` (``v_th``), ``beta_adapt``: ``[N]`` (or anything
    that broadcasts against ``x``); ``w_rec``: optional recurrent weight ``[N, N]``
    (input ``W_rec z_{t-1}``, row = receiving neuron).
    """
    drive = x if w_rec is None else x + F.linear(state.z, w_rec)
    b = rho * state.b + (1 - rho) * state.z
    v = alpha * state.v + drive
    A = threshold + beta_adapt * b
    z = fire(v, A, spec)
    return z, v, A, ALIFState(reset_membrane(v, z, threshold, spec), b, z)


def alif_loop(x_seq: Tensor, state: Optional[ALIFState], alpha: Tensor, rho: Tensor,
              threshold: Tensor, beta_adapt: Tensor, spec: ALIFSpec,
              w_rec: Optional[Tensor] = None) -> tuple[Tensor, Tensor, Tensor, ALIFState]:
    """:func:`alif_step` over ``x_seq`` ``[T, B, ..., N]`` from ``state`` (None: zero):
    ``(spikes [T, ...], v before reset [T, ...], thresholds A [T, ...], final state)``."""
    _check_input(x_seq, spec.n_neurons, True)
    _check_rec(w_rec, spec.n_neurons)
    st = init_state(x_seq[0] if x_seq.shape[0] else x_seq.new_zeros(x_seq.shape[1:])) \
        if state is None else _check_state(state, x_seq.shape[1:])
    zs, vs, As = [], [], []
    for x_t in x_seq.unbind(0):
        z, v, A, st = alif_step(x_t, st, alpha, rho, threshold, beta_adapt, spec, w_rec)
        zs.append(z)
        vs.append(v)
        As.append(A)
    if not zs:
        return x_seq.clone(), x_seq.clone(), x_seq.clone(), st
    return torch.stack(zs), torch.stack(vs), torch.stack(As), st


def run(x_seq: Tensor, state: Optional[ALIFState], alpha: Tensor, rho: Tensor,
        threshold: Tensor, beta_adapt: Tensor, spec: ALIFSpec, w_rec: Optional[Tensor] = None,
        check: Optional[bool] = None, name: str = "ALIF"
        ) -> tuple[Tensor, Tensor, Tensor, ALIFState]:
    """:func:`alif_loop` with the finiteness check (``check`` None: the setting of
    :func:`astro_neuron.validation`)."""
    out = alif_loop(x_seq, state, alpha, rho, threshold, beta_adapt, spec, w_rec)
    check_run(x_seq, state, (alpha, rho, threshold, beta_adapt, w_rec), out, check, name)
    return out


def check_run(x: Tensor, state: Optional[ALIFState], params: tuple, out: tuple,
              check: Optional[bool] = None, name: str = "ALIF", seq: bool = True) -> None:
    """The finiteness check of an ALIF run (``seq=False``: one step): parameters, input
    and state in, then spikes, membrane, thresholds and state out."""
    if not checking_finite(check):
        return
    alpha, rho, thr, beta_adapt, w_rec = params
    z, v, A, st = out
    given = [] if state is None else [(f"{name} state {n} (given)", t, False)
                                      for n, t in zip(ALIFState._fields, state)]
    check_finite([(f"{name} decay alpha", alpha, False), (f"{name} adaptation decay rho", rho, False),
                  (f"{name} threshold", thr, False), (f"{name} beta_adapt", beta_adapt, False),
                  (f"{name} recurrent weight", w_rec, False), (f"{name} input", x, seq),
                  *given, (f"{name} membrane v", v, seq), (f"{name} adaptive threshold", A, seq),
                  (f"{name} spikes", z, seq),
                  *[(f"{name} final state {n}", t, False) for n, t in zip(ALIFState._fields, st)]])
