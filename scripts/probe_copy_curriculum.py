"""Does a length curriculum start selective copying at T=1024? A probe (docs/memory.md,
"Selective copying at T=1024: a length curriculum").

Trained on T=1024 alone, ``AM-SNet relu`` sits at the uniform guess (loss ln 16) for
tens of thousands of sequences and leaves it by chance (docs/memory.md, "Selective
copying at T=1024: the learning rate"); at T=256 the same model learns within a few
thousand steps. Mixing T=256 batches into T=1024 training (the GPU tables'
``--mix-lengths``) started it. This probe runs the curriculum in two stages instead: the
model first learns the task at ``--first-length`` (``--first-examples`` sequences at
``--first-lr``), and is then trained at the cell's length as one cell of ``astro-neuron
memory-tasks`` (``run_cell`` with ``build`` returning the trained model: the same
schedule, the same held-out scoring, the run file in the runner's layout). The first
stage's accuracy at its own length is recorded beside the run.

    OMP_NUM_THREADS=1 python scripts/probe_copy_curriculum.py --seed 0 --out out/curriculum
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from astro_neuron.amsu import AMSU
from astro_neuron.apps.tasks.lm_memory import _task_kwargs, resolve_models, run_cell
from astro_neuron.io import atomic_json, atomic_save_tensors
from astro_neuron.lm.config import AMSNetConfig
from astro_neuron.lm.model import build_model
from astro_neuron.lm.tasks import DATA0, TASK_MODELS, TASKS, task_accuracy, train_task


def copy_breakdown(model, T: int, n_eval: int, seed: int, tokens: int = 16) -> dict:
    """Where selective copying misses: accuracy by output place (the i-th data token
    due), the share of misses that name another data token of the same sequence, and
    how many places in the order the nearest token with that symbol was from the one due
    (``miss_offset``: 1 is a neighbour); beside them the same counts for a uniform guess."""
    kw = _task_kwargs("copy", tokens, "random", "uniform")
    g = torch.Generator().manual_seed(30_000 + seed)
    x, y = TASKS["copy"](n_eval, T, generator=g, **kw)
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(x[i:i + 50])[0].argmax(-1) for i in range(0, n_eval, 50)])
    m = y >= 0
    want, p = y[m].view(n_eval, tokens), pred[m].view(n_eval, tokens)
    res = {"seq_len": T, **_misses(p, want)}
    # the middle places (5 .. tokens - 2) by the gap in steps to the nearest data token
    # before or after: a code of order by age confuses close neighbours most, a count not
    region = T - tokens - 1
    pos = torch.stack([((r[:region] >= DATA0) & (r[:region] < DATA0 + 16)).nonzero()[:, 0]
                       for r in x])
    far = torch.full((n_eval, 1), T)
    gap = torch.minimum(torch.cat([far, pos.diff(dim=1)], 1), torch.cat([pos.diff(dim=1), far], 1))
    right = (p == want)[:, 4:tokens - 2]
    gap = gap[:, 4:tokens - 2]
    edges = [1, 2, 4, 8, 16, 32, T]
    res["middle_by_gap"] = {}
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (gap >= lo) & (gap < hi)
        if sel.any():
            res["middle_by_gap"][f"{lo}-{hi - 1}"] = [round(right[sel].float().mean().item(), 3),
                                                      int(sel.sum())]
    # the same counts for a uniform guess among the 16 symbols: symbols repeat in a row,
    # so a guess often names some data token, most often a near one
    guess = torch.randint(DATA0, DATA0 + 16, want.shape, generator=g)
    res["uniform_guess"] = _misses(guess, want)
    return res


def _misses(p: torch.Tensor, want: torch.Tensor) -> dict:
    tokens = want.shape[1]
    right = p == want
    wrong = ~right
    # a miss names token j of the row's data (its targets, in order) if p == want[j]
    named = (p[:, :, None] == want[:, None, :]) & wrong[:, :, None]     # (B, i, j)
    j = torch.arange(tokens)
    dist = (j[None, None, :] - j[None, :, None]).abs().float()
    # the nearest place in the order that holds the named symbol (symbols repeat)
    off = torch.where(named, dist, torch.full_like(dist, 99.0)).min(-1).values
    off = off[named.any(-1)]
    return {
        "accuracy": round(right.float().mean().item(), 4),
        "by_place": [round(v, 3) for v in right.float().mean(0).tolist()],
        "misses_naming_a_data_token": round(named.any(-1)[wrong].float().mean().item(), 4),
        "miss_offset": {str(int(o)): int((off == o).sum()) for o in off.unique()},
    }


def load_weights(model, path) -> None:
    """Load ``path`` (safetensors) into ``model``. Weights of the same model without its
    neuron path (``neuron_path=False``) are accepted too: each AM-SU's neuron-path input
    rows and bias then start at 0, so, with the AM-SU's default ``reset="none"``, the
    membrane stays at 0 and the model at first computes what the loaded one did (the
    neuron path put back after the astrocyte has learnt; docs/memory.md)."""
    state = load_file(path)
    own = model.state_dict()
    grafted = {}
    for prefix, m in model.named_modules():
        if not (isinstance(m, AMSU) and m.spec.neuron_path and m.spec.astrocyte):
            continue
        w, b = f"{prefix}.weight", f"{prefix}.bias"
        if b in state or w not in state or state[w].shape[1:] != own[w].shape[1:]:
            continue                            # not an ablation's layer: loaded as is
        new, src, dst = torch.zeros_like(own[w]), 0, 0
        for name, size in m.spec.parts:         # the rows of I, K, V, Q (, E)
            if name != "I":
                new[dst:dst + size] = state[w][src:src + size]
                src += size
            dst += size
        if src != state[w].shape[0]:
            continue                            # the shapes then fail below, by name
        grafted[w], grafted[b] = new, torch.zeros_like(own[b])
    try:
        model.load_state_dict({**state, **grafted})
    except RuntimeError as exc:
        raise SystemExit(f"{path}: not weights of this model or of it without its neuron "
                         f"path ({str(exc).splitlines()[0]})") from None


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="AM-SNet relu",
                    help=f"one of {sorted(TASK_MODELS)}, or NAME=JSON (the model options, as "
                         "the runner's --variant)")
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--examples", type=int, default=51_200, help="sequences at --seq-len")
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--first-length", type=int, default=256)
    ap.add_argument("--first-examples", type=int, default=102_400)
    ap.add_argument("--first-lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-eval", type=int, default=500)
    ap.add_argument("--out", default="out/curriculum")
    ap.add_argument("--analyse", metavar="WEIGHTS",
                    help="train nothing: print where these weights (safetensors) miss, at "
                         "--first-length and --seq-len")
    ap.add_argument("--save", help="write the trained weights here (safetensors)")
    ap.add_argument("--first-weights", help="a safetensors file: the first stage's weights "
                    "are read from it if it exists (the first stage is then not trained "
                    "again; weights of the model without its neuron path are accepted, the "
                    "neuron path starting at 0), else written to it after the first stage")
    a = ap.parse_args(argv)
    if not 0 < a.first_length < a.seq_len:
        ap.error(f"--first-length must lie in 1..{a.seq_len - 1}")
    try:
        (model_name, ov), = resolve_models([a.model]).items()
    except ValueError as exc:
        ap.error(str(exc))
    kw = _task_kwargs("copy", a.tokens, "random", "uniform")

    torch.manual_seed(a.seed)
    cfg = AMSNetConfig(vocab_size=256, block_size=a.seq_len, n_layer=2, n_head=2,
                       d_model=a.d_model, **ov)
    model = build_model(cfg)
    if a.analyse:
        model.load_state_dict(load_file(a.analyse))
        res = {"weights": a.analyse, "breakdown": [
            copy_breakdown(model, T, a.n_eval, a.seed, a.tokens)
            for T in (a.first_length, a.seq_len)]}
        print(json.dumps(res))
        return res
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if a.first_weights and Path(a.first_weights).exists():
        load_weights(model, a.first_weights)
        losses = []                             # trained in an earlier run
    else:
        losses = train_task(model, "copy", a.first_length, a.first_examples, a.batch_size,
                            lr=a.first_lr, seed=1000 + a.seed, progress=False, **kw)
        if a.first_weights:
            atomic_save_tensors(model.state_dict(), a.first_weights)
    first_s = time.perf_counter() - t0
    g = torch.Generator().manual_seed(20_000 + a.seed)
    x, y = TASKS["copy"](a.n_eval, a.first_length, generator=g, **kw)
    first_acc = task_accuracy(model, x, y)
    final = sum(losses[-10:]) / len(losses[-10:]) if losses else None
    x, y = TASKS["copy"](a.n_eval, a.seq_len, generator=g, **kw)
    transfer = task_accuracy(model, x, y)       # the first stage's model at the full length
    print(f"stage 1: T={a.first_length} {a.first_examples} sequences lr {a.first_lr:g}: "
          f"accuracy {first_acc:.1%} ("
          + (f"loss {final:.3f}, {first_s:.0f} s" if losses else "weights read back")
          + f"); at T={a.seq_len} "
          f"before training there: {transfer:.1%}", flush=True)

    first = {"length": a.first_length, "examples": a.first_examples, "lr": a.first_lr}
    name = f"{model_name} after T{a.first_length}"
    settings = {"examples": a.examples, "batch_size": a.batch_size, "d_model": a.d_model,
                "n_layer": 2, "n_head": 2, "n_eval": a.n_eval, "query_dist": "uniform"}
    r = run_cell("copy", a.seq_len, a.tokens, "random", name, {**ov, "first_stage": first},
                 a.lr, a.seed, settings, out / "runs", build=lambda: model)
    if a.save:
        atomic_save_tensors(model.state_dict(), a.save)
    r = {**r, "breakdown": copy_breakdown(model, a.seq_len, a.n_eval, a.seed, a.tokens),
         "first_stage": {**first, "accuracy": first_acc, "final_loss": final,
                         f"accuracy_at_{a.seq_len}": transfer, "train_s": round(first_s, 1)}}
    atomic_json(r, out / f"curriculum_s{a.seed}.json")
    return r


if __name__ == "__main__":
    main()
