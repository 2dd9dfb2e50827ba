"""The astrocyte scan on CUDA through flash-linear-attention's GLA kernels.

The astrocyte recurrence ``H_t = diag(gamma) H_{t-1} + k_t v_t^T``, ``o_t = H_t^T q_t``
is gated linear attention (GLA) with a gate that is constant in time (or, for
input-dependent retention, the gate itself): flash-linear-attention's ``chunk_gla``
computes exactly ``o_t = sum_{s<=t} (q_t * exp(G_t - G_s) * scale) . k_s v_s`` with
``G`` the running sum of the log-gate, the state in the same ``[K, V]`` layout. With
``scale = 1`` and ``log gate = log gamma`` it is :func:`~astro_neuron.functional.scan.
astro_chunked`; its Triton kernels run on CUDA only.

Which scan the chunked AM-SU uses is decided by :func:`scan_backend`:

* ``"torch"`` (the default): the torch form (:mod:`astro_neuron.functional.scan`), on
  any device;
* ``"auto"``: the GLA kernels for CUDA tensors in float32, bfloat16 or float16 when
  ``fla`` imports, else the torch form (CPU, float64, no ``fla``);
* ``"fla"``: always the GLA kernels; a clear error where they cannot run.

The environment variable ``ASTRO_NEURON_SCAN`` sets the starting value. ``fla`` is an
optional dependency (``pip install 'astro-neuron[cuda]'``, ``fla-core==0.6.0``), not
installed by the CPU recipe.

Why not the default on CUDA: on the one GPU session so far (an H200, 2026-12-04, torch
2.11, Triton 3.6) only part of ``tests/core/test_core_cuda.py`` ran before the lease ended:
4 of its 17 tests passed (the scan at T = 1 and 64, d_k 16, d_v 32, constant and
input-dependent decay: outputs, final states and the gradients of q, k, v, the decay and
the initial state against the float64 loop, normwise within 4e-3 under TF32), and a
check at T = 64 gave 1.1e-3 (outputs) and 7.8e-4 (state) against the torch form; the
larger key sizes, T = 16384, bfloat16, the AM-SU and AM-SNet through the kernel, and the
training speed were not reached. The first call compiles and autotunes the kernels
(98 s there). Until those run, the kernel is opt-in. On a machine without CUDA the
layout this module hands the kernel is tested against a stand-in with the kernel's
documented semantics (``tests/core/test_core_scan_fla.py``). See docs/model.md.
"""

from __future__ import annotations

from typing import Callable, ContextManager

import torch
from torch import Tensor

from astro_neuron.functional.switch import Switch

__all__ = ["scan_backend", "set_scan_backend", "get_scan_backend", "fla_available",
           "use_fla", "astro_fla", "astro_gated_fla"]

_BACKENDS = ("auto", "torch", "fla")
_FLA_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_FLA_MAX_KEY = 256            # the GLA kernels' largest head size (keys and values)
_LOG_DECAY_FLOOR = -1.0e4     # as in scan.py: exp(-1e4) == 0, without -inf


_SWITCH = Switch("scan backend", "ASTRO_NEURON_SCAN", _BACKENDS, "torch")
_kernel: Callable | None = None        # fla.ops.gla.chunk_gla once imported
_kernel_error: str | None = None


def _load_kernel() -> Callable | None:
    global _kernel, _kernel_error
    if _kernel is None and _kernel_error is None:
        try:
            # deferred: optional extra [cuda]; fla imports Triton, needed only on CUDA
            from fla.ops.gla import chunk_gla   # noqa: PLC0415
            _kernel = chunk_gla
        except Exception as e:                   # ImportError, or triton without CUDA
            _kernel_error = f"{type(e).__name__}: {e}"
    return _kernel


def fla_available() -> bool:
    """Whether flash-linear-attention's GLA kernel imports here."""
    return _load_kernel() is not None


