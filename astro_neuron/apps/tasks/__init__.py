"""Task runners: train models on a task for a grid of settings, print and save a table.

The tasks (data generators, small models, training loops) are library code:
:mod:`astro_neuron.tasks` (delayed recall) and :mod:`astro_neuron.lm.tasks` (MQAR,
selective copy). Only the runners live here.
"""
