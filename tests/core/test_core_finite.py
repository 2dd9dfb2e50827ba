"""The finiteness check's fast path leaves out the membrane and spike sequences
(functional/lif.py and functional/amsu ``check_run``): these tests hold the claim it
rests on, that a NaN or Inf at any step of a membrane's input reaches its final
state in every form, reset and decay, and that a run with such an input still raises
an error naming the input and the step."""

from __future__ import annotations

import pytest
import torch

import astro_neuron as an
from astro_neuron.functional import lif as F_lif
from astro_neuron.functional.amsu import RESETS
from astro_neuron.functional.compiled import cpu_kernels
from astro_neuron.functional.finite import NonFiniteError, check_finite

T, B, N = 9, 2, 5
BAD = [float("nan"), float("inf"), -float("inf")]


def _forms(reset: str):
    """(form, cpu kernels) pairs that run this reset: the chunked form has no reset."""
    forms = [("loop", "auto")]
    if reset == "none":
        forms += [("chunked", "numba"), ("chunked", "torch")]
    return forms


@pytest.mark.parametrize("reset", RESETS)
@pytest.mark.parametrize("decay", [0.0, 0.6, 1.0])
@pytest.mark.parametrize("bad", BAD)
@pytest.mark.parametrize("step", [0, 4, T - 1])
def test_a_bad_input_step_reaches_the_lif_final_state(reset, decay, bad, step):
    pytest.importorskip("numba")
    spec = F_lif.LIFSpec(N, reset=reset)
    thr = torch.full((N,), 0.5)
    beta = torch.full((N,), decay)
    for form, kernels in _forms(reset):
        x = torch.randn(T, B, N) * 3
        x[step, 1, 2] = bad
        with cpu_kernels(kernels):
            _, u, u_T = F_lif.run(x, None, beta, thr, spec, form=form, check=False)
        assert not torch.isfinite(u_T[1, 2]), (form, kernels)
        assert not torch.isfinite(u[step:, 1, 2]).any(), (form, kernels)   # every later step
        # the finite neurons and sequences stay finite: the claim is about the bad one
        assert torch.isfinite(u_T[0]).all() and torch.isfinite(u_T[1, :2]).all()


@pytest.mark.parametrize("reset", RESETS)
@pytest.mark.parametrize("bad", BAD)
@pytest.mark.parametrize("mode", ["chunked", "recurrent", "loop"])
def test_a_bad_input_step_reaches_the_amsu_final_membrane(reset, bad, mode):
    if mode == "chunked" and reset != "none":
        pytest.skip("the chunked form has no reset")
    layer = an.AMSU(5, N, n_astrocytes=1, d_key=4, reset=reset)
    x = torch.randn(T, B, 5)
    x[4, 1, 3] = bad
    with an.validation(check_finite=False):
        _, st = layer(x, mode=mode, return_state=True)
    assert not torch.isfinite(st.u[1]).any()        # every neuron of that sequence
    assert torch.isfinite(st.u[0]).all()


@pytest.mark.parametrize("reset", RESETS)
@pytest.mark.parametrize("bad", BAD)
def test_lif_runs_with_a_bad_input_step_raise_naming_it(reset, bad):
    spec = F_lif.LIFSpec(N, reset=reset)
    thr, beta = torch.full((N,), 0.5), torch.full((N,), 0.9)
    x = torch.randn(T, B, N)
    x[5, 0, 1] = bad
    for form, kernels in _forms(reset):
        with cpu_kernels(kernels), pytest.raises(
                NonFiniteError, match=rf"LIF input contains NaN or Inf from step 5 of {T}"):
            F_lif.run(x, None, beta, thr, spec, form=form)


def test_lif_drive_at_the_threshold_is_checked():
    """A NaN drive ``o`` would only silence spikes (``NaN > theta`` is False)."""
    spec = F_lif.LIFSpec(N)
    o = torch.zeros(T, B, N)
    o[2, 1, 0] = float("nan")
    with pytest.raises(NonFiniteError, match=r"LIF drive o contains NaN or Inf from step 2"):
        F_lif.run(torch.randn(T, B, N), None, torch.full((N,), 0.9), torch.full((N,), 0.5),
                  spec, o=o)


def test_non_spiking_twin_keeps_its_spikes_in_the_fast_path():
    """Smooth "spikes" are not always finite, so they are summed, not covered."""
    spec = F_lif.LIFSpec(N, spiking=False)
    x = torch.randn(T, B, N)
    s, u, u_T = F_lif.lif_chunked(x, None, torch.full((N,), 0.9), torch.full((N,), 0.5), spec)
    s = s.clone()
    s[3, 0, 0] = float("nan")                       # a spike function gone wrong
    with pytest.raises(NonFiniteError, match="LIF spikes contains NaN or Inf from step 3"):
        F_lif.check_run(x, None, torch.full((N,), 0.9), torch.full((N,), 0.5), (s, u, u_T),
                        spec=spec)


def test_covered_tensors_are_still_searched_and_blamed_in_order():
    """``covered`` only shortens the fast path: once it fails, every tensor is searched
    in the order given, covered ones included."""
    a = torch.ones(4, 3)
    b = torch.ones(4, 3)
    b[2, 0] = float("nan")
    c = torch.full((3,), float("nan"))
    with pytest.raises(NonFiniteError, match="b contains NaN or Inf from step 2 of 4"):
        check_finite([("a", a, True), ("b", b, True), ("c", c, False)], covered=["b"])
    check_finite([("a", a, True), ("b", b, True)], covered=["b"])   # by the caller's proof
