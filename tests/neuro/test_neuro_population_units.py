"""An injected current is physical: the same step_current fires a population at the
same rate at dt 1, 0.5 and 0.1 ms (issue 12: it used to fire at 52, 133 and 769 Hz)."""

from __future__ import annotations

import math

import torch

from astro_neuron import neuro


def test_step_current_rate_does_not_depend_on_dt():
    rates = []
    for dt in (1.0, 0.5, 0.1):
        torch.manual_seed(0)
        pop = neuro.TripartitePopulation(5, 8, n_astrocytes=2, preset="biology", dt=dt)
        with torch.no_grad():
            pop.astrocytes.astro_gain.zero_()
            pop.synapses.bias.zero_()
            x = torch.zeros(neuro.n_steps(1000.0, dt), 1, 5)
            s = pop(x, current=neuro.step_current(1.5, 1000.0, n=8, dt_ms=dt))
        rates.append(float(s.sum()) / 8)
    # closed form: u -> 1.5 with tau 20 ms, reset to 0 at 1: ISI = 20 ln 3 = 21.97 ms
    expected = 1000.0 / (20.0 * math.log(3.0))
    for r in rates:
        assert abs(r - expected) <= 2.0, rates                # measured 45, 45, 45 Hz
    with torch.no_grad():
        sub = pop(x, current=neuro.step_current(0.9, 1000.0, n=8, dt_ms=0.1))
    assert float(sub.sum()) == 0.0                            # below rheobase: silent
