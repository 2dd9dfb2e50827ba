"""Neuron-level memory tasks and the small network the demo trains on them.

**Delayed recall** (:func:`delayed_recall`): binary spike input ``[T, B, n_in]``.
A cue period shows one of ``n_classes`` patterns (its group of channels fires with
probability ``p_cue``), a delay of ``delay`` steps follows with background noise
only, then a recall period in which a separate "go" group fires. The network must
report, during recall, which pattern was cued. A leaky neuron with a membrane time
constant of a few steps cannot bridge the delay; the astrocyte's slow matrix memory
can. Inputs are binary spikes so the same data drives the integer / Lava network.

:class:`MemoryNet` = one spiking layer (AM-SU, or the astrocyte-off ablation) and a
linear read-out of its spike counts in the recall window. :func:`train_memory_net`
trains it with AdamW and cross-entropy, with a tqdm progress bar.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from astro_neuron.alif import ALIF
from astro_neuron.amsu import AMSU
from astro_neuron.lif import LIF
from astro_neuron.io import (
    CheckpointError, check_tensors, load_checkpoint, save_checkpoint,
)
from astro_neuron.validate import non_negative_int, positive_int, probability

__all__ = ["RecallTask", "delayed_recall", "MemoryNet", "train_memory_net", "fit_recall", "evaluate",
           "StoreRecallTask", "store_recall", "RecallNet", "RECALL_MODELS", "evaluate_items",
           "train_recall_net"]


@dataclass(frozen=True)
class RecallTask:
    """Shape of the delayed-recall task (all lengths in steps)."""

    n_classes: int = 4          # number of cue patterns
    channels_per_class: int = 8  # input channels per cue pattern
    go_channels: int = 8        # channels of the "go" signal
    cue_len: int = 10           # steps the cue is shown
    delay: int = 100            # silent (noisy) steps between cue and recall
    recall_len: int = 10        # steps of the go signal; the answer is read here
    p_cue: float = 0.5          # firing probability of active channels
    p_noise: float = 0.02       # background firing probability of every channel

    def __post_init__(self) -> None:
        for name in ("n_classes", "channels_per_class", "go_channels", "cue_len",
                     "recall_len"):
            positive_int(name, getattr(self, name))
        non_negative_int("delay", self.delay)
        for name in ("p_cue", "p_noise"):
            probability(name, getattr(self, name))

    @property
    def n_in(self) -> int:
        return self.n_classes * self.channels_per_class + self.go_channels

    @property
    def T(self) -> int:
        return self.cue_len + self.delay + self.recall_len

    @property
    def recall_window(self) -> slice:
        return slice(self.T - self.recall_len, self.T)


def delayed_recall(task: RecallTask, batch_size: int, generator: Optional[torch.Generator] = None,
                   device=None) -> tuple[Tensor, Tensor]:
    """A batch: spikes ``[T, B, n_in]`` (float 0/1) and labels ``[B]`` (int64)."""
    positive_int("batch_size", batch_size)
    g = generator
    T, B, C = task.T, batch_size, task.channels_per_class
    y = torch.randint(task.n_classes, (B,), generator=g)
    prob = torch.full((T, B, task.n_in), task.p_noise)
    cue = torch.zeros(B, task.n_in)
    cue[torch.arange(B)[:, None], y[:, None] * C + torch.arange(C)] = 1.0
    prob[: task.cue_len] = torch.maximum(prob[: task.cue_len], cue * task.p_cue)
    go = torch.zeros(task.n_in)
    go[task.n_classes * C:] = 1.0
    prob[task.recall_window] = torch.maximum(prob[task.recall_window], go * task.p_cue)
    x = torch.bernoulli(prob, generator=g)
    return x.to(device), y.to(device)


MEMORY_NET_KIND = "memory-net"


class MemoryNet(nn.Module):
    """One spiking layer and a linear read-out of its recall-window spike counts.

    ``core`` is an ``nn.Sequential`` of spiking layers (here one :class:`AMSU`), the
    part that :mod:`neuromorphic` quantizes; ``readout`` is a float ``nn.Linear``.
    """

    def __init__(self, task: RecallTask = RecallTask(), n_neurons: int = 64,
                 n_astrocytes: int = 4, d_key: int = 16, astrocyte: bool = True,
                 tau_mem: float = 2.0, tau_astro=(10.0, 1000.0), **amsu_kwargs) -> None:
        super().__init__()
        self.task = task
        self.config = dict(n_neurons=n_neurons, n_astrocytes=n_astrocytes, d_key=d_key,
                           astrocyte=astrocyte, tau_mem=tau_mem,
                           tau_astro=tuple(tau_astro), **amsu_kwargs)
        self.core = nn.Sequential(AMSU(task.n_in, n_neurons, n_astrocytes=n_astrocytes,
                                       d_key=d_key, astrocyte=astrocyte, tau_mem=tau_mem,
                                       tau_astro=tau_astro, **amsu_kwargs))
        self.readout = nn.Linear(n_neurons, task.n_classes)

    def logits_from_spikes(self, spikes: Tensor) -> Tensor:
        """Read-out of spikes ``[T, B, N]`` -> logits ``[B, n_classes]``."""
        return self.readout(spikes[self.task.recall_window].mean(0))

    def forward(self, x_seq: Tensor) -> Tensor:
        return self.logits_from_spikes(self.core(x_seq))

    def checkpoint(self) -> dict:
        return {"task": asdict(self.task), "config": self.config, "state_dict": self.state_dict()}

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> "MemoryNet":
        cfg = dict(ckpt["config"])
        net = cls(RecallTask(**ckpt["task"]), **cfg)
        net.load_state_dict(ckpt["state_dict"])
        return net

    def save(self, path) -> Path:
        """Write the network as a data-only checkpoint file (``*.safetensors``: the
        weights, and the task and config as JSON; :mod:`astro_neuron.io`)."""
        return save_checkpoint(path, MEMORY_NET_KIND,
                               {"task": asdict(self.task), "config": self.config},
                               {f"model.{k}": v for k, v in self.state_dict().items()})

    @classmethod
    def load(cls, path, what: str = "MemoryNet checkpoint") -> "MemoryNet":
        """Rebuild a network written by :meth:`save`; every tensor is checked against
        the stored config (names, shapes, dtypes, finite) and a damaged, foreign or
        pickled file is refused with a :class:`~astro_neuron.io.CheckpointError`."""
        meta, tensors = load_checkpoint(path, MEMORY_NET_KIND, what)
        try:
            net = cls(RecallTask(**meta["task"]), **meta["config"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{what} {path}: its stored task/config is invalid "
                                  f"({type(exc).__name__}: {exc})") from None
        bad = sorted(k for k in tensors if not k.startswith("model."))
        if bad:
            raise CheckpointError(f"{what} {path}: unexpected tensors {bad[:5]}")
        found = {k[len("model."):]: v for k, v in tensors.items()}
        check_tensors(path, what, found, net.state_dict(), "model.")
        net.load_state_dict(found)
        return net


@torch.no_grad()
def evaluate(net: MemoryNet, x: Tensor, y: Tensor, batch_size: int = 256) -> float:
    """Accuracy of ``net`` on ``(x [T, B, n_in], y [B])``."""
    net.eval()
    correct = 0
    for i in range(0, y.shape[0], batch_size):
        correct += int((net(x[:, i:i + batch_size]).argmax(-1) == y[i:i + batch_size]).sum())
    return correct / y.shape[0]


def fit_recall(params, task: RecallTask, logits_fn, steps: int, batch_size: int = 64,
               lr: float = 3e-3, seed: int = 0, cosine: bool = True,
               time_budget_s: Optional[float] = None, progress: bool = True,
               desc: str = "train") -> list[float]:
    """The training loop of the recall tasks, shared by float training, quantization-aware
    fine-tuning and the store-recall networks: AdamW on ``params``, fresh batches from a
    generator seeded with ``seed`` (:func:`delayed_recall` for a :class:`RecallTask`,
    :func:`store_recall` for a :class:`StoreRecallTask`), cross-entropy of
    ``logits_fn(x [T, B, n_in])`` (``[B, n_classes]``, or ``[B, n_items, n_classes]`` for
    store-recall, every item counted), gradient clipping at 1, a 20-step warm-up and
    cosine decay when ``cosine`` (else a constant ``lr``). Stops early when
    ``time_budget_s`` is exceeded; a NaN or infinite loss raises ``FloatingPointError``.
    Returns the loss per step."""
    params = list(params)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / 20) * 0.5 * (1 + math.cos(math.pi * min(i, steps) / steps))
    ) if cosine else None
    losses: list[float] = []
    t0 = time.perf_counter()
    draw = store_recall if isinstance(task, StoreRecallTask) else delayed_recall
    bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False)
    try:
        for _ in bar:
            x, y = draw(task, batch_size, g)
            logits = logits_fn(x)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{desc}: loss became {loss.item()} at step {len(losses)}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            if sched is not None:
                sched.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if time_budget_s is not None and time.perf_counter() - t0 > time_budget_s:
                break
    finally:
        bar.close()
    return losses


def train_memory_net(net: MemoryNet, steps: int = 300, batch_size: int = 64,
                     lr: float = 3e-3, seed: int = 0, time_budget_s: Optional[float] = None,
                     progress: bool = True, desc: str = "train") -> list[float]:
    """Train ``net`` on freshly drawn batches (:func:`fit_recall`: warm-up and cosine
    decay); returns the loss per step. Stops early when ``time_budget_s`` is exceeded.
    The loss is cross-entropy of the recall-window read-out.
    """
    net.train()
    try:
        return fit_recall(net.parameters(), net.task, net, steps, batch_size, lr, seed,
                          cosine=True, time_budget_s=time_budget_s, progress=progress,
                          desc=desc)
    finally:
        net.eval()


# ----------------------------------------------------------------- store-recall

@dataclass(frozen=True)
class StoreRecallTask:
    """Shape of the multi-item store-recall task (all lengths in steps).

    Channels: ``n_classes`` cue patterns of ``channels_per_class`` channels (shared by
    every item), then one "store" and one "recall" command group of
    ``command_channels`` channels per item (as LSNN's store and recall inputs, Bellec
    et al. 2018, one store per item). Time: item ``i``'s cue is shown for ``cue_len``
    steps together with its store command, items separated by ``gap`` steps; then
    ``delay`` steps in which, in every block of ``cue_len`` steps, a random cue
    pattern is shown without a store command with probability ``p_distract`` (a
    distractor: the same spikes as a real cue); then item ``i``'s recall command for
    ``recall_len`` steps, items in order. The network must report each item's cue
    class during its recall window. Every channel also fires at ``p_noise``.
    """

    n_items: int = 2
    n_classes: int = 4
    channels_per_class: int = 8
    command_channels: int = 8
    cue_len: int = 10
    gap: int = 10
    delay: int = 100
    recall_len: int = 10
    p_cue: float = 0.5
    p_noise: float = 0.02
    p_distract: float = 0.2

    def __post_init__(self) -> None:
        for name in ("n_items", "n_classes", "channels_per_class", "command_channels",
                     "cue_len", "recall_len"):
            positive_int(name, getattr(self, name))
        for name in ("gap", "delay"):
            non_negative_int(name, getattr(self, name))
        for name in ("p_cue", "p_noise", "p_distract"):
            probability(name, getattr(self, name))

    @property
    def n_in(self) -> int:
        return self.n_classes * self.channels_per_class + 2 * self.n_items * self.command_channels

    @property
    def cue_end(self) -> int:
        """First step after the last cue (the delay starts here)."""
        return self.n_items * self.cue_len + (self.n_items - 1) * self.gap

    @property
    def T(self) -> int:
        return self.cue_end + self.delay + self.n_items * self.recall_len

    def cue_window(self, i: int) -> slice:
        start = i * (self.cue_len + self.gap)
        return slice(start, start + self.cue_len)

    def recall_window(self, i: int) -> slice:
        start = self.cue_end + self.delay + i * self.recall_len
        return slice(start, start + self.recall_len)

    def command(self, kind: str, i: int) -> slice:
        """Channels of item ``i``'s ``"store"`` or ``"recall"`` command."""
        base = self.n_classes * self.channels_per_class + \
            (2 * i + (kind == "recall")) * self.command_channels
        return slice(base, base + self.command_channels)


