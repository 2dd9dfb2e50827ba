"""The fused one-step form of the AM-SU used for generation (token-by-token decoding).

The same equations as :func:`~.step.dynamics_step` with the spikes left to the caller
(the language model reads them out event by event), written for the smallest number
of dispatches per token: the parameters are folded once into :class:`DecodeTensors`
(:func:`fuse`: the projection transposed with its rows reordered I | V | K | Q so that
one rotary turns K and Q together, an input gain folded in, the read-out scale ready),
and :func:`decode_step` advances the state ``(u, H)`` *in place*. It runs eagerly or
under ``torch.compile(fullgraph=True)`` (static shapes, no Python-side state).

Rotary positions come in as the rows ``C, S`` of the position (:func:`rotary_rows`):
``rotary(x, t) == x * C[t] + swap_halves(x) * S[t]``.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
from torch import Tensor

import torch.nn.functional as F

from astro_neuron.functional.amsu.spec import (
    READOUT_EPS, RETENTIONS, AMSUParams, AMSUSpec, split_rows,
)
from astro_neuron.functional.rotary import phase_table, rotary_angles

__all__ = ["DECODE_ORDER", "DecodeShape", "DecodeTensors", "rms", "rotary_rows",
           "decode_shape", "fuse", "decode_step"]

DECODE_ORDER = ("I", "V", "K", "Q", "G", "E")    # K, Q adjacent: one rotary turns both


class DecodeShape(NamedTuple):
    """Static sizes and options of the decode step of one layer."""

    N: int                              # neurons
    A: int                              # astrocytes
    dk: int                             # key size per astrocyte
    dv: int                             # neurons per astrocyte
    inv_dv: float                       # 1 / dv
    n_I: int                            # rows of I in the fused projection (0: no neuron path)
    kq0: int                            # first row of K in the fused projection
    astro: bool                         # astrocyte on
    rms: bool                           # readout_norm == "rms"
    conv: int = 1                       # taps of the delay line (1: none)
    gated: int = 0                      # retention: 0 fixed, 1 gated, 2 selective
    gate_temp: float = 16.0             # gate_temperature
    relu: bool = False                  # sensing "relu" or "relu2": k, q <- max(k, 0), max(q, 0)
    square: bool = False                # sensing == "relu2": then k, q <- k^2, q^2
    clock: bool = False                 # clock == "activity": the phase turns k, q
    n_rot: int = 0                      # rotary channels (clock == "activity")
    key_only: bool = False              # sensing == "relu-key": max(k, 0) only, q signed
    clock_rate: float = 1.0             # clock == "activity": the frequencies' factor
    decay_clock: bool = False           # decay_clock == "activity": decay gamma ** a_t
    clock_threshold: float = 0.0        # clock == "activity": a_t = max(softplus - it, 0)


class DecodeTensors(NamedTuple):
    """Tensors of one layer's decode step (derived from the parameters, never trained)."""

    w_in: Tensor                        # (in, P) = (W * in_gain)^T, columns I|V|K|Q
    b_in: Optional[Tensor]              # (P,) bias of I (zeros for V, K, Q) or None
    beta: Tensor                        # (N,) membrane decay
    gamma: Tensor                       # (A, d_k, 1) astrocyte decays
    o_scale: Tensor                     # (N,) g_astro (/ sqrt(d_k) without the rms read-out)
    thr: Tensor                         # (N,) threshold
    eps: Tensor                         # () READOUT_EPS in the layer's dtype
    conv_w: Optional[Tensor] = None     # (K, A*d_k + N) delay-line taps, row i: lag K-1-i
    gate_b: Optional[Tensor] = None     # (A, d_k) bias of the retention gate
    clock_b: Optional[Tensor] = None    # (A,) bias of the activity clock


def rms(x: Tensor, eps: Tensor, inv_n: float) -> Tensor:
    """``F.rms_norm`` without gain over the last dim (``inv_n = 1 / x.shape[-1]``), in
    4 dispatches instead of about 12 (a decode step runs several per token)."""
    s = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    return x * torch.addcmul(eps, s, s, value=inv_n).rsqrt_()


