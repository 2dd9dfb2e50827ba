"""Quantization-aware training: :class:`QATNetwork` is the integer network as a
trainable module (fake quantization, STE), its parameters the float model's own."""

from __future__ import annotations

import warnings
from typing import Optional

import torch
from torch import Tensor, nn

from neuromorphic.convert.calibrate import LayerPlan, calibrate, check_params
from neuromorphic.convert.integers import (
    SaturationWarning, StaticView, frozen_layer, layer_tensors,
)
from neuromorphic.engines.torch_view import network_forward
from neuromorphic.spec import QuantizedNetwork, check_spikes

__all__ = ["QATNetwork", "prepare_qat"]


class QATNetwork(nn.Module):
    """The integer network as a trainable module (fake quantization, STE).

    ``forward(x_seq)`` -> spikes of the last layer ``[T, B, N]`` (float tensor of the
    input's dtype), bit-identical to the integer reference; gradients reach the float
    parameters of ``model`` (which this module shares, so training it fine-tunes
    ``model`` in place). ``align=True`` compensates the network's latency (one step
    per synapse): the input is padded with ``latency`` silent steps and the first
    ``latency`` output steps are dropped, so output step ``t`` answers input step ``t``.
    """

    def __init__(self, model: nn.Module, plans: list[LayerPlan], input_levels: int) -> None:
        super().__init__()
        self.model = model
        self.plans = plans
        self.input_levels = input_levels
        self.last_counts: dict = {}

    @property
    def latency(self) -> int:
        return len(self.plans)

    def _tensors(self, counts: dict):
        out = []
        for i, plan in enumerate(self.plans):
            c = {}
            static, t, parts = layer_tensors(plan, c)
            counts[plan.ref.name] = c
            out.append((static, t, parts))
        return out

    def forward(self, x_seq: Tensor, align: bool = False, return_all: bool = False):
        if not isinstance(x_seq, Tensor):
            raise TypeError(f"x_seq must be a torch.Tensor, got {type(x_seq).__name__}")
        check_spikes(x_seq, self.plans[0].ref.n_in, "x_seq")
        dtype = x_seq.dtype if x_seq.is_floating_point() else torch.float32
        x = x_seq.to(torch.float64)
        if x.dim() == 2:
            x = x[:, None]
        if align:
            x = torch.cat([x, torch.zeros_like(x[: self.latency])], 0)
        counts: dict = {}
        layers = []
        for static, t, parts in self._tensors(counts):
            t.layer = StaticView(static)
            layers.append(t)
        self.last_counts = counts
        spikes, states = network_forward(layers, x, record=return_all)
        if align:
            spikes = [s[self.latency:] for s in spikes]
        if return_all:
            return spikes, states
        return spikes[-1].to(dtype)

    @torch.no_grad()
    def export(self, meta: Optional[dict] = None, warn: bool = True) -> QuantizedNetwork:
        """The current parameters as a :class:`QuantizedNetwork` (integers frozen)."""
        check_params([p.ref for p in self.plans])
        counts: dict = {}
        layers = [frozen_layer(static, t, parts) for static, t, parts in self._tensors(counts)]
        report = {name: {k: v for k, v in c.items() if v} for name, c in counts.items()}
        report = {k: v for k, v in report.items() if v}
        if warn and report:
            warnings.warn(SaturationWarning(
                f"quantization clamped parameters to their widths: {report}"), stacklevel=3)
        m = dict(meta or {})
        m.setdefault("source", type(self.model).__name__)
        m["parameter_clamps"] = report
        m["calibration_maxima"] = {p.ref.name: p.observed for p in self.plans}
        return QuantizedNetwork(tuple(layers), input_size=self.plans[0].ref.n_in,
                                input_levels=self.input_levels, dt=_model_dt(self.plans), meta=m)


def _model_dt(plans: list[LayerPlan]) -> float:
    m = plans[0].ref.amsu or plans[0].ref.lif
    return float(getattr(m, "dt", 1.0))


def prepare_qat(model: nn.Module, calibration, operand_bits: int = 8) -> QATNetwork:
    """Calibrate exponents on ``calibration`` spikes and wrap ``model`` for QAT."""
    plans = calibrate(model, calibration, operand_bits)
    return QATNetwork(model, plans, plans[0].in_levels)
