"""``astro-neuron figures``: draw the paper figures of docs/gallery.md, and
``astro-neuron export-nwb``: a recorded run file (.npz) as an NWB file."""

from __future__ import annotations

import time
from pathlib import Path

from astro_neuron.apps.cli import args as A
from astro_neuron.neuro import load_recording
from astro_neuron.neuro.export import save_nwb
from astro_neuron.neuro.gallery import FIGURES, write_gallery


def register(commands, bench) -> None:
    p = commands.add_parser(
        "figures", help="draw every figure of the gallery (docs/gallery.md) into a folder",
        description="Runs two small experiments (a tripartite population with a stimulus, "
                    "the delayed-recall network) and draws rasters with epochs and PSTH, "
                    "membranes against each neuron's threshold, territories, stacked "
                    "traces, spike statistics (Elephant), astrocyte state per stored item "
                    "and decoding accuracy with chance. `astro-neuron figures --out "
                    "docs/figures` regenerates the gallery.")
    p.add_argument("--out", required=True, type=A.out_dir("--out"), help="output folder")
    p.add_argument("--only", default=None,
                   help=f"comma-separated subset of {','.join(FIGURES)}")
    p.add_argument("--checkpoint", type=A.in_file("checkpoint"), default=None,
                   help="a trained MemoryNet (.safetensors, e.g. out/demo/memory_amsu."
                        "safetensors); default: train one here (--train-steps)")
    p.add_argument("--train-steps", type=A.int_range(1, 100000, "--train-steps"), default=60,
                   help="training steps of the memory network when no --checkpoint (60)")
    p.add_argument("--dpi", type=A.int_range(20, 600, "--dpi"), default=90)
    p.add_argument("--seed", type=A.seed("--seed"), default=0)
    p.add_argument("--save-recordings", action="store_true",
                   help="also write the experiments' recordings (stimulus.npz, memory.npz)")
    p.set_defaults(func=_figures)

    e = commands.add_parser(
        "export-nwb", help="convert a recorded run file (.npz) to an NWB file (pynwb)",
        description="Spikes go to the NWB Units table, traces (u, o, astrocytes) to "
                    "TimeSeries with their units and rate, batch samples to trials. "
                    "Format: docs/neuroscience.md and astro_neuron/neuro/export.py.")
    e.add_argument("run", type=A.in_file("recording"), help="recorded run file (.npz)")
    e.add_argument("--out", required=True, type=A.out_file("--out", suffix=".nwb"),
                   help="NWB file to write (.nwb)")
    e.add_argument("--step-s", type=A.number(0.0, None, lo_open=True, name="--step-s"),
                   default=None,
                   help="seconds per step, for recordings in steps (NWB keeps seconds)")
    e.set_defaults(func=_export_nwb)


def _figures(args) -> int:
    only = None
    if args.only:
        only = [k.strip() for k in args.only.split(",") if k.strip()]
    t0 = time.perf_counter()
    summary: dict = {}
    paths = write_gallery(args.out, checkpoint=args.checkpoint, train_steps=args.train_steps,
                          only=only, dpi=args.dpi, seed=args.seed,
                          save_recordings=args.save_recordings, summary=summary)
    for path in paths:
        print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")
    for key, value in summary.items():
        print(f"{key}: {value}")
    print(f"{len(paths)} figures in {time.perf_counter() - t0:.0f} s")
    return 0


def _export_nwb(args) -> int:
    rec = load_recording(args.run)
    path = save_nwb(rec, Path(args.out), step_s=args.step_s)
    n = sum(a["spikes"].shape[2] for a in rec.populations.values() if "spikes" in a)
    print(f"wrote {path}: {n} units, {rec.batch_size} trials, {rec.T} steps of {rec.dt:g} "
          f"{rec.time_unit}")
    return 0
