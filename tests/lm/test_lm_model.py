"""AM-SNet and the Transformer baseline: the forms agree, the API checks its input."""

from __future__ import annotations

import pytest
import torch

import astro_neuron as an
from astro_neuron.functional.finite import NonFiniteError
from astro_neuron.lm import AMSNet, AMSNetConfig, build_model
from astro_neuron.functional.lif import LIFSpec
from astro_neuron.functional.rotary import rotary
from astro_neuron.lm.config import transformer_twin
from astro_neuron.lm.model import RotaryTable, _spike_out_dense, _spike_out_event

SMALL = dict(n_layer=2, d_model=32, n_head=2, block_size=48, chunk_size=16)
VARIANTS = {
    "amsnet": {},
    "plain-amsu (no astro norm)": {"astro_norm": False},
    "astrocyte off": {"astrocyte": False},
    # the ablation at equal parameters: a wider channel-mixing layer (bench train)
    "astrocyte off, wider channel mixing": {"astrocyte": False, "ffn_hidden": 40},
    "neuron path off": {"neuron_path": False},
    "non-spiking twin": {"spiking": False},
    "graded spikes": {"spike_levels": 3},
    "partial rotary": {"rotary_fraction": 0.25},
    "no rotary": {"rotary_fraction": 0.0},
    # the astrocyte senses in more (or fewer) dimensions than it has neurons
    "wide keys": {"d_key": 24},
    "narrow keys, relu, delay line": {"d_key": 8, "sensing": "relu", "conv_size": 3,
                                      "rotary_fraction": 0.5},
    "wide keys, squared relu": {"d_key": 24, "sensing": "relu2", "conv_size": 2,
                                "rotary_fraction": 0.0},
    "transformer": {"arch": "transformer"},
}


def _model(opts, dtype=torch.float64):
    torch.manual_seed(1)
    return build_model(AMSNetConfig(**{**SMALL, **opts})).to(dtype)


