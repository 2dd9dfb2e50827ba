"""CPU kernels compiled by numba: the scans' and the AM-SU read-out's.

Three pieces of the AM-SU's chunked form run here on the CPU:

* **The membrane scan** ``u_t = beta * u_{t-1} + x_t`` (:func:`leaky_compiled`, used by
  :func:`~astro_neuron.functional.scan.leaky_chunked`). It is element-wise: each
  neuron's membrane depends only on its own past, so on the CPU the fastest form is the
  step loop itself, compiled: one pass over time, every neuron of a step in one
  vectorised inner loop. It reads the input once and writes the membrane once, where
  the torch form (:func:`~astro_neuron.functional.scan._scan_`) runs ``C + T / C``
  small operations and two full passes; the backward is the same loop run backwards,
  with the decay's gradient ``sum_t g_t u_{t-1}`` accumulated (in float64) in the same
  pass, reading each block of 16 steps in ascending order before running down it (a
  loop walking rows downwards ran 3-5x slower on the machine measured). Its arithmetic
  is the step's (``decay * u + x`` in the input's dtype), so its membrane equals
  :func:`~astro_neuron.functional.scan.leaky_loop`'s bit for bit. One thread: splitting
  the neurons over Python threads beside torch's own was slower or no faster on two
  cores (docs/benchmarks.md, "Sixth round").
* **The astrocyte scan's decay gradient** (:func:`chunk_decay_sums`,
  :func:`state_decay_sums`): the sums over batch and chunks of products of the
  factorised operands and their gradients, which torch forms as full-size products
  and then reduces in float64 (a slow, converting reduction); here one pass, products
  and sums in float64.
* **The RMS read-out** ``rms_norm(o) * g_astro`` (:func:`rms_readout_compiled`, used by
  :func:`~astro_neuron.functional.amsu.readout`): one pass each way where torch runs
  three to four, the row's sum of squares and the backward's sums in float64.

The backwards are not differentiable again (``once_differentiable``: a double
backward raises). Which is used is set by :func:`cpu_kernels`:

* ``"auto"`` (the default): these kernels for CPU tensors in float32 or float64, the
  torch forms otherwise (CUDA, half precision, or numba not importable);
* ``"torch"``: always the torch forms;
* ``"numba"``: always these kernels; a clear error where they cannot run.

The environment variable ``ASTRO_NEURON_CPU_KERNELS`` sets the starting value. In a
fresh install the first call of each kernel compiles it for its dtype (float32: the
membrane scan 1.5 s, the decay sums 0.7 s, the read-out 1.1 s), then they load from
numba's on-disk cache. See docs/benchmarks.md (issue 14).
"""

from __future__ import annotations

import math
from typing import Callable, ContextManager, NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from astro_neuron.functional.switch import Switch

__all__ = ["cpu_kernels", "set_cpu_kernels", "get_cpu_kernels", "available",
           "use_compiled", "leaky_compiled", "leaky_fire_compiled", "chunk_decay_sums",
           "state_decay_sums", "rms_readout_compiled"]

_BACKENDS = ("auto", "torch", "numba")
_DTYPES = (torch.float32, torch.float64)


_SWITCH = Switch("cpu kernels", "ASTRO_NEURON_CPU_KERNELS", _BACKENDS, "auto")
_BLOCK = 16                            # steps per block of the membrane scan's backward
_LINE = 16                             # elements between touches (a 64-byte line in float32)


class _Kernels(NamedTuple):
    """The compiled functions (see :func:`_load` for each one's arguments)."""

    leaky_forward: Callable
    leaky_backward: Callable
    chunk_sums: Callable
    state_sums: Callable
    rms_forward: Callable
    rms_backward: Callable
    fire_forward: Callable
    fire_backward: Callable


_kernels: _Kernels | None = None       # the compiled kernels once numba has imported
_load_error: str | None = None         # why numba did not import, once tried


def get_cpu_kernels() -> str:
    """The CPU kernels in use: ``"auto"``, ``"torch"`` or ``"numba"``."""
    return _SWITCH.get()


