"""Export to NIR (the Neuromorphic Intermediate Representation) what NIR can express.

NIR's node set is closed: a graph with a node type of our own is written but
``nir.read`` rejects it. So only the parts of a model that NIR's primitives express
exactly are exported, and anything else is a clear error naming the layer:

* ``nn.Linear`` + ``LIF`` / ``AMSU(astrocyte=False)`` with ``reset="zero"``:
  ``Affine`` -> ``LIF(tau, r, v_leak=0, v_threshold, v_reset=0)``;
* the same with ``reset="none"`` (the AM-SU default): ``Affine`` -> ``LI`` ->
  ``Threshold`` (a leaky integrator that never resets, read through a step);
* not expressible: the astrocyte (its ``k v^T`` and ``H^T q`` are products of two
  signals, NIR has no such node; with it its options, the delay line and
  ``sensing="relu"``, ``"relu2"`` or ``"relu-key"``, which the error names),
  ``reset="subtract"``, graded spikes, the sigmoid synapse, rotary positions, the
  astrocyte-alone ablation.

Discretisation: our layers are discrete (``u_t = beta u_{t-1} + x_t``); NIR's are
continuous (``tau du/dt = (v_leak - u) + r I``). We write ``tau = dt / (1 - beta)`` and
``r = tau / dt``, so that forward Euler with step ``dt`` gives back exactly
``u <- beta u + I``. ``dt`` defaults to 1e-4 s, the step snnTorch's and
SpikingJelly's NIR importers assume.

This module builds the graph with ``nir``'s own classes (``nir.NIRGraph.from_list``);
we did not use ``nirtorch``'s tracer for export because our layers map to
sub-graphs of several nodes, which its module map does not express.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
from torch import nn

from astro_neuron import validate
from astro_neuron.io import atomic_write
from neuromorphic.convert.graph import LayerRef, extract_layers

__all__ = ["export_nir"]


def _import_nir():
    try:   # deferred: nir is an optional extra; only an export needs it
        import nir
    except ImportError as exc:  # pragma: no cover - nir is a dev/extra dependency
        raise ImportError("NIR export needs the 'nir' package: pip install 'astro-neuron[nir]' "
                          f"({exc})") from None
    return nir


def _np(t) -> np.ndarray:
    return t.detach().double().cpu().numpy().astype(np.float32)


def _layer_nodes(nir, ref: LayerRef, i: int, dt: float) -> list:
    where = f"layer {i} ({ref.name}: {'AMSU' if ref.amsu is not None else 'Linear + LIF'})"
    if ref.amsu is not None:
        s = ref.amsu.spec
        if s.astrocyte:
            opts = [f"{n}={getattr(s, n)!r}" for n, d in (("conv_size", 1),
                                                          ("sensing", "identity"))
                    if getattr(s, n, d) != d]
            raise ValueError(
                f"{where}: an AM-SU with its astrocyte"
                f"{' (and its options ' + ', '.join(opts) + ')' if opts else ''} cannot be "
                "expressed in NIR: the astrocyte's k v^T and H^T q multiply two signals and "
                "NIR's node set has no such node. Save the integer network with nm.save (HDF5) "
                "instead, or export the astrocyte-off ablation (AMSU(astrocyte=False))")
        if s.synapse != "identity" or s.rotary or not s.spiking:
            raise ValueError(f"{where}: synapse={s.synapse!r}, rotary={s.rotary}, "
                             f"spiking={s.spiking} have no NIR form")
    reset = ref.reset
    if reset == "subtract":
        raise ValueError(f"{where}: reset='subtract' has no NIR form (NIR's LIF resets to "
                         "v_reset); use reset='zero' or 'none'")
    if ref.spike_levels != 1:
        raise ValueError(f"{where}: graded spikes (spike_levels={ref.spike_levels}) have no "
                         "NIR form")
    W = _np(ref.weight())
    b = ref.bias()
    b = np.zeros(W.shape[0], np.float32) if b is None else _np(b)
    beta = ref.beta().detach().double().cpu().numpy()
    if (beta >= 1).any() or (beta <= 0).any():
        raise ValueError(f"{where}: membrane decays must lie in (0, 1) for a NIR time "
                         "constant")
    tau = (dt / (1.0 - beta)).astype(np.float32)
    r = (tau / dt).astype(np.float32)
    theta = _np(ref.threshold())
    zeros = np.zeros_like(theta)
    nodes = [(f"affine{i}", nir.Affine(weight=W, bias=b))]
    if reset == "zero":
        nodes.append((f"lif{i}", nir.LIF(tau=tau, r=r, v_leak=zeros, v_threshold=theta,
                                         v_reset=zeros)))
    else:
        nodes.append((f"li{i}", nir.LI(tau=tau, r=r, v_leak=zeros)))
        nodes.append((f"threshold{i}", nir.Threshold(threshold=theta)))
    return nodes


def export_nir(model: nn.Module, path: Optional[Path] = None, dt: float = 1e-4):
    """NIR graph of ``model`` (float parameters); written to ``path`` when given.

    Raises ``ValueError`` naming the first layer NIR cannot express.
    """
    nir = _import_nir()
    dt = validate.positive_number("dt (seconds)", dt)
    refs = extract_layers(model, prefer_stock_lif=False)
    nodes = {"input": nir.Input(input_type={"input": np.array([refs[0].n_in])})}
    edges, prev = [], "input"
    for i, ref in enumerate(refs):
        for name, node in _layer_nodes(nir, ref, i, float(dt)):
            nodes[name] = node
            edges.append((prev, name))
            prev = name
    nodes["output"] = nir.Output(output_type={"output": np.array([refs[-1].n_neurons])})
    edges.append((prev, "output"))
    graph = nir.NIRGraph(nodes=nodes, edges=edges)
    if path is not None:
        atomic_write(Path(path), lambda tmp: nir.write(tmp, graph))
    return graph
