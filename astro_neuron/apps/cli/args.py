"""Argument types and checks of the command line, built on :mod:`astro_neuron.validate`.

Each ``type=`` factory returns a function for ``argparse``: it converts the text, checks
it with the shared validators and raises :class:`argparse.ArgumentTypeError` with the
validator's message, so a bad value ends as one ``error:`` line with exit status 2
before any command runs. Paths are checked the same way (missing, a folder where a file
is wanted, a file where a folder is wanted, unreadable, unwritable). :func:`check_fits`
refuses a run whose estimated memory exceeds what the machine has free, naming the
estimate, instead of letting the kernel kill the process mid-allocation.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from pathlib import Path
from typing import Callable, Optional

import torch

from astro_neuron import validate

__all__ = ["pos_int", "nonneg_int", "int_range", "number", "int_list", "seed", "device",
           "in_file", "check_in_file", "in_path", "out_dir", "out_file", "config_name", "check_writable_dir",
           "check_writable_file", "available_bytes", "check_fits", "fmt_bytes"]

# A seed goes to torch.manual_seed / numpy: both take integers below 2**63 (numpy
# below 2**32 for its legacy generator; the CLI's seeds reach torch only).
SEED_MAX = 2**63 - 1


def _typed(fn: Callable, metavar_name: str) -> Callable:
    """Wrap ``fn(text)`` so a ValueError/TypeError becomes an ArgumentTypeError
    (argparse then prints ``argument --x: <message>``)."""
    def conv(text: str):
        try:
            return fn(text)
        except (ValueError, TypeError) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    conv.__name__ = metavar_name
    return conv


def _int(text: str) -> int:
    try:
        return int(text.strip())
    except (ValueError, AttributeError):
        raise ValueError(f"expected an integer, got {text!r}") from None


def _float(text: str) -> float:
    try:
        return float(text.strip())
    except (ValueError, AttributeError):
        raise ValueError(f"expected a number, got {text!r}") from None


def pos_int(hi: Optional[int] = None, name: str = "value") -> Callable:
    """An integer ``>= 1`` (and ``<= hi`` when given)."""
    if hi is None:
        return _typed(lambda t: validate.positive_int(name, _int(t)), "positive integer")
    return int_range(1, hi, name)


def nonneg_int(hi: Optional[int] = None, name: str = "value") -> Callable:
    """An integer ``>= 0`` (and ``<= hi`` when given)."""
    if hi is None:
        return _typed(lambda t: validate.non_negative_int(name, _int(t)), "integer >= 0")
    return int_range(0, hi, name)


def int_range(lo: int, hi: int, name: str = "value") -> Callable:
    """An integer in ``[lo, hi]``."""
    return _typed(lambda t: validate.int_in_range(name, _int(t), lo, hi), "integer")


def seed(name: str = "seed") -> Callable:
    """A random seed: an integer in ``[0, 2**63 - 1]``."""
    return int_range(0, SEED_MAX, name)


def number(lo: Optional[float] = None, hi: Optional[float] = None, *, lo_open: bool = False,
           hi_open: bool = False, name: str = "value") -> Callable:
    """A finite number in the interval given (``None``: unbounded)."""
    return _typed(lambda t: validate.number_in_range(name, _float(t), lo, hi, lo_open=lo_open,
                                                     hi_open=hi_open), "number")


def int_list(lo: int = 1, hi: Optional[int] = None, name: str = "value") -> Callable:
    """Comma-separated integers, each in ``[lo, hi]``; at least one."""
    def conv(text: str) -> list[int]:
        parts = [p for p in text.split(",") if p.strip()]
        if not parts:
            raise ValueError(f"{name} must be comma-separated integers, got {text!r}")
        vals = []
        for p in parts:
            v = _int(p)
            if v < lo or (hi is not None and v > hi):
                kind = "positive integers" if lo == 1 else f"integers >= {lo}"
                most = f" of at most {hi}" if hi is not None else ""
                raise ValueError(f"{name} must be {kind}{most}, got {v}")
            vals.append(v)
        return vals
    return _typed(conv, "integers")


_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?|mps)$")


def device(allow_auto: bool = False) -> Callable:
    """``cpu``, ``cuda``, ``cuda:N`` (present on this machine), ``mps`` (and ``auto``)."""
    def conv(text: str) -> str:
        name = text.strip()
        if allow_auto and name == "auto":
            return name
        if not _DEVICE.match(name):
            raise ValueError(f"device must be cpu, cuda, cuda:N"
                             f"{', mps or auto' if allow_auto else ' or mps'}, got {text!r}")
        if name.startswith("cuda"):
            n = torch.cuda.device_count() if torch.cuda.is_available() else 0
            idx = int(name.split(":")[1]) if ":" in name else 0
            if idx >= n:
                raise ValueError(f"device {name!r} asked for, but torch sees "
                                 f"{n or 'no'} CUDA GPU{'s' if n != 1 else ''} here")
        if name == "mps":
            if not torch.backends.mps.is_available():
                raise ValueError("device 'mps' asked for, but torch sees no MPS device here")
        return name
    return _typed(conv, "device")


# ----------------------------------------------------------------- paths

def check_in_file(path, what: str = "file") -> Path:
    """``path`` is an existing, readable regular file. Raises ValueError otherwise."""
    if str(path) == "":
        raise ValueError(f"{what} is an empty path")
    p = Path(path)
    if not p.exists():
        raise ValueError(f"{what} not found: {p}")
    if p.is_dir():
        raise ValueError(f"{what} {p} is a folder, not a file")
    if not p.is_file():
        raise ValueError(f"{what} {p} is not a regular file")
    if not os.access(p, os.R_OK):
        raise ValueError(f"{what} {p} is not readable (permission denied)")
    return p


def in_file(what: str = "file") -> Callable:
    """An existing, readable regular file."""
    return _typed(lambda t: check_in_file(t, what) and t, "file")


def in_path(what: str = "path") -> Callable:
    """An existing file or folder."""
    def conv(text: str) -> str:
        if not text:
            raise ValueError(f"{what} is an empty path")
        if not Path(text).exists():
            raise ValueError(f"{what} not found: {text}")
        if not os.access(text, os.R_OK):
            raise ValueError(f"{what} {text} is not readable (permission denied)")
        return text
    return _typed(conv, "path")


def check_writable_dir(path, what: str = "output folder") -> Path:
    """``path`` can be a folder we write into: it is one, or can be created (its first
    existing ancestor is a writable folder, not a file). Raises ValueError otherwise."""
    if str(path) == "":
        raise ValueError(f"{what} is an empty path")
    p = Path(path)
    if p.exists():
        if not p.is_dir():
            raise ValueError(f"{what} {p} exists and is not a folder")
        if not os.access(p, os.W_OK | os.X_OK):
            raise ValueError(f"{what} {p} is not writable (permission denied)")
        return p
    parent = p.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{what} {p}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {p}: cannot create it in {parent} (permission denied)")
    return p


def check_writable_file(path, what: str = "output file") -> Path:
    """``path`` can be written as a file: not a folder, and its folder can be made."""
    if str(path) == "":
        raise ValueError(f"{what} is an empty path")
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{what} {p} is a folder, not a file")
    if p.exists() and not os.access(p, os.W_OK):
        raise ValueError(f"{what} {p} is not writable (permission denied)")
    check_writable_dir(p.absolute().parent, f"folder of the {what}")
    return p


def out_dir(what: str = "output folder") -> Callable:
    return _typed(lambda t: check_writable_dir(t, what) and t, "folder")


def out_file(what: str = "output file", suffix: Optional[str] = None) -> Callable:
    def conv(text: str) -> str:
        check_writable_file(text, what)
        if suffix is not None and Path(text).suffix != suffix:
            raise ValueError(f"{what} must name a {suffix} file, got {text!r}")
        return text
    return _typed(conv, "file")


def _config_name(text: str) -> str:
    """``--config``: a built-in name (no path separator, no suffix) or a TOML file."""
    if not text:
        raise ValueError("config: empty name")
    p = Path(text)
    if p.is_dir():
        raise ValueError(f"config {p} is a folder; give a TOML file or a built-in name")
    if p.exists():
        check_in_file(p, "config file")
        return text
    if os.sep in text or (os.altsep and os.altsep in text) or p.suffix:
        raise ValueError(f"config file not found: {p}")
    return text                          # a built-in name: load_run_config checks it


config_name = _typed(_config_name, "config")


# ----------------------------------------------------------------- memory

def available_bytes() -> int:
    """Memory this process can still get: ``MemAvailable`` (Linux), else physical RAM."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2**63 - 1


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


def check_fits(what: str, nbytes: float, device: str = "cpu") -> None:
    """Refuse (ValueError, naming the estimate) what needs more memory than is free.

    ``nbytes`` is an estimate of the largest memory the run will hold at once. On a GPU
    device the free GPU memory is the limit.
    """
    if not math.isfinite(nbytes):
        raise ValueError(f"{what} needs an unbounded amount of memory")
    if str(device).startswith("cuda"):
        idx = torch.device(device).index or 0
        free, _ = torch.cuda.mem_get_info(idx)
        where = f"free on {device}"
    else:
        free = available_bytes()
        where = "available memory"
    if nbytes > free:
        raise ValueError(f"{what} needs about {fmt_bytes(nbytes)} but only {fmt_bytes(free)} "
                         f"is {where}; choose smaller sizes")
