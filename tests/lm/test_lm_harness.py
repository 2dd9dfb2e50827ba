"""The lm-evaluation-harness adapter: what the harness scores equals what the model
computes directly (log-likelihoods, acc, acc_norm), for AM-SNet and the Transformer,
on the built-in PIQA- and SciQ-format tasks, offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from astro_neuron.lm import AMSNetConfig, build_model
from astro_neuron.lm.data import encode
from astro_neuron.lm.harness import (
    BUILTIN_TASKS, TASK_DIR, AstroNeuronLM, builtin_task, evaluate, expand_cache, local_task,
)
from astro_neuron.lm.train import save_lm_checkpoint

ROOT = Path(__file__).resolve().parents[2]
SMALL = dict(n_layer=2, d_model=32, n_head=2, block_size=48, chunk_size=16)
ARCHS = [{"synapse_init": 1.0, "astro_gain": 1.0}, {"arch": "transformer"}]


def _model(opts, seed=1):
    torch.manual_seed(seed)
    return build_model(AMSNetConfig(**{**SMALL, **opts})).to(torch.float64).eval()


def _direct_ll(model, context: str, continuation: str) -> float:
    """log p(continuation | context) from one parallel forward pass."""
    ctx, cont = encode(context), encode(continuation)
    idx = torch.cat([ctx, cont])[None]
    with torch.no_grad():
        logits, _ = model(idx)
    lp = F.log_softmax(logits[0].double(), -1)
    pos = torch.arange(len(ctx) - 1, idx.shape[1] - 1)
    return float(lp[pos, idx[0, pos + 1]].sum())


def _prompt(task: str, doc: dict) -> tuple[str, list[str], int]:
    """The official prompts, written out again (lm_eval's piqa.yaml / sciq.yaml)."""
    if "piqa" in task:
        return f"Question: {doc['goal']}\nAnswer:", [doc["sol1"], doc["sol2"]], doc["label"]
    return (f"{doc['support'].lstrip()}\nQuestion: {doc['question']}\nAnswer:",
            [doc["distractor1"], doc["distractor2"], doc["distractor3"],
             doc["correct_answer"]], 3)


@pytest.mark.parametrize("opts", ARCHS, ids=["amsnet", "transformer"])
def test_harness_scores_equal_direct_loglikelihoods(opts):
    model = _model(opts)
    lm = AstroNeuronLM(model=model, batch_size=3)       # SciQ's 4 choices in 2 batches
    res = evaluate(lm, list(BUILTIN_TASKS), limit=8, log_samples=True)
    assert set(res["results"]) == set(BUILTIN_TASKS)
    for task, samples in res["samples"].items():
        assert len(samples) == 8
        acc, acc_norm = [], []
        for s in samples:
            context, choices, gold = _prompt(task, s["doc"])
            got = [r[0] for r in s["filtered_resps"]]
            want = [_direct_ll(model, context, " " + c) for c in choices]
            assert got == pytest.approx(want, rel=1e-9, abs=1e-9)
            acc.append(float(max(range(len(want)), key=want.__getitem__) == gold))
            normed = [w / len(c) for w, c in zip(want, choices)]   # the choice, no space
            acc_norm.append(float(max(range(len(want)), key=normed.__getitem__) == gold))
        r = res["results"][task]
        assert r["acc,none"] == pytest.approx(sum(acc) / len(acc), abs=1e-12)
        assert r["acc_norm,none"] == pytest.approx(sum(acc_norm) / len(acc_norm), abs=1e-12)


@pytest.mark.parametrize("opts", ARCHS, ids=["amsnet", "transformer"])
def test_rolling_greedy_flag_and_generation_match_the_model(opts, monkeypatch):
    from lm_eval.api.instance import Instance

    model = _model(opts)
    lm = AstroNeuronLM(model=model, prefill_length=7, progress=False)  # prefill, then steps
    text = "def f(x):\n    return x + 1\n"
    req = Instance("loglikelihood_rolling", {}, (text,), 0)
    (rolled,) = lm.loglikelihood_rolling([req])
    assert rolled == pytest.approx(_direct_ll(model, "\n", text), rel=1e-9, abs=1e-9)
    # is_greedy: true exactly when every continuation byte is the argmax (a context
    # without trailing whitespace: the harness moves that into the continuation)
    ctx = "import os"
    greedy = model.generate(encode(ctx)[None], 5, temperature=0)[0, -5:].tolist()
    cont = bytes(greedy).decode("latin-1")       # byte b -> character b (b < 128: ASCII)
    other = "zzzzz" if cont != "zzzzz" else "yyyyy"
    out = lm.loglikelihood([Instance("loglikelihood", {}, (ctx, c), i)
                            for i, c in enumerate([cont, other])])
    assert out[1][1] is False
    assert out[1][0] == pytest.approx(_direct_ll(model, ctx, other), rel=1e-9, abs=1e-9)
    if max(greedy) < 128:                        # the greedy bytes are text on their own
        assert out[0][1] is True
    # generation: greedy bytes of the model, cut at the stop string
    gen = Instance("generate_until", {}, (ctx, {"until": ["\n\n"], "max_gen_toks": 12}), 0)
    (got,) = lm.generate_until([gen])
    want = model.generate(encode(ctx)[None], 12, temperature=0)[0, len(ctx):]
    assert got == bytes(want.tolist()).decode("utf-8", errors="replace").split("\n\n")[0]


def test_expand_cache_copies_each_state_for_every_choice():
    model = _model(ARCHS[0])
    _, cache = model.prefill(encode("abc")[None])
    big = expand_cache(cache, 3)
    assert big.batch_size == 3 and big.t == cache.t
    for a, b in zip(big.H, cache.H):
        assert torch.equal(a, b.expand_as(a))
        assert a.data_ptr() != b.data_ptr()
    model.step(torch.tensor([1, 2, 3]), big)      # advancing the copies leaves the original
    _, again = model.prefill(encode("abc")[None])
    for a, b in zip(cache.u, again.u):
        assert torch.equal(a, b)


def test_local_task_uses_the_official_prompts_and_a_local_file(tmp_path):
    import yaml

    official = Path(__import__("lm_eval").__file__).parent / "tasks"
    for fmt in ("piqa", "sciq"):
        ours = local_task(fmt, TASK_DIR / f"stdlib_{fmt}.jsonl")
        theirs = yaml.safe_load((official / fmt / f"{fmt}.yaml").read_text())
        for key in ("output_type", "doc_to_text", "doc_to_target", "doc_to_choice",
                    "metric_list"):
            assert ours[key] == theirs[key], (fmt, key)
        assert ours["dataset_path"] == "json"
        assert Path(ours["dataset_kwargs"]["data_files"]["validation"]).is_absolute()
    with pytest.raises(FileNotFoundError, match="not found"):
        local_task("piqa", tmp_path / "missing.jsonl")
    with pytest.raises(ValueError, match="format"):
        local_task("hellaswag", TASK_DIR / "stdlib_piqa.jsonl")
    for name in BUILTIN_TASKS:
        rows = [json.loads(line) for line in open(builtin_task(name)["dataset_kwargs"]
                                                  ["data_files"]["validation"])]
        assert len(rows) >= 30


def test_bad_model_args_are_clear_errors():
    with pytest.raises(ValueError, match="exactly one of checkpoint"):
        AstroNeuronLM()
    with pytest.raises(ValueError, match="unknown model_args"):
        AstroNeuronLM(model=_model(ARCHS[1]), pretrained="gpt2")
    with pytest.raises(TypeError, match="AMSNet or Transformer"):
        AstroNeuronLM(model=torch.nn.Linear(2, 2))


@pytest.mark.slow
def test_lm_eval_command_runs_offline_on_a_checkpoint(tmp_path):
    """`astro-neuron lm-eval --model astro-neuron ...`: lm_eval's own command line, with
    the hub switched off; a local PIQA-format copy in the current directory too. Slow
    (about 20 s, 40 s on a busy machine): lm_eval's command line indexes its 14,000
    task files before anything else."""
    ckpt = save_lm_checkpoint(tmp_path / "m.safetensors", _model(ARCHS[1]).float())
    (tmp_path / "piqa_local.jsonl").write_text(
        (TASK_DIR / "stdlib_piqa.jsonl").read_text().splitlines()[0] + "\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_DATASETS_OFFLINE": "1",
           "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "HF_HOME": str(tmp_path / "hf")}
    out = subprocess.run(
        [sys.executable, "-m", "astro_neuron", "lm-eval", "--model", "astro-neuron",
         "--model_args", f"checkpoint={ckpt},progress=false", "--tasks",
         "stdlib_sciq,piqa_local", "--limit", "4", "--output_path", str(tmp_path / "res")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "stdlib_sciq" in out.stdout and "piqa_local" in out.stdout
    files = list((tmp_path / "res").rglob("results_*.json"))
    assert len(files) == 1
    res = json.loads(files[0].read_text())["results"]
    assert res["piqa_local"]["acc,none"] in (0.0, 1.0)
