"""Integer networks on the command line: ``quantize``, ``export``, ``simulate``,
``bench simulate``. Lava is imported only by the engine that runs on it (neuromorphic.engines.lava).

Inputs:

* ``quantize`` reads a MemoryNet checkpoint (``astro-neuron demo`` writes
  ``out/demo/memory_amsu.safetensors``; data only, docs/lm.md), calibrates on inputs
  drawn from its task, and writes the integer network (``.h5``), with ``--qat-steps N``
  of quantization-aware fine-tuning first.
* ``simulate`` reads an ``.h5``; input spikes come from ``--input FILE.npy``
  (``[T, n_in]`` or ``[T, B, n_in]``), else from the task stored in the file by
  ``quantize`` (``--samples``, ``--seed``), else random spikes (``--steps``, ``--rate``).
"""

from __future__ import annotations

import copy
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

import neuromorphic as nm
from astro_neuron.apps.bench.simulate import bench_simulate
from astro_neuron.apps.cli import args as A
from astro_neuron.apps.demo.lava import finetune_qat, integer_accuracy
from astro_neuron.io import atomic_json, atomic_write
from astro_neuron.tasks import MemoryNet, RecallTask, delayed_recall, evaluate
from neuromorphic import pad_latency
from neuromorphic.randnet import random_spikes

_BIG = 1 << 20


def register(commands, bench) -> None:
    p = commands.add_parser(
        "quantize", help="MemoryNet checkpoint -> integer network file (.h5), PTQ or QAT")
    p.add_argument("checkpoint", type=A.in_file("checkpoint"),
                   help="MemoryNet checkpoint (.safetensors), e.g. out/demo/memory_amsu.safetensors")
    p.add_argument("--out", type=A.out_file("--out"),
                   help="output .h5 (default: the checkpoint's name with .h5)")
    p.add_argument("--qat-steps", type=A.int_range(0, 10**6, "--qat-steps"), default=0,
                   help="quantization-aware fine-tuning steps before export (default 0: PTQ)")
    p.add_argument("--calib-samples", type=A.int_range(1, 1 << 16, "--calib-samples"),
                   default=64, help="calibration sequences")
    p.add_argument("--eval-samples", type=A.int_range(1, 1 << 16, "--eval-samples"),
                   default=256, help="sequences for the accuracy")
    p.add_argument("--operand-bits", type=A.int_range(2, 16, "--operand-bits"), default=8,
                   help="width of k, v, q (2..16)")
    p.add_argument("--seed", type=A.seed("--seed"), default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_quantize)

    p = commands.add_parser("export", help="write a network as NIR (float) or JSON (integers)")
    p.add_argument("source", type=A.in_file("source"), help="a MemoryNet checkpoint (.safetensors) for --to nir; an integer "
                                  "network (.h5) for --to json")
    p.add_argument("--to", choices=("nir", "json"), required=True)
    p.add_argument("--out", type=A.out_file("--out"),
                   help="output file (default: the source's name with .nir/.json)")
    p.add_argument("--dt", type=A.number(0.0, 1e6, lo_open=True, name="--dt"), default=1e-4,
                   help="NIR time step in seconds (default 1e-4, as snnTorch/SpikingJelly read)")
    p.set_defaults(func=_export)

    p = commands.add_parser("simulate", help="run an integer network (.h5) on a backend")
    p.add_argument("network", type=A.in_file("integer network file"),
                   help="integer network file (.h5)")
    p.add_argument("--backend", choices=("reference", "lava", "torch"), default="reference")
    p.add_argument("--compare", action="store_true",
                   help="also run the other backends and report whether they agree bit for bit")
    p.add_argument("--input", type=A.in_file("--input"),
                   help=".npy input spikes [T, n_in] or [T, B, n_in]")
    p.add_argument("--samples", type=A.int_range(1, 1 << 16, "--samples"), default=4,
                   help="sequences drawn from the stored task")
    p.add_argument("--steps", type=A.int_range(1, _BIG, "--steps"), default=200,
                   help="steps of random input (no task)")
    p.add_argument("--rate", type=A.number(0.0, 1.0, name="--rate"), default=0.1,
                   help="spike probability of random input")
    p.add_argument("--seed", type=A.seed("--seed"), default=0)
    p.add_argument("--no-states", action="store_true", help="record spikes only")
    p.add_argument("--save", type=A.out_file("--save"),
                   help="write spikes and states to this .npz")
    p.set_defaults(func=_simulate)

    b = bench.add_parser("simulate", help="steps/s of the NumPy reference vs Lava fixed_pt")
    b.add_argument("--neurons", type=A.int_range(1, 1 << 16, "--neurons"), default=256)
    b.add_argument("--layers", type=A.int_range(1, 64, "--layers"), default=2)
    b.add_argument("--steps", type=A.int_range(1, _BIG, "--steps"), default=1000)
    b.add_argument("--astrocytes", type=A.int_range(1, 1024, "--astrocytes"), default=8)
    b.add_argument("--d-key", type=A.int_range(1, 1024, "--d-key"), default=16)
    b.add_argument("--inputs", type=A.int_range(1, 1 << 16, "--inputs"), default=64)
    b.add_argument("--kind", choices=("amsu", "lif"), default="amsu",
                   help="layer kind: AM-SU (own Lava process) or stock Lava LIF")
    b.add_argument("--batch", type=A.int_range(1, 4096, "--batch"), default=1,
                   help="sequences per run (Lava: one graph, block-diagonal synapses)")
    b.add_argument("--repeats", type=A.int_range(1, 1000, "--repeats"), default=3, help="best of N for the reference")
    b.add_argument("--quick", action="store_true", help="tiny settings (tests)")
    b.set_defaults(func=_bench_simulate)