def rotary_rows(positions: Tensor, dim: int, base: float, dtype: torch.dtype,
                n_rot: Optional[int] = None) -> tuple[Tensor, Tensor]:
    """``C = [cos, cos]`` and ``S = [-sin, sin]`` rows ``(len(positions), dim)`` for the
    rotary positions of :func:`decode_step`.

    ``rotary(x, t, n_rot=n_rot) == x * C[t] + swap_halves(x) * S[t]``; the angles come
    from :func:`~astro_neuron.functional.rotary.rotary_angles` (float64), the values
    the parallel form uses (pairs not rotated: ``C = 1``, ``S = 0``).
    """
    cos, sin = rotary_angles(positions, dim, base, n_rot)
    return torch.cat([cos, cos], -1).to(dtype), torch.cat([-sin, sin], -1).to(dtype)


def decode_shape(spec: AMSUSpec) -> DecodeShape:
    """The static part of :func:`decode_step` for layers of ``spec``."""
    if not spec.linear_astro or spec.reset != "none":
        raise ValueError("the fused decode step covers the linear astrocyte without reset "
                         f"(got astro_model={spec.astro_model!r}, reset={spec.reset!r}); "
                         "use amsu_step")
    n_I = spec.n_neurons if spec.neuron_path else 0
    return DecodeShape(spec.n_neurons, spec.n_astrocytes, spec.d_key, spec.d_value,
                       1.0 / spec.d_value, n_I, n_I + spec.n_neurons, spec.astrocyte,
                       spec.readout_norm == "rms", spec.conv_size,
                       RETENTIONS.index(spec.retention), float(spec.gate_temperature),
                       spec.sensing in ("relu", "relu2"), spec.sensing == "relu2",
                       spec.activity_clock, spec.rotary_dims, spec.sensing == "relu-key",
                       float(spec.clock_rate), spec.activity_decay,
                       float(spec.clock_threshold))


@torch.no_grad()
def fuse(p: AMSUParams, spec: AMSUSpec, in_gain: Optional[Tensor] = None) -> DecodeTensors:
    """Fold the parameters ``p`` of a layer into its decode tensors; ``in_gain`` ``(in,)``
    multiplies the input (a preceding RMSNorm's gain folded into the weight)."""
    rows = split_rows(p.weight, spec.parts)
    blocks = [rows[n] for n in DECODE_ORDER if n in rows]
    N = spec.n_neurons
    b_in = None
    if spec.neuron_path and p.bias is not None:
        b_in = torch.cat([p.bias, p.bias.new_zeros(sum(r.shape[0] for r in blocks) - N)])
    w = torch.cat(blocks)
    w_in = (w * in_gain).t() if in_gain is not None else w.t().contiguous()
    o_scale = p.astro_gain if spec.readout_norm == "rms" else p.astro_gain / math.sqrt(spec.d_key)
    return DecodeTensors(
        w_in=w_in, b_in=b_in, beta=p.beta.detach(),
        gamma=p.gamma.detach()[..., None].contiguous(), o_scale=o_scale.detach(),
        thr=p.threshold.detach(),
        eps=torch.tensor(READOUT_EPS, dtype=p.weight.dtype, device=p.weight.device),
        conv_w=None if p.conv is None else p.conv.detach().flip(0).contiguous(),
        gate_b=None if p.gate_bias is None else p.gate_bias.detach(),
        clock_b=None if p.clock_bias is None else p.clock_bias.detach())


