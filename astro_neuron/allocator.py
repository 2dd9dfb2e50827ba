"""Keep freed memory in the process, so a training step does not page-fault its
large tensors afresh.

PyTorch's CPU tensors come from the C library's ``malloc``. glibc serves a block
larger than its mmap threshold (at most 32 MiB) from a fresh ``mmap`` and gives it back
to the kernel when it is freed, so every such tensor, every step, is faulted in page
by page (about 8,000 faults for a 32 MiB tensor), and memory freed at the top of the
heap is trimmed and faulted in again later. A spiking layer of width 2,048 over 4,096
tokens makes several such tensors per step (membrane, spikes and their gradients).
:func:`retain_freed_memory` tells glibc to serve every block from the heap and to keep
what is freed (``mallopt``: no mmap, a trim threshold of 2 GiB, 64 MiB of top pad), the
same effect the PyTorch CPU tuning guides get by preloading jemalloc or tcmalloc. The
cost: the process's resident memory stays near its peak instead of shrinking between
steps.

The command line applies it for the commands that train or time training (``train``,
``compare``, ``memory-tasks``, ``memory-neuron``, ``finetune``, ``finetune-compare``,
``demo``, ``bench train``, ``bench scan``); the environment variable ``ASTRO_NEURON_MALLOC=system``
leaves the C library's defaults. In your own training script, call it once at the
start. It changes the whole process and cannot be undone; it does nothing (and returns
False) where the C library is not glibc. Measured effect: docs/benchmarks.md, "Seventh
round".
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["retain_freed_memory", "freed_memory_retained", "retain_unless_disabled", "ENV"]

#: ``"system"`` keeps the C library's defaults in the command line's training commands
ENV = "ASTRO_NEURON_MALLOC"

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
_TRIM = 2 ** 31 - 1                       # mallopt takes a C int: about 2 GiB
_TOP_PAD = 64 * 2 ** 20

_retained = False


def _glibc():
    """The process's C library if it is glibc, else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version            # glibc only (absent in musl)
        return libc
    except (OSError, AttributeError):
        return None


def retain_freed_memory() -> bool:
    """Make glibc serve every block from the heap and keep freed memory (see the
    module's docstring). Returns True when the settings are in force (also on a
    repeated call), False where the C library is not glibc or refused them."""
    global _retained
    if _retained:
        return True
    libc = _glibc()
    if libc is None:
        return False
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = all(libc.mallopt(p, v) == 1 for p, v in ((_M_MMAP_MAX, 0),
                                                     (_M_TRIM_THRESHOLD, _TRIM),
                                                     (_M_TOP_PAD, _TOP_PAD)))
    _retained = ok
    return ok


def freed_memory_retained() -> bool:
    """Whether :func:`retain_freed_memory` is in force in this process."""
    return _retained


def retain_unless_disabled() -> str:
    """What the command line does for its training commands: :func:`retain_freed_memory`
    unless ``ASTRO_NEURON_MALLOC=system``. Returns a one-line description of the
    allocator in force (printed by ``bench train`` and ``bench scan``)."""
    choice = os.environ.get(ENV, "retain").strip().lower()
    if choice not in ("retain", "system"):
        raise ValueError(f"{ENV} must be 'retain' or 'system', got {choice!r}")
    if choice == "system":
        return f"allocator: the C library's defaults ({ENV}=system)"
    if retain_freed_memory():
        return (f"allocator: glibc keeping freed memory (no mmap, trim at 2 GiB; "
                f"{ENV}=system for the defaults)")
    return "allocator: the C library's defaults (not glibc)"
