"""The runner of ``astro-neuron memory-neuron`` (docs/memory.md, "Neuron-level memory").

:func:`run_neuron_memory` trains every model from scratch on the multi-item
store-recall task (:class:`astro_neuron.tasks.StoreRecallTask`: items stored with a
command, distractor cues during the delay, recalled with a command) for each delay
and seed, the same way for all (AdamW, the same steps, batch, schedule, read-out and
learning-rate rule), and prints accuracy per model x delay x seed with mean and
spread. Every finished cell is written to ``results.json`` at once; a rerun with the
same settings and output folder skips the cells already there (an interrupted table
resumes). ``neuron_memory.png``: accuracy against delay, one line per model.
"""

from __future__ import annotations

import json
import multiprocessing
import statistics
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict
from pathlib import Path
from typing import Optional, Sequence

import torch
from tqdm.auto import tqdm

from astro_neuron.io import atomic_json
from astro_neuron.tasks import (
    RECALL_MODELS, RecallNet, StoreRecallTask, evaluate_items, store_recall, train_recall_net,
)
from astro_neuron.validate import non_negative_int, positive_int, positive_number, probability

__all__ = ["run_neuron_memory", "MODEL_NAMES", "format_table"]

MODEL_NAMES = {"amsu": "AM-SU (linear astrocyte)", "amsu-li-rinzel": "AM-SU (Li-Rinzel astrocyte)",
               "lif": "LIF", "alif": "ALIF (LSNN)"}
#: models with no parallel form and a slow step (trained only up to ``slow_max_delay``)
SLOW_MODELS = ("amsu-li-rinzel",)
_VAL_SEED, _TEST_SEED = 5_000, 10_000


def _task(delay: int, p_distract: float, n_items: int) -> StoreRecallTask:
    return StoreRecallTask(n_items=n_items, delay=delay, p_distract=p_distract)


def _cell(model: str, delay: int, seed: int, lr: float, steps: int, batch: int, n_eval: int,
          n_neurons: int, p_distract: float, n_items: int, progress: bool = False,
          validate: bool = False) -> dict:
    """Train one network and test it: accuracy on the test batch (and on a separate
    validation batch when ``validate``, for the learning-rate choice)."""
    task = _task(delay, p_distract, n_items)
    torch.manual_seed(seed)
    net = RecallNet(task, model, n_neurons=n_neurons, horizon=task.T)
    t0 = time.perf_counter()
    losses = train_recall_net(net, steps, batch, lr, seed, progress,
                              desc=f"{model} delay {delay} seed {seed} lr {lr:g}")
    train_s = time.perf_counter() - t0
    out = {"lr": lr, "train_s": round(train_s, 1),
           "final_loss": round(sum(losses[-10:]) / len(losses[-10:]), 4)}
    for name, data_seed in (("", _TEST_SEED),) + ((("val_", _VAL_SEED),) if validate else ()):
        x, y = store_recall(task, n_eval, torch.Generator().manual_seed(data_seed + delay))
        item, trial = evaluate_items(net, x, y)
        out[name + "accuracy"], out[name + "trial_accuracy"] = item, trial
    return out


def _one_thread() -> None:
    torch.set_num_threads(1)


