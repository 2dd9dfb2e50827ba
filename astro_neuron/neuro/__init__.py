"""Astrocyte networks in biological terms (guide: docs/neuroscience.md).

* :mod:`.presets`      named parameter sets with units: ``"biology"`` (ms), ``"machine_learning"``
* :mod:`.territories`  which synapses each astrocyte ensheathes (masks or rules)
* :mod:`.population`   :class:`TripartitePopulation`: AM-SU neurons + astrocytes over territories
* :mod:`.inputs`       Poisson spike trains and injected currents in Hz / ms
* :mod:`.recording`    record spikes, membranes and astrocyte states; save / load run files
* :mod:`.figures`      write the plots of a recording (and of the demo's memory network)
* :mod:`.network`      spiking networks in ms / mV / pA: LIF and AdEx groups, projections,
                       delays, Tsodyks-Markram synapses, linear and Li-Rinzel astrocytes with
                       SIC and gliotransmission; :mod:`.circuits` the E/I preset;
                       :mod:`.synapses` short-term plasticity; :mod:`.nest_export` NEST 3.10
* :mod:`.analysis`     PSTH, ISI / CV, Fano, correlations, epoch rates (Elephant / Neo)
* :mod:`.export`       a recording as a ``neo.Block`` or an NWB file (pynwb), and back
* :mod:`.gallery`      the paper figures of docs/gallery.md (``astro-neuron figures``)

Nothing here imports matplotlib, SpikingJelly, Elephant, Neo or pynwb at import time.
"""

from astro_neuron.neuro.figures import demo_plots, plot_recording, record_memory_trial
from astro_neuron.neuro.inputs import n_steps, poisson, sine_current, step_current
from astro_neuron.neuro.population import PopulationOutput, PopulationState, TripartitePopulation
from astro_neuron.neuro.presets import PRESETS, Preset, make_amsu, preset
from astro_neuron.neuro.recording import Recording, load_recording, record
from astro_neuron.neuro.territories import Territories
from astro_neuron.neuro.network import (  # noqa: E402  (biological networks, issue 12)
    AdExParams, LIFParams, LinearAstrocyte, LiRinzelAstrocyte, Network, NetworkRun,
)
from astro_neuron.neuro.synapses import Gliotransmission, TsodyksMarkram
from astro_neuron.neuro.circuits import ei_network

__all__ = [
    "PRESETS", "Preset", "preset", "make_amsu", "Territories", "TripartitePopulation",
    "PopulationOutput", "PopulationState", "poisson", "step_current", "sine_current",
    "n_steps", "Recording", "record", "load_recording", "plot_recording", "demo_plots",
    "record_memory_trial",
    "Network", "NetworkRun", "LIFParams", "AdExParams", "LinearAstrocyte", "LiRinzelAstrocyte",
    "TsodyksMarkram", "Gliotransmission", "ei_network",
]
