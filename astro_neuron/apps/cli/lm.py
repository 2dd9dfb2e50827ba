"""Language-model commands: ``train``, ``eval``, ``generate``, ``compare``,
``memory-tasks``, and ``bench generate`` / ``bench train`` (docs/lm.md)."""

from __future__ import annotations

import os
import sys

from astro_neuron.apps.bench.lm import bench_generate, bench_train
from astro_neuron.apps.compare import compare
from astro_neuron.apps.tasks.lm_memory import run_memory_tasks
from astro_neuron.lm.data import load_corpus
from astro_neuron.lm.sample import sample_text
from astro_neuron.lm.train import NonFiniteLoss, evaluate, load_model, load_run_config, train
from astro_neuron.validate import non_negative_int, optional, positive_int


def register(commands, bench) -> None:
    p = commands.add_parser(
        "train", help="train AM-SNet (or a baseline) on the built-in corpus or your files",
        description="Train a language model from a TOML config with table.key=value "
                    "overrides, e.g. `astro-neuron train model.d_model=128 train.max_steps=500`.")
    p.add_argument("overrides", nargs="*", metavar="TABLE.KEY=VALUE",
                   help="config overrides, values in TOML syntax (model.arch=transformer)")
    p.add_argument("--config", default="default",
                   help="TOML file, or a built-in name: default, tiny, compare (default: default)")
    p.add_argument("--out", help="output folder (sets train.out_dir)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/ckpt.pt")
    p.add_argument("--device", help="cpu, cuda, cuda:N or auto (sets train.device)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_train)

    p = commands.add_parser("eval", help="bits per byte of a checkpoint on a split")
    p.add_argument("checkpoint")
    p.add_argument("--split", default="val", choices=("train", "val", "test"))
    p.add_argument("--tokens", type=int, default=None,
                   help="evaluate the first N tokens of the split (default: all)")
    p.add_argument("--corpus", help="corpus (default: the one the checkpoint trained on)")
    p.add_argument("--data-path", help="file/folder for enwik8, wikitext103, file")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_eval)

    p = commands.add_parser("generate", help="sample text from a checkpoint")
    p.add_argument("checkpoint")
    p.add_argument("--prompt", default="def ", help="text to continue (default: 'def ')")
    p.add_argument("--max-new-tokens", type=int, default=300)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--num-samples", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_generate)

    p = commands.add_parser(
        "compare", help="AM-SNet, its ablations and a Transformer at one token budget",
        description="Trains each variant for the same number of tokens on the same batches; "
                    "prints validation bits/byte and tokens/s, saves loss curves as a PNG.")
    p.add_argument("overrides", nargs="*", metavar="TABLE.KEY=VALUE")
    p.add_argument("--config", default="compare", help="TOML file or built-in name")
    p.add_argument("--out", default="out/compare", help="output folder")
    p.add_argument("--variants", help="comma-separated subset of: AM-SNet, astrocyte off, "
                   "neuron path off, non-spiking twin, Transformer")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_compare)

    p = commands.add_parser(
        "memory-tasks", help="MQAR and selective copy: accuracy against sequence length")
    p.add_argument("--task", default="both", choices=("mqar", "copy", "both"))
    p.add_argument("--lengths", default="64,128,256,512,1024",
                   help="comma-separated sequence lengths")
    p.add_argument("--models", default="AM-SNet,astrocyte off,Transformer",
                   help="comma-separated: AM-SNet, astrocyte off, Transformer, "
                        "AM-SNet plain read-out")
    p.add_argument("--steps", type=int, default=300, help="training steps per model and length")
    p.add_argument("--lr", type=float, default=1e-3,
                   help="peak learning rate of every model (default 1e-3; docs/lm.md)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--n-layer", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="out/memory-tasks")
    p.add_argument("--quick", action="store_true", help="tiny settings (seconds)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_memory_tasks)

    b = bench.add_parser(
        "generate", help="per-token generation latency and memory: AM-SNet vs KV-cache Transformer")
    b.add_argument("--contexts", default="512,2048,8192,16384")
    b.add_argument("--d-model", type=int, default=256)
    b.add_argument("--n-layer", type=int, default=4)
    b.add_argument("--n-head", type=int, default=4)
    b.add_argument("--tokens", type=int, default=64, help="timed tokens per (model, context)")
    b.add_argument("--repeats", type=int, default=5, help="interleaved repeats (median)")
    b.add_argument("--checkpoint", help="an AM-SNet checkpoint to time (its trained spikes); "
                   "default: a freshly initialised model")
    b.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    b.add_argument("--device", default="cpu")
    b.add_argument("--no-rss", action="store_true",
                   help="skip the peak-RSS measurement in fresh processes (CPU)")
    b.add_argument("--compile", action="store_true",
                   help="also time both models' decode steps under torch.compile")
    b.set_defaults(func=_bench_generate)

    b = bench.add_parser("train", help="training tokens/s: AM-SNet vs Transformer vs "
                         "astrocyte off, with MFU (--forms: chunked form vs step loop)")
    b.add_argument("--d-models", type=int, nargs="+", default=[64, 128, 256, 512])
    b.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 4096], metavar="T")
    b.add_argument("--threads", type=int, nargs="+", default=[0, 1],
                   help="thread counts to run (0: torch's default)")
    b.add_argument("--n-layer", type=int, default=2)
    b.add_argument("--tokens", type=int, default=4096,
                   help="tokens per batch (batch = max(1, tokens // T))")
    b.add_argument("--repeats", type=int, default=3)
    b.add_argument("--quick", action="store_true",
                   help="d_model 64 and 128, T 256 and 1024, one thread, 2 repeats")
    b.add_argument("--peak-n", type=int, default=2048,
                   help="size of the square sgemm that measures the fp32 matmul peak")
    b.add_argument("--forms", action="store_true",
                   help="instead: the chunked form against the step loop (first d_model, T)")
    b.add_argument("--device", default="cpu")
    b.set_defaults(func=_bench_train)


