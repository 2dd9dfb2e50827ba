"""The ``astro-neuron`` command line: one program, sub-commands per area.

Each module named in :data:`SECTIONS` (``astro_neuron/apps/cli/<name>.py``) defines
``register(commands, bench)`` and adds its sub-commands to ``commands`` and its
benchmarks to ``bench`` (``astro-neuron bench <name>``). Heavy optional packages (Lava,
matplotlib, SpikingJelly) are imported only where they are used (docs/architecture.md).

Errors a user can cause (bad arguments, missing or corrupt files, bad values, sizes
that cannot fit in memory) print one ``error:`` line and exit with status 2; ``--debug``
(or ``ASTRO_NEURON_DEBUG=1``) shows the traceback. Arguments are checked when parsed,
with the types of :mod:`astro_neuron.apps.cli.args` (built on :mod:`astro_neuron.validate`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import signal
import sys

from astro_neuron import __version__
from astro_neuron.allocator import retain_unless_disabled

SECTIONS = ("core", "lm", "neuro", "neuromorphic", "figures", "zeroshot", "energy",
            "finetune")

# OSError covers the file-system errors (missing, a file where a folder is wanted, full
# disk, permissions); MemoryError an allocation NumPy/Python refused.
_USER_ERRORS = (ValueError, TypeError, OSError, KeyError, MemoryError)


class _Parser(argparse.ArgumentParser):
    """argparse with one error line, ``error: MESSAGE (see `PROG --help`)``, as the
    commands' own errors; exit status 2. Sub-parsers inherit it."""

    def error(self, message: str):
        message = " ".join(message.split())
        # "argument --x: --x must be ..." (argparse's prefix + the check's) -> "--x must be ..."
        message = re.sub(r"^argument (\S+): \1 ", r"\1 ", message)
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def _out_of_memory(exc: RuntimeError) -> bool:
    text = str(exc)
    return type(exc).__name__ == "OutOfMemoryError" or "can't allocate memory" in text \
        or "out of memory" in text.lower()


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:            # --help, --version, or a bad argument (status 2)
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    try:
        if getattr(args, "retain_memory", False):      # training commands: allocator.py
            args.allocator = retain_unless_disabled()
        rc = args.func(args)
    except KeyboardInterrupt as exc:       # Ctrl-C, or SIGTERM during training
        print("interrupted", file=sys.stderr)
        return 128 + int(getattr(exc, "signum", signal.SIGINT))   # 130, or 143 for SIGTERM
    except RuntimeError as exc:          # torch's allocators report running out this way
        if args.debug or os.environ.get("ASTRO_NEURON_DEBUG") or not _out_of_memory(exc):
            raise
        print(f"error: out of memory ({' '.join(str(exc).split())[:200]}); choose smaller "
              "sizes", file=sys.stderr)
        return 2
    except _USER_ERRORS as exc:
        if args.debug or os.environ.get("ASTRO_NEURON_DEBUG"):
            raise
        if isinstance(exc, KeyError) and exc.args:
            msg = exc.args[0]
        elif isinstance(exc, MemoryError):
            msg = f"out of memory: {exc or 'an allocation failed'}; choose smaller sizes"
        else:
            msg = exc
        msg = " ".join(str(msg).split())          # one line, whatever the message held
        print(f"error: {msg}", file=sys.stderr)
        return 2
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
