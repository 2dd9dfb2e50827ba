"""Import hook that lets lava-nc 0.10.0 import on Python 3.11.

lava-nc 0.10.0 declares Python < 3.11. Its only incompatibility is eight dataclass
fields in ``lava.magma.compiler.var_model`` whose default is a mutable
``ByteEncoder()`` instance, which Python 3.11's dataclasses reject with
``ValueError: mutable default ... use default_factory``. This hook rewrites those
defaults to ``field(default_factory=ByteEncoder)`` in memory when (and only when)
that one module is imported. Site-packages are left untouched, the module is always
compiled from source (no stale ``.pyc``), and on Python 3.10 the hook does nothing.

``install()`` is called by ``import neuromorphic``; call
it yourself before ``import lava`` if you import Lava first.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys

_TARGET = "lava.magma.compiler.var_model"
_REPLACEMENTS = (
    (b"from dataclasses import dataclass, InitVar\n",
     b"from dataclasses import dataclass, InitVar, field\n"),
    (b": ByteEncoder = ByteEncoder()", b": ByteEncoder = field(default_factory=ByteEncoder)"),
)


class _PatchedSourceLoader(importlib.abc.SourceLoader):
    def __init__(self, fullname: str, path: str) -> None:
        self.name, self.path = fullname, path

    def get_filename(self, fullname: str) -> str:  # noqa: D401 - importlib API
        return self.path

    def get_data(self, path: str) -> bytes:
        # No path_stats(): importlib then never reads or writes a cached .pyc.
        with open(path, "rb") as fh:
            data = fh.read()
        for old, new in _REPLACEMENTS:
            data = data.replace(old, new)
        return data


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != _TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or not (spec.origin or "").endswith(".py"):
            return None
        spec.loader = _PatchedSourceLoader(fullname, spec.origin)
        return spec


def install() -> None:
    """Install the hook (idempotent; a no-op before Python 3.11)."""
    if sys.version_info < (3, 11):
        return
    if _TARGET in sys.modules:
        return
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
