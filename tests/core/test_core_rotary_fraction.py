"""Partial rotary (``rotary_fraction``): the rotation itself, and the three forms of
the AM-SU agree with it (outputs, states, gradients), as with full rotary."""

from __future__ import annotations

import pytest
import torch

import astro_neuron as an
from astro_neuron.functional.rotary import rotary, rotary_angles, rotary_dims
from forms import run_with_grads   # tests/helpers
from tolerance import RTOL, assert_close


def test_rotary_dims_rounds_to_whole_pairs():
    assert rotary_dims(16, 1.0) == 16
    assert rotary_dims(16, 0.0) == 0
    assert rotary_dims(16, 0.25) == 4
    assert rotary_dims(6, 0.5) == 4            # 1.5 pairs -> 2 (round half to even)
    assert rotary_dims(32, 0.1) == 4           # 1.6 pairs -> 2
    with pytest.raises(ValueError, match="rotary_fraction"):
        rotary_dims(16, 1.5)


def test_full_n_rot_is_the_default_rotation_exactly():
    x = torch.randn(9, 2, 3, 8)
    assert torch.equal(rotary(x, 5, n_rot=8), rotary(x, 5))
    assert torch.equal(rotary(x, 5, n_rot=0), x)


def test_partial_rotary_turns_the_first_pairs_and_passes_the_rest():
    """Pairs (i, i + d/2), i < n/2, turn like an n-channel rotary; the others do not."""
    d, n = 12, 4
    x = torch.randn(7, 3, d, dtype=torch.float64)
    y = rotary(x, 11, n_rot=n)
    h, m = d // 2, n // 2
    rotated = torch.cat([x[..., :m], x[..., h:h + m]], -1)           # the n rotated channels
    want = rotary(rotated, 11)                                         # full n-channel rotary
    torch.testing.assert_close(torch.cat([y[..., :m], y[..., h:h + m]], -1), want,
                               rtol=0, atol=1e-14)
    assert torch.equal(y[..., m:h], x[..., m:h])
    assert torch.equal(y[..., h + m:], x[..., h + m:])
    cos, sin = rotary_angles(torch.arange(3), d, n_rot=n)
    assert torch.equal(cos[:, m:], torch.ones(3, h - m, dtype=torch.float64))
    assert torch.equal(sin[:, m:], torch.zeros(3, h - m, dtype=torch.float64))


def test_partial_rotary_scores_depend_on_offset_only():
    """q_t . k_s after rotation depends on t - s (rotary's defining property)."""
    d = 8
    q, k = torch.randn(d, dtype=torch.float64), torch.randn(d, dtype=torch.float64)
    def score(t, s):
        return float(rotary(q[None], t, n_rot=4)[0] @ rotary(k[None], s, n_rot=4)[0])
    assert abs(score(10, 7) - score(3, 0)) < 1e-12
    assert abs(score(10, 7) - score(10, 8)) > 1e-6




@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("fraction", [0.0, 0.5, 1.0])
def test_three_forms_agree_with_partial_rotary(dtype, fraction):
    torch.manual_seed(7)
    layer = an.AMSU(6, 12, n_astrocytes=3, d_key=8, rotary=True, rotary_fraction=fraction,
                    chunk_size=16).to(dtype)
    assert layer.spec.rotary_dims == rotary_dims(8, fraction)
    with torch.no_grad():
        layer.astro_gain.uniform_(0.5, 1.5)
    x = torch.randn(50, 2, 6, dtype=dtype)
    st0 = layer.init_state(2)
    st0 = an.AMSUState(torch.randn_like(st0.u), torch.randn_like(st0.H), 3)
    ref, st_ref, g_ref = run_with_grads(layer, x, "loop", st0)
    for mode in ("recurrent", "chunked"):
        out, st, g = run_with_grads(layer, x, mode, st0)
        assert_close(out.u + out.o, ref.u + ref.o, dtype, f"{mode} drive")
        assert_close(st.H, st_ref.H, dtype, f"{mode} final H")
        for name, gr in g_ref.items():
            assert_close(g[name], gr, dtype, f"{mode} grad {name}", RTOL[dtype] * 10)
    # streaming steps reproduce the sequence
    state, outs = st0, []
    for t in range(x.shape[0]):
        o, state = layer.step_full(x[t], state)
        outs.append(o.u + o.o)
    assert_close(torch.stack(outs), ref.u + ref.o, dtype, "step drive")


def test_fraction_changes_only_what_it_should():
    """Fraction 1 is the default layer; fraction 0 equals a layer without rotary."""
    torch.manual_seed(0)
    base = an.AMSU(5, 8, n_astrocytes=2, d_key=4, rotary=True).double()
    x = torch.randn(20, 2, 5, dtype=torch.float64)
    for fraction, twin_kw in ((1.0, dict(rotary=True)), (0.0, dict(rotary=False))):
        layer = an.AMSU(5, 8, n_astrocytes=2, d_key=4, rotary=True,
                        rotary_fraction=fraction).double()
        twin = an.AMSU(5, 8, n_astrocytes=2, d_key=4, **twin_kw).double()
        layer.load_state_dict(base.state_dict())
        twin.load_state_dict(base.state_dict())
        a, b = layer.run(x, mode="chunked")[0], twin.run(x, mode="chunked")[0]
        assert torch.equal(a.o, b.o)
    assert an.AMSU(5, 8, n_astrocytes=2, d_key=4).spec.rotary_fraction == 1.0
    assert an.AMSU(5, 8, n_astrocytes=2, d_key=4).spec.rotary_dims == 0     # rotary off


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "half", True])
def test_bad_rotary_fraction_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="rotary_fraction"):
        an.AMSU(5, 8, n_astrocytes=2, d_key=4, rotary=True, rotary_fraction=bad)
