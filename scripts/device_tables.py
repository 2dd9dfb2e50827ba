"""The sequence-level memory tables on a GPU: many runs at once, each fitted to a time budget.

Every job is one run of ``astro-neuron memory-tasks`` (one cell, model, learning rate and
seed), trained and scored by the runner's own :func:`run_cell` on CUDA, with its own
batch size, width and mixed training lengths; the jobs of the stand-in model of
``scripts/probe_event_clock.py`` and of ``scripts/probe_transformer_delay.py`` go through
``run_cell`` too (its ``build``).
``--workers`` processes share the GPU. A job first times ``--probe-steps`` training
steps of its model (once every worker has started), then
sets its number of training sequences to the smaller of its target and what fits in
``--budget`` seconds, so the cosine schedule ends where training does; ``time_limit``
is a safety stop (a run cut by it says so). The run files land in ``--out/runs`` (the
runner's layout) and a summary in ``--out/summary.json``.

    python scripts/device_tables.py --out out/device --budget 300 --workers 8 --jobs 0,1,2

The jobs (the issue's missed items, docs/memory.md "On a GPU") are listed in JOBS;
``--device cpu`` only tries the script.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time
import traceback
from pathlib import Path

import torch

from astro_neuron.lm.tasks import TASK_MODELS

MEM = ("AM-SNet memory tau256 dkey128",
       {**TASK_MODELS["AM-SNet memory"], "tau_astro": [256, 4096], "d_key": 128})
RELU = ("AM-SNet relu", TASK_MODELS["AM-SNet relu"])
OFF = ("astrocyte off", TASK_MODELS["astrocyte off"])
TF = ("Transformer", TASK_MODELS["Transformer"])            # init_std "width"
# the stand-in model of scripts/probe_event_clock.py (not the AM-SU): keys turned by a
# learned event clock or by time steps
EVENT, TIME = ("probe event clock", {"probe": "event"}), ("probe time", {"probe": "time"})
# the Transformer with the AM-SU's 4-tap delay line on k, v (scripts/probe_transformer_delay.py)
TFD = ("Transformer delay4", {**TASK_MODELS["Transformer"], "probe": "delay line 4 taps"})

# One job: (task, T, size, model, lr, seed, target sequences, batch, d_model, mix_lengths).
# The twelfth session's lease (docs/memory.md "On a GPU, twelfth session"): the misses
# at T=1024 and the Transformer's MQAR budget at T=256, batch 64.
JOBS = [
    ("copy", 1024, 16, RELU, 1e-3, 0, 2_000_000, 64, 128, []),
    ("copy", 1024, 16, RELU, 1e-3, 0, 2_000_000, 64, 128, [256]),
    ("copy", 1024, 16, EVENT, 1e-3, 0, 2_000_000, 64, 64, []),
    ("copy", 1024, 16, TIME, 1e-3, 0, 2_000_000, 64, 64, []),
    ("mqar", 1024, 8, MEM, 1e-3, 0, 2_000_000, 64, 128, []),
    ("mqar", 1024, 8, MEM, 1e-3, 0, 2_000_000, 64, 128, [256]),
    ("mqar", 256, 8, TF, 1e-3, 0, 4_000_000, 64, 128, []),
    ("mqar", 256, 8, TF, 3e-4, 0, 4_000_000, 64, 128, []),
    # the second call: the seeds of what learnt (MQAR, lengths 1024 and 256 mixed), the
    # ablation in the same setting
    ("mqar", 1024, 8, MEM, 1e-3, 1, 2_000_000, 64, 128, [256]),
    ("mqar", 1024, 8, MEM, 1e-3, 2, 2_000_000, 64, 128, [256]),
    ("mqar", 1024, 8, OFF, 1e-3, 0, 2_000_000, 64, 128, [256]),
    ("copy", 1024, 16, RELU, 1e-3, 1, 2_000_000, 64, 128, [256]),
    # the third: seed 0 again, two runs on the GPU (the first had eight beside it)
    ("mqar", 1024, 8, MEM, 1e-3, 0, 2_000_000, 64, 128, [256]),
    ("copy", 1024, 16, RELU, 1e-3, 0, 2_000_000, 64, 128, [256]),
    # prepared for the next lease, not run yet: selective copying at T=1024 at the lower
    # rates that start learning there on the CPU (docs/memory.md, "Selective copying at
    # T=1024: the learning rate"), on T=1024 alone, three seeds, and at 1e-4
    *[("copy", 1024, 16, RELU, 3e-4, s, 2_000_000, 64, 128, []) for s in (0, 1, 2)],
    ("copy", 1024, 16, RELU, 1e-4, 0, 2_000_000, 64, 128, []),
    # prepared in the thirteenth session (CPU: the Transformer with a delay line learns MQAR
    # at T=256 with 51,200 sequences; docs/memory.md "The Transformer with a delay line"):
    # the plain Transformer at Zoology's budget (64 epochs of 100,000) and batch 256, two
    # rates; the T=1024 MQAR protocol that the AM-SNet met (T=256 mixed in) for the plain
    # Transformer and the one with the delay line
    ("mqar", 256, 8, TF, 1e-3, 0, 6_400_000, 256, 128, []),
    ("mqar", 256, 8, TF, 3e-4, 0, 6_400_000, 256, 128, []),
    ("mqar", 1024, 8, TF, 1e-3, 0, 2_000_000, 64, 128, [256]),
    ("mqar", 1024, 8, TFD, 1e-3, 0, 2_000_000, 64, 128, [256]),
]

N_LAYER, N_HEAD, N_EVAL = 2, 2, 500


def _settings(job, examples: int) -> dict:
    batch, d_model, mix = job[7], job[8], job[9]
    return {"examples": examples, "batch_size": batch, "d_model": d_model,
            "n_layer": N_LAYER, "n_head": N_HEAD, "n_eval": N_EVAL, "query_dist": "uniform",
            "warmup": 0.0, "mix_lengths": list(mix), "train_length": None}


def _script(name: str):
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _probe_model(job):
    """A stand-in model of a probe script: the event-clock probe ("event", "time") or the
    Transformer with a delay line ("delay line K taps")."""
    from astro_neuron.lm.config import AMSNetConfig
    task, T, size, (name, ov), lr, seed, _, batch, d_model, mix = job
    if ov["probe"] in ("event", "time"):
        return _script("probe_event_clock").Probe(ov["probe"])
    taps = int(ov["probe"].split()[2])
    cfg = AMSNetConfig(vocab_size=256, block_size=T, n_layer=N_LAYER, n_head=N_HEAD,
                       d_model=d_model, **{k: v for k, v in ov.items() if k != "probe"})
    return _script("probe_transformer_delay").delay_transformer(cfg, taps)


def _model(job, device: str):
    from astro_neuron.lm.config import AMSNetConfig
    from astro_neuron.lm.model import build_model
    task, T, size, (name, ov), lr, seed, _, batch, d_model, mix = job
    if "probe" in ov:
        return _probe_model(job).to(device)
    return build_model(AMSNetConfig(vocab_size=256, block_size=T, n_layer=N_LAYER,
                                    n_head=N_HEAD, d_model=d_model, **ov)).to(device)


def _kw(job) -> dict:
    from astro_neuron.apps.tasks.lm_memory import _task_kwargs
    return _task_kwargs(job[0], job[2], "random", "uniform")


def _probe(job, steps: int, device: str, start_at: float) -> float:
    """Seconds a training step of this job's model takes here, now: ``train_task``'s own
    steps (after three to warm up and a wait until every worker has started), averaged."""
    from astro_neuron.lm.tasks import train_task
    task, T, size, _, lr, seed, _, batch, _, mix = job
    model = _model(job, device)
    train_task(model, task, T, 3 * batch, batch, lr=lr, progress=False, mix_lengths=mix,
               **_kw(job))
    time.sleep(max(0.0, start_at - time.perf_counter()))
    t0 = time.perf_counter()
    train_task(model, task, T, steps * batch, batch, lr=lr, progress=False, mix_lengths=mix,
               **_kw(job))
    return (time.perf_counter() - t0) / steps


def _worker(job, out: str, budget: float, probe_steps: int, t_start: float,
            device: str) -> dict:
    from astro_neuron.apps.tasks.lm_memory import run_cell
    task, T, size, (name, ov), lr, seed, target, batch, d_model, mix = job
    try:
        torch.set_num_threads(1)
        s_step = _probe(job, probe_steps, device, t_start + 30.0)
        left = budget - (time.perf_counter() - t_start) - 25.0     # scoring and slack
        fit = int(left / (s_step * 1.25)) * batch
        examples = max(batch, min(target, fit))
        build = (lambda: _probe_model(job)) if "probe" in ov else None
        r = run_cell(task, T, size, "random", name, ov, lr, seed, _settings(job, examples),
                     Path(out) / "runs", device=device, time_limit=max(left, 10.0),
                     build=build)
        r.update(target_examples=target, probe_s_per_step=round(s_step, 4),
                 gpu=torch.cuda.get_device_name() if device == "cuda" else "cpu")
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
    p.add_argument("--device", default="cuda", help="cuda; cpu only to try the script")
    a = p.parse_args()
    jobs = JOBS if a.jobs is None else [JOBS[int(i)] for i in a.jobs.split(",")]
    os.makedirs(a.out, exist_ok=True)
    t_start = time.perf_counter()
    ctx = mp.get_context("spawn")
    with ctx.Pool(min(a.workers, len(jobs))) as pool:
        res = pool.starmap(_worker, [(j, a.out, a.budget, a.probe_steps, t_start, a.device)
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
