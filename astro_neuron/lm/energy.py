"""Operations and energy per token of a language model (docs/lm.md, "Operations and energy").

Counts, per token, every arithmetic operation of the inference step of AM-SNet or the
Transformer baseline, layer by layer, in three kinds:

* ``ac``: accumulates driven by spikes: a spike of value ``s`` (1 for binary spikes,
  ``{1..L}`` for graded ones) into a layer of fan-out ``n`` costs ``s * n`` additions
  (``W_O`` after the AM-SU, ``W_2`` after the channel-mixing LIF). Measured: the
  spikes are the model's own on the given text;
* ``mac``: multiply-accumulates on real values (projections of the real-valued
  residual stream, the astrocyte's state decay ``diag(gamma) H``, write ``k v^T`` and
  read ``H^T q``, membranes ``beta u + I``, rotary, norms, the head, attention);
  a multiplication alone (a decay, a gain) and a non-linear function (exp, rsqrt,
  GELU) count as one MAC each: a lower bound for the non-linear ones;
* ``add``: additions without a multiplication (bias, residual, ``u + o``, threshold
  comparisons, the softmax's sum).

Energy per token (45 nm CMOS, 32-bit float; Horowitz, ISSCC 2014: add 0.9 pJ,
multiply 3.7 pJ)::

    E = E_MAC * mac + E_AC * (ac + add),   E_MAC = 4.6 pJ, E_AC = 0.9 pJ

Memory traffic is not counted (on a real chip it can cost more than the arithmetic).
A layer whose "spikes" are real numbers (the non-spiking twin) counts MACs there.
The Transformer's attention at position ``t`` (context ``t + 1`` tokens) costs
``2 d (t + 1)`` MACs for scores and values plus the softmax; per-token figures are the
mean over the positions of the text.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import Tensor

from astro_neuron.lm.base import LanguageModel, check_idx
from astro_neuron.lm.config import AMSNetConfig
from astro_neuron.lm.data import encode
from astro_neuron.validate import number_in_range

__all__ = ["E_AC_PJ", "E_MAC_PJ", "LayerOps", "OpsReport", "count_ops", "amsnet_ops",
           "transformer_ops"]

E_AC_PJ = 0.9               # one 32-bit float addition, 45 nm (Horowitz 2014)
E_MAC_PJ = 4.6              # one 32-bit float multiply (3.7 pJ) + add (0.9 pJ)
KNOWN_PARTS = {"I", "K", "V", "Q"}      # rows of the AM-SU's projection the counts know


@dataclass
class LayerOps:
    """Operations of one layer per token (means over the tokens of the text)."""

    name: str
    mac: float = 0.0
    ac: float = 0.0
    add: float = 0.0
    note: str = ""

    def energy_pj(self, e_mac: float = E_MAC_PJ, e_ac: float = E_AC_PJ) -> float:
        return e_mac * self.mac + e_ac * (self.ac + self.add)


@dataclass
class OpsReport:
    """Per-token operation counts of every layer of one model on one text."""

    arch: str
    params: int
    tokens: int
    layers: list = field(default_factory=list)
    e_mac: float = E_MAC_PJ
    e_ac: float = E_AC_PJ
    firing: dict = field(default_factory=dict)   # layer name -> mean spikes per neuron per token

    def total(self, kind: str) -> float:
        return sum(getattr(layer, kind) for layer in self.layers)

    @property
    def energy_pj(self) -> float:
        """Energy per token (pJ): ``e_mac * mac + e_ac * (ac + add)``."""
        return sum(layer.energy_pj(self.e_mac, self.e_ac) for layer in self.layers)

    def grouped(self) -> dict[str, LayerOps]:
        """The layers summed over blocks: ``block3.amsu.write`` -> ``amsu.write``."""
        out: dict[str, LayerOps] = {}
        for layer in self.layers:
            key = layer.name.split(".", 1)[1] if layer.name.startswith("block") else layer.name
            g = out.setdefault(key, LayerOps(key, note=layer.note))
            g.mac += layer.mac
            g.ac += layer.ac
            g.add += layer.add
        return out

    def table(self, per_block: bool = False) -> str:
        rows = self.layers if per_block else list(self.grouped().values())
        lines = [f"{self.arch}: {self.params:,} parameters, {self.tokens} tokens; "
                 f"per token (E = {self.e_mac} pJ x MAC + {self.e_ac} pJ x (AC + ADD))",
                 f"  {'layer':<22} {'MAC':>12} {'AC':>12} {'ADD':>10} {'energy nJ':>10}"]
        for r in rows:
            lines.append(f"  {r.name:<22} {r.mac:>12,.0f} {r.ac:>12,.0f} {r.add:>10,.0f} "
                         f"{r.energy_pj(self.e_mac, self.e_ac) / 1e3:>10.2f}"
                         + (f"  {r.note}" if r.note else ""))
        lines.append(f"  {'total':<22} {self.total('mac'):>12,.0f} {self.total('ac'):>12,.0f} "
                     f"{self.total('add'):>10,.0f} {self.energy_pj / 1e3:>10.2f}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"arch": self.arch, "params": self.params, "tokens": self.tokens,
                "e_mac_pj": self.e_mac, "e_ac_pj": self.e_ac,
                "mac": self.total("mac"), "ac": self.total("ac"), "add": self.total("add"),
                "energy_pj": self.energy_pj, "firing": self.firing,
                "layers": [vars(x) for x in self.layers]}


def _norm(name: str, d: int) -> LayerOps:
    # sum of squares (d MAC), rsqrt (1), scale (d MAC); the gain folds into the next weight
    return LayerOps(name, mac=2 * d + 1)


def amsnet_ops(model: LanguageModel, amsu_spikes: list[Tensor], ffn_spikes: list[Tensor]
               ) -> list[LayerOps]:
    """Per-token operations of an AM-SNet whose layers emitted the given spikes.

    ``amsu_spikes`` / ``ffn_spikes``: one ``(B, T, N)`` tensor per block (as
    :meth:`AMSNet.spike_record` returns them); spike-driven accumulates are the
    spike values times the fan-out of the layer they feed, averaged over ``B * T``.
    """
    cfg = model.config
    d, V = cfg.d_model, cfg.vocab_size
    out: list[LayerOps] = []
    for i, (block, s_a, s_f) in enumerate(zip(model.blocks, amsu_spikes, ffn_spikes)):
        spec = block.amsu.spec
        N, A, dk, dv = spec.n_neurons, spec.n_astrocytes, spec.d_key, spec.d_value
        n_tok = s_a.shape[0] * s_a.shape[1]
        p = f"block{i}."
        out.append(_norm(p + "norm1", d))
        bias = N if (spec.neuron_path and block.amsu.bias is not None) else 0
        names = [name for name, _ in spec.parts]
        unknown = sorted(set(names) - KNOWN_PARTS)
        if unknown:          # a new option of the unit: its projection counts, the rest not
            warnings.warn(f"operation counts know the AM-SU's I, K, V, Q; rows {unknown} of "
                          "its projection are counted, what the unit does with them is not",
                          stacklevel=3)
        out.append(LayerOps(p + "amsu.proj", mac=spec.proj_size * spec.in_features, add=bias,
                            note="|".join(names) + " of the real-valued input"))
        if spec.neuron_path:
            out.append(LayerOps(p + "amsu.membrane", mac=N, note="u = beta u + I"))
        if spec.astrocyte:
            if spec.sensing == "relu":
                out.append(LayerOps(p + "amsu.sensing", add=2 * A * dk,
                                    note="max(k, 0), max(q, 0): one comparison each"))
            elif spec.sensing == "relu-key":
                out.append(LayerOps(p + "amsu.sensing", add=A * dk,
                                    note="max(k, 0): one comparison each"))
            elif spec.sensing == "relu2":
                out.append(LayerOps(p + "amsu.sensing", mac=2 * A * dk, add=2 * A * dk,
                                    note="max(k, 0)^2, max(q, 0)^2: a comparison and "
                                         "a product each"))
            if spec.rotary_dims:
                out.append(LayerOps(p + "amsu.rotary", mac=2 * 2 * A * spec.rotary_dims,
                                    note="k, q"))
            out.append(LayerOps(p + "amsu.decay", mac=A * dk * dv, note="diag(gamma) H"))
            out.append(LayerOps(p + "amsu.write", mac=A * dk * dv, note="+ k v^T"))
            out.append(LayerOps(p + "amsu.read", mac=A * dk * dv, note="H^T q"))
            # rms: sum of squares (N), rsqrt (A), scale (N); then the gain (N)
            ro = 2 * N + A + N if spec.readout_norm == "rms" else N
            out.append(LayerOps(p + "amsu.readout", mac=ro, add=N if spec.neuron_path else 0,
                                note="g_astro o (+ u)"))
        L = spec.spike_levels
        out.append(LayerOps(p + "amsu.fire", add=L * N, note=f"{L} threshold(s) per neuron"))
        out.append(_spike_layer(p + "w_o", s_a, n_tok, N, d, spec.spiking))
        out.append(LayerOps(p + "residual1", add=d))
        out.append(_norm(p + "norm2", d))
        f = block.w_1.out_features
        out.append(LayerOps(p + "w_1", mac=f * d))
        lif = block.lif.spec
        out.append(LayerOps(p + "lif", mac=f, add=lif.spike_levels * f,
                            note="u = beta u + z; threshold"))
        out.append(_spike_layer(p + "w_2", s_f, n_tok, f, d, lif.spiking))
        out.append(LayerOps(p + "residual2", add=d))
    out.append(_norm("norm_f", d))
    out.append(LayerOps("head", mac=V * d, note="logits"))
    return out


def _spike_layer(name: str, s: Tensor, n_tok: int, n_in: int, n_out: int, spiking: bool
                 ) -> LayerOps:
    if not spiking:                                   # real-valued "spikes": dense MACs
        return LayerOps(name, mac=n_in * n_out, note="non-spiking: dense")
    events = float(s.double().sum()) / n_tok          # spike values per token
    return LayerOps(name, ac=events * n_out,
                    note=f"{events / n_in:.3f} spikes/neuron x fan-out {n_out}")


def transformer_ops(cfg: AMSNetConfig, positions: Tensor, hidden: Optional[int] = None
                    ) -> list[LayerOps]:
    """Per-token operations of the Transformer baseline of ``cfg`` at the given
    positions (0-based; the token at ``t`` attends over ``t + 1`` keys), averaged.
    ``hidden``: the MLP width (default: the baseline's ``ffn_mult * d + d // 2``)."""
    d, H, V = cfg.d_model, cfg.n_head, cfg.vocab_size
    h = hidden if hidden is not None else cfg.ffn_mult * d + d // 2
    ctx = float((positions.double() + 1).mean())      # mean keys attended
    out: list[LayerOps] = []
    for i in range(cfg.n_layer):
        p = f"block{i}."
        out.append(_norm(p + "norm1", d))
        out.append(LayerOps(p + "attn.qkv", mac=3 * d * d))
        out.append(LayerOps(p + "attn.rotary", mac=2 * 2 * d, note="q, k"))
        out.append(LayerOps(p + "attn.scores", mac=d + d * ctx, note="q/sqrt(hd), q.k"))
        out.append(LayerOps(p + "attn.softmax", mac=2 * H * ctx, add=H * ctx,
                            note="exp, sum, divide"))
        out.append(LayerOps(p + "attn.values", mac=d * ctx, note="sum of p v"))
        out.append(LayerOps(p + "attn.proj", mac=d * d))
        out.append(LayerOps(p + "residual1", add=d))
        out.append(_norm(p + "norm2", d))
        out.append(LayerOps(p + "fc", mac=d * h))
        out.append(LayerOps(p + "gelu", mac=h))
        out.append(LayerOps(p + "fc2", mac=h * d))
        out.append(LayerOps(p + "residual2", add=d))
    out.append(_norm("norm_f", d))
    out.append(LayerOps("head", mac=V * d, note="logits"))
    return out


def _tokens(model: LanguageModel, text) -> Tensor:
    if isinstance(text, str):
        if not text:
            raise ValueError("count_ops needs at least one token of text, got ''")
        idx = encode(text)[None]
    else:
        idx = text
    check_idx(idx, model.config.vocab_size, "text")
    if idx.shape[1] == 0:
        raise ValueError("count_ops needs at least one token of text")
    return idx.to(model.wte.weight.device)


def count_ops(model: LanguageModel, text, e_mac: float = E_MAC_PJ, e_ac: float = E_AC_PJ
              ) -> OpsReport:
    """Operations per token of ``model`` reading ``text`` (a string, byte-encoded, or
    token ids ``(B, T)``), layer by layer, and the energy estimate.

    AM-SNet: the spikes are recorded from the model on the text
    (:meth:`AMSNet.spike_record`), so the accumulates follow its actual firing.
    Transformer: every operation is dense; attention grows with the position.
    """
    number_in_range("e_mac", e_mac, 0)
    number_in_range("e_ac", e_ac, 0)
    idx = _tokens(model, text)
    T = idx.shape[1]
    params = model.num_params()
    if model.config.arch == "transformer":
        hidden = model.blocks[0].fc.out_features
        layers = transformer_ops(model.config, torch.arange(T), hidden)
        return OpsReport("transformer", params, T, layers, e_mac, e_ac)
    was = model.training
    model.eval()
    try:
        s_a = model.spike_record(idx, "amsu")
        s_f = model.spike_record(idx, "ffn")
    finally:
        model.train(was)
    layers = amsnet_ops(model, s_a, s_f)
    firing = {}
    for i, (a, f) in enumerate(zip(s_a, s_f)):
        firing[f"block{i}.amsu"] = float(a.double().mean())
        firing[f"block{i}.lif"] = float(f.double().mean())
    return OpsReport("amsnet", params, T, layers, e_mac, e_ac, firing)
