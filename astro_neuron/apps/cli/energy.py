"""``astro-neuron energy FILE``: operations and energy per token of a language-model
checkpoint (AM-SNet against the Transformer of the same shape), or synaptic operations
per step of an integer network (``.h5``); docs/lm.md, "Operations and energy"."""

from __future__ import annotations

import neuromorphic as nm
from astro_neuron.apps.cli import args as A
from astro_neuron.apps.cli.neuromorphic import _inputs as integer_inputs
from astro_neuron.io import atomic_json
from astro_neuron.lm.config import transformer_twin
from astro_neuron.lm.data import stdlib_corpus
from astro_neuron.lm.energy import E_AC_PJ, E_MAC_PJ, count_ops
from astro_neuron.lm.model import build_model
from astro_neuron.lm.train import load_model
from neuromorphic.energy import synaptic_ops


def register(commands, bench) -> None:
    p = commands.add_parser(
        "energy", help="operations and energy per token (AC, MAC per layer) of a checkpoint",
        description="Counts per token the spike-driven accumulates (AC) and real-valued "
                    "multiply-accumulates (MAC) of every layer, measured from the model's "
                    "firing on a text, and the energy at 45 nm (E = 4.6 pJ x MAC + "
                    "0.9 pJ x (AC + ADD)); for an AM-SNet, also the Transformer of the "
                    "same shape on the same text. For an integer network (.h5): synaptic "
                    "operations per step as a Loihi-style chip runs them.")
    p.add_argument("file", type=A.in_file("checkpoint or integer network"),
                   help="a language-model checkpoint (.safetensors) or an integer network (.h5)")
    p.add_argument("--text", help="text to read (default: the start of the built-in "
                                  "corpus's validation split)")
    p.add_argument("--tokens", type=A.int_range(1, 1 << 20, "--tokens"), default=1024,
                   help="bytes of the default text (default 1024)")
    p.add_argument("--no-compare", action="store_true",
                   help="do not count the Transformer of the same shape")
    p.add_argument("--per-block", action="store_true", help="one row per layer of each block")
    p.add_argument("--e-mac", type=A.number(0.0, 1e6, name="--e-mac"), default=E_MAC_PJ,
                   help=f"pJ per multiply-accumulate (default {E_MAC_PJ}, 45 nm)")
    p.add_argument("--e-ac", type=A.number(0.0, 1e6, name="--e-ac"), default=E_AC_PJ,
                   help=f"pJ per accumulate (default {E_AC_PJ}, 45 nm)")
    p.add_argument("--input", type=A.in_file("--input"),
                   help="integer network: input spikes .npy ([T, n_in] or [T, B, n_in]); "
                        "default: the task stored in the file, else random spikes")
    p.add_argument("--samples", type=A.int_range(1, 1 << 16, "--samples"), default=4,
                   help="integer network: sequences of the stored task or random input")
    p.add_argument("--steps", type=A.int_range(1, 1 << 20, "--steps"), default=200,
                   help="integer network: steps of random input spikes (default 200)")
    p.add_argument("--rate", type=A.number(0.0, 1.0, name="--rate"), default=0.1,
                   help="integer network: input spike probability per step (default 0.1)")
    p.add_argument("--seed", type=A.seed("--seed"), default=0)
    p.add_argument("--json", type=A.out_file("--json", ".json"), help="write the counts as JSON")
    p.set_defaults(func=_energy)


def _energy(args) -> int:
    if str(args.file).endswith(".h5"):
        return _integer(args)
    model, _ = load_model(args.file)
    model.eval()
    text = args.text
    if text is None:
        text = stdlib_corpus().val[: args.tokens].long()[None]
        desc = f"the first {text.shape[1]} bytes of the built-in corpus's validation split"
    else:
        desc = f"--text ({len(text.encode('utf-8'))} bytes)"
    reports = [count_ops(model, text, args.e_mac, args.e_ac)]
    if model.config.arch == "amsnet" and not args.no_compare:
        twin = build_model(transformer_twin(model.config))
        reports.append(count_ops(twin, text, args.e_mac, args.e_ac))
    print(f"{args.file}; text: {desc}")
    for r in reports:
        print(r.table(args.per_block))
        if r.firing:
            print("  firing (spikes per neuron per token): " + ", ".join(
                f"{k} {v:.3f}" for k, v in r.firing.items()))
    if len(reports) == 2:
        a, t = reports
        print(f"AM-SNet / Transformer per token: energy {a.energy_pj / t.energy_pj:.3f}, "
              f"MAC {a.total('mac') / t.total('mac'):.3f}; parameters "
              f"{a.params:,} / {t.params:,} (Transformer untrained: its counts do not "
              "depend on its weights)")
    if args.json:
        atomic_json({"file": str(args.file), "text": desc,
                     "models": [r.to_dict() for r in reports]}, args.json)
        print(f"wrote {args.json}")
    return 0


def _integer(args) -> int:
    net = nm.load(args.file)
    x, desc = integer_inputs(args, net)            # as `astro-neuron simulate` draws them
    rows = synaptic_ops(net, x)
    print(f"{args.file}: {len(net.layers)} layer(s); input: {desc}; per step and sequence:")
    print(f"  {'layer':<10} {'kind':<5} {'spikes in':>10} {'SynOps':>10} {'SynOps w!=0':>12} "
          f"{'neuron ops':>11} {'astro ops':>10} {'spikes out':>11}")
    for r in rows:
        print(f"  {r.name:<10} {r.kind:<5} {r.spikes_in:>10.2f} {r.synops:>10.1f} "
              f"{r.synops_nonzero:>12.1f} {r.neuron_ops:>11.0f} {r.astro_ops:>10.0f} "
              f"{r.spikes_out:>11.2f}")
    total = sum(r.synops for r in rows)
    print(f"  total SynOps per step {total:.1f}; astrocyte integer ops per step "
          f"{sum(r.astro_ops for r in rows):.0f}")
    if args.json:
        atomic_json({"file": str(args.file), "input": desc,
                     "layers": [vars(r) for r in rows]}, args.json)
        print(f"wrote {args.json}")
    return 0

