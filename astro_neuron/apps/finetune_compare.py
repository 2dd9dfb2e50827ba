"""``astro-neuron finetune-compare``: dialogue fine-tuning of AM-SNet against the same-size
Transformer, on the built-in question/answer turns (docs/lm.md, "Dialogue fine-tuning").

For each architecture: train a base model on the built-in corpus (the same
:func:`~astro_neuron.lm.train.train`, config, batches and token budget), fine-tune it
with LoRA (:func:`~astro_neuron.lm.finetune.finetune`, same settings), then on the
held-out questions (functions of files the base never read) measure the
assistant-token loss before and after, and what the model answers (greedy, on its
recurrent state): the share of answers that end with the template's blank line, the
share whose first word is the reference's, and a few answers side by side.

Finished pieces (a base whose checkpoint reached its steps, an adapter with its
metrics) are reused, so an interrupted comparison continues where it stopped.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from astro_neuron.lm.chat import ChatSession, builtin_dialogues
from astro_neuron.lm.finetune import FinetuneConfig, assistant_loss, finetune, load_finetuned
from astro_neuron.lm.train import CKPT_NAME, LN2, load_lm_checkpoint, load_run_config, train
from astro_neuron.lm.data import stdlib_corpus
from astro_neuron.validate import positive_int

__all__ = ["finetune_compare", "answer_stats", "BASE_OVERRIDES", "QUICK_BASE_OVERRIDES"]

# the demo's tiny language model (astro_neuron.apps.demo.lm), both architectures
BASE_OVERRIDES = ["model.d_model=96", "model.n_head=2", "model.n_layer=2",
                  "model.block_size=128", "train.batch_size=16", "train.warmup_steps=50",
                  "train.eval_interval=500", "train.eval_tokens=32768",
                  "train.ckpt_interval=250", "train.device='cpu'"]
QUICK_BASE_OVERRIDES = ["model.d_model=32", "model.n_head=2", "model.n_layer=1",
                        "model.block_size=32", "train.batch_size=4", "train.warmup_steps=2",
                        "train.eval_interval=1000", "train.eval_tokens=256",
                        "train.ckpt_interval=1000", "train.device='cpu'"]
ARCHS = (("AM-SNet", "amsnet"), ("Transformer", "transformer"))


def _first_word(s: str) -> str:
    return s.split()[0].strip(".,:;").lower() if s.split() else ""


def answer_stats(model, dialogues, max_new_tokens: int = 160) -> dict:
    """Greedy answers to the first user turn of each conversation, each from a fresh
    state: ``{"answers", "stopped" (share ending at the blank line), "first_word"
    (share whose first word is the reference's)}``."""
    answers, stopped, first = [], 0, 0
    for d in dialogues:
        s = ChatSession(model, max_new_tokens=max_new_tokens)
        a = s.reply(d[0]["content"])
        n_new = s.tokens - len((d[0]["content"]).encode()) - len("User: \nAssistant: ")
        stopped += int(n_new < max_new_tokens)
        first += int(_first_word(a) == _first_word(d[1]["content"]))
        answers.append(a)
    n = max(1, len(dialogues))
    return {"answers": answers, "stopped": stopped / n, "first_word": first / n}


def finetune_compare(out_dir="out/finetune-compare", base_steps: int = 1000,
                     steps: int = 300, n_answers: int = 48, n_show: int = 3,
                     quick: bool = False, seed: int = 0, progress: bool = True) -> list[dict]:
    """Train both bases, fine-tune both, print the table; returns one row per model."""
    for name, v in (("base_steps", base_steps), ("steps", steps), ("n_answers", n_answers)):
        positive_int(name, v)
    t_all = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    corpus = stdlib_corpus()
    train_d = builtin_dialogues("train")
    held = builtin_dialogues("heldout")
    probe = held[:: max(1, len(held) // n_answers)][:n_answers]
    rows = []
    for label, arch in ARCHS:
        base_dir = out / f"base_{arch}"
        ckpt = base_dir / CKPT_NAME
        over = (QUICK_BASE_OVERRIDES if quick else BASE_OVERRIDES) + [
            f"model.arch='{arch}'", f"train.max_steps={base_steps}", f"train.seed={seed}",
            f"train.out_dir='{base_dir.as_posix()}'"]
        run = load_run_config("tiny", over)
        done = ckpt.is_file() and load_lm_checkpoint(ckpt)[1].get("step") == base_steps
        t0 = time.perf_counter()
        if not done:
            if progress:
                print(f"base {label}: training {base_steps} steps")
            train(run, resume=ckpt.is_file(), progress=progress, corpus=corpus)
        base_s = time.perf_counter() - t0
        ft_dir = out / f"finetune_{arch}"
        cfg = FinetuneConfig(base=str(ckpt), out_dir=str(ft_dir), max_steps=steps, seed=seed,
                             max_len=256, batch_size=4 if quick else 16,
                             eval_interval=steps, ckpt_interval=max(1, steps // 3))
        t0 = time.perf_counter()
        resume = (ft_dir / CKPT_NAME).is_file()
        s = finetune(cfg, resume=resume, progress=progress, train_data=train_d, heldout=held)
        ft_s = time.perf_counter() - t0
        base, _ = load_lm_checkpoint(ckpt)
        tuned, _ = load_finetuned(ckpt, ft_dir)
        before = assistant_loss(base, held)
        after = assistant_loss(tuned, held)
        a0, a1 = answer_stats(base, probe), answer_stats(tuned, probe)
        rows.append({"model": label, "params": base.num_params(),
                     "trainable": s["trainable_params"], "base_val_bpb":
                     json.loads((base_dir / "metrics.json").read_text())["final_val_bpb"],
                     "before_bpb": before / LN2, "after_bpb": after / LN2,
                     "stopped_before": a0["stopped"], "stopped_after": a1["stopped"],
                     "first_word_before": a0["first_word"], "first_word_after": a1["first_word"],
                     "answers_before": a0["answers"][:n_show],
                     "answers_after": a1["answers"][:n_show],
                     "base_s": round(base_s, 1), "finetune_s": round(ft_s, 1)})
    total = time.perf_counter() - t_all
    print(format_table(rows, probe[:n_show], len(held), len(probe), base_steps, steps))
    print(f"total {total:.0f} s")
    return rows


def format_table(rows, shown, n_held, n_probe, base_steps, steps) -> str:
    head = (f"{'model':<12} {'params':>8} {'LoRA':>7} {'base val':>9} {'held-out before':>16} "
            f"{'after':>7} {'stops':>11} {'1st word':>11}")
    lines = [f"dialogue fine-tuning: bases {base_steps} steps on the built-in corpus, LoRA "
             f"{steps} steps on the built-in questions; held-out: {n_held} questions "
             f"(answers: {n_probe} of them, greedy)", head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['model']:<12} {r['params']:>8,} {r['trainable']:>7,} "
            f"{r['base_val_bpb']:>9.3f} {r['before_bpb']:>16.3f} {r['after_bpb']:>7.3f} "
            f"{100 * r['stopped_before']:>4.0f}%->{100 * r['stopped_after']:>3.0f}% "
            f"{100 * r['first_word_before']:>4.0f}%->{100 * r['first_word_after']:>3.0f}%")
    lines.append("base val: bits/byte on the corpus; held-out before/after: assistant-token "
                 "loss in bits/byte; stops: answers that end at the template's blank line; "
                 "1st word: answers whose first word is the reference's")
    for i, d in enumerate(shown):
        lines.append(f"Q: {d[0]['content']}   (reference: {d[1]['content']})")
        for r in rows:
            lines.append(f"  {r['model']:<11} base: {r['answers_before'][i][:90]!r}")
            lines.append(f"  {r['model']:<11} tuned: {r['answers_after'][i][:90]!r}")
    return "\n".join(lines)
