"""The reference a user would pick instead: a causal Transformer with a KV cache.

Same width, depth, norm, rotary positions, tied head and training path as
:class:`~astro_neuron.lm.model.AMSNet` (``AMSNetConfig(arch="transformer")``). The
MLP hidden width is ``ffn_mult * d + d / 2`` so that the parameter count matches the
AM-SNet's (whose token mixing has one ``d x d`` matrix more) to within 1%.
Attention is :func:`torch.nn.functional.scaled_dot_product_attention`; generation
keeps a preallocated KV cache and attends one query over it per token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from astro_neuron.lm.config import AMSNetConfig
from astro_neuron.lm.base import (
    NORM_EPS, LanguageModel, RotaryTable, as_inference, check_idx, rms, rope_rows,
)

__all__ = ["Transformer", "KVCache"]


def _rope(x: Tensor, C: Tensor, S: Tensor) -> Tensor:
    """Rotate ``x`` ``(..., T, hd)`` with rows ``C, S`` ``(T, hd)`` from :func:`rope_rows`."""
    h = x.shape[-1] // 2
    return x * C + torch.cat([x[..., h:], x[..., :h]], -1) * S


class Attention(nn.Module):
    def __init__(self, cfg: AMSNetConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.n_head, self.hd = cfg.n_head, cfg.head_size
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.proj = nn.Linear(d, d, bias=False)

    def forward(self, x: Tensor, C: Tensor, S: Tensor):
        """``x`` ``(B, T, d)`` -> ``(y (B, T, d), (k, v) each (B, H, T, hd))``."""
        B, T, d = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, self.hd).permute(2, 0, 3, 1, 4)
        q, k = _rope(q, C, S), _rope(k, C, S)                     # (B, H, T, hd)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(B, T, d)), (k, v)


class TBlock(nn.Module):
    def __init__(self, cfg: AMSNetConfig) -> None:
        super().__init__()
        d = cfg.d_model
        hidden = cfg.ffn_mult * d + d // 2
        self.norm1 = nn.RMSNorm(d, eps=NORM_EPS)
        self.attn = Attention(cfg)
        self.norm2 = nn.RMSNorm(d, eps=NORM_EPS)
        self.fc = nn.Linear(d, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, d, bias=False)

    def forward(self, x: Tensor, C: Tensor, S: Tensor):
        a, kv = self.attn(self.norm1(x), C, S)
        x = x + a                                                  # (B, T, d)
        x = x + self.fc2(F.gelu(self.fc(self.norm2(x))))
        return x, kv


@dataclass
class KVCache:
    """Keys and values of every layer, ``(B, H, capacity, hd)``; grows by doubling."""

    t: int                                  # tokens in the cache
    k: list
    v: list

    @property
    def batch_size(self) -> int:
        return self.k[0].shape[0]

    @property
    def n_layer(self) -> int:
        return len(self.k)

    @property
    def capacity(self) -> int:
        return self.k[0].shape[2]

    def reserve(self, n: int) -> None:
        """Make room for ``n`` tokens in total (one allocation, no copies later)."""
        if n <= self.capacity:
            return
        with torch.inference_mode():
            self._grow(n)

    def _grow(self, n: int) -> None:
        for lst in (self.k, self.v):
            for i, x in enumerate(lst):
                new = x.new_empty(x.shape[0], x.shape[1], n, x.shape[3])
                new[:, :, :self.t] = x[:, :, :self.t]
                lst[i] = new

    def nbytes(self) -> int:
        """Bytes allocated by the cache tensors."""
        return sum(x.numel() * x.element_size() for x in (*self.k, *self.v))


class Transformer(LanguageModel):
    """Causal Transformer baseline; the same interface as :class:`AMSNet`."""

    def __init__(self, config: AMSNetConfig) -> None:
        super().__init__()
        if config.arch != "transformer":
            raise ValueError(f"Transformer needs arch='transformer', got {config.arch!r}")
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(TBlock(config) for _ in range(config.n_layer))
        self.norm_f = nn.RMSNorm(config.d_model, eps=NORM_EPS)
        self._init_weights()

    def _init_weights(self) -> None:
        """nanoGPT's: N(0, init_std), residual projections scaled by 1/sqrt(2 n_layer)."""
        cfg = self.config
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=cfg.init_std)
        for b in self.blocks:
            nn.init.normal_(b.attn.proj.weight, std=cfg.init_std / math.sqrt(2 * cfg.n_layer))
            nn.init.normal_(b.fc2.weight, std=cfg.init_std / math.sqrt(2 * cfg.n_layer))

    def _rope(self, T: int):
        w = self.wte.weight
        C, S = rope_rows(torch.arange(T, device=w.device), self.config.head_size,
                         self.config.rotary_base, w.dtype)
        return C, S                                                 # (T, hd) each

    def _run(self, idx: Tensor):
        B, T = idx.shape
        C, S = self._rope(T)
        x = self.wte(idx.long())                                    # (B, T, d)
        kvs = []
        for b in self.blocks:
            x, kv = b(x, C, S)
            kvs.append(kv)
        return F.linear(self.norm_f(x), self.wte.weight), kvs       # (B, T, V)

    def forward(self, idx: Tensor, targets: Optional[Tensor] = None, mode: str = "chunked"):
        """``idx`` ``(B, T)`` -> ``(logits (B, T, V), loss or None)`` (``mode`` ignored)."""
        self._check_pair(idx, targets)
        logits, _ = self._run(idx)
        return self._logits_loss(logits, targets)

    # ------------------------------------------------------------- KV-cache decoding
    @torch.inference_mode()
    def init_cache(self, batch_size: int, capacity: int = 256) -> KVCache:
        """Zero keys and values for ``capacity`` tokens (inference tensors, like prefill's)."""
        w = self.wte.weight
        shape = (batch_size, self.config.n_head, capacity, self.config.head_size)
        L = self.config.n_layer
        return KVCache(0, [w.new_zeros(shape) for _ in range(L)],
                       [w.new_zeros(shape) for _ in range(L)])

    def prefill(self, idx: Tensor) -> tuple[Tensor, KVCache]:
        """Read a prompt ``(B, T)`` in parallel: ``(logits (B, T, V), cache)``."""
        check_idx(idx, self.config.vocab_size)
        with torch.inference_mode():
            logits, kvs = self._run(idx)
            cache = self.init_cache(idx.shape[0], max(256, 2 * idx.shape[1]))
            for i, (k, v) in enumerate(kvs):
                cache.k[i][:, :, :idx.shape[1]] = k
                cache.v[i][:, :, :idx.shape[1]] = v
        cache.t = idx.shape[1]
        return logits, cache

    def step(self, idx_t: Tensor, cache: Optional[KVCache] = None, compile: bool = False
             ) -> tuple[Tensor, KVCache]:
        """One token: ``idx_t`` ``(B,)`` -> ``(logits (B, V), cache)``; cost grows with t.

        ``compile=True``: the same step under ``torch.compile`` (see ``generate``).
        """
        cache = self._check_cache(idx_t, cache, KVCache, compile)
        with torch.inference_mode():
            idx_t = as_inference(idx_t, compile)
            logits = self._step(idx_t, cache, self._decode_tensors(), compile)
        self._check_logits(logits, False, "logits of the step")
        return logits, cache

    def _build_decode(self):
        cfg = self.config
        w = self.wte.weight.detach()
        dec = _TDecode()
        dec.wte = w
        dec.head = (w * self.norm_f.weight).t().detach()                # (d, V), gain folded
        dec.eps = torch.tensor(NORM_EPS, dtype=w.dtype, device=w.device)
        dec.shape = (cfg.n_head, cfg.head_size, cfg.d_model)
        dec.rope = RotaryTable(cfg.head_size, cfg.rotary_base, w.dtype, w.device)
        with torch.no_grad():                                             # RMSNorm gains folded
            dec.layers = tuple((
                (b.attn.qkv.weight * b.norm1.weight).t(),               # (d, 3d): q | k | v
                b.attn.proj.weight.detach().t(),                         # (d, d)
                (b.fc.weight * b.norm2.weight).t(),                      # (d, hidden)
                b.fc2.weight.detach().t()) for b in self.blocks)         # (hidden, d)
        return dec

    def _step(self, idx_t: Tensor, cache: KVCache, dec, compiled: bool = False) -> Tensor:
        t = cache.t
        if t + 1 > cache.capacity:
            cache.reserve(max(2 * cache.capacity, t + 1))
        C, S = dec.rope.rows(t)
        # compiled: the first call specialises on t, the second makes t dynamic (one graph
        # for every later position; automatic dynamic shapes)
        fn = self.compiled(_transformer_step) if compiled else _transformer_step
        logits = fn(idx_t, C, S, cache.k, cache.v, t, dec.wte, dec.head, dec.eps, dec.layers,
                    dec.shape)
        cache.t = t + 1
        return logits


