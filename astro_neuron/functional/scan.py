"""The two linear recurrences of the AM-SU, each in three forms.

* Leaky integration (the membrane), element-wise decay ``beta`` in (0, 1]::

      u_t = beta * u_{t-1} + x_t

* Astrocyte retention (a matrix state per astrocyte, decay per key channel)::

      H_t = diag(gamma) H_{t-1} + k_t v_t^T          H: [..., d_k, d_v]
      o_t = H_t^T q_t                                 (unscaled read-out)

For each: ``*_step`` (one step: the definition), ``*_loop`` (the step applied T
times: the slow reference), and ``*_chunked`` (the parallel form used for training).
All are time-major: sequences are ``[T, ...]``.

The chunked forms split time into chunks of ``C`` steps. Inside a chunk the decay
products ``gamma^(i-j)`` are factorised around the chunk's midpoint ``h`` as
``gamma^(i-h) * gamma^(h-j)``, so the intra-chunk work is a masked matrix product;
between chunks the state is carried (``gamma^C H + dH``). Every exponent stays in
``[-E, E]`` with ``E = min(log(finfo.max) / 4, 8)``: the chunk size is reduced, for
this call only, to ``1 + floor(2E / max|log gamma|)`` when a decay is so close to 0
that ``C`` would exceed it (this keeps the form exact, finite and its decay gradient
accurate for any decay, at some speed cost for tiny decays; no ``gamma^-t`` ever
appears; :func:`stable_chunk_size` derives the bound). Decay powers are computed
in float64 from the decay *as rounded to the working dtype*, i.e. the very factor the
step multiplies by, so loop and chunked forms differ only by summation rounding.
On the CPU two pieces run as compiled loops (:mod:`.compiled`): the membrane scan and
the astrocyte scan's decay-gradient sums. See docs/model.md, "The three forms" and
"The CPU kernels".
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from astro_neuron.functional.compiled import (
    chunk_decay_sums, leaky_compiled, leaky_fire_compiled, state_decay_sums, use_compiled,
)
from astro_neuron.functional.surrogate import ATan, fire_levels
from astro_neuron.validate import broadcasts_into

__all__ = [
    "leaky_step", "leaky_loop", "leaky_chunked", "leaky_fire_chunked",
    "astro_step", "astro_read", "astro_loop", "astro_chunked",
    "astro_gated_loop", "astro_gated_chunked", "stable_chunk_size",
]

_LOG_DECAY_FLOOR = -1.0e4  # log of a decay of exactly 0: exp(-1e4 * d) == 0 for d >= 1


# ---------------------------------------------------------------- helpers

def _log_decay(decay: Tensor) -> Tensor:
    """float64 log of the decay as the step sees it (rounded to its dtype).

    A decay of exactly 0 maps to the floor with a zero gradient (not ``0 * inf``):
    the chunked astrocyte, which differentiates through this log, gives such a
    channel a decay gradient of 0 where the loop gives ``sum_t dH_t . H_{t-1}``
    (``AMSU`` decays are ``exp(-dt / tau) > 0``, so modules never reach it).
    """
    d = decay.to(torch.float64)
    pos = d > 0
    lam = torch.log(torch.where(pos, d, torch.ones_like(d))).clamp(min=_LOG_DECAY_FLOOR)
    return torch.where(pos, lam, torch.full_like(lam, _LOG_DECAY_FLOOR))


_EXPONENT_CAP = 8.0  # largest |exponent| of a factorised decay power (see below)


def stable_chunk_size(log_decay: Tensor, chunk_size: int, dtype: torch.dtype) -> int:
    """Largest chunk size <= ``chunk_size`` whose factorised decay powers stay tame.

    With the midpoint factorisation the largest exponent is ``(C-1)/2 * max|log d|``;
    it is kept below ``E = min(log(finfo(dtype).max) / 4, 8)``. The first bound keeps
    every factor, and every product of two factors with an O(1) value, finite. The
    second bounds the cancellation in the decay's gradient: ``d/d log(gamma)`` is a
    sum of terms up to ``e^(2E)`` times larger than a term of size O(1) near the
    midpoint, which nearly cancel when ``gamma`` is near 0 (their sum is
    ``gamma * d/dgamma``). With ``E = 8`` a decay of 1e-6 runs in chunks of 2 and
    its gradient matches the loop's to 3e-4 relative in float32 (measured; with
    ``E = log(max)/4 = 22`` it was off by 0.4% to 6%, with the summation order). The cap shrinks chunks only for decays
    below ``exp(-16 / (chunk_size - 1))`` (0.776 at chunk 64: time constants under
    3.9 steps).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if log_decay.numel() == 0:
        return chunk_size
    worst = float(log_decay.detach().abs().max())
    if worst == 0.0:
        return chunk_size
    budget = min(math.log(torch.finfo(dtype).max) / 4, _EXPONENT_CAP)
    return max(1, min(chunk_size, 1 + int(2 * budget / worst)))


