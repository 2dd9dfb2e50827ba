"""The definition of the AM-SU: one step, in four pieces (equations: docs/model.md).

* :func:`project`        ``x -> (I, k, v, q)``: the fused input projection, split by
  ``spec.parts`` (I | K | V | Q, then G and E where the options need them);
* :func:`readout`        the astrocyte's output ``g_astro * o`` from ``H^T q``
  (scaled by ``1/sqrt(d_k)``, or RMS-normalised per astrocyte with ``readout_norm="rms"``);
* :func:`fire`           spikes of the drive ``u + o``;
* :func:`reset_membrane` the reset after spikes;

and the options of the astrocyte's input: :func:`delay_line` (``conv_size > 1``: a short
causal filter on ``k`` and ``v``, the pre-synaptic delay line), :func:`sense`
(``sensing="relu"`` / ``"relu2"`` / ``"relu-key"``: non-negative ``k`` and ``q``,
their squares, or a non-negative ``k`` alone), :func:`log_gate` (``retention``
"gated"/"selective": the input-dependent retention ``g_t``) and :func:`activity` with
:func:`turn` (``clock="activity"``: the astrocyte's activity ``a_t``, which advances the
phase that turns its keys and queries and scales what it writes).

:func:`dynamics_step` composes them into one step from projected inputs; every other
form (:mod:`.naive`, :mod:`.chunk`, :mod:`.decode`) computes the same numbers.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from astro_neuron.functional.amsu.spec import (
    READOUT_EPS, AMSUOutput, AMSUParams, AMSUSpec, AMSUState,
)
from astro_neuron.functional.compiled import rms_readout_compiled, use_compiled
from astro_neuron.functional.rotary import phase_table, rotary, rotate
from astro_neuron.functional.scan import astro_read, astro_step, leaky_step
from astro_neuron.functional.surrogate import fire_levels

__all__ = ["project", "project_all", "delay_line", "sense", "log_gate", "activity", "turn",
           "astro_decay", "readout", "fire", "reset_membrane", "dynamics_step"]


class _LinearSplit(torch.autograd.Function):
    """``x W^T`` split along the output features, with a backward that accumulates
    ``grad_x`` block by block (``addmm_``) and writes each block of ``grad_W`` in
    place, instead of first concatenating the blocks' gradients (a full-size copy)."""

    @staticmethod
    def forward(ctx, x, weight, sizes):  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.sizes = sizes
        return tuple(F.linear(x, weight).split(sizes, dim=-1))

    @staticmethod
    def backward(ctx, *grads):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        x2 = x.reshape(-1, x.shape[-1])
        need_x, need_w = ctx.needs_input_grad[:2]
        gx = None
        gw = torch.zeros_like(weight) if need_w else None
        off = 0
        for g, n in zip(grads, ctx.sizes):
            if g is not None:
                g2 = g.reshape(-1, n)
                w = weight[off:off + n]
                if need_x:
                    gx = g2 @ w if gx is None else gx.addmm_(g2, w)
                if need_w:
                    torch.mm(g2.t(), x2, out=gw[off:off + n])
            off += n
        if need_x:
            gx = torch.zeros_like(x) if gx is None else gx.reshape(x.shape)
        return gx, gw, None


def project(x: Tensor, p: AMSUParams, spec: AMSUSpec):
    """Input projections of ``x`` ``[..., in]`` -> ``(I, k, v, q)``.

    ``I`` ``[..., N]`` (None without neuron path); ``k, q`` ``[..., A, d_k]`` and
    ``v`` ``[..., A, d_v]`` (None without astrocyte). The delay line is not applied
    here (it needs the state: :func:`delay_line`).
    """
    return project_all(x, p, spec)[:4]


def project_all(x: Tensor, p: AMSUParams, spec: AMSUSpec):
    """:func:`project`, the retention gate's pre-activation and the activity's:
    ``(I, k, v, q, z_g, z_e)``, ``z_g = W_G x + b_G`` ``[..., A, d_k]`` (None unless
    ``spec.gated``), ``z_e = W_E x + b_E`` ``[..., A]`` (None unless ``clock="activity"``)."""
    sizes = [n for _, n in spec.parts]
    if len(sizes) == 1:
        z = (F.linear(x, p.weight),)
    else:
        z = _LinearSplit.apply(x, p.weight, sizes)
    chunks = dict(zip((name for name, _ in spec.parts), z))
    lead = x.shape[:-1]
    A = spec.n_astrocytes
    I = chunks.get("I")
    if I is not None:
        if p.bias is not None:
            I = I + p.bias
        if spec.synapse == "sigmoid":
            I = torch.sigmoid(I)
    k = v = q = zg = None
    if spec.astrocyte:
        k = chunks["K"].reshape(*lead, A, spec.d_key)
        v = chunks["V"].reshape(*lead, A, spec.d_value)
        q = chunks["Q"].reshape(*lead, A, spec.d_key)
    if spec.gated:
        zg = chunks["G"].reshape(*lead, A, spec.d_key) + p.gate_bias
    ze = chunks["E"] + p.clock_bias if spec.activity_clock else None
    return I, k, v, q, zg, ze


