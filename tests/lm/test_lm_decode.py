"""The decode step: eager and ``torch.compile`` forms agree with the parallel logits.

The compiled form is an opt-in of ``step`` / ``decode`` / ``generate``
(``compile=True``); it compiles once per process and shape, so these tests use one
tiny model per architecture.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import torch

from astro_neuron.lm import AMSNetConfig, build_model
from astro_neuron.lm.base import RotaryTable, compile_step
from astro_neuron.lm.base import rms as _rms

SMALL = dict(n_layer=2, d_model=32, n_head=2, block_size=48, chunk_size=16)


def _model(opts, dtype=torch.float64):
    torch.manual_seed(1)
    return build_model(AMSNetConfig(**{**SMALL, **opts})).to(dtype).eval()


def _stepped(model, idx, compile, start=0, cache=None):
    out = []
    for t in range(start, idx.shape[1]):
        logits, cache = model.step(idx[:, t], cache, compile=compile)
        out.append(logits)
    return torch.stack(out, 1), cache


def _state(cache):
    if hasattr(cache, "H"):
        return [x for lst in (cache.u, cache.H, cache.u_ffn) for x in lst if x is not None]
    return [x[:, :, :cache.t] for lst in (cache.k, cache.v) for x in lst]


def test_rms_equals_torch_rms_norm():
    x = torch.randn(3, 5, 16, dtype=torch.float64)
    eps = torch.tensor(1e-5, dtype=torch.float64)
    torch.testing.assert_close(_rms(x, eps, 1 / 16), torch.nn.functional.rms_norm(x, (16,),
                                                                                 eps=1e-5),
                               rtol=1e-14, atol=0)


@pytest.mark.parametrize("opts", [{"synapse_init": 1.0, "astro_gain": 1.0},
                                  {"arch": "transformer"}],
                         ids=["amsnet", "transformer"])
def test_compiled_step_equals_eager_step_and_parallel_logits(opts, monkeypatch, request):
    # Run in a fresh process: in the full suite (2026-12-03) this test failed inside a
    # compiled kernel (an index bound of 256) after some earlier test, and passed alone
    # and after every file tried; see docs/notes.md.
    if os.environ.get("AN_DECODE_ISOLATED") != "1":
        env = dict(os.environ, AN_DECODE_ISOLATED="1")
        r = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                            f"{__file__}::{request.node.name}"], env=env,
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
        return
    monkeypatch.setattr(RotaryTable, "BLOCK", 16)            # rotary rows cross blocks
    model = _model(opts)
    idx = torch.randint(0, 256, (1, 40))          # batch 1: one compiled graph
    logits, _ = model(idx)
    eager, c_eager = _stepped(model, idx, False)
    comp, c_comp = _stepped(model, idx, True)
    torch.testing.assert_close(comp, eager, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(comp, logits, rtol=1e-9, atol=1e-9)
    for a, b in zip(_state(c_comp), _state(c_eager)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # the model fires: the test compares spiking, not silent, layers
    if opts.get("arch") != "transformer":
        rec: list = []
        with torch.inference_mode():
            model._step(idx[:, 0], c_eager, model._decode_tensors(), record=rec)
        assert 0 < float(torch.stack([s.mean() for s in rec]).mean()) < 1
    # prompt read in parallel, then stepped; greedy generate agrees with eager
    _, cache = model.prefill(idx[:, :21])
    torch.testing.assert_close(_stepped(model, idx, True, 21, cache)[0], logits[:, 21:],
                               rtol=1e-9, atol=1e-9)
    prompt = idx[:, :5]
    assert torch.equal(model.generate(prompt, 30, temperature=0, compile=True),
                       model.generate(prompt, 30, temperature=0))


def test_compile_flag_must_be_bool():
    model = _model({})
    with pytest.raises(TypeError, match="compile"):
        model.generate(torch.zeros(1, 2, dtype=torch.long), 2, compile="yes")
    with pytest.raises(TypeError, match="compile"):
        model.step(torch.zeros(1, dtype=torch.long), compile=1)


def test_bench_targets_judge_one_run():
    from astro_neuron.apps.bench.lm import _targets

    def row(L, am, tf, peak_am, peak_tf, state=0.27):
        return {"context": L, "amsnet_ms": am, "transformer_ms": tf, "speedup": tf / am,
                "amsnet_state_mb": state, "amsnet_peak_mb": peak_am,
                "transformer_peak_mb": peak_tf}
    met = _targets([row(512, 1, 1.5, 270, 268), row(2048, 1, 2.5, 271, 280),
                    row(16384, 1, 9, 270, 390)])
    assert "2x faster at 2048, eager: 2.50x met" in met and "8x faster at 16384, eager: 9.00x met" \
        in met and "memory flat in context" in met and "MISSED" not in met
    missed = _targets([row(2048, 1, 1.5, 270, 280), row(16384, 1, 7, 330, 390, state=0.3)])
    assert missed.count("MISSED") == 3


def test_compile_failure_is_one_clear_error():
    def branchy(x):                           # data-dependent branch: no full graph
        return x + 1 if bool(x.sum() > 0) else x - 1

    with pytest.raises(RuntimeError, match="use compile=False"):
        compile_step(branchy)(torch.ones(3))


@pytest.mark.parametrize("opts", [
    {"conv_size": 3, "astro_gain": 1.0, "synapse_init": 1.0},
    {"retention": "gated", "astro_gain": 1.0},
    {"retention": "selective", "conv_size": 2, "tau_astro": "retnet"},
    {"sensing": "relu", "astro_gain": 1.0, "rotary_fraction": 0.5},
    {"sensing": "relu", "conv_size": 3, "retention": "gated", "astro_gain": 1.0},
    {"sensing": "relu", "conv_size": 4, "astro_gain": 1.0, "d_key": 40, "retention": "gated"},
    {"sensing": "relu2", "conv_size": 4, "astro_gain": 1.0, "d_key": 40, "rotary_fraction": 0.5},
    {"sensing": "relu-key", "conv_size": 2, "astro_gain": 1.0, "rotary_fraction": 0.5},
], ids=["conv", "gated", "selective+conv+retnet", "relu", "relu+conv+gated",
        "wide keys+relu+conv+gated", "wide keys+relu2+conv+rotary", "relu-key+conv+rotary"])
def test_memory_options_step_equals_parallel_and_prefill(opts):
    """The unit's memory options in the language model: the eager decode step (delay
    line and gate in the cache) reproduces the parallel logits, from the start and
    after a chunked prefill; every form of the model agrees."""
    model = _model(opts)
    idx = torch.randint(0, 256, (2, 30))
    logits, _ = model(idx)
    for mode in ("recurrent", "loop"):
        torch.testing.assert_close(model(idx, mode=mode)[0], logits, rtol=1e-9, atol=1e-9)
    eager, cache = _stepped(model, idx, False)
    torch.testing.assert_close(eager, logits, rtol=1e-9, atol=1e-9)
    if opts.get("conv_size", 1) > 1:
        assert all(c is not None and c.shape[1] == opts["conv_size"] - 1 for c in cache.conv)
    pre, cache = model.prefill(idx[:, :17])
    torch.testing.assert_close(pre, logits[:, :17], rtol=1e-9, atol=1e-9)
    rest, _ = _stepped(model, idx, False, start=17, cache=cache)
    torch.testing.assert_close(rest, logits[:, 17:], rtol=1e-9, atol=1e-9)
    cfg = AMSNetConfig(**{**SMALL, **opts})
    assert AMSNetConfig(**cfg.to_dict()) == cfg                  # checkpoint round trip


def test_memory_options_config_errors():
    with pytest.raises(ValueError, match="retention"):
        AMSNetConfig(retention="forget")
    with pytest.raises(ValueError, match="tau_astro"):
        AMSNetConfig(tau_astro="mamba")
    with pytest.raises(ValueError, match="conv_size"):
        AMSNetConfig(conv_size=0)
    with pytest.raises(ValueError, match="sensing"):
        AMSNetConfig(sensing="elu")
