"""Benchmarks that print their figures (``astro-neuron bench NAME``): ``scan`` (the
AM-SU's forms), ``lm`` (``bench train`` and ``bench generate`` of the language model),
``simulate`` (the integer network's engines)."""
