"""``bench generate --serving``: the independent minimal GPT against its full-sequence
reference, and the serving table."""

import pytest
import torch

from astro_neuron.apps.bench.lm import MiniGPT, bench_serve
from astro_neuron.apps.cli import main


@pytest.fixture(autouse=True)
def _small_corpus(monkeypatch):
    """Prompts from random bytes instead of the built-in corpus (reading it takes ~5 s)."""
    import astro_neuron.apps.bench.lm as bl
    from astro_neuron.lm.data import Corpus
    t = torch.randint(0, 256, (70000,), generator=torch.Generator().manual_seed(0))
    t = t.to(torch.uint8)
    monkeypatch.setattr(bl, "stdlib_corpus", lambda: Corpus("stdlib", t, t, t))


pytestmark = pytest.mark.usefixtures("one_thread")


def test_minigpt_cached_steps_equal_the_full_causal_forward():
    torch.manual_seed(0)
    g = MiniGPT(32, 2, 4, max_len=40).eval()
    x = torch.randint(0, 256, (3, 20))
    with torch.no_grad():
        ref = g(x)
    cache = g.new_cache(3, 40)
    steps = torch.stack([g.step(x[:, t], cache, t) for t in range(20)], 1)
    assert torch.allclose(steps, ref, atol=1e-5, rtol=1e-4)
    # decode is greedy stepping
    out = g.decode(x[:, 0], g.new_cache(3, 40), 0, 5)
    c2, tok, want = g.new_cache(3, 40), x[:, 0], []
    for t in range(5):
        tok = g.step(tok, c2, t).argmax(-1)
        want.append(tok)
    assert torch.equal(out, torch.stack(want, 1))


def test_bench_serve_rows_and_targets(capsys):
    rows = bench_serve(batches=(1, 2), contexts=(16,), threads=(1,), d_model=16, n_layer=1,
                       n_head=2, tokens=2, repeats=1)
    assert [(r["batch"], r["context"], r["threads"]) for r in rows] == [(1, 16, 1), (2, 16, 1)]
    for r in rows:
        assert r["vs_tf"] == pytest.approx(r["am_tok_s"] / r["tf_tok_s"])
        assert r["vs_gpt"] == pytest.approx(r["am_tok_s"] / r["gpt_tok_s"])
        assert r["tf_state_mb"] > 0 and r["am_state_mb"] > 0
    out = capsys.readouterr().out
    assert "AM/GPT" in out and "targets" in out and "2k, batch 1: not measured" in out


def test_bench_generate_serving_cli(capsys):
    assert main(["bench", "generate", "--serving", "--quick", "--contexts", "8",
                 "--d-model", "16", "--n-layer", "1", "--n-head", "2", "--tokens", "2",
                 "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "MiniGPT" in out and "spread" in out


def test_timing_rounds_interleave_the_models_and_keep_every_round():
    from astro_neuron.apps.bench.lm import _interleaved, _spread
    calls = []
    res = _interleaved(["a", "b"], 3, lambda n: calls.append(n) or (n, len(calls)))
    assert calls == ["a", "b"] * 3
    assert res == {"a": [("a", 1), ("a", 3), ("a", 5)], "b": [("b", 2), ("b", 4), ("b", 6)]}
    assert _spread([1.0, 4.0, 2.0]) == 1.5


def test_bench_generate_rows(capsys):
    from astro_neuron.apps.bench.lm import bench_generate
    rows = bench_generate(contexts=(8, 12), d_model=16, n_layer=1, n_head=2, tokens=2,
                          repeats=2, rss=False)
    assert [r["context"] for r in rows] == [8, 12]
    for r in rows:
        assert r["speedup"] == pytest.approx(r["transformer_ms"] / r["amsnet_ms"])
        assert r["amsnet_ms"] > 0 and 0 <= r["amsnet_firing_rate"] <= 1
        assert r["transformer_cache_mb"] > 0 and r["amsnet_state_mb"] > 0
    assert "targets" in capsys.readouterr().out