def get_scan_backend() -> str:
    """The astrocyte scan of the chunked form: ``"auto"``, ``"torch"`` or ``"fla"``."""
    return _SWITCH.get()


def set_scan_backend(backend: str) -> None:
    """Choose the astrocyte scan of the chunked form: ``"auto"``, ``"torch"`` or ``"fla"``."""
    _SWITCH.set(backend)


def scan_backend(backend: str) -> ContextManager[None]:
    """``with scan_backend("torch"): ...`` uses that scan inside the block."""
    return _SWITCH.using(backend)


def _unfit(q: Tensor, v: Tensor) -> str | None:
    """Why the GLA kernel cannot take these operands (None when it can)."""
    if not q.is_cuda:
        return f"the GLA kernels run on CUDA only, but the tensors are on {q.device}"
    if q.dtype not in _FLA_DTYPES:
        return (f"the GLA kernels take float32, bfloat16 or float16, not {q.dtype} "
                "(float64 runs in the torch form)")
    if q.shape[-1] > _FLA_MAX_KEY or v.shape[-1] > _FLA_MAX_KEY:
        return (f"the GLA kernels take key and value sizes up to {_FLA_MAX_KEY}, got "
                f"d_k={q.shape[-1]}, d_v={v.shape[-1]}")
    if _load_kernel() is None:
        return ("flash-linear-attention is not importable (pip install "
                f"'astro-neuron[cuda]'): {_kernel_error}")
    return None


def use_fla(q: Tensor, v: Tensor) -> bool:
    """Whether the chunked form should hand these operands to the GLA kernel."""
    if _SWITCH.value == "torch":
        return False
    why = _unfit(q, v)
    if _SWITCH.value == "fla" and why is not None:
        raise RuntimeError(f"scan backend 'fla' was asked for, but {why}")
    return why is None


def _gla(q: Tensor, k: Tensor, v: Tensor, g: Tensor,
         H0: Tensor | None) -> tuple[Tensor, Tensor]:
    """``[T, B, A, d]`` operands and a ``[T, B, A, d_k]`` log-gate -> fla's ``[B, T, A, d]``
    layout, the kernel, and back. The kernel keeps its state in float32."""
    T, B, A, dk = q.shape
    dv = v.shape[-1]
    dt = q.dtype
    if T == 0:
        return q.new_zeros(0, B, A, dv), (q.new_zeros(B, A, dk, dv) if H0 is None else H0)
    kernel = _load_kernel()
    if kernel is None:
        raise RuntimeError(f"flash-linear-attention is not importable: {_kernel_error}")
    if H0 is None:
        H0 = q.new_zeros(B, A, dk, dv, dtype=torch.float32)

    def bt(z: Tensor) -> Tensor:
        return z.transpose(0, 1).contiguous()

    g = g.to(torch.float32).clamp(min=_LOG_DECAY_FLOOR, max=0.0)   # a decay of 0: no inf
    o, H = kernel(bt(q), bt(k), bt(v), bt(g), scale=1.0,
                  initial_state=H0.to(torch.float32), output_final_state=True)
    return o.transpose(0, 1), H.to(dt)


def astro_fla(q: Tensor, k: Tensor, v: Tensor, decay: Tensor,
              H0: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """:func:`~astro_neuron.functional.scan.astro_chunked` by the GLA kernel (same
    arguments and results; ``decay`` ``[A, d_k]`` in (0, 1])."""
    T, B, A, dk = q.shape
    lg = torch.log(decay.to(torch.float32).clamp(min=1e-30)).expand(T, B, A, dk)
    return _gla(q, k, v, lg, H0)


def astro_gated_fla(q: Tensor, k: Tensor, v: Tensor, log_decay: Tensor,
                    H0: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """:func:`~astro_neuron.functional.scan.astro_gated_chunked` by the GLA kernel
    (``log_decay`` ``[T, B, A, d_k]``, <= 0)."""
    return _gla(q, k, v, log_decay, H0)
