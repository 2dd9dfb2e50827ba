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
from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from astro_neuron.amsu import AMSU
from astro_neuron.functional.amsu import AMSUState, fire, project
from astro_neuron.functional.rotary import rotary, rotary_angles, rotary_dims
from astro_neuron.functional.scan import astro_chunked, astro_loop, leaky_chunked, leaky_loop
from astro_neuron.functional.surrogate import ATan
from astro_neuron.lif import LIF
from astro_neuron.lm.config import AMSNetConfig

__all__ = ["AMSNet", "AMSNetCache", "Block", "build_model", "RotaryTable", "rope_rows", "NORM_EPS",
           "check_idx", "LanguageModel"]

NORM_EPS = 1e-5
MODES = ("chunked", "recurrent", "loop")


def check_idx(idx, vocab_size: int, name: str = "idx", allow_ignore: bool = False) -> None:
    """Clear errors for token ids that are not an integer ``(B, T)`` tensor in range."""
    if not isinstance(idx, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of token ids, got {type(idx).__name__}")
    if idx.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(f"{name} must hold integer token ids, got dtype {idx.dtype}")
    if idx.dim() != 2:
        raise ValueError(f"{name} must have shape (B, T), got {list(idx.shape)}")
    if idx.numel():
        lo, hi = int(idx.min()), int(idx.max())
        low = -1 if allow_ignore else 0
        if lo < low or hi >= vocab_size:
            raise ValueError(f"{name} values must lie in [{low}, {vocab_size - 1}], "
                             f"got min {lo}, max {hi}")


def rope_rows(positions: Tensor, dim: int, base: float, dtype: torch.dtype,
              n_rot: Optional[int] = None) -> tuple[Tensor, Tensor]:
    """``C = [cos, cos]`` and ``S = [-sin, sin]`` rows ``(len(positions), dim)``.

    ``rotary(x, t, n_rot=n_rot) == x * C[t] + swap_halves(x) * S[t]``; the angles come
    from :func:`~astro_neuron.functional.rotary.rotary_angles` (float64), the values
    the parallel form uses (pairs not rotated: ``C = 1``, ``S = 0``).
    """
    cos, sin = rotary_angles(positions, dim, base, n_rot)
    return torch.cat([cos, cos], -1).to(dtype), torch.cat([-sin, sin], -1).to(dtype)


class RotaryTable:
    """Rotary rows for the decode steps, ``BLOCK`` positions at a time.

    Holds the rows of one block of positions and computes the next block when the
    position leaves it, so its memory does not grow with the context.
    """

    BLOCK = 1024

    def __init__(self, dim: int, base: float, dtype: torch.dtype, device,
                 n_rot: Optional[int] = None) -> None:
        self.dim, self.base, self.dtype, self.device = dim, base, dtype, device
        self.n_rot = n_rot
        self.start = 0
        self.C = self.S = torch.empty(0, dim, dtype=dtype, device=device)

    def rows(self, t: int) -> tuple[Tensor, Tensor]:
        i = t - self.start
        if not 0 <= i < self.C.shape[0]:
            self.start, i = t, 0
            pos = torch.arange(t, t + self.BLOCK, device=self.device)
            self.C, self.S = rope_rows(pos, self.dim, self.base, self.dtype, self.n_rot)
        return self.C[i], self.S[i]


# ============================================================== the AM-SNet


class Block(nn.Module):
    """One AM-SNet block: AM-SU token mixing, then spiking channel mixing."""

    def __init__(self, cfg: AMSNetConfig) -> None:
        super().__init__()
        d, f = cfg.d_model, cfg.ffn_mult * cfg.d_model
        sg = ATan(cfg.surrogate_alpha)
        self.norm1 = nn.RMSNorm(d, eps=NORM_EPS)
        self.amsu = AMSU(d, d, n_astrocytes=cfg.n_head, d_key=cfg.head_size,
                         tau_mem=cfg.tau_mem, tau_astro=cfg.tau_astro, threshold=cfg.threshold,
                         surrogate=sg, spike_levels=cfg.spike_levels, astrocyte=cfg.astrocyte,
                         neuron_path=cfg.neuron_path, spiking=cfg.spiking, rotary=True,
                         rotary_base=cfg.rotary_base, rotary_fraction=cfg.rotary_fraction,
                         astro_gain=cfg.astro_gain,
                         chunk_size=cfg.chunk_size)
        self.astro_norm = cfg.astro_norm and cfg.astrocyte
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
        h = self.norm1(x)
        if self.astro_norm:
            spikes, amsu_state = self._amsu_normed(h, amsu_state, mode)         # (T, B, d)
        else:
            out, amsu_state = self.amsu.run(h, amsu_state, mode=mode)
            spikes = out.spikes                                                 # (T, B, d)
        if record is not None:
            record["amsu"].append(spikes)
        x = x + self.w_o(spikes)                                                # (T, B, d)
        z = self.w_1(self.norm2(x))                                             # (T, B, f)
        s, _, u_ffn = self.lif.run(z, u_ffn, mode="chunked" if mode == "chunked" else "loop")
        if record is not None:
            record["ffn"].append(s)
        x = x + self.w_2(s)                                                     # (T, B, d)
        return x, (amsu_state, u_ffn)


    def _amsu_normed(self, h: Tensor, state, mode: str):
        """The AM-SU with each astrocyte's read-out RMS-normalised over its ``d_v``
        neurons (then scaled by ``g_astro``), composed from the core functions.

        ``h`` ``(T, B, d)`` -> ``(spikes (T, B, N), AMSUState)``. Without the norm the
        read-out ``H^T q`` grows with the number of tokens the slow astrocytes have
        summed (docs/lm.md, "Findings"); with it, it stays O(1) at every position.
        """
        am = self.amsu
        spec, p = am.spec, am.params()
        T, B = h.shape[:2]
        st = am.init_state(B) if state is None else AMSUState(*state)
        I, k, v, q = project(h, p, spec)                       # I (T,B,N); k,q,v (T,B,A,.)
        chunked = mode == "chunked"
        if spec.neuron_path:
            u, u_T = (leaky_chunked(I, p.beta, st.u, am.chunk_size) if chunked
                      else leaky_loop(I, p.beta, st.u))
        else:
            u, u_T = st.u.expand(T, *st.u.shape), st.u
        k = rotary(k, st.t, spec.rotary_base, spec.rotary_dims)
        q = rotary(q, st.t, spec.rotary_base, spec.rotary_dims)
        o, H = (astro_chunked(q, k, v, p.gamma, st.H, am.chunk_size) if chunked
                else astro_loop(q, k, v, p.gamma, st.H))       # (T, B, A, d_v)
        o = F.rms_norm(o, (spec.d_value,), eps=NORM_EPS).flatten(-2) * p.astro_gain
        return fire(u + o, p.threshold, spec), AMSUState(u_T, H, st.t + T)


@dataclass
class AMSNetCache:
    """Recurrent state of an AM-SNet; its size does not depend on the context length.

    ``step`` updates the tensors in place (and returns the same object).
    """

    t: int                                  # tokens consumed (rotary position of the next)
    u: list                                 # per layer: AM-SU membrane (B, d)
    H: list                                 # per layer: astrocyte state (B, A, d_k, d_v) or None
    u_ffn: list                             # per layer: channel-mixing membrane (B, f)

    @property
    def batch_size(self) -> int:
        return self.u[0].shape[0]

    @property
    def n_layer(self) -> int:
        return len(self.u)

    def nbytes(self) -> int:
        """Bytes held by the state tensors."""
        return sum(x.numel() * x.element_size() for x in (*self.u, *self.H, *self.u_ffn)
                   if x is not None)


class LanguageModel(nn.Module):
    """What AM-SNet and the Transformer baseline share: checks, loss, ``generate``."""

    config: AMSNetConfig

    def _logits_loss(self, logits: Tensor, targets: Optional[Tensor]):
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                               targets.reshape(-1).long(), ignore_index=-1)
        return logits, loss

    def _check_pair(self, idx, targets) -> None:
        check_idx(idx, self.config.vocab_size)
        if targets is not None:
            check_idx(targets, self.config.vocab_size, "targets", allow_ignore=True)
            if targets.shape != idx.shape:
                raise ValueError(f"targets must have the shape of idx {list(idx.shape)}, "
                                 f"got {list(targets.shape)}")

    _decode = None                              # fused decode tensors (see _decode_tensors)

    def _decode_tensors(self):
        """Fused decode tensors; rebuilt only when a parameter changed.

        Keyed on every parameter's version counter and storage, so an optimizer step,
        ``load_state_dict`` or ``.to()`` invalidates them.
        """
        key = tuple((p._version, p.data_ptr(), p.dtype) for p in self.parameters())
        if self._decode is None or self._decode.key != key:
            self._decode = self._build_decode()
            self._decode.key = key
        return self._decode

    def _check_cache(self, idx_t, cache, cls, compile=False):
        if not isinstance(compile, bool):
            raise TypeError(f"compile must be True or False, got {compile!r}")
        if not isinstance(idx_t, Tensor) or idx_t.dim() != 1:
            raise ValueError("idx_t must be a 1-D tensor of token ids (B,), got "
                             f"{getattr(idx_t, 'shape', type(idx_t).__name__)}")
        check_idx(idx_t[:, None], self.config.vocab_size, "idx_t")
        if cache is None:
            return self.init_cache(idx_t.shape[0])
        if not isinstance(cache, cls) or cache.batch_size != idx_t.shape[0] \
                or cache.n_layer != self.config.n_layer:
            raise ValueError(f"cache must be a {cls.__name__} of this model with batch size "
                             f"{idx_t.shape[0]} (from init_cache / prefill / step)")
        return cache

    def num_params(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.wte.weight.numel()
        return n

    @torch.no_grad()
    def generate(self, idx: Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: Optional[int] = None, generator: Optional[torch.Generator] = None,
                 compile: bool = False) -> Tensor:
        """Sample ``max_new_tokens`` tokens after ``idx`` ``(B, T)``; returns ``(B, T + new)``.

        The prompt is read in one parallel pass (:meth:`prefill`), then each new token
        costs one recurrent :meth:`step`. ``temperature`` 0 means greedy.
        ``compile=True`` runs the step under ``torch.compile`` (fused; the first call
        in a process compiles it, seconds to a minute; docs/lm.md, "Generation speed").
        """
        check_idx(idx, self.config.vocab_size)
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) \
                or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be a non-negative int, got {max_new_tokens!r}")
        if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) \
                or temperature < 0:
            raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int)
                                  or top_k < 1):
            raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")
        if not isinstance(compile, bool):
            raise TypeError(f"compile must be True or False, got {compile!r}")
        if idx.shape[1] == 0:
            raise ValueError("generate needs a prompt of at least one token")
        if max_new_tokens == 0:
            return idx
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                logits, cache = self.prefill(idx)
                new = self.decode(logits[:, -1], cache, max_new_tokens, temperature, top_k,
                                  generator, compile)
            return torch.cat([idx, new], dim=1).clone()
        finally:
            self.train(was_training)


    @torch.inference_mode()
    def decode(self, logits: Tensor, cache, n: int, temperature: float = 1.0,
               top_k: Optional[int] = None, generator: Optional[torch.Generator] = None,
               compile: bool = False) -> Tensor:
        """The token-by-token part of :meth:`generate`: from the last logits ``(B, V)``
        and the cache after them, sample ``n`` tokens ``(B, n)``, one step each.

        Arguments are trusted (``generate`` checks them); the cache advances in place.
        """
        dec = self._decode_tensors()
        out = []
        for i in range(n):
            nxt = _sample(logits, temperature, top_k, generator)          # (B, 1)
            out.append(nxt)
            if i + 1 < n:
                logits = self._step(nxt[:, 0], cache, dec, compile)        # (B, V)
        return torch.cat(out, dim=1)