def store_recall(task: StoreRecallTask, batch_size: int,
                 generator: Optional[torch.Generator] = None,
                 device=None) -> tuple[Tensor, Tensor]:
    """A batch: spikes ``[T, B, n_in]`` (float 0/1) and labels ``[B, n_items]`` (int64)."""
    positive_int("batch_size", batch_size)
    g = generator
    T, B, C, K = task.T, batch_size, task.channels_per_class, task.n_classes
    y = torch.randint(K, (B, task.n_items), generator=g)
    prob = torch.full((T, B, task.n_in), task.p_noise)
    rows = torch.arange(B)[:, None]

    def show(window: slice, classes: Tensor, on: Tensor) -> None:
        pat = torch.zeros(B, task.n_in)
        pat[rows, classes[:, None] * C + torch.arange(C)] = 1.0
        pat *= on[:, None]
        prob[window] = torch.maximum(prob[window], pat * task.p_cue)

    for i in range(task.n_items):
        show(task.cue_window(i), y[:, i], torch.ones(B))
        prob[task.cue_window(i), :, task.command("store", i)] = task.p_cue
        prob[task.recall_window(i), :, task.command("recall", i)] = task.p_cue
    n_blocks = task.delay // task.cue_len
    if n_blocks and task.p_distract > 0:
        cls = torch.randint(K, (n_blocks, B), generator=g)
        on = torch.rand(n_blocks, B, generator=g) < task.p_distract
        for j in range(n_blocks):
            start = task.cue_end + j * task.cue_len
            show(slice(start, start + task.cue_len), cls[j], on[j].float())
    x = torch.bernoulli(prob, generator=g)
    return x.to(device), y.to(device)