def decode_step(x: Tensor, u: Tensor, H: Optional[Tensor], L: DecodeTensors, k: DecodeShape,
                C: Optional[Tensor], S: Optional[Tensor], buf: Optional[Tensor] = None,
                phase: Optional[Tensor] = None) -> Tensor:
    """One step of one layer: ``x`` ``(B, in)`` -> the drive ``y = u + g_astro o`` ``(B, N)``
    (spikes are ``fire(y, L.thr, spec)``). ``u`` ``(B, N)`` and ``H`` ``(B, A, d_k, d_v)``
    advance in place; ``C, S`` ``(d_k,)``: rotary rows of this step's position (None: no
    rotary); ``buf`` ``(B, K-1, A*d_k + N)``: the delay line (``conv_size = K > 1``; the
    state's ``conv``, K | V channels), advanced in place; ``phase`` ``(B, A)``: the
    activity clock (``clock="activity"``; then ``C, S`` are not used), advanced in place."""
    B = x.shape[0]
    z = torch.mm(x, L.w_in) if L.b_in is None else torch.addmm(L.b_in, x, L.w_in)
    if k.n_I:                                                      # z (B, P): I|V|K|Q
        u.mul_(L.beta).add_(z[:, :k.n_I])                          # u = beta u + I
    if not k.astro:
        return u
    nk = k.A * k.dk
    v = z[:, k.n_I:k.kq0].view(B, k.A, 1, k.dv)
    kq = z[:, k.kq0:k.kq0 + 2 * nk].view(B, 2, k.A, k.dk)
    if k.conv > 1:                                                 # delay line on k, v
        new = torch.cat([z[:, k.kq0:k.kq0 + nk], z[:, k.n_I:k.kq0]], 1)      # K | V now
        win = torch.cat([buf, new[:, None]], 1)
        buf.copy_(win[:, 1:])
        kv = (win * L.conv_w).sum(1)                               # (B, A d_k + N): K | V
        v = kv[:, nk:].view(B, k.A, 1, k.dv)
        kq = torch.stack([kv[:, :nk], z[:, k.kq0 + nk:k.kq0 + 2 * nk]], 1)
        kq = kq.view(B, 2, k.A, k.dk)
    if k.relu:                                                     # non-negative sensing
        kq = torch.relu(kq)
        if k.square:                                               # "relu2"
            kq = kq.square()
    elif k.key_only:                                               # "relu-key": k >= 0
        kq = torch.stack([torch.relu(kq[:, 0]), kq[:, 1]], 1)
    if k.clock:                                                    # the activity clock
        a = F.softplus(z[:, -k.A:] + L.clock_b)                    # (B, A), E rows last
        if k.clock_threshold:                                      # silent below it
            a = torch.clamp(a - k.clock_threshold, min=0.0)
        phase.add_(a.to(phase.dtype))                              # float64
        cos, sin = phase_table(phase, k.dk, k.n_rot, a.dtype, k.clock_rate)  # (B, A, d_k/2)
        C, S = torch.cat([cos, cos], -1)[:, None], torch.cat([-sin, sin], -1)[:, None]
    if C is not None:                                              # rotary at position t
        swapped = kq.view(B, 2, k.A, 2, k.dk // 2).flip(3).view(B, 2, k.A, k.dk)
        kq = torch.addcmul(kq * C, swapped, S)
    kw = kq[:, 0]                                                  # the key written
    if k.clock:                                                    # scaled by a_t
        kw = kw * a[..., None]
    gamma = L.gamma                                                # (A, d_k, 1)
    if k.decay_clock:                                              # gamma ** a_t
        gamma = torch.exp(a[:, :, None, None] * torch.log(gamma))  # (B, A, d_k, 1)
    if k.gated:                                                    # retention gamma * g_t
        g0 = k.kq0 + 2 * nk
        lg = F.logsigmoid(z[:, g0:g0 + nk].view(B, k.A, k.dk) + L.gate_b) / k.gate_temp
        if k.gated == 2:                                           # selective: (1 - g_t) k
            kw = kw * -torch.expm1(lg)
        H.mul_(gamma * torch.exp(lg).unsqueeze(-1)).addcmul_(kw.unsqueeze(-1), v)
    else:
        H.mul_(gamma).addcmul_(kw.unsqueeze(-1), v)                # H = diag(g) H + k v^T
    q = kq[:, 1].reshape(B * k.A, 1, k.dk)
    o = torch.bmm(q, H.view(B * k.A, k.dk, k.dv))                  # H^T q (B A, 1, d_v)
    if k.rms:
        o = rms(o, L.eps, k.inv_dv)
    return torch.addcmul(u, o.view(B, k.N), L.o_scale)             # u + g_astro o
