"""Lava Process classes of this package, one folder each (Lava's compiler imports
every ``.py`` file beside a Process class, so each folder holds only its process and
its models; the models import ``neuromorphic`` by absolute path, which Lava's compiler
needs to match them to the process class)."""
