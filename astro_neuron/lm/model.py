"""AM-SNet: a byte-level language model built from AM-SU layers (docs/lm.md).

::

    idx (B, T) -> embedding -> n_layer x Block -> norm -> logits (head tied to the embedding)
    Block:  x = x + W_O · AMSU(norm(x))       token mixing: the astrocyte "attends", rotary on q, k
            x = x + W_2 · LIF(W_1 · norm(x))  channel mixing with leaky spiking neurons (no reset)

The residual stream is real-valued; inside a block the layers talk through spikes.
Training runs the chunked (parallel) forms of the core (:class:`astro_neuron.AMSU`'s
parameters and functions, with each astrocyte's read-out RMS-normalised by default,
and :class:`astro_neuron.LIF`); generation runs the recurrent step, whose state (per layer:
the AM-SU membrane ``u``, the astrocyte state ``H``, the channel-mixing membrane and
the position) does not grow with the context. :meth:`AMSNet.step` is a fused decode
step built from the same parameters; the tests check that teacher-forced stepping
reproduces the parallel logits.

Internally the model is time-major ``(T, B, d)`` like the neuron-level API; its
inputs and outputs are batch-major ``(B, T)`` / ``(B, T, vocab)`` like nanoGPT's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from astro_neuron.amsu import AMSU
from astro_neuron.functional.amsu import fire, split_rows
from astro_neuron.functional.amsu.decode import (
    DecodeShape, DecodeTensors, decode_shape, decode_step, fuse,
)
from astro_neuron.functional.lif import decode_step as lif_decode_step
from astro_neuron.functional.rotary import rotary_dims
from astro_neuron.functional.surrogate import ATan
from astro_neuron.lif import LIF
from astro_neuron.lm.baselines import Transformer
from astro_neuron.lm.base import (
    NORM_EPS, LanguageModel, RotaryTable, as_inference, check_idx, rms, rope_rows,
)
from astro_neuron.lm.config import AMSNetConfig
from astro_neuron.validate import choice

__all__ = ["AMSNet", "AMSNetCache", "Block", "build_model", "equal_params_ablation",
           "RotaryTable", "rope_rows", "NORM_EPS",
           "check_idx", "LanguageModel"]

MODES = ("chunked", "recurrent", "loop")


# ============================================================== the AM-SNet


class Block(nn.Module):
    """One AM-SNet block: AM-SU token mixing, then spiking channel mixing."""

    def __init__(self, cfg: AMSNetConfig) -> None:
        super().__init__()
        d, f = cfg.d_model, cfg.ffn_size
        sg = ATan(cfg.surrogate_alpha)
        self.norm1 = nn.RMSNorm(d, eps=NORM_EPS)
        self.amsu = AMSU(d, d, n_astrocytes=cfg.n_head, d_key=cfg.key_size,
                         tau_mem=cfg.tau_mem, tau_astro=cfg.tau_astro, threshold=cfg.threshold,
                         surrogate=sg, spike_levels=cfg.spike_levels, astrocyte=cfg.astrocyte,
                         neuron_path=cfg.neuron_path, spiking=cfg.spiking, rotary=True,
                         rotary_base=cfg.rotary_base, rotary_fraction=cfg.rotary_fraction,
                         astro_gain=cfg.astro_gain, chunk_size=cfg.chunk_size,
                         readout_norm="rms" if cfg.astro_norm and cfg.astrocyte else "none",
                         conv_size=cfg.conv_size if cfg.astrocyte else 1,
                         retention=cfg.retention if cfg.astrocyte else "fixed",
                         sensing=cfg.sensing if cfg.astrocyte else "identity",
                         clock=cfg.clock if cfg.astrocyte else "time", clock_step=cfg.clock_step,
                         clock_rate=cfg.clock_rate if cfg.astrocyte else 1.0,
                         decay_clock=cfg.decay_clock if cfg.astrocyte else "time",
                         clock_threshold=cfg.clock_threshold if cfg.astrocyte else 0.0,
                         gate_temperature=cfg.gate_temperature, gate_bias=cfg.gate_bias)
        self.w_o = nn.Linear(d, d, bias=False)
        self.norm2 = nn.RMSNorm(d, eps=NORM_EPS)
        self.w_1 = nn.Linear(d, f, bias=False)
        self.lif = LIF(f, tau_mem=cfg.tau_ffn, threshold=cfg.threshold, surrogate=sg,
                       spike_levels=cfg.spike_levels, spiking=cfg.spiking,
                       chunk_size=cfg.chunk_size)
        self.w_2 = nn.Linear(f, d, bias=False)

    def forward(self, x: Tensor, mode: str = "chunked", state=None, record=None):
        """``x`` ``(T, B, d)`` -> ``(x, (amsu_state, u_ffn))``.

        ``record``: optional dict of lists; the AM-SU and LIF spikes ``(T, B, N)`` are
        appended to ``record["amsu"]`` and ``record["ffn"]``.
        """
        amsu_state, u_ffn = (None, None) if state is None else state
        out, amsu_state = self.amsu.run(self.norm1(x), amsu_state, mode=mode)
        spikes = out.spikes                                                     # (T, B, d)
        if record is not None:
            record["amsu"].append(spikes)
        x = x + self.w_o(spikes)                                                # (T, B, d)
        z = self.w_1(self.norm2(x))                                             # (T, B, f)
        s, _, u_ffn = self.lif.run(z, u_ffn, mode="chunked" if mode == "chunked" else "loop")
        if record is not None:
            record["ffn"].append(s)
        x = x + self.w_2(s)                                                     # (T, B, d)
        return x, (amsu_state, u_ffn)

@dataclass
class AMSNetCache:
    """Recurrent state of an AM-SNet; its size does not depend on the context length.

    ``step`` updates the tensors in place (and returns the same object).
    """

    t: int                                  # tokens consumed (rotary position of the next)
    u: list                                 # per layer: AM-SU membrane (B, d)
    H: list                                 # per layer: astrocyte state (B, A, d_k, d_v) or None
    u_ffn: list                             # per layer: channel-mixing membrane (B, f)
    conv: list = None                       # per layer: the AM-SU's delay line
                                            # (B, conv_size - 1, A d_k + d) or None
    phase: list = None                      # per layer: the AM-SU's activity clock (B, A)
                                            # or None (clock="time")

    def __post_init__(self) -> None:
        if self.conv is None:
            self.conv = [None] * len(self.u)
        if self.phase is None:
            self.phase = [None] * len(self.u)

    @property
    def batch_size(self) -> int:
        return self.u[0].shape[0]

    @property
    def n_layer(self) -> int:
        return len(self.u)

    def nbytes(self) -> int:
        """Bytes held by the state tensors."""
        return sum(x.numel() * x.element_size()
                   for x in (*self.u, *self.H, *self.u_ffn, *self.conv, *self.phase)
                   if x is not None)


class AMSNet(LanguageModel):
    """The AM-SU language model (docs/lm.md); ``AMSNet(AMSNetConfig(...))``.

    ``model(idx, targets)`` -> ``(logits (B, T, V), loss)`` in the chunked form;
    ``model.step(idx_t (B,), cache)`` -> ``(logits (B, V), cache)``, O(1) per token;
    ``model.generate(idx, max_new_tokens, temperature, top_k)``.
    """

    def __init__(self, config: AMSNetConfig) -> None:
        super().__init__()
        if config.arch != "amsnet":
            raise ValueError(f"AMSNet needs arch='amsnet', got {config.arch!r} "
                             "(use build_model(config) for any arch)")
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.norm_f = nn.RMSNorm(config.d_model, eps=NORM_EPS)
        self._init_weights()

    def _init_weights(self) -> None:
        """Embedding (= head) and residual outputs small (GPT-2); inputs of spiking
        layers as ``nn.Linear`` (uniform +-1/sqrt(d)), so the drive is O(threshold)."""
        cfg = self.config
        nn.init.normal_(self.wte.weight, std=cfg.init_std)
        out_std = cfg.init_std / math.sqrt(2 * cfg.n_layer)
        for b in self.blocks:
            nn.init.normal_(b.w_o.weight, std=out_std)
            nn.init.normal_(b.w_2.weight, std=out_std)
            if b.amsu.spec.neuron_path and cfg.synapse_init != 1.0:
                with torch.no_grad():                   # rows I of the fused projection
                    split_rows(b.amsu.weight, b.amsu.spec.parts)["I"].mul_(cfg.synapse_init)
                    if b.amsu.bias is not None:
                        b.amsu.bias.mul_(cfg.synapse_init)

    # ------------------------------------------------------------- parallel form
    def _run(self, idx: Tensor, mode: str, states=None, record=None):
        choice("mode", mode, MODES)
        x = self.wte(idx.t().long())                                   # (T, B, d)
        new_states = []
        for i, block in enumerate(self.blocks):
            x, st = block(x, mode, None if states is None else states[i], record)
            new_states.append(st)
        # batch-major before the head, so the logits come out contiguous for the loss
        # (transposing them instead costs a copy V / d times larger; same values)
        x = x.transpose(0, 1).contiguous()                             # (B, T, d)
        return F.linear(self.norm_f(x), self.wte.weight), new_states   # (B, T, V)

    def forward(self, idx: Tensor, targets: Optional[Tensor] = None, mode: str = "chunked"):
        """``idx`` ``(B, T)`` -> ``(logits (B, T, V), loss or None)``.

        ``mode``: ``"chunked"`` (parallel, training), ``"recurrent"`` (AM-SU steps with
        projections hoisted) or ``"loop"`` (the reference loop of steps); all equal.
        """
        self._check_pair(idx, targets)
        logits, _ = self._run_checked(self._run, idx, mode)
        return self._logits_loss(logits, targets)

    def spike_record(self, idx: Tensor, which: str = "amsu") -> list[Tensor]:
        """Spikes of every layer over the tokens of ``idx`` ``(B, T)``.

        Returns one ``(B, T, N)`` tensor per layer: the AM-SU spikes (``which="amsu"``,
        ``N = d_model``) or the channel-mixing LIF spikes (``which="ffn"``,
        ``N = ffn_size``, by default ``ffn_mult * d_model``). Values are in
        ``{0..spike_levels}`` (smooth values in (0, 1) for the non-spiking twin).
        """
        check_idx(idx, self.config.vocab_size)
        if which not in ("amsu", "ffn"):
            raise ValueError(f"which must be 'amsu' or 'ffn', got {which!r}")
        rec: dict = {"amsu": [], "ffn": []}
        with torch.no_grad():
            self._run(idx, "chunked", record=rec)
        return [r.transpose(0, 1).contiguous() for r in rec[which]]

    # ------------------------------------------------------------- recurrent form
    @torch.inference_mode()
    def init_cache(self, batch_size: int) -> AMSNetCache:
        """The zero state for ``batch_size`` sequences (the start of every sequence).

        Inference tensors, like the cache of :meth:`prefill`.
        """
        p = self.wte.weight
        cfg = self.config
        kw = {"device": p.device, "dtype": p.dtype}
        u, H, uf, cv, ph = [], [], [], [], []
        for b in self.blocks:
            st = b.amsu.init_state(batch_size)
            u.append(st.u)
            H.append(st.H)
            cv.append(st.conv)
            ph.append(st.phase)
            uf.append(torch.zeros(batch_size, cfg.ffn_size, **kw))
        return AMSNetCache(0, u, H, uf, cv, ph)

    def prefill(self, idx: Tensor) -> tuple[Tensor, AMSNetCache]:
        """Read a prompt ``(B, T)`` in the chunked form: ``(logits (B, T, V), cache)``.

        Runs without autograd (inference), like :meth:`step`.
        """
        check_idx(idx, self.config.vocab_size)
        with torch.inference_mode():
            logits, states = self._run_checked(self._run, idx, "chunked")
        cache = AMSNetCache(idx.shape[1], [s[0].u for s in states],
                            [s[0].H for s in states], [s[1] for s in states],
                            [s[0].conv for s in states], [s[0].phase for s in states])
        return logits, cache

    def step(self, idx_t: Tensor, cache: Optional[AMSNetCache] = None, compile: bool = False
             ) -> tuple[Tensor, AMSNetCache]:
        """One token per sequence: ``idx_t`` ``(B,)`` -> ``(logits (B, V), cache)``.

        Costs O(1) in the context length. ``cache=None`` starts new sequences. The
        cache is updated in place and returned. Runs without autograd (inference).
        ``compile=True``: the same step under ``torch.compile`` (see :meth:`generate`).
        """
        cache = self._check_cache(idx_t, cache, AMSNetCache, compile)
        with torch.inference_mode():
            idx_t = as_inference(idx_t, compile)
            logits = self._step(idx_t, cache, self._decode_tensors(), compile)
        self._check_logits(logits, False, "logits of the step")
        return logits, cache

    def _build_decode(self) -> "_Decode":
        return _Decode.build(self)

    def _step(self, idx_t: Tensor, cache: AMSNetCache, dec: "_Decode", compiled: bool = False,
              record: Optional[list] = None) -> Tensor:
        C, S = dec.rope.rows(cache.t) if dec.shape.amsu.astro else (None, None)  # (d_k,) each
        if compiled:
            logits = self.compiled(_amsnet_step)(idx_t, C, S, cache.u, cache.H, cache.u_ffn,
                                             dec.wte, dec.head, dec.eps, dec.layers,
                                             dec.shape._replace(event=False), None, cache.conv,
                                             cache.phase)
        else:
            logits = _amsnet_step(idx_t, C, S, cache.u, cache.H, cache.u_ffn, dec.wte,
                                  dec.head, dec.eps, dec.layers, dec.shape, record, cache.conv,
                                  cache.phase)
        cache.t += 1
        return logits


# ============================================================== the decode step


def _spikes(y: Tensor, thr: Tensor, spec) -> Tensor:
    """``fire(y, thr, spec)`` for inference: binary spikes as one comparison."""
    if spec.spiking and spec.spike_levels == 1:
        return (y > thr).to(y.dtype)        # == heaviside(y - thr), exact for finite floats
    return fire(y, thr, spec)


def _spike_out_dense(x: Tensor, y: Tensor, thr: Tensor, spec, w_t: Tensor) -> Tensor:
    """``x + fire(y) @ W^T`` (``w_t = W^T`` ``(n, d)``): the general case."""
    return torch.addmm(x, _spikes(y, thr, spec), w_t)


def _spike_out_event(x: Tensor, y: Tensor, thr: Tensor, spec, w_t: Tensor) -> Tensor:
    """``x + s @ W^T`` reading only the weight rows of neurons that spiked.

    The event-driven read-out of a spiking layer: at firing rate ``r`` it reads ``r``
    of the bytes of ``W``. ``embedding_bag`` sums the rows of the active neurons
    (weighted by the spike value for graded spikes) without copying them.
    """
    binary = spec.spike_levels == 1
    s = (y > thr) if binary else fire(y, thr, spec)     # binary: == heaviside(y - thr)
    if y.shape[0] != 1:
        active = s.any(0).nonzero().view(-1)
        return torch.addmm(x, s[:, active].to(x.dtype), w_t.index_select(0, active))
    active = s.view(-1).nonzero().view(-1)                       # may be empty: sum 0
    weights = None if binary else s.view(-1)[active]
    # torch.embedding_bag: F.embedding_bag's kernel without its Python checks; mode 0 = sum
    bag = torch.embedding_bag(w_t, active, _ZERO_OFFSET, False, 0, False, weights, False,
                              None)[0]                                      # (1, d)
    return x + bag


_ZERO_OFFSET = torch.zeros(1, dtype=torch.long)     # one bag starting at index 0


def _amsnet_step(idx_t: Tensor, C: Optional[Tensor], S: Optional[Tensor], us: list, Hs: list,
                 ufs: list, wte: Tensor, head: Tensor, eps: Tensor, layers: tuple,
                 k: "_DecodeShape", record: Optional[list] = None,
                 convs: Optional[list] = None, phases: Optional[list] = None) -> Tensor:
    """One AM-SNet token: ``idx_t`` ``(B,)`` -> logits ``(B, V)``; the states advance in
    place (``us`` AM-SU membranes ``(B, N)``, ``Hs`` astrocyte states ``(B, A, d_k, d_v)``,
    ``ufs`` channel-mixing membranes ``(B, f)``, one per layer). ``C, S`` ``(d_k,)``:
    rotary rows of this position (:func:`rope_rows`). The equations are those of
    :meth:`Block.forward` (docs/model.md); the AM-SU and LIF parts are the units' own
    decode steps (:func:`astro_neuron.functional.amsu.decode.decode_step`,
    :func:`astro_neuron.functional.lif.decode_step`); RMSNorm gains are folded into
    the weights.

    Eager (``k.event``: event-driven read-outs) or under ``torch.compile`` (dense
    read-outs, static shapes). ``record``: a list that gets the spikes of each layer.
    ``convs``: per layer, the AM-SU's delay line ``(B, K-1, A d_k + d)`` (advanced in
    place) or None; ``phases``: per layer, the AM-SU's activity clock ``(B, A)`` (advanced
    in place) or None.
    """
    x = wte[idx_t]                                                     # (B, d)
    spike_out = _spike_out_event if k.event else _spike_out_dense
    if convs is None:
        convs = [None] * len(us)
    if phases is None:
        phases = [None] * len(us)
    for L, u, H, uf, cv, ph in zip(layers, us, Hs, ufs, convs, phases):
        # ---- token mixing: AM-SU (drive y = u + g_astro o; u, H advance in place)
        y = decode_step(rms(x, eps, k.inv_d), u, H, L.amsu, k.amsu, C, S, cv, ph)  # (B, N)
        if record is not None:
            record.append(_spikes(y, L.amsu.thr, k.spec))
        x = spike_out(x, y, L.amsu.thr, k.spec, L.w_o)                 # x + W_O s
        # ---- channel mixing: LIF
        lif_decode_step(torch.mm(rms(x, eps, k.inv_d), L.w_1), uf, L.beta_f)  # uf in place
        if record is not None:
            record.append(_spikes(uf, L.thr_f, k.spec_f))
        x = spike_out(x, uf, L.thr_f, k.spec_f, L.w_2)                 # x + W_2 s
    return torch.mm(rms(x, eps, k.inv_d), head)                        # (B, V)


class _DecodeShape(NamedTuple):
    """Static sizes and options of a decode step (the same for every layer)."""

    inv_d: float                        # 1 / d_model
    amsu: DecodeShape                   # the AM-SU's decode shape
    event: bool                         # event-driven read-outs (eager, CPU, spiking)
    spec: object                        # AMSUSpec (spiking, spike levels, surrogate)
    spec_f: object                      # LIFSpec of the channel mixing


class _DecodeLayer(NamedTuple):
    """Per-layer tensors of the decode step (derived from the parameters, never trained)."""

    amsu: DecodeTensors                 # the AM-SU's, norm1's gain folded into its weight
    w_o: Tensor                         # (d, d) W_O^T
    w_1: Tensor                         # (d, f) (W_1 * g_norm2)^T
    beta_f: Tensor                      # (f,) channel-mixing decay
    thr_f: Tensor                       # (f,) channel-mixing threshold
    w_2: Tensor                         # (f, d) W_2^T


class _Decode:
    """All fused decode tensors of a model (``key``: the parameters they came from)."""

    @staticmethod
    @torch.no_grad()
    def build(model: AMSNet) -> "_Decode":
        cfg = model.config
        w = model.wte.weight.detach()
        dec = _Decode()
        dec.wte = w
        dec.head = (w * model.norm_f.weight).t().detach()                 # (d, V), gain folded
        dec.eps = torch.tensor(NORM_EPS, dtype=w.dtype, device=w.device)
        dec.rope = RotaryTable(cfg.key_size, cfg.rotary_base, w.dtype, w.device,
                               rotary_dims(cfg.key_size, cfg.rotary_fraction))
        spec = model.blocks[0].amsu.spec
        # event-driven read-out on CPU (spikes are mostly 0); dense where nonzero()
        # would synchronise (GPU) or the "spikes" are smooth (non-spiking twin)
        dec.shape = _DecodeShape(1.0 / cfg.d_model, decode_shape(spec),
                                 spec.spiking and w.device.type == "cpu", spec,
                                 model.blocks[0].lif.spec)
        dec.layers = tuple(_DecodeLayer(
            amsu=fuse(b.amsu.params(), b.amsu.spec, b.norm1.weight),   # RMSNorm gain folded
            w_o=b.w_o.weight.detach().t().contiguous(),
            w_1=(b.w_1.weight * b.norm2.weight).t(),
            beta_f=b.lif.beta.detach(), thr_f=b.lif.threshold.detach(),
            w_2=b.w_2.weight.detach().t().contiguous()) for b in model.blocks)
        return dec


def build_model(config: AMSNetConfig) -> LanguageModel:
    """The model ``config.arch`` names: :class:`AMSNet` or the Transformer baseline."""
    if config.arch == "amsnet":
        return AMSNet(config)
    return Transformer(config)


def equal_params_ablation(config: AMSNetConfig) -> AMSNetConfig:
    """The astrocyte-off ablation of the AM-SNet ``config`` at equal parameters.

    Turning the astrocyte off removes its K, V, Q projections (``3 d^2`` weights a layer
    with the default key size); this gives them back as channel-mixing neurons
    (``ffn_hidden``; each adds ``2 d`` weights a layer), as many as bring the count
    closest to the AM-SNet's, the way the Transformer baseline's MLP is sized. The
    comparison ``bench train`` makes (issue 14: "at equal parameters").
    """
    if config.arch != "amsnet" or not config.astrocyte:
        raise ValueError("equal_params_ablation needs an AM-SNet config with its astrocyte on")
    target = AMSNet(config).num_params()
    off = replace(config, astrocyte=False)
    base = AMSNet(off).num_params()
    per_neuron = AMSNet(replace(off, ffn_hidden=off.ffn_size + 1)).num_params() - base
    add = max(0, round((target - base) / per_neuron))
    return replace(off, ffn_hidden=off.ffn_size + add)
