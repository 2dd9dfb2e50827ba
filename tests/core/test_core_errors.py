"""Bad input gets a clear ValueError/TypeError naming the argument, never a deep
torch traceback."""

from __future__ import annotations

import pytest
import torch

import astro_neuron as an
from astro_neuron.functional.finite import NonFiniteError


@pytest.fixture
def layer():
    return an.AMSU(5, 8, n_astrocytes=2, d_key=4)


@pytest.mark.parametrize("kwargs,match", [
    (dict(n_neurons=10, n_astrocytes=4), "divisible by n_astrocytes"),
    (dict(tau_mem=0.0), "tau_mem must be positive"),
    (dict(tau_mem=-2.0), "tau_mem must be positive"),
    (dict(tau_astro=(0.0, 10.0)), "tau_astro"),
    (dict(tau_astro=(100.0, 10.0)), "tau_astro"),
    (dict(tau_astro=float("nan")), "tau_astro"),
    (dict(threshold=0.0), "threshold must be positive"),
    (dict(reset="soft"), "reset must be one of"),
    (dict(synapse="relu"), "synapse must be one of"),
    (dict(spike_levels=0), "spike_levels"),
    (dict(d_key=3, rotary=True), "even d_key"),
    (dict(dt=0.0), "dt must be a positive"),
    (dict(astro_model="lr94"), "astro_model"),
    (dict(n_astrocytes=0), "n_astrocytes"),
    (dict(chunk_size=0), "chunk_size"),
    (dict(astrocyte=False, neuron_path=False), "no input"),
    (dict(tau_mem=[1.0, 2.0]), r"tau_mem must be a number or have shape \[8\]"),
])
def test_bad_constructor_arguments(kwargs, match):
    args = dict(in_features=5, n_neurons=8, n_astrocytes=2, d_key=4)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        an.AMSU(**args)


def test_wrong_rank(layer):
    with pytest.raises(ValueError, match=r"rank 3 \[T, B, in_features\]"):
        layer(torch.randn(4, 5))
    with pytest.raises(ValueError, match=r"rank 2 \[B, in_features\]"):
        layer.step(torch.randn(3, 2, 5))


def test_wrong_feature_size(layer):
    with pytest.raises(ValueError, match="in_features=5"):
        layer(torch.randn(4, 2, 6))


def test_wrong_dtype_and_integer_input(layer):
    with pytest.raises(TypeError, match="dtype"):
        layer(torch.randn(4, 2, 5, dtype=torch.float64))
    with pytest.raises(TypeError, match="floating-point"):
        layer(torch.ones(4, 2, 5, dtype=torch.int64))
    with pytest.raises(TypeError, match="torch.Tensor"):
        layer([[0.0] * 5])


def test_mixed_devices(layer):
    x = torch.empty(4, 2, 5, device="meta")
    with pytest.raises(ValueError, match="is on meta but the layer is on cpu"):
        with an.validation(check_finite=False):
            layer(x)


def test_parallel_form_with_reset_is_an_error():
    layer = an.AMSU(5, 8, n_astrocytes=2, d_key=4, reset="subtract")
    with pytest.raises(ValueError, match="only without a reset"):
        layer(torch.randn(4, 2, 5), mode="chunked")
    layer(torch.randn(4, 2, 5))  # auto picks the exact recurrent form


def test_unknown_mode(layer):
    with pytest.raises(ValueError, match="mode must be one of"):
        layer(torch.randn(4, 2, 5), mode="fast")


def test_state_from_another_layer(layer):
    other = an.AMSU(5, 8, n_astrocytes=4, d_key=4)
    _, st = other(torch.randn(3, 2, 5), return_state=True)
    with pytest.raises(ValueError, match="another layer"):
        layer(torch.randn(3, 2, 5), state=st)
    _, st = layer(torch.randn(3, 2, 5), return_state=True)
    with pytest.raises(ValueError, match="batch size"):
        layer(torch.randn(3, 4, 5), state=st)
    with pytest.raises(TypeError, match="AMSUState"):
        layer(torch.randn(3, 2, 5), state=torch.zeros(2, 8))
    with pytest.raises(TypeError, match="dtype"):
        layer(torch.randn(3, 2, 5), state=an.AMSUState(st.u.double(), st.H.double(), 0))


