"""The Astrocyte-Modulated Spiking Unit as pure functions: the one definition
(equations: docs/model.md), every form beside it, one dispatcher.

============  ==========================================================================
``spec``      :class:`AMSUSpec` (every option), :class:`AMSUParams`, :class:`AMSUState`,
              :class:`AMSUOutput`; the I | K | V | Q row layout (:func:`projection_parts`)
``step``      the definition: :func:`project`, :func:`dynamics_step`, :func:`fire`,
              :func:`reset_membrane` (and :func:`readout`, the astrocyte's output)
``naive``     :func:`amsu_step`, :func:`amsu_loop` (the reference), :func:`amsu_recurrent`
``chunk``     :func:`amsu_chunked`: the parallel form (no reset, linear astrocyte)
``decode``    the fused in-place step for generation (:func:`~.decode.decode_step`)
============  ==========================================================================

:func:`run` picks a form and checks the result is finite. Time-major: ``x_seq`` is
``[T, B, in_features]``. Nothing here owns parameters: :class:`astro_neuron.AMSU` does.
"""

from __future__ import annotations

from typing import Optional

from torch import Tensor

from astro_neuron.functional.amsu.chunk import amsu_chunked, check_parallel
from astro_neuron.functional.amsu.naive import (
    amsu_loop, amsu_recurrent, amsu_step, check_input, prepare,
)
from astro_neuron.functional.amsu.spec import (
    CLOCKS, MAX_CONV_SIZE, READOUT_EPS, READOUT_NORMS, RESETS, RETENTIONS, SENSINGS, SYNAPSES,
    AMSUOutput,
    AMSUParams, AMSUSpec, AMSUState, check_state, init_state, projection_parts, split_rows,
)
from astro_neuron.functional.amsu.step import (
    activity, astro_decay, delay_line, dynamics_step, fire, log_gate, project, project_all,
    readout, reset_membrane, sense, turn,
)
from astro_neuron.functional.finite import check_finite, checking_finite
from astro_neuron.validate import choice, positive_int

__all__ = [
    "AMSUSpec", "projection_parts", "split_rows", "AMSUParams", "AMSUState", "AMSUOutput",
    "RESETS", "SYNAPSES", "READOUT_NORMS", "READOUT_EPS", "RETENTIONS", "SENSINGS", "CLOCKS",
    "MAX_CONV_SIZE", "FORMS",
    "init_state", "project", "project_all", "delay_line", "sense", "log_gate", "activity", "turn",
    "astro_decay", "readout", "fire", "reset_membrane", "dynamics_step",
    "amsu_step", "amsu_loop", "amsu_recurrent", "amsu_chunked", "check_state",
    "check_input", "check_parallel", "prepare", "run", "check_run",
]

FORMS = ("auto", "chunked", "recurrent", "loop")


def check_run(x_seq: Tensor, state: Optional[AMSUState], p: AMSUParams, out: AMSUOutput,
              new: AMSUState, check: Optional[bool] = None, name: str = "AM-SU",
              seq: bool = True, spec: Optional[AMSUSpec] = None) -> None:
    """The finiteness check of a run (see :mod:`astro_neuron.functional.finite`):
    parameters, input and state in (causes), then outputs and state out. ``seq``:
    the tensors are time-major ``[T, ...]`` (False: one step).

    Over a sequence the fast path leaves out the membrane and (binary or graded)
    spikes: a NaN or Inf at any step of the membrane stays in it to the final state
    ``u`` whatever the decay or reset (:func:`astro_neuron.functional.lif.check_run`
    says why; without the neuron path the membrane is the state given), and spikes
    are always finite. The input and the astrocyte output are summed: a NaN in the
    read-out alone would only silence spikes."""
    if not checking_finite(check):
        return
    covered = []
    if seq:
        covered.append(f"{name} membrane u")
        if spec is not None and spec.spiking:
            covered.append(f"{name} spikes")
    named = [(f"{name} parameter {f}", t, False) for f, t in zip(p._fields, p)]
    st = AMSUState(*state) if state is not None else None
    named += [(f"{name} input", x_seq, seq)]
    if st is not None:
        named += [(f"{name} state.u", st.u, False), (f"{name} state.H", st.H, False),
                  (f"{name} state.conv", st.conv, False), (f"{name} state.phase", st.phase, False)]
    named += [(f"{name} membrane u", out.u, seq), (f"{name} astrocyte output o", out.o, seq),
              (f"{name} spikes", out.spikes, seq), (f"{name} final state.u", new.u, False),
              (f"{name} final state.H", new.H, False),
              (f"{name} final state.conv", new.conv, False),
              (f"{name} final state.phase", new.phase, False)]
    check_finite(named, covered=covered)


def run(x_seq: Tensor, state: Optional[AMSUState], params: AMSUParams, spec: AMSUSpec,
        form: str = "auto", chunk_size: int = 64, check: Optional[bool] = None
        ) -> tuple[AMSUOutput, AMSUState]:
    """Run ``x_seq`` ``[T, B, in]`` from ``state`` (None: zero) in one form; return
    ``(AMSUOutput(spikes, u, o) of [T, B, N], final state)``.

    ``form``: ``"auto"`` (chunked when exact: no reset and the linear astrocyte; else
    recurrent), ``"chunked"``, ``"recurrent"`` or ``"loop"`` (the reference). Every form
    gives the same numbers (to rounding). ``check``: the finiteness check (None: the
    setting of :func:`astro_neuron.validation`); it raises
    :class:`~astro_neuron.functional.finite.NonFiniteError` naming the tensor and step.
    """
    choice("form", form, FORMS)
    if form == "auto":
        form = "chunked" if spec.parallel else "recurrent"
    if form == "chunked":
        positive_int("chunk_size", chunk_size)
        out, new = amsu_chunked(x_seq, state, params, spec, chunk_size)
    elif form == "recurrent":
        out, new = amsu_recurrent(x_seq, state, params, spec)
    else:
        out, new = amsu_loop(x_seq, state, params, spec)
    check_run(x_seq, state, params, out, new, check, spec=spec)
    return out, new
