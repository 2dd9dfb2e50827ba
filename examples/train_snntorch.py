"""Train an snnTorch network that contains the AM-SU cell, on delayed recall.

    python examples/train_snntorch.py             # delay 100, ~200 steps
    python examples/train_snntorch.py --quick     # delay 20, a few seconds
    python examples/train_snntorch.py --parallel  # the AM-SU layer in its parallel form

The network is written the snnTorch way: ``AstroLeaky`` (the AM-SU cell) ->
``nn.Linear`` -> ``snn.Leaky``, stepped in a Python loop with ``spk, state =
cell(x[t], state)``, trained with ``snntorch.functional.ce_rate_loss`` on the output
spikes of the recall window and scored with ``snntorch.functional.accuracy_rate``.
Prints the accuracy before and after training, then checks that the cell's parallel
form (``forward_sequence``) gives the same output spikes as the loop, and how much
faster it is. Saves the trained weights (``snntorch_amsu.safetensors``) in ``--out``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import nn


class AstroNet(nn.Module):
    """AstroLeaky -> Linear -> Leaky; ``forward(x [T, B, in])`` -> spikes ``[T, B, C]``."""

    def __init__(self, n_in: int, n_classes: int, n_neurons: int = 64,
                 parallel: bool = False) -> None:
        super().__init__()
        import snntorch as snn
        from snntorch import surrogate

        from astro_neuron.integrations.snntorch import AstroLeaky

        self.astro = AstroLeaky(n_in, n_neurons, n_astrocytes=4, d_key=16, tau_mem=2.0,
                                tau_astro=(10.0, 1000.0), spike_grad=surrogate.atan())
        self.fc = nn.Linear(n_neurons, n_classes)
        self.lif = snn.Leaky(beta=0.5, spike_grad=surrogate.atan())
        self.parallel = parallel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mem = self.lif.init_leaky()
        out = []
        if self.parallel:                      # the AM-SU layer over all steps at once
            spk_seq, _ = self.astro.forward_sequence(x)
            for t in range(x.shape[0]):
                spk_out, mem = self.lif(self.fc(spk_seq[t]), mem)
                out.append(spk_out)
            return torch.stack(out)
        state = self.astro.init_astroleaky()   # None: zeros on the first step
        for t in range(x.shape[0]):            # the snnTorch idiom: one step at a time
            spk, state = self.astro(x[t], state)
            spk_out, mem = self.lif(self.fc(spk), mem)
            out.append(spk_out)
        return torch.stack(out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny settings (seconds)")
    ap.add_argument("--out", default="out/train_snntorch", help="output folder")
    ap.add_argument("--steps", type=int, default=None, help="training steps")
    ap.add_argument("--delay", type=int, default=None, help="delay between cue and recall")
    ap.add_argument("--parallel", action="store_true",
                    help="train with the AM-SU cell's parallel form (forward_sequence)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: the tensors are small)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import snntorch.functional as SF
    from tqdm.auto import tqdm

    from astro_neuron.io import atomic_save_tensors
    from astro_neuron.tasks import RecallTask, delayed_recall

    torch.set_num_threads(args.threads)
    delay = args.delay if args.delay is not None else (20 if args.quick else 100)
    steps = args.steps if args.steps is not None else (40 if args.quick else 200)
    n_eval = 256 if args.quick else 1024
    task = RecallTask(delay=delay)
    torch.manual_seed(args.seed)
    net = AstroNet(task.n_in, task.n_classes, parallel=args.parallel)
    x_test, y_test = delayed_recall(task, n_eval, torch.Generator().manual_seed(args.seed + 1))
    window = task.recall_window

    def accuracy() -> float:
        with torch.no_grad():
            return float(SF.accuracy_rate(net(x_test)[window], y_test))

    print(f"delayed recall: {task.n_classes} classes, delay {delay} steps (T={task.T}); "
          f"chance {1 / task.n_classes:.0%}")
    print(f"accuracy before training: {accuracy():.1%}")
    loss_fn = SF.ce_rate_loss()
    g = torch.Generator().manual_seed(args.seed)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    t0 = time.perf_counter()
    bar = tqdm(range(steps), desc="train", leave=False, disable=None)  # off when not a tty
    for _ in bar:
        x, y = delayed_recall(task, 64, g)
        loss = loss_fn(net(x)[window], y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    form = "parallel form" if args.parallel else "step loop"
    print(f"accuracy after {steps} steps ({form}, {time.perf_counter() - t0:.1f} s): "
          f"{accuracy():.1%}")

    # the loop of steps and the parallel form give the same output spikes
    x = x_test[:, :64]
    timings, outs = {}, {}
    with torch.no_grad():
        for parallel in (False, True):
            net.parallel = parallel
            t0 = time.perf_counter()
            outs[parallel] = net(x)
            timings[parallel] = time.perf_counter() - t0
    differ = int((outs[False] != outs[True]).sum())
    print(f"step loop vs parallel form: {differ} output spikes differ; forward "
          f"{timings[False] * 1e3:.0f} ms vs {timings[True] * 1e3:.0f} ms "
          f"(x{timings[False] / timings[True]:.1f}, T={task.T}, B=64)")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_save_tensors(net.state_dict(), out / "snntorch_amsu.safetensors")
    print(f"saved {out / 'snntorch_amsu.safetensors'}")


if __name__ == "__main__":
    main()
