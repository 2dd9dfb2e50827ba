"""Benchmarks behind ``astro-neuron bench generate`` and ``astro-neuron bench train``.

Both print a table; ratios are measured within one run, with the models interleaved,
so that load from other processes hits both alike (the median of ``repeats`` rounds
is reported).

* ``generate``: per-token latency at batch 1 of AM-SNet (recurrent state) and the
  same-size Transformer (KV cache) after a context of ``L`` tokens, and memory: the
  bytes of the state / KV cache, and the peak resident memory of a fresh process
  that decodes at that context (CPU), or the peak CUDA allocation (GPU). The
  Transformer's cache is filled with random keys and values of length ``L`` (its
  cost does not depend on their values); the AM-SNet's state comes from reading a
  real prompt (its cost depends on how many neurons fire), at position ``L``.
  ``compile=True`` also times both decode steps under ``torch.compile`` (the same
  treatment for both models; compile time is printed, not counted).
* ``train``: training tokens/s (forward + backward) of AM-SNet, the same-size
  Transformer and the astrocyte-off ablation (as the switch leaves it, and at equal
  parameters: :func:`train_configs`) over a grid of widths, lengths and
  thread counts, with the model FLOPs utilisation against the machine's measured
  fp32 matmul peak and the FLOP-parity ceiling (the AM/TF ratio at equal MFU;
  :func:`ceiling`) (``--forms``: the chunked form against the recurrent loop).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from typing import Any, Callable, Optional

import torch

from astro_neuron.amsu import AMSU
from astro_neuron.lm.config import AMSNetConfig, config_from_dict, transformer_twin
from astro_neuron.lm.data import stdlib_corpus
from astro_neuron.lm.model import AMSNet, build_model, equal_params_ablation
from astro_neuron.lm.train import load_model, resolve_device
from astro_neuron.validate import positive_int

__all__ = ["bench_forms", "bench_generate", "bench_serve", "bench_train", "train_configs",
           "decode_setup",
           "matmul_peak", "matmul_params", "scan_flops_per_token", "attention_flops_per_token",
           "train_flops_per_token", "ceiling", "MiniGPT"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _interleaved(names, repeats: int, run_one: Callable[[str], Any]) -> dict[str, list]:
    """``run_one(name)`` for every name, ``repeats`` rounds, the names interleaved within
    a round (so that load from other processes hits all alike): ``{name: [result of each
    round]}``. The timing loop of the benchmarks."""
    out: dict = {name: [] for name in names}
    for _ in range(repeats):
        for name in names:
            out[name].append(run_one(name))
    return out


def _spread(times: list) -> float:
    """``(max - min) / median`` of repeated timings."""
    return (max(times) - min(times)) / statistics.median(times)


def _prompt(n: int) -> torch.Tensor:
    return stdlib_corpus().val[:n].long()[None]


def decode_setup(model, context: int, tokens: int, prompt_len: int = 256,
                 prompt: Optional[torch.Tensor] = None):
    """A cache as if ``context`` tokens had been read, with room for ``tokens`` more.

    The AM-SNet state comes from reading ``prompt`` (default: the first ``prompt_len``
    bytes of the built-in validation split). Returns ``(cache, first_token, reset)``;
    ``reset(cache)`` rewinds it to ``context``.
    """
    dev = next(model.parameters()).device
    prompt = (_prompt(prompt_len) if prompt is None else prompt).to(dev)
    with torch.inference_mode():
        if isinstance(model, AMSNet):
            _, cache = model.prefill(prompt)
            saved = [[x.clone() if x is not None else None for x in lst]
                     for lst in (cache.u, cache.H, cache.u_ffn)]

            def reset(c):
                with torch.inference_mode():
                    for lst, src in zip((c.u, c.H, c.u_ffn), saved):
                        for x, s in zip(lst, src):
                            if x is not None:
                                x.copy_(s)
                c.t = context
        else:
            cache = model.init_cache(1, context + tokens + 8)
            for x in (*cache.k, *cache.v):
                x.normal_()

            def reset(c):
                c.t = context
    reset(cache)
    return cache, prompt[:, -1], reset


def _time_decode(model, cache, tok, reset, tokens: int, device, compile: bool = False
                 ) -> tuple[float, Optional[float]]:
    """Mean seconds per token of greedy decoding (:meth:`decode`, the loop of
    ``generate``), and the fraction of spiking neurons that fire on one more token."""
    reset(cache)
    rate = None
    with torch.inference_mode():
        logits, _ = model.step(tok, cache, compile=compile)     # the prompt's last token
        _sync(device)
        t0 = time.perf_counter()
        out = model.decode(logits, cache, tokens + 1, temperature=0, compile=compile)
        _sync(device)
        dt = (time.perf_counter() - t0) / tokens
    if isinstance(model, AMSNet):
        rate = _firing_rate(model, cache, out[:, -1])
    return dt, rate


def _firing_rate(model: AMSNet, cache, tok) -> float:
    """Fraction of AM-SU and channel-mixing neurons that fire on one more token."""
    seen: list = []
    with torch.inference_mode():
        model._step(tok, cache, model._decode_tensors(), record=seen)
    return sum(float((s != 0).float().mean()) for s in seen) / max(1, len(seen))


def _models(d_model, n_layer, n_head, checkpoint, device):
    if checkpoint:
        am, _ = load_model(checkpoint, device)
        if am.config.arch != "amsnet":
            raise ValueError(f"--checkpoint must hold an AM-SNet, got arch {am.config.arch!r}")
    else:
        # untrained default weights leave the AM-SU silent (docs/lm.md); nn.Linear-sized
        # synapses and gain make ~25% of the neurons fire, more than trained models do
        # (2-14%), so the event-driven read-out is not flattered
        torch.manual_seed(0)
        am = build_model(AMSNetConfig(n_layer=n_layer, d_model=d_model, n_head=n_head,
                                      synapse_init=1.0, astro_gain=1.0)).to(device)
    torch.manual_seed(0)
    tf = build_model(transformer_twin(am.config)).to(device)
    return am.eval(), tf.eval()


def bench_generate(contexts=(512, 2048, 8192, 16384), d_model: int = 256, n_layer: int = 4,
                   n_head: int = 4, tokens: int = 64, repeats: int = 5, threads: int = 1,
                   device: str = "cpu", checkpoint: Optional[str] = None,
                   rss: bool = True, compile: bool = False) -> list[dict]:
    """Per-token latency and memory against context length; prints and returns rows.

    ``compile``: also time both models' decode steps under ``torch.compile``
    (columns ``*_compiled_ms``), interleaved with the eager ones.
    """
    contexts = [positive_int("each context", L) for L in contexts]
    for name, value in (("tokens", tokens), ("repeats", repeats), ("threads", threads)):
        positive_int(name, value)
    dev = resolve_device(device)
    torch.set_num_threads(threads)
    am, tf = _models(d_model, n_layer, n_head, checkpoint, dev)
    cfg = am.config
    print(f"bench generate: d_model={cfg.d_model}, n_layer={cfg.n_layer}, n_head={cfg.n_head}, "
          f"batch 1, {tokens} tokens x {repeats} interleaved rounds, {threads} thread(s), "
          f"{dev}; params AM-SNet {am.num_params():,}, Transformer {tf.num_params():,}"
          + (f"; weights from {checkpoint}" if checkpoint else "; untrained weights"))
    runs = [("am", am, False), ("tf", tf, False)]
    if compile:
        runs += [("am_c", am, True), ("tf_c", tf, True)]
    rows = []
    for L in contexts:
        setups = {name: decode_setup(m, L, tokens) for name, m, _ in runs[:2]}
        setups.update(am_c=setups["am"], tf_c=setups["tf"])
        for name, m, comp in runs:                            # warm-up (and compilation)
            t0 = time.perf_counter()
            _time_decode(m, *setups[name], min(8, tokens), dev, comp)
            if comp and not rows:
                print(f"  compile + warm-up {'AM-SNet' if name == 'am_c' else 'Transformer'}: "
                      f"{time.perf_counter() - t0:.1f} s", flush=True)
        model = {name: (m, comp) for name, m, comp in runs}
        res = _interleaved(model, repeats, lambda name: _time_decode(
            model[name][0], *setups[name], tokens, dev, model[name][1]))
        times = {name: [dt for dt, _ in r] for name, r in res.items()}
        rate = res["am"][-1][1]                  # the firing rate of the last round
        row = {"context": L, "amsnet_ms": 1e3 * statistics.median(times["am"]),
               "transformer_ms": 1e3 * statistics.median(times["tf"]),
               "amsnet_state_mb": setups["am"][0].nbytes() / 2**20,
               "transformer_cache_mb": setups["tf"][0].nbytes() / 2**20,
               "amsnet_firing_rate": rate}
        row["speedup"] = row["transformer_ms"] / row["amsnet_ms"]
        if compile:
            row["amsnet_compiled_ms"] = 1e3 * statistics.median(times["am_c"])
            row["transformer_compiled_ms"] = 1e3 * statistics.median(times["tf_c"])
            row["speedup_compiled"] = row["transformer_compiled_ms"] / row["amsnet_compiled_ms"]
        if dev.type == "cuda":
            for name, m in (("amsnet", am), ("transformer", tf)):
                torch.cuda.reset_peak_memory_stats(dev)
                c, tok, reset = decode_setup(m, L, tokens)
                _time_decode(m, c, tok, reset, 4, dev)
                row[f"{name}_peak_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
                del c
        elif rss:
            for name in ("amsnet", "transformer"):
                row[f"{name}_peak_mb"] = _rss_probe(name, L, cfg.to_dict(), checkpoint)
        rows.append(row)
        print(_fmt_row(row), flush=True)
    print(_table(rows))
    print(_targets(rows))
    return rows


def _fmt_row(r: dict) -> str:
    s = (f"  context {r['context']}: AM-SNet {r['amsnet_ms']:.3f} ms/token, Transformer "
         f"{r['transformer_ms']:.3f} ms/token ({r['speedup']:.2f}x)")
    if "speedup_compiled" in r:
        s += (f"; compiled: AM-SNet {r['amsnet_compiled_ms']:.3f}, Transformer "
              f"{r['transformer_compiled_ms']:.3f} ({r['speedup_compiled']:.2f}x)")
    return s


def _table(rows: list[dict]) -> str:
    peak = "amsnet_peak_mb" in rows[0]
    comp = "speedup_compiled" in rows[0]
    head = f"{'context':>8} {'AM-SNet ms':>11} {'TF ms':>9} {'speed-up':>9}"
    if comp:
        head += f" {'AM comp ms':>11} {'TF comp ms':>11} {'speed-up':>9}"
    head += f" {'state MiB':>10} {'KV MiB':>9}"
    if peak:
        head += f" {'AM peak MiB':>12} {'TF peak MiB':>12}"
    head += f" {'AM firing':>10}"
    lines = [head, "-" * len(head)]
    for r in rows:
        s = (f"{r['context']:>8} {r['amsnet_ms']:>11.3f} {r['transformer_ms']:>9.3f} "
             f"{r['speedup']:>8.2f}x")
        if comp:
            s += (f" {r['amsnet_compiled_ms']:>11.3f} {r['transformer_compiled_ms']:>11.3f} "
                  f"{r['speedup_compiled']:>8.2f}x")
        s += f" {r['amsnet_state_mb']:>10.3f} {r['transformer_cache_mb']:>9.2f}"
        if peak:
            s += f" {r['amsnet_peak_mb']:>12.1f} {r['transformer_peak_mb']:>12.1f}"
        s += f" {r['amsnet_firing_rate']:>10.3f}"
        lines.append(s)
    return "\n".join(lines)


TARGETS = {2048: 2.0, 16384: 8.0}       # issue 4 item 7: speed-up at these contexts


def _targets(rows: list[dict]) -> str:
    """The issue's targets, met or missed, from the rows of one run."""
    out = ["targets (issue 4 item 7):"]
    by = {r["context"]: r for r in rows}
    for L, goal in TARGETS.items():
        if L not in by:
            out.append(f"  {goal:g}x faster at {L}: not measured (context {L} not run)")
            continue
        r = by[L]
        for key, label in (("speedup", "eager"), ("speedup_compiled", "compiled")):
            if key in r:
                out.append(f"  {goal:g}x faster at {L}, {label}: {r[key]:.2f}x "
                           f"{'met' if round(r[key], 2) >= goal else 'MISSED'}")
    states = {round(r["amsnet_state_mb"], 6) for r in rows}
    flat = len(states) == 1
    line = f"  memory flat in context: state {rows[0]['amsnet_state_mb']:.3f} MiB at every context"
    if not flat:
        line = f"  memory flat in context: state sizes differ {sorted(states)}"
    if len(rows) > 1 and "amsnet_peak_mb" in rows[0]:
        am = rows[-1]["amsnet_peak_mb"] - rows[0]["amsnet_peak_mb"]
        tf = rows[-1]["transformer_peak_mb"] - rows[0]["transformer_peak_mb"]
        # the AM-SNet's peak may move by allocator noise; it must not grow like the KV cache
        flat = flat and am < max(0.1 * tf, 2.0)
        line += (f"; peak memory {rows[0]['context']} -> {rows[-1]['context']}: AM-SNet "
                 f"{am:+.1f} MiB, Transformer {tf:+.1f} MiB")
    out.append(line + (" met" if flat else " MISSED"))
    return "\n".join(out)