def _teacher_forced(model, idx, start=0, cache=None):
    out = []
    for t in range(start, idx.shape[1]):
        logits, cache = model.step(idx[:, t], cache)
        out.append(logits)
    return torch.stack(out, 1)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_teacher_forced_step_reproduces_parallel_logits(name, monkeypatch):
    monkeypatch.setattr(RotaryTable, "BLOCK", 16)    # the rotary rows cross blocks
    model = _model(VARIANTS[name])
    idx = torch.randint(0, 256, (2, 70))        # longer than a chunk, not a multiple of it
    logits, _ = model(idx)
    stepped = _teacher_forced(model, idx)
    torch.testing.assert_close(stepped, logits, rtol=1e-9, atol=1e-9)
    # prompt read in parallel, the rest stepped
    _, cache = model.prefill(idx[:, :33])
    torch.testing.assert_close(_teacher_forced(model, idx, 33, cache), logits[:, 33:],
                               rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", [n for n in VARIANTS if n != "transformer"])
def test_chunked_equals_loop_outputs_and_gradients(name):
    model = _model(VARIANTS[name])
    idx = torch.randint(0, 256, (2, 40))
    ref = {}
    for mode in ("loop", "recurrent", "chunked"):
        model.zero_grad()
        logits, loss = model(idx, idx, mode=mode)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        if not ref:
            ref = {"logits": logits.detach(), "grads": grads}
            continue
        torch.testing.assert_close(logits, ref["logits"], rtol=1e-9, atol=1e-9)
        assert grads.keys() == ref["grads"].keys()
        for n in grads:
            torch.testing.assert_close(grads[n], ref["grads"][n], rtol=1e-7, atol=1e-9,
                                       msg=lambda m, n=n: f"{mode} grad of {n}: {m}")


def test_step_float32_matches_parallel_away_from_threshold():
    model = _model({}, torch.float32)
    idx = torch.randint(0, 256, (2, 50))
    logits, _ = model(idx)
    stepped = _teacher_forced(model, idx)
    # float32: a spike can flip where the drive is within rounding of the threshold;
    # positions after such a flip differ, all others agree to float rounding
    same = (stepped - logits).abs().amax(-1) < 1e-4
    assert same.float().mean() > 0.9
    assert same[:, :10].all()


def test_step_sees_new_weights():
    model = _model({})
    idx = torch.randint(0, 256, (1, 12))
    _teacher_forced(model, idx)
    with torch.no_grad():
        model.blocks[0].w_o.weight.mul_(3.0)                 # in place: decode tensors stale
    logits, _ = model(idx)
    torch.testing.assert_close(_teacher_forced(model, idx), logits, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("levels", [1, 3])
def test_event_driven_read_out_equals_dense(levels):
    torch.manual_seed(0)
    spec = LIFSpec(20, spike_levels=levels)
    w_t = torch.randn(20, 8, dtype=torch.float64)
    thr = torch.full((20,), 1.0, dtype=torch.float64)
    for B, scale in ((1, 1.0), (3, 1.0), (1, 0.0), (2, 0.0), (1, 3.0)):
        x = torch.randn(B, 8, dtype=torch.float64)
        y = scale * torch.randn(B, 20, dtype=torch.float64)     # scale 0: no spike at all
        torch.testing.assert_close(_spike_out_event(x, y, thr, spec, w_t),
                                   _spike_out_dense(x, y, thr, spec, w_t))


@pytest.mark.parametrize("n_rot", [None, 4, 0])
def test_rotary_table_rows_equal_core_rotary_across_blocks(monkeypatch, n_rot):
    monkeypatch.setattr(RotaryTable, "BLOCK", 4)
    tab = RotaryTable(8, 10000.0, torch.float64, "cpu", n_rot)
    x = torch.randn(1, 8, dtype=torch.float64)
    for t in (0, 3, 4, 9, 2, 100):                    # forwards, backwards, far ahead
        C, S = tab.rows(t)
        swapped = torch.cat([x[:, 4:], x[:, :4]], -1)
        torch.testing.assert_close(x * C + swapped * S, rotary(x[None], t, n_rot=n_rot)[0],
                                   rtol=0, atol=0)
        assert tab.C.shape[0] == 4


def test_generate_greedy_matches_parallel_argmax():
    model = _model({})
    prompt = torch.randint(0, 256, (2, 5))
    out = model.generate(prompt, 12, temperature=0)
    assert out.shape == (2, 17) and torch.equal(out[:, :5], prompt)
    logits, _ = model(out[:, :-1])
    assert torch.equal(logits[:, 4:].argmax(-1), out[:, 5:])
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a = model.generate(prompt, 8, temperature=1.0, top_k=5, generator=g1)
    b = model.generate(prompt, 8, temperature=1.0, top_k=5, generator=g2)
    assert torch.equal(a, b)


def test_spike_record_shapes_and_values():
    model = _model({"spike_levels": 1}, torch.float32)
    idx = torch.randint(0, 256, (2, 20))
    rec = model.spike_record(idx)
    assert len(rec) == 2 and rec[0].shape == (2, 20, 32)
    assert set(torch.unique(rec[0]).tolist()) <= {0.0, 1.0}
    ffn = model.spike_record(idx, which="ffn")
    assert ffn[1].shape == (2, 20, 128)
    with pytest.raises(ValueError, match="which"):
        model.spike_record(idx, which="x")


def test_state_size_does_not_grow():
    model = _model({})
    c = model.init_cache(1)
    n0 = c.nbytes()
    for t in range(50):
        _, c = model.step(torch.tensor([t]), c)
    assert c.nbytes() == n0 and c.t == 50


@pytest.mark.parametrize("cfg, tol", [(AMSNetConfig(), 0.01),
                                      (AMSNetConfig(d_model=64, n_head=2, n_layer=2), 0.02)])
def test_transformer_parameter_count_matches(cfg, tol):
    am = build_model(cfg).num_params()
    tf = build_model(transformer_twin(cfg)).num_params()
    assert abs(am - tf) / tf < tol, (am, tf)


def test_kv_cache_grows_past_capacity():
    model = _model({"arch": "transformer"})
    idx = torch.randint(0, 256, (1, 30))
    logits, _ = model(idx)
    cache = model.init_cache(1, capacity=4)
    torch.testing.assert_close(_teacher_forced(model, idx, 0, cache), logits,
                               rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("bad, exc, match", [
    (torch.zeros(2, 5), TypeError, "integer"),
    (torch.zeros(5, dtype=torch.long), ValueError, r"\(B, T\)"),
    (torch.full((1, 3), 256), ValueError, "values must lie"),
    ([1, 2, 3], TypeError, "torch.Tensor"),
])
def test_bad_idx_gives_clear_error(bad, exc, match):
    model = _model({}, torch.float32)
    with pytest.raises(exc, match=match):
        model(bad)


def test_bad_arguments_give_clear_errors():
    model = _model({}, torch.float32)
    idx = torch.randint(0, 256, (2, 5))
    with pytest.raises(ValueError, match="targets must have the shape"):
        model(idx, idx[:, :3])
    with pytest.raises(ValueError, match="mode"):
        model(idx, mode="fast")
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate(idx, -1)
    with pytest.raises(ValueError, match="temperature"):
        model.generate(idx, 2, temperature=float("nan"))
    with pytest.raises(ValueError, match="top_k"):
        model.generate(idx, 2, top_k=0)
    with pytest.raises(ValueError, match="idx_t"):
        model.step(idx)
    _, cache = model.step(idx[:, 0])
    with pytest.raises(ValueError, match="batch size 1"):
        model.step(idx[:1, 0], cache)
    for bad in ({"d_model": 30, "n_head": 4}, {"arch": "rnn"}, {"tau_astro": (5.0, 1.0)},
                {"astrocyte": False, "neuron_path": False}, {"threshold": -1.0},
                {"n_layer": 0}, {"rotary_fraction": 1.5}, {"rotary_fraction": "all"}):
        with pytest.raises(ValueError):
            AMSNetConfig(**bad)
    with pytest.raises(ValueError, match="arch='amsnet'"):
        AMSNet(AMSNetConfig(arch="transformer"))
    for bad, match in (({"d_key": -2}, "non-negative"), ({"d_key": 2.0}, "non-negative"),
                       ({"d_key": 7}, "even"),
                       ({"d_key": 16, "arch": "transformer"}, "d_key=16: AM-SNet"),
                       ({"ffn_hidden": -1}, "non-negative"), ({"ffn_hidden": 8.5}, "non-negative"),
                       ({"ffn_hidden": 64, "arch": "transformer"}, "ffn_hidden=64: AM-SNet")):
        with pytest.raises(ValueError, match=match):
            AMSNetConfig(**bad)


def test_transformer_rejects_amsnet_options_and_its_twin_drops_them():
    # an option the Transformer does not read is an error, not silently ignored
    for opts in ({"conv_size": 4}, {"sensing": "relu"}, {"retention": "gated"},
                 {"astro_gain": 1.0}, {"tau_astro": (256, 4096)}, {"spiking": False}):
        name = next(iter(opts))
        with pytest.raises(ValueError, match=f"{name}=.*AM-SNet option.*transformer_twin"):
            AMSNetConfig(arch="transformer", **opts)
    am = AMSNetConfig(**{**SMALL, "conv_size": 4, "sensing": "relu", "d_key": 24,
                         "tau_astro": (256, 4096), "astro_gain": 1.0, "rotary_base": 500.0,
                         "init_std": "width"})
    tf = transformer_twin(am)
    plain = AMSNetConfig(**{**SMALL, "arch": "transformer", "rotary_base": 500.0,
                            "init_std": "width"})
    assert tf == plain and am.conv_size == 4           # the shape, base and init are kept
    torch.manual_seed(0)
    a = build_model(tf)
    torch.manual_seed(0)
    b = build_model(plain)
    idx = torch.randint(0, 256, (2, 20))
    assert torch.equal(a(idx)[0], b(idx)[0])


def test_ffn_hidden_sets_the_channel_mixing_width():
    model = _model({"ffn_hidden": 40}, torch.float32)
    b = model.blocks[0]
    assert (b.w_1.out_features, b.lif.spec.n_neurons, b.w_2.in_features) == (40, 40, 40)
    assert model.init_cache(3).u_ffn[0].shape == (3, 40)
    assert AMSNetConfig(**SMALL).ffn_size == 4 * 32                # 0: ffn_mult * d_model
    assert model.spike_record(torch.randint(0, 256, (1, 5)), "ffn")[0].shape == (1, 5, 40)


@pytest.mark.parametrize("d, heads, d_key", [(32, 2, 0), (64, 1, 0), (32, 2, 24)])
def test_equal_params_ablation_matches_the_amsnet(d, heads, d_key):
    """The astrocyte-off ablation given the K, V, Q weights back as channel-mixing
    neurons: within one neuron's weights of the AM-SNet's count; 5.5 d neurons with the
    default key size (13 d^2 weights a layer either way, less one neuron's LIF terms)."""
    from astro_neuron.lm.model import equal_params_ablation
    cfg = AMSNetConfig(**{**SMALL, "d_model": d, "n_head": heads, "d_key": d_key})
    eq = equal_params_ablation(cfg)
    assert not eq.astrocyte and eq.ffn_hidden > cfg.ffn_size
    am, off = build_model(cfg).num_params(), build_model(eq).num_params()
    per_neuron = build_model(AMSNetConfig(**{**eq.to_dict(), "ffn_hidden": eq.ffn_hidden + 1})
                             ).num_params() - off
    assert abs(am - off) <= per_neuron / 2
    if not d_key:
        assert abs(eq.ffn_hidden - 5.5 * d) <= 1
    for bad in ({"astrocyte": False}, {"arch": "transformer"}):
        with pytest.raises(ValueError, match="astrocyte on"):
            equal_params_ablation(AMSNetConfig(**{**SMALL, **bad}))


def test_d_key_sets_the_astrocyte_key_size_and_state():
    model = _model({"d_key": 24}, torch.float32)
    amsu = model.blocks[0].amsu
    assert (amsu.spec.d_key, amsu.spec.d_value) == (24, 16)      # d_model 32 / 2 heads
    assert model.init_cache(3).H[0].shape == (3, 2, 24, 16)
    assert AMSNetConfig(**SMALL).key_size == 16                   # 0: the head size


# ------------------------------------------------- edges: no silent NaN, T = 0

def test_block_runs_the_unit_with_the_rms_readout():
    """The block's AM-SU is the one unit with readout_norm="rms" (cfg.astro_norm)."""
    model = _model({})
    assert all(b.amsu.spec.readout_norm == "rms" for b in model.blocks)
    assert all(b.amsu.spec.readout_norm == "none" for b in _model({"astro_norm": False}).blocks)


@pytest.mark.parametrize("name", ["amsnet", "transformer"])
def test_nan_weight_is_named_in_forward_and_step(name):
    model = _model(VARIANTS[name])
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    sd["wte.weight"][7] = float("nan")
    model.load_state_dict(sd)
    idx = torch.full((1, 5), 7)
    with pytest.raises(NonFiniteError, match="parameter 'wte.weight'"):
        model(idx)
    with pytest.raises(NonFiniteError, match="parameter 'wte.weight'"):
        model.step(idx[:, 0])
    with pytest.raises(NonFiniteError, match="parameter 'wte.weight'"):
        model.generate(idx, 3)
    with an.validation(check_finite=False):
        model(idx)


@pytest.mark.parametrize("mode", ["chunked", "recurrent", "loop"])
def test_empty_sequence_gives_empty_logits(mode):
    model = _model({})
    logits, loss = model(torch.zeros(2, 0, dtype=torch.long), mode=mode)
    assert logits.shape == (2, 0, 256) and loss is None
    with pytest.raises(ValueError, match="T = 0"):
        model(torch.zeros(2, 0, dtype=torch.long), torch.zeros(2, 0, dtype=torch.long))


@pytest.mark.parametrize("arch", ["amsnet", "transformer"])
def test_init_std_width_is_one_over_sqrt_d_model(arch):
    """``init_std="width"`` resolves to 1/sqrt(d_model) when the config is made, and the
    embedding is drawn with it (the memory tables' Transformer, docs/memory.md)."""
    cfg = AMSNetConfig(vocab_size=256, block_size=16, n_layer=1, n_head=2, d_model=64,
                       arch=arch, init_std="width")
    assert cfg.init_std == pytest.approx(0.125)
    torch.manual_seed(0)
    std = build_model(cfg).wte.weight.std().item()
    assert 0.12 < std < 0.13
    with pytest.raises(ValueError, match="init_std"):
        AMSNetConfig(vocab_size=256, block_size=16, n_layer=1, n_head=2, d_model=64,
                     init_std="wide")


def test_transformer_checkpoint_with_amsnet_options_still_loads(tmp_path):
    """A Transformer saved while AM-SNet options were accepted and unused (before
    2026-12-04) loads with them at their defaults, computing the same logits."""
    from astro_neuron.io import load_checkpoint, save_checkpoint
    from astro_neuron.lm.train import LM_KIND, load_model, save_lm_checkpoint

    torch.manual_seed(0)
    model = build_model(AMSNetConfig(**{**SMALL, "arch": "transformer"}))
    save_lm_checkpoint(tmp_path / "new.safetensors", model)
    meta, tensors = load_checkpoint(tmp_path / "new.safetensors", LM_KIND)
    meta["config"].update(astro_gain=1.0, conv_size=4, sensing="relu")    # as saved then
    save_checkpoint(tmp_path / "old.safetensors", LM_KIND, meta, tensors)
    with pytest.raises(ValueError, match="astro_gain=1.0"):
        AMSNetConfig(**{**meta["config"], "tau_astro": (10.0, 1000.0)})
    loaded, _ = load_model(tmp_path / "old.safetensors")
    assert loaded.config == model.config
    idx = torch.randint(0, 256, (2, 20))
    assert torch.equal(loaded(idx)[0], model(idx)[0])
