"""From a trained float model to an integer network: PTQ, or the export of QAT.

:func:`quantize` ``(model, calibration=x)`` = calibrate + export, then a run of the
integer reference on the calibration data counts saturations; ``quantize(qat)``
exports a fine-tuned :class:`~neuromorphic.convert.qat.QATNetwork`.
"""

from __future__ import annotations

import warnings
from typing import Optional

from torch import nn

from neuromorphic.convert.integers import SaturationWarning
from neuromorphic.convert.qat import QATNetwork, prepare_qat
from neuromorphic.engines import engine
from neuromorphic.spec import QuantizedNetwork, check_spikes

__all__ = ["quantize"]


def quantize(model: nn.Module, calibration=None, operand_bits: int = 8,
             check_saturation: bool = True, meta: Optional[dict] = None) -> QuantizedNetwork:
    """Post-training quantization, or the export of a :class:`QATNetwork`.

    ``quantize(model, calibration=x_seq)``: calibrate on ``x_seq`` (spike counts
    ``[T, B, n_in]``) and convert. ``quantize(qat)``: export the fine-tuned integers
    (its calibration is reused; pass ``calibration`` to also count saturations on it).
    With ``check_saturation`` the integer reference runs on the calibration data and
    a :class:`SaturationWarning` reports every state that had to be clamped.
    """
    if isinstance(model, QATNetwork):
        qat = model
    else:
        if calibration is None:
            raise ValueError("quantize(model) needs calibration=x_seq (input spikes [T, B, "
                             "n_in]) to choose the integer scales; or pass a QATNetwork")
        qat = prepare_qat(model, calibration, operand_bits)
    qnet = qat.export(meta=meta)
    if check_saturation and calibration is not None:
        x = check_spikes(calibration, qnet.input_size, "calibration")
        if x.max(initial=0) > qnet.input_levels:
            raise ValueError(f"calibration values reach {x.max()} but the network was "
                             f"calibrated for inputs up to {qnet.input_levels}")
        out = engine("reference")(qnet, x, record_states=False, count_saturation=True)
        sat = {layer.name or f"layer{i}": {k: v for k, v in c.items() if v}
               for i, (layer, c) in enumerate(zip(qnet.layers, out.saturation))}
        sat = {k: v for k, v in sat.items() if v}
        qnet.meta["calibration_saturation"] = sat
        if sat:
            warnings.warn(SaturationWarning(
                f"on the calibration data, the integer network clamped states to their "
                f"widths (counts of clamped values): {sat}"), stacklevel=2)
    return qnet
