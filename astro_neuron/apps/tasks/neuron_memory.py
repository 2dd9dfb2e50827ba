"""The runner of ``astro-neuron memory-neuron`` (docs/memory.md, "Neuron-level memory").

:func:`run_neuron_memory` trains every model from scratch on the multi-item
store-recall task (:class:`astro_neuron.tasks.StoreRecallTask`: items stored with a
command, distractor cues during the delay, recalled with a command) for each delay
and seed, the same way for all (AdamW, the same steps, batch, schedule, read-out and
learning-rate rule: a sweep scored on a validation batch at each delay, or at the
first), and prints accuracy per model x delay x seed with mean and spread. Every
finished run is written to ``results.json`` at once, keyed by model, delay, seed and
rate; a rerun with the same run settings and output folder trains only the runs not
there (an interrupted table resumes). ``neuron_memory.png``: accuracy against delay,
one line per model.
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
from astro_neuron.validate import (
    choice, non_negative_int, positive_int, positive_number, probability,
)

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


def _key(model: str, delay: int, seed: int, lr: float) -> str:
    """The key of one training run in ``results.json``'s ``runs``."""
    return f"{model}/{delay}/{seed}/{lr!r}"


#: the settings a run's result depends on besides model, delay, seed and rate: a
#: results.json whose settings differ in any of them cannot be resumed
RUN_SETTINGS = ("steps", "batch_size", "n_eval", "n_neurons", "p_distract", "n_items")
TIE_RULE = ("rates whose validation accuracy per item is within tie_margin of the best "
            "are tied; the smallest tied rate is chosen")


def _import_legacy(old: dict) -> dict:
    """The runs of a results.json written before the per-delay sweep (``lr_sweep`` keyed
    ``model/lr``, run at the shortest delay with the first seed; ``cells`` keyed
    ``model/delay/seed``), keyed as runs are now."""
    runs: dict = {}
    d0, s0 = min(old.get("delays") or [0]), (old.get("seeds") or [0])[0]
    for k, r in old.get("lr_sweep", {}).items():
        model, lr = k.rsplit("/", 1)
        runs[_key(model, d0, s0, float(lr))] = r
    for k, r in old.get("cells", {}).items():
        model, d, s = k.rsplit("/", 2)
        r = {n: v for n, v in r.items() if n != "from_sweep"}
        runs.setdefault(_key(model, int(d), int(s), float(r["lr"])), r)
    return runs