def _rss_probe(arch: str, context: int, cfg: dict, checkpoint: Optional[str]) -> float:
    """Peak RSS (MiB) of a fresh process that sets up ``context`` and decodes 16 tokens.

    Read from ``VmHWM`` of ``/proc/self/status`` (the peak of this process's own
    memory; ``ru_maxrss`` would carry the parent's peak across fork + exec).
    """
    code = ("import sys, json; from astro_neuron.apps.bench.lm import _rss_child; "
            "_rss_child(json.loads(sys.argv[1]))")
    arg = json.dumps({"arch": arch, "context": context, "cfg": cfg, "checkpoint": checkpoint})
    p = subprocess.run([sys.executable, "-c", code, arg], capture_output=True, text=True,
                       timeout=600)
    if p.returncode != 0:
        raise RuntimeError(f"memory probe failed:\n{p.stderr[-2000:]}")
    return float(p.stdout.strip().splitlines()[-1])


def _rss_child(a: dict) -> None:
    torch.set_num_threads(1)
    cfg = config_from_dict({**a["cfg"], "arch": "amsnet"})
    if a["arch"] == "amsnet" and a["checkpoint"]:
        model, _ = load_model(a["checkpoint"])
    else:
        model = build_model(cfg if a["arch"] == "amsnet" else transformer_twin(cfg))
    model.eval()
    prompt = torch.randint(0, model.config.vocab_size, (1, 256),
                           generator=torch.Generator().manual_seed(0))
    cache, tok, reset = decode_setup(model, a["context"], 16, prompt=prompt)
    _time_decode(model, cache, tok, reset, 16, torch.device("cpu"))
    with open("/proc/self/status") as fh:
        hwm = next(line for line in fh if line.startswith("VmHWM:"))
    print(int(hwm.split()[1]) / 1024)                       # kB -> MiB


