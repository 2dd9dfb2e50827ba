"""Training loop for AM-SNet and its baselines, as plain functions (docs/lm.md).

AdamW (decay on matrices only), linear warm-up then cosine decay, gradient clipping,
evaluation in bits per byte, seeds, a tqdm bar with loss, tokens/s and ETA.
Checkpoints (``<out_dir>/ckpt.safetensors``, data only: :mod:`astro_neuron.io`) are
written atomically and hold both configs, the weights, the optimizer's moments and the
RNG state; ``resume=True`` continues exactly where the checkpoint left off (batches are
a pure function of the seed and the step, see
:func:`~astro_neuron.lm.data.batch_for_step`), and refuses another seed or batch size.
Ctrl-C or SIGTERM finishes the current step, saves a checkpoint and stops; a non-finite
loss stops the run with :class:`NonFiniteLoss` and leaves the last good checkpoint
untouched. (A second signal stops at once, without saving: the last periodic checkpoint
stays.)

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

from astro_neuron.io import (
    CONVERT_COMMAND, CheckpointError, atomic_json, check_tensors, clean_stale_tmp,
    ensure_folder, load_checkpoint, save_checkpoint,
)
from astro_neuron.lm.config import AMSNetConfig, check_table, config_from_dict, stored_config
from astro_neuron.lm.data import CORPORA, Corpus, batch_for_step, eval_windows, load_corpus
from astro_neuron.lm.model import LanguageModel, build_model
from astro_neuron.validate import (
    choice, non_negative_int, number_in_range, positive_int, positive_number,
)

__all__ = ["DataConfig", "TrainConfig", "RunConfig", "NonFiniteLoss", "train", "train_local_ddp",
           "evaluate",
           "load_model", "load_lm_checkpoint", "save_lm_checkpoint", "load_run_config",
           "apply_overrides", "default_config_path", "lr_at", "set_lr", "end_of_step", "CKPT_NAME",
           "TrainingStopped"]

CKPT_NAME = "ckpt.safetensors"
LM_KIND = "lm"
LN2 = math.log(2.0)


@dataclass
class DataConfig:
    corpus: str = "stdlib"          # "stdlib" (built in), "enwik8", "wikitext103", "file"
    path: str = ""                  # the file / folder for enwik8, wikitext103, file

    def __post_init__(self) -> None:
        if not isinstance(self.path, str):
            raise ValueError(f"data.path must be a string, got {self.path!r}")
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
        if self.min_lr > self.lr:
            raise ValueError(f"train.min_lr ({self.min_lr:g}) must not exceed train.lr "
                             f"({self.lr:g}): the cosine decay goes from lr down to min_lr")
        for name in ("beta1", "beta2"):
            if getattr(self, name) >= 1:
                raise ValueError(f"train.{name} must be < 1, got {getattr(self, name)!r}")
        for name in ("out_dir", "device"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"train.{name} must be a string, got {getattr(self, name)!r}")
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
    if p.is_dir():
        raise IsADirectoryError(f"config {p} is a folder; give a TOML file or a built-in "
                                "name (default, tiny, compare)")
    if not p.exists() and not p.suffix and len(p.parts) == 1:
        p = default_config_path(str(path))
    if not p.is_file():
        raise FileNotFoundError(f"config file not found: {p}")
    try:
        d = tomllib.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{p} is not a TOML config (not UTF-8 text)") from None
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


def set_lr(opt: torch.optim.Optimizer, step: int, cfg) -> float:
    """Give every parameter group of ``opt`` the rate :func:`lr_at` ``(step, cfg)``; returns it."""
    lr = lr_at(step, cfg)
    for g in opt.param_groups:
        g["lr"] = lr
    return lr


def _optimizer_groups(model: torch.nn.Module) -> tuple[list, list]:
    """The trainable parameters in the optimizer's order: matrices, then the rest."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [p for p in params if p.dim() >= 2], [p for p in params if p.dim() < 2]


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices (dim >= 2), none on vectors (decays, norms...)."""
    decay, other = _optimizer_groups(model)
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


def save_lm_checkpoint(path, model: LanguageModel, run_config: Optional[dict] = None,
                       optimizer: Optional[torch.optim.Optimizer] = None,
                       info: Optional[dict] = None, rng_state: Optional[torch.Tensor] = None,
                       ) -> Path:
    """Write a language model (and, for training, its optimizer state, RNG state and
    progress ``info``: step, losses, evals ...) as one data-only checkpoint file."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    if optimizer is not None:
        for idx, st in optimizer.state_dict()["state"].items():
            for key, v in st.items():
                if not isinstance(v, torch.Tensor):
                    v = torch.tensor(v, dtype=torch.float32)
                tensors[f"optimizer.{idx}.{key}"] = v
    if rng_state is not None:
        tensors["rng.torch_cpu"] = rng_state
    meta = {"config": model.config.to_dict(), "run_config": run_config, **(info or {})}
    return save_checkpoint(path, LM_KIND, meta, tensors)


