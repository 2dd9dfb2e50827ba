"""Dialogue commands: ``finetune`` (LoRA on chat data), ``chat`` (an interactive
session on the recurrent state) and ``finetune-compare`` (AM-SNet against the
Transformer, before and after fine-tuning) (docs/lm.md, "Dialogue fine-tuning")."""

from __future__ import annotations

import sys

from astro_neuron.apps.cli import args as A
from astro_neuron.apps.cli.lm import add_sampling_args
from astro_neuron.apps.finetune_compare import finetune_compare
from astro_neuron.lm.chat import ChatSession
from astro_neuron.lm.finetune import FinetuneConfig, finetune, load_finetuned
from astro_neuron.lm.train import LN2, NonFiniteLoss

_BIG = 1 << 20


def _data(text: str) -> str:
    if text == "builtin":
        return text
    A.check_in_file(text, "--data")
    return text


def _heldout(text: str) -> str:
    if text in ("builtin", ""):
        return text
    A.check_in_file(text, "--heldout")
    return text


def register(commands, bench) -> None:
    p = commands.add_parser(
        "finetune", help="fine-tune a checkpoint on dialogues with LoRA adapters",
        description="LoRA adapters on every projection of a trained model; the loss on the "
                    "assistant's bytes only. Checkpoints, --resume, Ctrl-C/SIGTERM and the "
                    "progress bar work as in `astro-neuron train`.")
    p.add_argument("--base", required=True, type=A.in_file("--base"),
                   help="the checkpoint to fine-tune (from `astro-neuron train`)")
    p.add_argument("--data", default="builtin", type=A._typed(_data, "data"),
                   help="'builtin' (questions about the standard library's functions) or a "
                        "JSONL file of {\"messages\": [...]} conversations")
    p.add_argument("--heldout", default="builtin", type=A._typed(_heldout, "heldout"),
                   help="held-out conversations to evaluate: 'builtin', a JSONL file, or '' "
                        "(none)")
    p.add_argument("--out", required=True, type=A.out_dir("--out"), help="output folder")
    p.add_argument("--resume", action="store_true", help="continue from OUT/ckpt.safetensors")
    p.add_argument("--rank", type=A.int_range(1, 4096, "--rank"), default=8)
    p.add_argument("--alpha", type=A.number(0.0, lo_open=True, name="--alpha"), default=None,
                   help="LoRA alpha (default 2 x rank)")
    p.add_argument("--steps", type=A.int_range(1, 10**8, "--steps"), default=300)
    p.add_argument("--batch-size", type=A.int_range(1, 1 << 16, "--batch-size"), default=16)
    p.add_argument("--max-len", type=A.int_range(2, _BIG, "--max-len"), default=256,
                   help="bytes per conversation; longer ones are cut (default 256)")
    p.add_argument("--lr", type=A.number(0.0, 10.0, lo_open=True, name="--lr"), default=3e-3)
    p.add_argument("--eval-interval", type=A.int_range(1, 10**8, "--eval-interval"),
                   default=100)
    p.add_argument("--ckpt-interval", type=A.int_range(1, 10**8, "--ckpt-interval"),
                   default=100)
    p.add_argument("--max-time", type=A.number(0.0, name="--max-time"), default=0.0,
                   help="stop (and save) after this many seconds of training (0: no limit)")
    p.add_argument("--seed", type=A.seed("--seed"), default=0)
    p.add_argument("--merged", action="store_true",
                   help="also write OUT/merged.safetensors: a plain checkpoint, adapters folded in")
    p.add_argument("--device", default="cpu", type=A.device())
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_finetune, retain_memory=True)

    p = commands.add_parser(
        "chat", help="talk to a checkpoint (user turns from stdin), state kept across turns",
        description="Reads one user turn per line from stdin and prints the model's answer "
                    "after each; the model's recurrent state carries over from turn to turn. "
                    "Pipe a file in, or type (Ctrl-D ends).")
    p.add_argument("checkpoint", type=A.in_file("checkpoint"))
    p.add_argument("--adapter", type=A.in_path("--adapter"),
                   help="a LoRA adapter: a finetune --out folder or its adapter.safetensors")
    add_sampling_args(p, max_new_tokens=256, temperature=0.0, min_new_tokens=1)
    p.set_defaults(func=_chat)

    p = commands.add_parser(
        "finetune-compare", help="dialogue fine-tuning: AM-SNet vs the same-size Transformer",
        description="Trains both bases on the built-in corpus, fine-tunes both with LoRA on the "
                    "built-in questions and prints held-out assistant loss and answers before "
                    "and after (finished pieces in --out are reused).")
    p.add_argument("--out", default="out/finetune-compare", type=A.out_dir("--out"))
    p.add_argument("--base-steps", type=A.int_range(1, 10**8, "--base-steps"), default=1000)
    p.add_argument("--steps", type=A.int_range(1, 10**8, "--steps"), default=300)
    p.add_argument("--answers", type=A.int_range(1, 100000, "--answers"), default=48,
                   help="held-out questions answered greedily per model (default 48)")
    p.add_argument("--seed", type=A.seed("--seed"), default=0)
    p.add_argument("--quick", action="store_true", help="tiny models, a few steps (seconds)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_compare, retain_memory=True)


def _finetune(args) -> int:
    A.check_writable_dir(args.out, "--out")
    cfg = FinetuneConfig(base=str(args.base), data=args.data, heldout=args.heldout,
                         out_dir=str(args.out), rank=args.rank,
                         alpha=2.0 * args.rank if args.alpha is None else args.alpha,
                         batch_size=args.batch_size, max_len=args.max_len,
                         max_steps=args.steps, lr=args.lr, min_lr=min(args.lr / 10, 3e-4),
                         eval_interval=args.eval_interval, ckpt_interval=args.ckpt_interval,
                         max_time_s=args.max_time, seed=args.seed, device=args.device)
    try:
        s = finetune(cfg, resume=args.resume, progress=not args.no_progress,
                     merged=args.merged)
    except NonFiniteLoss as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    msg = f"done: {s['steps']} steps, {s['trainable_params']:,} adapter parameters"
    if s["heldout_loss_after"] is not None and s["heldout_loss_before"] is not None:
        msg += (f"; held-out assistant loss {s['heldout_loss_before'] / LN2:.3f} -> "
                f"{s['heldout_loss_after'] / LN2:.3f} bits/byte")
    print(msg + f"; adapter {s['adapter']}" + (f", merged {s['merged']}" if s["merged"] else ""))
    return 0


def _chat(args) -> int:
    model, _ = load_finetuned(args.checkpoint, args.adapter, args.device)
    session = ChatSession(model, args.max_new_tokens, args.temperature, args.top_k, args.seed)
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"chat with {args.checkpoint} ({model.config.arch}"
              + (f", adapter {args.adapter}" if args.adapter else "")
              + "); one line per turn, Ctrl-D to end")
    while True:
        if interactive:
            print("User: ", end="", flush=True)
        line = sys.stdin.readline()
        if not line:
            break
        line = line.strip()
        if not line:
            continue
        print(f"{'' if interactive else 'User: ' + line + chr(10)}Assistant: "
              f"{session.reply(line)}", flush=True)
    return 0


def _compare(args) -> int:
    finetune_compare(args.out, base_steps=args.base_steps, steps=args.steps,
                     n_answers=args.answers, quick=args.quick, seed=args.seed,
                     progress=not args.no_progress)
    return 0
