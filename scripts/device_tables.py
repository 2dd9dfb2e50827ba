"""The sequence-level memory tables on a GPU: many runs at once, each fitted to a time budget.

Every job is one run of ``astro-neuron memory-tasks`` (one cell, model, learning rate and
seed), trained and scored by the runner's own :func:`run_cell` on CUDA; ``--workers``
processes share the GPU. A job first times ``--probe-steps`` training steps of its model
(with every other worker running), then sets its number of training sequences to the
smaller of its target and what fits in ``--budget`` seconds, so the cosine schedule ends
where training does; ``time_limit`` is a safety stop (a run cut by it says so). The run
files land in ``--out/runs`` (the runner's layout) and a summary in ``--out/summary.json``.

    python scripts/device_tables.py --out out/device --budget 300 --workers 14

The jobs (the issue's missed items, docs/memory.md "On a GPU") are listed in JOBS.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time
import traceback
from pathlib import Path

from astro_neuron.lm.tasks import TASK_MODELS

MEM = ("AM-SNet memory tau256 dkey128",
       {**TASK_MODELS["AM-SNet memory"], "tau_astro": [256, 4096], "d_key": 128})
OFF = ("astrocyte off", TASK_MODELS["astrocyte off"])
# the baseline of the first GPU run (docs/figures/memory_device_h200.json, where it was
# still named "Transformer"); the tables' "Transformer" now has init_std "width"
TF = ("Transformer GPT-2 init", TASK_MODELS["Transformer GPT-2 init"])

# (task, T, size, train_length, model, lr, seed, target sequences)
JOBS = [
    *[("mqar", 1024, 8, None, MEM, 1e-3, s, 102_400) for s in (0, 1, 2)],
    *[("mqar", 256, 8, None, TF, lr, 0, 409_600) for lr in (3e-4, 1e-3, 3e-3)],
    *[("mqar", 256, 8, None, MEM, lr, 0, 102_400) for lr in (3e-4, 3e-3)],
    ("mqar", 256, 8, None, OFF, 1e-3, 0, 102_400),
    ("mqar", 1024, 8, None, TF, 1e-3, 0, 102_400),
    ("copy", 1024, 16, None, MEM, 1e-3, 0, 102_400),
    ("copy", 256, 16, None, MEM, 1e-3, 0, 102_400),
    ("copy", 1024, 16, None, TF, 1e-3, 0, 102_400),
    ("mqar", 1024, 8, None, OFF, 1e-3, 0, 102_400),
]

BATCH, D_MODEL, N_LAYER, N_HEAD, N_EVAL = 16, 128, 2, 2, 500


def _settings(examples: int, train_length) -> dict:
    return {"examples": examples, "batch_size": BATCH, "d_model": D_MODEL,
            "n_layer": N_LAYER, "n_head": N_HEAD, "n_eval": N_EVAL, "query_dist": "uniform",
            "warmup": 0.0, "mix_lengths": [], "train_length": train_length}


def _probe(job, steps: int) -> float:
    """Seconds a training step of this job's model takes here, now: ``train_task``'s own
    steps (after three to warm up), averaged."""
    from astro_neuron.lm.config import AMSNetConfig
    from astro_neuron.lm.model import build_model
    from astro_neuron.lm.tasks import train_task
    task, T, size, tl, (name, ov), lr, seed, _ = job
    model = build_model(AMSNetConfig(vocab_size=256, block_size=T, n_layer=N_LAYER,
                                     n_head=N_HEAD, d_model=D_MODEL, **ov)).cuda()
    kw = {"n_pairs": size} if task == "mqar" else {"n_tokens": size}
    train_task(model, task, tl or T, 3 * BATCH, BATCH, lr=lr, progress=False, **kw)
    t0 = time.perf_counter()
    train_task(model, task, tl or T, steps * BATCH, BATCH, lr=lr, progress=False, **kw)
    return (time.perf_counter() - t0) / steps


def _worker(job, out: str, budget: float, probe_steps: int, t_start: float) -> dict:
    import torch

    from astro_neuron.apps.tasks.lm_memory import run_cell
    task, T, size, tl, (name, ov), lr, seed, target = job
    try:
        s_step = _probe(job, probe_steps)
        left = budget - (time.perf_counter() - t_start) - 25.0     # scoring and slack
        fit = int(left / (s_step * 1.15)) * BATCH
        examples = max(BATCH, min(target, fit))
        r = run_cell(task, T, size, "random", name, ov, lr, seed, _settings(examples, tl),
                     Path(out) / "runs", device="cuda", time_limit=max(left, 10.0))
        r.update(target_examples=target, probe_s_per_step=round(s_step, 4),
                 gpu=torch.cuda.get_device_name())
        return r
    except Exception:
        return {"job": repr(job), "error": traceback.format_exc()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="out/device")
    p.add_argument("--budget", type=float, default=300.0, help="seconds for every job")
    p.add_argument("--workers", type=int, default=len(JOBS))
    p.add_argument("--probe-steps", type=int, default=20)
    p.add_argument("--jobs", default=None, help="comma-separated job indices (default all)")
    a = p.parse_args()
    jobs = JOBS if a.jobs is None else [JOBS[int(i)] for i in a.jobs.split(",")]
    os.makedirs(a.out, exist_ok=True)
    t_start = time.perf_counter()
    ctx = mp.get_context("spawn")
    with ctx.Pool(min(a.workers, len(jobs))) as pool:
        res = pool.starmap(_worker, [(j, a.out, a.budget, a.probe_steps, t_start)
                                     for j in jobs])
    summary = {"wall_s": round(time.perf_counter() - t_start, 1), "budget_s": a.budget,
               "workers": a.workers, "runs": res}
    Path(a.out, "summary.json").write_text(json.dumps(summary, indent=1))
    for r in res:
        if "error" in r:
            print("FAILED", r["job"], r["error"].splitlines()[-1])
            continue
        seen = r.get("examples_trained", r["settings"]["examples"])
        print(f"{r['task']:5s} T={r['seq_len']:5d} n={r['size']:3d} {r['model']:<30s} "
              f"lr={r['lr']:<7g} seed {r['seed']}: {r['accuracy']:6.1%}  "
              f"({seen}/{r['target_examples']} seq, {r['train_s']} s, "
              f"{r['probe_s_per_step'] * 1e3:.1f} ms/step probed)")
    print(f"wall {summary['wall_s']} s")


if __name__ == "__main__":
    main()
