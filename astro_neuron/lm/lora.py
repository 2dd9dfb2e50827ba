"""LoRA adapters on a language model's projection matrices (docs/lm.md, "Dialogue
fine-tuning").

A weight ``W`` ``(out, in)`` becomes ``W + (alpha / r) B A`` with ``A`` ``(r, in)``
(Kaiming-uniform, as peft and the LoRA paper initialise it) and ``B`` ``(out, r)``
(zeros, so an adapter starts as the identity). The base weights are frozen; only
``A`` and ``B`` train.

Hand-written, not peft: the adapter is a :mod:`torch.nn.utils.parametrize`
parametrization of the weight *parameter*, so every path that reads the weight sees
``W + (alpha/r) B A``: the parallel (chunked) form, and also the fused recurrent decode
steps of :meth:`AMSNet.step` / :meth:`Transformer.step`, which read the weight
tensors directly instead of calling the layers (an unmerged peft adapter, which adds
``B A x`` inside ``nn.Linear.forward``, would be skipped there silently). The AM-SU's
projection is a bare ``nn.Parameter`` (its q, k, v and synaptic rows fused), which
peft's module-replacing LoRA does not target; and ``import peft`` imports
``transformers`` (6.5 s here, against 1.8 s for torch). The tensors are named like
peft's (``lora_A`` ``(r, in)``, ``lora_B`` ``(out, r)``, scale ``alpha / r``).

Targets default to every weight matrix (dim 2) of the model's blocks: found by walking the
parameters, not by the layers' names, so a change inside a block keeps working.
:func:`merge` folds the adapters into the weights (decoding then costs what the base
model costs) and keeps a copy of each base weight, so :func:`unmerge` restores the
base bit for bit. Adapters are saved as data-only checkpoints
(:mod:`astro_neuron.io`: safetensors tensors, JSON metadata, SHA-256), with the
SHA-256 of the base weights they were trained on, so they refuse another base.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from astro_neuron.io import CheckpointError, check_tensors, load_checkpoint, save_checkpoint
from astro_neuron.validate import positive_int, positive_number

__all__ = ["LoRA", "add_lora", "lora_targets", "lora_modules", "lora_parameters", "merge",
           "unmerge", "remove_lora", "adapter_state", "save_adapter", "load_adapter",
           "apply_adapter", "base_digest", "ADAPTER_KIND", "ADAPTER_NAME"]

ADAPTER_KIND = "lm-lora-adapter"
ADAPTER_NAME = "adapter.safetensors"


class LoRA(nn.Module):
    """The parametrization ``W -> W + scale * B @ A`` (identity while merged)."""

    def __init__(self, out_features: int, in_features: int, rank: int, alpha: float,
                 dtype=None, device=None) -> None:
        super().__init__()
        self.rank, self.alpha = rank, alpha
        self.scale = alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, in_features, dtype=dtype, device=device))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank, dtype=dtype, device=device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.merged = False
        self._base: Optional[Tensor] = None

    def delta(self) -> Tensor:
        return self.scale * (self.lora_B @ self.lora_A)

    def forward(self, W: Tensor) -> Tensor:
        if self.merged:
            return W
        return W + self.delta()


def lora_targets(model: nn.Module) -> list[str]:
    """The default targets: every weight matrix (a 2-D parameter named ``weight``)
    inside ``model.blocks``: the projections, not the per-channel time constants."""
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        raise ValueError(f"{type(model).__name__} has no 'blocks'; name the targets")
    return [f"blocks.{n}" for n, p in blocks.named_parameters()
            if p.dim() == 2 and n.rsplit(".", 1)[-1] == "weight"]


def _owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    mod_name, _, pname = name.rpartition(".")
    try:
        mod = model.get_submodule(mod_name)
    except AttributeError:
        raise ValueError(f"LoRA target {name!r}: no module {mod_name!r} in the model") from None
    return mod, pname


def add_lora(model: nn.Module, rank: int = 8, alpha: Optional[float] = None,
             targets: Optional[Sequence[str]] = None, seed: int = 0) -> list[str]:
    """Freeze ``model`` and add a LoRA adapter to each target weight (default:
    :func:`lora_targets`). ``alpha`` defaults to ``2 * rank``. Returns the targets."""
    positive_int("rank", rank)
    alpha = positive_number("alpha", 2.0 * rank if alpha is None else alpha)
    if lora_modules(model):
        raise ValueError("the model already has LoRA adapters (remove_lora first)")
    targets = list(lora_targets(model) if targets is None else targets)
    if not targets:
        raise ValueError("no LoRA targets")
    for p in model.parameters():
        p.requires_grad_(False)
    g = torch.random.fork_rng(devices=[])
    with g:
        torch.manual_seed(seed)
        for name in targets:
            mod, pname = _owner(model, name)
            W = getattr(mod, pname, None)
            if not isinstance(W, Tensor) or W.dim() != 2:
                raise ValueError(f"LoRA target {name!r} is not a matrix parameter")
            if pname not in mod._parameters:
                raise ValueError(f"LoRA target {name!r} is not a parameter of its module")
            lora = LoRA(W.shape[0], W.shape[1], min(rank, *W.shape), alpha, W.dtype, W.device)
            parametrize.register_parametrization(mod, pname, lora)
    return targets


def lora_modules(model: nn.Module) -> dict[str, LoRA]:
    """``{target name: LoRA}`` of the adapters in ``model``."""
    out = {}
    for mname, mod in model.named_modules():
        plist = getattr(mod, "parametrizations", None)
        if plist is None:
            continue
        for pname, params in plist.items():
            for p in params:
                if isinstance(p, LoRA):
                    out[f"{mname}.{pname}" if mname else pname] = p
    return out


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The trainable tensors: every adapter's ``lora_A`` and ``lora_B``."""
    return [t for m in lora_modules(model).values() for t in (m.lora_A, m.lora_B)]


