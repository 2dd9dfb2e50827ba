"""Language-model commands: ``train``, ``eval``, ``generate``, ``compare``,
``memory-tasks``, and ``bench generate`` / ``bench train`` (docs/lm.md)."""

from __future__ import annotations

import argparse
import os
import sys

from astro_neuron.apps.bench.lm import bench_generate, bench_serve, bench_train
from astro_neuron.apps.cli import args as A
from astro_neuron.apps.compare import compare
from astro_neuron.apps.tasks.lm_memory import DEFAULT_LRS, DEFAULT_MODELS, TABLES, \
    combine_tables, run_memory_tasks
from astro_neuron.functional.finite import validation
from astro_neuron.lm.config import AMSNetConfig
from astro_neuron.lm.data import load_corpus
from astro_neuron.lm.sample import sample_text
from astro_neuron.lm.tasks import TASK_MODELS
from astro_neuron.lm.train import NonFiniteLoss, evaluate, load_model, load_run_config, \
    resolve_device, train

# Upper bounds of sizes the commands accept (beyond them a run takes days); memory is
# estimated separately before anything is allocated (_lm_bytes, A.check_fits).
_BIG = 1 << 20
_TEMP_MIN, _TEMP_MAX = 1e-3, 1e3


def _temperature(text: str) -> float:
    """0 (greedy) or a number in [1e-3, 1e3]: below, logits / T overflow float32 and the
    softmax turns to NaN (1e-45 did); above, sampling is uniform noise."""
    t = A.number(0.0, name="--temperature")(text)
    if t != 0 and not _TEMP_MIN <= t <= _TEMP_MAX:
        raise argparse.ArgumentTypeError(
            f"--temperature must be 0 (greedy) or in [{_TEMP_MIN:g}, {_TEMP_MAX:g}], got {t!r}")
    return t


def add_sampling_args(p, max_new_tokens: int, temperature: float, min_new_tokens: int = 0
                      ) -> None:
    """The sampling options of a command that generates text (``generate``, ``chat``):
    ``--max-new-tokens`` (in [``min_new_tokens``, 2**20]), ``--temperature`` (0: greedy,
    else in [1e-3, 1e3]), ``--top-k``, ``--seed`` and ``--device``, with these defaults."""
    p.add_argument("--max-new-tokens", default=max_new_tokens,
                   type=A.int_range(min_new_tokens, _BIG, "--max-new-tokens"))
    p.add_argument("--temperature", type=_temperature, default=temperature,
                   help=f"0: greedy; else in [{_TEMP_MIN:g}, {_TEMP_MAX:g}] "
                        f"(default {temperature:g})")
    p.add_argument("--top-k", type=A.int_range(1, _BIG, "--top-k"), default=None)
    p.add_argument("--seed", type=A.seed("--seed"), default=0)
    p.add_argument("--device", default="cpu", type=A.device())


