"""Argument checks written once, used by every package (``astro_neuron`` and
``neuromorphic``) and by the command line.

Each check returns the value it accepted (converted where that is its job) and raises
``ValueError`` (``TypeError`` for a value of the wrong kind) with a message that names
the argument, says what is wanted and shows what was given. ``bool`` is never taken
for a number: ``True`` as a batch size is a mistake, not ``1``.
"""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any, Iterable, Optional

__all__ = [
    "positive_int", "non_negative_int", "int_in_range", "positive_number", "finite_number",
    "number_in_range", "probability", "choice", "boolean", "optional", "number_fields",
    "broadcasts_into",
]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def broadcasts_into(shape: Iterable[int], target: Iterable[int]) -> bool:
    """Whether a tensor of ``shape`` broadcasts against one of ``target`` without
    widening it (``torch.broadcast_shapes(shape, target) == target``, at a twentieth of
    its cost: the scans and spike functions ask this on every call)."""
    shape, target = tuple(shape), tuple(target)
    if len(shape) > len(target):
        return False
    return all(s == 1 or s == t for s, t in zip(reversed(shape), reversed(target)))


def positive_int(name: str, value: Any) -> int:
    """``value`` as an ``int >= 1``."""
    if not _is_int(value) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def non_negative_int(name: str, value: Any) -> int:
    """``value`` as an ``int >= 0``."""
    if not _is_int(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def int_in_range(name: str, value: Any, lo: int, hi: int) -> int:
    """``value`` as an ``int`` in ``[lo, hi]``."""
    if not _is_int(value) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")
    return int(value)


def finite_number(name: str, value: Any) -> float:
    """``value`` as a finite ``float``."""
    if not _is_number(value) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def positive_number(name: str, value: Any) -> float:
    """``value`` as a finite ``float > 0``."""
    if not _is_number(value) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def number_in_range(name: str, value: Any, lo: Optional[float] = None,
                    hi: Optional[float] = None, *, lo_open: bool = False,
                    hi_open: bool = False) -> float:
    """``value`` as a finite ``float`` in the interval given (``None``: unbounded)."""
    ok = _is_number(value) and math.isfinite(value)
    if ok and lo is not None:
        ok = value > lo if lo_open else value >= lo
    if ok and hi is not None:
        ok = value < hi if hi_open else value <= hi
    if not ok:
        left = "(-inf" if lo is None else ("(" if lo_open else "[") + f"{lo:g}"
        right = "inf)" if hi is None else f"{hi:g}" + (")" if hi_open else "]")
        raise ValueError(f"{name} must be a finite number in {left}, {right}, got {value!r}")
    return float(value)


def probability(name: str, value: Any) -> float:
    """``value`` as a ``float`` in ``[0, 1]``."""
    return number_in_range(name, value, 0.0, 1.0)


def choice(name: str, value: Any, options: Iterable) -> Any:
    """``value`` if it is one of ``options``."""
    options = tuple(options)
    if value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}")
    return value


def boolean(name: str, value: Any) -> bool:
    """``value`` if it is ``True`` or ``False`` (not a truthy number or string)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def optional(check, name: str, value: Any, *args, **kwargs):
    """``None``, or ``check(name, value, ...)``."""
    return None if value is None else check(name, value, *args, **kwargs)


def number_fields(obj: Any, positive: Iterable[str] = (), non_negative: Iterable[str] = (),
                  unit: Iterable[str] = ()) -> None:
    """Every field of the dataclass instance ``obj`` a finite number; those named in
    ``positive`` ``> 0``, in ``non_negative`` ``>= 0``, in ``unit`` in ``[0, 1]``. The
    message names ``Class.field`` (a parameter set's own check, e.g.
    :class:`~astro_neuron.neuro.network.LIFParams`)."""
    for f in fields(obj):
        v = getattr(obj, f.name)
        what = f"{type(obj).__name__}.{f.name}"
        if not _is_number(v) or not math.isfinite(v):
            raise ValueError(f"{what} must be a finite number, got {v!r}")
        if f.name in positive and v <= 0:
            raise ValueError(f"{what} must be positive, got {v!r}")
        if f.name in non_negative and v < 0:
            raise ValueError(f"{what} must be >= 0, got {v!r}")
        if f.name in unit and not 0 <= v <= 1:
            raise ValueError(f"{what} must be in [0, 1], got {v!r}")
