"""Demo stage "integer / Lava": the demo's trained AM-SU network on integer hardware.

:func:`demo_stage` loads the MemoryNet that ``astro-neuron demo`` trained, quantizes it
after training (PTQ) and with quantization-aware fine-tuning (QAT), saves the
integer network (``memory_amsu_int.h5``), runs it in Lava ``fixed_pt`` and in the
NumPy reference and the torch view, and prints the bit-exact check and the
float-versus-integer accuracy.

Accuracy of the integer network: the core runs in integers (NumPy reference, bit-exact
with Lava); the float read-out is applied to its spikes. The integer network answers one
step later per synapse, so the input gets ``latency`` silent steps appended and the
read-out sees the spikes shifted back (:func:`integer_accuracy`).
"""

from __future__ import annotations

import copy
import time
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import torch

import neuromorphic as nm
from neuromorphic import SaturationWarning
from astro_neuron.tasks import MemoryNet, delayed_recall, evaluate, fit_recall
from neuromorphic.simulate import pad_latency, simulate

__all__ = ["demo_stage", "integer_accuracy", "finetune_qat"]


@torch.no_grad()
def integer_accuracy(qnet, net, x: torch.Tensor, y: torch.Tensor, batch: int = 256) -> float:
    """Accuracy of ``net.readout`` applied to the integer network's spikes."""
    correct = 0
    for i in range(0, y.shape[0], batch):
        xb = pad_latency(x[:, i:i + batch].numpy().astype(np.int64), qnet.latency)
        out = simulate(qnet, xb, backend="reference", record_states=False)
        spikes = torch.as_tensor(out.aligned_output(), dtype=torch.float32)
        correct += int((net.logits_from_spikes(spikes).argmax(-1) == y[i:i + batch]).sum())
    return correct / y.shape[0]


def finetune_qat(qat, net, steps: int, batch_size: int = 32, lr: float = 1e-3, seed: int = 0,
                 time_budget_s: Optional[float] = None, progress: bool = True) -> list[float]:
    """Fine-tune ``qat`` (the core) and ``net.readout`` on fresh delayed-recall batches
    (the task's training loop, :func:`astro_neuron.tasks.fit_recall`, at a constant
    learning rate)."""
    params = list(qat.parameters()) + list(net.readout.parameters())
    return fit_recall(params, net.task, lambda x: net.logits_from_spikes(qat(x, align=True)),
                      steps, batch_size, lr, seed, cosine=False, time_budget_s=time_budget_s,
                      progress=progress, desc="QAT")


def demo_stage(out_dir: Path, checkpoint: Path, quick: bool = False,
               progress: bool = True) -> dict:
    """Quantize (PTQ and QAT), save, simulate in Lava and the reference; print and return
    a summary. ``quick``: tiny settings for tests (seconds)."""

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    net = MemoryNet.load(checkpoint, "MemoryNet checkpoint")
    net.eval()
    # fixed step counts (no time budget), so the result does not depend on machine load
    cfg = dict(n_calib=16, n_eval=64, qat_steps=3, qat_budget=None, n_lava=1) if quick else \
        dict(n_calib=64, n_eval=512, qat_steps=100, qat_budget=None, n_lava=4)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(1)      # small per-step ops; also what Lava's forked workers need
    try:
        x_cal, _ = delayed_recall(net.task, cfg["n_calib"], torch.Generator().manual_seed(1000))
        x_test, y_test = delayed_recall(net.task, cfg["n_eval"], torch.Generator().manual_seed(1001))
        acc_float = evaluate(net, x_test, y_test)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", SaturationWarning)
            q_ptq = nm.quantize(net.core, calibration=x_cal)
        acc_ptq = integer_accuracy(q_ptq, net, x_test, y_test)
        # quantization-aware fine-tuning, on a copy (the float network stays as trained)
        tuned = copy.deepcopy(net)
        qat = nm.prepare_qat(tuned.core, x_cal)
        t0 = time.perf_counter()
        losses = finetune_qat(qat, tuned, cfg["qat_steps"], time_budget_s=cfg["qat_budget"],
                              progress=progress)
        qat_s = time.perf_counter() - t0
        with warnings.catch_warnings(record=True) as caught_qat:
            warnings.simplefilter("always", SaturationWarning)
            q_qat = nm.quantize(qat, calibration=x_cal,
                                meta={"source": "astro_neuron.tasks.MemoryNet (QAT)",
                                      "task": {"name": "delayed_recall",
                                               **net.checkpoint()["task"]}})
        h5 = out_dir / "memory_amsu_int.h5"
        nm.save(q_qat, h5)
        q_qat = nm.load(h5)                      # what runs below is what the file holds
        acc_qat = integer_accuracy(q_qat, tuned, x_test, y_test)
        # the same integer network on the three backends, bit for bit
        x_l = nm.pad_latency(x_test[:, :cfg["n_lava"]].numpy().astype(np.int64), q_qat.latency)
        ref = nm.simulate(q_qat, x_l, backend="reference")
        tor = nm.simulate(q_qat, x_l, backend="torch")
        lav = nm.simulate(q_qat, x_l, backend="lava")
        d_lava, d_torch = nm.compare(lav, ref), nm.compare(tor, ref)
    finally:
        torch.set_num_threads(old_threads)
    n_states = sum(len(s) for s in ref.states)
    bit_exact = d_lava.equal and d_torch.equal
    T, B = x_l.shape[:2]
    print(f"  float network            accuracy {acc_float:6.1%}")
    print(f"  integer, PTQ             accuracy {acc_ptq:6.1%}  ({acc_ptq - acc_float:+.1%})")
    print(f"  integer, QAT ({len(losses)} steps) accuracy {acc_qat:6.1%}  "
          f"({acc_qat - acc_float:+.1%}; {qat_s:.0f} s)")
    print(f"  saved {h5} ({h5.stat().st_size / 1024:.0f} KiB)")
    print(f"  Lava fixed_pt vs reference: {d_lava}  [{B} sequences x {T} steps, spikes + "
          f"{n_states} states; Lava {lav.seconds:.1f} s, reference {ref.seconds:.2f} s]")
    print(f"  torch (QAT view) vs reference: {d_torch}")
    return {
        "accuracy_float": acc_float, "accuracy_ptq": acc_ptq, "accuracy_qat": acc_qat,
        "qat_steps": len(losses), "qat_s": round(qat_s, 1), "file": str(h5),
        "bit_exact": bool(bit_exact), "lava_vs_reference": str(d_lava),
        "torch_vs_reference": str(d_torch), "lava_sequences": int(B), "steps": int(T),
        "lava_s": round(lav.seconds, 1), "reference_s": round(ref.seconds, 3),
        "saturation_warnings": [str(w.message) for w in caught + caught_qat],
        "total_s": round(time.perf_counter() - t_start, 1),
    }
