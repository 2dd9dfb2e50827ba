"""Pure math of the AM-SU: step functions, reference loops, chunked forms, surrogates.

Nothing here owns parameters or state; see :mod:`astro_neuron.amsu` for the module.
"""
from astro_neuron.functional import surrogate
from astro_neuron.functional.amsu import (
    RESETS, SYNAPSES, AMSUOutput, AMSUParams, AMSUSpec, AMSUState, amsu_chunked, amsu_loop,
    amsu_recurrent, amsu_step, check_state, dynamics_step, fire, init_state, project,
    reset_membrane,
)
from astro_neuron.functional.lif import LIFSpec, lif_chunked, lif_loop, lif_step
from astro_neuron.functional.rotary import rotary, rotary_angles
from astro_neuron.functional.scan import (
    astro_chunked, astro_loop, astro_read, astro_step, leaky_chunked, leaky_loop, leaky_step,
    stable_chunk_size,
)
from astro_neuron.functional.surrogate import as_surrogate, heaviside, spike

__all__ = [
    "surrogate", "RESETS", "SYNAPSES", "AMSUOutput", "AMSUParams", "AMSUSpec", "AMSUState",
    "amsu_chunked", "amsu_loop", "amsu_recurrent", "amsu_step", "check_state",
    "dynamics_step", "fire", "init_state", "project", "reset_membrane", "rotary",
    "rotary_angles", "astro_chunked", "astro_loop", "astro_read", "astro_step",
    "leaky_chunked", "leaky_loop", "leaky_step", "stable_chunk_size", "as_surrogate",
    "heaviside", "spike", "LIFSpec", "lif_chunked", "lif_loop", "lif_step",
]
