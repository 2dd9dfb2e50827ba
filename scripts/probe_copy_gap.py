"""Probe: can a 2-layer language model carry one token a fixed number of positions?

The sequence is ``T`` tokens of filler (random noise tokens 129-253, or the constant
token 0 with ``--filler constant``); one value token (65-128) sits ``gap`` positions
before the last one, and the model must name it at the last position (the loss and
the accuracy count only that position; chance 1/64). This is the smallest piece of
MQAR (docs/memory.md): a recall at a fixed distance, with nothing to match.

    OMP_NUM_THREADS=1 python scripts/probe_copy_gap.py --gap 10                 # AM-SNet
    OMP_NUM_THREADS=1 python scripts/probe_copy_gap.py --gap 10 --arch transformer --lr 1e-3
    OMP_NUM_THREADS=1 python scripts/probe_copy_gap.py --gap 4 --config '{"neuron_path": false}'

Prints one JSON line: the settings, the accuracy on 500 held-out sequences, the final
held-out loss and the run time. Trained as ``astro-neuron memory-tasks`` trains
(AdamW, weight decay 0.1, cosine to 0, no warm-up, clipping at 1), d_model 64,
2 layers, 2 heads, batch 16.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from astro_neuron.lm.config import AMSNetConfig
from astro_neuron.lm.model import build_model
from astro_neuron.lm.tasks import copy_gap_batch
from astro_neuron.lm.train import TrainConfig, lr_at, make_optimizer


def batch(B: int, T: int, gap: int, filler: str, g: torch.Generator):
    """The probe's data: :func:`astro_neuron.lm.tasks.copy_gap_batch` (``filler`` is its
    ``noise``: "random" or "constant")."""
    return copy_gap_batch(B, T, gap=gap, noise=filler, generator=g)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="amsnet", choices=("amsnet", "transformer"))
    ap.add_argument("--gap", type=int, default=10)
    ap.add_argument("--filler", default="random", choices=("random", "constant"))
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mode", default="chunked", choices=("chunked", "loop"),
                    help="training form of the AM-SNet (both compute the same numbers)")
    ap.add_argument("--config", default="{}", help="AMSNetConfig options as JSON")
    ap.add_argument("--curve", type=int, default=0, metavar="N",
                    help="also score the held-out sequences every N steps (a learning curve "
                         "in the JSON; training is unchanged); 0: only at the end")
    a = ap.parse_args()
    if not 0 <= a.gap < a.seq_len - 1:
        ap.error(f"--gap must lie in [0, {a.seq_len - 2}], got {a.gap}")
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    cfg = AMSNetConfig(**{"vocab_size": 256, "block_size": a.seq_len, "n_layer": 2,
                          "n_head": 2, "d_model": 64, "arch": a.arch,
                          **json.loads(a.config)})
    m = build_model(cfg)
    tc = TrainConfig(lr=a.lr, min_lr=0.0, warmup_steps=0, max_steps=a.steps,
                     weight_decay=0.1, beta2=0.999)
    opt = make_optimizer(m, tc)
    g = torch.Generator().manual_seed(a.seed)
    kw = {"mode": a.mode} if a.arch == "amsnet" else {}
    held = batch(500, a.seq_len, a.gap, a.filler, torch.Generator().manual_seed(10_000 + a.seed))

    def score() -> tuple[float, float]:
        m.eval()
        with torch.no_grad():
            logits, loss = m(*held)
        m.train()
        return float((logits[:, -1].argmax(-1) == held[1][:, -1]).float().mean()), loss.item()

    curve = []
    t0 = time.perf_counter()
    m.train()
    for step in range(a.steps):
        if a.curve and step % a.curve == 0:
            curve.append([step, round(score()[0], 4)])
        for grp in opt.param_groups:
            grp["lr"] = lr_at(step, tc)
        x, y = batch(16, a.seq_len, a.gap, a.filler, g)
        _, loss = m(x, y, **kw)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
    train_s = time.perf_counter() - t0
    acc, loss = score()
    out = {"arch": a.arch, "gap": a.gap, "filler": a.filler, "lr": a.lr, "steps": a.steps,
           "seed": a.seed, "config": json.loads(a.config), "accuracy": round(acc, 4),
           "loss": round(loss, 3), "train_s": round(train_s, 1)}
    if a.curve:
        out["curve"] = curve + [[a.steps, round(acc, 4)]]
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
