"""astro-neuron: astrocyte-modulated spiking units (AM-SU) for PyTorch.

Quick use::

    import astro_neuron as an
    layer = an.AMSU(in_features=32, n_neurons=64, n_astrocytes=4, d_key=16)
    spikes = layer(x_seq)                         # [T, B, 32] -> [T, B, 64]
    s_t, state = layer.step(x_t, state)           # streaming, O(1) per step

Equations and options: docs/model.md. Nothing here imports SpikingJelly, snnTorch,
Lava or matplotlib at import time; the adapters import them where they are used.
"""

__version__ = "0.1.0"

from astro_neuron import functional, surrogate  # noqa: E402
from astro_neuron.amsu import AMSU, validation  # noqa: E402
from astro_neuron.lif import LIF  # noqa: E402
from astro_neuron.functional.amsu import AMSUOutput, AMSUSpec, AMSUState  # noqa: E402

__all__ = ["AMSU", "LIF", "AMSUOutput", "AMSUSpec", "AMSUState", "functional", "surrogate",
           "validation", "__version__"]