RECALL_MODELS = ("amsu", "amsu-li-rinzel", "lif", "alif")


class RecallNet(nn.Module):
    """One spiking layer of ``n_neurons`` and a linear read-out (shared by the items) of
    the mean spikes in each recall window of a :class:`StoreRecallTask`.

    ``model``: ``"amsu"`` (AM-SU, linear astrocyte, parallel form), ``"amsu-li-rinzel"``
    (the Li-Rinzel calcium astrocyte, sequential; one step = ``dt_ms`` ms),
    ``"lif"`` (``nn.Linear`` then :class:`~astro_neuron.LIF`, no reset, parallel form)
    or ``"alif"`` (``nn.Linear`` then :class:`~astro_neuron.alif.ALIF`, LSNN's neuron,
    recurrent with ``recurrent``). ``horizon``: the steps to bridge; the slow time
    constants are initialised to span it (AM-SU ``tau_astro`` log-spread over
    ``(10, 2 horizon)``; ALIF ``tau_adapt`` log-spread over ``(horizon/2, 2 horizon)``
    across the neurons).
    """

    def __init__(self, task: StoreRecallTask, model: str = "amsu", n_neurons: int = 64,
                 n_astrocytes: int = 4, d_key: int = 16, horizon: Optional[int] = None,
                 tau_mem: float = 2.0, tau_mem_lif: float = 20.0, beta_adapt: float = 180.0,
                 recurrent: bool = False, dt_ms: float = 20.0) -> None:
        super().__init__()
        if model not in RECALL_MODELS:
            raise ValueError(f"model must be one of {RECALL_MODELS}, got {model!r}")
        positive_int("n_neurons", n_neurons)
        self.task, self.model = task, model
        H = float(horizon if horizon is not None else task.T)
        if H <= 0:
            raise ValueError(f"horizon must be positive, got {horizon!r}")
        if model == "amsu":
            self.core = AMSU(task.n_in, n_neurons, n_astrocytes=n_astrocytes, d_key=d_key,
                             tau_mem=tau_mem, tau_astro=(10.0, max(10.0, 2 * H)))
        elif model == "amsu-li-rinzel":
            self.core = AMSU(task.n_in, n_neurons, n_astrocytes=n_astrocytes, d_key=d_key,
                             dt=dt_ms, tau_mem=tau_mem * dt_ms, astro_model="li_rinzel")
        else:
            self.inp = nn.Linear(task.n_in, n_neurons)
            if model == "lif":
                self.core = LIF(n_neurons, tau_mem=tau_mem_lif)
            else:
                taus = torch.logspace(math.log10(H / 2), math.log10(2 * H), n_neurons,
                                      dtype=torch.float64)
                self.core = ALIF(n_neurons, tau_mem=tau_mem_lif, tau_adapt=taus,
                                 beta_adapt=beta_adapt, recurrent=recurrent)
        self.readout = nn.Linear(n_neurons, task.n_classes)

    def spikes(self, x_seq: Tensor) -> Tensor:
        """Spikes ``[T, B, n_neurons]`` of input ``[T, B, n_in]``."""
        if self.model.startswith("amsu"):
            return self.core(x_seq)
        return self.core(self.inp(x_seq))

    def forward(self, x_seq: Tensor) -> Tensor:
        """Logits ``[B, n_items, n_classes]``."""
        s = self.spikes(x_seq)
        t = self.task
        rates = torch.stack([s[t.recall_window(i)].mean(0) for i in range(t.n_items)], 1)
        return self.readout(rates)


