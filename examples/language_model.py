"""Train a tiny AM-SNet (the spiking language model) on the Python standard library, then sample.

    python examples/language_model.py [--quick] [--out DIR]

Shows the whole path of ``astro_neuron.lm``: the built-in corpus (no download), a run
config with overrides, training with evaluation in bits per byte, a checkpoint that
rebuilds the model, generation with the recurrent O(1)-per-token step, and the AM-SU
spikes of each layer over a piece of text. ``--quick`` trains for a few seconds.
"""

import argparse
from pathlib import Path

import torch

from astro_neuron.lm.data import decode, encode, stdlib_corpus
from astro_neuron.lm.train import load_model, load_run_config, train


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny settings (seconds)")
    ap.add_argument("--out", default="out/language_model", help="output folder")
    args = ap.parse_args(argv)
    out = Path(args.out)
    steps = 10 if args.quick else 400
    run = load_run_config("tiny", [f"train.max_steps={steps}", f"train.eval_interval={steps}",
                                   f"train.ckpt_interval={steps}", "train.device='cpu'",
                                   f"train.out_dir='{(out / 'run').as_posix()}'"]
                          + (["train.eval_tokens=1024", "model.d_model=32", "train.batch_size=4",
                             "train.warmup_steps=2"] if args.quick else []))
    corpus = stdlib_corpus()
    summary = train(run, progress=not args.quick, corpus=corpus)
    print(f"{summary['params']:,} parameters, {summary['tokens']:,} tokens: "
          f"validation {summary['final_val_bpb']:.3f} bits per byte")

    model, _ = load_model(summary["checkpoint"])           # the checkpoint holds the config
    g = torch.Generator().manual_seed(0)
    text = model.generate(encode("def ")[None], 120, temperature=0.8, top_k=20, generator=g)
    print("sample:\n" + decode(text[0]))

    piece = corpus.val[:64].long()[None]
    for i, s in enumerate(model.spike_record(piece)):      # (B, T, N) per layer
        print(f"layer {i}: AM-SU firing rate {s.mean():.3f} over {s.shape[1]} tokens")


if __name__ == "__main__":
    main()
