"""Training loop for AM-SNet and its baselines, as plain functions (docs/lm.md).

AdamW (decay on matrices only), linear warm-up then cosine decay, gradient clipping,
evaluation in bits per byte, seeds, a tqdm bar with loss, tokens/s and ETA.
Checkpoints (``<out_dir>/ckpt.pt``) are written atomically and hold both configs;
``resume=True`` continues exactly where the checkpoint left off (batches are a pure
function of the step, see :func:`~astro_neuron.lm.data.batch_for_step`). Ctrl-C
finishes the current step, saves a checkpoint and stops; a non-finite loss stops the
run with :class:`NonFiniteLoss` and leaves the last good checkpoint untouched. (A
second Ctrl-C stops at once, without saving: the last periodic checkpoint stays.)

Under ``torchrun`` (``WORLD_SIZE`` > 1) the model is wrapped in
DistributedDataParallel (gloo on CPU, NCCL on GPU); every rank takes its share of the
same global batch, so the run equals a single-process run with that batch.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import threading
import time
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from tqdm.auto import tqdm

from astro_neuron.io import atomic_json, atomic_torch_save, load_checkpoint
from astro_neuron.lm.config import AMSNetConfig, check_table, config_from_dict
from astro_neuron.lm.data import CORPORA, Corpus, batch_for_step, eval_windows, load_corpus
from astro_neuron.lm.model import LanguageModel, build_model
from astro_neuron.validate import (
    choice, non_negative_int, number_in_range, positive_int, positive_number,
)

__all__ = ["DataConfig", "TrainConfig", "RunConfig", "NonFiniteLoss", "train", "train_local_ddp",
           "evaluate",
           "load_model", "load_run_config", "apply_overrides", "default_config_path",
           "lr_at", "CKPT_NAME"]

CKPT_NAME = "ckpt.pt"
LN2 = math.log(2.0)


@dataclass
class DataConfig:
    corpus: str = "stdlib"          # "stdlib" (built in), "enwik8", "wikitext103", "file"
    path: str = ""                  # the file / folder for enwik8, wikitext103, file

    def __post_init__(self) -> None:
        choice("data.corpus", self.corpus, CORPORA)


@dataclass
class TrainConfig:
    out_dir: str = "out/lm"         # checkpoint, metrics.json and samples go here
    batch_size: int = 16            # global batch: sequences per optimizer step (all ranks)
    max_steps: int = 2000           # optimizer steps; token budget = steps * batch * block
    lr: float = 2e-3                # peak learning rate
    min_lr: float = 2e-4            # learning rate at the end of the cosine decay
    warmup_steps: int = 100         # linear warm-up steps
    weight_decay: float = 0.1       # AdamW decay of matrices (not of decays/thresholds/norms)
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0          # max global gradient norm (0: off)
    eval_interval: int = 250        # steps between evaluations (and at the end)
    eval_tokens: int = 65536        # validation tokens per evaluation (first ones of the split)
    ckpt_interval: int = 250        # steps between checkpoints (and at the end / on Ctrl-C)
    max_time_s: float = 0.0         # also stop after this many seconds of training (0: no limit)
    seed: int = 0                   # model init and batch order
    device: str = "auto"            # "cpu", "cuda", "cuda:N" or "auto"

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_steps", "eval_interval", "eval_tokens", "ckpt_interval"):
            positive_int(f"train.{name}", getattr(self, name))
        for name in ("warmup_steps", "seed"):
            non_negative_int(f"train.{name}", getattr(self, name))
        for name in ("lr", "min_lr", "weight_decay", "beta1", "beta2", "grad_clip", "max_time_s"):
            setattr(self, name, number_in_range(f"train.{name}", getattr(self, name), 0.0))
        positive_number("train.lr", self.lr)
        if not (self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"train.device must be 'auto', 'cpu' or 'cuda[:N]', got "
                             f"{self.device!r}")


@dataclass
class RunConfig:
    """Everything a run needs: the three tables of a TOML config file."""

    model: AMSNetConfig = field(default_factory=AMSNetConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return {"model": self.model.to_dict(), "data": asdict(self.data),
                "train": asdict(self.train)}

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        unknown = sorted(set(d) - {"model", "data", "train"})
        if unknown:
            raise ValueError(f"unknown config table(s) {unknown}; expected model, data, train")
        return cls(config_from_dict(d.get("model", {})),
                   _dc_from_dict(DataConfig, d.get("data", {}), "data"),
                   _dc_from_dict(TrainConfig, d.get("train", {}), "train"))


def _dc_from_dict(cls, d: dict, table: str):
    return cls(**check_table(cls, d, f"[{table}]"))


# ------------------------------------------------------------------ config files

def default_config_path(name: str = "default") -> Path:
    """A config shipped with the package: ``default``, ``tiny``, ``compare`` ..."""
    p = Path(__file__).parent / "configs" / f"{name}.toml"
    if not p.is_file():
        have = sorted(x.stem for x in p.parent.glob("*.toml"))
        raise FileNotFoundError(f"no built-in config {name!r}; built-in: {have}")
    return p


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text                                   # bare words are strings


def apply_overrides(d: dict, overrides: list[str]) -> dict:
    """Apply ``table.key=value`` overrides (values in TOML syntax) to a config dict."""
    d = {k: dict(v) for k, v in d.items()}
    for item in overrides or []:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ValueError(f"override {item!r} must look like table.key=value, "
                             "e.g. model.d_model=128 or train.lr=1e-3")
        key, value = item.split("=", 1)
        table, name = key.strip().split(".", 1)
        if table not in ("model", "data", "train"):
            raise ValueError(f"override {item!r}: table must be model, data or train")
        d.setdefault(table, {})[name.strip()] = _parse_value(value.strip())
    return d


def load_run_config(path=None, overrides: Optional[list[str]] = None) -> RunConfig:
    """Read a TOML config (default: the built-in ``default.toml``) and apply overrides.

    ``path`` may also name a built-in config (``"tiny"``, ``"compare"``...).
    """
    if path is None:
        path = default_config_path()
    p = Path(path)
    if not p.is_file() and not p.suffix:
        p = default_config_path(str(path))
    if not p.is_file():
        raise FileNotFoundError(f"config file not found: {p}")
    try:
        d = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{p} is not valid TOML: {exc}") from None
    return RunConfig.from_dict(apply_overrides(d, overrides or []))


# ------------------------------------------------------------------ pieces

class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; the run stopped without saving over the last
    good checkpoint."""


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to ``lr`` over ``warmup_steps``, then cosine down to ``min_lr``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.max_steps - cfg.warmup_steps)
    frac = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * frac))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices (dim >= 2), none on vectors (decays, norms...)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    other = [p for p in params if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": other, "weight_decay": 0.0}],
                             lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but torch sees no CUDA GPU here")
    return torch.device(name)


@torch.no_grad()
def evaluate(model: LanguageModel, data: torch.Tensor, block_size: int, max_tokens: int,
             batch_size: int = 16, device=None, rank: int = 0, world_size: int = 1) -> float:
    """Bits per byte of ``model`` on the first ``max_tokens`` tokens of ``data``."""
    x_all, y_all = eval_windows(data, block_size, max_tokens)
    was = model.training
    model.eval()
    device = device or next(model.parameters()).device
    tot = torch.zeros(2, dtype=torch.float64, device=device)        # (sum nats, tokens)
    mine = range(rank, x_all.shape[0], world_size)
    rows = list(mine)
    for i in range(0, len(rows), batch_size):
        sel = rows[i:i + batch_size]
        x, y = x_all[sel].to(device), y_all[sel].to(device)
        _, loss = model(x, y)
        tot[0] += float(loss) * y.numel()
        tot[1] += y.numel()
    if world_size > 1:
        dist.all_reduce(tot)
    model.train(was)
    return float(tot[0] / tot[1]) / LN2


def load_model(path, device="cpu") -> tuple[LanguageModel, dict]:
    """Rebuild a model from a checkpoint file; returns ``(model, checkpoint dict)``."""
    ckpt = load_checkpoint(path, "checkpoint")
    for key in ("config", "model"):
        if key not in ckpt:
            raise ValueError(f"{path} is not an astro-neuron LM checkpoint (no {key!r} entry)")
    model = build_model(config_from_dict(ckpt["config"]))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not fit the stored config ({exc})") from None
    return model.to(device), ckpt


# ------------------------------------------------------------------ the loop

class _StopFlag:
    """Ctrl-C sets a flag (the step in flight finishes); a second Ctrl-C raises."""

    def __init__(self) -> None:
        self.set = False
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.getsignal(signal.SIGINT)

            def handler(signum, frame):
                if self.set:
                    raise KeyboardInterrupt
                self.set = True
            signal.signal(signal.SIGINT, handler)
        return self

    def __exit__(self, *exc) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def _dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def train(run: RunConfig, resume: bool = False, progress: bool = True,
          corpus: Optional[Corpus] = None, callback: Optional[Callable[[dict], None]] = None,
          ) -> dict:
    """Train ``run.model`` on ``run.data`` as ``run.train`` says; returns a summary dict.

    ``resume=True`` continues from ``<out_dir>/ckpt.pt``. ``callback(info)`` is called
    after every step with ``{"step", "loss", "lr", "model"}``. ``corpus`` skips loading
    (tests, compare). Raises :class:`NonFiniteLoss` on a NaN/Inf loss and
    ``KeyboardInterrupt`` after saving when interrupted.
    """
    tc, mc = run.train, run.model
    rank, world, local_rank = _dist_info()
    ddp = world > 1
    owns_group = False
    device = resolve_device(tc.device)
    if ddp:
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            owns_group = True
    master = rank == 0
    out = Path(tc.out_dir)
    ckpt_path = out / CKPT_NAME
    corpus = corpus or load_corpus(run.data.corpus, run.data.path or None)
    if master and progress:
        print(corpus.describe())

    torch.manual_seed(tc.seed)
    model = build_model(mc).to(device)
    opt = make_optimizer(model, tc)
    start, losses, evals, tokens_seen, train_time = 0, [], [], 0, 0.0
    if resume:
        ck = load_checkpoint(ckpt_path, "checkpoint to resume")
        if ck.get("config") != mc.to_dict():
            raise ValueError(f"{ckpt_path} was trained with another model config; resume "
                             "needs the same [model] table (compare with its 'config' entry)")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        start, losses, evals = ck["step"], list(ck["losses"]), list(ck["evals"])
        tokens_seen, train_time = ck["tokens_seen"], ck["train_time_s"]
        if master and progress:
            print(f"resuming from {ckpt_path} at step {start}")
    net = torch.nn.parallel.DistributedDataParallel(model) if ddp else model

    def diverged(step: int, what: str) -> NonFiniteLoss:
        return NonFiniteLoss(
            f"{what} at step {step} (lr {lr_at(step, tc):.3g}); stopped without saving. "
            f"The last good checkpoint is kept: {ckpt_path}"
            f"{'' if ckpt_path.exists() else ' (none written yet)'}. "
            "Try a lower train.lr, a smaller train.grad_clip or another seed.")

    def weights_finite() -> bool:
        return all(bool(torch.isfinite(p).all()) for p in model.parameters())

    def save(step: int) -> None:
        if not weights_finite():
            raise diverged(step, "the weights became NaN or infinite")
        if not master:
            return
        atomic_torch_save({
            "config": mc.to_dict(), "run_config": run.to_dict(), "model": model.state_dict(),
            "optimizer": opt.state_dict(), "step": step, "losses": losses, "evals": evals,
            "tokens_seen": tokens_seen, "train_time_s": train_time,
            "world_size": world}, ckpt_path)

    def do_eval(step: int) -> None:
        bpb = evaluate(model, corpus.val, mc.block_size, tc.eval_tokens, device=device,
                       rank=rank, world_size=world)
        evals.append({"step": step, "val_bpb": bpb, "tokens": tokens_seen})
        if master and progress:
            tqdm.write(f"step {step}: val {bpb:.4f} bits/byte")

    tok_per_step = tc.batch_size * mc.block_size
    bar = tqdm(total=tc.max_steps, initial=start, disable=not (master and progress),
               desc=f"train {mc.arch}", unit="step", dynamic_ncols=True)
    step = start
    interrupted = False
    model.train()
    try:
        with _StopFlag() as stop:
            while step < tc.max_steps:
                t0 = time.perf_counter()
                lr = lr_at(step, tc)
                for g in opt.param_groups:
                    g["lr"] = lr
                x, y = batch_for_step(corpus.train, step, tc.seed, tc.batch_size,
                                      mc.block_size, rank, world)
                try:
                    _, loss = net(x.to(device), y.to(device))
                except (ValueError, RuntimeError):
                    if not weights_finite():          # e.g. a decay the core rejects as NaN
                        raise diverged(step, "the weights became NaN or infinite") from None
                    raise
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if tc.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
                time_up = master and tc.max_time_s > 0 and train_time >= tc.max_time_s
                stat = torch.cat([loss.detach().double().reshape(1),
                                  torch.tensor([float(stop.set), float(time_up)],
                                               dtype=torch.float64, device=device)])
                if ddp:
                    dist.all_reduce(stat)
                    stat[0] /= world
                lval = float(stat[0])
                if not math.isfinite(lval):
                    raise diverged(step, f"loss became {lval}")
                opt.step()
                step += 1
                tokens_seen += tok_per_step
                train_time += time.perf_counter() - t0
                losses.append(lval)
                bar.update(1)
                bar.set_postfix(loss=f"{lval:.3f}",
                                tok_s=f"{tokens_seen / max(train_time, 1e-9):,.0f}")
                if callback is not None:
                    callback({"step": step, "loss": lval, "lr": lr, "model": model})
                if step % tc.eval_interval == 0 or step == tc.max_steps:
                    do_eval(step)
                if step % tc.ckpt_interval == 0 or step == tc.max_steps:
                    save(step)
                # under DDP every rank stops at the same step: the flag went through
                # the all-reduce above; one process stops right after the current step
                if (float(stat[1]) > 0) if ddp else stop.set:
                    interrupted = True
                    break
                if float(stat[2]) > 0 and step < tc.max_steps:  # rank 0's clock decides
                    if not evals or evals[-1]["step"] != step:
                        do_eval(step)
                    save(step)
                    if master and progress:
                        tqdm.write(f"time budget of {tc.max_time_s:g} s reached at step {step}")
                    break
    finally:
        bar.close()
    if owns_group:
        dist.barrier()
        dist.destroy_process_group()
    if interrupted:
        save(step)
        if master:
            print(f"interrupted: checkpoint saved at step {step} in {ckpt_path}; "
                  "continue with --resume")
        raise KeyboardInterrupt
    summary = {"arch": mc.arch, "params": model.num_params(), "steps": step,
               "tokens": tokens_seen, "train_time_s": round(train_time, 2),
               "tokens_per_s": round(tokens_seen / max(train_time, 1e-9), 1),
               "final_val_bpb": evals[-1]["val_bpb"] if evals else None,
               "evals": evals, "losses": losses, "checkpoint": str(ckpt_path)}
    if master:
        atomic_json({k: v for k, v in summary.items() if k != "losses"}, out / "metrics.json")
    return summary


def _local_ddp_worker(rank: int, world: int, port: int, run: RunConfig, corpus,
                      threads: int) -> None:
    torch.set_num_threads(threads)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    try:
        train(run, progress=False, corpus=corpus)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def train_local_ddp(run: RunConfig, world_size: int = 2, corpus: Optional[Corpus] = None,
                    threads: int = 1) -> dict:
    """Train with ``world_size`` local processes (DDP over gloo, or NCCL on GPUs),
    without ``torchrun``; returns the summary rank 0 wrote (``metrics.json``).

    The same as ``torchrun --nproc_per_node=N -m astro_neuron train ...``.
    """

    positive_int("world_size", world_size)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_local_ddp_worker, args=(world_size, port, run, corpus, threads),
             nprocs=world_size, join=True)
    return json.loads((Path(run.train.out_dir) / "metrics.json").read_text())
