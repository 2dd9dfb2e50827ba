"""The finiteness check of the unit's forms, and the one switch that turns it off.

Every form run through :func:`astro_neuron.functional.amsu.run` (and
:func:`astro_neuron.functional.lif.run`, the ``AMSU``/``LIF`` modules, the adapters and
the language model, which call them) ends with one cheap check: the sum of what
matters (parameters, the input, the state in, the outputs and the state out) must be
finite. That is one reduction per tensor and a single host synchronisation. Only when
it fails are the tensors searched, to name the first non-finite one and the first
time step where it went non-finite.

The switch is a :class:`contextvars.ContextVar` (per thread and per asyncio task, so
one thread turning checks off does not turn them off for another), set through the
:func:`validation` context manager::

    with astro_neuron.validation(check_finite=False):
        y = layer(x)
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterable, Optional

import torch
from torch import Tensor

__all__ = ["NonFiniteError", "validation", "checking_finite", "check_finite"]

_FINITE_SWITCH: ContextVar[bool] = ContextVar("astro_neuron_check_finite", default=True)


class NonFiniteError(ValueError):
    """A tensor of a run holds NaN or Inf (the message names it and the step)."""


@contextmanager
def validation(check_finite: bool):
    """Turn the NaN/Inf checks of the unit's forms on or off (on by default) inside a
    ``with`` block; the previous setting comes back when the block ends."""
    if not isinstance(check_finite, bool):
        raise TypeError(f"check_finite must be True or False, got {check_finite!r}")
    token = _FINITE_SWITCH.set(check_finite)
    try:
        yield
    finally:
        _FINITE_SWITCH.reset(token)


def checking_finite(check: Optional[bool] = None) -> bool:
    """``check`` if given, else the setting of the innermost :func:`validation` block."""
    return _FINITE_SWITCH.get() if check is None else bool(check)


def _first_bad_step(t: Tensor) -> int:
    bad = ~torch.isfinite(t.detach())
    return int(bad.reshape(bad.shape[0], -1).any(1).nonzero()[0, 0])


def _checkable(t) -> bool:
    return isinstance(t, Tensor) and t.is_floating_point() and t.numel() > 0


def check_finite(named: Iterable[tuple[str, Optional[Tensor], bool]],
                 hint: str = "", covered: Iterable[str] = ()) -> None:
    """Raise :class:`NonFiniteError` if any tensor of ``named`` holds NaN or Inf.

    ``named``: ``(name, tensor or None, time_major)`` in the order to blame (causes
    first: parameters, input, state in; then outputs, state out). The fast path is
    one sum per tensor and one synchronisation; the search runs only on failure.
    ``covered``: names of tensors the fast path leaves out because a NaN or Inf in
    them always reaches another tensor of ``named`` (the caller's proof: a leaky
    membrane's final state, for one, is non-finite whenever any step of the membrane
    or of its input was); the search on failure still looks at them, in order.
    """
    items = [(n, t, tm) for n, t, tm in named if _checkable(t)]
    if not items:
        return
    skip = set(covered)
    with torch.no_grad():
        # a sum of large finite values may overflow: then the search below finds
        # nothing and the check passes
        total = sum(t.detach().sum() for n, t, _ in items if n not in skip)
        if bool(torch.isfinite(torch.as_tensor(total))):
            return
        for name, t, time_major in items:
            if bool(torch.isfinite(t.detach()).all()):
                continue
            where = ""
            if time_major and t.dim() > 1:
                where = f" from step {_first_bad_step(t)} of {t.shape[0]}"
            raise NonFiniteError(
                f"{name} contains NaN or Inf{where}{hint} (turn this check off with "
                "astro_neuron.validation(check_finite=False))")
