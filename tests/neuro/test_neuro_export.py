"""Recording subsets and sampling intervals, natural array access, and export to Neo
and NWB with round trips (write, read back with pynwb / neo, compare arrays)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import astro_neuron as an
from astro_neuron.neuro import (
    Recording, Territories, TripartitePopulation, load_recording, poisson, record,
)
from astro_neuron.neuro.export import load_nwb, save_nwb, to_neo


def _pop():
    torch.manual_seed(0)
    pop = TripartitePopulation(12, 10, Territories.tiled(10, 3, overlap=0.3), d_key=3,
                               bias=False, astro_model="li_rinzel")
    with torch.no_grad():
        pop.synapses.weight.copy_(torch.rand(10, 12) * 0.3)
    return pop


def test_subset_and_every_keep_the_chosen_rows_and_columns(tmp_path):
    pop = _pop()
    x = poisson(60.0, 100.0, n=12, batch_size=2, generator=torch.Generator().manual_seed(0))
    full = record(pop, x)
    sub = record(pop, x, neurons=[7, 2, 9], every=3)
    f, s = full["population"], sub["population"]
    cols = [7, 2, 9]
    np.testing.assert_array_equal(s["spikes"], f["spikes"][..., cols])    # every step
    np.testing.assert_array_equal(s["u"], f["u"][::3][..., cols])
    np.testing.assert_array_equal(s["o"], f["o"][::3][..., cols])
    np.testing.assert_array_equal(s["astro"], f["astro"][::3])            # all astrocytes
    assert s["u"].shape == (34, 2, 3) and sub.T == 100 and sub.every == 3
    np.testing.assert_allclose(sub.times("u"), np.arange(0, 100, 3) * 1.0)
    np.testing.assert_allclose(sub.times("spikes"), np.arange(100) * 1.0)
    assert list(sub.neuron_ids("population")) == cols
    terr = full.attrs["population"]["territory"]
    assert sub.attrs["population"]["territory"] == [terr[j] for j in cols]
    thr = pop.neurons.threshold.detach().numpy()
    np.testing.assert_allclose(sub.thresholds("population"), thr[cols], rtol=1e-6)
    back = load_recording(sub.save(tmp_path / "sub.npz"))
    assert back.every == 3 and back.T == 100
    np.testing.assert_array_equal(back["population"]["u"], s["u"])
    assert list(back.neuron_ids("population")) == cols
    # slices, masks, and a dict naming the input
    sl = record(pop, x, neurons=slice(0, 10, 4))
    assert list(sl.neuron_ids("population")) == [0, 4, 8]
    mask = np.zeros(10, bool)
    mask[[1, 3]] = True
    assert list(record(pop, x, neurons=mask).neuron_ids("population")) == [1, 3]
    d = record(pop, x, neurons={"input": [0, 1], "population": [5]})
    assert d["input"]["spikes"].shape == (100, 2, 2) and d["population"]["u"].shape[2] == 1


def test_subset_errors_and_array_access():
    pop = _pop()
    x = poisson(60.0, 20.0, n=12)
    with pytest.raises(ValueError, match=r"neuron indices \[10, -1\] out of range \[0, 10\)"):
        record(pop, x, neurons=[3, 10, -1])
    with pytest.raises(ValueError, match="indices repeat"):
        record(pop, x, neurons=[1, 1])
    with pytest.raises(ValueError, match="selects no neuron"):
        record(pop, x, neurons=slice(20, 30))
    with pytest.raises(TypeError, match="1-D sequence of neuron indices"):
        record(pop, x, neurons=[0.5, 1.5])
    with pytest.raises(ValueError, match="boolean mask must have shape"):
        record(pop, x, neurons=np.ones(3, bool))
    with pytest.raises(KeyError, match="does not have"):
        record(pop, x, neurons={"layer7": [0]})
    with pytest.raises(ValueError, match="every must be"):
        record(pop, x, every=0)
    rec = record(pop, x)
    assert rec["population"]["spikes"].shape == (20, 1, 10)            # rec[pop][field]
    assert "population" in rec and "nope" not in rec
    np.testing.assert_array_equal(rec.get("population", "u"), rec["population"]["u"][:, 0])
    with pytest.raises(KeyError, match="no population 'nope'"):
        rec["nope"]
    with pytest.raises(ValueError, match="unknown field 'voltage'"):
        rec.get("population", "voltage")
    with pytest.raises(ValueError, match="expected ceil"):
        Recording(1.0, "ms", {"p": {"spikes": np.zeros((10, 1, 2)), "u": np.zeros((10, 1, 2))}},
                  every=3)
    with pytest.raises(ValueError, match="needs n_steps"):
        Recording(1.0, "ms", {"p": {"u": np.zeros((4, 1, 2))}}, every=3)


def _assert_same(a: Recording, b: Recording) -> None:
    assert (a.dt, a.time_unit, a.T, a.every, a.batch_size) == (b.dt, b.time_unit, b.T, b.every,
                                                               b.batch_size)
    assert set(a.populations) == set(b.populations)
    for p in a.populations:
        assert set(a[p]) == set(b[p])
        for f in a[p]:
            np.testing.assert_array_equal(a[p][f], b[p][f], err_msg=f"{p}/{f}")
    assert a.attrs == b.attrs and a.info == b.info


def test_nwb_round_trip_with_pynwb(tmp_path):
    from pynwb import NWBHDF5IO
    pop = _pop()
    x = poisson(60.0, 50.0, n=12, batch_size=3, generator=torch.Generator().manual_seed(1))
    rec = record(pop, x, neurons=[1, 4, 6, 8], every=2,
                 info={"labels": [0, 1, 0], "epochs": {"a": [0, 20], "b": [20, 50]}})
    assert rec["population"]["spikes"][:, :, 1].sum() >= 3               # something to compare
    path = save_nwb(rec, tmp_path / "run.nwb")
    assert not list(tmp_path.glob(".*.tmp"))                            # atomic: no leftovers
    with NWBHDF5IO(str(path), "r") as io:                                # read by pynwb itself
        nwb = io.read()
        units = nwb.units
        assert len(units) == 12 + 4                                      # input + population
        pops = list(units["population"][:])
        assert pops.count("input") == 12 and pops.count("population") == 4
        j = pops.index("population") + 1                                 # neuron 4
        assert units["neuron"][j] == 4
        times = np.concatenate([np.nonzero(rec["population"]["spikes"][:, s, 1])[0] * 1e-3
                                + s * 0.05 for s in range(3)])
        np.testing.assert_allclose(units["spike_times"][j], times)
        ts = nwb.acquisition["population_u"]
        assert ts.unit == "threshold" and ts.rate == pytest.approx(500.0)  # every 2 ms
        np.testing.assert_array_equal(ts.data[:25], rec["population"]["u"][:, 0])
        assert nwb.acquisition["population_astro"].unit == "uM"         # Li-Rinzel calcium
        assert len(nwb.trials) == 3 and list(nwb.trials["label"][:]) == ["0", "1", "0"]
    _assert_same(rec, load_nwb(path))
    # graded spikes, a step recording and uneven trials (T not a multiple of every)
    torch.manual_seed(0)
    layer = an.AMSU(4, 6, n_astrocytes=2, d_key=2, spike_levels=3)
    steps = record(layer, torch.rand(11, 2, 4) * 3, every=4)
    assert steps["amsu"]["spikes"].max() > 1                           # graded levels
    with pytest.raises(ValueError, match="give step_s"):
        save_nwb(steps, tmp_path / "s.nwb")
    _assert_same(steps, load_nwb(save_nwb(steps, tmp_path / "s.nwb", step_s=1e-3)))
    with pytest.raises(ValueError, match="ends in .nwb"):
        save_nwb(rec, tmp_path / "run.h5")
    with pytest.raises(ValueError, match="not written by astro-neuron"):
        bare = tmp_path / "bare.nwb"
        from datetime import datetime, timezone

        from pynwb import NWBFile
        with NWBHDF5IO(str(bare), "w") as io:
            io.write(NWBFile(session_description="x", identifier="x",
                             session_start_time=datetime.now(timezone.utc)))
        load_nwb(bare)


def test_neo_block_holds_the_arrays():
    import quantities as pq
    pop = _pop()
    x = poisson(60.0, 40.0, n=12, batch_size=2, generator=torch.Generator().manual_seed(2))
    rec = record(pop, x, every=2, info={"events": {"go": 10.0},
                                        "epochs": {"a": [0, 10], "b": [10, 40]}})
    assert rec["population"]["spikes"][:, 1].sum() > 5
    block = to_neo(rec)
    assert len(block.segments) == 2
    seg = block.segments[1]
    trains = [st for st in seg.spiketrains if st.annotations["population"] == "population"]
    assert len(trains) == 10
    for j, st in enumerate(trains):
        np.testing.assert_allclose(st.rescale(pq.ms).magnitude,
                                   np.nonzero(rec["population"]["spikes"][:, 1, j])[0] * 1.0)
    u = next(a for a in seg.analogsignals if a.name == "population_u")
    np.testing.assert_array_equal(u.magnitude, rec["population"]["u"][:, 1])
    assert float(u.sampling_period.rescale(pq.ms)) == 2.0
    ca = next(a for a in seg.analogsignals if a.name == "population_astro")
    assert ca.units == pq.uM
    assert [g.name for g in block.groups] == ["input", "population"]
    assert len(block.groups[1].spiketrains) == 20                       # 10 neurons x 2 trials
    assert list(seg.events[0].labels) == ["go"] and float(seg.epochs[0].durations[1]) == 30.0


def test_biological_network_recording_exports_with_its_units(tmp_path):
    from pynwb import NWBHDF5IO

    from astro_neuron.neuro.circuits import ei_network
    net = ei_network("li_rinzel", n_exc=8, n_inh=2, n_ext=20, dt=0.5)
    rec = net.simulate(60.0).to_recording()
    path = save_nwb(rec, tmp_path / "ei.nwb")
    with NWBHDF5IO(str(path), "r") as io:
        acq = io.read().acquisition
        assert acq["E_u"].unit == "mV" and acq["astro_astro"].unit == "uM"
    _assert_same(rec, load_nwb(path))
    import quantities as pq
    sig = next(a for a in to_neo(rec).segments[0].analogsignals if a.name == "E_u")
    assert sig.units == pq.mV