def test_nan_input_and_state(layer):
    x = torch.randn(3, 2, 5)
    x[1, 0, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        layer(x)
    _, st = layer(torch.randn(3, 2, 5), return_state=True)
    st.H[0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="state.H contains NaN"):
        layer(torch.randn(3, 2, 5), state=st)


def test_functional_decay_out_of_range():
    from astro_neuron.functional import astro_chunked, leaky_chunked
    with pytest.raises(ValueError, match=r"decay must lie in \[0, 1\]"):
        leaky_chunked(torch.randn(4, 2, 3), torch.tensor([0.5, 1.5, 0.2]))
    with pytest.raises(ValueError, match=r"decay must lie in \[0, 1\]"):
        q = torch.randn(4, 1, 1, 2)
        astro_chunked(q, q, q, torch.tensor([[-0.1, 0.5]]))


# ------------------------------------------------- no silent non-finite result; edges

def test_huge_finite_input_raises_instead_of_spiking(layer):
    """1e20 is finite, but the astrocyte's k v^T overflows float32: an error naming the
    tensor and the step, not a tensor of spikes."""
    with pytest.raises(NonFiniteError, match=r"astrocyte output o .*from step 0"):
        layer(torch.full((4, 2, 5), 1e20))
    with an.validation(check_finite=False):              # the one switch
        layer(torch.full((4, 2, 5), 1e20))


@pytest.mark.parametrize("mode", ["chunked", "recurrent", "loop"])
def test_non_finite_input_names_the_first_bad_step(layer, mode):
    x = torch.randn(6, 2, 5)
    x[3, 1, 0] = float("inf")
    with pytest.raises(NonFiniteError, match=r"input contains NaN or Inf from step 3 of 6"):
        layer(x, mode=mode)
    with pytest.raises(NonFiniteError, match="input"):
        layer.step(x[3])


def test_nan_weight_loaded_by_load_state_dict_is_named(layer):
    sd = {k: v.clone() for k, v in layer.state_dict().items()}
    sd["weight"][0, 0] = float("nan")
    other = an.AMSU(5, 8, n_astrocytes=2, d_key=4)
    other.load_state_dict(sd)
    with pytest.raises(NonFiniteError, match="parameter weight"):
        other(torch.randn(4, 2, 5))
    lif = an.LIF(8)
    with torch.no_grad():
        lif.log_threshold[2] = float("nan")
    with pytest.raises(NonFiniteError, match="LIF threshold"):
        lif(torch.randn(4, 2, 8))


def test_validation_switch_is_scoped_and_checked():
    x = torch.full((3, 1, 5), float("nan"))
    layer = an.AMSU(5, 8, n_astrocytes=2, d_key=4)
    with an.validation(check_finite=False):
        with an.validation(check_finite=True):
            with pytest.raises(NonFiniteError):
                layer(x)
        layer(x)                                         # off again after the inner block
    with pytest.raises(NonFiniteError):
        layer(x)                                         # on again after the outer block
    with pytest.raises(TypeError, match="check_finite"):
        with an.validation(check_finite="no"):
            pass


@pytest.mark.parametrize("kw", [{}, {"reset": "subtract"}, {"astro_model": "li_rinzel"}])
@pytest.mark.parametrize("mode", ["auto", "recurrent", "loop"])
def test_no_time_steps_gives_empty_outputs_of_the_right_shape(kw, mode):
    layer = an.AMSU(5, 8, n_astrocytes=2, d_key=4, **kw)
    out, st = layer.run(torch.zeros(0, 3, 5), mode=mode)
    for t in out:
        assert t.shape == (0, 3, 8)
    assert st.u.shape == (3, 8) and st.t == 0
    lif = an.LIF(8, **({"reset": kw["reset"]} if "reset" in kw else {}))
    s, u = lif(torch.zeros(0, 3, 8), return_state=True)
    assert s.shape == (0, 3, 8) and u.shape == (3, 8)


def test_meta_device_input_is_a_clear_error():
    layer = an.AMSU(5, 8, n_astrocytes=2, d_key=4, device="meta")
    with pytest.raises(ValueError, match="'meta' device"):
        layer(torch.zeros(4, 2, 5, device="meta"))
    with pytest.raises(ValueError, match="'meta' device"):
        an.LIF(8)(torch.zeros(4, 2, 8, device="meta"))


@pytest.mark.parametrize("state", [(torch.zeros(2, 8),), {"u": torch.zeros(2, 8)}],
                         ids=["tuple(u,)", "dict"])
def test_state_of_the_wrong_kind_is_a_type_error(layer, state):
    with pytest.raises(TypeError, match=r"AMSUState\(u, H, t\)"):
        layer(torch.zeros(4, 2, 5), state=state)
    with pytest.raises(TypeError, match="AMSUState"):
        layer.step(torch.zeros(2, 5), state)
    with pytest.raises(TypeError, match="LIF state"):
        an.LIF(8)(torch.zeros(4, 2, 8), state)


@pytest.mark.parametrize("shape,target,ok", [
    ((), (3, 4), True), ((4,), (3, 4), True), ((1, 4), (3, 4), True), ((3, 1), (3, 4), True),
    ((3, 4), (3, 4), True), ((5,), (3, 4), False), ((2, 3, 4), (3, 4), False),
    ((3, 4), (4,), False), ((1, 1, 1), (2, 1, 3), True), ((0,), (2, 0), True),
    ((2,), (2, 0), False),
])
def test_broadcasts_into_agrees_with_torch(shape, target, ok):
    from astro_neuron.validate import broadcasts_into
    assert broadcasts_into(shape, target) is ok
    try:
        torch_ok = torch.broadcast_shapes(shape, target) == torch.Size(target)
    except RuntimeError:
        torch_ok = False
    assert torch_ok is ok


@pytest.mark.parametrize("bad", [float("nan"), -0.1, 1.5])
def test_decay_check_catches_nan_and_out_of_range_in_either_scan(bad):
    from astro_neuron.functional import astro_chunked, leaky_chunked
    d = torch.tensor([0.5, bad, 0.2])
    with pytest.raises(ValueError, match=r"decay must lie in \[0, 1\]"):
        leaky_chunked(torch.randn(4, 2, 3), d)
    q = torch.randn(4, 1, 1, 3)
    with pytest.raises(ValueError, match=r"decay must lie in \[0, 1\]"):
        astro_chunked(q, q, q, d[None])
    with pytest.raises(ValueError, match="must broadcast to one step"):
        leaky_chunked(torch.randn(4, 2, 3), torch.full((2, 2, 3), 0.5))
