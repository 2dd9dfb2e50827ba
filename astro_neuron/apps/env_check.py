"""Check that the installed stack imports: ``python -m astro_neuron.apps.env_check``.

Run at the end of ``scripts/install.sh``; prints one line per package and exits
non-zero naming the first package that fails.
"""

from __future__ import annotations

import importlib
import sys
import time
from importlib import metadata


def check(verbose: bool = True) -> int:
    # deferred: `neuromorphic` imports torch; a broken torch must be reported below, not
    # crash this module's import
    from neuromorphic.engines.lava._compat import install

    install()
    mods = [
        ("torch", "torch"),
        ("numpy", "numpy"),
        ("spikingjelly", "spikingjelly.activation_based.neuron"),
        ("snntorch", "snntorch"),
        ("lava-nc", "lava.proc.lif.process"),
        ("matplotlib", "matplotlib"),
        ("h5py", "h5py"),
        ("safetensors", "safetensors.torch"),
        ("lm-eval", "lm_eval"),
        ("datasets", "datasets"),           # imports pyarrow: it must accept numpy 1.26
        ("peft", "peft"),
        ("elephant", "elephant"),
        ("neo", "neo"),
        ("pynwb", "pynwb"),
        ("nest-simulator", "nest"),
        ("astro-neuron", "astro_neuron"),
    ]
    failed = 0
    for name, mod in mods:
        t0 = time.perf_counter()
        try:
            m = importlib.import_module(mod)
            try:
                ver = metadata.version(name)
            except metadata.PackageNotFoundError:
                ver = "?"
            if verbose:
                print(f"  ok  {name:<13} {ver:<14} ({time.perf_counter() - t0:.2f} s)")
            del m
        except Exception as exc:  # report every failure, not only ImportError
            failed += 1
            print(f"  FAIL {name}: {type(exc).__name__}: {exc}", file=sys.stderr)
    return failed


if __name__ == "__main__":
    sys.exit(1 if check() else 0)