def run_neuron_memory(models: Sequence[str] = RECALL_MODELS,
                      delays: Sequence[int] = (100, 300, 1000, 3000),
                      seeds: Sequence[int] = (0, 1, 2), steps: int = 150, batch_size: int = 16,
                      lrs: Sequence[float] = (3e-3, 1e-2, 3e-2), n_eval: int = 512, n_neurons: int = 64,
                      p_distract: float = 0.2, n_items: int = 2,
                      slow_max_delay: Optional[int] = 100, out_dir="out/memory-neuron",
                      jobs: int = 1, progress: bool = True, sweep_at: str = "each",
                      tie_margin: float = 0.01, lr_from: Optional[dict] = None,
                      train: bool = True) -> dict:
    """Accuracy per model x delay x seed; prints the table, writes ``results.json`` and
    ``neuron_memory.png`` in ``out_dir``; returns the summary.

    ``lrs``: one learning rate (used by every model at every delay), or several: then
    each model's rate is chosen by a sweep scored on a validation batch (not the test
    batch) with the first seed: the sweep's runs are trained with every rate, and the
    rates whose validation accuracy per item is within ``tie_margin`` of the best are
    tied; the smallest tied rate is chosen (the sweep sees one seed, the rate is then
    used for the others: among rates it cannot tell apart, the smallest step is the
    least likely to fail on another seed). ``sweep_at="each"``: a sweep at every delay,
    its rate used for that delay's other seeds; ``"first"``: one sweep at the shortest
    delay, its rate used at every delay. The sweep's run at the chosen rate is the first
    seed's cell (its test accuracy is reported).

    Work is done in the order of ``delays`` as given, then of ``models`` (the table
    is printed by increasing delay). Every run is written to ``results.json`` at once,
    keyed by model, delay, seed and rate; a rerun with the same run settings (steps,
    batch, test trials, neurons, distractors, items) and output folder trains only
    runs not there, whatever the rates, models or delays asked (an earlier
    ``results.json`` without ``runs`` is imported). A ``results.json`` with other run
    settings is an error, not overwritten.
    ``lr_from``: ``{model: other}``: the model has no sweep of its own and uses the
    rate chosen for ``other`` at each delay (for the slow Li-Rinzel model, whose sweep
    would cost three times its cells); ``other``'s sweep runs are trained if missing.
    ``train=False``: train nothing, tabulate and plot the runs already in
    ``results.json`` (cells not there are listed as not run).
    ``slow_max_delay``: the sequential Li-Rinzel model is trained only at delays up to
    this (None: all); longer cells are listed as not run. ``jobs``: runs trained at
    once in worker processes (one torch thread each).
    """
    bad = [m for m in models if m not in RECALL_MODELS]
    if bad or not models:
        raise ValueError(f"models must be some of {list(RECALL_MODELS)}, got {list(models)}")
    models = list(dict.fromkeys(models))
    order = list(dict.fromkeys(non_negative_int("delay", d) for d in delays))
    delays = sorted(order)
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
    choice("sweep_at", sweep_at, ("each", "first"))
    lr_from = dict(lr_from or {})
    for m, other in lr_from.items():
        if m not in models or other not in RECALL_MODELS or other == m or other in lr_from:
            raise ValueError(f"lr_from: {m!r}: {other!r} must map a model of the run to "
                             f"another model of {list(RECALL_MODELS)} that has its own sweep")
    probability("tie_margin", tie_margin)
    if slow_max_delay is not None:
        non_negative_int("slow_max_delay", slow_max_delay)
    if n_neurons % 4:
        raise ValueError(f"n_neurons must be a multiple of 4 (the AM-SU's 4 astrocytes), "
                         f"got {n_neurons}")
    out = Path(out_dir)
    path = out / "results.json"
    run_settings = {"steps": steps, "batch_size": batch_size, "n_eval": n_eval,
                    "n_neurons": n_neurons, "p_distract": p_distract, "n_items": n_items}
    runs: dict = {}
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"{path} exists but cannot be read as JSON ({e}); move it away "
                             "or choose another out_dir") from None
        old_settings = {k: old.get("settings", {}).get(k) for k in RUN_SETTINGS}
        if old_settings != run_settings:
            diff = {k: (old_settings[k], run_settings[k]) for k in RUN_SETTINGS
                    if old_settings[k] != run_settings[k]}
            raise ValueError(f"{path} holds runs with other settings (theirs, these: {diff}); "
                             "choose another out_dir to keep both")
        runs = old["runs"] if "runs" in old else _import_legacy(old)
        if runs:
            print(f"resuming {path}: {len(runs)} runs already there"
                  + ("" if "runs" in old else " (imported from the format before the "
                                                "per-delay sweep)"))
    out.mkdir(parents=True, exist_ok=True)
    sweeping = len(lrs) > 1
    settings = {**run_settings, "lrs": lrs, "sweep_at": sweep_at if sweeping else None,
                "tie_margin": tie_margin, "tie_rule": TIE_RULE, "lr_from": lr_from}
    chance = 1.0 / _task(0, p_distract, n_items).n_classes
    summary = {"settings": settings, "task": asdict(_task(delays[0], p_distract, n_items)),
               "chance": chance, "delays": delays, "seeds": seeds, "models": models,
               "lr": {}, "lr_sweep": {}, "cells": {}, "runs": runs, "jobs": jobs}
    common = dict(steps=steps, batch=batch_size, n_eval=n_eval, n_neurons=n_neurons,
                  p_distract=p_distract, n_items=n_items)

    def runs_at(model):
        return [d for d in order if not (model in SLOW_MODELS and slow_max_delay is not None
                                         and d > slow_max_delay)]

    def sweep_delay(model, delay) -> int:
        """The delay whose sweep sets the model's rate at ``delay``."""
        return delay if sweep_at == "each" else min(runs_at(model))

    def choose(model, delay) -> Optional[float]:
        """The model's rate at ``delay`` once its sweep is complete (else None)."""
        if not sweeping:
            return lrs[0]
        if model in lr_from:
            return choose(lr_from[model], delay)
        d = sweep_delay(model, delay)
        sw = [runs.get(_key(model, d, seeds[0], lr)) for lr in lrs]
        if any(r is None or "val_accuracy" not in r for r in sw):
            return None
        best = max(r["val_accuracy"] for r in sw)
        return min(lr for lr, r in zip(lrs, sw) if r["val_accuracy"] >= best - tie_margin - 1e-12)

    def refresh() -> None:
        """The views of ``runs`` the table is made of: rate, sweep and cell per model x delay."""
        summary["cells"] = {}
        for m in models:
            lr_m, sweep_m = {}, {}
            for d in sorted(runs_at(m)):
                lr_m[str(d)] = choose(m, d)
                if sweeping and m not in lr_from and sweep_delay(m, d) == d:
                    sweep_m[str(d)] = {repr(lr): r.get("val_accuracy") for lr in lrs
                                       if (r := runs.get(_key(m, d, seeds[0], lr)))}
                for s in seeds:
                    if lr_m[str(d)] is not None and (r := runs.get(_key(m, d, s, lr_m[str(d)]))):
                        summary["cells"][f"{m}/{d}/{s}"] = r
            summary["lr"][m], summary["lr_sweep"][m] = lr_m, sweep_m

    # the work, in the order of the delays as given, then of the models; at each, the
    # sweep's runs (first seed, validated) before the other seeds
    todo = []
    for d in order:
        for m in models:
            if d not in runs_at(m):
                continue
            src = lr_from.get(m, m)
            if sweeping and d in runs_at(src) and sweep_delay(src, d) == d:
                todo += [("sweep", src, d, seeds[0], lr) for lr in lrs
                         if ("sweep", src, d, seeds[0], lr) not in todo]
            todo += [("cell", m, d, s, None) for s in seeds]

    def args_of(job):
        kind, m, d, s, lr = job
        return (m, d, s, lr if kind == "sweep" else choose(m, d))

    def needed(job) -> bool:
        r = runs.get(_key(*args_of(job)))
        return r is None or (job[0] == "sweep" and "val_accuracy" not in r)

    def ready(job) -> bool:
        return job[0] == "sweep" or choose(job[1], job[2]) is not None

    refresh()
    t_start = time.perf_counter()

    def record(job, r) -> None:
        kind, m, d, s, lr = job
        m, d, s, lr = args_of(job)
        runs[_key(m, d, s, lr)] = r
        what = f"lr sweep, validation {r['val_accuracy']:6.1%}, test" if kind == "sweep" else "test"
        print(f"  {MODEL_NAMES[m]:<28} delay {d:>5} seed {s} lr {lr:<6g} {what} "
              f"{r['accuracy']:6.1%} per item, {r['trial_accuracy']:6.1%} per trial "
              f"({r['train_s']:.0f} s)", flush=True)
        refresh()
        atomic_json(summary, path)

    if not train:
        todo = []
    atomic_json(summary, path)
    bar = tqdm(total=len(todo), desc="memory-neuron runs", disable=not progress)

    def next_job():
        """The first ready job that needs training; ready jobs already run are dropped."""
        for j in list(todo):
            if ready(j):
                todo.remove(j)
                if needed(j):
                    return j
                bar.update()
        return None

    if jobs == 1:
        while (job := next_job()) is not None:
            record(job, _cell(*args_of(job), **common, validate=job[0] == "sweep",
                              progress=False))
            bar.update()
    else:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_one_thread) as pool:
            running: dict = {}
            while True:
                while len(running) < jobs and (job := next_job()) is not None:
                    running[pool.submit(_cell, *args_of(job), **common,
                                        validate=job[0] == "sweep")] = job
                if not running:
                    break
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    record(running.pop(fut), fut.result())
                    bar.update()
    bar.close()
    summary["wall_s"] = round(time.perf_counter() - t_start, 1) if train else None
    refresh()
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
                    "accuracies": accs, "train_s_mean": statistics.fmean(times),
                    "lr": summary["lr"][model][str(delay)]}
    return table


