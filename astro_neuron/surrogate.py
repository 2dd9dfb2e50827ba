"""Surrogate gradients: ``astro_neuron.surrogate.ATan()`` etc.

Re-exports :mod:`astro_neuron.functional.surrogate` (where they are defined).
"""
from astro_neuron.functional.surrogate import (  # noqa: F401
    ATan, FastSigmoid, Sigmoid, SuperSpike, Surrogate, Triangle, as_surrogate, heaviside, spike,
)

__all__ = ["Surrogate", "ATan", "Sigmoid", "FastSigmoid", "SuperSpike", "Triangle",
           "as_surrogate", "heaviside", "spike"]
