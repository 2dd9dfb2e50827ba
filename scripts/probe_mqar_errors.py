"""Probe: where does a trained AM-SNet miss on MQAR?

Trains one cell of ``astro-neuron memory-tasks`` the runner's way (the same config,
seed, data and training: ``train_task``), then scores held-out sequences of the same
test seed and breaks the accuracy down by

* the distance from the pair to its query (tokens, in bins),
* the pair's place in the sequence (1 = the first pair written),
* the query's order (1 = the first key asked back),
* the answer given when wrong: another value of the same sequence (a binding error;
  with the pair it belongs to, counted by its offset from the pair asked) or a value
  not in it (a read-out error).

It also saves the trained weights (``--save``, a safetensors file) so the analysis can
be redone without training again (``--load``). One JSON line on stdout.

    OMP_NUM_THREADS=1 python scripts/probe_mqar_errors.py --seq-len 256 --pairs 8 \\
        --examples 51200 --lr 1e-3 --save out/mqar256.safetensors \\
        --config '{"sensing": "relu", "astro_gain": 1.0, "rotary_fraction": 0,
                   "conv_size": 4, "tau_astro": [256, 4096]}'
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from safetensors.torch import load_file

from astro_neuron.io import atomic_save_tensors
from astro_neuron.lm.config import AMSNetConfig
from astro_neuron.lm.model import build_model
from astro_neuron.lm.tasks import mqar_batch, train_task

_TEST_SEED = 10_000          # the runner's (astro_neuron/apps/tasks/lm_memory.py)


def _bins(x: torch.Tensor, right: torch.Tensor, edges: list[int]) -> dict[str, list]:
    out = {}
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (x >= lo) & (x < hi)
        if m.any():
            out[f"{lo}-{hi - 1}"] = [round(right[m].float().mean().item(), 4), int(m.sum())]
    return out


@torch.no_grad()
def breakdown(model, T: int, pairs: int, n_eval: int, seed: int, noise: str) -> dict:
    g = torch.Generator().manual_seed(_TEST_SEED + seed)
    x, y = mqar_batch(n_eval, T, n_pairs=pairs, noise=noise, generator=g)
    model.eval()
    pred = torch.cat([model(x[i:i + 64])[0].argmax(-1) for i in range(0, n_eval, 64)])
    B = x.shape[0]
    keys = x[:, 0:2 * pairs:2]                                        # (B, N)
    vals = x[:, 1:2 * pairs:2]
    qpos = (y >= 0).nonzero()                                         # (B*N, 2) sorted
    b, t = qpos[:, 0], qpos[:, 1]
    qkey = x[b, t]
    slot = (keys[b] == qkey[:, None]).float().argmax(1)               # pair index 0..N-1
    pair_pos = 2 * slot + 1                                           # the value's place
    dist = t - pair_pos
    order = torch.cat([torch.arange(pairs)] * B)                      # queries sorted by t
    p, want = pred[b, t], y[b, t]
    right = p == want
    in_seq = (vals[b] == p[:, None]).any(1)
    wrong = ~right
    # a binding error: which pair's value was named instead (offset from the asked pair)
    named = (vals[b] == p[:, None]).float().argmax(1)
    off = (named - slot)[wrong & in_seq]
    offsets = {str(int(o)): int((off == o).sum()) for o in off.unique()}
    return {
        "accuracy": round(right.float().mean().item(), 4),
        "by_distance": _bins(dist, right, [0, 16, 32, 64, 128, 192, 256, 512, 768, 1024]),
        "by_pair": {str(i + 1): round(right[slot == i].float().mean().item(), 4)
                    for i in range(pairs)},
        "by_query_order": {str(i + 1): round(right[order == i].float().mean().item(), 4)
                           for i in range(pairs)},
        "wrong_other_value_of_sequence": round((wrong & in_seq).float().sum().item()
                                               / max(int(wrong.sum()), 1), 4),
        "wrong_pair_offset": offsets,
        "n_queries": int(right.numel()),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--pairs", type=int, default=8)
    p.add_argument("--examples", type=int, default=51200)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--n-layer", type=int, default=2)
    p.add_argument("--n-head", type=int, default=2)
    p.add_argument("--noise", default="random")
    p.add_argument("--n-eval", type=int, default=2000)
    p.add_argument("--config", default="{}", help="AMSNetConfig overrides as JSON")
    p.add_argument("--save", help="write the trained weights here (safetensors)")
    p.add_argument("--load", help="skip training: load these weights")
    a = p.parse_args()
    over = json.loads(a.config)
    torch.manual_seed(a.seed)
    cfg = AMSNetConfig(**{"vocab_size": 256, "block_size": a.seq_len, "n_layer": a.n_layer,
                          "n_head": a.n_head, "d_model": a.d_model, **over})
    model = build_model(cfg)
    t0 = time.perf_counter()
    losses = []
    if a.load:
        model.load_state_dict(load_file(a.load))
    else:
        losses = train_task(model, "mqar", a.seq_len, a.examples, a.batch_size, lr=a.lr,
                            seed=a.seed, progress=False, n_pairs=a.pairs, noise=a.noise)
        if a.save:
            atomic_save_tensors(model.state_dict(), a.save)
    res = breakdown(model, a.seq_len, a.pairs, a.n_eval, a.seed, a.noise)
    final = sum(losses[-10:]) / len(losses[-10:]) if losses else None
    res.update(settings=vars(a), final_loss=final,
               train_s=round(time.perf_counter() - t0, 1))
    print(json.dumps(res))


if __name__ == "__main__":
    main()
