"""Lava engine: build integer (``fixed_pt``) or float (``floating_pt``) process graphs.

Importing this package does not import Lava; a run does (through the project's
Python 3.11 import hook, :mod:`neuromorphic.engines.lava._compat`).
"""
from neuromorphic.engines.lava.runner import lava_available, run, run_lava

__all__ = ["run", "run_lava", "lava_available"]
