"""Neuroscience commands: ``plot`` (PNG plots of a recorded run file), ``record``
(record one delayed-recall trial of a trained memory network into a run file) and
``network`` (run the E/I network with astrocytes in biological units, here or in NEST,
or write it as a NEST script for MPI) and ``memory-neuron`` (the neuron-level memory
table, docs/memory.md)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from astro_neuron.neuro import load_recording, plot_recording, record_memory_trial
from astro_neuron.neuro.circuits import ei_network
from astro_neuron.neuro.nest_export import run_in_nest, write_nest_script
from astro_neuron.tasks import MemoryNet

from astro_neuron.apps.cli import args as A
from astro_neuron.apps.tasks.neuron_memory import MODEL_NAMES, run_neuron_memory

KIND_NAMES = ("raster", "membrane", "astro", "calcium", "rates", "tokens")


def register(commands, bench) -> None:
    p = commands.add_parser(
        "plot", help="draw rasters, membrane traces, astrocyte heatmaps/traces and rate "
                     "histograms of a recorded run file (.npz)",
        description="Writes PNGs of a run file made by astro_neuron.neuro.record(...).save() "
                    "or `astro-neuron record`. Format: docs/neuroscience.md.")
    p.add_argument("run", type=A.in_file("recording"), help="recorded run file (.npz)")
    p.add_argument("--out", default=None, type=A.out_dir("--out"),
                   help="output folder (default: <run file name>_plots next to the file)")
    p.add_argument("--sample", type=A.nonneg_int(name="--sample"), default=0, help="batch element to draw (default 0)")
    p.add_argument("--kinds", default=None,
                   help=f"comma-separated subset of {','.join(KIND_NAMES)} "
                        "(default: all the file has data for)")
    p.add_argument("--prefix", default="", help="prefix of the PNG names")
    p.add_argument("--dpi", type=A.int_range(20, 600, "--dpi"), default=110)
    p.set_defaults(func=_plot)

    r = commands.add_parser(
        "record", help="record one delayed-recall trial of a trained memory network "
                       "(e.g. out/demo/memory_amsu.safetensors) into a run file")
    r.add_argument("checkpoint", type=A.in_file("checkpoint"), help="MemoryNet checkpoint (.safetensors)")
    r.add_argument("--out", required=True, type=A.out_file("--out", suffix=".npz"),
                   help="run file to write (.npz)")
    r.add_argument("--seed", type=A.seed("--seed"), default=0, help="seed of the trial's input")
    r.add_argument("--label", type=A.nonneg_int(name="--label"), default=None,
                   help="cue class of the trial")
    r.add_argument("--plot", action="store_true", help="also write the PNGs next to it")
    r.set_defaults(func=_record)

    m = commands.add_parser(
        "memory-neuron", help="neuron-level memory: multi-item store-recall with distractors, "
                              "accuracy per model x delay x seed (docs/memory.md)",
        description="Trains AM-SU (linear and Li-Rinzel astrocyte), LIF and ALIF (LSNN) "
                    "networks the same way on store-recall at each delay and seed; prints "
                    "the table, writes results.json and neuron_memory.png to --out "
                    "(an interrupted run resumes from results.json).")
    m.add_argument("--models", default=",".join(MODEL_NAMES),
                   help=f"comma-separated subset of {','.join(MODEL_NAMES)} (default: all)")
    m.add_argument("--delays", nargs="+", type=A.int_range(0, 100_000, "--delays"),
                   default=None, help="delays in steps (default 100 300 1000 3000)")
    m.add_argument("--seeds", nargs="+", type=A.int_range(0, 2**31 - 1, "--seeds"),
                   default=None, help="seeds (default 0 1 2)")
    m.add_argument("--steps", type=A.int_range(1, 10**6, "--steps"), default=None,
                   help="training steps per run (default 150)")
    m.add_argument("--batch-size", type=A.int_range(1, 4096, "--batch-size"), default=None,
                   help="training batch (default 16)")
    m.add_argument("--lrs", nargs="+", type=A.number(0.0, 10.0, lo_open=True, name="--lrs"),
                   default=None, help="learning rate, or several: each model then gets the "
                                      "best on a validation batch, per delay (--sweep-at) "
                                      "(default 3e-3 1e-2 3e-2)")
    m.add_argument("--sweep-at", choices=["each", "first"], default="each",
                   help="with several --lrs: sweep them at each delay and use the best there "
                        "(default), or only at the shortest delay and use that rate at all")
    m.add_argument("--tie-margin", type=A.number(0.0, 1.0, name="--tie-margin"), default=0.01,
                   help="rates within this validation accuracy of the best are tied; the "
                        "smallest tied rate is chosen (default 0.01: one point)")
    m.add_argument("--lr-from", nargs="+", default=[], metavar="MODEL=OTHER",
                   help="MODEL gets no sweep of its own and uses OTHER's chosen rate at each "
                        "delay (e.g. amsu-li-rinzel=amsu: its sweep would cost three times "
                        "its cells)")
    m.add_argument("--table-only", action="store_true",
                   help="train nothing: print the table and draw the figure from the runs "
                        "already in --out's results.json")
    m.add_argument("--n-eval", type=A.int_range(1, 1 << 16, "--n-eval"), default=None,
                   help="test trials per run (default 512)")
    m.add_argument("--neurons", type=A.int_range(4, 4096, "--neurons"), default=64,
                   help="neurons per network, a multiple of 4 (default 64)")
    m.add_argument("--items", type=A.int_range(1, 8, "--items"), default=2,
                   help="items to store and recall (default 2)")
    m.add_argument("--p-distract", type=A.number(0.0, 1.0, name="--p-distract"), default=0.2,
                   help="probability of a distractor cue in each 10-step block of the delay")
    m.add_argument("--slow-max-delay", type=A.nonneg_int(name="--slow-max-delay"), default=None,
                   help="longest delay at which the sequential Li-Rinzel model is trained "
                        "(default 100; --quick: 20)")
    m.add_argument("--jobs", type=A.int_range(1, 64, "--jobs"), default=1,
                   help="runs trained at once, in worker processes of one thread (default 1)")
    m.add_argument("--threads", type=A.int_range(1, 1024, "--threads"), default=1,
                   help="torch threads (default 1)")
    m.add_argument("--out", default="out/memory-neuron", type=A.out_dir("--out"))
    m.add_argument("--quick", action="store_true",
                   help="small settings to try the command in about a minute")
    m.add_argument("--no-progress", action="store_true")
    m.set_defaults(func=_memory_neuron, retain_memory=True)


    n = commands.add_parser(
        "network", help="run the E/I network with astrocytes (astro_neuron.neuro.circuits."
                        "ei_network) in ms/mV/pA and print its rates; --compare: with and "
                        "without input, astrocytes active and silenced",
        description="Guide: docs/neuroscience.md, 'Quickstart' and 'NEST'.")
    n.add_argument("--astro", default="linear", choices=["linear", "li_rinzel", "none"])
    n.add_argument("--neuron", default="lif", choices=["lif", "adex"],
                   help="lif (iaf_psc_exp) or adex (aeif_cond_alpha_astro; slow here, use --nest)")
    n.add_argument("--duration", type=A.number(lo=0.0, lo_open=True, name="--duration"),
                   default=1000.0, help="ms (default 1000)")
    n.add_argument("--dt", type=A.number(lo=0.0, lo_open=True, name="--dt"), default=0.5,
                   help="ms (default 0.5)")
    n.add_argument("--input-rate", type=A.number(lo=0.0, name="--input-rate"), default=20.0,
                   help="Hz of the 100 input fibres (default 20)")
    n.add_argument("--seed", type=A.seed("--seed"), default=0)
    n.add_argument("--compare", action="store_true",
                   help="also run without input and with the astrocytes silenced")
    n.add_argument("--nest", action="store_true",
                   help="run in NEST 3.10 instead (needs --astro li_rinzel or none; SIC "
                        "needs --neuron adex)")
    n.add_argument("--nest-script", default=None, type=A.out_dir("--nest-script"),
                   help="write net.py + net.npz to this folder (run: mpirun -np 4 python net.py)")
    n.add_argument("--out", default=None, type=A.out_dir("--out"),
                   help="save the (first) run as OUT/run.npz and draw its PNGs")
    n.set_defaults(func=_network)


def _memory_neuron(args) -> int:
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [m for m in models if m not in MODEL_NAMES]
    if bad or not models:
        raise ValueError(f"--models: unknown {bad or models}; choose from {', '.join(MODEL_NAMES)}")
    if args.neurons % 4:
        raise ValueError(f"--neurons must be a multiple of 4, got {args.neurons}")
    lr_from = {}
    for pair in args.lr_from:
        m, sep, other = pair.partition("=")
        if not sep or m not in models or other not in MODEL_NAMES or other == m:
            raise ValueError(f"--lr-from: {pair!r} must be MODEL=OTHER, MODEL one of --models "
                             f"and OTHER another of {', '.join(MODEL_NAMES)}")
        lr_from[m] = other
    q = args.quick
    torch.set_num_threads(args.threads)
    run_neuron_memory(   # delays are run in the order given (the table sorts them)
        models=models, delays=args.delays or ((20, 100) if q else (100, 300, 1000, 3000)),
        seeds=args.seeds or ((0,) if q else (0, 1, 2)),
        steps=args.steps or (60 if q else 150), batch_size=args.batch_size or 16,
        lrs=args.lrs or ((1e-2,) if q else (3e-3, 1e-2, 3e-2)), n_eval=args.n_eval or (128 if q else 512),
        n_neurons=args.neurons, p_distract=args.p_distract, n_items=args.items,
        slow_max_delay=args.slow_max_delay if args.slow_max_delay is not None else
        (20 if q else 100), out_dir=args.out, jobs=args.jobs, progress=not args.no_progress,
        sweep_at=args.sweep_at, tie_margin=args.tie_margin, lr_from=lr_from,
        train=not args.table_only)
    return 0


def _plot(args) -> int:
    run = Path(args.run)
    rec = load_recording(run)
    kinds = None
    if args.kinds:
        kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
        bad = [k for k in kinds if k not in KIND_NAMES]
        if bad:
            raise ValueError(f"--kinds: unknown {bad}; choose from {', '.join(KIND_NAMES)}")
    out = Path(args.out) if args.out else run.with_name(run.stem + "_plots")
    paths = plot_recording(rec, out, sample=args.sample, prefix=args.prefix, kinds=kinds,
                           dpi=args.dpi)
    print(f"{run}: {len(rec.populations)} populations, T={rec.T} steps of {rec.dt:g} "
          f"{rec.time_unit}")
    for path in paths:
        print(f"  wrote {path}")
    return 0


def _record(args) -> int:
    out = Path(args.out)
    if out.suffix != ".npz":
        raise ValueError(f"--out must name a .npz file, got {out}")
    net = MemoryNet.load(args.checkpoint, "memory-network checkpoint")
    rec = record_memory_trial(net, seed=args.seed, label=args.label)
    rec.save(out)
    info = rec.info
    print(f"wrote {out}: cue class {info['label']}, network answered {info['prediction']}")
    if args.plot:
        for path in plot_recording(rec, out.with_name(out.stem + "_plots")):
            print(f"  wrote {path}")
    return 0


def _network(args) -> int:
    astro = None if args.astro == "none" else args.astro

    def build(rate):
        return ei_network(astro, neuron=args.neuron, input_rate_hz=rate, dt=args.dt,
                          seed=args.seed)

    net = build(args.input_rate)
    print(net.summary())
    cases = [("input", args.input_rate, True)]
    if args.compare:
        cases += [("no input", 0.0, True)]
        if astro is not None:
            cases += [("input, astrocytes silenced", args.input_rate, False)]
    first = None
    for label, rate, active in cases:
        t0 = time.time()
        if args.nest:
            b = build(rate)
            if not active:
                for g in b.astro.values():
                    g.sic_weight = 0.0
            run = run_in_nest(b, args.duration, record_V=False)
            where = "NEST"
        else:
            run = build(rate).simulate(args.duration, record_V=args.out is not None,
                                       astro_on=active, progress=True)
            where = "astro-neuron"
        first = first or run
        line = (f"{label:<28} E {run.rate_hz('E'):6.2f} Hz   I {run.rate_hz('I'):6.2f} Hz")
        for name, d in run.astro.items():
            key = "Ca" if "Ca" in d else "c"
            line += f"   {name} {key} {float(np.nanmean(d[key][-2])):.3f}"
        print(f"{line}   ({where}, {time.time() - t0:.1f} s)")
    if args.nest_script:
        path = write_nest_script(net, args.nest_script, args.duration, name="net")
        print(f"wrote {path}: python {path}  or  mpirun -np 4 python {path}")
    if args.out:
        out = Path(args.out)
        path = first.to_recording().save(out / "run.npz")
        print(f"wrote {path}")
        for p in plot_recording(load_recording(path), out):
            print(f"  wrote {p}")
    return 0
