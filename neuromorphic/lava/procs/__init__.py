"""Lava Process classes of this package, one folder each (Lava's compiler imports
every ``.py`` file beside a Process class, so each folder holds only its process and
models, and nothing there imports torch)."""