def bench_forms(d_model: int = 128, n_layer: int = 2, block_size: int = 256,
                batch_size: int = 8, repeats: int = 3, threads: int = 1,
                device: str = "cpu") -> list[dict]:
    """Training tokens/s of AM-SNet's chunked form against its recurrent step loop."""
    for name, value in (("batch_size", batch_size), ("repeats", repeats),
                        ("threads", threads)):
        positive_int(name, value)
    dev = resolve_device(device)
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = AMSNetConfig(n_layer=n_layer, d_model=d_model, n_head=max(1, d_model // 64),
                       block_size=block_size)
    model = AMSNet(cfg).to(dev)
    x = torch.randint(0, 256, (batch_size, block_size), device=dev)
    print(f"bench train --forms: d_model={d_model}, n_layer={n_layer}, batch {batch_size} x "
          f"{block_size} tokens, forward + backward, {threads} thread(s), {dev}")
    modes = ("chunked", "recurrent", "loop")
    times: dict = {m: [] for m in modes}
    for m in modes:                                          # warm-up
        _, loss = model(x, x, mode=m)
        loss.backward()
    for _ in range(repeats):
        for m in modes:
            model.zero_grad(set_to_none=True)
            _sync(dev)
            t0 = time.perf_counter()
            _, loss = model(x, x, mode=m)
            loss.backward()
            _sync(dev)
            times[m].append(time.perf_counter() - t0)
    n = batch_size * block_size
    rows = [{"mode": m, "s_per_batch": statistics.median(times[m]),
             "tokens_per_s": n / statistics.median(times[m])} for m in modes]
    base = rows[0]["tokens_per_s"]
    print(f"{'form':<34} {'s/batch':>9} {'tokens/s':>10} {'chunked is':>11}")
    labels = {"chunked": "chunked (parallel, training)",
              "recurrent": "step loop (projections hoisted)",
              "loop": "step loop (reference)"}
    for r in rows:
        print(f"{labels[r['mode']]:<34} {r['s_per_batch']:>9.3f} {r['tokens_per_s']:>10,.0f} "
              f"{base / r['tokens_per_s']:>10.2f}x")
    return rows


def matmul_peak(threads: int, device, n: int = 2048, repeats: int = 5) -> float:
    """Measured fp32 matrix-multiply peak (FLOP/s): the best of ``repeats`` products
    of two ``n x n`` float32 matrices at ``threads`` threads."""
    torch.set_num_threads(threads)
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best


def matmul_params(model: torch.nn.Module) -> int:
    """Parameters that enter one matrix product per token: the weights of the linear
    layers and of the AM-SU's fused projection, and the embedding (it is also the tied
    head, a product; the lookup is not). Norm gains, biases, decays, thresholds and
    gains act element-wise and are left out (1.6% of the d_model 64 AM-SNet, 0.3% of
    its Transformer). ``6 x matmul_params`` is the training FLOPs per token of the
    products: 2 forward, 2 for the input gradient, 2 for the weight gradient."""
    return sum(m.weight.numel() for m in model.modules()
               if isinstance(m, (torch.nn.Linear, torch.nn.Embedding, AMSU)))


def scan_flops_per_token(cfg: AMSNetConfig, T: Optional[int] = None) -> float:
    """Training FLOPs per token of the AM-SNet's chunked astrocyte scans (all layers),
    outside the 6 x parameters count, as :class:`~astro_neuron.functional.scan`'s
    ``_AstroChunks`` runs them: per astrocyte and chunk of ``C`` steps the forward
    runs the intra-chunk products ``q k^T`` (2 C^2 d_k, the full ``C x C`` block, then
    masked) and ``S v`` (2 C^2 d_v), the chunk's state ``k^T v`` (2 C d_k d_v) and the
    inter-chunk read-out ``q H`` (2 C d_k d_v); the hand-written backward runs two
    products of each size per forward product (2x the forward). ``T``: the sequence
    length, for the shorter last chunk when ``C`` does not divide it (None: full
    chunks of ``chunk_size``). Fixed retention with decays that keep the chunk size
    (above ``exp(-16 / (C - 1))``, :func:`~astro_neuron.functional.scan.stable_chunk_size`),
    as in every ``bench train`` model."""
    if cfg.arch != "amsnet" or not cfg.astrocyte:
        return 0.0
    A = cfg.n_head
    dk = dv = cfg.d_model // cfg.n_head
    if T is None or T == 0:
        chunks, n_tok = [(cfg.chunk_size, 1)], 1        # (chunk length, its tokens)
    else:
        C = min(cfg.chunk_size, T)
        full, rest = (T // C) * C, T % C                 # as functional.scan splits T
        chunks, n_tok = [(C, full), (rest, rest)], T
    fwd = sum(A * (2 * cc * (dk + dv) + 4 * dk * dv) * n for cc, n in chunks) / n_tok
    return 3.0 * fwd * cfg.n_layer


def attention_flops_per_token(cfg: AMSNetConfig, T: int) -> float:
    """Training FLOPs per token of causal attention outside 6 x parameters: token
    ``t`` (1-based) attends to ``t`` positions, ``q k^T`` and ``a v`` 2 d each per
    position, so ``4 d (T + 1) / 2`` per token and layer on average forward; the
    backward twice that (``dS = dO v^T``, ``dv = a^T dO``, ``dq = dS k``,
    ``dk = dS^T q``). The masked half of the ``T x T`` block is not counted (a kernel
    that computes it, like the math kernel, does ``2T / (T + 1)`` times as much)."""
    if cfg.arch != "transformer":
        return 0.0
    return 3.0 * cfg.n_layer * 4 * cfg.d_model * (T + 1) / 2


def train_flops_per_token(model: torch.nn.Module, T: int) -> float:
    """Model FLOPs per token of one training step (forward + backward) at length ``T``:
    ``6 x`` :func:`matmul_params` plus the astrocyte scan's or the attention's own
    products. Element-wise work (spikes, membrane scans, norms, rotary, softmax)
    is not counted."""
    cfg = model.config
    return (6.0 * matmul_params(model) + scan_flops_per_token(cfg, T)
            + attention_flops_per_token(cfg, T))


TRAIN_TARGETS = "AM-SNet >= 1x the Transformer everywhere, >= 2x at T >= 1024; " \
                "astrocyte <= 1.5x the astrocyte-off ablation at equal parameters (issue 14)"
TRAIN_MODELS = ("amsnet", "transformer", "astro_off", "astro_eq")


def train_configs(cfg: AMSNetConfig) -> dict[str, AMSNetConfig]:
    """The four models ``bench train`` times for one AM-SNet config: the AM-SNet, the
    same-size Transformer, the astrocyte-off ablation as the switch leaves it (the
    K, V, Q projections gone: fewer parameters) and the same ablation at equal
    parameters (:func:`astro_neuron.lm.model.equal_params_ablation`)."""
    return {"amsnet": cfg, "transformer": transformer_twin(cfg),
            "astro_off": replace(cfg, astrocyte=False),
            "astro_eq": equal_params_ablation(cfg)}


def bench_train(d_models=(64, 128, 256, 512), lengths=(256, 1024, 4096),
                threads=(0, 1), n_layer: int = 2, tokens: int = 4096, repeats: int = 3,
                device: str = "cpu", forms: bool = False, peak_n: int = 2048) -> list[dict]:
    """Training tokens/s (forward + backward) of AM-SNet, the same-size Transformer and
    the astrocyte-off ablation, as switched off and at equal parameters
    (:func:`train_configs`), at every (d_model, T, threads); prints the table, the
    ratios measured in the same run (models interleaved, median of ``repeats``), MFU
    against the measured fp32 matmul peak at each thread count, the FLOP-parity
    ceiling of each ratio (:func:`ceiling`) and the targets.

    ``threads``: thread counts; 0 is torch's default. A batch holds about ``tokens``
    tokens (``max(1, tokens // T)`` sequences). ``forms``: instead, the chunked form
    against the step loop (:func:`bench_forms`, first d_model and T, first thread count).
    ``peak_n``: size of the square matrices of the peak measurement.
    """
    default_threads = torch.get_num_threads()
    thr = [default_threads if t == 0 else t for t in threads]
    if forms:
        return bench_forms(d_model=d_models[0], n_layer=n_layer, block_size=lengths[0],
                           batch_size=max(1, tokens // lengths[0]), repeats=repeats,
                           threads=thr[0], device=device)
    dev = resolve_device(device)
    peaks = {t: matmul_peak(t, dev, peak_n) for t in sorted(set(thr))}
    print(f"bench train: n_layer={n_layer}, ~{tokens} tokens per batch, forward + backward, "
          f"median of {repeats} interleaved rounds, {dev}; measured fp32 matmul peak "
          + ", ".join(f"{p / 1e9:.1f} GFLOP/s at {t} thread(s)" for t, p in peaks.items()))
    rows = []
    for t in thr:
        for d in d_models:
            for T in lengths:
                torch.set_num_threads(t)
                B = max(1, tokens // T)
                base = dict(n_layer=n_layer, d_model=d, n_head=max(1, d // 64), block_size=T)
                models = {}
                for name, cfg in train_configs(AMSNetConfig(**base)).items():
                    torch.manual_seed(0)
                    models[name] = build_model(cfg).to(dev)
                x = torch.randint(0, 256, (B, T), device=dev)
                times: dict = {name: [] for name in models}
                for m in models.values():                    # warm-up
                    _, loss = m(x, x)
                    loss.backward()
                for _ in range(repeats):
                    for name, m in models.items():
                        m.zero_grad(set_to_none=True)
                        _sync(dev)
                        t0 = time.perf_counter()
                        _, loss = m(x, x)
                        loss.backward()
                        _sync(dev)
                        times[name].append(time.perf_counter() - t0)
                row = {"threads": t, "d_model": d, "T": T, "batch": B}
                for name, m in models.items():
                    tps = B * T / statistics.median(times[name])
                    flops = train_flops_per_token(m, T)
                    row[f"{name}_params"] = m.num_params()
                    row[f"{name}_flops_per_token"] = flops
                    row[f"{name}_tokens_per_s"] = tps
                    row[f"{name}_spread"] = (max(times[name]) - min(times[name])) \
                        / statistics.median(times[name])
                    row[f"{name}_mfu"] = flops * tps / peaks[t]
                row["am_vs_tf"] = row["amsnet_tokens_per_s"] / row["transformer_tokens_per_s"]
                for name, key in (("astro_off", "astro_cost"), ("astro_eq", "astro_cost_eq")):
                    row[key] = row[f"{name}_tokens_per_s"] / row["amsnet_tokens_per_s"]
                row.update(ceiling(row))
                rows.append(row)
                print(_train_row(row), flush=True)
    print(_train_table(rows))
    print(_train_targets(rows))
    return rows


def ceiling(row: dict) -> dict:
    """The FLOP-parity ceiling of one ``bench train`` point (a row with the three
    models' ``*_flops_per_token``, and ``am_vs_tf`` / ``astro_cost`` when measured).

    ``parity``: the Transformer's training FLOPs per token over the AM-SNet's, i.e. the
    AM/TF speed ratio the AM-SNet would have at the Transformer's MFU;
    ``astro_parity``: the AM-SNet's FLOPs over the astrocyte-off ablation's, the
    astrocyte's cost at equal MFU (``astro_eq_parity``: the same against the ablation
    at equal parameters, where the row has it); ``of_ceiling``: the measured AM/TF over
    ``parity`` (= AM MFU / TF MFU); ``need_1x`` / ``need_goal``: the AM-SNet's MFU, as
    a multiple of the Transformer's, that 1x and the point's target (2x at
    T >= 1024, else 1x) need."""
    am, tf = row["amsnet_flops_per_token"], row["transformer_flops_per_token"]
    out = {"parity": tf / am, "astro_parity": am / row["astro_off_flops_per_token"],
           "need_1x": am / tf, "need_goal": _goal(row["T"]) * am / tf}
    if "astro_eq_flops_per_token" in row:
        out["astro_eq_parity"] = am / row["astro_eq_flops_per_token"]
    if "am_vs_tf" in row:
        out["of_ceiling"] = row["am_vs_tf"] / out["parity"]
    return out


def _goal(T: int) -> float:
    """The issue-14 target of AM/TF at length T."""
    return 2.0 if T >= 1024 else 1.0


def _astro(r: dict) -> tuple:
    """The astrocyte's cost the targets judge (against the ablation at equal parameters
    where the row has it) and its equal-MFU ratio."""
    if "astro_cost_eq" in r:
        return r["astro_cost_eq"], r["astro_eq_parity"]
    return r["astro_cost"], r["astro_parity"]


def _train_row(r: dict) -> str:
    eq = (f", {r['astro_cost_eq']:.2f}x against the ablation at equal parameters"
          if "astro_cost_eq" in r else "")
    return (f"  threads {r['threads']}, d_model {r['d_model']}, T {r['T']}: AM-SNet "
            f"{r['amsnet_tokens_per_s']:,.0f} tok/s, Transformer "
            f"{r['transformer_tokens_per_s']:,.0f}, astrocyte off "
            f"{r['astro_off_tokens_per_s']:,.0f} (AM/TF {r['am_vs_tf']:.2f}x of a "
            f"{r['parity']:.2f}x FLOP-parity ceiling, astrocyte cost {r['astro_cost']:.2f}x"
            f"{eq})")


def _train_table(rows: list[dict]) -> str:
    eq = all("astro_cost_eq" in r for r in rows)
    names = TRAIN_MODELS if eq else TRAIN_MODELS[:3]
    head = (f"{'thr':>3} {'d':>4} {'T':>5} {'B':>3} {'AM tok/s':>9} {'TF tok/s':>9} "
            f"{'off tok/s':>9} {'AM/TF':>6} {'parity':>6} {'of ceil':>7} {'astro':>6} "
            f"{'astro FL':>8} " + (f"{'eq tok/s':>9} {'astro eq':>8} {'eq FL':>6} " if eq
                                    else "")
            + f"{'AM MFU':>7} {'TF MFU':>7} {'off MFU':>7} "
            f"{'AM par':>9} {'TF par':>9} {'off par':>9} " + (f"{'eq par':>9} " if eq else "")
            + f"{'spread':>6}")
    lines = [head, "-" * len(head)]
    for r in rows:
        spread = max(r[f"{n}_spread"] for n in names)
        lines.append(
            f"{r['threads']:>3} {r['d_model']:>4} {r['T']:>5} {r['batch']:>3} "
            f"{r['amsnet_tokens_per_s']:>9,.0f} {r['transformer_tokens_per_s']:>9,.0f} "
            f"{r['astro_off_tokens_per_s']:>9,.0f} {r['am_vs_tf']:>5.2f}x "
            f"{r['parity']:>5.2f}x {100 * r['of_ceiling']:>6.0f}% "
            f"{r['astro_cost']:>5.2f}x {r['astro_parity']:>7.2f}x "
            + (f"{r['astro_eq_tokens_per_s']:>9,.0f} {r['astro_cost_eq']:>7.2f}x "
               f"{r['astro_eq_parity']:>5.2f}x " if eq else "")
            + f"{100 * r['amsnet_mfu']:>6.1f}% {100 * r['transformer_mfu']:>6.1f}% "
            f"{100 * r['astro_off_mfu']:>6.1f}% {r['amsnet_params']:>9,} "
            f"{r['transformer_params']:>9,} {r['astro_off_params']:>9,} "
            + (f"{r['astro_eq_params']:>9,} " if eq else "") + f"{100 * spread:>5.0f}%")
    lines.append("AM/TF: AM-SNet tokens/s over the Transformer's; parity: the Transformer's "
                 "training FLOPs per token over the AM-SNet's (the AM/TF ceiling at equal "
                 "MFU); of ceil: AM/TF over parity (= AM MFU / TF MFU); astro: "
                 "astrocyte-off tokens/s over AM-SNet's (the astrocyte's cost; the ablation "
                 "without the K, V, Q projections, fewer parameters); astro FL: the same at "
                 "equal MFU (FLOPs ratio); "
                 + ("eq: the ablation at equal parameters (those projections' weights given "
                    "back as channel-mixing neurons), astro eq / eq FL its ratios; " if eq
                    else "")
                 + "MFU: (6 x matmul params + scan or causal-attention FLOPs) x tokens/s "
                 "over the measured matmul peak; spread: (max - min) / median of the "
                 "repeats, worst model")
    return "\n".join(lines)


def _train_targets(rows: list[dict]) -> str:
    out = [f"targets ({TRAIN_TARGETS}):"]
    for r in rows:
        goal = _goal(r["T"])
        astro, astro_fl = _astro(r)
        ok = round(r["am_vs_tf"], 2) >= goal and round(astro, 2) <= 1.5
        if r["parity"] >= goal:
            reach = "reachable at equal MFU"
        else:
            # the AM-SNet's MFU the target needs at the Transformer's measured MFU
            peak = r["need_goal"] * r["transformer_mfu"]
            reach = (f"needs AM MFU >= {r['need_goal']:.2f}x the Transformer's, "
                     f"{peak:.0%} of the measured peak"
                     + (": beyond the peak, out of reach" if peak > 1 else ""))
        which = " at equal parameters" if "astro_cost_eq" in r else ""
        out.append(f"  threads {r['threads']}, d {r['d_model']}, T {r['T']}: AM/TF "
                   f"{r['am_vs_tf']:.2f}x (>= {goal:g}x; ceiling {r['parity']:.2f}x, "
                   f"{reach}), astrocyte{which} {astro:.2f}x (<= 1.5x; "
                   f"{astro_fl:.2f}x at equal MFU): {'met' if ok else 'MISSED'}")
    return "\n".join(out)


class MiniGPT(torch.nn.Module):
    """A minimal GPT with a KV cache, written for this benchmark only and independent of
    the project's Transformer (:mod:`astro_neuron.lm.baselines`): learned absolute
    positions, pre-LayerNorm blocks, a GELU MLP of width 4 d, biases, a tied head, and
    decoding with :func:`torch.nn.functional.scaled_dot_product_attention` over a key /
    value cache preallocated for the whole context. What someone would write from the
    GPT-2 recipe; its weights are random (decoding cost does not depend on them)."""

    def __init__(self, d_model: int, n_layer: int, n_head: int, max_len: int,
                 vocab: int = 256) -> None:
        super().__init__()
        nn = torch.nn
        self.d, self.h = d_model, n_head
        self.wte = nn.Embedding(vocab, d_model)
        self.wpe = nn.Embedding(max_len, d_model)
        self.layers = nn.ModuleList()
        for _ in range(n_layer):
            self.layers.append(nn.ModuleDict(dict(
                ln1=nn.LayerNorm(d_model), qkv=nn.Linear(d_model, 3 * d_model),
                proj=nn.Linear(d_model, d_model), ln2=nn.LayerNorm(d_model),
                fc=nn.Linear(d_model, 4 * d_model), fc2=nn.Linear(4 * d_model, d_model))))
        self.ln_f = nn.LayerNorm(d_model)
        for p in self.parameters():
            if p.dim() > 1:
                torch.nn.init.normal_(p, std=0.02)

    def num_params(self) -> int:
        return sum(p.numel() for n, p in self.named_parameters() if not n.startswith("wpe"))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """The whole sequence ``(B, T)`` at once (causal attention, no cache) -> logits
        ``(B, T, V)``: the reference the cached :meth:`step` is tested against."""
        F = torch.nn.functional
        B, T = idx.shape
        hd = self.d // self.h
        x = self.wte(idx) + self.wpe.weight[:T]
        for L in self.layers:
            q, k, v = L["qkv"](L["ln1"](x)).view(B, T, 3, self.h, hd).permute(2, 0, 3, 1, 4)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + L["proj"](y.transpose(1, 2).reshape(B, T, self.d))
            x = x + L["fc2"](F.gelu(L["fc"](L["ln2"](x))))
        return F.linear(self.ln_f(x), self.wte.weight)

    @torch.inference_mode()
    def new_cache(self, batch: int, capacity: int) -> list:
        """Keys and values ``(B, H, capacity, d/H)`` per layer, memory touched (filled)."""
        shape = (batch, self.h, capacity, self.d // self.h)
        w = self.wte.weight
        return [(torch.full(shape, 0.01, dtype=w.dtype, device=w.device),
                 torch.full(shape, 0.01, dtype=w.dtype, device=w.device))
                for _ in self.layers]

    @torch.inference_mode()
    def step(self, tok: torch.Tensor, cache: list, pos: int) -> torch.Tensor:
        """One token per sequence ``(B,)`` at position ``pos`` -> logits ``(B, V)``."""
        F = torch.nn.functional
        B = tok.shape[0]
        hd = self.d // self.h
        x = self.wte.weight[tok] + self.wpe.weight[pos]                   # (B, d)
        for L, (K, V) in zip(self.layers, cache):
            q, k, v = L["qkv"](L["ln1"](x)).view(B, 3, self.h, 1, hd).unbind(1)
            K[:, :, pos:pos + 1] = k
            V[:, :, pos:pos + 1] = v
            y = F.scaled_dot_product_attention(q, K[:, :, :pos + 1], V[:, :, :pos + 1])
            x = x + L["proj"](y.reshape(B, self.d))
            x = x + L["fc2"](F.gelu(L["fc"](L["ln2"](x))))
        return F.linear(self.ln_f(x), self.wte.weight)

    @torch.inference_mode()
    def decode(self, tok: torch.Tensor, cache: list, pos: int, n: int) -> torch.Tensor:
        """Greedy: ``n`` tokens after ``tok`` at ``pos``."""
        out = []
        for i in range(n):
            tok = self.step(tok, cache, pos + i).argmax(-1)
            out.append(tok)
        return torch.stack(out, 1)


def _vm(key: str) -> Optional[float]:
    """``VmRSS`` / ``VmHWM`` of this process in bytes (Linux), else None."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return 1024.0 * int(line.split()[1])
    except OSError:
        return None
    return None


def _vm_available() -> Optional[float]:
    """``MemAvailable`` of ``/proc/meminfo`` in bytes (Linux), else None."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return 1024.0 * int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    """Reset this process's peak RSS (``VmHWM``; Linux ``clear_refs`` 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


SERVE_TARGETS = "AM-SNet >= 2x per token at 2k against both baselines at batch 1; " \
                "ahead of both at every batch size at 16k (issue 13 item 4)"


def _serve_cache_bytes(d: int, n_layer: int, B: int, L: int) -> float:
    return 4.0 * 2 * n_layer * B * (L + 64) * d


def bench_serve(batches=(1, 4, 16, 64), contexts=(2048, 16384), threads=(0, 1),
                d_model: int = 256, n_layer: int = 4, n_head: int = 4, tokens: int = 16,
                repeats: int = 3, device: str = "cpu", checkpoint: Optional[str] = None,
                memory: bool = True) -> list[dict]:
    """Batched greedy generation of AM-SNet, the project's Transformer and the
    independent :class:`MiniGPT`: tokens/s (``B * tokens / time``) and peak memory
    after a context of ``L`` tokens, for every batch ``B`` and thread count.

    Each repeat sets every model up afresh (AM-SNet: the state after reading 256
    tokens of the built-in validation split per sequence, then at position L; the
    KV caches filled to L) and times ``tokens`` steps, the models interleaved, so
    that load from other processes hits all alike; the median is reported and the
    spread ``(max - min) / median`` across repeats. Only one model's cache is alive
    at a time. Peak memory (CPU): the rise of this process's peak RSS from set-up to
    the end of decoding, the peak reset before each model (``/proc/self/clear_refs``).
    ``threads``: 0 is torch's default.
    """
    for name, value in (("tokens", tokens), ("repeats", repeats)):
        positive_int(name, value)
    batches = [positive_int("each batch size", b) for b in batches]
    contexts = [positive_int("each context", L) for L in contexts]
    dev = resolve_device(device)
    default_threads = torch.get_num_threads()
    thr = [default_threads if t == 0 else positive_int("each thread count", t) for t in threads]
    am, tf = _models(d_model, n_layer, n_head, checkpoint, dev)
    cfg = am.config
    torch.manual_seed(0)
    gpt = MiniGPT(cfg.d_model, cfg.n_layer, cfg.n_head, max(contexts) + tokens + 8).to(dev).eval()
    print(f"bench generate --serving: d_model={cfg.d_model}, n_layer={cfg.n_layer}, "
          f"n_head={cfg.n_head}; {tokens} greedy tokens x {repeats} interleaved rounds per "
          f"cell; threads {thr} (torch default {default_threads}); {dev}; params AM-SNet "
          f"{am.num_params():,}, Transformer {tf.num_params():,}, MiniGPT "
          f"{gpt.num_params():,} (+ positions); "
          + (f"weights from {checkpoint}" if checkpoint else "untrained weights"))
    val = stdlib_corpus().val
    prefilled: dict = {}

    def am_state(B: int):
        if B not in prefilled:
            rows = torch.stack([val[i * 997:i * 997 + 256].long() for i in range(B)])
            with torch.inference_mode():
                _, c = am.prefill(rows.to(dev))
            prefilled[B] = (c, rows[:, -1].to(dev))
        c, tok = prefilled[B]
        with torch.inference_mode():
            new = am.init_cache(B)
            for dst, src in ((new.u, c.u), (new.H, c.H), (new.u_ffn, c.u_ffn)):
                for x, s in zip(dst, src):
                    if x is not None:
                        x.copy_(s)
        return new, tok

    def run_one(name: str, B: int, L: int, n: int):
        """Set one model up at (B, L), decode n tokens: (seconds, peak bytes added or
        None, bytes of its state / cache)."""
        rss0 = _vm("VmRSS")         # the previous model's cache is freed (no gc needed)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
            base_alloc = torch.cuda.memory_allocated(dev)
        peak_ok = dev.type == "cpu" and memory and _reset_peak()
        tok0 = torch.zeros(B, dtype=torch.long, device=dev)
        with torch.inference_mode():
            if name == "am":
                cache, tok0 = am_state(B)
                cache.t = L
                logits, _ = am.step(tok0, cache)
                _sync(dev)
                t0 = time.perf_counter()
                am.decode(logits, cache, n + 1, temperature=0)
            elif name == "tf":
                cache = tf.init_cache(B, L + n + 8)
                for x in (*cache.k, *cache.v):
                    x.fill_(0.01)
                cache.t = L
                logits, _ = tf.step(tok0, cache)
                _sync(dev)
                t0 = time.perf_counter()
                tf.decode(logits, cache, n + 1, temperature=0)
            else:
                cache = gpt.new_cache(B, L + n + 8)
                tok = gpt.step(tok0, cache, L).argmax(-1)
                _sync(dev)
                t0 = time.perf_counter()
                gpt.decode(tok, cache, L + 1, n)
            _sync(dev)
            dt = time.perf_counter() - t0
        peak = None
        if peak_ok and rss0 is not None:
            peak = _vm("VmHWM") - rss0
        elif dev.type == "cuda":
            peak = float(torch.cuda.max_memory_allocated(dev) - base_alloc)
        held = cache.nbytes() if hasattr(cache, "nbytes") else \
            sum(x.numel() * x.element_size() for kv in cache for x in kv)
        del cache
        return dt, peak, held

    names = (("am", "AM-SNet"), ("tf", "Transformer"), ("gpt", "MiniGPT"))
    rows = []
    for t in thr:
        torch.set_num_threads(t)
        for L in contexts:
            for B in batches:
                need = _serve_cache_bytes(cfg.d_model, cfg.n_layer, B, L) * 1.3
                free = _vm_available()
                if dev.type == "cpu" and free is not None and need > free:
                    print(f"  threads {t}, context {L}, batch {B}: skipped (a KV cache needs "
                          f"{need / 2**30:.1f} GiB, more than is free)", flush=True)
                    continue
                for name, _ in names:                                  # warm-up
                    run_one(name, B, L, 2)
                res = _interleaved([n for n, _ in names], repeats,
                                   lambda name: run_one(name, B, L, tokens))
                row = {"threads": t, "context": L, "batch": B}
                for name, r in res.items():
                    times = [dt for dt, _, _ in r]
                    peaks = [pk for _, pk, _ in r if pk is not None]
                    med = statistics.median(times)
                    row[f"{name}_tok_s"] = B * tokens / med
                    row[f"{name}_ms"] = 1e3 * med / tokens
                    row[f"{name}_spread"] = _spread(times)
                    row[f"{name}_peak_mb"] = (max(peaks) / 2**20) if peaks else None
                    row[f"{name}_state_mb"] = r[-1][2] / 2**20     # the last round's
                row["vs_tf"] = row["am_tok_s"] / row["tf_tok_s"]
                row["vs_gpt"] = row["am_tok_s"] / row["gpt_tok_s"]
                rows.append(row)
                print(_serve_row(row), flush=True)
    print(_serve_table(rows))
    print(_serve_targets(rows))
    return rows


def _serve_row(r: dict) -> str:
    return (f"  threads {r['threads']}, context {r['context']}, batch {r['batch']}: tokens/s "
            f"AM-SNet {r['am_tok_s']:,.0f}, Transformer {r['tf_tok_s']:,.0f}, MiniGPT "
            f"{r['gpt_tok_s']:,.0f} (AM/TF {r['vs_tf']:.2f}x, AM/GPT {r['vs_gpt']:.2f}x)")


def _serve_table(rows: list[dict]) -> str:
    def mb(v):
        return f"{v:>8.0f}" if v is not None else f"{'-':>8}"
    head = (f"{'thr':>3} {'ctx':>6} {'B':>3} {'AM tok/s':>9} {'TF tok/s':>9} {'GPT tok/s':>9} "
            f"{'AM/TF':>6} {'AM/GPT':>6} {'AM state':>8} {'KV TF':>8} {'AM peak':>8} "
            f"{'TF peak':>8} {'GPT peak':>8} {'spread':>6}")
    lines = [head, "-" * len(head)]
    for r in rows:
        spread = max(r[f"{n}_spread"] for n in ("am", "tf", "gpt"))
        lines.append(
            f"{r['threads']:>3} {r['context']:>6} {r['batch']:>3} {r['am_tok_s']:>9,.0f} "
            f"{r['tf_tok_s']:>9,.0f} {r['gpt_tok_s']:>9,.0f} {r['vs_tf']:>5.2f}x "
            f"{r['vs_gpt']:>5.2f}x {r['am_state_mb']:>8.2f} {r['tf_state_mb']:>8.1f} "
            f"{mb(r['am_peak_mb'])} {mb(r['tf_peak_mb'])} "
            f"{mb(r['gpt_peak_mb'])} {100 * spread:>5.0f}%")
    lines.append("tok/s: batch x tokens / seconds (median of the rounds); AM/TF, AM/GPT: "
                 "AM-SNet's tokens/s over the baseline's (= per-token speed-up); AM state, KV TF: "
                 "MiB held by the AM-SNet's state and the Transformer's KV cache (MiniGPT's "
                 "cache is the same size); peak: MiB of memory added by setting the model up "
                 "and decoding (CPU: rise of the peak RSS; below ~32 MiB glibc reuses freed "
                 "memory, so small rises read 0); spread: (max - min) / median "
                 "of the rounds, worst model")
    return "\n".join(lines)


def _serve_targets(rows: list[dict]) -> str:
    out = [f"targets ({SERVE_TARGETS}):"]
    for t in sorted({r["threads"] for r in rows}):
        mine = [r for r in rows if r["threads"] == t]
        b1 = [r for r in mine if r["context"] == 2048 and r["batch"] == 1]
        if b1:
            r = b1[0]
            ok = round(r["vs_tf"], 2) >= 2 and round(r["vs_gpt"], 2) >= 2
            out.append(f"  threads {t}, 2k, batch 1: AM/TF {r['vs_tf']:.2f}x, AM/GPT "
                       f"{r['vs_gpt']:.2f}x (>= 2x): {'met' if ok else 'MISSED'}")
        else:
            out.append(f"  threads {t}, 2k, batch 1: not measured")
        long = [r for r in mine if r["context"] == 16384]
        if long:
            bad = [r["batch"] for r in long if min(r["vs_tf"], r["vs_gpt"]) <= 1.0]
            worst = min(min(r["vs_tf"], r["vs_gpt"]) for r in long)
            out.append(f"  threads {t}, 16k, batches {[r['batch'] for r in long]}: worst ratio "
                       f"{worst:.2f}x (> 1x): "
                       + ("met" if not bad else f"MISSED at batch {bad}"))
        else:
            out.append(f"  threads {t}, 16k: not measured")
    return "\n".join(out)
