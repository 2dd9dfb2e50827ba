"""Linear against nonlinear astrocytes on the same memory task.

    python examples/linear_vs_nonlinear_astrocyte.py [--quick] [--out DIR] [--steps N]

Trains three copies of one network on delayed recall (astro_neuron.tasks: a cue, a
silent delay, then a "go" signal; the network must report the cue), one step = 20 ms:

* AM-SU with the paper's linear astrocyte (``astro_model="linear"``, parallel training),
* AM-SU with the Li-Rinzel calcium astrocyte (``astro_model="li_rinzel"``, sequential),
* the same neurons with the astrocyte removed (a leaky neuron cannot bridge the delay).

Same task, sizes, seed, optimiser and number of training steps for all three. Prints
the accuracy at the trained delay and at longer delays (no retraining), and the
training time per step; writes ``results.json`` and ``linear_vs_nonlinear.png`` to
``--out``. Guide: docs/neuroscience.md.
"""

import argparse
import copy
import time
from pathlib import Path

import torch

from astro_neuron.io import atomic_json
from astro_neuron.tasks import MemoryNet, RecallTask, delayed_recall, evaluate, train_memory_net

MODELS = {
    "linear astrocyte": {"astro_model": "linear"},
    "Li-Rinzel astrocyte": {"astro_model": "li_rinzel"},
    "astrocyte off": {"astrocyte": False},
}


def build(task: RecallTask, dt_ms: float, d_key: int, kind: dict) -> MemoryNet:
    """The network, time constants in ms: membrane 2 steps, linear astrocyte 10-1000 steps."""
    return MemoryNet(task, n_neurons=64, n_astrocytes=4, d_key=d_key, dt=dt_ms,
                     tau_mem=2 * dt_ms, tau_astro=(10 * dt_ms, 1000 * dt_ms), **kind)


def at_delay(net: MemoryNet, delay: int) -> MemoryNet:
    """The trained network on the same task with another delay (weights unchanged)."""
    other = MemoryNet(RecallTask(**{**net.task.__dict__, "delay": delay}), **net.config)
    other.load_state_dict(copy.deepcopy(net.state_dict()))
    return other


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny settings (seconds)")
    ap.add_argument("--out", default="out/linear_vs_nonlinear", help="output folder")
    ap.add_argument("--steps", type=int, default=None, help="training steps (default 150)")
    ap.add_argument("--batch", type=int, default=32, help="batch size (default 32)")
    ap.add_argument("--dt-ms", type=float, default=20.0, help="ms per step (default 20)")
    ap.add_argument("--d-key", type=int, default=8, help="astrocyte key size (default 8)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        task = RecallTask(cue_len=5, delay=20, recall_len=5)
        steps, batch, n_eval, test_delays = args.steps or 15, 16, 128, (20, 40)
    else:
        task = RecallTask()                           # cue 10, delay 100, recall 10 steps
        steps, batch, n_eval, test_delays = args.steps or 150, args.batch, 512, (100, 150, 200)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dt = args.dt_ms
    print(f"delayed recall: {task.n_classes} cues, delay {task.delay} steps = "
          f"{task.delay * dt / 1000:g} s at {dt:g} ms/step; {steps} training steps, batch {batch}")

    results, curves = {}, {}
    for name, kind in MODELS.items():
        torch.manual_seed(args.seed)
        net = build(task, dt, args.d_key, kind)
        t0 = time.perf_counter()
        losses = train_memory_net(net, steps=steps, batch_size=batch, seed=args.seed,
                                  progress=not args.no_progress, desc=name)
        per_step = (time.perf_counter() - t0) / len(losses)
        accs = {}
        for delay in test_delays:
            x, y = delayed_recall(RecallTask(**{**task.__dict__, "delay": delay}), n_eval,
                                  torch.Generator().manual_seed(args.seed + 1))
            accs[delay] = evaluate(at_delay(net, delay), x, y)
        results[name] = {"accuracy": accs, "s_per_train_step": round(per_step, 4),
                         "final_loss": round(sum(losses[-10:]) / len(losses[-10:]), 4)}
        curves[name] = losses

    print(f"\n{'model':<22} " + " ".join(f"{'delay ' + str(d):>10}" for d in test_delays)
          + f" {'s/step':>8}")
    for name, r in results.items():
        print(f"{name:<22} " + " ".join(f"{r['accuracy'][d]:>10.1%}" for d in test_delays)
              + f" {r['s_per_train_step']:>8.3f}")
    lin, nl = (results[k]["s_per_train_step"] for k in ("linear astrocyte", "Li-Rinzel astrocyte"))
    print(f"(chance {1 / task.n_classes:.0%}; trained at delay {task.delay}; the Li-Rinzel "
          f"astrocyte trains {nl / lin:.1f}x slower per step, measured in this run)")
    summary = {"task": task.__dict__, "dt_ms": dt, "steps": steps, "batch": batch,
               "seed": args.seed, "results": {k: {**v, "accuracy": {str(d): a for d, a in
                                                                  v["accuracy"].items()}}
                                              for k, v in results.items()}}
    atomic_json(summary, out / "results.json")
    _figure(curves, results, test_delays, task, out / "linear_vs_nonlinear.png")
    print(f"wrote {out / 'results.json'} and {out / 'linear_vs_nonlinear.png'}")
    return summary


def _figure(curves, results, delays, task, path):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.6), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    for name, losses in curves.items():
        ax1.plot(losses, label=name, lw=1)
    ax1.set_xlabel("training step")
    ax1.set_ylabel("cross-entropy")
    ax1.legend()
    width = 0.8 / len(results)
    for i, (name, r) in enumerate(results.items()):
        ax2.bar([j + i * width for j in range(len(delays))],
                [r["accuracy"][d] for d in delays], width, label=name)
    ax2.axhline(1 / task.n_classes, color="k", ls="--", lw=0.8, label="chance")
    ax2.set_xticks([j + width * (len(results) - 1) / 2 for j in range(len(delays))])
    ax2.set_xticklabels([f"delay {d}" for d in delays])
    ax2.set_ylabel("accuracy")
    ax2.set_ylim(0, 1.05)
    ax2.legend(fontsize="small", loc="lower left")
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
