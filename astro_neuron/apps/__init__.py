"""Applications above the two libraries: the ``astro-neuron`` command line (``cli``),
the end-to-end demo (``demo``, one module per stage), the benchmarks (``bench``), the
task runners (``tasks``), the language-model variant comparison (``compare``) and the
installation check (``env_check``).

Direction (docs/architecture.md): ``astro_neuron.apps`` may import ``neuromorphic`` and
the ``astro_neuron`` library; neither library imports ``astro_neuron.apps``. Importing
this package imports nothing else.
"""
