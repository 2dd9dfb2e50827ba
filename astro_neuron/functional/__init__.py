"""Pure math of the AM-SU: the one definition of the unit and of the LIF, their forms
(step, loop, recurrent, chunked, fused decode), the linear scans, surrogates.

Nothing here owns parameters or state; see :mod:`astro_neuron.amsu` for the module.
Layout: :mod:`.amsu` (the AM-SU package), :mod:`.lif`, :mod:`.scan` (linear
recurrences), :mod:`.compiled` (their CPU kernels, compiled by numba), :mod:`.scan_fla`
(the astrocyte scan on CUDA by flash-linear-attention's GLA kernels), :mod:`.rotary`,
:mod:`.surrogate`, :mod:`.finite` (the NaN/Inf check).
"""
from astro_neuron.functional import surrogate
from astro_neuron.functional.amsu import (
    READOUT_NORMS, RESETS, SYNAPSES, AMSUOutput, AMSUParams, AMSUSpec, AMSUState,
    amsu_chunked, amsu_loop, amsu_recurrent, amsu_step, check_state, dynamics_step, fire,
    init_state, project, projection_parts, readout, reset_membrane, split_rows,
)
from astro_neuron.functional.amsu import run as amsu_run
from astro_neuron.functional.finite import NonFiniteError, validation
from astro_neuron.functional.lif import LIFSpec, lif_chunked, lif_loop, lif_step
from astro_neuron.functional.lif import run as lif_run
from astro_neuron.functional.rotary import rotary, rotary_angles
from astro_neuron.functional.scan import (
    astro_chunked, astro_loop, astro_read, astro_step, leaky_chunked, leaky_loop, leaky_step,
    stable_chunk_size,
)
from astro_neuron.functional.compiled import cpu_kernels, get_cpu_kernels, set_cpu_kernels
from astro_neuron.functional.scan_fla import (
    fla_available, get_scan_backend, scan_backend, set_scan_backend,
)
from astro_neuron.functional.surrogate import as_surrogate, heaviside, spike

__all__ = [
    "surrogate", "RESETS", "SYNAPSES", "READOUT_NORMS", "AMSUOutput", "AMSUParams",
    "AMSUSpec", "AMSUState", "amsu_chunked", "amsu_loop", "amsu_recurrent", "amsu_step",
    "amsu_run", "check_state", "dynamics_step", "fire", "init_state", "project",
    "projection_parts", "readout", "reset_membrane", "split_rows", "rotary",
    "rotary_angles", "astro_chunked", "astro_loop", "astro_read", "astro_step",
    "leaky_chunked", "leaky_loop", "leaky_step", "stable_chunk_size", "as_surrogate",
    "heaviside", "spike", "LIFSpec", "lif_chunked", "lif_loop", "lif_step", "lif_run",
    "NonFiniteError", "validation", "scan_backend", "set_scan_backend", "get_scan_backend",
    "fla_available", "cpu_kernels", "get_cpu_kernels", "set_cpu_kernels",
]
