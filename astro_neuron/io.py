"""File helpers shared by the CLI, the demo and training: atomic writes and checkpoints.

Checkpoints are data (docs/lm.md, "What is safe to open"): one safetensors file whose
tensors are the weights (and the optimizer's moments), and whose safetensors metadata
holds a JSON document (configs, step, losses...) and the SHA-256 of both. Opening one
never runs code: safetensors reads raw tensor bytes and JSON reads plain values.
Everything is checked on load: the checksum, the kind, every tensor finite; the caller
then checks names, shapes and dtypes against the stored config with
:func:`check_tensors`. Old pickled ``.pt`` checkpoints are refused, with the command
that converts one the user trusts (:func:`load_pickle_checkpoint`).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from safetensors import safe_open
from safetensors.torch import save_file

__all__ = ["ensure_folder", "atomic_write", "atomic_json", "atomic_save_tensors",
           "clean_stale_tmp", "CheckpointError",
           "PickleCheckpointError", "save_checkpoint", "load_checkpoint", "check_tensors",
           "load_pickle_checkpoint", "CHECKPOINT_FORMAT", "CHECKPOINT_VERSION",
           "CHECKPOINT_SUFFIX", "CONVERT_COMMAND"]

CHECKPOINT_FORMAT = "astro-neuron-checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINT_SUFFIX = ".safetensors"
CONVERT_COMMAND = "astro-neuron convert-checkpoint OLD.pt NEW.safetensors --trust-pickle"
_META_KEY, _SHA_KEY = "astro_neuron", "sha256"
_PICKLE_MAGIC = (b"PK\x03\x04", b"\x80")   # torch.save zip archive / legacy pickle stream
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


# ------------------------------------------------------------------ atomic writes

def _tmp_path(path: Path, pid: int) -> Path:
    return path.with_name(f".{path.name}.{pid}.tmp")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def clean_stale_tmp(path) -> list[Path]:
    """Remove the temporary files that writes of ``path`` killed mid-way left behind.

    A temporary file is ``.<name>.<pid>.tmp`` next to ``path``; it is stale when its
    process no longer runs (or it is this process's own leftover). Returns the removed
    paths."""
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = tmp.name[len(path.name) + 2:-4]
        if pid.isdigit() and (int(pid) == os.getpid() or not _alive(int(pid))):
            try:
                tmp.unlink()
                removed.append(tmp)
            except FileNotFoundError:
                pass
    return removed


def ensure_folder(path, what: str = "output folder") -> Path:
    """Create the folder ``path`` (and its parents) if needed; a regular file in the way
    is a ``ValueError`` naming it, not a ``NotADirectoryError`` traceback."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (NotADirectoryError, FileExistsError):
        bad = next((p for p in [*reversed(path.parents), path]
                    if p.exists() and not p.is_dir()), path)
        raise ValueError(f"{what} {path}: {bad} is a file, not a folder") from None
    return path


def atomic_write(path, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` then rename ``tmp_path`` onto ``path``.

    The temporary file sits in the target folder, so the rename is atomic: a reader
    sees the old file or the complete new one, never a partial file, even if the
    process is killed mid-write. The temporary file is created with mode 0666 less the
    umask (like any file the user writes), flushed to disk before the rename, and
    removed if ``write`` fails; one left by a killed process is removed by the next
    write of the same path (:func:`clean_stale_tmp`).
    """
    path = Path(path)
    ensure_folder(path.parent, f"cannot write {path.name} into")
    if path.is_dir():
        raise ValueError(f"cannot write {path}: it is a folder")
    clean_stale_tmp(path)
    tmp = _tmp_path(path, os.getpid())
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    mode = stat.S_IMODE(os.fstat(fd).st_mode)        # 0666 less the umask
    os.close(fd)
    try:
        write(str(tmp))
        os.chmod(tmp, mode)          # some writers (safetensors) replace the file as 0600
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise
    return path


def atomic_json(obj: Any, path) -> Path:
    def _w(tmp: str) -> None:
        with open(tmp, "w") as fh:
            json.dump(obj, fh, indent=2, sort_keys=True)
            fh.write("\n")
    return atomic_write(path, _w)


def atomic_save_tensors(tensors: Mapping[str, torch.Tensor], path) -> Path:
    """Write a plain safetensors file (e.g. a ``state_dict``), atomically; read it back
    with ``safetensors.torch.load_file``. Tied (shared) tensors are stored as copies."""
    data = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(data, tmp))


# ------------------------------------------------------------------ checkpoints

class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: damaged, foreign, or not what the config
    says. The message names the file and the problem."""


class PickleCheckpointError(CheckpointError):
    """An old pickled ``.pt`` checkpoint: refused, because unpickling can run code."""


def _canonical(meta: dict) -> str:
    try:
        return json.dumps(meta, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except ValueError:
        raise ValueError("checkpoint metadata must not hold NaN or infinite numbers") from None


def _digest(meta_json: str, tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of the JSON document and of every tensor's name, dtype, shape and bytes."""
    h = hashlib.sha256(meta_json.encode())
    for name in sorted(tensors):
        t = tensors[name]
        h.update(json.dumps([name, str(t.dtype), list(t.shape)]).encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def save_checkpoint(path, kind: str, meta: dict, tensors: Mapping[str, torch.Tensor]) -> Path:
    """Write ``tensors`` and the JSON-able ``meta`` as one checkpoint file, atomically.

    ``kind`` names what the file holds (``"lm"``, ``"memory-net"``); :func:`load_checkpoint`
    refuses another kind. Non-finite tensors are refused here already."""
    path = Path(path)
    doc = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "kind": kind,
           "meta": meta}
    meta_json = _canonical(doc)
    # own contiguous CPU copies: safetensors refuses tensors that share memory (tied weights)
    data = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}
    for name, t in data.items():
        if (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all()):
            raise ValueError(f"not saving {path}: tensor {name!r} holds NaN or infinite values")
    header = {_META_KEY: meta_json, _SHA_KEY: _digest(meta_json, data)}
    return atomic_write(path, lambda tmp: save_file(data, tmp, metadata=header))


def _pickle_message(path: Path, what: str) -> str:
    return (f"{what} {path} is a pickled PyTorch (.pt) file: astro-neuron no longer opens "
            "those, because unpickling can run any code hidden in the file. If you trust "
            f"where it came from, convert it once: `{CONVERT_COMMAND}`")


def _check_file(path: Path, what: str) -> None:
    if path.is_dir():
        raise CheckpointError(f"{what} {path} is a folder; give the checkpoint file "
                              f"(*{CHECKPOINT_SUFFIX}) inside it")
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")


def load_checkpoint(path, kind: str, what: str = "checkpoint"
                    ) -> tuple[dict, dict[str, torch.Tensor]]:
    """Read a checkpoint written by :func:`save_checkpoint`: returns ``(meta, tensors)``.

    Raises :class:`FileNotFoundError` for a missing file and :class:`CheckpointError`
    (a ``ValueError``) naming the file and the problem for a pickled ``.pt`` file, a
    damaged, truncated or foreign file, a checksum mismatch, another ``kind``, or a
    tensor holding NaN or infinite values. Never unpickles anything."""
    path = Path(path)
    _check_file(path, what)
    with open(path, "rb") as fh:
        head = fh.read(520)
    # a safetensors file starts with its header's length (8 bytes, little-endian, whose
    # first byte may well be 0x80) and then the header's "{"
    if head[8:9] != b"{" and head.startswith(_PICKLE_MAGIC):
        raise PickleCheckpointError(_pickle_message(path, what))
    if _HDF5_MAGIC in (head[:8], head[512:520]):     # at 512 after a user block (the seal)
        raise CheckpointError(f"{what} {path} is an HDF5 file (an integer network .h5?), "
                              f"not a safetensors checkpoint")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors' own errors: bad header, truncated data ...
        raise CheckpointError(f"{what} {path} is damaged or not a safetensors file "
                              f"({type(exc).__name__}: {exc})") from None
    if _META_KEY not in header or _SHA_KEY not in header:
        raise CheckpointError(f"{what} {path} is a safetensors file but not an astro-neuron "
                              f"checkpoint (no {_META_KEY!r} metadata)")
    meta_json = header[_META_KEY]

    def no_constants(name: str):
        raise ValueError(f"non-finite number {name}")
    try:
        doc = json.loads(meta_json, parse_constant=no_constants)
    except ValueError as exc:
        raise CheckpointError(f"{what} {path}: its metadata is not valid JSON ({exc})") from None
    if _digest(meta_json, tensors) != header[_SHA_KEY]:
        raise CheckpointError(f"{what} {path} is damaged: its SHA-256 checksum does not match "
                              "its contents (the file changed after it was written)")
    if not isinstance(doc, dict) or doc.get("format") != CHECKPOINT_FORMAT \
            or not isinstance(doc.get("meta"), dict):
        raise CheckpointError(f"{what} {path} is not an astro-neuron checkpoint "
                              f"(format {doc.get('format') if isinstance(doc, dict) else doc!r})")
    if doc.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{what} {path} has checkpoint format version "
                              f"{doc.get('version')!r}; this astro-neuron reads version "
                              f"{CHECKPOINT_VERSION}")
    if doc.get("kind") != kind:
        raise CheckpointError(f"{what} {path} holds a {doc.get('kind')!r} checkpoint, "
                              f"not a {kind!r} one")
    for name, t in tensors.items():
        if (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"{what} {path}: tensor {name!r} holds NaN or infinite "
                                  "values")
    return doc["meta"], tensors


def check_tensors(path, what: str, found: Mapping[str, torch.Tensor],
                  expected: Mapping[str, torch.Tensor], prefix: str = "") -> None:
    """Check that ``found`` has exactly the names, shapes and dtypes of ``expected``
    (tensors, possibly on the meta device), names compared after ``prefix``; raise
    :class:`CheckpointError` naming the first tensor that differs."""
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing tensors {[prefix + n for n in missing][:5]}")
        if extra:
            parts.append(f"unexpected tensors {[prefix + n for n in extra][:5]}")
        raise CheckpointError(f"{what} {path}: the weights do not fit its config "
                              f"({'; '.join(parts)})")
    for name, want in expected.items():
        got = found[name]
        if tuple(got.shape) != tuple(want.shape) or got.dtype != want.dtype:
            raise CheckpointError(
                f"{what} {path}: the weights do not fit its config (tensor {prefix + name!r} "
                f"is {got.dtype} {tuple(got.shape)}, the config needs {want.dtype} "
                f"{tuple(want.shape)})")


def load_pickle_checkpoint(path, trust_pickle: bool = False) -> dict:
    """Unpickle an old ``.pt`` checkpoint, only when ``trust_pickle`` says the caller
    trusts the file: unpickling runs whatever code the file carries. For the one-time
    conversion to the safe format (``astro-neuron convert-checkpoint``)."""
    path = Path(path)
    _check_file(path, "old checkpoint")
    if not trust_pickle:
        raise PickleCheckpointError(
            f"refusing to unpickle {path}: a .pt file can run any code when opened. "
            "Convert it only if you trust where it came from, and say so with --trust-pickle "
            "(trust_pickle=True)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)  # trusted explicitly
    except Exception as exc:
        raise CheckpointError(f"old checkpoint {path} is not a readable torch file "
                              f"({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"old checkpoint {path} does not hold a dict "
                              f"(got {type(obj).__name__})")
    return obj