def format_table(summary: dict, models) -> str:
    """The table: accuracy per item, mean +- std over seeds (and min-max) and the rate
    used, per model and delay; then the learning-rate sweep (validation accuracy per
    rate, the chosen one starred) and the training times."""
    delays = summary["delays"]
    w = 33
    head = f"{'model':<28}" + "".join(f"  {'delay ' + str(d):>{w}}" for d in delays)
    lines = [f"store-recall, {summary['settings']['n_items']} items, accuracy per item "
             f"(mean +- std over seeds {summary['seeds']}, [min-max], lr used); chance "
             f"{summary['chance']:.0%}", head]
    for model in models:
        cells = []
        for d in delays:
            a = summary["table"].get(f"{model}/{d}")
            lr = summary["lr"].get(model, {}).get(str(d))
            cells.append("not run" if a is None else
                         f"{a['mean']:.1%} +-{a['std']:.1%} [{a['min']:.0%}-{a['max']:.0%}] "
                         f"{lr:g}" + (f" ({a['n_seeds']} seed{'s' * (a['n_seeds'] > 1)})"
                            if a["n_seeds"] < len(summary["seeds"]) else ""))
        lines.append(f"{MODEL_NAMES[model]:<28}" + "".join(f"  {c:>{w}}" for c in cells))
    sweeps = {m: summary["lr_sweep"].get(m, {}) for m in models}
    if any(sweeps.values()):
        st = summary["settings"]
        lines.append(f"learning-rate sweep (seed {summary['seeds'][0]}, validation accuracy "
                     f"per item for lr {' / '.join(f'{lr:g}' for lr in st['lrs'])}; * chosen: "
                     f"{st['tie_rule'].replace('tie_margin', format(st['tie_margin'], '.1%'))}):")
        for model in models:
            for d, accs in sweeps[model].items():
                chosen = summary["lr"][model].get(d)
                lines.append(f"  {MODEL_NAMES[model]:<28} delay {d:>5}: " + " / ".join(
                    "-" if (v := accs.get(repr(lr))) is None else
                    f"{v:.1%}" + ("*" if lr == chosen else "") for lr in st["lrs"]))
    lines.append("train s per run (mean): " + "; ".join(
        f"{model} " + "/".join(f"{summary['table'][f'{model}/{d}']['train_s_mean']:.0f}"
                               if f"{model}/{d}" in summary["table"] else "-" for d in delays)
        for model in models) + ("; table only, nothing trained" if summary.get("wall_s") is None
                                 else f"; whole run {summary['wall_s']:.0f} s"))
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
    st = summary["settings"]
    how = {"each": "learning rate swept at each delay", "first": "learning rate swept at the "
           "shortest delay"}.get(st.get("sweep_at"), f"learning rate {st['lrs'][0]:g}")
    ax.set_title(f"{st['n_items']}-item store-recall with distractors "
                 f"(mean ± std over {n_asked} seed{'s' if n_asked != 1 else ''};\n{how}, "
                 f"{st['steps']} training steps of batch {st['batch_size']})", fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3)
    fig.savefig(path, dpi=130)
