"""Dialogue fine-tuning with LoRA adapters (``astro-neuron finetune``, docs/lm.md).

The base checkpoint's weights stay frozen; LoRA adapters (:mod:`astro_neuron.lm.lora`)
on every projection matrix train on chat data (:mod:`astro_neuron.lm.chat`) with the
loss on the assistant's bytes only. The run behaves like ``astro-neuron train``
(:mod:`astro_neuron.lm.train`, whose pieces it reuses): AdamW, warm-up then cosine,
gradient clipping, a tqdm bar with loss and ETA, a checkpoint
(``<out_dir>/ckpt.safetensors``: adapters, AdamW moments, RNG state, step, losses,
held-out evaluations; data only, SHA-256 checked) written atomically every
``ckpt_interval`` steps and at the end; ``resume=True`` continues exactly (batches
depend on ``(seed, step)`` only); Ctrl-C or SIGTERM finishes the step, saves and
stops; a non-finite loss stops without overwriting the last good checkpoint. The
finished adapters go to ``<out_dir>/adapter.safetensors`` (what ``chat --adapter``
reads); ``merged=True`` also writes ``<out_dir>/merged.safetensors``, an ordinary
model checkpoint with the adapters folded in.
"""

from __future__ import annotations

import math
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from tqdm.auto import tqdm

from astro_neuron.io import CheckpointError, atomic_json, clean_stale_tmp, ensure_folder
from astro_neuron.lm.chat import (
    IGNORE, Dialogue, batch_for_step, builtin_dialogues, collate, load_jsonl,
)
from astro_neuron.lm.lora import (
    ADAPTER_NAME, add_lora, apply_adapter, base_digest, load_adapter, lora_modules, lora_parameters,
    remove_lora, save_adapter,
)
from astro_neuron.lm.train import (
    LN2, NonFiniteLoss, TrainingStopped, _StopFlag, end_of_step, load_lm_checkpoint, lr_at,
    resolve_device, save_lm_checkpoint, set_lr,
)
from astro_neuron.validate import (
    non_negative_int, number_in_range, positive_int, positive_number,
)

__all__ = ["FinetuneConfig", "finetune", "assistant_loss", "load_chat_data",
           "load_finetuned", "CKPT_NAME", "MERGED_NAME"]

CKPT_NAME = "ckpt.safetensors"
MERGED_NAME = "merged.safetensors"