def _check_decay(decay: Tensor, name: str) -> None:
    if not decay.numel():
        return
    lo, hi = torch.aminmax(decay.detach())          # NaN anywhere makes both NaN
    lo, hi = float(lo), float(hi)
    if not (lo >= 0 and hi <= 1):
        raise ValueError(f"{name} must lie in [0, 1] (got min {lo:.4g}, max {hi:.4g})")


def _split_time(T: int, c: int) -> list[tuple[int, int, int]]:
    """[(start, stop, chunk)]: full chunks of c, then one chunk for the remainder."""
    n_full = (T // c) * c
    parts = []
    if n_full:
        parts.append((0, n_full, c))
    if n_full < T:
        parts.append((n_full, T, T - n_full))
    return parts


# ---------------------------------------------------------------- leaky integration

def leaky_step(u: Tensor, x: Tensor, decay: Tensor) -> Tensor:
    """One step of ``u <- decay * u + x``."""
    return decay * u + x


def leaky_loop(x: Tensor, decay: Tensor, u0: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Reference: apply :func:`leaky_step` over ``x`` ``[T, ..., N]``.

    Returns ``(u_seq [T, ..., N], u_T)``; ``decay`` broadcasts against ``x[t]``.
    """
    u = torch.zeros_like(x[0]) if u0 is None else u0
    out = []
    for x_t in x.unbind(0):  # unbind: one stack in backward, not T zero-filled slices
        u = leaky_step(u, x_t, decay)
        out.append(u)
    return (torch.stack(out) if out else x.clone()), u


def _decay_powers(decay: Tensor, x: Tensor, c: int) -> tuple[Tensor, Tensor]:
    """``decay^(i+1)`` for ``i < c`` (shape ``[c, *decay]`` aligned to ``x[t]``) and
    ``decay^c``, from float64 logs of the decay as rounded to ``x``'s dtype. Every
    exponent is >= 1, so every power lies in [0, 1]: nothing can overflow."""
    lam = _log_decay(decay.detach().to(x.dtype))
    lam = lam.reshape((1,) * (x.dim() - 1 - lam.dim()) + tuple(lam.shape))
    e = torch.arange(1, c + 1, dtype=torch.float64, device=x.device)
    pw = torch.exp(e.reshape(c, *[1] * lam.dim()) * lam).to(x.dtype)
    return pw, pw[-1]


def _scan_(y: Tensor, d: Tensor, pw: Tensor, u0: Tensor, c: int, reverse: bool,
           src: Tensor | None = None, add_last: Tensor | None = None) -> Tensor:
    """Overwrite ``y`` ``[T, ...]`` with ``y_t <- d * y_{t-1} + y_t`` (``y_{-1} = u0``), or
    with ``reverse`` ``y_t <- d * y_{t+1} + y_t`` (``y_T = u0``); returns the value at
    the end the recurrence ran to (``y_{T-1}``, or ``y_0`` with ``reverse``).

    Two levels, all in place, so the number of operations is ``c + T/c`` whatever the
    layer's width: (1) inside all chunks of ``c`` steps at once, ``c - 1`` fused
    multiply-adds over every chunk from a zero start; (2) the chunk starts by the short
    scan ``s <- d^c s + (local end of the chunk)``; (3) one pass adding ``d^(i+1) s`` to
    the ``i``-th step of each chunk. Steps outside the full chunks run one by one.
    Only non-negative powers of ``d`` appear (``pw``, all in [0, 1]).

    ``src``: read the inputs from ``src`` and write ``y`` (a fresh tensor of the same
    shape) without first copying ``src`` into it: the first step of each chunk is
    copied, the others written by ``addcmul(src_i, y_prev, d, out=y_i)`` (same
    arithmetic as the in-place form, one full read-and-write pass fewer).
    ``add_last`` (with ``reverse`` and ``src``): added to the input of step ``T - 1``.
    """
    T = y.shape[0]
    n = T // c
    h = T - n * c                        # steps outside the full chunks
    dc = pw[-1]
    if n:
        lo = h if reverse else 0
        yc = y[lo:lo + n * c].view(n, c, *y.shape[1:])
        order = range(c - 2, -1, -1) if reverse else range(1, c)
        step = 1 if reverse else -1
        if src is None:
            for i in order:
                yc[:, i].addcmul_(yc[:, i + step], d)
        else:
            sc = src[lo:lo + n * c].view(n, c, *src.shape[1:])
            first = c - 1 if reverse else 0
            yc[:, first].copy_(sc[:, first])
            if add_last is not None:       # step T - 1 is the first of the last chunk
                y[T - 1].add_(add_last)
            for i in order:
                torch.addcmul(sc[:, i], yc[:, i + step], d, out=yc[:, i])
        ends = yc[:, 0] if reverse else yc[:, c - 1]
        starts = torch.empty_like(ends)
        s = u0
        for m in (range(n - 1, -1, -1) if reverse else range(n)):
            starts[m] = s
            s = torch.addcmul(ends[m], dc, s)
        yc.addcmul_(pw.flip(0) if reverse else pw, starts.unsqueeze(1))
    if reverse:
        prev = y[h] if n else u0
        for t in range(h - 1, -1, -1):
            if src is None:
                y[t].addcmul_(prev, d)
            else:
                torch.addcmul(src[t], prev, d, out=y[t])
            prev = y[t]
        return y[0]
    prev = y[n * c - 1] if n else u0
    for t in range(n * c, T):
        if src is None:
            y[t].addcmul_(prev, d)
        else:
            torch.addcmul(src[t], prev, d, out=y[t])
        prev = y[t]
    return y[T - 1]


class _LeakyScan(torch.autograd.Function):
    """``u_t = d u_{t-1} + x_t`` by :func:`_scan_`, with the backward written out: the
    gradient of ``x`` is the same recurrence run backwards over the output gradient
    (one clone, one in-place scan), the gradient of the decay
    ``sum_t g_t u_{t-1}``, of ``u0`` ``d g_0``."""

    @staticmethod
    def forward(ctx, x, decay, u0, c):  # type: ignore[override]
        d = decay.to(x.dtype)
        pw, _ = _decay_powers(d, x, c)
        y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        _scan_(y, d, pw, u0, c, reverse=False, src=x)
        ctx.save_for_backward(y, decay, u0)
        ctx.c = c
        return y, y[-1].clone()

    @staticmethod
    def backward(ctx, g_seq, g_T):  # type: ignore[override]
        y, decay, u0 = ctx.saved_tensors
        c = ctx.c
        d = decay.to(y.dtype)
        pw, _ = _decay_powers(d, y, c)
        zero = torch.zeros((), dtype=y.dtype, device=y.device)
        if g_seq is None:
            g = torch.zeros_like(y)
            if g_T is not None:
                g[-1] += g_T
            _scan_(g, d, pw, zero, c, reverse=True)
        else:                              # out of place: no copy of g_seq first
            g = torch.empty(y.shape, dtype=y.dtype, device=y.device)
            _scan_(g, d, pw, zero, c, reverse=True, src=g_seq, add_last=g_T)
        need_x, need_d, need_u0, _ = ctx.needs_input_grad
        dd = du0 = None
        if need_d:
            acc = g[0] * u0
            if y.shape[0] > 1:
                acc = acc + torch.mul(g[1:], y[:-1]).sum(0)
            dd = acc.sum_to_size(decay.shape).to(decay.dtype)
        if need_u0:
            du0 = (g[0] * d).sum_to_size(u0.shape)
        return (g if need_x else None), dd, du0, None


def _leaky_start(x: Tensor, decay: Tensor, u0: Tensor | None, chunk_size: int) -> Tensor:
    """The checks of :func:`leaky_chunked`; the start state (expanded to one step of
    ``x`` where ``x`` has steps)."""
    _check_decay(decay, "decay")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    u = torch.zeros_like(x[0]) if u0 is None else u0
    if x.shape[0] == 0:
        return u
    u = u.expand_as(x[0]) if u.shape != x.shape[1:] else u
    if not broadcasts_into(decay.shape, u.shape):
        raise ValueError(f"decay of shape {list(decay.shape)} must broadcast to one step of "
                         f"the input, {list(u.shape)}, without widening it")
    return u


def leaky_chunked(x: Tensor, decay: Tensor, u0: Tensor | None = None,
                  chunk_size: int = 64) -> tuple[Tensor, Tensor]:
    """Parallel form of :func:`leaky_loop` (same arguments and results).

    On the CPU (float32, float64) it runs the step loop compiled by numba instead
    (:mod:`~astro_neuron.functional.compiled`, which says when and how to choose);
    ``chunk_size`` applies to the torch form. The torch form: an in-place two-level
    scan (see :func:`_scan_`): ``chunk_size + T / chunk_size`` small fused operations
    plus two full passes, forward and backward alike; only
    powers ``decay^e`` with ``e >= 1`` occur, so any decay in [0, 1] and any ``T`` is
    safe and the chunk size needs no shrinking.
    """
    return _leaky_run(x, decay, _leaky_start(x, decay, u0, chunk_size), chunk_size)


def _leaky_run(x: Tensor, decay: Tensor, u: Tensor, chunk_size: int) -> tuple[Tensor, Tensor]:
    """:func:`leaky_chunked` after its checks (``u`` from :func:`_leaky_start`)."""
    T = x.shape[0]
    if T == 0:
        return x.clone(), u
    if use_compiled(x):                  # CPU: the step loop compiled (compiled.py)
        return leaky_compiled(x, decay, u)
    return _LeakyScan.apply(x, decay, u, min(chunk_size, T))


def leaky_fire_chunked(x: Tensor, decay: Tensor, u0: Tensor | None, threshold: Tensor,
                       surrogate, chunk_size: int = 64) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`leaky_chunked` and binary spikes of its membrane: ``(spikes [T, ...],
    u_seq [T, ...], u_T)`` with spikes ``fire_levels(u_seq, threshold, surrogate)``.

    Where the membrane scan runs compiled (:func:`leaky_chunked`), the surrogate is
    :class:`~astro_neuron.functional.surrogate.ATan` and ``threshold``, of ``x``'s
    dtype, broadcasts to one step of ``x`` without widening it, the spikes are read off
    in the scan's own pass and their gradient turned into the membrane's inside the
    backward scan
    (:func:`~astro_neuron.functional.compiled.leaky_fire_compiled`): two to three
    passes over ``[T, ...]`` each way fewer. Otherwise the two run one after the other.
    """
    u = _leaky_start(x, decay, u0, chunk_size)
    if (x.shape[0] and type(surrogate) is ATan and isinstance(threshold, Tensor)
            and threshold.dtype == x.dtype and broadcasts_into(threshold.shape, u.shape)
            and use_compiled(x)):
        return leaky_fire_compiled(x, decay, u, threshold, surrogate.alpha)
    u_seq, u_T = _leaky_run(x, decay, u, chunk_size)      # checked above, not again
    return fire_levels(u_seq, threshold, surrogate), u_seq, u_T


# ---------------------------------------------------------------- astrocyte retention

def astro_step(H: Tensor, k: Tensor, v: Tensor, decay: Tensor) -> Tensor:
    """One step of ``H <- diag(decay) H + k v^T``.

    ``H`` ``[..., A, d_k, d_v]``, ``k`` ``[..., A, d_k]``, ``v`` ``[..., A, d_v]``,
    ``decay`` ``[A, d_k]``.
    """
    return decay[..., None] * H + k[..., :, None] * v[..., None, :]


def astro_read(H: Tensor, q: Tensor) -> Tensor:
    """Unscaled read-out ``H^T q``: ``[..., A, d_k, d_v] x [..., A, d_k] -> [..., A, d_v]``."""
    return torch.einsum("...kv,...k->...v", H, q)


def astro_loop(q: Tensor, k: Tensor, v: Tensor, decay: Tensor,
               H0: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Reference: step the astrocyte over ``[T, B, A, d]`` inputs.

    Returns ``(o_seq [T, B, A, d_v], H_T [B, A, d_k, d_v])`` with ``o_t = H_t^T q_t``.
    """
    T, B, A, dk = q.shape
    H = q.new_zeros(B, A, dk, v.shape[-1]) if H0 is None else H0
    out = []
    for q_t, k_t, v_t in zip(q.unbind(0), k.unbind(0), v.unbind(0)):
        H = astro_step(H, k_t, v_t, decay)
        out.append(astro_read(H, q_t))
    return (torch.stack(out) if out else q.new_zeros(0, B, A, v.shape[-1])), H


class _AstroChunks(torch.autograd.Function):
    """The chunked astrocyte scan with a hand-written backward.

    Forward, per chunk of C steps (batch dims (B, A, n)): ``qt = q * decay^(i-h)``,
    ``kt = k * decay^(h-j)``; intra-chunk ``tril(qt kt^T) v``; chunk contribution
    ``decay^(C-1-h) (kt^T v)``; carry ``H <- decay^C H + dH``; inter-chunk
    ``qt (decay^(h+1) H_start)``. The backward is the exact derivative of these
    operations, written with in-place masking and accumulating batched matmuls: it runs
    about half the full-size memory passes autograd would. The gradient of the decay
    comes from ``sum dqt * qt`` (the factors' own derivative) without a second pass over
    ``q``. Tested against the reference loop (values and gradients) and by gradcheck.
    """

    @staticmethod
    def forward(ctx, q, k, v, lam, H0, c):  # type: ignore[override]
        T, B, A, dk = q.shape
        dv = v.shape[-1]
        n = T // c
        dt = q.dtype
        # (T, B, A, d) -> (B, A, n, C, d), contiguous: each operand feeds two matmuls
        qc = q.reshape(n, c, B, A, dk).permute(2, 3, 0, 1, 4)
        kc = k.reshape(n, c, B, A, dk).permute(2, 3, 0, 1, 4)
        vc = v.reshape(n, c, B, A, dv).permute(2, 3, 0, 1, 4).contiguous()
        pos = torch.arange(c, dtype=torch.float64, device=q.device)[:, None]   # (C, 1)
        h = (c - 1) / 2
        lam_ = lam[:, None, :]                                                # (A, 1, dk)
        f_q = torch.exp(lam_ * (pos - h)).to(dt)[:, None]                     # (A,1,C,dk)
        f_k = torch.exp(lam_ * (h - pos)).to(dt)[:, None]
        qt = torch.empty(B, A, n, c, dk, dtype=dt, device=q.device)          # contiguous,
        kt = torch.empty_like(qt)                                             # one pass each
        torch.mul(qc, f_q, out=qt)
        torch.mul(kc, f_k, out=kt)
        S = torch.matmul(qt, kt.transpose(-1, -2)).tril_()                    # (B,A,n,C,C)
        o = torch.matmul(S, vc)                                               # intra-chunk
        KV = torch.matmul(kt.transpose(-1, -2), vc)                           # (B,A,n,dk,dv)
        rho = torch.exp(lam * (c - 1 - h)).to(dt)[:, None, :, None]           # (A,1,dk,1)
        g = torch.exp(lam * c).to(dt)[..., None]                              # (A, dk, 1)
        eta = torch.exp(lam * (h + 1)).to(dt)[:, None, :, None]               # (A,1,dk,1)
        dH = KV * rho
        starts = torch.empty_like(KV)
        H = H0
        for m in range(n):                          # carry: one short scan over chunks
            starts[:, :, m] = H
            H = torch.addcmul(dH[:, :, m], g, H)
        Hs = starts * eta
        o.view(-1, c, dv).baddbmm_(qt.view(-1, c, dk), Hs.view(-1, dk, dv))  # inter-chunk
        ctx.save_for_backward(qt, kt, vc, S, KV, starts, lam)
        ctx.c = c
        return o.permute(2, 3, 0, 1, 4).reshape(T, B, A, dv), H

    @staticmethod
    def backward(ctx, d_o, d_HT):  # type: ignore[override]
        qt, kt, vc, S, KV, starts, lam = ctx.saved_tensors
        c = ctx.c
        B, A, n, _, dk = qt.shape
        dv = vc.shape[-1]
        T = n * c
        dt = qt.dtype
        need_q, need_k, need_v, need_lam, need_H0, _ = ctx.needs_input_grad
        pos = torch.arange(c, dtype=torch.float64, device=qt.device)[:, None]
        h = (c - 1) / 2
        lam_ = lam[:, None, :]
        f_q = torch.exp(lam_ * (pos - h)).to(dt)[:, None]
        f_k = torch.exp(lam_ * (h - pos)).to(dt)[:, None]
        rho = torch.exp(lam * (c - 1 - h)).to(dt)[:, None, :, None]
        g = torch.exp(lam * c).to(dt)[..., None]
        eta = torch.exp(lam * (h + 1)).to(dt)[:, None, :, None]
        dO = d_o.reshape(n, c, B, A, dv).permute(2, 3, 0, 1, 4).contiguous()
        flat = (-1,)
        # intra-chunk: o1 = tril(qt kt^T) v
        dS = torch.matmul(dO, vc.transpose(-1, -2)).tril_()
        dqt = torch.matmul(dS, kt)
        dkt = torch.matmul(dS.transpose(-1, -2), qt)
        dvc = torch.matmul(S.transpose(-1, -2), dO)
        # inter-chunk: o2 = qt (eta * starts)
        Hs = starts * eta
        dqt.view(*flat, c, dk).baddbmm_(dO.view(*flat, c, dv), Hs.view(*flat, dk, dv).transpose(1, 2))
        dHs = torch.matmul(qt.transpose(-1, -2), dO)                          # (B,A,n,dk,dv)
        d_starts = dHs * eta
        # carry, backwards: H_m = g H_{m-1} + dH_m, starts_m = H_{m-1}
        G = d_HT
        d_dH = torch.empty_like(KV)
        for m in range(n - 1, -1, -1):
            d_dH[:, :, m] = G
            G = torch.addcmul(d_starts[:, :, m], g, G)
        # chunk contribution: dH = rho * (kt^T v)
        dKV = d_dH * rho
        dkt.view(*flat, c, dk).baddbmm_(vc.view(*flat, c, dv), dKV.view(*flat, dk, dv).transpose(1, 2))
        dvc.view(*flat, c, dv).baddbmm_(kt.view(*flat, c, dk), dKV.view(*flat, dk, dv))
        dq = dk_ = dv_ = dlam = None
        if need_q:
            dq = torch.empty(T, B, A, dk, dtype=dt, device=qt.device)
            torch.mul(dqt, f_q, out=dq.view(n, c, B, A, dk).permute(2, 3, 0, 1, 4))
        if need_k:
            dk_ = torch.empty(T, B, A, dk, dtype=dt, device=qt.device)
            torch.mul(dkt, f_k, out=dk_.view(n, c, B, A, dk).permute(2, 3, 0, 1, 4))
        if need_v:
            dv_ = dvc.permute(2, 3, 0, 1, 4).reshape(T, B, A, dv)
        if need_lam:
            # every factor is exp(lam * e): d factor / d lam = e * factor, so the factors'
            # gradients reduce to sums of (gradient x factored tensor)
            # q's factors have exponent i - h, k's h - j. For a decay near 0 the two terms
            # nearly cancel (their difference is gamma * d/dgamma), so they are reduced
            # separately and accumulated in float64
            e_q = (pos - h).to(torch.float64)                                  # (C, 1)
            f64 = torch.float64
            if use_compiled(qt):          # CPU: one pass each, float64 products and sums
                gqk = chunk_decay_sums(dqt, qt, dkt, kt)                      # (A, C, dk)
                g_rho = state_decay_sums(dKV, KV)                             # (A, dk)
                g_eta = state_decay_sums(dHs, Hs)
                g_g = state_decay_sums(d_dH, starts) * g.squeeze(-1).to(f64)
            else:
                # (each reduction first over the leading batch dim alone, a contiguous
                # row sum, then over the rest in float64: 3x faster on CPU than one
                # reduction over non-adjacent dims, same float64 accumulation)
                gqk = (torch.mul(dqt, qt).sum(0, dtype=f64).sum(1)            # (A, C, dk)
                       - torch.mul(dkt, kt).sum(0, dtype=f64).sum(1))
                g_rho = (dKV * KV).sum(0, dtype=f64).sum((1, 3))              # (A, dk)
                g_eta = (dHs * Hs).sum(0, dtype=f64).sum((1, 3))
                # d/dg of the carry: sum over chunks of G_m * H_{m-1} (= d_dH * starts)
                dg = torch.mul(d_dH, starts).sum(2)                           # (B,A,dk,dv)
                g_g = (dg * g.squeeze(-1)[..., None]).sum((0, 3), dtype=f64)
            dlam = ((gqk * e_q).sum(1)
                    + (c - 1 - h) * g_rho + (h + 1) * g_eta + c * g_g)
        return dq, dk_, dv_, dlam, (G if need_H0 else None), None


def _astro_chunks(q: Tensor, k: Tensor, v: Tensor, lam: Tensor, H: Tensor,
                  c: int) -> tuple[Tensor, Tensor]:
    return _AstroChunks.apply(q, k, v, lam, H, c)


def astro_chunked(q: Tensor, k: Tensor, v: Tensor, decay: Tensor,
                  H0: Tensor | None = None, chunk_size: int = 64) -> tuple[Tensor, Tensor]:
    """Parallel form of :func:`astro_loop` (same arguments and results)."""
    _check_decay(decay, "decay")
    T, B, A, dk = q.shape
    H = q.new_zeros(B, A, dk, v.shape[-1]) if H0 is None else H0
    if T == 0:
        return q.new_zeros(0, B, A, v.shape[-1]), H
    lam = _log_decay(decay)
    c = stable_chunk_size(lam, chunk_size, q.dtype)
    parts = _split_time(T, c)
    if len(parts) == 1:                  # no slicing: a slice's backward is a zero-filled copy
        return _astro_chunks(q, k, v, lam, H, parts[0][2])
    outs = []
    for start, stop, cc in parts:
        o, H = _astro_chunks(q[start:stop], k[start:stop], v[start:stop], lam, H, cc)
        outs.append(o)
    return torch.cat(outs), H


# ---------------------------------------------------------------- input-dependent retention


def astro_gated_loop(q: Tensor, k: Tensor, v: Tensor, log_decay: Tensor,
                     H0: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Reference: ``H_t = diag(exp(log_decay_t)) H_{t-1} + k_t v_t^T``, ``o_t = H_t^T q_t``,
    with a decay per step: ``log_decay`` ``[T, B, A, d_k]`` (<= 0). Returns
    ``(o_seq [T, B, A, d_v], H_T)``."""
    T, B, A, dk = q.shape
    H = q.new_zeros(B, A, dk, v.shape[-1]) if H0 is None else H0
    out = []
    for q_t, k_t, v_t, l_t in zip(q.unbind(0), k.unbind(0), v.unbind(0), log_decay.unbind(0)):
        H = astro_step(H, k_t, v_t, torch.exp(l_t))
        out.append(astro_read(H, q_t))
    return (torch.stack(out) if out else q.new_zeros(0, B, A, v.shape[-1])), H


def _gated_chunks(q: Tensor, k: Tensor, v: Tensor, lg: Tensor, H: Tensor,
                  c: int) -> tuple[Tensor, Tensor]:
    """:func:`astro_gated_chunked` over ``T = n * c`` steps (differentiated by autograd).

    Per chunk, ``b_i = sum_{s <= i} lg_s`` (the cumulative log-decay from the chunk's
    start, <= 0, non-increasing). Intra-chunk: ``exp(b_i - b_j)`` factorised around the
    chunk's midpoint ``h`` as ``exp(b_i - b_h) exp(b_h - b_j)``, one masked matrix
    product; the caller picks ``c`` so that ``|b_i - b_h| <= E``. Carry and inter-chunk
    read-out use only exponents <= 0: ``exp(b_last - b_j)``, ``exp(b_i)``.
    """
    T, B, A, dk = q.shape
    dv = v.shape[-1]
    n = T // c

    def chunks(z: Tensor) -> Tensor:                      # (T, B, A, d) -> (B, A, n, C, d)
        return z.reshape(n, c, B, A, z.shape[-1]).permute(2, 3, 0, 1, 4)

    qc, kc, vc = chunks(q), chunks(k), chunks(v)
    b = chunks(lg).cumsum(3)                                             # (B, A, n, C, dk)
    bh = b[:, :, :, (c - 1) // 2:(c - 1) // 2 + 1]                       # midpoint
    S = torch.matmul(qc * torch.exp(b - bh), (kc * torch.exp(bh - b)).transpose(-1, -2))
    o = torch.matmul(S.tril(), vc)                                       # intra-chunk
    last = b[:, :, :, -1:]                                               # (B, A, n, 1, dk)
    dH = torch.matmul((kc * torch.exp(last - b)).transpose(-1, -2), vc)  # (B, A, n, dk, dv)
    g = torch.exp(last).squeeze(3).unsqueeze(-1)                         # (B, A, n, dk, 1)
    starts = []
    for m in range(n):                                   # carry: one short scan over chunks
        starts.append(H)
        H = g[:, :, m] * H + dH[:, :, m]
    o = o + torch.matmul(qc * torch.exp(b), torch.stack(starts, 2))     # inter-chunk
    return o.permute(2, 3, 0, 1, 4).reshape(T, B, A, dv), H


def astro_gated_chunked(q: Tensor, k: Tensor, v: Tensor, log_decay: Tensor,
                        H0: Tensor | None = None,
                        chunk_size: int = 64) -> tuple[Tensor, Tensor]:
    """Parallel form of :func:`astro_gated_loop` (same arguments and results).

    The chunk size is cut, for this call, to ``1 + floor(2E / max|log_decay|)``
    (``E`` as in :func:`stable_chunk_size`), so every factorised exponent stays in
    ``[-E, E]`` whatever the gate did: the form is finite for any gate and any ``T``
    (no ``gamma^-t``), at some speed cost only when a step forgets nearly everything.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    T, B, A, dk = q.shape
    H = q.new_zeros(B, A, dk, v.shape[-1]) if H0 is None else H0
    if T == 0:
        return q.new_zeros(0, B, A, v.shape[-1]), H
    lg = log_decay.clamp(min=_LOG_DECAY_FLOOR, max=0.0)
    c = stable_chunk_size(lg, min(chunk_size, T), q.dtype)
    parts = _split_time(T, c)
    if len(parts) == 1:                  # no slicing (as in astro_chunked)
        return _gated_chunks(q, k, v, lg, H, parts[0][2])
    outs = []
    for start, stop, cc in parts:
        o, H = _gated_chunks(q[start:stop], k[start:stop], v[start:stop], lg[start:stop], H, cc)
        outs.append(o)
    return torch.cat(outs), H
