"""From a trained torch model to an integer network.

* :mod:`~neuromorphic.convert.graph`: the model read as a chain of layers (``LayerRef``);
* :mod:`~neuromorphic.convert.calibrate`: a float run picks every exponent;
* :mod:`~neuromorphic.convert.integers`: integer parameters from float ones (STE);
* :mod:`~neuromorphic.convert.qat`: quantization-aware training;
* :mod:`~neuromorphic.convert.quantize`: PTQ and the export of QAT.
"""

from neuromorphic.convert.calibrate import LayerPlan, calibrate
from neuromorphic.convert.graph import extract_layers
from neuromorphic.convert.integers import SaturationWarning
from neuromorphic.convert.qat import QATNetwork, prepare_qat
from neuromorphic.convert.quantize import quantize

__all__ = ["LayerPlan", "calibrate", "extract_layers", "SaturationWarning", "QATNetwork",
           "prepare_qat", "quantize"]