def delay_line(k: Tensor, v: Tensor, buf: Tensor, w: Tensor, spec: AMSUSpec
               ) -> tuple[Tensor, Tensor, Tensor]:
    """The pre-synaptic delay line on what the astrocyte senses, over ``T >= 1`` steps.

    ``k`` ``[T, B, A, d_k]``, ``v`` ``[T, B, A, d_v]``; ``buf`` ``[B, K-1, A*d_k + N]``
    the last ``K - 1`` inputs (oldest first); ``w`` ``[K, A*d_k + N]`` the taps (row
    ``j``: lag ``j``). Per channel ``c``: ``y_t[c] = sum_j w[j, c] x_{t-j}[c]`` over the
    K | V channels ``x = (k, v)``. Returns the filtered ``(k, v)`` and the new ``buf``.
    The step (``T = 1``) and the whole sequence compute the same sums in the same order.
    """
    T = k.shape[0]
    K = w.shape[0]
    x = torch.cat([k.flatten(-2), v.flatten(-2)], -1)                     # (T, B, C)
    full = torch.cat([buf.transpose(0, 1), x], 0)                         # (K-1+T, B, C)
    y = full[K - 1:K - 1 + T] * w[0]
    for j in range(1, K):
        y = y + full[K - 1 - j:K - 1 - j + T] * w[j]
    n_k = spec.n_astrocytes * spec.d_key
    new_buf = full[T:].transpose(0, 1)
    return (y[..., :n_k].reshape(k.shape), y[..., n_k:].reshape(v.shape), new_buf)


def sense(k: Tensor, q: Tensor, spec: AMSUSpec) -> tuple[Tensor, Tensor]:
    """What the astrocyte senses and reads with: ``(k, q)`` unchanged (``sensing=
    "identity"``, the paper), ``(max(k, 0), max(q, 0))`` (``"relu"``: non-negative, as
    a concentration is; the feature map of linear attention) or their squares
    (``"relu2"``: a cooperative response, Hill coefficient 2, whose kernel
    ``sum_i max(q_i, 0)^2 max(k_i, 0)^2`` is sharper, so different keys overlap less),
    or ``(max(k, 0), q)`` (``"relu-key"``: what it senses non-negative, what it reads with
    signed; with rotary channels a non-negative key and query are at most a quarter turn
    apart within a pair, a signed query any angle: docs/memory.md).
    Applied after the delay line and before the rotary positions, in every form."""
    if spec.sensing == "relu":
        return torch.relu(k), torch.relu(q)
    if spec.sensing == "relu-key":
        return torch.relu(k), q
    if spec.sensing == "relu2":
        return torch.relu(k).square(), torch.relu(q).square()
    return k, q


def log_gate(zg: Tensor, spec: AMSUSpec) -> Tensor:
    """``log g_t = log sigmoid(z_g) / gate_temperature`` (<= 0): the log of the
    input-dependent retention (``spec.gated``)."""
    return F.logsigmoid(zg) / spec.gate_temperature


def activity(ze: Tensor, spec: AMSUSpec) -> Tensor:
    """The astrocyte's activity ``a_t = softplus(z_e)`` (> 0; ``clock="activity"``): how
    far its phase advances this step and how strongly it writes. Mamba's step size
    ``Delta_t``, one per astrocyte. With ``clock_threshold`` ``theta > 0``:
    ``max(softplus(z_e) - theta, 0)``, exactly 0 below the threshold."""
    a = F.softplus(ze)
    if spec.clock_threshold:
        a = torch.clamp(a - spec.clock_threshold, min=0.0)
    return a


def turn(k: Tensor, q: Tensor, phase: Tensor, a: Tensor, spec: AMSUSpec
         ) -> tuple[Tensor, Tensor]:
    """``clock="activity"``: ``k`` and ``q`` ``[..., A, d_k]`` turned by the phase
    ``[..., A]`` (float64; :func:`~astro_neuron.functional.rotary.phase_table`: the
    rotary channels at frequencies ``clock_rate * 2 pi f / n_rot``), and the key scaled by the
    activity ``a`` ``[..., A]`` (what the astrocyte writes)."""
    cos, sin = phase_table(phase, spec.d_key, spec.rotary_dims, k.dtype, spec.clock_rate)
    return rotate(k, cos, sin) * a[..., None], rotate(q, cos, sin)


