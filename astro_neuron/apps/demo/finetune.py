"""The dialogue fine-tuning stage of ``astro-neuron demo`` (after the ``lm`` stage).

A short LoRA run (:func:`astro_neuron.lm.finetune.finetune`) on the built-in
question/answer turns, from the tiny AM-SNet the ``lm`` stage trained; prints the
held-out assistant-token loss before and after (questions about functions of files
the model never read) and one held-out answer before and after.
"""

from __future__ import annotations

from pathlib import Path

from astro_neuron.lm.chat import ChatSession, builtin_dialogues
from astro_neuron.lm.finetune import FinetuneConfig, finetune, load_finetuned
from astro_neuron.lm.train import LN2, load_lm_checkpoint

__all__ = ["demo_stage", "DEMO_STEPS", "QUICK_STEPS"]

DEMO_STEPS, QUICK_STEPS = 100, 4


def demo_stage(out_dir: Path, base_ckpt: Path, quick: bool = False, progress: bool = True,
               seed: int = 0) -> dict:
    """Fine-tune the ``lm`` stage's model; returns ``{"heldout_bpb_before",
    "heldout_bpb_after", "steps", "question", "answer_before", "answer_after",
    "reference", "adapter"}``."""
    out = Path(out_dir)
    work = out / "lm_finetune"
    train_d = builtin_dialogues("train")
    held = builtin_dialogues("heldout")
    if quick:
        held = held[:16]
    steps = QUICK_STEPS if quick else DEMO_STEPS
    cfg = FinetuneConfig(base=str(base_ckpt), out_dir=str(work), max_steps=steps,
                         batch_size=4 if quick else 16, max_len=192, eval_interval=steps,
                         ckpt_interval=steps, seed=seed, warmup_steps=min(20, steps // 2))
    s = finetune(cfg, progress=progress, train_data=train_d, heldout=held)
    q = held[1]
    base, _ = load_lm_checkpoint(base_ckpt)
    tuned, _ = load_finetuned(base_ckpt, work)
    n = 40 if quick else 120
    a0 = ChatSession(base, max_new_tokens=n).reply(q[0]["content"])
    a1 = ChatSession(tuned, max_new_tokens=n).reply(q[0]["content"])
    before, after = s["heldout_loss_before"] / LN2, s["heldout_loss_after"] / LN2
    print(f"  LoRA rank {cfg.rank} on every projection ({s['trainable_params']:,} trainable "
          f"parameters), {steps} steps on {len(train_d):,} built-in questions, "
          f"{s['train_time_s']:.0f} s")
    print(f"  held-out assistant loss ({len(held)} questions): {before:.3f} -> {after:.3f} "
          "bits/byte")
    print(f"  Q: {q[0]['content']}\n  reference: {q[1]['content']}\n  base:  {a0[:100]!r}\n"
          f"  tuned: {a1[:100]!r}")
    return {"heldout_bpb_before": before, "heldout_bpb_after": after, "steps": steps,
            "question": q[0]["content"], "reference": q[1]["content"],
            "answer_before": a0, "answer_after": a1, "adapter": s["adapter"],
            "train_s": s["train_time_s"]}
