"""neuromorphic: integer AM-SU networks, bit-exact on a NumPy reference, torch and Lava.

Quick use::

    import neuromorphic as nm
    qnet = nm.quantize(model, calibration=x_seq)     # post-training quantization
    qat = nm.prepare_qat(model, calibration=x_seq)   # or: fine-tune with fake quantization
    ...train qat(x_seq) like any module...
    qnet = nm.quantize(qat)
    nm.save(qnet, "net.h5"); qnet = nm.load("net.h5")
    out = nm.simulate(qnet, x_seq, backend="reference")   # or "torch", "lava"
    out.spikes, out.states                                 # per layer, time-major
    nm.compare(out, nm.simulate(qnet, x_seq, backend="lava"))   # bit-for-bit check

``model``: an ``astro_neuron.AMSU``, or an ``nn.Sequential`` of AMSU and ``nn.Linear`` +
``astro_neuron.LIF`` layers (or a module with such a ``.core``). Inputs are spike
counts ``[T, B, n_in]``. The integer semantics: docs/neuromorphic.md.
"""

from neuromorphic.engines.lava._compat import install as _install_lava_compat

_install_lava_compat()  # `import lava` works on Python 3.11 after `import neuromorphic`

from neuromorphic.fileio import FORMAT, FORMAT_VERSION, load, save  # noqa: E402
from neuromorphic.nir import export_nir  # noqa: E402
from neuromorphic.spec import (  # noqa: E402
    AMSULayer, LIFLayer, QuantizedNetwork, Synapse, check_spikes,
)
from neuromorphic.convert import (  # noqa: E402
    QATNetwork, SaturationWarning, calibrate, prepare_qat, quantize,
)
from neuromorphic.simulate import (  # noqa: E402
    BACKENDS, Difference, SimResult, compare, pad_latency, simulate,
)

__all__ = [
    "quantize", "prepare_qat", "calibrate", "QATNetwork", "SaturationWarning", "save", "load",
    "simulate", "compare", "SimResult", "Difference", "BACKENDS", "pad_latency",
    "QuantizedNetwork", "AMSULayer", "LIFLayer", "Synapse", "FORMAT", "FORMAT_VERSION",
    "check_spikes", "export_nir",
]