def _meta_field(path, meta: dict, key: str, check, want: str, default=None):
    if key not in meta:
        return default
    v = meta[key]
    if not check(v):
        raise CheckpointError(f"checkpoint {path}: entry {key!r} must be {want}, got {v!r}")
    return v


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def load_lm_checkpoint(path, device="cpu", what: str = "checkpoint"
                       ) -> tuple[LanguageModel, dict]:
    """Rebuild a model from a checkpoint file, every tensor checked against the stored
    config (names, shapes, dtypes, finite): returns ``(model, checkpoint dict)``.

    The dict holds the JSON entries (``config``, ``run_config``, ``step``, ``losses``,
    ``evals`` ...) and the tensors: ``model`` (state dict), ``optimizer`` (per-parameter
    AdamW state, by index) and ``rng`` (CPU generator state, or None)."""
    path = Path(path)
    meta, tensors = load_checkpoint(path, LM_KIND, what)
    if not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"{what} {path} has no model config")
    try:
        model = build_model(stored_config(meta["config"]))
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{what} {path}: its stored model config is invalid ({exc})") \
            from None
    groups = {"model": {}, "optimizer": {}, "rng": {}}
    for name, t in tensors.items():
        head, _, rest = name.partition(".")
        if head not in groups or not rest:
            raise CheckpointError(f"{what} {path}: unexpected tensor {name!r}")
        groups[head][rest] = t
    check_tensors(path, what, groups["model"], model.state_dict(), "model.")
    params = [p for g in _optimizer_groups(model) for p in g]
    opt_state: dict[int, dict] = {}
    for name, t in groups["optimizer"].items():
        idx, _, key = name.partition(".")
        if not idx.isdigit() or int(idx) >= len(params) or key not in ("step", "exp_avg",
                                                                       "exp_avg_sq"):
            raise CheckpointError(f"{what} {path}: unexpected tensor 'optimizer.{name}'")
        opt_state.setdefault(int(idx), {})[key] = t
    for idx, st in opt_state.items():
        p = params[idx]
        want = {"step": torch.empty((), dtype=torch.float32),
                "exp_avg": torch.empty(p.shape, dtype=p.dtype),
                "exp_avg_sq": torch.empty(p.shape, dtype=p.dtype)}
        check_tensors(path, what, st, want, f"optimizer.{idx}.")
    rng = groups["rng"]
    if rng and (set(rng) != {"torch_cpu"} or rng["torch_cpu"].dtype != torch.uint8
                or rng["torch_cpu"].dim() != 1):
        raise CheckpointError(f"{what} {path}: unexpected RNG tensors {sorted(rng)}")
    _meta_field(path, meta, "step", _is_int, "a non-negative integer")
    _meta_field(path, meta, "tokens_seen", _is_int, "a non-negative integer")
    _meta_field(path, meta, "world_size", _is_int, "a non-negative integer")
    _meta_field(path, meta, "train_time_s", lambda v: isinstance(v, (int, float))
                and not isinstance(v, bool) and v >= 0, "a number >= 0")
    _meta_field(path, meta, "losses", lambda v: isinstance(v, list) and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) for x in v), "a list of numbers")
    _meta_field(path, meta, "evals", lambda v: isinstance(v, list) and all(
        isinstance(x, dict) for x in v), "a list of tables")
    _meta_field(path, meta, "run_config", lambda v: v is None or isinstance(v, dict),
                "a table")
    model.load_state_dict(groups["model"])
    ck = dict(meta)
    ck.update(model=groups["model"], optimizer=opt_state, rng=rng.get("torch_cpu"))
    return model.to(device), ck