def set_cpu_kernels(backend: str) -> None:
    """Choose the CPU kernels (see the module's docstring)."""
    _SWITCH.set(backend)


def cpu_kernels(backend: str) -> ContextManager[None]:
    """``with cpu_kernels("torch"): ...`` runs the block with those kernels."""
    return _SWITCH.using(backend)


def _fits(x: Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype in _DTYPES


def use_compiled(x: Tensor) -> bool:
    """Whether the scans run these kernels on ``x``. ``"auto"`` falls back to torch's
    forms where numba does not import; ``"numba"`` raises a clear error for an input the
    kernels cannot take or without numba."""
    if _SWITCH.value == "torch":
        return False
    if _SWITCH.value == "auto":
        return _fits(x) and available()
    if not _fits(x):
        raise ValueError(
            f"the compiled CPU kernels (backend 'numba') run on CPU tensors in float32 or "
            f"float64, got a {x.dtype} tensor on {x.device.type}; use cpu_kernels('auto') "
            "or 'torch'")
    if not available():
        raise RuntimeError(f"the compiled CPU kernels (backend 'numba') need numba, which "
                           f"did not import here ({_load_error}); use cpu_kernels('torch')")
    return True


def available() -> bool:
    """Whether numba imports here (tried once; the kernels themselves compile lazily)."""
    global _load_error
    if _kernels is None and _load_error is None:
        try:
            _load()
        except ImportError as e:
            _load_error = f"{type(e).__name__}: {e}"
    return _kernels is not None


def _load() -> _Kernels:
    global _kernels
    if _kernels is None:
        from numba import njit   # deferred: numba's import costs ~0.3 s, paid at first use

        @njit(nogil=True, cache=True)
        def forward(x, d, u0, y):                # pragma: no cover - compiled
            u = u0.copy()                        # y[t] = d * y[t-1] + x[t], y[-1] = u0
            for t in range(x.shape[0]):
                xt, yt = x[t], y[t]
                for j in range(x.shape[1]):
                    u[j] = d[j] * u[j] + xt[j]
                    yt[j] = u[j]

        @njit(nogil=True, cache=True)
        def backward(g, gT, d, y, u0, gx, acc):  # pragma: no cover - compiled
            # blocks of _BLOCK steps, last block first; each block's rows are read once
            # in ascending order (one load per _LINE elements) before the loop runs down
            # them: on the machine measured, reading rows in descending order ran 3-5x
            # slower than ascending (docs/benchmarks.md, "Seventh round")
            G = gT.copy()                        # the final state's gradient joins step T - 1
            T, M = g.shape
            touched = 0.0
            for b in range((T + _BLOCK - 1) // _BLOCK - 1, -1, -1):
                t0 = b * _BLOCK
                t1 = min(T, t0 + _BLOCK)
                for t in range(max(t0 - 1, 0), t1):
                    gt, xt, yt = g[t], gx[t], y[t]
                    for j in range(0, M, _LINE):
                        touched += gt[j] + xt[j] + yt[j]
                for t in range(t1 - 1, t0 - 1, -1):
                    gt, xt = g[t], gx[t]
                    prev = y[t - 1] if t > 0 else u0   # y[-1] is the initial state
                    for j in range(M):
                        G[j] = G[j] + gt[j]
                        xt[j] = G[j]
                        acc[j] += G[j] * prev[j]
                        G[j] = d[j] * G[j]
            return touched

        @njit(nogil=True, cache=True)
        def fire_forward(x, d, u0, thr, y, s):   # pragma: no cover - compiled
            u = u0.copy()                        # forward above, plus s[t] = y[t] > thr
            for t in range(x.shape[0]):
                xt, yt, st = x[t], y[t], s[t]
                for j in range(x.shape[1]):
                    u[j] = d[j] * u[j] + xt[j]
                    yt[j] = u[j]
                    st[j] = u[j] > thr[j]

        @njit(nogil=True, cache=True, error_model="numpy")
        def fire_backward(gs, gy, has_gy, gT, d, thr, a, b, y, u0, gx, acc,
                          acc_thr):              # pragma: no cover - compiled
            # backward above, with the spikes' gradient turned into the membrane's on
            # the way: h = gs / (a + b e^2), e = y - thr (ATan's surrogate derivative
            # in Surrogate.grad_'s arithmetic); acc_thr sums h (the threshold's
            # gradient is its negation); gy is read only when has_gy
            G = gT.copy()
            T, M = gs.shape
            a, b = y.dtype.type(a), y.dtype.type(b)
            touched = 0.0
            for blk in range((T + _BLOCK - 1) // _BLOCK - 1, -1, -1):
                t0 = blk * _BLOCK
                t1 = min(T, t0 + _BLOCK)
                for t in range(max(t0 - 1, 0), t1):
                    st, xt, yt = gs[t], gx[t], y[t]
                    for j in range(0, M, _LINE):
                        touched += st[j] + xt[j] + yt[j]
                for t in range(t1 - 1, t0 - 1, -1):
                    st, xt, yt, gyt = gs[t], gx[t], y[t], gy[t]
                    prev = y[t - 1] if t > 0 else u0
                    for j in range(M):
                        e = yt[j] - thr[j]
                        h = st[j] / (a + b * e * e)
                        acc_thr[j] += h
                        if has_gy:               # the membrane's own gradient joins h
                            h = gyt[j] + h
                        G[j] = G[j] + h
                        xt[j] = G[j]
                        acc[j] += G[j] * prev[j]
                        G[j] = d[j] * G[j]
            return touched

        @njit(nogil=True, cache=True, error_model="numpy")
        def chunk_sums(a, b, c, d, out):         # pragma: no cover - compiled
            # out[A, C, K] = sum over (B, n) of a * b - c * d, in float64
            for i in range(a.shape[0]):
                for h in range(a.shape[1]):
                    for m in range(a.shape[2]):
                        for r in range(a.shape[3]):
                            o = out[h, r]
                            x, y, z, w = a[i, h, m, r], b[i, h, m, r], c[i, h, m, r], d[i, h, m, r]
                            for j in range(a.shape[4]):
                                o[j] += np.float64(x[j]) * y[j] - np.float64(z[j]) * w[j]

        @njit(nogil=True, cache=True, error_model="numpy")
        def state_sums(a, b, out):               # pragma: no cover - compiled
            # out[A, K] = sum over (B, n, V) of a * b, in float64
            for i in range(a.shape[0]):
                for h in range(a.shape[1]):
                    for m in range(a.shape[2]):
                        for r in range(a.shape[3]):
                            x, y = a[i, h, m, r], b[i, h, m, r]
                            acc = 0.0
                            for j in range(a.shape[4]):
                                acc += np.float64(x[j]) * y[j]
                            out[h, r] += acc

        @njit(nogil=True, cache=True, error_model="numpy")
        def rms_forward(x, gain, eps, y, r):     # pragma: no cover - compiled
            # rows x[i, a] of V values: r = (mean(x^2) + eps)^(-1/2) (float64 sum),
            # y = x * r * gain[a]
            V = x.shape[2]
            for i in range(x.shape[0]):
                for a in range(x.shape[1]):
                    xr, yr, g = x[i, a], y[i, a], gain[a]
                    ss = 0.0
                    for j in range(V):
                        ss += np.float64(xr[j]) * xr[j]
                    rr = xr.dtype.type(1.0 / np.sqrt(ss / V + eps))
                    r[i, a] = rr
                    for j in range(V):
                        yr[j] = xr[j] * rr * g[j]

        @njit(nogil=True, cache=True, error_model="numpy")
        def rms_backward(gy, x, gain, r, gx, ggain):   # pragma: no cover - compiled
            # gx = r gain gy - x r^3 mean(gain gy x); ggain += gy x r (float64)
            V = x.shape[2]
            for i in range(x.shape[0]):
                for a in range(x.shape[1]):
                    xr, gr, g, rr = x[i, a], gy[i, a], gain[a], r[i, a]
                    acc, out = ggain[a], gx[i, a]
                    dot = 0.0
                    for j in range(V):
                        p = gr[j] * xr[j]
                        dot += np.float64(p) * g[j]
                        acc[j] += np.float64(p) * rr
                    c = xr.dtype.type(np.float64(rr) ** 3 * dot / V)
                    for j in range(V):
                        out[j] = rr * g[j] * gr[j] - xr[j] * c

        _kernels = _Kernels(forward, backward, chunk_sums, state_sums, rms_forward,
                            rms_backward, fire_forward, fire_backward)
    return _kernels


def _flatten(x: Tensor, u0: Tensor):
    """``(T, M, step_shape, x as (T, M), u0 as (M,))``: the membrane scan's input and
    initial state as the contiguous arrays its kernels read."""
    T, step_shape = x.shape[0], x.shape[1:]
    M = int(np.prod(step_shape, dtype=np.int64))
    return (T, M, step_shape, x.detach().reshape(T, M).contiguous(),
            u0.detach().reshape(M).contiguous())


def _per_step(t: Tensor, x: Tensor, step_shape, M: int) -> Tensor:
    """``t`` (a decay or threshold broadcasting against one step of ``x``) as the
    contiguous ``(M,)`` vector in ``x``'s dtype the kernels read."""
    return t.detach().to(x.dtype).expand(step_shape).reshape(M).contiguous()


def _flat_grad(g: Tensor | None, shape, dtype) -> Tensor:
    """An output's gradient as the contiguous array the kernels read (zeros for None)."""
    return (torch.zeros(shape, dtype=dtype) if g is None
            else g.detach().reshape(shape).contiguous())


def _scan_input_grads(ctx, acc: Tensor, gx: Tensor, d: Tensor):
    """The membrane scan's input, decay and initial-state gradients from its backward
    kernel's ``gx`` ``(T, M)`` and float64 decay sums ``acc`` ``(M,)``, as
    ``ctx.needs_input_grad[:3]`` asks (``ctx.step_shape``, ``ctx.decay_shape`` and
    ``ctx.decay_dtype`` saved by the forward)."""
    need_x, need_d, need_u0 = ctx.needs_input_grad[:3]
    step_shape = ctx.step_shape
    dd = du0 = None
    if need_d:
        dd = acc.view(step_shape).sum_to_size(ctx.decay_shape).to(ctx.decay_dtype)
    if need_u0:
        du0 = (gx[0] * d).view(step_shape)
    return (gx.view(gx.shape[0], *step_shape) if need_x else None), dd, du0


class _CompiledLeaky(torch.autograd.Function):
    """``u_t = d u_{t-1} + x_t`` by the compiled loop; backward: the loop run backwards
    over the output gradient, the decay's gradient ``sum_t g_t u_{t-1}`` (float64
    accumulation, then summed to the decay's shape), ``u0``'s ``d g_0``."""

    @staticmethod
    def forward(ctx, x, decay, u0):  # type: ignore[override]
        T, M, step_shape, xs, u = _flatten(x, u0)
        d = _per_step(decay, x, step_shape, M)
        y = torch.empty(x.shape, dtype=x.dtype)  # the output itself, not a view of it
        _load().leaky_forward(xs.numpy(), d.numpy(), u.numpy(), y.view(T, M).numpy())
        ctx.save_for_backward(y, d, u)
        ctx.decay_shape, ctx.decay_dtype = decay.shape, decay.dtype
        ctx.step_shape = step_shape
        return y, y[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, g_seq, g_T):  # type: ignore[override]
        y, d, u = ctx.saved_tensors
        T, M = y.shape[0], d.shape[0]
        y = y.view(T, M)
        g = _flat_grad(g_seq, (T, M), y.dtype)
        gT = _flat_grad(g_T, (M,), y.dtype)
        gx = torch.empty_like(y)
        acc = torch.zeros(M, dtype=torch.float64)
        _load().leaky_backward(g.numpy(), gT.numpy(), d.numpy(), y.numpy(), u.numpy(),
                               gx.numpy(), acc.numpy())
        return _scan_input_grads(ctx, acc, gx, d)


def leaky_compiled(x: Tensor, decay: Tensor, u0: Tensor) -> tuple[Tensor, Tensor]:
    """The compiled form of :func:`~astro_neuron.functional.scan.leaky_loop`:
    ``(u_seq [T, ...], u_T)`` for ``x`` ``[T, ...]``, ``decay`` broadcasting against
    ``x[t]``, ``u0`` of ``x[t]``'s shape (the caller's checks and defaults apply)."""
    return _CompiledLeaky.apply(x, decay, u0)


class _CompiledLeakyFire(torch.autograd.Function):
    """:class:`_CompiledLeaky` with binary spikes read off the membrane in the same
    pass: ``s_t = Theta(u_t - theta)`` forward, ATan's surrogate derivative backward
    (:meth:`~astro_neuron.functional.surrogate.ATan.grad_`'s arithmetic), the spikes'
    gradient turned into the membrane's inside the backward scan. Outputs the spikes,
    the membrane and its last step; the threshold's gradient is accumulated in
    float64 in the same pass."""

    @staticmethod
    def forward(ctx, x, decay, u0, threshold, alpha):  # type: ignore[override]
        T, M, step_shape, xs, u = _flatten(x, u0)
        d, thr = _per_step(decay, x, step_shape, M), _per_step(threshold, x, step_shape, M)
        y = torch.empty(x.shape, dtype=x.dtype)
        s = torch.empty(x.shape, dtype=x.dtype)
        _load().fire_forward(xs.numpy(), d.numpy(), u.numpy(), thr.numpy(),
                             y.view(T, M).numpy(), s.view(T, M).numpy())
        ctx.save_for_backward(y, d, u, thr)
        # an output nobody used gets None, not a tensor of zeros: the language model
        # uses only the spikes and the final state, and a zero membrane gradient would
        # cost a pass to make and one to read (the fused form's gain, measured)
        ctx.set_materialize_grads(False)
        ctx.decay_shape, ctx.decay_dtype = decay.shape, decay.dtype
        ctx.thr_shape, ctx.thr_dtype = threshold.shape, threshold.dtype
        ctx.step_shape = step_shape
        ctx.alpha = alpha
        return s, y, y[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, g_s, g_seq, g_T):  # type: ignore[override]
        y, d, u, thr = ctx.saved_tensors
        T, M = y.shape[0], d.shape[0]
        y = y.view(T, M)
        gs = _flat_grad(g_s, (T, M), y.dtype)
        gy = y if g_seq is None else _flat_grad(g_seq, (T, M), y.dtype)  # y: never read
        gT = _flat_grad(g_T, (M,), y.dtype)
        gx = torch.empty_like(y)
        acc = torch.zeros(M, dtype=torch.float64)
        acc_thr = torch.zeros(M, dtype=torch.float64)
        c = math.pi / 2 * ctx.alpha          # ATan.grad_: gs / (2/alpha + (2/alpha) c^2 e^2)
        _load().fire_backward(gs.numpy(), gy.numpy(), g_seq is not None, gT.numpy(),
                              d.numpy(), thr.numpy(), 2 / ctx.alpha, c * c * 2 / ctx.alpha,
                              y.numpy(), u.numpy(), gx.numpy(), acc.numpy(), acc_thr.numpy())
        dthr = None
        if ctx.needs_input_grad[3]:
            dthr = (acc_thr.view(ctx.step_shape).sum_to_size(ctx.thr_shape).neg_()
                    .to(ctx.thr_dtype))
        return (*_scan_input_grads(ctx, acc, gx, d), dthr, None)


def leaky_fire_compiled(x: Tensor, decay: Tensor, u0: Tensor, threshold: Tensor,
                        alpha: float) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`leaky_compiled` and binary spikes with the ATan surrogate (``alpha``) in
    one pass each way: ``(spikes [T, ...], u_seq [T, ...], u_T)``, equal to
    ``fire_levels(u_seq, threshold, ATan(alpha))`` on :func:`leaky_compiled`'s
    membrane; ``threshold`` broadcasts against ``x[t]`` like ``decay``."""
    return _CompiledLeakyFire.apply(x, decay, u0, threshold, alpha)


class _CompiledRMSReadout(torch.autograd.Function):
    """``rms_norm(o) * gain`` over the last dim of ``o`` ``[..., A, V]``, flattened to
    ``[..., A V]``; one pass forward (the per-row scale saved), one pass backward (the
    gain's gradient accumulated in float64 in the same pass)."""

    @staticmethod
    def forward(ctx, o, gain, eps):  # type: ignore[override]
        A, V = o.shape[-2:]
        lead = o.shape[:-2]
        x = o.detach().reshape(-1, A, V).contiguous()
        g = gain.detach().to(o.dtype).expand(A * V).reshape(A, V).contiguous()
        y = torch.empty(x.shape, dtype=o.dtype)
        r = torch.empty(x.shape[:2], dtype=o.dtype)
        _load().rms_forward(x.numpy(), g.numpy(), float(eps), y.numpy(), r.numpy())
        ctx.save_for_backward(x, g, r)
        ctx.gain_shape, ctx.gain_dtype, ctx.lead = gain.shape, gain.dtype, lead
        return y.view(*lead, A * V)

    @staticmethod
    @once_differentiable
    def backward(ctx, gy):  # type: ignore[override]
        x, g, r = ctx.saved_tensors
        A, V = g.shape
        gx = torch.empty_like(x)
        gg = torch.zeros(A, V, dtype=torch.float64)
        gy = gy.detach().reshape(x.shape).contiguous()
        _load().rms_backward(gy.numpy(), x.numpy(), g.numpy(), r.numpy(), gx.numpy(), gg.numpy())
        need_o, need_gain, _ = ctx.needs_input_grad
        d_gain = (gg.view(A * V).sum_to_size(ctx.gain_shape).to(ctx.gain_dtype)
                  if need_gain else None)
        return (gx.view(*ctx.lead, A, V) if need_o else None), d_gain, None


def rms_readout_compiled(o: Tensor, gain: Tensor, eps: float) -> Tensor:
    """The compiled form of ``F.rms_norm(o, (V,), eps=eps).flatten(-2) * gain`` for ``o``
    ``[..., A, V]`` and ``gain`` broadcasting against ``A V`` channels (the AM-SU's
    RMS read-out, :func:`~astro_neuron.functional.amsu.readout`): ``[..., A V]``. The
    row's sum of squares and the backward's sums run in float64."""
    return _CompiledRMSReadout.apply(o, gain, eps)


def _np(t: Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


def chunk_decay_sums(a: Tensor, b: Tensor, c: Tensor, d: Tensor) -> Tensor:
    """``sum over (B, n) of a * b - c * d`` for ``[B, A, n, C, K]`` operands: ``[A, C, K]``
    in float64 (products and sums), one pass. The torch form:
    ``(a * b).sum(0, float64).sum(1) - (c * d).sum(0, float64).sum(1)``."""
    out = np.zeros((a.shape[1], a.shape[3], a.shape[4]))
    _load().chunk_sums(_np(a), _np(b), _np(c), _np(d), out)
    return torch.from_numpy(out)


def state_decay_sums(a: Tensor, b: Tensor) -> Tensor:
    """``sum over (B, n, V) of a * b`` for ``[B, A, n, K, V]`` operands: ``[A, K]`` in
    float64 (products and sums), one pass. The torch form:
    ``(a * b).sum(0, float64).sum((1, 3))``."""
    out = np.zeros((a.shape[1], a.shape[3]))
    _load().state_sums(_np(a), _np(b), out)
    return torch.from_numpy(out)
