"""Ready-made networks with their sources (guide: docs/neuroscience.md, "Networks").

:func:`ei_network`: a recurrent excitatory/inhibitory network of LIF neurons with
exponential synaptic currents, driven by Poisson fibres, with astrocytes over the
excitatory neurons. Neuron and synapse time constants from Vogels & Abbott (2005),
the CUBA benchmark of Brette et al. (2007) (tau_m 20 ms, E_L = V_reset = -60 mV, V_th
-50 mV, t_ref 5 ms, tau_syn 5 ms excitatory / 10 ms inhibitory; C_m 200 pF, i.e.
g_L = 10 nS); the benchmark's 4000 neurons at 2% connectivity become 200 neurons at
10% (about the same in-degree per neuron pair type divided by 2.5, weights scaled to
keep the network quiet without input and in the 5-30 Hz range with it). Unlike the
benchmark, the resting potential sits 10 mV below threshold (no bias current), so
the network is silent without its input. Astrocytes: the Li-Rinzel cell of NEST's
``astrocyte_lr_1994`` (``delta_IP3`` 0.5 µM as in NEST's astrocyte examples, SIC as
NEST) or the AM-SU's linear astrocyte (tau 1 s), each sensing the excitatory synapses
of its territory with weight ``1 / (number of fibres it senses)`` so that its drive is
the mean rate of its fibres, whatever their number.
"""

from __future__ import annotations

from typing import Optional

from astro_neuron.functional.li_rinzel import LiRinzel
from astro_neuron.neuro.network import (
    AdExParams, LiRinzelAstrocyte, LinearAstrocyte, LIFParams, Network,
)
from astro_neuron.neuro.synapses import Gliotransmission, TsodyksMarkram
from astro_neuron.neuro.territories import Territories
from astro_neuron.validate import choice

__all__ = ["VOGELS_ABBOTT", "ei_network", "astro_model"]

#: LIF parameters of the Vogels-Abbott CUBA network in pA / pF / mV / ms
VOGELS_ABBOTT = LIFParams(C_m=200.0, tau_m=20.0, E_L=-60.0, V_th=-50.0, V_reset=-60.0,
                          t_ref=5.0, tau_syn_ex=5.0, tau_syn_in=10.0, I_e=0.0)


#: AdEx neurons for NEST (``aeif_cond_alpha_astro`` defaults, synaptic time constants of
#: NEST's astrocyte_brunel example: 2 ms excitatory, 4 ms inhibitory)
ADEX = AdExParams(tau_syn_ex=2.0, tau_syn_in=4.0)
#: peak conductances (nS) of ext -> *, E -> *, I -> * for :data:`ADEX`
ADEX_WEIGHTS = (5.0, 0.5, -2.0)


def astro_model(name: str):
    """The astrocyte of the presets: ``"linear"`` (tau 1 s; SIC 4 pA per unit of the
    trace above 2, i.e. above a mean sensed rate of about 2 Hz, capped at 70 pA, the
    Li-Rinzel preset's ceiling of 10 x ln(1000 x 1 µM)) or ``"li_rinzel"``
    (NEST's ``astrocyte_lr_1994`` with ``delta_IP3`` 0.5 µM per unit of sensed drive;
    ``tau_IP3`` 7142 ms; SIC as NEST, threshold 0.19669 µM)."""
    choice("astro_model", name, ("linear", "li_rinzel"))
    if name == "linear":
        return LinearAstrocyte(tau=1000.0, SIC_th=2.0, SIC_scale=4.0, SIC_max=70.0)
    return LiRinzelAstrocyte(LiRinzel(delta_IP3=0.5))


def ei_network(astro: Optional[str] = "linear", *, n_exc: int = 160, n_inh: int = 40,
               n_ext: int = 100, input_rate_hz: float = 20.0, n_astrocytes: int = 4,
               sic_weight: Optional[float] = None, tsodyks: bool = False,
               glio: Optional[Gliotransmission] = None, neuron: str = "lif",
               dt: float = 0.1, seed: int = 0) -> Network:
    """The E/I network described in the module docstring.

    Groups: ``"ext"`` (``n_ext`` Poisson fibres at ``input_rate_hz``; 0 switches the
    input off), ``"E"``, ``"I"`` (LIF, :data:`VOGELS_ABBOTT`), ``"astro"`` (over
    ``E``, tiled territories, none when ``astro`` is ``None``).

    Connections (delays 1 ms; Dale's law): ext -> E, I fixed in-degree 20 at 60 pA;
    E -> E, I with probability 0.1 at 20 pA; I -> E, I with probability 0.1 at -60 pA.
    ``tsodyks``: E -> E synapses are Tsodyks-Markram (U 0.5, tau_rec 200 ms,
    tau_fac 50 ms: depressing). ``sic_weight``: pA per unit of SIC per contact
    (default 1 for the linear astrocyte, whose SIC is already in pA; for Li-Rinzel,
    whose SIC is a log of nM and tops out near 7: 10 onto LIF, 30 onto AdEx, whose
    leak conductance is 3 times larger). ``glio``: gliotransmitter modulation of the
    E -> E synapses (needs ``tsodyks=True``).

    ``neuron="adex"``: the same network with :data:`ADEX` neurons and conductances
    :data:`ADEX_WEIGHTS` (5 / 0.5 / -2 nS; measured in NEST 3.10 over 2 s at 20 Hz
    input with Li-Rinzel astrocytes: E 10.8 Hz with SIC weight 0, 19.6 Hz with the
    default 30). This is the form to export to NEST (its ``sic_connection``
    only targets AdEx neurons); simulated here it is slow (RK4 sub-steps of 0.01 ms).
    """
    choice("neuron", neuron, ("lif", "adex"))
    net = Network(dt=dt, seed=seed)
    net.poisson("ext", n_ext, rate_hz=input_rate_hz)
    if neuron == "lif":
        params, v0, (w_ext, w_e, w_i) = VOGELS_ABBOTT, (-60.0, -52.0), (60.0, 20.0, -60.0)
    else:
        params, v0, (w_ext, w_e, w_i) = ADEX, (-70.6, -60.0), ADEX_WEIGHTS
    net.neurons("E", n_exc, params, kind="excitatory", V_init=v0)
    net.neurons("I", n_inh, params, kind="inhibitory", V_init=v0)
    stp = TsodyksMarkram(U=0.5, tau_rec=200.0, tau_fac=50.0) if tsodyks else None
    for post in ("E", "I"):
        net.connect("ext", post, "fixed_indegree", indegree=20, weight=w_ext, delay=1.0)
        net.connect("E", post, "pairwise_bernoulli", p=0.1, weight=w_e, delay=1.0,
                    synapse=stp if post == "E" else None)
        net.connect("I", post, "pairwise_bernoulli", p=0.1, weight=w_i, delay=1.0)
    if astro is not None:
        model = astro_model(astro)
        terr = Territories.tiled(n_exc, n_astrocytes)
        if sic_weight is None:
            sic_weight = 1.0 if astro == "linear" else 10.0 if neuron == "lif" else 30.0
        g = net.astrocytes("astro", "E", terr, model, sic_weight=sic_weight, glio=glio,
                           delay=1.0)
        # sense weight: 1 / (fibres an astrocyte senses), so the drive is a mean rate
        n_sensed = max(1, int(sum((S > 0).sum(1).max() for S in net.sensing(g).values())))
        g.sense_weight = 1.0 / n_sensed
    return net