def _train(args) -> int:
    over = list(args.overrides)
    if args.out:
        over.append(f"train.out_dir={_toml_str(args.out)}")
    if args.device:
        over.append(f"train.device={_toml_str(args.device)}")
    run = load_run_config(args.config, over)
    try:
        s = train(run, resume=args.resume, progress=not args.no_progress)
    except NonFiniteLoss as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    print(f"done: {s['steps']} steps, {s['tokens']:,} tokens, {s['tokens_per_s']:,.0f} tok/s, "
          f"val {s['final_val_bpb']:.4f} bits/byte; checkpoint {s['checkpoint']}")
    return 0


def _toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _eval(args) -> int:
    model, ck = load_model(args.checkpoint, args.device)
    data = ck.get("run_config", {}).get("data", {"corpus": "stdlib", "path": ""})
    corpus = load_corpus(args.corpus or data["corpus"],
                         args.data_path if args.corpus or args.data_path else data["path"] or None)
    split = corpus.split(args.split)
    optional(positive_int, "--tokens", args.tokens)
    bpb = evaluate(model, split, model.config.block_size, args.tokens or split.numel(),
                   batch_size=args.batch_size)
    print(f"{corpus.name} {args.split}: {bpb:.4f} bits per byte "
          f"({model.config.arch}, step {ck.get('step')})")
    return 0


def _generate(args) -> int:
    for i, text in enumerate(sample_text(args.checkpoint, args.prompt, args.max_new_tokens,
                                         args.temperature, args.top_k, args.num_samples,
                                         args.seed, args.device)):
        if args.num_samples > 1:
            print(f"--- sample {i + 1}")
        print(text)
    return 0


def _compare(args) -> int:
    run = load_run_config(args.config, list(args.overrides))
    variants = [v.strip() for v in args.variants.split(",")] if args.variants else None
    compare(run, args.out, variants, progress=not args.no_progress)
    return 0


def _ints(text: str, name: str) -> list[int]:
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{name} must be comma-separated integers, got {text!r}") from None
    if not vals:
        raise ValueError(f"{name} must be comma-separated integers, got {text!r}")
    return [positive_int(f"each of {name}", v) for v in vals]


def _memory_tasks(args) -> int:
    lengths = _ints(args.lengths, "--lengths")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    tasks = ["mqar", "copy"] if args.task == "both" else [args.task]
    run_memory_tasks(tasks, lengths, models, steps=args.steps, batch_size=args.batch_size,
                     d_model=args.d_model, n_layer=args.n_layer, seed=args.seed,
                     out_dir=args.out, quick=args.quick, progress=not args.no_progress,
                     lr=args.lr)
    return 0


def _bench_generate(args) -> int:
    bench_generate(_ints(args.contexts, "--contexts"), d_model=args.d_model,
                   n_layer=args.n_layer, n_head=args.n_head, tokens=args.tokens,
                   repeats=args.repeats, threads=args.threads, device=args.device,
                   checkpoint=args.checkpoint, rss=not args.no_rss, compile=args.compile)
    return 0


def _bench_train(args) -> int:
    if args.quick:
        args.d_models, args.lengths, args.threads, args.repeats = [64, 128], [256, 1024], [1], 2
    for name in ("d_models", "lengths"):
        for v in getattr(args, name):
            positive_int(f"--{name.replace('_', '-')}", v)
    for v in args.threads:
        non_negative_int("--threads", v)
    for name in ("n_layer", "tokens", "repeats", "peak_n"):
        positive_int(f"--{name.replace('_', '-')}", getattr(args, name))
    bench_train(d_models=tuple(args.d_models), lengths=tuple(args.lengths),
                threads=tuple(args.threads), n_layer=args.n_layer, tokens=args.tokens,
                repeats=args.repeats, device=args.device, forms=args.forms,
                peak_n=args.peak_n)
    return 0

