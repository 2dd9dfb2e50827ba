"""How far does a trained activity clock step per item, and does a faster clock sharpen
the count? A probe (docs/memory.md, "Selective copying at T=1024: a faster clock").

``--steps WEIGHTS``: no training; the activity ``a_t = softplus(W_E x_t + b_E)`` each
astrocyte of a selective-copying model takes at the data tokens, the noise tokens and
the recall markers (held-out sequences at ``--seq-len``), with the spread of the phase
difference between the step at which the i-th data token is due and the one that wrote
it. A counter advances by a fixed step per data token and not at all on noise.

Otherwise: the model with ``--rate`` (and ``--clock-step``) is trained at
``--seq-len`` (``--examples`` sequences at ``--lr``, the library's ``train_task``) and
scored at T=256 and T=1024 before and after (300 held-out sequences each): from the
start, or from the weights ``--weights`` (of a model with any ``clock_rate``: the rate
is not a weight). From the start this is the first stage of
``scripts/probe_copy_curriculum.py`` (the same model, data and schedule).
``--decay-clock activity`` and ``--clock-threshold`` set the AM-SU options of the same
names (a clock that stops on noise: docs/memory.md, "a clock that stops"), ``--tau-astro``
the decays' start, ``--neuron-path`` the full AM-SNet (weights without it grafted on);
``--examples 0`` scores ``--weights`` at ``--lengths`` only (``--places``: by place too).

    OMP_NUM_THREADS=1 python scripts/probe_clock_rate.py --steps out/first_s1.safetensors
    OMP_NUM_THREADS=1 python scripts/probe_clock_rate.py --weights out/first_s1.safetensors \\
        --rate 2 --seed 1 --save out/rate2_t256_s1.safetensors
    OMP_NUM_THREADS=1 python scripts/probe_clock_rate.py --rate 2 --seed 1   # from the start
    OMP_NUM_THREADS=1 python scripts/probe_clock_rate.py --rate 1 --decay-clock activity \
        --clock-threshold 0.002 --tau-astro 0.5 50 --seed 1 --save out/stop_s1.safetensors
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import sys
import time
from pathlib import Path

import torch

from astro_neuron.apps.tasks.lm_memory import _task_kwargs
from astro_neuron.io import atomic_save_tensors
from astro_neuron.lm.config import AMSNetConfig
from astro_neuron.lm.model import build_model
from astro_neuron.lm.tasks import DATA0, MARK, TASKS, task_accuracy, train_task

#: the configuration the seventeenth session trained (docs/memory.md): the astrocyte
#: alone, a non-negative key with a signed query, the activity clock on every channel
MODEL = {"astro_gain": 1.0, "clock": "activity", "neuron_path": False,
         "rotary_fraction": 1.0, "sensing": "relu-key"}


def build(rate: float, d_model: int, seed: int, block_size: int = 1024,
          clock_step: float = 0.05, **options):
    """The model of :data:`MODEL` at ``clock_rate`` ``rate`` with ``options`` (other
    ``AMSNetConfig`` fields: ``decay_clock``, ``clock_threshold``, ``tau_astro``, ...)."""
    torch.manual_seed(seed)
    return build_model(AMSNetConfig(vocab_size=256, block_size=block_size, n_layer=2,
                                    n_head=2, d_model=d_model, clock_rate=rate,
                                    clock_step=clock_step, **{**MODEL, **options}))


@functools.cache
def _curriculum():
    """scripts/probe_copy_curriculum.py as a module (its graft and its breakdown), loaded
    once."""
    spec = importlib.util.spec_from_file_location(
        "probe_copy_curriculum", Path(__file__).with_name("probe_copy_curriculum.py"))
    cur = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cur)
    return cur


def _load(model, path: str) -> None:
    """Weights of this model, or of it without its neuron path (the curriculum probe's
    graft: the neuron path's rows start at 0)."""
    _curriculum().load_weights(model, path)


def activity_steps(model, T: int, n: int, seed: int, tokens: int = 16) -> list:
    """Per layer and astrocyte: the mean activity at data, noise and marker tokens, and
    the phase difference between reading the i-th data token and writing it (mean and
    standard deviation over sequences, averaged over the places)."""
    import astro_neuron.functional.amsu.chunk as chunked
    kw = _task_kwargs("copy", tokens, "random", "uniform")
    x, _ = TASKS["copy"](n, T, generator=torch.Generator().manual_seed(40_000 + seed), **kw)
    rec, orig = [], chunked.activity

    def spy(ze, spec):
        a = orig(ze, spec)
        rec.append(a.detach())
        return a

    chunked.activity = spy
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        chunked.activity = orig
    region = T - tokens - 1
    data = (x >= DATA0) & (x < DATA0 + tokens)
    data[:, region:] = False
    noise = torch.ones_like(data)
    noise[:, region:] = False
    noise &= ~data
    pos = data.nonzero()[:, 1].view(n, tokens)
    out = []
    for layer, a in enumerate(rec):                     # a: (T, B, A)
        a = a.double().transpose(0, 1)                  # (B, T, A)
        phase = a.cumsum(1)
        for j in range(a.shape[-1]):
            aj, pj = a[..., j], phase[..., j]
            lag = pj[:, region:region + tokens] - torch.gather(pj, 1, pos)
            out.append({"layer": layer, "astrocyte": j,
                        "data": round(float(aj[data].mean()), 4),
                        "noise": round(float(aj[noise].mean()), 5),
                        "marker": round(float(aj[x == MARK].mean()), 4),
                        "read_lag_mean": round(float(lag.mean()), 3),
                        "read_lag_sd": round(float(lag.std(0).mean()), 4)})
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", metavar="WEIGHTS", help="measure the activity steps of "
                    "these weights (safetensors) and train nothing")
    ap.add_argument("--weights", help="weights to start from (safetensors); without it, "
                    "the model is trained from the start")
    ap.add_argument("--rate", type=float, default=2.0, help="the clock_rate trained with")
    ap.add_argument("--clock-step", type=float, default=0.05,
                    help="the activity at the start (used from the start only)")
    ap.add_argument("--decay-clock", default="time", choices=("time", "activity"),
                    help="what the astrocytes' decay runs on (AM-SU decay_clock)")
    ap.add_argument("--clock-threshold", type=float, default=0.0,
                    help="the activity below which an astrocyte is silent (AM-SU "
                    "clock_threshold)")
    ap.add_argument("--tau-astro", type=float, nargs=2, metavar=("LOW", "HIGH"),
                    help="the astrocyte decays' initial time constants (default the "
                    "language model's (10, 1000); from the start only)")
    ap.add_argument("--neuron-path", action="store_true",
                    help="the full AM-SNet (the neuron path beside the astrocyte); weights "
                    "without it start it at 0 (scripts/probe_copy_curriculum.py's graft)")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--examples", type=int, default=25_600,
                    help="training sequences (0: score --weights only)")
    ap.add_argument("--lr", type=float, help="default 3e-4 from --weights, 1e-3 from the "
                    "start (the curriculum's first stage)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-seed", type=int, help="training sequences from generator seed "
                    "data_seed + seed (default 5000 from --weights, 1000 from the start)")
    ap.add_argument("--n-eval", type=int, default=300)
    ap.add_argument("--lengths", type=int, nargs="+", default=[256, 1024],
                    help="the sequence lengths scored before and after")
    ap.add_argument("--save", help="write the trained weights here (safetensors)")
    ap.add_argument("--places", action="store_true", help="with --examples 0: also the "
                    "accuracy by place and the misses at each length (the curriculum "
                    "probe's breakdown, its own held-out sequences)")
    a = ap.parse_args(argv)
    if a.steps and a.weights:
        ap.error("give --steps WEIGHTS or --weights WEIGHTS, not both")
    if a.places and a.examples:
        ap.error("--places scores saved weights: give it with --examples 0")
    fresh = not (a.steps or a.weights)
    lr = a.lr if a.lr is not None else (1e-3 if fresh else 3e-4)
    data_seed = a.data_seed if a.data_seed is not None else (1000 if fresh else 5000)
    kw = _task_kwargs("copy", 16, "random", "uniform")
    options = {"decay_clock": a.decay_clock, "clock_threshold": a.clock_threshold}
    if a.neuron_path:
        options["neuron_path"] = True
    if a.tau_astro:
        options["tau_astro"] = tuple(a.tau_astro)
    if a.steps:
        model = build(1.0, a.d_model, a.seed, **options)
        _load(model, a.steps)
        res = {"weights": a.steps, "seq_len": a.seq_len,
               "astrocytes": activity_steps(model, a.seq_len, a.n_eval, a.seed)}
        print(json.dumps(res))
        return res
    model = build(a.rate, a.d_model, a.seed, clock_step=a.clock_step,
                  block_size=max(1024, a.seq_len, *a.lengths), **options)
    if a.weights:
        _load(model, a.weights)

    def score() -> dict:
        g = torch.Generator().manual_seed(20_000 + a.seed)
        return {str(T): task_accuracy(model, *TASKS["copy"](a.n_eval, T, generator=g, **kw),
                                      batch_size=max(1, 25_600 // T)) for T in a.lengths}

    res = {"weights": a.weights, "rate": a.rate, **options, "seq_len": a.seq_len,
           "clock_step": a.clock_step, "examples": a.examples, "lr": lr, "seed": a.seed,
           "before": score()}
    if not a.examples:                  # scored only
        if a.places:
            brk = _curriculum().copy_breakdown
            res["places"] = {}
            for T in a.lengths:
                b = brk(model, T, a.n_eval, a.seed)
                res["places"][str(T)] = {k: b[k] for k in ("accuracy", "by_place",
                                                            "misses_naming_a_data_token",
                                                            "miss_offset")}
        print(json.dumps(res), flush=True)
        return res
    t0 = time.perf_counter()
    losses = train_task(model, "copy", a.seq_len, a.examples, a.batch_size, lr=lr,
                        seed=data_seed + a.seed, progress=False, **kw)
    res.update(time_s=round(time.perf_counter() - t0, 1),
               final_loss=sum(losses[-10:]) / len(losses[-10:]), after=score())
    if a.save:
        atomic_save_tensors(model.state_dict(), a.save)
    print(json.dumps(res), flush=True)
    return res


if __name__ == "__main__":
    sys.exit(main() and 0)
