"""The language-model stage of ``astro-neuron demo`` (called by :mod:`astro_neuron.apps.demo`).

Trains a tiny AM-SNet on the built-in corpus (the Python standard library), prints
validation bits per byte and a sample, saves the checkpoint, and returns a summary.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from astro_neuron.lm.data import decode, encode, stdlib_corpus
from astro_neuron.lm.train import load_model, load_run_config, train

__all__ = ["demo_stage", "DEMO_OVERRIDES", "QUICK_OVERRIDES"]

# a fixed 1000 steps (2M tokens; no time budget, so the result does not depend on machine
# load), then evaluation and a sample (see docs/lm.md)
DEMO_OVERRIDES = ["model.d_model=96", "model.n_head=2", "model.n_layer=2",
                  "model.block_size=128", "train.batch_size=16", "train.max_steps=1000",
                  "train.warmup_steps=50", "train.eval_interval=250",
                  "train.eval_tokens=32768", "train.ckpt_interval=250", "train.device='cpu'"]
QUICK_OVERRIDES = ["model.d_model=32", "model.n_head=2", "model.n_layer=1",
                   "model.block_size=32", "train.batch_size=4", "train.max_steps=6",
                   "train.warmup_steps=2", "train.eval_interval=6", "train.eval_tokens=256",
                   "train.ckpt_interval=6", "train.device='cpu'"]


def demo_stage(out_dir: Path, quick: bool = False, progress: bool = True,
               prompt: str = "def ", seed: int = 0) -> dict:
    """Train a tiny AM-SNet, print val bits/byte and a sample; checkpoint in ``out_dir``.

    Returns ``{"val_bpb", "sample", "checkpoint", "train_s", "tokens", "tokens_per_s",
    "params", "firing_rate", "corpus"}``. ``quick``: a few steps (seconds, for tests).
    The checkpoint is ``out_dir/lm_amsnet.pt``; rebuild the model with
    :func:`astro_neuron.lm.train.load_model`, record spikes with
    :meth:`AMSNet.spike_record`.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    work = out / "lm_run"
    over = (QUICK_OVERRIDES if quick else DEMO_OVERRIDES) + [
        f"train.out_dir='{work.as_posix()}'", f"train.seed={seed}"]
    run = load_run_config("tiny", over)
    corpus = stdlib_corpus()
    print(f"  {corpus.describe()}")
    t0 = time.perf_counter()
    s = train(run, progress=progress, corpus=corpus)
    train_s = time.perf_counter() - t0
    ckpt = out / "lm_amsnet.pt"
    (work / "ckpt.pt").replace(ckpt)

    model, _ = load_model(ckpt)
    model.eval()
    g = torch.Generator().manual_seed(seed)
    n_new = 40 if quick else 200
    text = decode(model.generate(encode(prompt)[None], n_new, temperature=0.8, top_k=20,
                                 generator=g)[0])
    probe = corpus.val[: run.model.block_size].long()[None]
    rates = [float((r != 0).float().mean()) for r in model.spike_record(probe)]
    print(f"  AM-SNet ({s['params']:,} parameters, {s['tokens']:,} tokens, "
          f"{s['tokens_per_s']:,.0f} tokens/s): validation {s['final_val_bpb']:.3f} bits/byte")
    print(f"  AM-SU firing rate per layer: {', '.join(f'{r:.2f}' for r in rates)}")
    print("  sample:\n" + "\n".join("    | " + line for line in text.splitlines()))
    return {"val_bpb": s["final_val_bpb"], "sample": text, "checkpoint": str(ckpt),
            "train_s": round(train_s, 1), "tokens": s["tokens"],
            "tokens_per_s": s["tokens_per_s"], "params": s["params"], "firing_rate": rates,
            "corpus": corpus.info}
