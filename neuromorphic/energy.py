"""Synaptic and neuron operations of an integer network, as a Loihi-style chip runs them
(docs/lm.md, "Operations and energy").

An event-driven chip does work only where a spike arrives: each spike (a non-zero input,
binary or graded: one message either way) is delivered to every synapse of its source
neuron, and each delivery is one synaptic operation (SynOp: read the weight, accumulate
it, times the payload for a graded spike). So per layer and step::

    synops = sum over inputs j that spiked of fan_out(j)

with ``fan_out(j)`` the rows of the Dense connection (every stored synapse: Lava's
``Dense`` keeps the full matrix) and, beside it, ``synops_nonzero`` counting only the
non-zero effective weights (what a chip that drops zero synapses at compile time runs).
Neuron-side work is counted apart, per step and neuron whether it spiked or not:
the compartment updates (membrane decay and input; Lava's LIF: current and voltage), and
for the AM-SU's astrocyte the integer products of its matrix state (decay, write
``k v^T``, read ``H^T q``: ``A d_k d_v`` each) and the read-out gain (``N``), plus, with a
delay line of ``K`` taps, its ``K (A d_k + N)`` tap products and, with ``sensing="relu"``,
the ``2 A d_k`` comparisons ``max(k, 0)``, ``max(q, 0)`` (``"relu2"``: those and the
``2 A d_k`` squares ``k k``, ``q q``, each requantized; ``"relu-key"``: the ``A d_k``
comparisons ``max(k, 0)``). These are integer
operations; no energy constant is attached (a chip's figures are its own).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from neuromorphic.simulate import simulate
from neuromorphic.spec import QuantizedNetwork

__all__ = ["LayerSynOps", "synaptic_ops", "layer_synops"]


@dataclass
class LayerSynOps:
    """Operations of one integer layer, per time step and sequence (means)."""

    name: str
    kind: str
    spikes_in: float                 # input events per step
    synops: float                    # events x fan-out (every stored synapse)
    synops_nonzero: float            # events x non-zero effective weights of the column
    neuron_ops: float                # compartment updates (membrane, LIF current + voltage)
    astro_ops: float                 # astrocyte: decay + write + read (A d_k d_v each) + gain N
                                     # (+ K (A d_k + N) delay-line tap products)
                                     # (+ 2 A d_k ReLU comparisons, sensing="relu")
                                     # (+ 2 A d_k squares as well, sensing="relu2")
                                     # (+ A d_k comparisons of k alone, "relu-key")
    spikes_out: float                # output events per step
    info: dict = field(default_factory=dict)


def layer_synops(weight: np.ndarray, s_in: np.ndarray) -> tuple[int, int]:
    """``(synops, synops_nonzero)`` of input spikes ``s_in`` ``[..., n_in]`` into a
    Dense layer of effective weights ``weight`` ``[P, n_in]``: the events (non-zero
    inputs) times the fan-out of each, all rows and non-zero rows."""
    events = (np.asarray(s_in) != 0).reshape(-1, weight.shape[1]).sum(0)      # per input
    fan_all = np.full(weight.shape[1], weight.shape[0], dtype=np.int64)
    fan_nz = (weight != 0).sum(0).astype(np.int64)
    return int(events @ fan_all), int(events @ fan_nz)


def synaptic_ops(net: QuantizedNetwork, x: np.ndarray) -> list[LayerSynOps]:
    """Run ``net`` on input spikes ``x`` (``[T, B, n_in]`` or ``[T, n_in]``) with the
    reference engine and count, per layer, the operations per step and sequence."""
    res = simulate(net, x, "reference", record_states=False)
    x = np.asarray(x)
    if x.ndim == 2:
        x = x[:, None]
    spikes = [s if s.ndim == 3 else s[:, None] for s in res.spikes]
    T, B = x.shape[:2]
    steps = float(T * B)
    out = []
    s_in = x
    for layer, s_out in zip(net.layers, spikes):
        w = layer.synapse.effective_weight()
        syn, syn_nz = layer_synops(w, s_in)
        N = layer.n_neurons
        if layer.kind == "amsu":
            neuron = N if layer.neuron_path else 0
            astro = (3 * layer.n_astrocytes * layer.d_key * layer.d_value + N
                     if layer.astrocyte else 0)
            if layer.delay_line:                 # K tap products per K | V channel
                astro += layer.conv_size * layer.d_conv
            if layer.relu:                       # max(k, 0), and max(q, 0) unless the
                per = 2 if layer.relu_q else 1   # query stays signed ("relu-key")
                astro += per * layer.n_astrocytes * layer.d_key
            if layer.square:                     # k k, q q (sensing="relu2")
                astro += 2 * layer.n_astrocytes * layer.d_key
        else:
            neuron, astro = 2 * N, 0
        out.append(LayerSynOps(layer.name, layer.kind, float((s_in != 0).sum()) / steps,
                               syn / steps, syn_nz / steps, float(neuron), float(astro),
                               float((s_out != 0).sum()) / steps,
                               {"fan_out": int(w.shape[0]), "n_in": int(w.shape[1]),
                                "neurons": N}))
        s_in = s_out
    return out