def _as_inference(x: Tensor, compile: bool) -> Tensor:
    """Token ids ``(B,)`` as the compiled step sees them from ``decode``: a contiguous
    inference tensor (a graph compiled for other strides or a normal tensor would be
    compiled again). Call inside ``torch.inference_mode``."""
    if compile and (not x.is_inference() or x.stride() != (1,)):
        return x.clone(memory_format=torch.contiguous_format)
    return x


def _sample(logits: Tensor, temperature: float, top_k: Optional[int],
            generator: Optional[torch.Generator]) -> Tensor:
    if temperature == 0:
        return logits.argmax(-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k is not None:
        v, _ = torch.topk(logits, min(top_k, logits.shape[-1]))
        logits = logits.masked_fill(logits < v[:, [-1]], -float("inf"))
    probs = F.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)


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
                    b.amsu.weight[:b.amsu.spec.n_neurons].mul_(cfg.synapse_init)
                    if b.amsu.bias is not None:
                        b.amsu.bias.mul_(cfg.synapse_init)

    # ------------------------------------------------------------- parallel form
    def _run(self, idx: Tensor, mode: str, states=None, record=None):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        x = self.wte(idx.t().long())                                   # (T, B, d)
        new_states = []
        for i, block in enumerate(self.blocks):
            x, st = block(x, mode, None if states is None else states[i], record)
            new_states.append(st)
        logits = F.linear(self.norm_f(x), self.wte.weight)             # (T, B, V)
        return logits.transpose(0, 1), new_states                      # (B, T, V)

    def forward(self, idx: Tensor, targets: Optional[Tensor] = None, mode: str = "chunked"):
        """``idx`` ``(B, T)`` -> ``(logits (B, T, V), loss or None)``.

        ``mode``: ``"chunked"`` (parallel, training), ``"recurrent"`` (AM-SU steps with
        projections hoisted) or ``"loop"`` (the reference loop of steps); all equal.
        """
        self._check_pair(idx, targets)
        logits, _ = self._run(idx, mode)
        return self._logits_loss(logits, targets)

    def spike_record(self, idx: Tensor, which: str = "amsu") -> list[Tensor]:
        """Spikes of every layer over the tokens of ``idx`` ``(B, T)``.

        Returns one ``(B, T, N)`` tensor per layer: the AM-SU spikes (``which="amsu"``,
        ``N = d_model``) or the channel-mixing LIF spikes (``which="ffn"``,
        ``N = ffn_mult * d_model``). Values are in ``{0..spike_levels}`` (smooth values
        in (0, 1) for the non-spiking twin).
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
        u, H, uf = [], [], []
        for b in self.blocks:
            st = b.amsu.init_state(batch_size)
            u.append(st.u)
            H.append(st.H)
            uf.append(torch.zeros(batch_size, cfg.ffn_mult * cfg.d_model, **kw))
        return AMSNetCache(0, u, H, uf)

    def prefill(self, idx: Tensor) -> tuple[Tensor, AMSNetCache]:
        """Read a prompt ``(B, T)`` in the chunked form: ``(logits (B, T, V), cache)``.

        Runs without autograd (inference), like :meth:`step`.
        """
        check_idx(idx, self.config.vocab_size)
        with torch.inference_mode():
            logits, states = self._run(idx, "chunked")
        cache = AMSNetCache(idx.shape[1], [s[0].u for s in states],
                            [s[0].H for s in states], [s[1] for s in states])
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
            idx_t = _as_inference(idx_t, compile)
            return self._step(idx_t, cache, self._decode_tensors(), compile), cache

    def _build_decode(self) -> "_Decode":
        return _Decode.build(self)

    def _step(self, idx_t: Tensor, cache: AMSNetCache, dec: "_Decode", compiled: bool = False,
              record: Optional[list] = None) -> Tensor:
        C, S = dec.rope.rows(cache.t) if dec.shape.astro else (None, None)   # (d_k,) each
        if compiled:
            logits = _compiled(_amsnet_step)(idx_t, C, S, cache.u, cache.H, cache.u_ffn,
                                             dec.wte, dec.head, dec.eps, dec.layers,
                                             dec.shape._replace(event=False))
        else:
            logits = _amsnet_step(idx_t, C, S, cache.u, cache.H, cache.u_ffn, dec.wte,
                                  dec.head, dec.eps, dec.layers, dec.shape, record)
        cache.t += 1
        return logits


# ============================================================== the decode step


def _rms(x: Tensor, eps: Tensor, inv_n: float) -> Tensor:
    """``F.rms_norm`` without gain over the last dim (``inv_n = 1 / x.shape[-1]``), in
    4 dispatches instead of about 12 (a decode step runs 13 of them per token)."""
    s = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    return x * torch.addcmul(eps, s, s, value=inv_n).rsqrt_()


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
                 k: "_DecodeShape", record: Optional[list] = None) -> Tensor:
    """One AM-SNet token: ``idx_t`` ``(B,)`` -> logits ``(B, V)``; the states advance in
    place (``us`` AM-SU membranes ``(B, N)``, ``Hs`` astrocyte states ``(B, A, d_k, d_v)``,
    ``ufs`` channel-mixing membranes ``(B, f)``, one per layer). ``C, S`` ``(d_k,)``:
    rotary rows of this position (:func:`rope_rows`). The equations are those of
    :meth:`Block.forward` (docs/model.md); RMSNorm gains are folded into the weights.

    Eager (``k.event``: event-driven read-outs) or under ``torch.compile`` (dense
    read-outs, static shapes). ``record``: a list that gets the spikes of each layer.
    """
    x = wte[idx_t]                                                     # (B, d)
    B = x.shape[0]
    spike_out = _spike_out_event if k.event else _spike_out_dense
    for L, u, H, uf in zip(layers, us, Hs, ufs):
        # ---- token mixing: AM-SU
        xn = _rms(x, eps, k.inv_d)
        z = torch.mm(xn, L.w_in) if L.b_in is None else torch.addmm(L.b_in, xn, L.w_in)
        if k.n_I:                                                      # z (B, P): I|V|K|Q
            u.mul_(L.beta).add_(z[:, :k.n_I])                          # u = beta u + I
        if k.astro:
            v = z[:, k.n_I:k.kq0].view(B, k.A, 1, k.dv)
            kq = z[:, k.kq0:].view(B, 2, k.A, k.dk)
            swapped = kq.view(B, 2, k.A, 2, k.dk // 2).flip(3).view(B, 2, k.A, k.dk)
            kq = torch.addcmul(kq * C, swapped, S)                     # rotary at position t
            H.mul_(L.gamma).addcmul_(kq[:, 0].unsqueeze(-1), v)        # H = diag(g) H + k v^T
            q = kq[:, 1].reshape(B * k.A, 1, k.dk)
            o = torch.bmm(q, H.view(B * k.A, k.dk, k.dv))              # H^T q (B A, 1, d_v)
            if k.astro_norm:
                o = _rms(o, eps, k.inv_dv)
            y = torch.addcmul(u, o.view(B, k.N), L.o_scale)            # u + g_astro o
        else:
            y = u
        if record is not None:
            record.append(_spikes(y, L.thr, k.spec))
        x = spike_out(x, y, L.thr, k.spec, L.w_o)                      # x + W_O s
        # ---- channel mixing: LIF
        uf.mul_(L.beta_f).add_(torch.mm(_rms(x, eps, k.inv_d), L.w_1))
        if record is not None:
            record.append(_spikes(uf, L.thr_f, k.spec_f))
        x = spike_out(x, uf, L.thr_f, k.spec_f, L.w_2)                 # x + W_2 s
    return torch.mm(_rms(x, eps, k.inv_d), head)                       # (B, V)


_COMPILED: dict = {}


def _compiled(fn, **options):
    """``torch.compile(fn, fullgraph=True, **options)``, made once per process.

    TorchInductor fuses the small element-wise operations of a decode step into a
    few C++ loops (the matrix products stay calls to the BLAS). Its graphs are
    cached per input shapes and dtypes (and on disk), so rebuilt decode tensors and
    new models of the same shape reuse them.
    """
    c = _COMPILED.get(fn)
    if c is None:
        compiled = torch.compile(fn, fullgraph=True, **options)

        def c(*args):
            try:
                return compiled(*args)
            except Exception as exc:        # a missing C++ compiler surfaces here
                if isinstance(exc, torch.cuda.OutOfMemoryError):
                    raise
                raise RuntimeError(f"compile=True: torch.compile of the decode step failed "
                                   f"({type(exc).__name__}: {str(exc)[:300]}); on CPU it "
                                   "needs a C++ compiler (g++); use compile=False") from exc
        _COMPILED[fn] = c
    return c


class _DecodeShape(NamedTuple):
    """Static sizes and options of a decode step (the same for every layer)."""

    inv_d: float                        # 1 / d_model
    N: int                              # AM-SU neurons
    A: int                              # astrocytes
    dk: int                             # key size per astrocyte
    dv: int                             # neurons per astrocyte
    inv_dv: float
    n_I: int                            # rows of I in the fused projection (0: no neuron path)
    kq0: int                            # first row of K in the fused projection
    astro: bool
    astro_norm: bool
    event: bool                         # event-driven read-outs (eager, CPU, spiking)
    spec: object                        # AMSUSpec (spiking, spike levels, surrogate)
    spec_f: object                      # LIFSpec of the channel mixing


class _DecodeLayer(NamedTuple):
    """Per-layer tensors of the decode step (derived from the parameters, never trained)."""

    w_in: Tensor                        # (d, P) = (W_in * g_norm1)^T, columns I|V|K|Q
    b_in: Optional[Tensor]              # (P,) bias of I (zeros for V, K, Q) or None
    beta: Tensor                        # (N,) AM-SU membrane decay
    gamma: Tensor                       # (A, d_k, 1) astrocyte decays
    o_scale: Tensor                     # (N,) g_astro (/ sqrt(d_k) without the astro norm)
    thr: Tensor                         # (N,) AM-SU threshold
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
        d = cfg.d_model
        w = model.wte.weight.detach()
        dec = _Decode()
        dec.wte = w
        dec.head = (w * model.norm_f.weight).t().detach()                 # (d, V), gain folded
        dec.eps = torch.tensor(NORM_EPS, dtype=w.dtype, device=w.device)
        dec.rope = RotaryTable(cfg.head_size, cfg.rotary_base, w.dtype, w.device,
                               rotary_dims(cfg.head_size, cfg.rotary_fraction))
        spec = model.blocks[0].amsu.spec
        N, A, dk, dv = spec.n_neurons, spec.n_astrocytes, spec.d_key, spec.d_value
        n_I = N if spec.neuron_path else 0
        # event-driven read-out on CPU (spikes are mostly 0); dense where nonzero()
        # would synchronise (GPU) or the "spikes" are smooth (non-spiking twin)
        dec.shape = _DecodeShape(1.0 / d, N, A, dk, dv, 1.0 / dv, n_I, n_I + N, spec.astrocyte,
                                 model.blocks[0].astro_norm,
                                 spec.spiking and w.device.type == "cpu", spec,
                                 model.blocks[0].lif.spec)
        layers = []
        for b in model.blocks:
            am = b.amsu
            rows = dict(zip((n for n, _ in am.spec.parts),
                            torch.split(am.weight, [n for _, n in am.spec.parts])))
            blocks = ([rows["I"]] if n_I else []) + ([rows["V"], rows["K"], rows["Q"]]
                                                     if spec.astrocyte else [])
            b_in = None
            if n_I and am.bias is not None:
                b_in = torch.cat([am.bias, am.bias.new_zeros(sum(r.shape[0] for r in blocks)
                                                             - N)])
            o_scale = am.astro_gain if b.astro_norm else am.astro_gain / math.sqrt(dk)
            layers.append(_DecodeLayer(
                w_in=(torch.cat(blocks) * b.norm1.weight).t(),             # RMSNorm gain folded
                b_in=b_in, beta=am.beta.detach(),
                gamma=am.gamma.detach()[..., None].contiguous(),
                o_scale=o_scale.detach(), thr=am.threshold.detach(),
                w_o=b.w_o.weight.detach().t().contiguous(),
                w_1=(b.w_1.weight * b.norm2.weight).t(),
                beta_f=b.lif.beta.detach(), thr_f=b.lif.threshold.detach(),
                w_2=b.w_2.weight.detach().t().contiguous()))
        dec.layers = tuple(layers)
        return dec


def build_model(config: AMSNetConfig) -> LanguageModel:
    """The model ``config.arch`` names: :class:`AMSNet` or the Transformer baseline."""
    if config.arch == "amsnet":
        return AMSNet(config)
    from astro_neuron.lm.baselines import Transformer

    return Transformer(config)
