"""``finetune``: it lowers the assistant-token loss on held-out questions, resumes
exactly after SIGTERM, writes a merged checkpoint equal to base + adapter."""

import os
import signal

import pytest
import torch

from astro_neuron.lm import AMSNetConfig, build_model
from astro_neuron.lm.chat import save_jsonl
from astro_neuron.lm.finetune import FinetuneConfig, assistant_loss, finetune, load_finetuned
from astro_neuron.lm.lora import load_adapter
from astro_neuron.lm.train import TrainingStopped, load_lm_checkpoint, save_lm_checkpoint

WORDS = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta"]


def _qa(names):
    return [[{"role": "user", "content": f"What does `mod.{n}` do?"},
             {"role": "assistant", "content": f"Return the {n} of the input."}] for n in names]


TRAIN = _qa([f"{a}{b}" for a in WORDS for b in WORDS[:4]])
HELD = _qa([f"{a}x" for a in WORDS])


@pytest.fixture
def base(tmp_path):
    torch.manual_seed(0)
    # embeddings (= head) of a trained model's scale, not the tiny initial 0.02: adapters
    # on the blocks of a random base can then move the logits within a few steps
    m = build_model(AMSNetConfig(d_model=32, n_head=2, n_layer=1, block_size=64, init_std=0.3))
    return save_lm_checkpoint(tmp_path / "base.safetensors", m)


def _cfg(base, out, **kw):
    kw = {"max_steps": 30, "batch_size": 8, "max_len": 64, "lr": 2e-2, "min_lr": 1e-3,
          "warmup_steps": 5, "eval_interval": 30, "ckpt_interval": 30, "rank": 4, **kw}
    return FinetuneConfig(base=str(base), out_dir=str(out), **kw)


def test_finetuning_lowers_the_held_out_assistant_loss(base, tmp_path):
    s = finetune(_cfg(base, tmp_path / "ft"), progress=False, train_data=TRAIN, heldout=HELD)
    # measured 7.7 -> 4.2 nats: the answers' template is learned within 30 steps
    assert s["heldout_loss_before"] > 5.5
    assert s["heldout_loss_after"] < min(5.0, s["heldout_loss_before"] - 1.5)
    model, _ = load_finetuned(base, tmp_path / "ft")
    assert abs(assistant_loss(model, HELD, 64) - s["heldout_loss_after"]) < 1e-4
    base_model, _ = load_lm_checkpoint(base)
    assert abs(assistant_loss(base_model, HELD, 64) - s["heldout_loss_before"]) < 1e-4


def test_sigterm_then_resume_equals_an_uninterrupted_run(base, tmp_path):
    cfg = _cfg(base, tmp_path / "a", max_steps=8, ckpt_interval=3, eval_interval=4)
    full = finetune(cfg, progress=False, train_data=TRAIN, heldout=HELD[:2])

    def stop_at_5(info):
        if info["step"] == 5:
            os.kill(os.getpid(), signal.SIGTERM)
    cfg_b = _cfg(base, tmp_path / "b", max_steps=8, ckpt_interval=3, eval_interval=4)
    with pytest.raises(TrainingStopped):
        finetune(cfg_b, progress=False, train_data=TRAIN, heldout=HELD[:2], callback=stop_at_5)
    meta, _ = load_adapter(tmp_path / "b" / "ckpt.safetensors")
    assert meta["step"] == 5
    resumed = finetune(cfg_b, resume=True, progress=False, train_data=TRAIN, heldout=HELD[:2])
    assert resumed["losses"] == full["losses"]
    assert resumed["evals"] == full["evals"]
    _, ta = load_adapter(tmp_path / "a")
    _, tb = load_adapter(tmp_path / "b")
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    with pytest.raises(ValueError, match="rank"):
        finetune(_cfg(base, tmp_path / "b", max_steps=8, rank=2), resume=True, progress=False,
                 train_data=TRAIN, heldout=HELD[:2])


def test_merged_checkpoint_equals_base_plus_adapter(base, tmp_path):
    data = save_jsonl(TRAIN, tmp_path / "train.jsonl")
    cfg = _cfg(base, tmp_path / "ft", max_steps=3, data=str(data), heldout="")
    s = finetune(cfg, progress=False, merged=True)
    assert s["heldout_loss_before"] is None and s["merged"]
    merged, _ = load_lm_checkpoint(s["merged"])
    tuned, _ = load_finetuned(base, tmp_path / "ft")
    plain, _ = load_lm_checkpoint(base)
    x = torch.randint(0, 256, (2, 30))
    assert torch.allclose(merged(x)[0], tuned(x)[0], atol=1e-6, rtol=1e-6)
    assert not torch.allclose(plain(x)[0], tuned(x)[0], atol=1e-6)


def test_bad_settings(base, tmp_path):
    with pytest.raises(ValueError, match="base"):
        FinetuneConfig(base="")
    with pytest.raises(ValueError, match="min_lr"):
        _cfg(base, tmp_path, lr=1e-3, min_lr=1e-2)
    with pytest.raises(FileNotFoundError, match="to resume"):
        finetune(_cfg(base, tmp_path / "none"), resume=True, progress=False, train_data=TRAIN,
                 heldout=[])


def test_time_budget_stops_evaluates_and_saves(base, tmp_path):
    """The time budget (train's end_of_step, shared): the first step already spends 1e-9 s,
    so the run stops after it, evaluates that step (with held-out data) and saves it."""
    s = finetune(_cfg(base, tmp_path / "ft", max_steps=50, max_time_s=1e-9), progress=False,
                 train_data=TRAIN, heldout=HELD[:2])
    assert s["steps"] == 1 and [e["step"] for e in s["evals"]] == [1]
    assert load_adapter(tmp_path / "ft" / "ckpt.safetensors")[0]["step"] == 1
    s = finetune(_cfg(base, tmp_path / "none", max_steps=50, max_time_s=1e-9), progress=False,
                 train_data=TRAIN, heldout=[])
    assert s["steps"] == 1 and s["evals"] == []
