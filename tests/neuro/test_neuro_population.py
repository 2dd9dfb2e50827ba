"""TripartitePopulation: equals the AMSU on its own layout; territories, coupling,
current injection, nonlinear astrocytes, and SpikingJelly's monitors."""

from __future__ import annotations

import pytest
import torch

import astro_neuron as an
from astro_neuron.neuro import (
    PopulationState, Territories, TripartitePopulation, poisson, step_current,
)


@pytest.mark.parametrize("reset", ["none", "subtract", "zero"])
@pytest.mark.parametrize("mode", ["auto", "recurrent", "loop"])
def test_population_with_blocks_equals_amsu(reset, mode):
    """Same spikes, membrane, astrocyte output, final state and gradients."""
    torch.manual_seed(0)
    layer = an.AMSU(10, 12, n_astrocytes=3, d_key=4, reset=reset, tau_mem=3.0,
                    tau_astro=(5.0, 50.0)).double()
    with torch.no_grad():
        layer.astro_gain.uniform_(0.5, 2.0)
    pop = TripartitePopulation.from_amsu(layer)
    x = torch.rand(70, 2, 10, dtype=torch.float64)
    a, sa = layer.run(x, mode=mode)
    b, sb = pop.run(x, mode=mode)
    for name in ("spikes", "u", "o"):
        torch.testing.assert_close(getattr(b, name), getattr(a, name), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(sb.u, sa.u, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(sb.astro.H, sa.H, rtol=1e-10, atol=1e-12)
    w = torch.randn_like(a.u)
    ga = torch.autograd.grad(((a.u + a.o) * w).sum() + a.spikes.sum(),
                             [layer.weight, layer.log_tau_astro, layer.log_tau_mem])
    gb = torch.autograd.grad(((b.u + b.o) * w).sum() + b.spikes.sum(),
                             [pop.astrocytes.weight, pop.astrocytes.log_tau_astro,
                              pop.neurons.log_tau_mem])
    N = 12
    torch.testing.assert_close(gb[0], ga[0][N:], rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(gb[1], ga[1], rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(gb[2], ga[2], rtol=1e-9, atol=1e-10)


def test_state_carries_over_chunks_of_time():
    torch.manual_seed(0)
    pop = TripartitePopulation(6, 8, n_astrocytes=2, d_key=3, preset="biology").double()
    x = poisson(100.0, 60.0, n=6, batch_size=2).double()
    whole, s_whole = pop.run(x)
    first, s1 = pop.run(x[:25])
    second, s2 = pop.run(x[25:], s1)
    torch.testing.assert_close(torch.cat([first.u, second.u]), whole.u)
    torch.testing.assert_close(s2.astro.H, s_whole.astro.H)


def test_territory_masks_what_each_astrocyte_senses():
    """Astrocyte a's output depends only on the fibres of its territory."""
    torch.manual_seed(0)
    terr = Territories.tiled(12, 2, n_inputs=8)          # astrocyte 0: fibres 0-3, 1: 4-7
    pop = TripartitePopulation(8, 12, terr, d_key=4, preset="ml").double()
    x = torch.rand(30, 1, 8, dtype=torch.float64)
    x2 = x.clone()
    x2[..., 4:] = torch.rand(30, 1, 4, dtype=torch.float64)   # change astrocyte 1's fibres
    with torch.no_grad():
        o1, o2 = pop.run(x)[0].o, pop.run(x2)[0].o
    torch.testing.assert_close(o1[..., :6], o2[..., :6], rtol=0, atol=0)  # astrocyte 0's neurons
    assert float((o1[..., 6:] - o2[..., 6:]).abs().max()) > 1e-3


def test_overlapping_territories_sum_their_contacts():
    torch.manual_seed(0)
    terr = Territories([[1, 1, 1, 0], [0, 1, 1, 1]])     # neurons 1, 2 shared
    pop = TripartitePopulation(5, 4, terr, d_key=3, preset="ml").double()
    # initial gains: 1 / number of astrocytes contacting the neuron
    assert pop.astrocytes.astro_gain.tolist() == [1.0, 0.5, 0.5, 0.5, 0.5, 1.0]
    x = torch.rand(20, 2, 5, dtype=torch.float64)
    out_a, _ = an.functional.amsu_recurrent(x, None, pop.astro_params(), pop.astrocytes.spec)
    slots = out_a.o                                       # [T, B, A*m] = [.., 2*3]
    o = pop.run(x)[0].o
    torch.testing.assert_close(o[..., 0], slots[..., 0])
    torch.testing.assert_close(o[..., 1], slots[..., 1] + slots[..., 3])
    torch.testing.assert_close(o[..., 2], slots[..., 2] + slots[..., 4])
    torch.testing.assert_close(o[..., 3], slots[..., 5])


def test_current_injection_and_connectivity():
    torch.manual_seed(0)
    conn = (torch.rand(6, 4) < 0.5).float()
    pop = TripartitePopulation(4, 6, n_astrocytes=2, d_key=3, preset="biology",
                               reset="none", connectivity=conn)
    x = poisson(50.0, 100.0, n=4)
    I = step_current(0.3, 100.0, n=6, onset_ms=40.0)
    with torch.no_grad():
        base, with_I = pop.run(x)[0].u, pop.run(x, current=I)[0].u
    # without reset the membrane is linear: the difference is the leaky integral of the
    # current, which enters as (1 - beta) I per step (a physical current, issue 12)
    beta = pop.neurons.beta.detach()
    expected, _ = an.functional.leaky_loop((1 - beta) * I, beta)
    torch.testing.assert_close(with_I - base, expected)
    assert float(expected[:40].abs().max()) == 0 and float(expected[40:].min()) > 0
    torch.testing.assert_close(pop.synaptic_weight(), pop.synapses.weight * conn)
    # a neuron's membrane ignores fibres it has no synapse from
    j = int(conn.sum(1).argmin())
    x2 = x.clone()
    x2[..., conn[j] == 0] = 1.0 - x2[..., conn[j] == 0]
    syn = torch.nn.functional.linear
    torch.testing.assert_close(syn(x, pop.synaptic_weight())[..., j],
                               syn(x2, pop.synaptic_weight())[..., j])


def test_li_rinzel_population_and_trace():
    torch.manual_seed(0)
    terr = Territories.tiled(8, 2, overlap=0.5)
    pop = TripartitePopulation(5, 8, terr, d_key=3, astro_model="li_rinzel",
                               preset="biology", dt=10.0, reset="none")
    x = poisson(50.0, 500.0, n=5, dt_ms=10.0, batch_size=2)
    out, st = pop.run(x, trace="summary")
    assert out.astro.shape == (50, 2, 2) and st.astro.H.shape == (2, 3, 2, 3, 6)
    rest = an.astrocytes.LiRinzel().rest[1]
    assert float(out.astro.detach().max()) > rest                   # calcium rose above rest
    with pytest.raises(ValueError, match="nonlinear"):
        pop.run(x, mode="chunked")
    full, _ = pop.run(x[:5], trace="full")
    assert full.astro.shape == (5, 2, 3, 2, 3, 6)


def test_spikingjelly_monitors_record_populations():
    from spikingjelly.activation_based import monitor

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        TripartitePopulation(6, 8, n_astrocytes=2, d_key=3, store_traces=True),
        TripartitePopulation(8, 4, n_astrocytes=2, d_key=3, store_traces=True))
    x = poisson(200.0, 50.0, n=6, batch_size=2)
    with monitor.OutputMonitor(net, TripartitePopulation) as spikes_mon, \
            monitor.AttributeMonitor("u_seq", False, net, TripartitePopulation) as u_mon, \
            monitor.AttributeMonitor("astro_seq", False, net, TripartitePopulation) as a_mon:
        net(x)
    assert spikes_mon.monitored_layers == ["0", "1"]
    out0, _ = net[0].run(x)
    torch.testing.assert_close(spikes_mon["0"][0], out0.spikes)
    torch.testing.assert_close(u_mon["0"][0], out0.u)
    assert a_mon["1"][0].shape == (50, 2, 2)


def test_population_errors():
    pop = TripartitePopulation(4, 6, n_astrocytes=2, d_key=3)
    with pytest.raises(ValueError, match=r"input must be \[T, B, n_in\] with n_in=4"):
        pop(torch.zeros(5, 1, 3))
    with pytest.raises(ValueError, match="NaN"):
        pop(torch.full((5, 1, 4), float("nan")))
    with pytest.raises(ValueError, match="does not broadcast"):
        pop(torch.zeros(5, 1, 4), current=torch.zeros(5, 1, 5))
    with pytest.raises(ValueError, match="chunked.*reset"):
        pop.run(torch.zeros(5, 1, 4), mode="chunked")      # biology preset resets
    with pytest.raises(ValueError, match="territories cover 8 neurons"):
        TripartitePopulation(4, 6, Territories.blocks(8, 2))
    with pytest.raises(ValueError, match="connectivity must be a 0/1 mask"):
        TripartitePopulation(4, 6, n_astrocytes=2, connectivity=torch.ones(4, 6))
    with pytest.raises(TypeError, match="PopulationState"):
        pop.run(torch.zeros(5, 1, 4), state=(torch.zeros(1, 6), None))
    with pytest.raises(ValueError, match=r"state.u must have shape \[1, 6\]"):
        pop.run(torch.zeros(5, 1, 4), state=PopulationState(torch.zeros(2, 6), None))
