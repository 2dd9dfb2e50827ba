"""Demo stage "memory": delayed recall learned by an AM-SU network and by the same
network with the astrocyte off; saves the AM-SU network and a spike raster."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from astro_neuron.io import atomic_torch_save
from astro_neuron.plot import raster
from astro_neuron.tasks import MemoryNet, RecallTask, delayed_recall, evaluate, train_memory_net

__all__ = ["demo_memory"]


def demo_memory(out_dir: Path, steps: int = 300, n_eval: int = 1024, seed: int = 0,
                task: RecallTask = RecallTask(), progress: bool = True) -> dict:
    """Train AM-SU and astrocyte-off networks on delayed recall; compare accuracies."""
    out_dir.mkdir(parents=True, exist_ok=True)
    x_test, y_test = delayed_recall(task, n_eval, torch.Generator().manual_seed(seed + 1))
    results = {}
    nets = {}
    for name, astro in (("AM-SU", True), ("astrocyte off (LIF)", False)):
        torch.manual_seed(seed)
        net = MemoryNet(task, astrocyte=astro)
        t0 = time.perf_counter()
        losses = train_memory_net(net, steps=steps, seed=seed, progress=progress, desc=name)
        acc = evaluate(net, x_test, y_test)
        results[name] = {"accuracy": acc, "train_steps": len(losses),
                         "train_s": round(time.perf_counter() - t0, 1),
                         "final_loss": round(sum(losses[-10:]) / len(losses[-10:]), 4)}
        nets[name] = net
        print(f"  {name:<22} accuracy {acc:6.1%}  ({len(losses)} steps, "
              f"{results[name]['train_s']} s)")
    amsu = nets["AM-SU"]
    atomic_torch_save(amsu.checkpoint(), out_dir / "memory_amsu.pt")
    png = out_dir / "memory_raster.png"
    _raster_png(amsu, x_test[:, :1], png)
    return {"task": f"delayed recall, {task.n_classes} classes, delay {task.delay} steps",
            "chance": 1 / task.n_classes, "results": results,
            "checkpoint": str(out_dir / "memory_amsu.pt"), "raster": str(png)}


def _raster_png(net: MemoryNet, x: torch.Tensor, path: Path) -> None:
    import matplotlib  # deferred: slow to import, only the drawing functions need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with torch.no_grad():
        spikes = net.core(x)[:, 0]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    raster([x[:, 0], spikes], ax=ax, labels=["input", "AM-SU"],
           title="delayed recall: cue, 100-step delay, recall")
    t = net.task
    for edge in (t.cue_len, t.cue_len + t.delay):
        ax.axvline(edge, color="grey", lw=0.8, ls="--")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