def astro_decay(lg: Optional[Tensor], k: Tensor, p: AMSUParams, spec: AMSUSpec,
                a: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """The decay of one step and the key written: ``(gamma, k)`` for the fixed
    retention; ``(gamma * g_t, k)`` gated; ``(gamma * g_t, (1 - g_t) * k)`` selective.
    With ``decay_clock="activity"`` ``gamma ** a_t`` (``a`` ``[..., A]``) takes the
    place of ``gamma``."""
    gamma = p.gamma
    if spec.activity_decay:
        gamma = torch.exp(a[..., None] * torch.log(gamma))
    if not spec.gated:
        return gamma, k
    g = torch.exp(lg)
    if spec.retention == "selective":
        k = k * -torch.expm1(lg)
    return gamma * g, k


def readout(o_raw: Tensor, p: AMSUParams, spec: AMSUSpec) -> Tensor:
    """The astrocyte output ``g_astro * o`` ``[..., N]`` from ``H^T q`` ``[..., A, d_v]``.

    ``readout_norm="none"``: ``o = H^T q / sqrt(d_k)``; ``"rms"``: each astrocyte's
    ``d_v`` outputs divided by their root mean square (eps :data:`READOUT_EPS`), so the
    read-out stays O(1) however many tokens a slow astrocyte has summed. On the CPU the
    RMS read-out runs as one compiled pass each way (:mod:`~astro_neuron.functional.compiled`).
    """
    if spec.readout_norm == "rms":
        gain = p.astro_gain
        if (o_raw.numel() and isinstance(gain, Tensor) and gain.dim() <= 1
                and gain.dtype == o_raw.dtype and use_compiled(o_raw)):
            return rms_readout_compiled(o_raw, gain, READOUT_EPS)
        return F.rms_norm(o_raw, (spec.d_value,), eps=READOUT_EPS).flatten(-2) * p.astro_gain
    return o_raw.flatten(-2) * (p.astro_gain / math.sqrt(spec.d_key))


def fire(y: Tensor, threshold: Tensor, spec) -> Tensor:
    """Spikes of the drive ``y = u + o``: ``sum_l Theta(y - l * theta)``, l = 1..L.

    Binary (L = 1) is ``Theta(y - theta)`` with the strict ``>``; graded spikes count
    the levels crossed (equal to ``clamp(floor(y/theta), 0, L)`` except exactly on
    a level, where the strict comparison does not count it). The non-spiking twin
    replaces each step by the surrogate's smooth primitive.

    ``spec`` is any neuron spec (:class:`AMSUSpec`, :class:`~astro_neuron.functional.lif.LIFSpec`):
    it supplies ``surrogate``, ``spiking`` and ``spike_levels``.
    """
    sg = spec.surrogate
    if spec.spiking:
        return fire_levels(y, threshold, sg, spec.spike_levels)
    f = sg.primitive
    s = f(y - threshold)
    for level in range(2, spec.spike_levels + 1):
        s = s + f(y - level * threshold)
    return s


def reset_membrane(u: Tensor, s: Tensor, threshold: Tensor, spec) -> Tensor:
    """Reset after spikes ``s``: none, subtract ``s * theta``, or set to zero.

    ``spec`` supplies ``reset`` and ``detach_reset``.
    """
    if spec.reset == "none":
        return u
    sd = s.detach() if spec.detach_reset else s
    if spec.reset == "subtract":
        return u - sd * threshold
    return u * (1 - sd.clamp(max=1))


def dynamics_step(I: Optional[Tensor], k: Optional[Tensor], v: Optional[Tensor],
                  q: Optional[Tensor], state: AMSUState, p: AMSUParams,
                  spec: AMSUSpec, zg: Optional[Tensor] = None, ze: Optional[Tensor] = None
                  ) -> tuple[AMSUOutput, AMSUState]:
    """One step of the unit from already-projected inputs (``[B, ...]``); ``zg``: the
    retention gate's pre-activation (``spec.gated``); ``ze``: the activity's
    (``clock="activity"``)."""
    if spec.neuron_path:
        u = leaky_step(state.u, I, p.beta)
    else:
        u = state.u
    H = state.H
    conv = state.conv if len(state) > 3 else None
    phase = state.phase if len(state) > 4 else None
    if spec.astrocyte:
        if spec.conv_size > 1:
            k, v, conv = delay_line(k[None], v[None], conv, p.conv, spec)
            k, v = k[0], v[0]
        k, q = sense(k, q, spec)
        if spec.activity_clock:
            a = activity(ze, spec)
            phase = phase + a.to(phase.dtype)                      # float64
            k, q = turn(k, q, phase, a, spec)
        elif spec.rotary:
            k = rotary(k[None], state.t, spec.rotary_base, spec.rotary_dims)[0]
            q = rotary(q[None], state.t, spec.rotary_base, spec.rotary_dims)[0]
        if spec.linear_astro:
            decay, k = astro_decay(log_gate(zg, spec) if spec.gated else None, k, p, spec,
                                   a if spec.activity_clock else None)
            H = astro_step(H, k, v, decay)
            o = astro_read(H, q)
        else:
            o, H = spec.astro_model.step(H, k, v, q)
        o = readout(o, p, spec)
    else:
        o = torch.zeros_like(u)
    s = fire(u + o, p.threshold, spec)
    u_next = reset_membrane(u, s, p.threshold, spec) if spec.neuron_path else u
    return AMSUOutput(s, u, o), AMSUState(u_next, H, state.t + 1, conv, phase)
