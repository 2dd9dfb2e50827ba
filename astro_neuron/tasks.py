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
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from astro_neuron.amsu import AMSU
from astro_neuron.validate import non_negative_int, positive_int, probability

__all__ = ["RecallTask", "delayed_recall", "MemoryNet", "train_memory_net", "fit_recall", "evaluate"]


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
    """The training loop of the delayed-recall task, shared by float training and
    quantization-aware fine-tuning: AdamW on ``params``, fresh batches from a generator
    seeded with ``seed``, cross-entropy of ``logits_fn(x [T, B, n_in]) -> [B, n_classes]``,
    gradient clipping at 1, a 20-step warm-up and cosine decay when ``cosine`` (else a
    constant ``lr``). Stops early when ``time_budget_s`` is exceeded; a NaN or infinite
    loss raises ``FloatingPointError``. Returns the loss per step."""
    params = list(params)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / 20) * 0.5 * (1 + math.cos(math.pi * min(i, steps) / steps))
    ) if cosine else None
    losses: list[float] = []
    t0 = time.perf_counter()
    bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False)
    for _ in bar:
        x, y = delayed_recall(task, batch_size, g)
        loss = F.cross_entropy(logits_fn(x), y)
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
