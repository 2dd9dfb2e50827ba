"""Bytes in, bytes out: the tokenizer, the corpora and the batches (docs/lm.md).

* Tokenizer: one token per byte of the UTF-8 text (vocabulary 256); decoding
  replaces invalid byte sequences. Bits per byte = cross-entropy (nats) / ln 2.
* ``stdlib``: the built-in corpus, on every machine with this Python: the ``.py``
  sources of the Python standard library, tests excluded, read in sorted order. Each
  file goes to train / validation / test by a hash of its relative path (90/5/5),
  so the split is fixed. Size and SHA-256 are reported (they differ between Python
  versions).
* ``enwik8``: the standard split of the 100,000,000-byte file the user gives:
  first 90M bytes train, next 5M validation, last 5M test.
* ``wikitext103``: the raw files ``wiki.{train,valid,test}.raw`` of a folder the
  user gives, as UTF-8 bytes.

Nothing is ever downloaded. Batches are a pure function of ``(seed, step)``, so a
resumed or a multi-process run draws exactly the batches of an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import os
import sysconfig
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from astro_neuron.validate import choice

__all__ = ["encode", "decode", "Corpus", "stdlib_corpus", "load_enwik8", "load_wikitext103",
           "load_text_file", "load_corpus", "CORPORA", "batch_for_step", "eval_windows"]

CORPORA = ("stdlib", "enwik8", "wikitext103", "file")
ENWIK8_BYTES = 100_000_000
_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}


def encode(text: str) -> Tensor:
    """UTF-8 bytes of ``text`` as token ids ``(n,)`` int64."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8).long()


def decode(ids) -> str:
    """Token ids (any int sequence or tensor in [0, 255]) back to text."""
    if isinstance(ids, Tensor):
        ids = ids.tolist()
    try:
        return bytes(ids).decode("utf-8", errors="replace")
    except ValueError:
        raise ValueError("decode needs byte token ids in [0, 255]") from None


@dataclass
class Corpus:
    """Three splits of byte tokens (``uint8`` tensors) and where they came from."""

    name: str
    train: Tensor
    val: Tensor
    test: Tensor
    info: dict = field(default_factory=dict)

    def split(self, name: str) -> Tensor:
        if name not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {name!r}")
        return getattr(self, name)

    def describe(self) -> str:
        mb = lambda t: f"{t.numel() / 1e6:.2f} MB"  # noqa: E731
        extra = ", ".join(f"{k} {v}" for k, v in self.info.items())
        return (f"corpus {self.name}: train {mb(self.train)}, val {mb(self.val)}, "
                f"test {mb(self.test)} ({extra})")


def _bytes_tensor(b: bytes | bytearray | np.ndarray) -> Tensor:
    arr = np.frombuffer(b, dtype=np.uint8) if not isinstance(b, np.ndarray) else b
    return torch.from_numpy(np.array(arr, dtype=np.uint8, copy=True))


def _stdlib_files(root: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames
                             if d not in _SKIP_DIRS and not d.startswith("config-"))
        for f in sorted(filenames):
            if f.endswith(".py") and not f.startswith(("test_", "_sysconfigdata")):
                out.append(Path(dirpath) / f)
    return sorted(out, key=lambda p: p.relative_to(root).as_posix())


def _split_of(rel: str) -> str:
    h = int.from_bytes(hashlib.sha256(rel.encode()).digest()[:4], "big") % 100
    return "train" if h < 90 else ("val" if h < 95 else "test")


@lru_cache(maxsize=2)
def stdlib_corpus(root: Optional[str] = None) -> Corpus:
    """The built-in corpus: this Python's standard-library sources, tests excluded."""
    base = Path(root or sysconfig.get_paths()["stdlib"])
    if not base.is_dir():
        raise FileNotFoundError(f"standard library folder not found: {base}")
    parts: dict[str, list[bytes]] = {"train": [], "val": [], "test": []}
    digest = hashlib.sha256()
    n = 0
    for path in _stdlib_files(base):
        rel = path.relative_to(base).as_posix()
        data = path.read_bytes() + b"\n"
        digest.update(rel.encode() + b"\0" + data)
        parts[_split_of(rel)].append(data)
        n += 1
    if n == 0:
        raise FileNotFoundError(f"no .py files under {base}")
    t = {k: _bytes_tensor(b"".join(v)) for k, v in parts.items()}
    total = sum(x.numel() for x in t.values())
    info = {"files": n, "bytes": total, "sha256": digest.hexdigest()[:16], "root": str(base)}
    return Corpus("stdlib", t["train"], t["val"], t["test"], info)