def _original(model: nn.Module, name: str) -> Tensor:
    mod, pname = _owner(model, name)
    return mod.parametrizations[pname].original


@torch.no_grad()
def merge(model: nn.Module) -> None:
    """Fold every adapter into its weight (``W += scale B A``); a copy of each base
    weight is kept, so :func:`unmerge` restores it exactly."""
    for name, m in lora_modules(model).items():
        if m.merged:
            continue
        W = _original(model, name)
        m._base = W.detach().clone()
        W.add_(m.delta())
        m.merged = True


@torch.no_grad()
def unmerge(model: nn.Module) -> None:
    """Undo :func:`merge`: the base weights come back bit for bit."""
    for name, m in lora_modules(model).items():
        if not m.merged:
            continue
        _original(model, name).copy_(m._base)
        m._base, m.merged = None, False


def remove_lora(model: nn.Module, merged: bool = True) -> nn.Module:
    """Remove the adapters: ``merged=True`` leaves plain weights ``W + scale B A`` (a
    model like the base, savable as an ordinary checkpoint), ``False`` the base weights."""
    unmerge(model)              # fold once, from the exact base
    for name, m in list(lora_modules(model).items()):
        mod, pname = _owner(model, name)
        if not merged:
            with torch.no_grad():
                m.lora_B.zero_()
        parametrize.remove_parametrizations(mod, pname, leave_parametrized=True)
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def adapter_state(model: nn.Module) -> dict[str, Tensor]:
    """The adapter tensors by name: ``<target>.lora_A`` / ``<target>.lora_B``."""
    out = {}
    for name, m in lora_modules(model).items():
        out[f"{name}.lora_A"] = m.lora_A.detach()
        out[f"{name}.lora_B"] = m.lora_B.detach()
    return out