def run_neuron_memory(models: Sequence[str] = RECALL_MODELS,
                      delays: Sequence[int] = (100, 300, 1000, 3000),
                      seeds: Sequence[int] = (0, 1, 2), steps: int = 150, batch_size: int = 16,
                      lrs: Sequence[float] = (3e-3, 1e-2, 3e-2), n_eval: int = 512, n_neurons: int = 64,
                      p_distract: float = 0.2, n_items: int = 2,
                      slow_max_delay: Optional[int] = 100, out_dir="out/memory-neuron",
                      jobs: int = 1, progress: bool = True) -> dict:
    """Accuracy per model x delay x seed; prints the table, writes ``results.json`` and
    ``neuron_memory.png`` in ``out_dir``; returns the summary.

    ``lrs``: one learning rate (used by every model), or several: then each model's
    rate is the best of them by accuracy on a validation batch (not the test batch) at
    the shortest delay with the first seed, and that rate is used at every delay (the
    sweep's run at the chosen rate is that cell's run: its test accuracy is reported).
    ``slow_max_delay``: the sequential Li-Rinzel model is trained only at delays up to
    this (None: all); longer cells are listed as not run. ``jobs``: cells trained at
    once in worker processes (one torch thread each).
    """
    bad = [m for m in models if m not in RECALL_MODELS]
    if bad or not models:
        raise ValueError(f"models must be some of {list(RECALL_MODELS)}, got {list(models)}")
    delays = sorted({non_negative_int("delay", d) for d in delays})
    seeds = list(dict.fromkeys(non_negative_int("seed", s) for s in seeds))
    if not delays or not seeds:
        raise ValueError("give at least one delay and one seed")
    lrs = list(dict.fromkeys(positive_number("lr", lr) for lr in lrs))
    if not lrs:
        raise ValueError("give at least one learning rate")
    for name, value in (("steps", steps), ("batch_size", batch_size), ("n_eval", n_eval),
                        ("n_neurons", n_neurons), ("n_items", n_items), ("jobs", jobs)):
        positive_int(name, value)
    probability("p_distract", p_distract)
    if slow_max_delay is not None:
        non_negative_int("slow_max_delay", slow_max_delay)
    if n_neurons % 4:
        raise ValueError(f"n_neurons must be a multiple of 4 (the AM-SU's 4 astrocytes), "
                         f"got {n_neurons}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    settings = {"steps": steps, "batch_size": batch_size, "lrs": lrs, "n_eval": n_eval,
                "n_neurons": n_neurons, "p_distract": p_distract, "n_items": n_items}
    cells: dict = {}
    sweep: dict = {}
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            old = {}
        if old.get("settings") == settings:        # resume: keep the cells already run
            cells, sweep = old.get("cells", {}), old.get("lr_sweep", {})
            if cells or sweep:
                print(f"resuming {path}: {len(cells)} cells and {len(sweep)} sweep runs "
                      "already run")
    chance = 1.0 / _task(0, p_distract, n_items).n_classes
    summary = {"settings": settings, "task": asdict(_task(delays[0], p_distract, n_items)),
               "chance": chance, "delays": delays, "seeds": seeds, "models": list(models),
               "lr": {}, "lr_sweep": sweep, "cells": cells, "jobs": jobs}
    common = dict(steps=steps, batch=batch_size, n_eval=n_eval, n_neurons=n_neurons,
                  p_distract=p_distract, n_items=n_items)

    def runs_at(model):
        return [d for d in delays if not (model in SLOW_MODELS and slow_max_delay is not None
                                          and d > slow_max_delay)]

    def choose(model) -> Optional[float]:
        """The model's rate once its sweep is complete (and fill its first cell)."""
        if len(lrs) == 1:
            return lrs[0]
        runs = [sweep.get(f"{model}/{lr}") for lr in lrs]
        if any(r is None for r in runs):
            return None
        best = max(runs, key=lambda r: (r["val_accuracy"], -r["final_loss"]))
        first = f"{model}/{delays[0]}/{seeds[0]}"
        cells.setdefault(first, {**best, "from_sweep": True})
        return best["lr"]

    # the work: sweep runs first, then cells by delay (shortest first), models interleaved
    todo = [("sweep", m, delays[0], seeds[0], lr) for m in models if len(lrs) > 1
            for lr in lrs if f"{m}/{lr}" not in sweep]
    todo += [("cell", m, d, s, None) for d in delays for s in seeds for m in models
             if d in runs_at(m) and f"{m}/{d}/{s}" not in cells
             and not (len(lrs) > 1 and d == delays[0] and s == seeds[0])]
    # fast models first; the slow sequential model's runs last
    todo.sort(key=lambda j: (j[1] in SLOW_MODELS, j[0] != "sweep", j[2]))
    for m in models:
        summary["lr"][m] = choose(m)
    t_start = time.perf_counter()

    def record(job, r) -> None:
        kind, m, d, s, lr = job
        if kind == "sweep":
            sweep[f"{m}/{lr}"] = r
            print(f"  lr sweep {MODEL_NAMES[m]:<28} delay {d:>5} lr {lr:g}: validation "
                  f"{r['val_accuracy']:6.1%} ({r['train_s']:.0f} s)", flush=True)
            summary["lr"][m] = choose(m)
        else:
            cells[f"{m}/{d}/{s}"] = r
            print(f"  {MODEL_NAMES[m]:<28} delay {d:>5} seed {s}: {r['accuracy']:6.1%} per "
                  f"item, {r['trial_accuracy']:6.1%} per trial ({r['train_s']:.0f} s)",
                  flush=True)
        atomic_json(summary, path)

    def ready(job) -> bool:
        return job[0] == "sweep" or summary["lr"][job[1]] is not None

    def args_of(job):
        kind, m, d, s, lr = job
        return (m, d, s, lr if kind == "sweep" else summary["lr"][m])

    atomic_json(summary, path)
    bar = tqdm(total=len(todo), desc="memory-neuron runs", disable=not progress)
    if jobs == 1:
        while todo:
            job = next(j for j in todo if ready(j))
            todo.remove(job)
            record(job, _cell(*args_of(job), **common, validate=job[0] == "sweep",
                              progress=False))
            bar.update()
    else:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_one_thread) as pool:
            running: dict = {}
            while todo or running:
                while todo and len(running) < jobs and any(ready(j) for j in todo):
                    job = next(j for j in todo if ready(j))
                    todo.remove(job)
                    running[pool.submit(_cell, *args_of(job), **common,
                                        validate=job[0] == "sweep")] = job
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    record(running.pop(fut), fut.result())
                    bar.update()
    bar.close()
    summary["wall_s"] = round(time.perf_counter() - t_start, 1)
    summary["table"] = _aggregate(summary, models)
    atomic_json(summary, path)
    print()
    print(format_table(summary, models))
    png = out / "neuron_memory.png"
    plot_neuron_memory(summary, models, png)
    print(f"wrote {path} and {png}")
    return summary