@dataclass
class FinetuneConfig:
    """Settings of a fine-tuning run (``astro-neuron finetune`` options)."""

    base: str = ""                  # the base model's checkpoint (from `astro-neuron train`)
    data: str = "builtin"           # "builtin" or a JSONL file of conversations
    heldout: str = "builtin"        # held-out conversations: "builtin", a JSONL file or ""
    out_dir: str = "out/finetune"
    rank: int = 8                   # LoRA rank r
    alpha: float = 16.0             # LoRA alpha (scale alpha / r); RWKV's tools use 2 r
    batch_size: int = 16            # conversations per step
    max_len: int = 256              # bytes per conversation (longer ones are cut)
    max_steps: int = 300
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup_steps: int = 20
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0
    eval_interval: int = 100        # steps between held-out evaluations (and at the end)
    ckpt_interval: int = 100        # steps between checkpoints (and at the end / on Ctrl-C)
    max_time_s: float = 0.0         # also stop after this many seconds (0: no limit)
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        for name in ("rank", "batch_size", "max_len", "max_steps", "eval_interval",
                     "ckpt_interval"):
            positive_int(name, getattr(self, name))
        for name in ("warmup_steps", "seed"):
            non_negative_int(name, getattr(self, name))
        positive_number("alpha", self.alpha)
        positive_number("lr", self.lr)
        for name in ("min_lr", "weight_decay", "grad_clip", "max_time_s"):
            setattr(self, name, number_in_range(name, getattr(self, name), 0.0))
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr:g}) must not exceed lr ({self.lr:g})")
        for name in ("beta1", "beta2"):
            number_in_range(name, getattr(self, name), 0.0, 1.0, hi_open=True)
        for name in ("base", "data", "heldout", "out_dir", "device"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string, got {getattr(self, name)!r}")
        if not self.base:
            raise ValueError("base: give the checkpoint of the model to fine-tune")


def load_chat_data(spec: str, split: str = "train") -> list[Dialogue]:
    """``"builtin"`` (the built-in question/answer turns of ``split``) or a JSONL file."""
    if spec == "builtin":
        return builtin_dialogues(split)
    return load_jsonl(spec)


@torch.no_grad()
def assistant_loss(model, dialogues: Sequence[Dialogue], max_len: int = 256,
                   batch_size: int = 32) -> float:
    """Mean cross-entropy (nats) per assistant byte over ``dialogues``: the loss on the
    assistant's tokens only, every such token weighted alike."""
    if not dialogues:
        raise ValueError("no conversations to evaluate")
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    tot, n = 0.0, 0
    try:
        for i in range(0, len(dialogues), batch_size):
            x, y = collate(dialogues[i:i + batch_size], max_len)
            k = int((y != IGNORE).sum())
            if k == 0:
                continue
            _, loss = model(x.to(dev), y.to(dev))
            tot += float(loss) * k
            n += k
    finally:
        model.train(was)
    if n == 0:
        raise ValueError("the conversations hold no assistant tokens within max_len")
    return tot / n


def _make_optimizer(model, cfg: FinetuneConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(lora_parameters(model), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                             weight_decay=cfg.weight_decay)


def _opt_tensors(opt: torch.optim.Optimizer) -> dict:
    out = {}
    for idx, st in opt.state_dict()["state"].items():
        for key, v in st.items():
            if not isinstance(v, torch.Tensor):
                v = torch.tensor(v, dtype=torch.float32)
            out[f"optimizer.{idx}.{key}"] = v
    return out


def _same_settings(old: dict, cfg: FinetuneConfig, path: Path) -> None:
    # the base itself is checked by the SHA-256 of its weights, not by its path
    for key in ("data", "rank", "alpha", "seed", "batch_size", "max_len"):
        if key in old and old[key] != getattr(cfg, key):
            raise ValueError(f"{path} was made with {key}={old[key]!r}, this run asks "
                             f"{key}={getattr(cfg, key)!r}: resume needs the same; start a "
                             "new run in another --out folder")


def finetune(cfg: FinetuneConfig, resume: bool = False, progress: bool = True,
             merged: bool = False, train_data: Optional[Sequence[Dialogue]] = None,
             heldout: Optional[Sequence[Dialogue]] = None,
             callback: Optional[Callable[[dict], None]] = None) -> dict:
    """Fine-tune ``cfg.base`` with LoRA on ``cfg.data``; returns a summary dict
    (``heldout_loss_before`` / ``_after`` in nats per assistant byte, ``losses``,
    ``evals``, ``adapter``...). ``train_data`` / ``heldout`` skip loading (tests, demo).
    ``callback(info)`` is called after every step with ``{"step", "loss", "lr", "model"}``.
    Raises :class:`NonFiniteLoss` and :class:`TrainingStopped` like ``train``."""
    device = resolve_device(cfg.device)
    out = ensure_folder(cfg.out_dir, "out_dir")
    ckpt_path, adapter_path = out / CKPT_NAME, out / ADAPTER_NAME
    clean_stale_tmp(ckpt_path)
    train_data = list(train_data) if train_data is not None else load_chat_data(cfg.data)
    if heldout is None and cfg.heldout:
        heldout = load_chat_data(cfg.heldout, "heldout")
    heldout = list(heldout or [])
    model, base_ck = load_lm_checkpoint(cfg.base, device, "base checkpoint")
    if progress:
        print(f"fine-tuning {cfg.base} ({model.config.arch}, {model.num_params():,} "
              f"parameters) on {len(train_data):,} conversations"
              + (f", {len(heldout):,} held out" if heldout else ""))
    torch.manual_seed(cfg.seed)
    add_lora(model, cfg.rank, cfg.alpha, seed=cfg.seed)
    model.to(device)
    opt = _make_optimizer(model, cfg)
    n_train = sum(p.numel() for p in lora_parameters(model))
    start, losses, evals, train_time = 0, [], [], 0.0
    before = None
    if resume:
        if not ckpt_path.is_file():
            raise FileNotFoundError(f"no checkpoint {ckpt_path} to resume")
        meta, tensors = load_adapter(ckpt_path, "checkpoint to resume")
        if meta["base_sha256"] != base_digest(model):
            raise CheckpointError(f"{ckpt_path} was made from other base weights than "
                                  f"{cfg.base}")
        _same_settings(meta.get("finetune", {}), cfg, ckpt_path)
        for key in ("step", "losses", "evals", "train_time_s"):
            if key not in meta:
                raise CheckpointError(f"{ckpt_path} holds no {key!r}: it cannot be resumed")
        with torch.no_grad():
            for name, m in lora_modules(model).items():
                for part in ("lora_A", "lora_B"):
                    t = tensors.get(f"adapter.{name}.{part}")
                    p = getattr(m, part)
                    if t is None or t.shape != p.shape:
                        raise CheckpointError(f"{ckpt_path}: adapter {name}.{part} missing "
                                              "or of another shape")
                    p.copy_(t)
        sd = opt.state_dict()
        state: dict = {}
        for k, v in tensors.items():
            if k.startswith("optimizer."):
                _, idx, key = k.split(".", 2)
                state.setdefault(int(idx), {})[key] = v.to(device)
        sd["state"] = state
        opt.load_state_dict(sd)
        if "rng.torch_cpu" in tensors:
            torch.set_rng_state(tensors["rng.torch_cpu"])
        start, losses, evals = int(meta["step"]), list(meta["losses"]), list(meta["evals"])
        train_time = float(meta["train_time_s"])
        before = meta.get("heldout_loss_before")
        if progress:
            print(f"resuming from {ckpt_path} at step {start}")
    elif heldout:
        before = assistant_loss(model, heldout, cfg.max_len)
        if progress:
            print(f"held-out assistant loss before: {before:.4f} nats/byte "
                  f"({before / LN2:.3f} bits/byte)")

    def diverged(step: int, what: str) -> NonFiniteLoss:
        return NonFiniteLoss(f"{what} at step {step} (lr {lr_at(step, cfg):.3g}); stopped "
                             f"without saving. The last good checkpoint is kept: {ckpt_path}"
                             f"{'' if ckpt_path.exists() else ' (none written yet)'}. Try a "
                             "lower lr.")

    def save(step: int) -> None:
        if not all(bool(torch.isfinite(p).all()) for p in lora_parameters(model)):
            raise diverged(step, "the adapters became NaN or infinite")
        extra = _opt_tensors(opt)
        extra["rng.torch_cpu"] = torch.get_rng_state()
        save_adapter(ckpt_path, model, {
            "finetune": asdict(cfg), "step": step, "losses": losses, "evals": evals,
            "train_time_s": train_time, "heldout_loss_before": before,
            "base_run": base_ck.get("run_config")}, extra)

    def do_eval(step: int) -> None:
        if not heldout:
            return
        v = assistant_loss(model, heldout, cfg.max_len)
        if not math.isfinite(v):
            raise diverged(step, f"the held-out loss became {v}")
        evals.append({"step": step, "heldout_loss": v})
        if progress:
            tqdm.write(f"step {step}: held-out assistant loss {v:.4f} nats/byte")

    bar = tqdm(total=cfg.max_steps, initial=start, disable=not progress,
               desc=f"finetune {model.config.arch}", unit="step", dynamic_ncols=True)
    step, interrupted = start, False
    model.train()
    try:
        with _StopFlag() as stop:
            while step < cfg.max_steps:
                t0 = time.perf_counter()
                lr = set_lr(opt, step, cfg)
                x, y = batch_for_step(train_data, step, cfg.seed, cfg.batch_size, cfg.max_len)
                _, loss = model(x.to(device), y.to(device))
                lval = float(loss.detach())
                if not math.isfinite(lval):
                    raise diverged(step, f"loss became {lval}")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(lora_parameters(model), cfg.grad_clip)
                opt.step()
                step += 1
                train_time += time.perf_counter() - t0
                losses.append(lval)
                bar.update(1)
                bar.set_postfix(loss=f"{lval:.3f}")
                if callback is not None:
                    callback({"step": step, "loss": lval, "lr": lr, "model": model})
                ended = end_of_step(step, cfg, evals, do_eval, save, stopped=lambda: stop.set,
                                    time_up=cfg.max_time_s > 0 and train_time >= cfg.max_time_s,
                                    say=progress)
                if ended:
                    interrupted = ended == "stop"
                    break
    finally:
        bar.close()
    if interrupted:
        save(step)
        print(f"interrupted ({signal.Signals(stop.signum).name}): checkpoint saved at step "
              f"{step} in {ckpt_path}; continue with --resume")
        raise TrainingStopped(stop.signum)
    model.eval()
    save_adapter(adapter_path, model, {"finetune": asdict(cfg), "step": step,
                                       "heldout_loss_before": before, "evals": evals})
    merged_path = None
    if merged:
        base_cfg = base_ck.get("run_config")
        remove_lora(model, merged=True)
        merged_path = save_lm_checkpoint(out / MERGED_NAME, model, base_cfg,
                                         info={"finetune": asdict(cfg), "step": step})
    after = evals[-1]["heldout_loss"] if evals else None
    summary = {"arch": model.config.arch, "params": model.num_params(),
               "trainable_params": n_train, "steps": step,
               "train_time_s": round(train_time, 2), "heldout_loss_before": before,
               "heldout_loss_after": after, "evals": evals, "losses": losses,
               "adapter": str(adapter_path), "checkpoint": str(ckpt_path),
               "merged": str(merged_path) if merged_path else None}
    atomic_json({k: v for k, v in summary.items() if k != "losses"}, out / "metrics.json")
    return summary


def load_finetuned(checkpoint, adapter=None, device: str = "cpu", merged: bool = True):
    """The base model of ``checkpoint`` with the adapter at ``adapter`` (a file or the
    folder of a fine-tuning run) added, merged by default; returns ``(model, meta)``."""
    model, _ = load_lm_checkpoint(checkpoint, device)
    meta = {}
    if adapter is not None:
        meta = apply_adapter(model, adapter, merged=merged)
    return model.eval(), meta
