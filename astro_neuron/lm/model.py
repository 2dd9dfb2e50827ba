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
from typing import Optional

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

    def _check_cache(self, idx_t, cache, cls):
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
                 ) -> Tensor:
        """Sample ``max_new_tokens`` tokens after ``idx`` ``(B, T)``; returns ``(B, T + new)``.

        The prompt is read in one parallel pass (:meth:`prefill`), then each new token
        costs one recurrent :meth:`step`. ``temperature`` 0 means greedy.
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
                                  generator)
            return torch.cat([idx, new], dim=1).clone()
        finally:
            self.train(was_training)


    @torch.inference_mode()
    def decode(self, logits: Tensor, cache, n: int, temperature: float = 1.0,
               top_k: Optional[int] = None, generator: Optional[torch.Generator] = None
               ) -> Tensor:
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
                logits = self._step(nxt[:, 0], cache, dec)                 # (B, V)
        return torch.cat(out, dim=1)


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
    def init_cache(self, batch_size: int) -> AMSNetCache:
        """The zero state for ``batch_size`` sequences (the start of every sequence)."""
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

    def step(self, idx_t: Tensor, cache: Optional[AMSNetCache] = None
             ) -> tuple[Tensor, AMSNetCache]:
        """One token per sequence: ``idx_t`` ``(B,)`` -> ``(logits (B, V), cache)``.

        Costs O(1) in the context length. ``cache=None`` starts new sequences. The
        cache is updated in place and returned. Runs without autograd (inference).
        """
        cache = self._check_cache(idx_t, cache, AMSNetCache)
        with torch.inference_mode():
            return self._step(idx_t, cache, self._decode_tensors()), cache

    def _build_decode(self) -> "_Decode":
        return _Decode.build(self)

    def _step(self, idx_t: Tensor, cache: AMSNetCache, dec: "_Decode") -> Tensor:
        x = dec.wte[idx_t]                                             # (B, d)
        t = cache.t
        C, S = dec.rope.rows(t) if dec.astro else (None, None)         # (d_k,)
        for i, L in enumerate(dec.layers):
            # ---- token mixing: AM-SU (docs/model.md), fused
            xn = F.rms_norm(x, dec.dshape, eps=NORM_EPS)
            z = F.linear(xn, L.w_in, L.b_in)                           # (B, P): I|V|K|Q
            u = cache.u[i]
            if L.n_I:
                u.mul_(L.beta).add_(z[:, :L.n_I])                      # u = beta u + I
            if dec.astro:
                B = x.shape[0]
                v = z[:, L.n_I:L.n_I + L.N].view(B, L.A, 1, L.dv)
                kq = z[:, L.kq0:].view(B, 2, L.A, L.dk)
                kqs = torch.roll(kq, L.dk // 2, -1)                    # halves swapped
                kq = torch.addcmul(kq * C, kqs, S)                     # rotary at position t
                H = cache.H[i]
                H.mul_(L.gamma).addcmul_(kq[:, 0].unsqueeze(-1), v)    # H = diag(g) H + k v^T
                o = torch.matmul(kq[:, 1].unsqueeze(-2), H)            # H^T q (B, A, 1, d_v)
                if L.astro_norm:
                    o = F.rms_norm(o, L.dvshape, eps=NORM_EPS)
                y = torch.addcmul(u, o.view(B, L.N), L.o_scale)        # u + g_astro o (/sqrt dk)
            else:
                y = u
            x = L.spike_out(x, y, L.thr, L.spec, L.w_o)                # x + W_O s
            # ---- channel mixing: LIF
            xn = F.rms_norm(x, dec.dshape, eps=NORM_EPS)
            uf = cache.u_ffn[i]
            uf.mul_(L.beta_f).add_(F.linear(xn, L.w_1))
            x = L.spike_out(x, uf, L.thr_f, L.spec_f, L.w_2)           # x + W_2 s
        cache.t = t + 1
        xn = F.rms_norm(x, dec.dshape, eps=NORM_EPS)
        return F.linear(xn, dec.head)                                  # (B, V)


def _spike_out_dense(x: Tensor, y: Tensor, thr: Tensor, spec, w_t: Tensor) -> Tensor:
    """``x + fire(y) @ W^T`` (``w_t = W^T`` stored ``(n, d)``): the general case."""
    return torch.addmm(x, fire(y, thr, spec), w_t)


def _spike_out_event(x: Tensor, y: Tensor, thr: Tensor, spec, w_t: Tensor) -> Tensor:
    """``x + s @ W^T`` reading only the weight rows of neurons that spiked.

    The event-driven read-out of a spiking layer: at firing rate ``r`` it reads ``r``
    of the bytes of ``W``. ``embedding_bag`` sums the rows of the active neurons
    (weighted by the spike value for graded spikes) without copying them.
    """
    if spec.spike_levels == 1:
        s = (y > thr)                       # == heaviside(y - thr), exact for finite floats
    else:
        s = fire(y, thr, spec)
    if y.shape[0] != 1:
        active = s.any(0).nonzero().view(-1)
        return torch.addmm(x, s[:, active].to(x.dtype), w_t.index_select(0, active))
    active = s[0].nonzero().view(-1)
    if active.numel() == 0:
        return x
    weights = None if spec.spike_levels == 1 else s[0, active][None]
    return x + F.embedding_bag(active[None], w_t, mode="sum", per_sample_weights=weights)


class _DecodeLayer:
    """Per-layer tensors of the fused decode step (derived, never trained)."""


class _Decode:
    """All fused decode tensors of a model (``key``: the parameters they came from)."""

    @staticmethod
    @torch.no_grad()
    def build(model: AMSNet) -> "_Decode":
        cfg = model.config
        d = cfg.d_model
        dec = _Decode()
        dec.dshape = (d,)
        dec.astro = cfg.astrocyte
        dec.wte = model.wte.weight.detach()
        dec.head = (model.wte.weight * model.norm_f.weight).detach()   # norm gain folded in
        w = dec.wte
        dec.rope = RotaryTable(cfg.head_size, cfg.rotary_base, w.dtype, w.device,
                               rotary_dims(cfg.head_size, cfg.rotary_fraction))
        dec.layers = []
        for b in model.blocks:
            L = _DecodeLayer()
            am, spec = b.amsu, b.amsu.spec
            L.spec, L.spec_f = spec, b.lif.spec
            # event-driven read-out on CPU (spikes are mostly 0); dense where nonzero()
            # would synchronise (GPU) or the "spikes" are smooth (non-spiking twin)
            event = spec.spiking and model.wte.weight.device.type == "cpu"
            L.spike_out = _spike_out_event if event else _spike_out_dense
            L.N, L.A, L.dk, L.dv = spec.n_neurons, spec.n_astrocytes, spec.d_key, spec.d_value
            rows = dict(zip((n for n, _ in spec.parts),
                            torch.split(am.weight, [n for _, n in spec.parts])))
            g = b.norm1.weight                                         # RMSNorm gain folded in
            blocks, bias = [], []
            L.n_I = L.N if spec.neuron_path else 0
            if spec.neuron_path:
                blocks.append(rows["I"])
                bias.append(am.bias if am.bias is not None else am.weight.new_zeros(L.N))
            if spec.astrocyte:
                blocks += [rows["V"], rows["K"], rows["Q"]]
                bias.append(am.weight.new_zeros(L.N + 2 * L.A * L.dk))
            L.kq0 = L.n_I + L.N
            L.w_in = (torch.cat(blocks) * g).contiguous()
            L.b_in = torch.cat(bias).contiguous()
            L.beta = am.beta.detach()
            L.gamma = am.gamma.detach()[..., None].contiguous()        # (A, d_k, 1)
            L.astro_norm, L.dvshape = b.astro_norm, (L.dv,)
            L.o_scale = (am.astro_gain if b.astro_norm
                         else am.astro_gain / math.sqrt(L.dk)).detach()
            L.thr = am.threshold.detach()
            L.w_o = b.w_o.weight.detach().t().contiguous()             # W_O^T (d, d)
            L.w_1 = (b.w_1.weight * b.norm2.weight).detach().contiguous()
            L.beta_f = b.lif.beta.detach()
            L.thr_f = b.lif.threshold.detach()
            L.w_2 = b.w_2.weight.detach().t().contiguous()             # W_2^T (f, d)
            dec.layers.append(L)
        return dec


def build_model(config: AMSNetConfig) -> LanguageModel:
    """The model ``config.arch`` names: :class:`AMSNet` or the Transformer baseline."""
    if config.arch == "amsnet":
        return AMSNet(config)
    from astro_neuron.lm.baselines import Transformer

    return Transformer(config)