def _aggregate(summary: dict, models) -> dict:
    table = {}
    for model in models:
        for delay in summary["delays"]:
            accs = [summary["cells"][k]["accuracy"] for s in summary["seeds"]
                    if (k := f"{model}/{delay}/{s}") in summary["cells"]]
            times = [summary["cells"][k]["train_s"] for s in summary["seeds"]
                     if (k := f"{model}/{delay}/{s}") in summary["cells"]]
            if accs:
                table[f"{model}/{delay}"] = {
                    "mean": statistics.fmean(accs),
                    "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                    "min": min(accs), "max": max(accs), "n_seeds": len(accs),
                    "accuracies": accs, "train_s_mean": statistics.fmean(times)}
    return table


def format_table(summary: dict, models) -> str:
    """The table: accuracy per item, mean +- std over seeds (and min-max), per model and delay."""
    delays = summary["delays"]
    head = f"{'model (lr)':<36}" + "".join(f"{'delay ' + str(d):>22}" for d in delays)
    lines = [f"store-recall, {summary['settings']['n_items']} items, accuracy per item "
             f"(mean +- std over seeds {summary['seeds']}, [min-max]); chance "
             f"{summary['chance']:.0%}", head]
    for model in models:
        cells = []
        for d in delays:
            a = summary["table"].get(f"{model}/{d}")
            cells.append(f"{'not run':>22}" if a is None else
                         f"{a['mean']:>7.1%} +-{a['std']:5.1%} [{a['min']:.0%}-{a['max']:.0%}]")
        lr = summary["lr"].get(model)
        lines.append(f"{MODEL_NAMES[model] + f' ({lr:g})':<36}" + "".join(f"{c:>22}" for c in cells))
    lines.append("train s per run (mean): " + "; ".join(
        f"{model} " + "/".join(f"{summary['table'][f'{model}/{d}']['train_s_mean']:.0f}"
                               if f"{model}/{d}" in summary["table"] else "-" for d in delays)
        for model in models) + f"; whole run {summary.get('wall_s', 0):.0f} s")
    return "\n".join(lines)


def plot_neuron_memory(summary: dict, models, path) -> None:
    """Accuracy per item (%) against delay (steps, log axis), one line per model with
    error bars (std over seeds), chance dashed; a point from fewer seeds than asked is
    labelled with its number of seeds."""
    from matplotlib.figure import Figure  # deferred: matplotlib is slow to import, only the plot needs it

    n_asked = len(summary["seeds"])
    fig = Figure(figsize=(6.4, 4.8), layout="constrained")
    ax = fig.subplots()
    for model in models:
        pts = [(d, summary["table"][f"{model}/{d}"]) for d in summary["delays"]
               if f"{model}/{d}" in summary["table"]]
        if not pts:
            continue
        line = ax.errorbar([d for d, _ in pts], [100 * a["mean"] for _, a in pts],
                           yerr=[100 * a["std"] for _, a in pts], marker="o", capsize=3,
                           label=MODEL_NAMES[model])
        for d, a in pts:
            if a["n_seeds"] < n_asked:
                ax.annotate(f"{a['n_seeds']} seed{'s' if a['n_seeds'] != 1 else ''}",
                            (d, 100 * a["mean"]), textcoords="offset points", xytext=(6, 6),
                            fontsize=7, color=line[0].get_color())
    ax.axhline(100 * summary["chance"], color="k", ls="--", lw=0.8, label="chance")
    if all(d > 0 for d in summary["delays"]):
        ax.set_xscale("log")
        ax.set_xticks(summary["delays"], [str(d) for d in summary["delays"]])
        ax.minorticks_off()
    ax.set_xlabel("delay between the last store and the first recall (steps)")
    ax.set_ylabel("recall accuracy per item (%)")
    ax.set_ylim(0, 105)
    ax.set_title(f"{summary['settings']['n_items']}-item store-recall with distractors "
                 f"(mean ± std over {n_asked} seed{'s' if n_asked != 1 else ''})", fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3)
    fig.savefig(path, dpi=130)
