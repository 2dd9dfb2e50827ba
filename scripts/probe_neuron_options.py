"""Probe: does an option of the AM-SU move store-recall at a long delay?

One run of a cell of ``astro-neuron memory-neuron`` (docs/memory.md, "Neuron-level
memory"): the same task (2 items, distractors with probability 0.2 per block), network
(64 neurons, 4 astrocytes, d_key 16, ``tau_astro`` log-spread over 10 to twice the
trial), training (``train_recall_net``: ``--steps`` of batch 16) and test batch (512
trials of the table's test seed) as the table's AM-SU, with the AM-SU built with the
options given as JSON (any keyword of :class:`astro_neuron.AMSU`). With ``{}`` it is the
table's run (delay 300, seed 0, lr 3e-3: 99.3%, as in the table).

    OMP_NUM_THREADS=1 python scripts/probe_neuron_options.py --delay 3000 --lr 1e-2 \\
        --options '{"sensing": "relu", "conv_size": 4}'

Prints one JSON line: the settings, the accuracy per item and per trial, the final
training loss (ln 4 = 1.386 is a guess) and the training time.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from astro_neuron import AMSU
from astro_neuron.tasks import RecallNet, StoreRecallTask, evaluate_items, store_recall, \
    train_recall_net

_TEST_SEED = 10_000          # the table's (astro_neuron/apps/tasks/neuron_memory.py)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--delay", type=int, default=3000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--options", default="{}", help="AMSU keyword options as JSON")
    a = p.parse_args()
    opts = json.loads(a.options)
    torch.set_num_threads(1)
    task = StoreRecallTask(n_items=2, delay=a.delay, p_distract=0.2)
    torch.manual_seed(a.seed)
    net = RecallNet(task, "amsu", n_neurons=64, horizon=task.T)
    if opts:                  # the table's AM-SU, rebuilt with the options
        torch.manual_seed(a.seed)
        net.core = AMSU(task.n_in, 64, n_astrocytes=4, d_key=16, tau_mem=2.0,
                        tau_astro=(10.0, max(10.0, 2.0 * task.T)), **opts)
    t0 = time.perf_counter()
    losses = train_recall_net(net, a.steps, 16, a.lr, a.seed, False, desc="")
    x, y = store_recall(task, 512, torch.Generator().manual_seed(_TEST_SEED + a.delay))
    item, trial = evaluate_items(net, x, y)
    print(json.dumps({"delay": a.delay, "seed": a.seed, "lr": a.lr, "steps": a.steps,
                      "options": opts, "accuracy": round(item, 4), "trial_accuracy": round(trial, 4),
                      "final_loss": round(sum(losses[-10:]) / len(losses[-10:]), 4),
                      "train_s": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()
