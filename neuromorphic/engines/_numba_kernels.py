"""The compiled time loops of the reference's fast form (numba).

:func:`neuromorphic.engines.numba_fast.run` splits a layer into what does not depend on the
layer's own state (the synaptic sums of all steps: one matrix product, done in NumPy)
and the per-step recurrence (requantization, decay rounded toward zero, saturation,
the astrocyte's ``k v^T`` and ``H^T q``, thresholds, resets). The recurrence is written
here as plain loops over steps and elements, compiled by numba: each step is the same
arithmetic as :func:`neuromorphic.engines.step.amsu_step` / :func:`~neuromorphic.engines.step.lif_step`,
in the same order, on float64 values that hold integers.

Why float64 and not int64: every value of the integer network stays below ``2**52``
(:meth:`QuantizedNetwork.validate` checks the worst case), so float64 sums and
products are exact, and the x86 vector units have float64 multiply, floor and
truncate but no 64-bit integer multiply or arithmetic shift (AVX2). The integer
operations map as follows (``n`` a shift, ``d`` a 12-bit decay):

* ``shr(x, n)`` = ``floor((x + half) * scale)`` with ``half = 2**(n-1)`` (0 for
  ``n <= 0``) and ``scale = 2**-n``: exact, since ``scale`` is a power of two
  (for ``n <= 0`` the floor is the identity on integers);
* ``rtz_decay(x, d)`` = ``trunc(x * ((4096 - d) / 4096))``: the factor and the
  product (at most 24 + 13 significant bits) are exact in float64, and ``trunc``
  rounds toward zero, as ``sign(p) * (|p| >> 12)``;
* ``sat24`` = ``min(max(x, -(2**23 - 1)), 2**23 - 1)``;
* ``H^T q`` is summed in a different order than ``np.einsum`` does, which changes
  nothing: every partial sum is an integer below ``2**52``.

The saturation counters add comparisons (0 or 1) rather than branch: clipping is frequent
and irregular in real networks, and mispredicted branches cost more than the
arithmetic (with branches, one benchmark layer took 8.1 ms instead of 3.5 ms).

The synaptic input ``buf`` may be float32: :func:`neuromorphic.engines.numba_fast.run` uses it
when every sum is below ``2**24`` (float32-exact), which halves the matrix product's
time; values are widened to float64 on load. Tests check the fast form against the
step form bit for bit, spikes, states and saturation counts.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["amsu_steps", "lif_steps", "SHIFT_SLOTS", "AMSU_COUNTS", "LIF_COUNTS"]

# rows of the ``shifts`` table handed to amsu_steps: (half, scale) per requantizing shift
SHIFT_SLOTS = ("i", "k", "v", "q", "kv", "r", "o", "ck", "cv", "k2", "q2")
# slots of the saturation counters (xk, xv: the delay line's inputs; k2, q2: the squares)
AMSU_COUNTS = ("u", "k", "v", "q", "H", "r", "o", "xk", "xv", "k2", "q2")
LIF_COUNTS = ("u_wrap", "v")
_I, _K, _V, _Q, _KV, _R, _O, _CKS, _CVS, _K2S, _Q2S = range(11)
_CU, _CK, _CV, _CQ, _CH, _CR, _CO, _CXK, _CXV, _CK2, _CQ2 = range(11)


@njit(cache=True, inline="always")
def _shr(x, half, scale):
    return np.floor((x + half) * scale)


@njit(cache=True, inline="always")
def _sat(x, lim):
    return min(max(x, -lim), lim)


@njit(cache=True, inline="always")
def _delayed_input(a, buf, t, b, off):
    """``a = buf[t - 1, b, off:off + len(a)]``, zero at ``t = 0``: the Dense's one-step
    delay (the neurons of step ``t`` receive the synaptic sums of step ``t - 1``)."""
    if t == 0:
        a[:] = 0.0
    else:
        for p in range(a.shape[0]):
            a[p] = buf[t - 1, b, off + p]


@njit(cache=True, inline="always")
def _line(x, c, taps, line):
    """One step of the delay line for channel ``c``: returns ``sum_j taps[j, c] x_{t-j}``
    and moves ``x`` into ``line[c]`` (``[K-1]``, oldest first; lag ``j`` at ``K-1-j``)."""
    K = taps.shape[0]
    acc = taps[0, c] * x
    for j in range(1, K):
        acc += taps[j, c] * line[c, K - 1 - j]
    for i in range(K - 2):
        line[c, i] = line[c, i + 1]
    line[c, K - 2] = x
    return acc


@njit(cache=True, nogil=True)
def amsu_steps(buf, b0, b1, off_I, off_K, off_V, off_Q, neuron_path, astrocyte, reset,
               levels, relu, square, m_u, bias, theta, shifts, opl, m_H, gain, lim, taps_k, taps_v,
               s_out, u_out, H_out, ck_out, cv_out, counts):  # pragma: no cover - compiled
    """All steps of an AM-SU layer, or of an independent part of it, for the sequences
    ``b0 .. b1 - 1`` of the batch.

    ``buf`` ``[T, B, P]``: the Dense accumulation after each step (the neurons of step
    ``t`` receive ``buf[t - 1]``, zero at ``t = 0``: the one-step delay); the part's
    inputs ``I``, ``K``, ``V``, ``Q`` start at ``off_X`` along its last axis. The part
    has ``N = len(theta)`` neurons and ``A = len(m_H)`` astrocytes (``dv = N / A``
    neurons each); given its synaptic input, an astrocyte and the neurons it reads out
    into depend on nothing else, so parts can run in parallel threads.
    ``m_u`` ``[N]`` = ``(4096 - du) / 4096``; ``bias`` ``[N]``; ``theta`` ``[N]`` =
    ``vth << 6``; ``shifts`` ``[11, 2]``: (half, scale) per :data:`SHIFT_SLOTS`;
    ``opl``: the operands' limit ``2**(b-1) - 1``; ``m_H`` ``[A, dk]``; ``gain`` ``[N]``;
    ``reset``: 0 none, 1 subtract, 2 zero. ``relu``: 0 none, 1 non-negative ``k``, ``q``
    (after the delay line; a negative value is not counted as clipped), 2 non-negative
    ``k`` alone (``sensing="relu-key"``: ``q`` signed); ``square`` (with ``relu`` 1):
    then ``sat_b(shr(k * k, shift_k2))``, the same for ``q``. ``taps_k``
    ``[K, A*dk]``, ``taps_v`` ``[K, N]``: the delay line's taps over the part's key and
    value channels (``K = 1``: no delay line; then ``k``, ``v`` are the projected
    operands). States start at zero. Writes
    ``s_out`` ``[T, B, N]`` and, when their first axis is not empty, ``u_out`` ``[T, B, N]``,
    ``H_out`` ``[T, B, A, dk, dv]`` and the delay line ``ck_out`` ``[T, B, A*dk, K-1]``,
    ``cv_out`` ``[T, B, N, K-1]`` (channel-major); adds the number of clipped values to
    ``counts`` (:data:`AMSU_COUNTS`).
    """
    T = buf.shape[0]
    N = theta.shape[0]
    A, dk = m_H.shape
    dv = N // A
    rec_u = u_out.shape[0] > 0
    rec_H = H_out.shape[0] > 0
    rec_c = ck_out.shape[0] > 0
    line = taps_k.shape[0] > 1
    lk = np.zeros((A * dk, max(taps_k.shape[0] - 1, 1)))   # the delay line, per channel
    lv = np.zeros((N, max(taps_k.shape[0] - 1, 1)))
    u = np.zeros(N)
    H = np.zeros((A, dk, dv))
    y = np.zeros(N)
    a = np.zeros(buf.shape[2])
    k = np.zeros(dk)
    q = np.zeros(dk)
    v = np.zeros(dv)
    r = np.zeros(dv)
    # the (half, scale) pairs as scalars: loop-invariant for the compiler
    h_i, c_i = shifts[_I, 0], shifts[_I, 1]
    h_k, c_k = shifts[_K, 0], shifts[_K, 1]
    h_v, c_v = shifts[_V, 0], shifts[_V, 1]
    h_q, c_q = shifts[_Q, 0], shifts[_Q, 1]
    h_kv, c_kv = shifts[_KV, 0], shifts[_KV, 1]
    h_r, c_r = shifts[_R, 0], shifts[_R, 1]
    h_o, c_o = shifts[_O, 0], shifts[_O, 1]
    h_ck, c_ck = shifts[_CKS, 0], shifts[_CKS, 1]
    h_cv, c_cv = shifts[_CVS, 0], shifts[_CVS, 1]
    h_k2, c_k2 = shifts[_K2S, 0], shifts[_K2S, 1]
    h_q2, c_q2 = shifts[_Q2S, 0], shifts[_Q2S, 1]
    for b in range(b0, b1):
        u[:] = 0.0
        H[:] = 0.0
        lk[:] = 0.0
        lv[:] = 0.0
        for t in range(T):
            _delayed_input(a, buf, t, b, 0)
            # membrane: u = sat24(rtz_decay(u, du) + shr(a_I, shift_i) + bias)
            if neuron_path:
                c = 0
                for n in range(N):
                    x = np.trunc(u[n] * m_u[n]) + _shr(a[off_I + n], h_i, c_i) + bias[n]
                    c += abs(x) > lim
                    u[n] = _sat(x, lim)
                    y[n] = u[n]
                counts[_CU] += c
            else:
                y[:] = 0.0
            if astrocyte:
                for ai in range(A):
                    # operands k, q [dk] and v [dv]: sat_b(shr(a_X, shift_X)); with the
                    # delay line, k and v are sat_b(shr(sum_j taps_j x_{t-j}, shift_cX))
                    # of those (x: sat_b(shr(a_X, shift_X)))
                    ck = cq = cv = cxk = cxv = ck2 = cq2 = 0
                    for j in range(dk):
                        x = _shr(a[off_K + ai * dk + j], h_k, c_k)
                        if line:
                            cxk += abs(x) > opl
                            x = _shr(_line(_sat(x, opl), ai * dk + j, taps_k, lk), h_ck, c_ck)
                        if relu:
                            x = max(x, 0.0)
                        ck += abs(x) > opl
                        k[j] = _sat(x, opl)
                        x = _shr(a[off_Q + ai * dk + j], h_q, c_q)
                        if relu == 1:
                            x = max(x, 0.0)
                        cq += abs(x) > opl
                        q[j] = _sat(x, opl)
                        if square:     # sensing="relu2": the squares, requantized
                            x = _shr(k[j] * k[j], h_k2, c_k2)
                            ck2 += abs(x) > opl
                            k[j] = _sat(x, opl)
                            x = _shr(q[j] * q[j], h_q2, c_q2)
                            cq2 += abs(x) > opl
                            q[j] = _sat(x, opl)
                    for i in range(dv):
                        x = _shr(a[off_V + ai * dv + i], h_v, c_v)
                        if line:
                            cxv += abs(x) > opl
                            x = _shr(_line(_sat(x, opl), ai * dv + i, taps_v, lv), h_cv, c_cv)
                        cv += abs(x) > opl
                        v[i] = _sat(x, opl)
                        r[i] = 0.0
                    counts[_CK] += ck
                    counts[_CQ] += cq
                    counts[_CV] += cv
                    counts[_CXK] += cxk
                    counts[_CXV] += cxv
                    counts[_CK2] += ck2
                    counts[_CQ2] += cq2
                    # H = sat24(rtz_decay(H, dH) + shr(k v^T, shift_kv)); r = H^T q
                    c = 0
                    for j in range(dk):
                        m, kj, qj = m_H[ai, j], k[j], q[j]
                        for i in range(dv):
                            x = np.trunc(H[ai, j, i] * m) + _shr(kj * v[i], h_kv, c_kv)
                            c += abs(x) > lim
                            x = _sat(x, lim)
                            H[ai, j, i] = x
                            r[i] += x * qj
                    counts[_CH] += c
                    # o = sat24(shr(sat24(shr(r, shift_r)) * gain, shift_o)); y = u + o
                    cr = co = 0
                    for i in range(dv):
                        x = _shr(r[i], h_r, c_r)
                        cr += abs(x) > lim
                        n = ai * dv + i
                        x = _shr(_sat(x, lim) * gain[n], h_o, c_o)
                        co += abs(x) > lim
                        y[n] += _sat(x, lim)
                    counts[_CR] += cr
                    counts[_CO] += co
                if rec_H:
                    H_out[t, b] = H
                if rec_c:
                    ck_out[t, b] = lk
                    cv_out[t, b] = lv
            # spikes: s = number of levels l in 1..L with y > l * theta; then the reset
            c = 0
            for n in range(N):
                s = 0
                for level in range(1, levels + 1):
                    s += y[n] > level * theta[n]
                s_out[t, b, n] = s
                if neuron_path and reset == 1:     # subtract (a no-op where s = 0)
                    x = u[n] - s * theta[n]
                    c += abs(x) > lim
                    u[n] = _sat(x, lim)
                elif neuron_path and reset == 2:   # zero
                    u[n] = u[n] if s == 0 else 0.0
            counts[_CU] += c
            if rec_u:
                u_out[t, b] = u


@njit(cache=True, nogil=True)
def lif_steps(buf, b0, b1, off, act_scale, m_u, m_v, bias, theta, lim,
              s_out, u_out, v_out, counts):  # pragma: no cover - compiled
    """All steps of a stock-LIF layer (Lava's ``PyLifModelBitAcc``), or of a part of
    its neurons (each is independent), for the sequences ``b0 .. b1 - 1``.

    ``buf`` ``[T, B, P]`` as for :func:`amsu_steps`; the part's ``N = len(bias)``
    inputs start at ``off``. ``act_scale`` = ``2**6``; ``m_u`` = ``(4096 - (du + 1)) /
    4096``; ``m_v`` = ``(4096 - dv) / 4096``; ``bias`` ``[N]``; ``theta`` = ``vth << 6``.
    Writes ``s_out`` ``[T, B, N]`` and, when not empty, ``u_out``, ``v_out``; counts
    wraps of ``u`` and clips of ``v`` (:data:`LIF_COUNTS`).
    """
    T = buf.shape[0]
    N = bias.shape[0]
    rec = u_out.shape[0] > 0
    top = 2.0 ** 23
    u = np.zeros(N)
    v = np.zeros(N)
    a = np.zeros(N)
    for b in range(b0, b1):
        u[:] = 0.0
        v[:] = 0.0
        for t in range(T):
            _delayed_input(a, buf, t, b, off)
            n_wrap = 0
            n_sat = 0
            for n in range(N):
                # u = wrap24(rtz_decay(u, du + 1) + (a << 6)), without branches:
                # subtract 2**24 above 2**23, add it at or below -2**23
                x = np.trunc(u[n] * m_u) + a[n] * act_scale
                above = x > top
                below = x <= -top
                n_wrap += above + below
                x += 2.0 * top * (below - above)
                u[n] = x
                # v = sat24(rtz_decay(v, dv) + u + bias); s = v > theta; v[s] = 0
                x = np.trunc(v[n] * m_v) + x + bias[n]
                n_sat += abs(x) > lim
                x = _sat(x, lim)
                s = x > theta
                s_out[t, b, n] = s
                v[n] = 0.0 if s else x
            counts[0] += n_wrap
            counts[1] += n_sat
            if rec:
                u_out[t, b] = u
                v_out[t, b] = v
