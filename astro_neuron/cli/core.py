"""Core commands: ``demo`` and ``bench scan``."""

from __future__ import annotations


def register(commands, bench) -> None:
    p = commands.add_parser("demo", help="end-to-end demo on built-in data (no downloads)")
    p.add_argument("--out", default="out/demo", help="output folder (default: out/demo)")
    p.add_argument("--quick", action="store_true", help="tiny settings: seconds, for tests")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=_demo)


def _demo(args) -> int:
    from astro_neuron.demo import run_demo

    run_demo(args.out, quick=args.quick, seed=args.seed, progress=not args.no_progress)
    return 0
