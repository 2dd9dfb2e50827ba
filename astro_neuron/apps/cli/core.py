"""Core commands: ``demo``, ``convert-checkpoint`` and ``bench scan``."""

from __future__ import annotations

import torch

from astro_neuron.apps.bench.scan import ScanBenchConfig, bench_scan, format_table
from astro_neuron.apps.cli import args as A
from astro_neuron.apps.convert import convert_pickle_checkpoint
from astro_neuron.apps.demo import STAGES, run_demo
from astro_neuron.functional.finite import validation
from astro_neuron.io import atomic_json

# Upper bounds of the benchmark's sizes: beyond them a run would take hours; memory is
# estimated separately (check_fits) before anything is allocated.
_BIG = 1 << 20


def register(commands, bench) -> None:
    p = commands.add_parser("demo", help="end-to-end demo on built-in data (no downloads)")
    p.add_argument("--out", default="out/demo", type=A.out_dir("--out"),
                   help="output folder (default: out/demo)")
    p.add_argument("--quick", action="store_true", help="tiny settings: seconds, for tests")
    p.add_argument("--seed", type=A.seed("--seed"), default=0)
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--stages", default=",".join(STAGES),
                   help=f"comma-separated stages to run, in order (default: {','.join(STAGES)})")
    p.add_argument("--threads", type=A.int_range(1, 1024, "--threads"), default=1,
                   help="torch threads (default 1: the demo's tensors are small)")
    p.set_defaults(func=_demo, retain_memory=True)

    p = commands.add_parser(
        "convert-checkpoint", help="convert an old pickled .pt checkpoint you trust to "
                                   ".safetensors",
        description="Unpickle an old .pt checkpoint (an LM checkpoint of `train` or a "
                    "MemoryNet checkpoint of `demo`) and write it as a data-only .safetensors "
                    "checkpoint. Unpickling runs any code the file carries: this is the only "
                    "command that does it, and only with --trust-pickle (docs/lm.md).")
    p.add_argument("old", type=A.in_file("old checkpoint"), help="the old checkpoint (.pt)")
    p.add_argument("new", type=A.out_file("new checkpoint"),
                   help="the checkpoint to write (.safetensors)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="I trust this file: unpickle it (it can run code)")
    p.set_defaults(func=_convert_checkpoint)

    b = bench.add_parser("scan", help="chunked form vs step loop vs projection floor")
    b.add_argument("--batch", type=A.int_range(1, _BIG, "--batch"), default=8)
    b.add_argument("--lengths", type=A.int_range(1, _BIG, "--lengths"), nargs="+",
                   default=[1024, 4096], metavar="T")
    b.add_argument("--neurons", type=A.int_range(1, _BIG, "--neurons"), default=256)
    b.add_argument("--astrocytes", type=A.int_range(1, 4096, "--astrocytes"), default=8)
    b.add_argument("--d-key", type=A.int_range(1, 4096, "--d-key"), default=32)
    b.add_argument("--in-features", type=A.int_range(1, _BIG, "--in-features"), default=256)
    b.add_argument("--chunk", type=A.int_range(1, _BIG, "--chunk"), default=64)
    b.add_argument("--repeats", type=A.int_range(1, 1000, "--repeats"), default=7)
    b.add_argument("--loop-repeats", type=A.int_range(1, 1000, "--loop-repeats"), default=2)
    b.add_argument("--threads", type=A.int_range(1, 1024, "--threads"), default=None,
                   help="torch threads (default: torch's)")
    b.add_argument("--no-frameworks", action="store_true",
                   help="skip the SpikingJelly / snnTorch comparison")
    b.add_argument("--json", default=None, type=A.out_file("--json"), help="also write the rows to this JSON file")
    b.add_argument("--no-check-finite", action="store_true",
                   help="time the forms without their NaN/Inf checks (astro_neuron.validation)")
    b.set_defaults(func=_bench_scan, retain_memory=True)


def _convert_checkpoint(args) -> int:
    kind, out = convert_pickle_checkpoint(args.old, args.new, trust_pickle=args.trust_pickle)
    print(f"wrote {out} ({kind} checkpoint, data only: safe to share and to open)")
    return 0


def _demo(args) -> int:
    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    run_demo(args.out, quick=args.quick, seed=args.seed, progress=not args.no_progress,
             stages=stages, threads=args.threads)
    return 0


def _bench_scan(args) -> int:
    # Largest tensors held at once (float32): the input and the chunked form's
    # activations [T, B, N] several times over, and the astrocyte states of one chunk.
    T = max(args.lengths)
    B, N, A_, dk = args.batch, args.neurons, args.astrocytes, args.d_key
    per_step = B * (args.in_features + 8 * N + 2 * A_ * dk)
    states = B * A_ * dk * dk * -(-T // args.chunk)
    weights = 4 * N * args.in_features
    A.check_fits("bench scan", 4 * (3 * (T * per_step + states) + 3 * weights))
    if args.threads:
        torch.set_num_threads(args.threads)
    if getattr(args, "allocator", None):
        print(args.allocator)
    cfg = ScanBenchConfig(batch=args.batch, lengths=tuple(args.lengths),
                          n_neurons=args.neurons, n_astrocytes=args.astrocytes,
                          d_key=args.d_key, in_features=args.in_features,
                          chunk_size=args.chunk, repeats=args.repeats,
                          loop_repeats=args.loop_repeats, frameworks=not args.no_frameworks)
    with validation(check_finite=not args.no_check_finite):
        rows = bench_scan(cfg)
    print(format_table(rows, cfg))
    if args.json:
        atomic_json({"config": vars(cfg), "rows": rows}, args.json)
    return 0