def _lm_bytes(cfg, batch: int, training: bool = True) -> float:
    """An estimate (bytes) of the peak memory a language model run adds: weights (with
    gradient and AdamW moments when training) plus what one batch keeps for the backward
    pass (float32): per token, the logits and their softmax and loss (16 V), and per
    layer the residual stream and the channel-mixing layer (17 d + 5 f, f its width); plus
    the chunked form's astrocyte states. Fitted above two measured runs (CPU, peak RSS
    less the 224 MiB of the imports; `train --config tiny`, 1 step): block 4096 x batch
    8, d 64: 1025 MiB measured, 1114 estimated; block 2048 x batch 32, d 128: 3109 MiB
    measured, 3463 estimated."""
    d, L, V, T = cfg.d_model, cfg.n_layer, cfg.vocab_size, cfg.block_size
    f = cfg.ffn_size
    params = 2 * V * d + L * (4 * d + 2 * f) * d
    chunks = -(-T // cfg.chunk_size)
    acts = batch * T * (16 * V + L * (17 * d + 5 * f)) \
        + L * batch * cfg.n_head * cfg.key_size * cfg.head_size * chunks
    if not training:
        acts = batch * T * (2 * V + 4 * d)
    return 4.0 * ((4 if training else 1) * params + acts)


def register(commands, bench) -> None:
    p = commands.add_parser(
        "train", help="train AM-SNet (or a baseline) on the built-in corpus or your files",
        description="Train a language model from a TOML config with table.key=value "
                    "overrides, e.g. `astro-neuron train model.d_model=128 train.max_steps=500`.")
    p.add_argument("overrides", nargs="*", metavar="TABLE.KEY=VALUE",
                   help="config overrides, values in TOML syntax (model.arch=transformer)")
    p.add_argument("--config", default="default", type=A.config_name,
                   help="TOML file, or a built-in name: default, tiny, compare (default: default)")
    p.add_argument("--out", type=A.out_dir("--out"), help="output folder (sets train.out_dir)")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUT/ckpt.safetensors (same model, seed and batch size)")
    p.add_argument("--device", type=A.device(allow_auto=True),
                   help="cpu, cuda, cuda:N or auto (sets train.device)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_train, retain_memory=True)

    p = commands.add_parser("eval", help="bits per byte of a checkpoint on a split")
    p.add_argument("checkpoint", type=A.in_file("checkpoint"))
    p.add_argument("--split", default="val", choices=("train", "val", "test"))
    p.add_argument("--tokens", type=A.pos_int(name="--tokens"), default=None,
                   help="evaluate the first N tokens of the split (default: all)")
    p.add_argument("--corpus",
                   help="corpus (default: the one the checkpoint trained on)")
    p.add_argument("--data-path", type=A.in_path("--data-path"),
                   help="file/folder for enwik8, wikitext103, file")
    p.add_argument("--batch-size", type=A.int_range(1, 1 << 16, "--batch-size"), default=16)
    p.add_argument("--device", default="cpu", type=A.device())
    p.set_defaults(func=_eval)

    p = commands.add_parser("generate", help="sample text from a checkpoint")
    p.add_argument("checkpoint", type=A.in_file("checkpoint"))
    p.add_argument("--prompt", default="def ", help="text to continue (default: 'def ')")
    p.add_argument("--num-samples", type=A.int_range(1, 4096, "--num-samples"), default=1)
    add_sampling_args(p, max_new_tokens=300, temperature=0.8)
    p.set_defaults(func=_generate)

    p = commands.add_parser(
        "compare", help="AM-SNet, its ablations and a Transformer at one token budget",
        description="Trains each variant for the same number of tokens on the same batches; "
                    "prints validation bits/byte and tokens/s, saves loss curves as a PNG.")
    p.add_argument("overrides", nargs="*", metavar="TABLE.KEY=VALUE")
    p.add_argument("--config", default="compare", type=A.config_name,
                   help="TOML file or built-in name")
    p.add_argument("--out", default="out/compare", type=A.out_dir("--out"), help="output folder")
    p.add_argument("--variants", help="comma-separated subset of: AM-SNet, astrocyte off, "
                   "neuron path off, non-spiking twin, Transformer")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_compare, retain_memory=True)

    p = commands.add_parser(
        "memory-tasks", help="MQAR, selective copy, capacity: the field's protocol (docs/memory.md)",
        description="Trains every model at every learning rate of a sweep for each cell of a "
                    "table, keeps the best rate, repeats it with more seeds; prints the table, "
                    "saves JSON and a plot, and resumes an interrupted table (docs/memory.md).")
    p.add_argument("--table", default="mqar", choices=tuple(TABLES),
                   help="mqar: T=64,256,1024 x 4,8,16 pairs; copy: selective copy at T=256,1024; "
                        "capacity: MQAR accuracy against pairs at T=256")
    p.add_argument("--task", choices=("mqar", "copy"), help="override the table's task")
    p.add_argument("--lengths", type=A.int_list(1, 1 << 16, "--lengths"),
                   help="comma-separated sequence lengths (default: the table's)")
    p.add_argument("--sizes", type=A.int_list(1, 1 << 10, "--sizes"),
                   help="key-value pairs (MQAR) or data tokens (copy), comma-separated")
    p.add_argument("--models", default=",".join(DEFAULT_MODELS),
                   help="comma-separated: " + ", ".join(TASK_MODELS))
    p.add_argument("--variant", action="append", default=[], metavar="NAME=JSON",
                   help="an extra model: a name and AMSNetConfig options as JSON, e.g. "
                        "'AM-SNet long tau={\"tau_astro\": [64, 4096]}' (repeatable)")
    p.add_argument("--lrs", default=",".join(f"{x:g}" for x in DEFAULT_LRS),
                   type=_float_list, help="peak learning rates of the sweep, comma-separated")
    p.add_argument("--seeds", type=A.int_range(1, 100, "--seeds"), default=3,
                   help="seeds at the best rate (the sweep runs seed 0)")
    p.add_argument("--examples", type=A.int_range(1, 10**9, "--examples"), default=20_000,
                   help="training sequences per run (fresh ones, the same for every model)")
    p.add_argument("--batch-size", type=A.int_range(1, 1 << 16, "--batch-size"), default=64)
    p.add_argument("--d-model", type=A.int_range(2, 8192, "--d-model"), default=64)
    p.add_argument("--n-layer", type=A.int_range(1, 256, "--n-layer"), default=2)
    p.add_argument("--n-head", type=A.int_range(1, 256, "--n-head"), default=2)
    p.add_argument("--noise", default="random", choices=("random", "constant", "both"),
                   help="between the items: random noise tokens, one constant filler, or both")
    p.add_argument("--query-dist", default="uniform", choices=("uniform", "power"),
                   help="MQAR query places: uniform, or Zoology's power law (near the pairs)")
    p.add_argument("--n-eval", type=A.int_range(1, 1 << 20, "--n-eval"), default=500)
    p.add_argument("--warmup", type=A.number(0.0, 1.0, hi_open=True, name="--warmup"), default=0.0,
                   help="share of each run's steps with the learning rate rising linearly "
                        "from 0 before the cosine (default 0: none)")
    p.add_argument("--mix-lengths", type=A.int_list(1, 1 << 16, "--mix-lengths"), default=[],
                   help="shorter lengths mixed into each cell's training, comma-separated "
                        "(batches cycle over the cell's length and these; scored at the "
                        "cell's length)")
    p.add_argument("--train-length", type=A.int_range(1, 1 << 16, "--train-length"),
                   default=None,
                   help="train every cell at this length and score it at the cell's own "
                        "(longer) length: length extrapolation (default: train at the "
                        "cell's length)")
    p.add_argument("--device", default="cpu", type=A.device(),
                   help="where the models train: cpu (default) or cuda (the astrocyte scan "
                        "then runs on flash-linear-attention's GLA kernels where installed)")
    p.add_argument("--out", default="out/memory-tasks", type=A.out_dir("--out"))
    p.add_argument("--combine", metavar="JSON,JSON,...",
                   help="train nothing: draw saved tables (memory_<table>.json) into one "
                        "figure of accuracy against length, --out/memory_combined.png")
    p.add_argument("--quick", action="store_true", help="tiny settings (seconds)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_memory_tasks, retain_memory=True)

    b = bench.add_parser(
        "generate", help="per-token generation latency and memory: AM-SNet vs KV-cache Transformer")
    b.add_argument("--contexts", default=None, type=A.int_list(1, 1 << 24, "--contexts"),
                   help="contexts (default 512,2048,8192,16384; --serving: 2048,16384)")
    b.add_argument("--serving", action="store_true",
                   help="batched serving throughput: tokens/s and memory of AM-SNet, the "
                        "Transformer and an independent minimal KV-cache GPT at every batch "
                        "size, context and thread count (docs/lm.md, 'Serving throughput')")
    b.add_argument("--batches", default=[1, 4, 16, 64],
                   type=A.int_list(1, 1 << 16, "--batches"),
                   help="--serving: batch sizes (default 1,4,16,64)")
    b.add_argument("--thread-counts", default=[0, 1],
                   type=A.int_list(0, 1024, "--thread-counts"),
                   help="--serving: thread counts, 0 = torch's default (default 0,1)")
    b.add_argument("--quick", action="store_true",
                   help="--serving: batches 1 and 16, 8 tokens, torch's default threads only")
    b.add_argument("--d-model", type=A.int_range(2, 8192, "--d-model"), default=256)
    b.add_argument("--n-layer", type=A.int_range(1, 256, "--n-layer"), default=4)
    b.add_argument("--n-head", type=A.int_range(1, 256, "--n-head"), default=4)
    b.add_argument("--tokens", type=A.int_range(1, 1 << 16, "--tokens"), default=None,
                   help="timed tokens per (model, context) (default 64; --serving 16, "
                        "--quick 8)")
    b.add_argument("--repeats", type=A.int_range(1, 1000, "--repeats"), default=None,
                   help="interleaved repeats (median; default 5, --serving 3)")
    b.add_argument("--checkpoint", type=A.in_file("--checkpoint"), help="an AM-SNet checkpoint to time (its trained spikes); "
                   "default: a freshly initialised model")
    b.add_argument("--threads", type=A.int_range(1, 1024, "--threads"), default=1,
                   help="torch threads (default 1)")
    b.add_argument("--device", default="cpu", type=A.device())
    b.add_argument("--no-rss", action="store_true",
                   help="skip the peak-RSS measurement in fresh processes (CPU)")
    b.add_argument("--compile", action="store_true",
                   help="also time both models' decode steps under torch.compile")
    b.add_argument("--no-check-finite", action="store_true",
                   help="time without the NaN/Inf checks (astro_neuron.validation)")
    b.set_defaults(func=_bench_generate)

    b = bench.add_parser("train", help="training tokens/s: AM-SNet vs Transformer vs "
                         "astrocyte off (as switched off, and at equal parameters), with MFU "
                         "(--forms: chunked form vs step loop)")
    b.add_argument("--d-models", type=A.int_range(2, 8192, "--d-models"), nargs="+",
                   default=[64, 128, 256, 512])
    b.add_argument("--lengths", type=A.int_range(1, _BIG, "--lengths"), nargs="+", default=[256, 1024, 4096], metavar="T")
    b.add_argument("--threads", type=A.int_range(0, 1024, "--threads"), nargs="+", default=[0, 1],
                   help="thread counts to run (0: torch's default)")
    b.add_argument("--n-layer", type=A.int_range(1, 256, "--n-layer"), default=2)
    b.add_argument("--tokens", type=A.int_range(1, 1 << 24, "--tokens"), default=4096,
                   help="tokens per batch (batch = max(1, tokens // T))")
    b.add_argument("--repeats", type=A.int_range(1, 1000, "--repeats"), default=3)
    b.add_argument("--quick", action="store_true",
                   help="d_model 64 and 128, T 256 and 1024, one thread, 2 repeats")
    b.add_argument("--peak-n", type=A.int_range(1, 1 << 15, "--peak-n"), default=2048,
                   help="size of the square sgemm that measures the fp32 matmul peak")
    b.add_argument("--forms", action="store_true",
                   help="instead: the chunked form against the step loop (first d_model, T)")
    b.add_argument("--device", default="cpu", type=A.device())
    b.set_defaults(func=_bench_train, retain_memory=True)


def _train(args) -> int:
    over = list(args.overrides)
    if args.out:
        over.append(f"train.out_dir={_toml_str(args.out)}")
    if args.device:
        over.append(f"train.device={_toml_str(args.device)}")
    run = load_run_config(args.config, over)
    _check_run_fits(run)
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


def _check_run_fits(run) -> None:
    """Refuse a training run whose estimated memory exceeds what the device has free."""
    mc, tc = run.model, run.train
    A.check_writable_dir(tc.out_dir, "train.out_dir")
    dev = str(resolve_device(tc.device))
    A.check_fits(f"training {mc.arch} (d_model {mc.d_model}, {mc.n_layer} layers, batch "
                 f"{tc.batch_size} x block_size {mc.block_size})",
                 _lm_bytes(mc, tc.batch_size), dev)


def _toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _eval(args) -> int:
    model, ck = load_model(args.checkpoint, args.device)
    A.check_fits(f"evaluation (batch {args.batch_size} x block_size {model.config.block_size})",
                 _lm_bytes(model.config, args.batch_size, training=False), args.device)
    data = ck.get("run_config", {}).get("data", {"corpus": "stdlib", "path": ""})
    corpus = load_corpus(args.corpus or data["corpus"],
                         args.data_path if args.corpus or args.data_path else data["path"] or None)
    split = corpus.split(args.split)
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
    _check_run_fits(run)
    variants = [v.strip() for v in args.variants.split(",")] if args.variants else None
    compare(run, args.out, variants, progress=not args.no_progress)
    return 0


def _float_list(text: str) -> list[float]:
    vals = [A.number(0.0, 10.0, lo_open=True, name="--lrs")(t) for t in text.split(",") if t.strip()]
    if not vals:
        raise argparse.ArgumentTypeError(f"--lrs must be comma-separated numbers, got {text!r}")
    return vals


def _memory_tasks(args) -> int:
    if args.combine:
        paths = [A.check_in_file(p.strip(), "--combine table") for p in args.combine.split(",")
                 if p.strip()]
        combine_tables(paths, os.path.join(args.out, "memory_combined.png"))
        print(f"wrote {os.path.join(args.out, 'memory_combined.png')}")
        return 0
    models = [m.strip() for m in args.models.split(",") if m.strip()] + args.variant
    noise = ("random", "constant") if args.noise == "both" else args.noise
    run_memory_tasks(args.table, args.lengths, args.sizes, models, lrs=args.lrs,
                     seeds=args.seeds, examples=args.examples, batch_size=args.batch_size,
                     d_model=args.d_model, n_layer=args.n_layer, n_head=args.n_head,
                     noise=noise, query_dist=args.query_dist, n_eval=args.n_eval,
                     out_dir=args.out, quick=args.quick, progress=not args.no_progress,
                     task=args.task, warmup=args.warmup,
                     mix_lengths=args.mix_lengths, train_length=args.train_length,
                     device=args.device)
    return 0


def _bench_generate(args) -> int:
    if args.serving or args.quick:
        contexts = args.contexts or [2048, 16384]
        batches, threads, tokens = args.batches, args.thread_counts, args.tokens or 16
        if args.quick:
            batches, threads, tokens = [1, 16], [0], args.tokens or 8
        d, n = args.d_model, args.n_layer
        A.check_fits(f"bench generate --serving (d_model {d}, {n} layers)",
                     4.0 * 2.6 * n * min(max(batches) * max(contexts), 16 * 16384) * d,
                     args.device)
        with validation(check_finite=not args.no_check_finite):
            bench_serve(batches, contexts, threads, d_model=d, n_layer=n, n_head=args.n_head,
                        tokens=tokens, repeats=args.repeats or 3,
                        device=args.device, checkpoint=args.checkpoint,
                        memory=not args.no_rss)
        return 0
    args.contexts = args.contexts or [512, 2048, 8192, 16384]
    args.tokens, args.repeats = args.tokens or 64, args.repeats or 5
    if args.checkpoint is None:
        # The Transformer's KV cache at the longest context, and both models' weights.
        L, d, n = max(args.contexts) + args.tokens + 8, args.d_model, args.n_layer
        A.check_fits(f"bench generate (context {max(args.contexts)}, d_model {d}, {n} layers)",
                     4.0 * (2 * n * L * d + 2 * (2 * 256 * d + 12 * n * d * d)), args.device)
    with validation(check_finite=not args.no_check_finite):
        bench_generate(args.contexts, d_model=args.d_model,
                       n_layer=args.n_layer, n_head=args.n_head, tokens=args.tokens,
                       repeats=args.repeats, threads=args.threads, device=args.device,
                       checkpoint=args.checkpoint, rss=not args.no_rss, compile=args.compile)
    return 0


def _bench_train(args) -> int:
    if args.quick:
        args.d_models, args.lengths, args.threads, args.repeats = [64, 128], [256, 1024], [1], 2
    # The largest model at each length, with its batch (max(1, tokens // T)).
    need = max(_lm_bytes(AMSNetConfig(n_layer=args.n_layer, d_model=d,
                                      n_head=max(1, d // 64), block_size=T),
                         max(1, args.tokens // T))
               for d in (max(args.d_models),) for T in args.lengths)
    A.check_fits(f"bench train (d_model {max(args.d_models)}, lengths {args.lengths}, "
                 f"{args.tokens} tokens per batch)", need + 8.0 * args.peak_n ** 2,
                 args.device)
    if getattr(args, "allocator", None):
        print(args.allocator)
    bench_train(d_models=tuple(args.d_models), lengths=tuple(args.lengths),
                threads=tuple(args.threads), n_layer=args.n_layer, tokens=args.tokens,
                repeats=args.repeats, device=args.device, forms=args.forms,
                peak_n=args.peak_n)
    return 0

