"""The integer AM-SU neuron population as a Lava Process (``process.py``) with a
``fixed_pt`` and a ``floating_pt`` ProcessModel (``models.py``)."""