def base_digest(model: nn.Module) -> str:
    """SHA-256 of the base weights (names, dtypes, shapes, bytes), adapters excluded
    and unmerged: what an adapter was trained on."""
    h = hashlib.sha256()
    mods = lora_modules(model)
    state = {}
    for k, v in model.state_dict().items():
        if ".lora_A" in k or ".lora_B" in k:
            continue
        k2 = k.replace(".parametrizations.", ".").replace(".original", "")
        state[k2] = v
    for name, m in mods.items():
        if m.merged:
            state[name] = m._base
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{list(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def save_adapter(path, model: nn.Module, meta: Optional[dict] = None,
                 extra: Optional[dict[str, Tensor]] = None) -> Path:
    """Write the adapters of ``model`` (and ``extra`` tensors, e.g. optimizer moments)
    as one data-only checkpoint; the metadata holds rank, alpha, targets and the base's
    SHA-256."""
    mods = lora_modules(model)
    if not mods:
        raise ValueError("the model has no LoRA adapters to save")
    first = next(iter(mods.values()))
    info = {"rank": {n: m.rank for n, m in mods.items()}, "alpha": first.alpha,
            "targets": list(mods), "base_sha256": base_digest(model),
            "config": model.config.to_dict() if hasattr(model, "config") else None,
            **(meta or {})}
    tensors = {f"adapter.{k}": v for k, v in adapter_state(model).items()}
    tensors.update(extra or {})
    return save_checkpoint(path, ADAPTER_KIND, info, tensors)


def load_adapter(path, what: str = "adapter") -> tuple[dict, dict[str, Tensor]]:
    """Read an adapter file: ``(meta, tensors)``; ``path`` may be the folder holding
    :data:`ADAPTER_NAME`."""
    path = Path(path)
    if path.is_dir():
        path = path / ADAPTER_NAME
    meta, tensors = load_checkpoint(path, ADAPTER_KIND, what)
    for key in ("rank", "alpha", "targets", "base_sha256"):
        if key not in meta:
            raise CheckpointError(f"{what} {path} has no {key!r} entry")
    return meta, tensors


def apply_adapter(model: nn.Module, path, merged: bool = True, what: str = "adapter",
                  check_base: bool = True) -> dict:
    """Add the adapters saved at ``path`` to ``model`` (checked: the same base weights,
    unless ``check_base=False``; targets; shapes); ``merged=True`` folds them in for
    decoding. Returns the metadata."""
    meta, tensors = load_adapter(path, what)
    if lora_modules(model):
        raise ValueError("the model already has LoRA adapters (remove_lora first)")
    digest = base_digest(model)
    if check_base and digest != meta["base_sha256"]:
        raise CheckpointError(f"{what} {path} was trained on other base weights (SHA-256 "
                              f"{meta['base_sha256'][:12]}..., this model's "
                              f"{digest[:12]}...): give the base checkpoint it was made for")
    targets = list(meta["targets"])
    ranks = meta["rank"]
    if not isinstance(ranks, dict) or set(ranks) != set(targets):
        raise CheckpointError(f"{what} {path}: its 'rank' entry does not match its targets")
    for t in targets:
        mod, pname = _owner(model, t)
        W = getattr(mod, pname, None)
        if not isinstance(W, Tensor) or W.dim() != 2:
            raise CheckpointError(f"{what} {path}: target {t!r} is not a matrix of this model")
        mod_r = int(ranks[t])
        add_one = LoRA(W.shape[0], W.shape[1], mod_r, float(meta["alpha"]), W.dtype, W.device)
        for p in model.parameters():
            p.requires_grad_(False)
        parametrize.register_parametrization(mod, pname, add_one)
    found = {k[len("adapter."):]: v for k, v in tensors.items() if k.startswith("adapter.")}
    check_tensors(path, what, found, adapter_state(model), "adapter.")
    with torch.no_grad():
        for name, m in lora_modules(model).items():
            m.lora_A.copy_(found[f"{name}.lora_A"])
            m.lora_B.copy_(found[f"{name}.lora_B"])
    if merged:
        merge(model)
    return meta