def load_enwik8(path) -> Corpus:
    """enwik8 with the standard 90M / 5M / 5M split (the file must be 100,000,000 bytes)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"enwik8 file not found: {path} (give the unzipped 'enwik8')")
    size = path.stat().st_size
    if size != ENWIK8_BYTES:
        raise ValueError(f"{path} has {size:,} bytes; enwik8 has exactly {ENWIK8_BYTES:,} "
                         "(is it the zip, or another file? use corpus 'file' for any text)")
    data = np.memmap(path, dtype=np.uint8, mode="r")
    tr, va = 90_000_000, 95_000_000
    return Corpus("enwik8", _bytes_tensor(data[:tr]), _bytes_tensor(data[tr:va]),
                  _bytes_tensor(data[va:]), {"bytes": size, "path": str(path)})


def load_wikitext103(folder) -> Corpus:
    """WikiText-103 raw: ``wiki.train.raw``, ``wiki.valid.raw``, ``wiki.test.raw``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"WikiText-103 folder not found: {folder}")
    out = {}
    for split, fname in (("train", "wiki.train.raw"), ("val", "wiki.valid.raw"),
                         ("test", "wiki.test.raw")):
        f = folder / fname
        if not f.is_file():
            raise FileNotFoundError(f"{f} not found: the folder must hold the raw files "
                                    "wiki.train.raw, wiki.valid.raw, wiki.test.raw")
        out[split] = _bytes_tensor(f.read_bytes())
        if out[split].numel() < 2:
            raise ValueError(f"{f} is empty")
    return Corpus("wikitext103", out["train"], out["val"], out["test"],
                  {"bytes": sum(x.numel() for x in out.values()), "path": str(folder)})


def load_text_file(path) -> Corpus:
    """Any file of bytes, split 90/5/5 in order (first 90% train)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"text file not found: {path}")
    data = np.fromfile(path, dtype=np.uint8)
    n = data.size
    if n < 100:
        raise ValueError(f"{path} has only {n} bytes; need at least 100 to split")
    a, b = int(n * 0.9), int(n * 0.95)
    return Corpus("file", _bytes_tensor(data[:a]), _bytes_tensor(data[a:b]),
                  _bytes_tensor(data[b:]), {"bytes": n, "path": str(path)})


def load_corpus(name: str = "stdlib", path: Optional[str] = None) -> Corpus:
    """A corpus by name: ``stdlib`` (built in), ``enwik8``, ``wikitext103``, ``file``."""
    choice("corpus", name, CORPORA)
    if name == "stdlib":
        return stdlib_corpus(path or None)
    if not path:
        raise ValueError(f"corpus {name!r} needs a path (data.path = '...'); "
                         "nothing is downloaded")
    return {"enwik8": load_enwik8, "wikitext103": load_wikitext103,
            "file": load_text_file}[name](path)


def batch_for_step(data: Tensor, step: int, seed: int, batch_size: int, block_size: int,
                   rank: int = 0, world_size: int = 1) -> tuple[Tensor, Tensor]:
    """The training batch of ``step``: ``(x, y)`` ``(batch_size / world_size, block_size)``.

    Offsets are drawn from a generator seeded by ``(seed, step)``, so the batch depends
    on nothing else; rank ``r`` of ``world_size`` takes its contiguous share of the
    global batch, so all ranks together see exactly the single-process batch.
    """
    n = data.numel() - block_size - 1
    if n < 1:
        raise ValueError(f"the split has {data.numel()} tokens, fewer than block_size + 2 "
                         f"= {block_size + 2}")
    if batch_size % world_size:
        raise ValueError(f"batch_size ({batch_size}) must be divisible by the number of "
                         f"processes ({world_size})")
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    offs = torch.randint(n, (batch_size,), generator=g)
    per = batch_size // world_size
    offs = offs[rank * per:(rank + 1) * per]
    idx = offs[:, None] + torch.arange(block_size + 1)
    chunk = data[idx].long()                                          # (b, block + 1)
    return chunk[:, :-1], chunk[:, 1:]


def eval_windows(data: Tensor, block_size: int, max_tokens: Optional[int] = None):
    """Consecutive non-overlapping windows ``(x, y)`` covering the split (or its first
    ``max_tokens`` predicted tokens): the fixed evaluation set, ``(n, block_size)``."""
    n = (data.numel() - 1) // block_size
    if max_tokens is not None:
        n = min(n, max(1, max_tokens // block_size))
    if n < 1:
        raise ValueError(f"the split has {data.numel()} tokens, fewer than block_size + 1 "
                         f"= {block_size + 1}")
    span = data[: n * block_size + 1].long()
    return span[:-1].view(n, block_size), span[1:].view(n, block_size)