@torch.no_grad()
def evaluate_items(net: RecallNet, x: Tensor, y: Tensor, batch_size: int = 256
                   ) -> tuple[float, float]:
    """``(accuracy per item, accuracy of whole trials)`` of ``net`` on ``x [T, B, n_in]``,
    ``y [B, n_items]``: the share of items reported right, and of trials with every
    item right."""
    net.eval()
    item = trial = 0
    for i in range(0, y.shape[0], batch_size):
        ok = net(x[:, i:i + batch_size]).argmax(-1) == y[i:i + batch_size]
        item += int(ok.sum())
        trial += int(ok.all(-1).sum())
    return item / y.numel(), trial / y.shape[0]


def train_recall_net(net: RecallNet, steps: int = 200, batch_size: int = 32,
                     lr: float = 3e-3, seed: int = 0, progress: bool = True,
                     desc: str = "train") -> list[float]:
    """Train ``net`` with AdamW (20-step warm-up, cosine decay, gradient clipping at 1)
    and cross-entropy over every item, on fresh batches from a generator seeded with
    ``seed`` (:func:`fit_recall`); returns the loss per step. A NaN or infinite loss
    raises ``FloatingPointError``."""
    positive_int("steps", steps)
    net.train()
    try:
        return fit_recall([p for p in net.parameters() if p.requires_grad], net.task, net,
                          steps, batch_size, lr=lr, seed=seed, progress=progress, desc=desc)
    finally:
        net.eval()
