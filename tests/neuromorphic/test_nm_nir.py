"""NIR export: round trip through snnTorch's NIR importer; clear errors for the AM-SU."""

from __future__ import annotations

import nir   # a dev dependency ([dev] extra), installed by scripts/install.sh
import numpy as np
import pytest
import torch

import astro_neuron as an
import neuromorphic as nm


def _lif_net():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(10, 20),
        an.LIF(20, tau_mem=3.0, threshold=0.5, reset="zero", learn_tau=False,
               learn_threshold=False),
        torch.nn.Linear(20, 8),
        an.LIF(8, tau_mem=5.0, threshold=0.3, reset="zero"))


def test_round_trip_through_snntorch(tmp_path, capsys):
    from snntorch.import_nir import import_from_nir

    model = _lif_net()
    nm.export_nir(model, tmp_path / "net.nir")
    graph = nir.read(tmp_path / "net.nir")
    assert {type(n).__name__ for n in graph.nodes.values()} == {"Input", "Affine", "LIF",
                                                               "Output"}
    imported = import_from_nir(graph)
    x = (torch.rand(60, 4, 10) < 0.3).float()
    with torch.no_grad():
        ref = model(x)
        state, outs = None, []
        for t in range(x.shape[0]):
            out, state = imported(x[t], state)
            outs.append(out)
    got = torch.stack(outs)
    assert ref.sum() > 20
    assert torch.equal(got, ref)


def test_astrocyte_off_amsu_without_reset_is_li_plus_threshold(tmp_path):
    model = torch.nn.Sequential(an.AMSU(10, 8, n_astrocytes=2, d_key=4, astrocyte=False))
    nm.export_nir(model, tmp_path / "amsu_off.nir")
    graph = nir.read(tmp_path / "amsu_off.nir")
    assert [type(graph.nodes[k]).__name__ for k in ("affine0", "li0", "threshold0")] == \
        ["Affine", "LI", "Threshold"]
    beta = model[0].beta.detach().numpy()
    li = graph.nodes["li0"]
    np.testing.assert_allclose(1 - 1e-4 / li.tau, beta, rtol=1e-5)   # Euler step gives beta
    np.testing.assert_allclose(li.r * 1e-4 / li.tau, 1.0, rtol=1e-6)


@pytest.mark.parametrize("model,match", [
    (torch.nn.Sequential(torch.nn.Linear(4, 8), an.LIF(8),
                         an.AMSU(8, 8, n_astrocytes=2, d_key=4)), r"layer 1 \(amsu1: AMSU\).*astrocyte"),
    (torch.nn.Sequential(torch.nn.Linear(4, 8), an.LIF(8, reset="subtract")), "subtract"),
    (torch.nn.Sequential(torch.nn.Linear(4, 8), an.LIF(8, spike_levels=3)), "graded"),
])
def test_inexpressible_layers_are_named(model, match):
    with pytest.raises(ValueError, match=match):
        nm.export_nir(model)
