"""Neuroscience commands: ``plot`` (PNG plots of a recorded run file) and ``record``
(record one delayed-recall trial of a trained memory network into a run file)."""

from __future__ import annotations
from pathlib import Path

from astro_neuron.neuro import load_recording, plot_recording, record_memory_trial
from astro_neuron.tasks import MemoryNet

from astro_neuron.apps.cli import args as A

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
