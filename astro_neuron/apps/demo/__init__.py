"""``astro-neuron demo``: the project end to end on built-in data, no downloads.

Stages (each writes into one output folder; ``summary.json`` collects them):

1. ``memory``: a delayed-recall task (cue, 100-step delay, recall) learned by an AM-SU
   network and by the same network with the astrocyte off; both accuracies; the trained
   network (``memory_amsu.safetensors``) and a spike raster (``memory_raster.png``)
   (:mod:`astro_neuron.apps.demo.memory`).
2. ``lava``: the trained network fine-tuned with quantization-aware training,
   quantized to integers, saved (``memory_amsu_int.h5``) and simulated as Lava
   processes (``fixed_pt``), checked bit for bit against the NumPy reference and the
   torch integer view; float versus integer accuracy (:mod:`astro_neuron.apps.demo.lava`).
3. ``lm``: a tiny AM-SNet language model trained on the built-in corpus (Python's
   standard library sources); validation bits per byte and a sample
   (:mod:`astro_neuron.apps.demo.lm`).
4. ``zeroshot``: that language model scored zero-shot by lm-evaluation-harness on the
   built-in PIQA-format task (:mod:`astro_neuron.apps.demo.zeroshot`).
5. ``finetune``: a short LoRA run of that model on the built-in dialogue questions;
   held-out assistant loss before and after (:mod:`astro_neuron.apps.demo.finetune`).
6. ``plots``: raster, membrane traces, astrocyte state and calcium-like traces, rate
   histogram of the memory network, and the language model's spikes across the tokens
   of its sample (:mod:`astro_neuron.apps.demo.plots`).

The demo runs torch on one thread by default: its tensors are small, and on a busy
2-core machine a second thread makes every small operation wait (docs/install.md).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from astro_neuron.apps.demo.finetune import demo_stage as finetune_stage
from astro_neuron.apps.demo.lava import demo_stage as lava_stage
from astro_neuron.apps.demo.lm import demo_stage as lm_stage
from astro_neuron.apps.demo.memory import demo_memory
from astro_neuron.apps.demo.plots import demo_plots
from astro_neuron.apps.demo.zeroshot import demo_stage as zeroshot_stage
from astro_neuron.io import atomic_json
from astro_neuron.validate import optional, positive_int

__all__ = ["STAGES", "run_demo", "demo_memory", "demo_plots"]

STAGES = ("memory", "lava", "lm", "zeroshot", "finetune", "plots")


def run_demo(out_dir="out/demo", quick: bool = False, seed: int = 0, progress: bool = True,
             stages=STAGES, threads: int | None = 1) -> dict:
    """Run the chosen stages; ``quick`` uses tiny settings (seconds, for tests)."""
    bad = [s for s in stages if s not in STAGES]
    if bad:
        raise ValueError(f"unknown demo stage(s) {bad}; choose from {list(STAGES)}")
    if optional(positive_int, "threads", threads) is not None:
        torch.set_num_threads(threads)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    summary: dict = {"out_dir": str(out), "quick": quick, "stages": {}}
    mem_ckpt = out / "memory_amsu.safetensors"
    lm_ckpt = out / "lm_amsnet.safetensors"      # written by the 'lm' stage (this run or an earlier one)
    lm_prompt = "def "
    n = len(stages)
    for i, stage in enumerate(stages, 1):
        t0 = time.perf_counter()
        if stage == "memory":
            print(f"[{i}/{n}] memory task: AM-SU against the same network, astrocyte off")
            res = demo_memory(out, steps=30 if quick else 300, n_eval=128 if quick else 1024,
                              seed=seed, progress=progress)
        elif stage == "lava":
            print(f"[{i}/{n}] integer network: QAT, quantize, save, simulate on Lava")

            res = lava_stage(out, _need(mem_ckpt, "lava"), quick=quick, progress=progress)
        elif stage == "lm":
            print(f"[{i}/{n}] language model: a tiny AM-SNet on the built-in corpus")

            res = lm_stage(out, quick=quick, progress=progress, prompt=lm_prompt, seed=seed)
        elif stage == "zeroshot":
            print(f"[{i}/{n}] zero-shot evaluation (lm-evaluation-harness, built-in task)")
            res = zeroshot_stage(_need(lm_ckpt, "zeroshot", "lm"), quick=quick, progress=progress)
        elif stage == "finetune":
            print(f"[{i}/{n}] dialogue fine-tuning: LoRA on the tiny AM-SNet")
            res = finetune_stage(out, _need(lm_ckpt, "finetune", "lm"), quick=quick,
                                 progress=progress, seed=seed)
        else:
            print(f"[{i}/{n}] plots")
            res = {"files": demo_plots(out, _need(mem_ckpt, "plots"), lm_ckpt, lm_prompt)}
            for f in res["files"]:
                print(f"  wrote {f}")
        res["stage_s"] = round(time.perf_counter() - t0, 1)
        summary["stages"][stage] = res
        atomic_json(summary, out / "summary.json")   # what is done so far is kept
    summary["total_s"] = round(time.perf_counter() - t_all, 1)
    atomic_json(summary, out / "summary.json")
    print_summary(summary)
    return summary


def _need(path: Path, stage: str, source: str = "memory") -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"stage {stage!r} needs {path} from the {source!r} stage: run "
                                "it first (same --out), or include it in --stages")
    return path


def print_summary(summary: dict) -> None:
    st = summary["stages"]
    print("\nsummary")
    if "memory" in st:
        m = st["memory"]
        print(f"  memory task (chance {m['chance']:.0%}): " + ", ".join(
            f"{k} {v['accuracy']:.1%}" for k, v in m["results"].items()))
    if "lava" in st:
        v = st["lava"]
        print(f"  integer network: float {v['accuracy_float']:.1%}, PTQ {v['accuracy_ptq']:.1%}, "
              f"QAT {v['accuracy_qat']:.1%}; Lava fixed_pt = reference = torch bit for bit: "
              f"{'yes' if v['bit_exact'] else 'NO'}")
    if "lm" in st:
        v = st["lm"]
        sample = v["sample"].replace("\n", "\\n")[:70]
        print(f"  language model: validation {v['val_bpb']:.3f} bits/byte after "
              f"{v['tokens']:,} tokens; sample: {sample!r}")
    if "zeroshot" in st:
        v = st["zeroshot"]
        print(f"  zero-shot {v['task']} ({v['docs']} questions): acc {v['acc']:.1%} "
              f"(chance {v['chance']:.0%}), acc_norm {v['acc_norm']:.1%}")
    if "finetune" in st:
        v = st["finetune"]
        print(f"  dialogue fine-tuning: held-out assistant loss {v['heldout_bpb_before']:.3f} -> "
              f"{v['heldout_bpb_after']:.3f} bits/byte after {v['steps']} LoRA steps")
    if "plots" in st:
        print(f"  plots: {len(st['plots']['files'])} PNG files")
    for name, res in st.items():
        print(f"    {name:<7} {res['stage_s']:>7.1f} s")
    print(f"  outputs in {summary['out_dir']}/ ; total {summary['total_s']} s")
