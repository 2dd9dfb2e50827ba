"""Train a SpikingJelly network that contains the AM-SU node, on delayed recall.

    python examples/train_spikingjelly.py            # delay 100, ~300 steps
    python examples/train_spikingjelly.py --quick    # delay 20, a few seconds

The network is plain SpikingJelly: ``nn.Sequential(AMSUNode, layer.Linear,
neuron.LIFNode)`` run in multi-step mode (``functional.set_step_mode``), reset with
``functional.reset_net`` after every batch, and read out by the firing rate of the
stock LIF neurons during the recall window. Prints the accuracy before and after
training and the AM-SU layer's firing rate (recorded by ``monitor.OutputMonitor``),
then checks that running the trained network one step at a time (``step_mode='s'``)
gives the same read-out as the multi-step run. Saves the trained weights
(``spikingjelly_amsu.safetensors``, a ``state_dict``;
``safetensors.torch.load_file`` reads it) in ``--out``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


def build(n_in: int, n_classes: int, n_neurons: int = 64) -> nn.Sequential:
    from spikingjelly.activation_based import functional, layer, neuron, surrogate

    from astro_neuron.integrations.spikingjelly import AMSUNode

    net = nn.Sequential(
        AMSUNode(n_in, n_neurons, n_astrocytes=4, d_key=16, tau_mem=2.0,
                 tau_astro=(10.0, 1000.0), surrogate_function=surrogate.ATan()),
        layer.Linear(n_neurons, n_classes),
        neuron.LIFNode(tau=2.0, surrogate_function=surrogate.ATan()),
    )
    functional.set_step_mode(net, "m")
    return net


def recall_rate(net: nn.Module, x: torch.Tensor, task) -> torch.Tensor:
    """Firing rate ``[B, n_classes]`` of the read-out during the recall window."""
    from spikingjelly.activation_based import functional

    out = net(x)                               # [T, B, n_classes]
    functional.reset_net(net)
    return out[task.recall_window].mean(0)


@torch.no_grad()
def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor, task) -> float:
    return float((recall_rate(net, x, task).argmax(-1) == y).float().mean())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny settings (seconds)")
    ap.add_argument("--out", default="out/train_spikingjelly", help="output folder")
    ap.add_argument("--steps", type=int, default=None, help="training steps")
    ap.add_argument("--delay", type=int, default=None, help="delay between cue and recall")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: the tensors are small)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    from spikingjelly.activation_based import functional, monitor
    from tqdm.auto import tqdm

    from astro_neuron.integrations.spikingjelly import AMSUNode
    from astro_neuron.io import atomic_save_tensors
    from astro_neuron.tasks import RecallTask, delayed_recall

    torch.set_num_threads(args.threads)
    delay = args.delay if args.delay is not None else (20 if args.quick else 100)
    steps = args.steps if args.steps is not None else (60 if args.quick else 300)
    n_eval = 256 if args.quick else 1024
    task = RecallTask(delay=delay)
    torch.manual_seed(args.seed)
    net = build(task.n_in, task.n_classes)
    x_test, y_test = delayed_recall(task, n_eval, torch.Generator().manual_seed(args.seed + 1))
    print(f"delayed recall: {task.n_classes} classes, delay {delay} steps (T={task.T}); "
          f"chance {1 / task.n_classes:.0%}")
    print(f"accuracy before training: {accuracy(net, x_test, y_test, task):.1%}")

    g = torch.Generator().manual_seed(args.seed)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    t0 = time.perf_counter()
    bar = tqdm(range(steps), desc="train", leave=False, disable=None)  # off when not a tty
    for _ in bar:
        x, y = delayed_recall(task, 64, g)
        loss = F.cross_entropy(recall_rate(net, x, task) * 10, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    train_s = time.perf_counter() - t0
    print(f"accuracy after {steps} steps ({train_s:.1f} s): "
          f"{accuracy(net, x_test, y_test, task):.1%}")

    # firing rate of the AM-SU layer, recorded by a SpikingJelly monitor
    mon = monitor.OutputMonitor(net, AMSUNode)
    with torch.no_grad():
        rate_m = recall_rate(net, x_test[:, :16], task)
    print(f"AM-SU firing rate: {float(mon.records[0].mean()):.3f} spikes/neuron/step")
    mon.remove_hooks()

    # the same network streamed one step at a time
    functional.set_step_mode(net, "s")
    with torch.no_grad():
        out_s = torch.stack([net(x_t) for x_t in x_test[:, :16]])
    functional.reset_net(net)
    functional.set_step_mode(net, "m")
    rate_s = out_s[task.recall_window].mean(0)
    print(f"step_mode 's' vs 'm': read-out rates differ by at most "
          f"{float((rate_s - rate_m).abs().max()):.3g}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_save_tensors(net.state_dict(), out / "spikingjelly_amsu.safetensors")
    print(f"saved {out / 'spikingjelly_amsu.safetensors'}")


if __name__ == "__main__":
    main()