# ----------------------------------------------------------------- helpers

def _load_memory_net(path: str):
    return MemoryNet.load(path, "MemoryNet checkpoint")


# ----------------------------------------------------------------- quantize

def _quantize(args) -> int:
    net = _load_memory_net(args.checkpoint)
    out = Path(args.out) if args.out else Path(args.checkpoint).with_suffix(".h5")
    torch.set_num_threads(1)
    x_cal, _ = delayed_recall(net.task, args.calib_samples,
                              torch.Generator().manual_seed(args.seed + 1000))
    x_test, y_test = delayed_recall(net.task, args.eval_samples,
                                    torch.Generator().manual_seed(args.seed + 1001))
    meta = {"source": f"MemoryNet checkpoint {args.checkpoint}",
            "task": {"name": "delayed_recall", **net.checkpoint()["task"]}}
    tuned = net
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", nm.SaturationWarning)
        if args.qat_steps:
            tuned = copy.deepcopy(net)
            qat = nm.prepare_qat(tuned.core, x_cal, operand_bits=args.operand_bits)
            finetune_qat(qat, tuned, args.qat_steps, seed=args.seed,
                         progress=not args.no_progress)
            qnet = nm.quantize(qat, calibration=x_cal, meta={**meta, "qat_steps": args.qat_steps})
        else:
            qnet = nm.quantize(net.core, calibration=x_cal, operand_bits=args.operand_bits,
                               meta=meta)
    nm.save(qnet, out)
    print(qnet.summary())
    for w in caught:
        print(f"warning: {w.message}")
    acc_f = evaluate(net, x_test, y_test)
    acc_i = integer_accuracy(qnet, tuned, x_test, y_test)
    mode = f"QAT ({args.qat_steps} steps)" if args.qat_steps else "PTQ"
    print(f"accuracy on {args.eval_samples} test sequences: float {acc_f:.1%}, integer "
          f"{mode} {acc_i:.1%}")
    print(f"wrote {out}")
    return 0


# ----------------------------------------------------------------- export

def _export(args) -> int:
    src = Path(args.source)
    if args.to == "nir":
        if src.suffix == ".h5":
            raise ValueError("NIR export needs the float model: pass the MemoryNet checkpoint "
                             "(.safetensors), not the integer .h5 (NIR has no integer network "
                             "nodes)")
        net = _load_memory_net(str(src))
        out = Path(args.out) if args.out else src.with_suffix(".nir")
        graph = nm.export_nir(net.core, out, dt=args.dt)
        print(f"wrote {out}: NIR graph with nodes {list(graph.nodes)}")
        return 0

    qnet = nm.load(src)
    out = Path(args.out) if args.out else src.with_suffix(".json")

    def plain(v):
        if isinstance(v, np.ndarray):
            return v.tolist()
        if isinstance(v, (np.integer,)):
            return int(v)
        return v

    doc = {"format": nm.FORMAT, "format_version": qnet.format_version,
           "input_size": qnet.input_size, "input_levels": qnet.input_levels, "dt": qnet.dt,
           "latency": qnet.latency, "meta": qnet.meta, "layers": []}
    for layer in qnet.layers:
        d = {"type": layer.kind}
        for k, v in vars(layer).items():
            if k == "synapse":
                d["synapse"] = {kk: plain(vv) for kk, vv in vars(v).items()}
            elif v is not None:
                d[k] = plain(v)
        doc["layers"].append(d)
    atomic_json(doc, out)
    print(f"wrote {out} ({len(json.dumps(doc)) // 1024} KiB)")
    return 0


