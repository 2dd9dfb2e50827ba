"""Small file helpers shared by the CLI, the demo and training: atomic writes."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

__all__ = ["atomic_write", "atomic_torch_save", "atomic_json", "load_checkpoint"]


def atomic_write(path, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` then rename ``tmp_path`` onto ``path``.

    The temporary file sits in the target folder, so the rename is atomic: a reader
    sees the old file or the complete new one, never a partial file, even if the
    process is killed mid-write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_torch_save(obj: Any, path) -> Path:
    """``torch.save`` that never leaves a truncated file behind."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def atomic_json(obj: Any, path) -> Path:
    def _w(tmp: str) -> None:
        with open(tmp, "w") as fh:
            json.dump(obj, fh, indent=2, sort_keys=True)
            fh.write("\n")
    return atomic_write(path, _w)


def load_checkpoint(path, what: str = "checkpoint") -> dict:
    """``torch.load`` with a clear error for a missing, truncated or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # truncated zip, pickle errors, ...
        raise ValueError(f"{what} {path} is not a readable torch file "
                         f"({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{what} {path} does not hold a dict (got {type(obj).__name__})")
    return obj
