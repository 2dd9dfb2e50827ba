"""``astro-neuron demo``: the project end to end on built-in data, no downloads.

Stages (each writes into one output folder; ``summary.json`` collects them):

1. ``memory``: a delayed-recall task (cue, 100-step delay, recall) learned by an AM-SU
   network and by the same network with the astrocyte off; both accuracies; the trained
   network (``memory_amsu.pt``) and a spike raster (``memory_raster.png``).
2. ``lava``: the trained network fine-tuned with quantization-aware training,
   quantized to integers, saved (``memory_amsu_int.h5``) and simulated as Lava
   processes (``fixed_pt``), checked bit for bit against the NumPy reference and the
   torch integer view; float versus integer accuracy (:mod:`astro_neuron.apps.demo.lava`).
3. ``lm``: a tiny AM-SNet language model trained on the built-in corpus (Python's
   standard library sources); validation bits per byte and a sample
   (:mod:`astro_neuron.apps.demo.lm`).
4. ``plots``: raster, membrane traces, astrocyte state and calcium-like traces, rate
   histogram of the memory network, and the language model's spikes across the tokens
   of its sample (:mod:`astro_neuron.neuro`, :mod:`astro_neuron.plot`).

The demo runs torch on one thread by default: its tensors are small, and on a busy
2-core machine a second thread makes every small operation wait (docs/install.md).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from astro_neuron.io import atomic_json, atomic_torch_save
from astro_neuron.tasks import MemoryNet, RecallTask, delayed_recall, evaluate, train_memory_net

__all__ = ["STAGES", "run_demo", "demo_memory", "demo_plots"]

STAGES = ("memory", "lava", "lm", "plots")


def demo_memory(out_dir: Path, steps: int = 300, n_eval: int = 1024, seed: int = 0,
                task: RecallTask = RecallTask(), progress: bool = True) -> dict:
    """Train AM-SU and astrocyte-off networks on delayed recall; compare accuracies."""
    out_dir.mkdir(parents=True, exist_ok=True)
    x_test, y_test = delayed_recall(task, n_eval, torch.Generator().manual_seed(seed + 1))
    results = {}
    nets = {}
    for name, astro in (("AM-SU", True), ("astrocyte off (LIF)", False)):
        torch.manual_seed(seed)
        net = MemoryNet(task, astrocyte=astro)
        t0 = time.perf_counter()
        losses = train_memory_net(net, steps=steps, seed=seed, progress=progress, desc=name)
        acc = evaluate(net, x_test, y_test)
        results[name] = {"accuracy": acc, "train_steps": len(losses),
                         "train_s": round(time.perf_counter() - t0, 1),
                         "final_loss": round(sum(losses[-10:]) / len(losses[-10:]), 4)}
        nets[name] = net
        print(f"  {name:<22} accuracy {acc:6.1%}  ({len(losses)} steps, "
              f"{results[name]['train_s']} s)")
    amsu = nets["AM-SU"]
    atomic_torch_save(amsu.checkpoint(), out_dir / "memory_amsu.pt")
    png = out_dir / "memory_raster.png"
    _raster_png(amsu, x_test[:, :1], png)
    return {"task": f"delayed recall, {task.n_classes} classes, delay {task.delay} steps",
            "chance": 1 / task.n_classes, "results": results,
            "checkpoint": str(out_dir / "memory_amsu.pt"), "raster": str(png)}


def _raster_png(net: MemoryNet, x: torch.Tensor, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from astro_neuron.plot import raster

    with torch.no_grad():
        spikes = net.core(x)[:, 0]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    raster([x[:, 0], spikes], ax=ax, labels=["input", "AM-SU"],
           title="delayed recall: cue, 100-step delay, recall")
    t = net.task
    for edge in (t.cue_len, t.cue_len + t.delay):
        ax.axvline(edge, color="grey", lw=0.8, ls="--")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def demo_plots(out_dir: Path, memory_checkpoint: Path, lm_checkpoint: Path | None,
               lm_prompt: str) -> list[str]:
    """The memory network's plots, and the LM's spikes across the tokens of a sample."""
    from astro_neuron.neuro import demo_plots as memory_plots

    paths = [str(p) for p in memory_plots(out_dir, memory_checkpoint)]
    if lm_checkpoint is not None and Path(lm_checkpoint).is_file():
        paths.append(str(_lm_token_raster(out_dir, Path(lm_checkpoint), lm_prompt)))
    return paths


def _lm_token_raster(out_dir: Path, checkpoint: Path, prompt: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from astro_neuron.lm.data import encode
    from astro_neuron.lm.train import load_model
    from astro_neuron.plot import token_raster

    model, _ = load_model(checkpoint)
    model.eval()
    with torch.no_grad():
        idx = encode(prompt)[None].long()                                 # (1, T)
        out = model.generate(idx, 48, temperature=0.8, top_k=20,
                             generator=torch.Generator().manual_seed(0))
        spikes = model.spike_record(out)[0][0]                  # layer 0: (T, N)
    tokens = [bytes([b]) for b in out[0].tolist()]
    fig, ax = plt.subplots(figsize=(14, 4.5))
    token_raster(spikes[:, :64], tokens, ax=ax,
                 title="AM-SNet layer 0: AM-SU spikes (64 neurons) across a sample")
    fig.tight_layout()
    path = out_dir / "lm_token_raster.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def run_demo(out_dir="out/demo", quick: bool = False, seed: int = 0, progress: bool = True,
             stages=STAGES, threads: int | None = 1) -> dict:
    """Run the chosen stages; ``quick`` uses tiny settings (seconds, for tests)."""
    bad = [s for s in stages if s not in STAGES]
    if bad:
        raise ValueError(f"unknown demo stage(s) {bad}; choose from {list(STAGES)}")
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    summary: dict = {"out_dir": str(out), "quick": quick, "stages": {}}
    mem_ckpt = out / "memory_amsu.pt"
    lm_ckpt = out / "lm_amsnet.pt"       # written by the 'lm' stage (this run or an earlier one)
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
            from astro_neuron.apps.demo.lava import demo_stage as lava_stage

            res = lava_stage(out, _need(mem_ckpt, "lava"), quick=quick, progress=progress)
        elif stage == "lm":
            print(f"[{i}/{n}] language model: a tiny AM-SNet on the built-in corpus")
            from astro_neuron.apps.demo.lm import demo_stage as lm_stage

            res = lm_stage(out, quick=quick, progress=progress, prompt=lm_prompt, seed=seed)
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


def _need(path: Path, stage: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"stage {stage!r} needs {path} from the 'memory' stage: run "
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
    if "plots" in st:
        print(f"  plots: {len(st['plots']['files'])} PNG files")
    for name, res in st.items():
        print(f"    {name:<7} {res['stage_s']:>7.1f} s")
    print(f"  outputs in {summary['out_dir']}/ ; total {summary['total_s']} s")
