"""Adapters to outside frameworks, one module each; nothing here is imported eagerly.

* :mod:`astro_neuron.integrations.spikingjelly`: ``AMSUNode``, a SpikingJelly 2.0
  neuron node (needs ``spikingjelly``; importing the module without it fails with a
  message naming the package).
* :mod:`astro_neuron.integrations.snntorch`: ``AstroLeaky``, a cell with snnTorch's
  calling convention (works with or without ``snntorch`` installed).

Both wrap an :class:`astro_neuron.AMSU` (its parameters and pure functions); guide
and mapping tables: docs/integrations.md.
"""

__all__: list[str] = []
