"""Lava backend: build integer (``fixed_pt``) or float (``floating_pt``) process graphs.

Importing this package does not import Lava; :func:`run_lava` does (through the
project's Python 3.11 import hook, :mod:`astro_neuron._lava_compat`).
"""
from neuromorphic.lava.runner import lava_available, run_lava, single_torch_thread

__all__ = ["run_lava", "lava_available", "single_torch_thread"]