# ----------------------------------------------------------------- simulate

def _inputs(args, qnet):
    if args.input:
        path = Path(args.input)
        if not path.is_file():
            raise FileNotFoundError(f"input file not found: {path}")
        try:
            return np.load(path, allow_pickle=False), f"{path}"
        except Exception as exc:
            raise ValueError(f"{path} is not a readable .npy array ({exc})") from None
    task = qnet.meta.get("task") if isinstance(qnet.meta, dict) else None
    if isinstance(task, dict) and task.get("name") == "delayed_recall":
        fields = {k: v for k, v in task.items() if k != "name"}
        try:
            rt = RecallTask(**fields)
        except Exception as exc:
            raise ValueError(f"the task stored in the file is invalid: {exc}") from None
        # The inputs (float32 drawn, int64 kept) and the recorded spikes and states.
        n_out = sum(layer.n_out for layer in qnet.layers)
        A.check_fits(f"simulate ({args.samples} sequences of {rt.T} steps x {rt.n_in} "
                     "inputs, from the task stored in the file)",
                     float(args.samples) * (rt.T + qnet.latency) * (12 * rt.n_in + 32 * n_out))
        x, _ = delayed_recall(rt, args.samples, torch.Generator().manual_seed(args.seed))

        return pad_latency(x.numpy().astype(np.int64), qnet.latency), \
            f"{args.samples} delayed-recall sequences (seed {args.seed}) + {qnet.latency} " \
            "silent steps"

    return random_spikes(args.seed, args.steps, args.samples, qnet.input_size,
                         qnet.input_levels, args.rate), \
        f"random spikes, {args.samples} x {args.steps} steps, rate {args.rate}, seed {args.seed}"


def _simulate(args) -> int:
    qnet = nm.load(args.network)
    x, desc = _inputs(args, qnet)
    backends = [args.backend]
    if args.compare:
        backends += [b for b in nm.BACKENDS if b != args.backend]
    print(f"{args.network}: {len(qnet.layers)} layer(s); input: {desc}")
    results = {}
    for b in backends:
        r = nm.simulate(qnet, x, backend=b, record_states=not args.no_states)
        results[b] = r
        counts = ", ".join(f"layer {i}: {int(s.sum())}" for i, s in enumerate(r.spikes))
        print(f"  {b:<9} {r.seconds:7.2f} s   spikes {counts}")
    if args.compare:
        base = results[args.backend]
        all_equal = True
        for b in backends[1:]:
            d = nm.compare(results[b], base, states=not args.no_states)
            all_equal &= d.equal
            print(f"  {b} vs {args.backend}: {d}")
        print("backends agree bit for bit" if all_equal else "backends DIFFER")
    if args.save:
        r = results[args.backend]
        arrays = {f"spikes_{i}": s for i, s in enumerate(r.spikes)}
        arrays.update({f"{k}_{i}": v for i, st in enumerate(r.states) for k, v in st.items()})
        arrays["input"] = np.asarray(x)

        def write(tmp):
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)

        atomic_write(Path(args.save), write)
        print(f"wrote {args.save}")
    return 0 if not args.compare or all_equal else 1


# ----------------------------------------------------------------- bench

def _bench_simulate(args) -> int:
    if args.quick:
        args.neurons, args.steps, args.layers, args.inputs = 32, 50, 2, 16
        args.astrocytes, args.d_key = 2, 4
    # int64 weights (Lava's graph: block-diagonal over the batch) and the recorded
    # spikes and states of every step.
    B, N, L = args.batch, args.neurons, args.layers
    A.check_fits(f"bench simulate ({L} layers of {N} neurons, batch {B}, {args.steps} steps)",
                 8.0 * (L * (B * N) * B * max(N, args.inputs) * 5
                        + 4 * args.steps * B * (N * L + args.inputs)))
    res = bench_simulate(n_neurons=args.neurons, n_layers=args.layers, steps=args.steps,
                         n_astrocytes=args.astrocytes, d_key=args.d_key, n_in=args.inputs,
                         kind=args.kind, repeats=args.repeats, batch=args.batch)
    print(res["table"])
    sys.stdout.flush()
    return 0 if res["bit_exact"] else 1
