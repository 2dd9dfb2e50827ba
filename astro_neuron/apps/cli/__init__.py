"""The ``astro-neuron`` command line: one program, sub-commands per area.

Each module named in :data:`SECTIONS` (``astro_neuron/apps/cli/<name>.py``) defines
``register(commands, bench)`` and adds its sub-commands to ``commands`` and its
benchmarks to ``bench`` (``astro-neuron bench <name>``). Heavy optional packages (Lava,
matplotlib, SpikingJelly) are imported only where they are used (docs/architecture.md).

Errors a user can cause (bad arguments, missing or corrupt files, bad values) print
one ``error:`` line and exit with status 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from astro_neuron import __version__

SECTIONS = ("core", "lm", "neuro", "neuromorphic")

_USER_ERRORS = (ValueError, TypeError, FileNotFoundError, FileExistsError, IsADirectoryError,
                PermissionError, KeyError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="astro-neuron",
        description="Astrocyte-modulated spiking networks: train, compare, export, simulate.")
    parser.add_argument("--version", action="version", version=f"astro-neuron {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    bench_parser = commands.add_parser("bench", help="benchmarks that print their figures")
    bench = bench_parser.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    for name in SECTIONS:
        importlib.import_module(f"astro_neuron.apps.cli.{name}").register(commands, bench)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except _USER_ERRORS as exc:
        if args.debug or os.environ.get("ASTRO_NEURON_DEBUG"):
            raise
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {msg}", file=sys.stderr)
        return 2
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
