"""Core commands: ``demo`` and ``bench scan``."""

from __future__ import annotations

import torch

from astro_neuron.apps.bench.scan import ScanBenchConfig, bench_scan, format_table
from astro_neuron.apps.demo import STAGES, run_demo
from astro_neuron.io import atomic_json
from astro_neuron.validate import positive_int


def register(commands, bench) -> None:
    p = commands.add_parser("demo", help="end-to-end demo on built-in data (no downloads)")
    p.add_argument("--out", default="out/demo", help="output folder (default: out/demo)")
    p.add_argument("--quick", action="store_true", help="tiny settings: seconds, for tests")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--stages", default=",".join(STAGES),
                   help=f"comma-separated stages to run, in order (default: {','.join(STAGES)})")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: the demo's tensors are small)")
    p.set_defaults(func=_demo)

    b = bench.add_parser("scan", help="chunked form vs step loop vs projection floor")
    b.add_argument("--batch", type=int, default=8)
    b.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096], metavar="T")
    b.add_argument("--neurons", type=int, default=256)
    b.add_argument("--astrocytes", type=int, default=8)
    b.add_argument("--d-key", type=int, default=32)
    b.add_argument("--in-features", type=int, default=256)
    b.add_argument("--chunk", type=int, default=64)
    b.add_argument("--repeats", type=int, default=7)
    b.add_argument("--loop-repeats", type=int, default=2)
    b.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    b.add_argument("--no-frameworks", action="store_true",
                   help="skip the SpikingJelly / snnTorch comparison")
    b.add_argument("--json", default=None, help="also write the rows to this JSON file")
    b.set_defaults(func=_bench_scan)


def _demo(args) -> int:
    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    run_demo(args.out, quick=args.quick, seed=args.seed, progress=not args.no_progress,
             stages=stages, threads=args.threads)
    return 0


def _bench_scan(args) -> int:
    for name in ("batch", "neurons", "astrocytes", "d_key", "in_features", "chunk",
                 "repeats", "loop_repeats"):
        positive_int(f"--{name.replace('_', '-')}", getattr(args, name))
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = ScanBenchConfig(batch=args.batch, lengths=tuple(args.lengths),
                          n_neurons=args.neurons, n_astrocytes=args.astrocytes,
                          d_key=args.d_key, in_features=args.in_features,
                          chunk_size=args.chunk, repeats=args.repeats,
                          loop_repeats=args.loop_repeats, frameworks=not args.no_frameworks)
    rows = bench_scan(cfg)
    print(format_table(rows, cfg))
    if args.json:
        atomic_json({"config": vars(cfg), "rows": rows}, args.json)
    return 0
