"""A choice between implementations of the same computation (the scans' backends):
started from an environment variable, changed by a setter or, for one block, by a
context manager, and refused with a clear error outside its choices.

Used by :mod:`~astro_neuron.functional.scan_fla` (``ASTRO_NEURON_SCAN``) and
:mod:`~astro_neuron.functional.compiled` (``ASTRO_NEURON_CPU_KERNELS``).
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

from astro_neuron.validate import choice

__all__ = ["Switch"]


class Switch:
    """``name`` (for errors), ``env`` (the variable read at creation), ``choices``,
    ``default`` (when the variable is unset or empty). ``value`` is the current choice."""

    def __init__(self, name: str, env: str, choices: tuple[str, ...], default: str) -> None:
        self.name, self.env, self.choices, self.default = name, env, choices, default
        self.value = self.initial()

    def initial(self) -> str:
        """The choice the environment variable gives (case and spaces ignored)."""
        value = os.environ.get(self.env, self.default).strip().lower() or self.default
        return choice(self.env, value, self.choices)

    def get(self) -> str:
        return self.value

    def set(self, value: str) -> None:
        self.value = choice(self.name, value, self.choices)

    @contextlib.contextmanager
    def using(self, value: str) -> Iterator[None]:
        """The block runs with ``value``; the choice before it is restored after."""
        before = self.value
        self.set(value)
        try:
            yield
        finally:
            self.value = before
