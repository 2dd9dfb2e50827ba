"""The memory-task runner of ``astro-neuron memory-tasks`` (docs/memory.md).

:func:`run_memory_tasks` trains each model from scratch for every cell of a table
(task, sequence length, pairs or tokens, noise) at every learning rate of a sweep,
keeps the best rate (Zoology's protocol), repeats that rate with more seeds, prints
the table and saves it (JSON and plots). Each finished run is saved at once under
``out_dir/runs/``, so an interrupted table resumes where it stopped. The tasks, the
model variants and the training loop are library code: :mod:`astro_neuron.lm.tasks`.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Union

import torch
from tqdm.auto import tqdm

from astro_neuron.apps.savefig import save_figure
from astro_neuron.io import atomic_json
from astro_neuron.lm.config import AMSNetConfig
from astro_neuron.lm.model import build_model
from astro_neuron.lm.tasks import NOISE, QUERY_DIST, TASK_MODELS, TASKS, chance, task_accuracy, \
    train_task
from astro_neuron.lm.train import resolve_device
from astro_neuron.validate import choice, int_in_range, number_in_range, positive_int, \
    positive_number

__all__ = ["run_memory_tasks", "run_cell", "format_table", "combine_tables", "TABLES",
           "resolve_models"]

#: the tables of docs/memory.md: task, lengths, sizes (key-value pairs for MQAR, data
#: tokens for selective copy) and the axis the plot puts on x
TABLES = {
    "mqar": {"task": "mqar", "lengths": (64, 256, 1024), "sizes": (4, 8, 16), "x": "length"},
    "copy": {"task": "copy", "lengths": (256, 1024), "sizes": (16,), "x": "length"},
    "capacity": {"task": "mqar", "lengths": (256,), "sizes": (2, 4, 8, 16, 32), "x": "size"},
}
DEFAULT_MODELS = ("AM-SNet", "AM-SNet memory", "astrocyte off", "Transformer")
DEFAULT_LRS = (1e-4, 4.6e-4, 2.2e-3, 1e-2)      # Zoology's sweep


def resolve_models(models) -> dict[str, dict]:
    """Model names -> ``AMSNetConfig`` overrides. ``models``: names of
    :data:`~astro_neuron.lm.tasks.TASK_MODELS`, ``"NAME=JSON"`` strings (a named variant,
    e.g. ``'AM-SNet tau=\\{"tau_astro": [64, 4096]\\}'``) or a dict name -> overrides."""
    if isinstance(models, dict):
        out = {str(k): dict(v) for k, v in models.items()}
    else:
        out = {}
        for m in models:
            if "=" in m:
                name, _, js = m.partition("=")
                try:
                    ov = json.loads(js)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"model {m!r}: the part after '=' must be a JSON object "
                                     f"of model options ({exc})") from None
                if not isinstance(ov, dict):
                    raise ValueError(f"model {m!r}: options must be a JSON object")
                out[name.strip()] = ov
            elif m in TASK_MODELS:
                out[m] = dict(TASK_MODELS[m])
            else:
                raise ValueError(f"unknown model {m!r}; choose from {list(TASK_MODELS)} or "
                                 f"give NAME=JSON options")
    if not out:
        raise ValueError("no model to run")
    for name, ov in out.items():      # fail now, not after hours, on a bad option
        AMSNetConfig(**{"vocab_size": 256, "block_size": 64, "n_layer": 1, "n_head": 1,
                        "d_model": 8, **ov})
    return out


def _key(c: dict) -> str:
    return (f"{c['task']}_T{c['seq_len']}_n{c['size']}_{c['noise']}_{c['model']}"
            f"_lr{c['lr']:.3g}_s{c['seed']}").replace(" ", "-").replace("/", "-")


def _task_kwargs(task: str, size: int, noise: str, query_dist: str) -> dict:
    if task == "mqar":
        return {"n_pairs": size, "noise": noise, "query_dist": query_dist}
    return {"n_tokens": size, "noise": noise}


def run_memory_tasks(table: str = "mqar", lengths=None, sizes=None,
                     models: Union[tuple, list, dict] = DEFAULT_MODELS, lrs=DEFAULT_LRS,
                     seeds: int = 3, examples: int = 20_000, batch_size: int = 64,
                     d_model: int = 64, n_layer: int = 2, n_head: int = 2,
                     noise: Union[str, tuple] = "random", query_dist: str = "uniform",
                     n_eval: int = 500, out_dir="out/memory-tasks", quick: bool = False,
                     progress: bool = True, task: Optional[str] = None,
                     warmup: float = 0.0, mix_lengths=(),
                     train_length: Optional[int] = None, device: str = "cpu") -> dict:
    """One table of docs/memory.md; prints it, saves ``memory_<table>.json`` and
    ``memory_<table>.png`` in ``out_dir`` and returns the summary.

    For every (length, size, noise, model): one run per learning rate of ``lrs``
    with seed 0, then ``seeds - 1`` more seeds at the best of them (the highest
    accuracy). Every run trains a fresh model on ``examples`` fresh sequences
    (``batch_size`` per step) and is scored on ``n_eval`` held-out sequences.
    ``table``: a name of :data:`TABLES`; ``lengths`` / ``sizes`` / ``task`` override
    its lists. ``noise``: ``"random"``, ``"constant"`` or both (a tuple).
    ``warmup``: the share of each run's steps spent warming the learning rate up
    linearly from 0 (0: none, the cosine starts at the peak; 0.1: a tenth of the steps).
    ``mix_lengths``: shorter lengths mixed into each cell's training (the steps cycle
    over the cell's length and these; Zoology trains MQAR on several lengths at once);
    the model is scored at the cell's length only. ``train_length``: train every cell
    at this length (not longer than the cell's) and score it at the cell's length, a
    test of length extrapolation (None: train at the cell's length); ``mix_lengths``
    are then shorter than it. ``quick``: tiny settings for tests (seconds).
    ``device``: where the models train (``"cuda"`` on a GPU; the results do not depend on
    it beyond rounding, and a finished run is reused on any device).
    """
    choice("table", table, TABLES)
    spec = dict(TABLES[table])
    task = choice("task", task, TASKS) if task is not None else spec["task"]
    lengths = [positive_int("length", T) for T in (lengths or spec["lengths"])]
    sizes = [positive_int("size", n) for n in (sizes or spec["sizes"])]
    noises = [noise] if isinstance(noise, str) else list(noise)
    for nz in noises:
        choice("noise", nz, NOISE)
    choice("query_dist", query_dist, QUERY_DIST)
    lrs = [positive_number("lr", lr) for lr in lrs]
    if not lrs:
        raise ValueError("lrs: give at least one learning rate")
    int_in_range("seeds", seeds, 1, 100)
    warmup = number_in_range("warmup", warmup, 0.0, 1.0, hi_open=True)
    mix_lengths = [positive_int("mix_lengths", L) for L in mix_lengths]
    if train_length is not None:
        positive_int("train_length", train_length)
    for name, value in (("examples", examples), ("batch_size", batch_size),
                        ("d_model", d_model), ("n_layer", n_layer), ("n_head", n_head),
                        ("n_eval", n_eval)):
        positive_int(name, value)
    mdl = resolve_models(models)
    device = str(resolve_device(str(device)))
    if quick:
        examples, batch_size, d_model, n_eval = min(examples, 64), min(batch_size, 16), 16, 32
    for T in lengths:                 # the generators' own checks, before any training
        if train_length is not None and train_length > T:
            raise ValueError(f"train_length {train_length} is longer than the table's length "
                             f"{T}: it trains at a length no longer than it scores")
        T_train = train_length or T
        for L in mix_lengths:
            if L >= T_train:
                raise ValueError(f"mix_lengths: {L} is not shorter than the training length "
                                 f"{T_train}")
        for n in sizes:
            for nz in noises:
                for L in (T, T_train, *mix_lengths):
                    TASKS[task](1, L, **_task_kwargs(task, n, nz, query_dist))
    settings = {"table": table, "task": task, "lengths": lengths, "sizes": sizes,
                "noise": noises, "query_dist": query_dist, "models": mdl, "lrs": lrs,
                "seeds": seeds, "examples": examples, "batch_size": batch_size,
                "d_model": d_model, "n_layer": n_layer, "n_head": n_head, "n_eval": n_eval,
                "warmup": warmup, "mix_lengths": mix_lengths, "train_length": train_length}
    out = Path(out_dir)
    runs_dir = out / "runs"
    groups = [(T, n, nz, name) for nz in noises for n in sizes for T in lengths for name in mdl]
    total = len(groups) * (len(lrs) + seeds - 1)
    bar = tqdm(total=total, desc=f"memory-tasks {table}", disable=not progress)
    t_start = time.perf_counter()
    runs = []

    def run_one(T, n, nz, name, lr, seed) -> dict:
        r = run_cell(task, T, n, nz, name, mdl[name], lr, seed, settings, runs_dir,
                     progress=progress, device=device)
        bar.update(1)
        return r

    summary = []
    for T, n, nz, name in groups:
        sweep = [run_one(T, n, nz, name, lr, 0) for lr in lrs]
        runs += sweep
        best = max(sweep, key=lambda r: -1.0 if r["accuracy"] != r["accuracy"] else r["accuracy"])
        more = [run_one(T, n, nz, name, best["lr"], s) for s in range(1, seeds)]
        runs += more
        accs = [r["accuracy"] for r in [best, *more]]
        summary.append({"task": task, "seq_len": T, "size": n, "noise": nz, "model": name,
                        "best_lr": best["lr"], "accuracy": accs,
                        "mean": statistics.fmean(accs), "min": min(accs), "max": max(accs),
                        "chance": best["chance"],
                        "sweep": {f"{r['lr']:g}": r["accuracy"] for r in sweep},
                        "train_s": sum(r["train_s"] for r in (*sweep, *more))})
    bar.close()
    text = format_table(summary, spec["x"])
    print(text)
    result = {"settings": settings, "summary": summary, "runs": runs,
              "wall_s": round(time.perf_counter() - t_start, 1)}
    atomic_json(result, out / f"memory_{table}.json")
    (out / f"memory_{table}.txt").write_text(text + "\n")
    plot_table(summary, out / f"memory_{table}.png", spec["x"])
    return result


def run_cell(task: str, T: int, n: int, nz: str, name: str, overrides: dict, lr: float,
             seed: int, settings: dict, runs_dir, progress: bool = False, device: str = "cpu",
             time_limit: Optional[float] = None,
             build: Optional[Callable[[], torch.nn.Module]] = None) -> dict:
    """Train and score one run of a table (one cell, model, rate and seed) and save it as
    ``runs_dir/<key>.json`` at once; a finished run saved with the same settings is read
    back instead of trained again. ``settings`` holds the table's ``examples``,
    ``batch_size``, ``d_model``, ``n_layer``, ``n_head``, ``n_eval``, ``query_dist``,
    ``warmup``, ``mix_lengths`` and ``train_length``. ``time_limit`` (seconds): stop
    training when it is spent and score what was learnt; such a run records the sequences
    it saw (``examples_trained``), is marked ``"stopped_early"`` and is never reused as a
    finished one. ``build``: a function that returns the model to train instead of the
    AM-SNet of ``overrides`` (called after seeding; ``overrides`` then only names the
    run, e.g. the stand-in models of scripts/device_tables.py). The device tables
    (scripts/device_tables.py) run cells this way, several processes at once."""
    cell = {"task": task, "seq_len": T, "size": n, "noise": nz, "model": name,
            "lr": lr, "seed": seed}
    path = Path(runs_dir) / f"{_key(cell)}.json"
    examples, batch_size = settings["examples"], settings["batch_size"]
    warmup, mix_lengths = settings.get("warmup", 0.0), settings.get("mix_lengths", ())
    train_length = settings.get("train_length")
    same = {k: settings[k] for k in ("examples", "batch_size", "d_model", "n_layer",
                                     "n_head", "n_eval", "query_dist")}
    if warmup:                    # absent when 0: runs saved before the option resume
        same["warmup"] = warmup
    if mix_lengths:
        same["mix_lengths"] = list(mix_lengths)
    if train_length is not None:
        same["train_length"] = train_length
    if path.exists():             # resume: a finished run with the same settings
        r = json.loads(path.read_text())
        if (r.get("settings") == same and r.get("overrides") == overrides
                and not r.get("stopped_early")):
            return r
    kw = _task_kwargs(task, n, nz, settings["query_dist"])
    torch.manual_seed(seed)
    if build is not None:
        model = build().to(device)
    else:
        cfg = AMSNetConfig(**{"vocab_size": 256, "block_size": T,
                              "n_layer": settings["n_layer"], "n_head": settings["n_head"],
                              "d_model": settings["d_model"], **overrides})
        model = build_model(cfg).to(device)
    t0 = time.perf_counter()
    try:
        steps = math.ceil(examples / batch_size)
        losses = train_task(model, task, train_length or T, examples, batch_size, lr=lr,
                            seed=seed, warmup_steps=round(warmup * steps),
                            progress=progress, mix_lengths=mix_lengths,
                            desc=f"{task} T={T} n={n} {name} lr={lr:g}",
                            time_limit=time_limit, **kw)
        g = torch.Generator().manual_seed(10_000 + seed)
        x_te, y_te = TASKS[task](settings["n_eval"], T, generator=g, **kw)
        acc, final = task_accuracy(model, x_te, y_te), sum(losses[-10:]) / len(losses[-10:])
    except FloatingPointError as exc:          # a diverged rate scores as untrained
        acc, final, losses = float("nan"), float("nan"), [float("nan")] * steps
        tqdm.write(f"  {exc}")
    seen = min(len(losses) * batch_size, examples)
    r = {**cell, "accuracy": acc, "final_loss": final, "chance": chance(task, **kw),
         "train_s": round(time.perf_counter() - t0, 1), "settings": same,
         "overrides": overrides, "device": device}
    if seen < examples:
        r.update(stopped_early=True, examples_trained=seen)
    atomic_json(r, path)
    tqdm.write(f"{task} T={T:5d} n={n:3d} {nz:8s} {name:<16s} lr={lr:<8.3g} seed {seed}: "
               f"accuracy {acc:6.1%} (loss {final:.3f}, {r['train_s']} s"
               + (f", trained at T={train_length}" if train_length else "")
               + (f", stopped after {seen} of {examples} sequences" if seen < examples else "")
               + ")")
    sys.stdout.flush()                          # progress visible when piped to a file
    return r


def format_table(summary: list[dict], x: str = "length") -> str:
    """The summary as text: one block per (noise, size) or (noise, length), a row per
    model with mean accuracy [min-max over seeds] and the best learning rate."""
    lines = []
    other = "size" if x == "length" else "seq_len"
    xs_key = "seq_len" if x == "length" else "size"
    w = max([14] + [len(r["model"]) for r in summary])
    for nz in dict.fromkeys(r["noise"] for r in summary):
        for o in dict.fromkeys(r[other] for r in summary if r["noise"] == nz):
            rows = [r for r in summary if r["noise"] == nz and r[other] == o]
            task = rows[0]["task"]
            xs = sorted({r[xs_key] for r in rows})
            what = "pairs" if task == "mqar" else "tokens"
            head = (f"{task}, {nz} noise, {o} {what}: accuracy by length" if x == "length"
                    else f"{task}, {nz} noise, T={o}: accuracy by {what}")
            lines.append(f"{head} (mean [min-max] over seeds, best lr; chance "
                         f"{rows[0]['chance']:.1%})")
            lines.append(f"  {'model':<{w}s}" + "".join(f"{v:>28d}" for v in xs))
            for name in dict.fromkeys(r["model"] for r in rows):
                cells = {r[xs_key]: r for r in rows if r["model"] == name}
                lines.append(f"  {name:<{w}s}" + "".join(
                    f"{_cell(cells[v]):>28s}" if v in cells else f"{'':>28s}" for v in xs))
    return "\n".join(lines)


def _cell(r: dict) -> str:
    k = len(r["accuracy"])
    spread = f"[{r['min']:.1%}-{r['max']:.1%}]" if k > 1 else "[1 seed]"
    return f"{r['mean']:.1%} {spread} {r['best_lr']:.2g}"


def plot_table(summary: list[dict], path: Path, x: str = "length") -> None:
    """Accuracy against length (or size) per model: mean over seeds, min-max band,
    every seed as a dot, the chance line dashed (MQAR: and, dotted, the accuracy of
    naming one of the values in the sequence at random, 1 / pairs). One panel per (noise, other axis)."""
    import matplotlib  # deferred: slow to import, only the plot needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    other = "size" if x == "length" else "seq_len"
    xs_key = "seq_len" if x == "length" else "size"
    panels = list(dict.fromkeys((r["noise"], r[other]) for r in summary))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (nz, o) in zip(axes[0], panels):
        rows = [r for r in summary if r["noise"] == nz and r[other] == o]
        task = rows[0]["task"]
        for i, name in enumerate(dict.fromkeys(r["model"] for r in rows)):
            pts = sorted((r[xs_key], r) for r in rows if r["model"] == name)
            xv = [p[0] for p in pts]
            color = f"C{i}"
            ax.plot(xv, [p[1]["mean"] for p in pts], "o-", color=color, label=name)
            ax.fill_between(xv, [p[1]["min"] for p in pts], [p[1]["max"] for p in pts],
                            color=color, alpha=0.2)
            for xx, r in pts:
                ax.plot([xx] * len(r["accuracy"]), r["accuracy"], ".", color=color, ms=3)
        ch = rows[0]["chance"]
        ax.axhline(ch, color="k", ls="--", lw=1, label=f"chance ({ch:.1%})")
        if task == "mqar":            # a model that names one of the values it has seen
            if x == "length":
                ax.axhline(1 / o, color="gray", ls=":", lw=1,
                           label=f"guess among the {o} values seen")
            else:
                xs = sorted({r["size"] for r in rows})
                ax.plot(xs, [1 / v for v in xs], ":", color="gray", lw=1,
                        label="guess among the values seen")
        ax.set_xscale("log", base=2)
        what = "key-value pairs" if task == "mqar" else "data tokens"
        ax.set_xlabel("sequence length T (tokens)" if x == "length" else what)
        ax.set_ylabel("accuracy at the answer positions")
        ax.set_ylim(0, 1.02)
        name = "MQAR" if task == "mqar" else "selective copy"
        ax.set_title(f"{name}, {nz} noise, " + (f"{o} {what}" if x == "length" else f"T={o}"),
                     fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    save_figure(fig, path, dpi=150)


def combine_tables(json_paths, out_path) -> list[dict]:
    """One figure from saved tables (``memory_<table>.json`` files): accuracy against
    sequence length for every (task, noise), whatever the pairs of each cell (the
    x tick names them, as Zoology's grid grows the pairs with the length). Writes
    ``out_path`` (PNG) and returns the summaries it drew."""
    summary = []
    for p in json_paths:
        data = json.loads(Path(p).read_text())
        if "summary" not in data:
            raise ValueError(f"{p} is not a memory-tasks table (no 'summary')")
        summary += data["summary"]
    if not summary:
        raise ValueError("no table to combine")
    import matplotlib  # deferred: slow to import, only the plot needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys((r["task"], r["noise"]) for r in summary))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), squeeze=False)
    models = list(dict.fromkeys(r["model"] for r in summary))
    for ax, (task, nz) in zip(axes[0], panels):
        rows = [r for r in summary if r["task"] == task and r["noise"] == nz]
        cells = sorted({(r["seq_len"], r["size"]) for r in rows})
        pos = {c: i for i, c in enumerate(cells)}
        for name in models:
            pts = sorted(((r["seq_len"], r["size"]), r) for r in rows if r["model"] == name)
            if not pts:
                continue
            color = f"C{models.index(name)}"
            xv = [pos[c] for c, _ in pts]
            ax.errorbar(xv, [r["mean"] for _, r in pts],
                        yerr=[[r["mean"] - r["min"] for _, r in pts],
                              [r["max"] - r["mean"] for _, r in pts]],
                        fmt="o-", color=color, capsize=3, label=name)
            for c, r in pts:
                ax.plot([pos[c]] * len(r["accuracy"]), r["accuracy"], ".", color=color, ms=3)
        ch = rows[0]["chance"]
        ax.axhline(ch, color="k", ls="--", lw=1, label=f"chance ({ch:.1%})")
        what = "pairs" if task == "mqar" else "tokens"
        if task == "mqar":
            ax.plot(range(len(cells)), [1 / n for _, n in cells], ":", color="gray", lw=1,
                    marker="_", ms=30, label="guess among the values seen")
        ax.set_xticks(range(len(cells)), [f"T={T}\n{n} {what}" for T, n in cells])
        ax.set_xlim(-0.5, len(cells) - 0.5)
        ax.set_xlabel("sequence length (tokens)")
        ax.set_ylabel("accuracy at the answer positions")
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{'MQAR' if task == 'mqar' else 'selective copy'}, {nz} noise "
                     "(mean, min-max over seeds)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    save_figure(fig, out_path, dpi=150)
    return summary
