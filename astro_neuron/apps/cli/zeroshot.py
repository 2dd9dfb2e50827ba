"""Zero-shot evaluation commands (docs/lm.md, "Zero-shot evaluation"):

* ``astro-neuron lm-eval ARGS``: lm-evaluation-harness's own command line with the
  ``astro-neuron`` model registered (lm-eval 0.4.13 has no plugin entry point, so
  the plain ``lm_eval`` program cannot see it) and the built-in tasks on its path;
* ``astro-neuron zeroshot CHECKPOINT``: the built-in or your local PIQA/SciQ-format
  files, one table of acc and acc_norm;
* ``astro-neuron bench zeroshot CHECKPOINT``: the adapter's log-likelihoods (each
  context read once, its state copied per choice) against one forward pass per
  choice, timed interleaved in one run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from astro_neuron.apps.cli import args as A
from astro_neuron.io import atomic_json

_BUILTIN = ("stdlib_piqa", "stdlib_sciq")       # = astro_neuron.lm.harness.BUILTIN_TASKS


def register(commands, bench) -> None:
    # prefix_chars="+": every argument (--model, --tasks, --help) goes to lm_eval as is
    p = commands.add_parser(
        "lm-eval", add_help=False, prefix_chars="+",
        help="lm-evaluation-harness's command line with the astro-neuron model registered",
        description="Runs `lm_eval ARGS` after registering the model `astro-neuron` "
                    "and adding the built-in tasks stdlib_piqa, stdlib_sciq (and the "
                    "templates piqa_local, sciq_local) to its task path.")
    p.add_argument("lm_eval_args", nargs=argparse.REMAINDER, metavar="ARGS")
    p.set_defaults(func=_lm_eval)

    p = commands.add_parser(
        "zeroshot", help="zero-shot accuracy on PIQA/SciQ-format files (built in or yours)",
        description="Scores a checkpoint with lm-evaluation-harness on local JSONL files "
                    "in the PIQA or SciQ format (official prompts); nothing is downloaded.")
    p.add_argument("checkpoint", type=A.in_file("checkpoint"))
    p.add_argument("--tasks", default=",".join(_BUILTIN),
                   help=f"comma-separated built-in tasks ({', '.join(_BUILTIN)}); "
                        "default: both")
    p.add_argument("--piqa", type=A.in_file("--piqa"), action="append", default=[],
                   metavar="FILE", help="a PIQA-format JSONL file (goal, sol1, sol2, label); "
                                        "repeatable")
    p.add_argument("--sciq", type=A.in_file("--sciq"), action="append", default=[],
                   metavar="FILE", help="a SciQ-format JSONL file (support, question, "
                                        "distractor1-3, correct_answer); repeatable")
    p.add_argument("--limit", type=A.pos_int(name="--limit"), default=None,
                   help="score the first N documents of each task")
    p.add_argument("--device", default="cpu", type=A.device())
    p.add_argument("--out", type=A.out_file("--out", ".json"),
                   help="write the results (acc, acc_norm, stderr per task) as JSON")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_zeroshot)

    b = bench.add_parser(
        "zeroshot", help="multiple-choice scoring: state reused per context vs a pass per choice")
    b.add_argument("checkpoint", type=A.in_file("checkpoint"))
    b.add_argument("--task", default="stdlib_sciq", choices=_BUILTIN)
    b.add_argument("--repeats", type=A.int_range(1, 100, "--repeats"), default=3)
    b.add_argument("--threads", type=A.int_range(1, 1024, "--threads"), default=1)
    b.set_defaults(func=_bench_zeroshot)


def _lm_eval(args) -> int:
    # deferred: lm_eval and datasets take about 2.5 s to import; only these commands use them
    import astro_neuron.lm.harness as harness
    from lm_eval.__main__ import cli_evaluate

    rest = list(args.lm_eval_args)
    with tempfile.TemporaryDirectory(prefix="astro-neuron-tasks-") as tmp:
        if not any(a == "--include_path" or a.startswith("--include_path=") for a in rest):
            for name in harness.BUILTIN_TASKS:       # absolute paths to the shipped files
                with open(Path(tmp) / f"{name}.yaml", "w", encoding="utf-8") as f:
                    yaml.safe_dump(harness.builtin_task(name), f, sort_keys=False)
            for fmt in harness.FORMATS:              # the templates: data in the cwd
                (Path(tmp) / f"{fmt}_local.yaml").write_text(
                    (harness.TASK_DIR / f"{fmt}_local.yaml").read_text("utf-8"), "utf-8")
            if len(rest) > 1 or (rest and rest[0] not in ("ls", "validate", "run")):
                rest += ["--include_path", tmp]
        argv = sys.argv
        sys.argv = ["lm-eval", *rest]
        try:
            cli_evaluate()
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
        finally:
            sys.argv = argv
    return 0


def _zeroshot(args) -> int:
    # deferred: lm_eval and datasets take about 2.5 s to import; only these commands use them
    import astro_neuron.lm.harness as harness

    tasks: list = []
    for name in (t.strip() for t in args.tasks.split(",") if t.strip()):
        if name not in harness.BUILTIN_TASKS:
            raise ValueError(f"unknown built-in task {name!r}; choose from "
                             f"{sorted(harness.BUILTIN_TASKS)}, or give your files with "
                             "--piqa / --sciq")
        tasks.append(harness.builtin_task(name))
    for fmt in ("piqa", "sciq"):
        for path in getattr(args, fmt):
            name = Path(path).stem                  # the file's name, made unique
            while name in {t["task"] for t in tasks}:
                name += "_"
            tasks.append(harness.local_task(fmt, path, name))
    if not tasks:
        raise ValueError("no task: give --tasks, --piqa or --sciq")
    lm = harness.AstroNeuronLM(checkpoint=str(args.checkpoint), device=args.device)
    res = harness.evaluate(lm, tasks, limit=args.limit, progress=not args.no_progress)
    rows = summarize(res, {t["task"]: harness.chance(t) for t in tasks})
    cfg = lm.model.config
    print(f"{cfg.arch}, {lm.model.num_params():,} parameters ({args.checkpoint})")
    print(f"{'task':<34} {'docs':>5} {'acc':>7} {'acc_norm':>9} {'chance':>7}")
    for r in rows:
        print(f"{r['task']:<34} {r['docs']:>5} {r['acc']:>7.3f} {r['acc_norm']:>9.3f} "
              f"{r['chance']:>7.3f}")
    if args.out:
        atomic_json({"checkpoint": str(args.checkpoint), "arch": cfg.arch, "tasks": rows},
                    args.out)
        print(f"wrote {args.out}")
    return 0


def summarize(res: dict, chance: dict) -> list[dict]:
    """One row per task of an lm_eval result: acc, acc_norm, their standard errors,
    the number of documents and the chance level ``chance[task]``."""
    rows = []
    for task, r in res["results"].items():
        rows.append({"task": task, "docs": int(res["n-samples"][task]["effective"]),
                     "acc": r["acc,none"], "acc_stderr": r["acc_stderr,none"],
                     "acc_norm": r["acc_norm,none"], "acc_norm_stderr": r["acc_norm_stderr,none"],
                     "chance": chance[task]})
    return rows


def _bench_zeroshot(args) -> int:
    # deferred: lm_eval and datasets take about 2.5 s to import; only these commands use them
    import astro_neuron.lm.harness as harness

    torch.set_num_threads(args.threads)
    lm = harness.AstroNeuronLM(checkpoint=str(args.checkpoint), progress=False)
    task = harness.builtin_task(args.task)
    fmt = "piqa" if harness.chance(task) == 0.5 else "sciq"
    reqs = []
    with open(task["dataset_kwargs"]["data_files"]["validation"], encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            if fmt == "piqa":
                ctx, choices = f"Question: {d['goal']}\nAnswer:", [d["sol1"], d["sol2"]]
            else:
                ctx = f"{d['support'].lstrip()}\nQuestion: {d['question']}\nAnswer:"
                choices = [d["distractor1"], d["distractor2"], d["distractor3"],
                           d["correct_answer"]]
            for c in choices:
                ce, co = lm._encode_pair(ctx, " " + c)
                reqs.append(((ctx, " " + c), ce, co))

    def per_choice() -> list[float]:                # the obvious way: one pass per choice
        out = []
        with torch.inference_mode():
            for _, ce, co in reqs:
                idx = torch.tensor(ce + co, device=lm.model.wte.weight.device)[None]
                lp = F.log_softmax(lm.model(idx)[0][0].double(), -1)
                pos = torch.arange(len(ce) - 1, idx.shape[1] - 1, device=idx.device)
                out.append(float(lp[pos, idx[0, pos + 1]].sum()))
        return out

    def shared() -> list[float]:
        return [r[0] for r in lm._loglikelihood_tokens(reqs, disable_tqdm=True)]

    diff = max(abs(a - b) for a, b in zip(per_choice(), shared()))
    times: dict = {"per choice": [], "shared state": []}
    for _ in range(args.repeats):                   # interleaved
        for name, fn in (("per choice", per_choice), ("shared state", shared)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    n_ctx = len({r[0][0] for r in reqs})
    print(f"{args.task}: {len(reqs)} choices of {n_ctx} contexts (mean context "
          f"{sum(len(r[1]) for r in reqs) / len(reqs):.0f} bytes, choice "
          f"{sum(len(r[2]) for r in reqs) / len(reqs):.1f}); {lm.model.config.arch}, "
          f"{args.threads} thread(s), best of {args.repeats}")
    for name, ts in times.items():
        print(f"  {name:<13} {min(ts):7.2f} s")
    print(f"  speed-up of the shared state: "
          f"{min(times['per choice']) / min(times['shared state']):.2f}x; largest "
          f"log-likelihood difference {diff:.1e}")
    return 0
