"""What the language models share (AM-SNet and the Transformer baseline): token-id
checks, rotary rows for decoding, the loss, ``generate`` / ``decode`` and the compiled
decode step. :mod:`astro_neuron.lm.model` (AM-SNet) and
:mod:`astro_neuron.lm.baselines` (the Transformer) both build on it; neither imports
the other (``build_model`` in :mod:`astro_neuron.lm.model` imports both).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from astro_neuron.functional.amsu.decode import rms
from astro_neuron.functional.amsu.decode import rotary_rows as rope_rows
from astro_neuron.functional.finite import NonFiniteError, check_finite, checking_finite
from astro_neuron.lm.config import AMSNetConfig
from astro_neuron.validate import (
    boolean, non_negative_int, number_in_range, optional, positive_int,
)

__all__ = ["NORM_EPS", "check_idx", "rope_rows", "RotaryTable", "LanguageModel", "rms",
           "as_inference", "sample", "compile_step"]

NORM_EPS = 1e-5


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


class LanguageModel(nn.Module):
    """What AM-SNet and the Transformer baseline share: checks, loss, ``generate``."""

    config: AMSNetConfig

    def _blame_parameters(self, exc: NonFiniteError) -> NonFiniteError:
        """On the error path only: the first non-finite parameter of the model, named
        (a NaN loaded by ``load_state_dict`` shows up in a layer far downstream)."""
        with torch.no_grad():
            for name, p in self.named_parameters():
                if not bool(torch.isfinite(p).all()):
                    return NonFiniteError(f"parameter {name!r} of the {type(self).__name__} "
                                          f"contains NaN or Inf (then: {exc})")
        return exc

    def _run_checked(self, fn: Callable, *args):
        """``fn(*args)``; a :class:`NonFiniteError` inside names a non-finite parameter
        when there is one."""
        try:
            return fn(*args)
        except NonFiniteError as exc:
            raise self._blame_parameters(exc) from exc

    def _check_logits(self, logits: Tensor, time_major: bool, what: str = "logits") -> None:
        if checking_finite():
            try:
                check_finite([(what, logits, time_major)], f" ({type(self).__name__})")
            except NonFiniteError as exc:
                raise self._blame_parameters(exc) from exc

    def _logits_loss(self, logits: Tensor, targets: Optional[Tensor]):
        self._check_logits(logits.transpose(0, 1), True)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                               targets.reshape(-1).long(), ignore_index=-1)
        return logits, loss

    def _check_pair(self, idx, targets) -> None:
        check_idx(idx, self.config.vocab_size)
        if targets is not None and idx.shape[1] == 0:
            raise ValueError("targets of an empty sequence (T = 0): there is no token to "
                             "score; give at least one token (logits alone work for T = 0)")
        if targets is not None:
            check_idx(targets, self.config.vocab_size, "targets", allow_ignore=True)
            if targets.shape != idx.shape:
                raise ValueError(f"targets must have the shape of idx {list(idx.shape)}, "
                                 f"got {list(targets.shape)}")

    _decode = None                              # fused decode tensors (see _decode_tensors)

    def compiled(self, fn: Callable) -> Callable:
        """:func:`compile_step` of ``fn``, made once per model and kept on it (in
        ``self._compiled_steps``; explicit per-model state, no module-level cache)."""
        steps = self.__dict__.setdefault("_compiled_steps", {})
        if fn not in steps:
            steps[fn] = compile_step(fn)
        return steps[fn]

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
        boolean("compile", compile)
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
        non_negative_int("max_new_tokens", max_new_tokens)
        number_in_range("temperature", temperature, 0)
        optional(positive_int, "top_k", top_k)
        boolean("compile", compile)
        if idx.shape[1] == 0:
            raise ValueError("generate needs a prompt of at least one token")
        if max_new_tokens == 0:
            return idx
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                logits, cache = self.prefill(idx)
                self._check_logits(logits[:, -1], False, "logits of the prompt's last token")
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
            nxt = sample(logits, temperature, top_k, generator)          # (B, 1)
            out.append(nxt)
            if i + 1 < n:
                logits = self._step(nxt[:, 0], cache, dec, compile)        # (B, V)
        self._check_logits(logits, False, "logits of the last decode step")
        return torch.cat(out, dim=1)


def as_inference(x: Tensor, compile: bool) -> Tensor:
    """Token ids ``(B,)`` as the compiled step sees them from ``decode``: a contiguous
    inference tensor (a graph compiled for other strides or a normal tensor would be
    compiled again). Call inside ``torch.inference_mode``."""
    if compile and (not x.is_inference() or x.stride() != (1,)):
        return x.clone(memory_format=torch.contiguous_format)
    return x


def sample(logits: Tensor, temperature: float, top_k: Optional[int],
            generator: Optional[torch.Generator]) -> Tensor:
    if temperature == 0:
        return logits.argmax(-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k is not None:
        v, _ = torch.topk(logits, min(top_k, logits.shape[-1]))
        logits = logits.masked_fill(logits < v[:, [-1]], -float("inf"))
    probs = F.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)



def compile_step(fn: Callable) -> Callable:
    """``torch.compile(fn, fullgraph=True)`` with a clear error when compiling fails.

    TorchInductor fuses the small element-wise operations of a decode step into a
    few C++ loops (the matrix products stay calls to the BLAS). Its graphs are
    cached per input shapes and dtypes (and on disk). A model keeps the wrapper it
    made (:meth:`LanguageModel.compiled`), so rebuilt decode tensors reuse it.
    """
    compiled = torch.compile(fn, fullgraph=True)

    def call(*args):
        try:
            return compiled(*args)
        except Exception as exc:        # a missing C++ compiler surfaces here
            if isinstance(exc, torch.cuda.OutOfMemoryError):
                raise
            raise RuntimeError(f"compile=True: torch.compile of the decode step failed "
                               f"({type(exc).__name__}: {str(exc)[:300]}); on CPU it "
                               "needs a C++ compiler (g++); use compile=False") from exc
    return call