def _transformer_step(idx_t: Tensor, C: Tensor, S: Tensor, Ks: list, Vs: list, t: int,
                      wte: Tensor, head: Tensor, eps: Tensor, layers: tuple, shape: tuple
                      ) -> Tensor:
    """One KV-cache token: ``idx_t`` ``(B,)`` -> logits ``(B, V)``; writes keys and values
    at position ``t`` of the caches ``(B, H, capacity, hd)`` and attends over ``0..t``.
    Eager or under ``torch.compile``, like the AM-SNet's :func:`_amsnet_step`."""
    H, hd, d = shape
    x = wte[idx_t]                                                      # (B, d)
    B = x.shape[0]
    inv_d = 1.0 / d
    for (w_qkv, w_proj, w_fc, w_fc2), K, V in zip(layers, Ks, Vs):
        z = torch.mm(rms(x, eps, inv_d), w_qkv)                        # (B, q|k|v)
        qk = z[:, :2 * d].view(B, 2, H, hd)
        swapped = qk.view(B, 2, H, 2, hd // 2).flip(3).view(B, 2, H, hd)
        qk = torch.addcmul(qk * C, swapped, S)                          # rotary at position t
        K[:, :, t:t + 1] = qk[:, 1].unsqueeze(2)
        V[:, :, t:t + 1] = z[:, 2 * d:].view(B, H, 1, hd)
        y = F.scaled_dot_product_attention(qk[:, 0].unsqueeze(2), K[:, :, :t + 1],
                                           V[:, :, :t + 1])             # (B, H, 1, hd)
        x = torch.addmm(x, y.view(B, d), w_proj)
        x = torch.addmm(x, F.gelu(torch.mm(rms(x, eps, inv_d), w_fc)), w_fc2)
    return torch.mm(rms(x, eps, inv_d), head)                          # (B, V)


class _TDecode:
    """Fused decode tensors of a Transformer."""