def load_model(path, device="cpu") -> tuple[LanguageModel, dict]:
    """Rebuild a model from a checkpoint file; returns ``(model, checkpoint dict)``
    (:func:`load_lm_checkpoint`)."""
    return load_lm_checkpoint(path, device)


# ------------------------------------------------------------------ the loop

class TrainingStopped(KeyboardInterrupt):
    """Training stopped on Ctrl-C (SIGINT) or SIGTERM after saving a checkpoint;
    ``signum`` says which signal."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _StopFlag:
    """Ctrl-C or SIGTERM sets a flag (the step in flight finishes); a second one raises."""

    def __init__(self) -> None:
        self.set = False
        self.signum = signal.SIGINT
        self._old: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            def handler(signum, frame):
                if self.set:
                    raise TrainingStopped(signum)
                self.set, self.signum = True, signum
            for sig in _STOP_SIGNALS:
                self._old[sig] = signal.getsignal(sig)
                signal.signal(sig, handler)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def end_of_step(step: int, cfg, evals: list, do_eval: Callable[[int], None],
                save: Callable[[int], None], stopped: Callable[[], bool], time_up: bool,
                say: bool = True) -> Optional[str]:
    """The checkpoint/stop bookkeeping after optimiser step ``step`` (already counted),
    shared by :func:`train` and :func:`~astro_neuron.lm.finetune.finetune`; ``cfg`` has
    ``max_steps``, ``eval_interval``, ``ckpt_interval``, ``max_time_s``.

    Evaluates every ``eval_interval`` steps and at the last, saves every
    ``ckpt_interval`` and at the last; then returns ``"stop"`` when ``stopped()`` (asked
    after the saving, so a signal that came meanwhile counts; the caller saves and raises
    :class:`TrainingStopped`), ``"time"`` when the time
    budget ran out before ``max_steps`` (evaluated, unless this step just was, and saved;
    ``say``: tell so on the progress bar), else ``None`` (go on)."""
    if step % cfg.eval_interval == 0 or step == cfg.max_steps:
        do_eval(step)
    if step % cfg.ckpt_interval == 0 or step == cfg.max_steps:
        save(step)
    if stopped():
        return "stop"
    if time_up and step < cfg.max_steps:
        if not evals or evals[-1]["step"] != step:
            do_eval(step)
        save(step)
        if say:
            tqdm.write(f"time budget of {cfg.max_time_s:g} s reached at step {step}")
        return "time"
    return None


def _dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def train(run: RunConfig, resume: bool = False, progress: bool = True,
          corpus: Optional[Corpus] = None, callback: Optional[Callable[[dict], None]] = None,
          ) -> dict:
    """Train ``run.model`` on ``run.data`` as ``run.train`` says; returns a summary dict.

    ``resume=True`` continues from ``<out_dir>/ckpt.safetensors``; it needs the same
    ``[model]`` table, ``train.seed`` and ``train.batch_size`` (another seed or batch size
    would splice two data streams). ``callback(info)`` is called after every step with
    ``{"step", "loss", "lr", "model"}``. ``corpus`` skips loading (tests, compare).
    Raises :class:`NonFiniteLoss` on a NaN/Inf loss (also one met at an evaluation) and
    :class:`TrainingStopped` (a ``KeyboardInterrupt``) after saving when interrupted by
    SIGINT or SIGTERM.
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
    if master:
        ensure_folder(out, "train.out_dir")      # a file in the way: an error now, not later
    corpus = corpus or load_corpus(run.data.corpus, run.data.path or None)
    if master and progress:
        print(corpus.describe())

    torch.manual_seed(tc.seed)
    model = build_model(mc).to(device)
    opt = make_optimizer(model, tc)
    start, losses, evals, tokens_seen, train_time = 0, [], [], 0, 0.0
    if master:
        clean_stale_tmp(ckpt_path)               # left by a run killed while saving
    if resume:
        old = ckpt_path.with_suffix(".pt")
        if not ckpt_path.exists() and old.is_file():
            raise CheckpointError(f"no checkpoint {ckpt_path} to resume; {old} is an old "
                                  f"pickled one: convert it first with `{CONVERT_COMMAND}`")
        stored, ck = load_lm_checkpoint(ckpt_path, what="checkpoint to resume")
        if stored.config.to_dict() != mc.to_dict():
            raise ValueError(f"{ckpt_path} was trained with another model config; resume "
                             "needs the same [model] table (compare with its 'config' entry)")
        old_train = (ck.get("run_config") or {}).get("train", {})
        for key in ("seed", "batch_size"):
            if key in old_train and old_train[key] != getattr(tc, key):
                raise ValueError(
                    f"{ckpt_path} was trained with train.{key}={old_train[key]!r}, this run "
                    f"asks train.{key}={getattr(tc, key)!r}: resuming would splice two "
                    f"different data streams. Resume with train.{key}={old_train[key]!r}, "
                    "or start a new run in another --out folder")
        for key in ("step", "losses", "evals", "tokens_seen", "train_time_s"):
            if key not in ck:
                raise CheckpointError(f"{ckpt_path} holds weights only (no {key!r}): it "
                                      "cannot be resumed; train from it in a new run")
        model.load_state_dict(ck["model"])
        sd = opt.state_dict()
        sd["state"] = {i: {k: v.to(device) for k, v in st.items()}
                       for i, st in ck["optimizer"].items()}
        opt.load_state_dict(sd)
        if ck["rng"] is not None:
            torch.set_rng_state(ck["rng"])
        start, losses, evals = ck["step"], list(ck["losses"]), list(ck["evals"])
        tokens_seen, train_time = ck["tokens_seen"], float(ck["train_time_s"])
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
        save_lm_checkpoint(ckpt_path, model, run.to_dict(), opt, {
            "step": step, "losses": losses, "evals": evals, "tokens_seen": tokens_seen,
            "train_time_s": train_time, "world_size": world}, torch.get_rng_state())

    def do_eval(step: int) -> None:
        if not weights_finite():            # the core would reject a NaN decay, unhelpfully
            raise diverged(step, "the weights became NaN or infinite")
        bpb = evaluate(model, corpus.val, mc.block_size, tc.eval_tokens, device=device,
                       rank=rank, world_size=world)
        if not math.isfinite(bpb):
            raise diverged(step, f"the validation loss became {bpb}")
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
                lr = set_lr(opt, step, tc)
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
                # under DDP every rank stops at the same step: the flag went through
                # the all-reduce above; one process stops right after the current step.
                # The time budget: rank 0's clock decides
                ended = end_of_step(step, tc, evals, do_eval, save,
                                    stopped=lambda: (float(stat[1]) > 0) if ddp else stop.set,
                                    time_up=float(stat[2]) > 0, say=master and progress)
                if ended:
                    interrupted = ended == "stop"
                    break
    finally:
        bar.close()
    if owns_group:
        dist.barrier()
        dist.destroy_process_group()
    if interrupted:
        save(step)
        if master:
            print(f"interrupted ({signal.Signals(stop.signum).name}): checkpoint saved at "
                  f"step {step} in {ckpt_path}; continue with --resume")
        raise TrainingStopped(stop.signum)
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
