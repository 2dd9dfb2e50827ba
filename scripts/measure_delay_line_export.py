"""The integer export of an AM-SU with the pre-synaptic delay line (docs/neuromorphic.md,
"The delay line"): train the demo's delayed-recall network with ``conv_size`` taps, then
run the demo's integer stage on it (PTQ, QAT, save/load, Lava ``fixed_pt`` against the
reference and the torch view, bit for bit) and print how often the float and the
integer (PTQ) networks give the same answer and emit the same spikes (the float model
run in float64 with the synapse's one-step delay, as the integer network runs).

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD python scripts/measure_delay_line_export.py \
        [--conv-size 4] [--steps 300] [--out out/delay_line]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import neuromorphic as nm
from astro_neuron.apps.demo.lava import demo_stage
from astro_neuron.tasks import MemoryNet, RecallTask, delayed_recall, evaluate, train_memory_net
from neuromorphic.convert.graph import float_reference


@torch.no_grad()
def _answers(qnet, net, x):
    """(float answers, integer answers) of ``net`` and its integer core ``qnet``."""
    f = net(x).argmax(-1)
    xb = nm.pad_latency(x.numpy().astype(np.int64), qnet.latency)
    out = nm.simulate(qnet, xb, record_states=False)
    s = torch.as_tensor(out.aligned_output(), dtype=torch.float32)
    return f, net.logits_from_spikes(s).argmax(-1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--conv-size", type=int, default=4)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("out/delay_line"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    task = RecallTask()
    torch.manual_seed(args.seed)
    net = MemoryNet(task, conv_size=args.conv_size)
    train_memory_net(net, steps=args.steps, seed=args.seed, progress=False)
    train_s = time.perf_counter() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    ckpt = net.save(args.out / "memory_amsu.safetensors")
    print(f"trained MemoryNet (conv_size={args.conv_size}, delay {task.delay} steps, "
          f"{task.n_classes} classes) for {args.steps} steps in {train_s:.0f} s")
    summary = demo_stage(args.out, ckpt, progress=False)
    # answer by answer: the float network and its integer (PTQ) network
    x_cal, _ = delayed_recall(task, 64, torch.Generator().manual_seed(1000))
    x, y = delayed_recall(task, 512, torch.Generator().manual_seed(1001))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", nm.SaturationWarning)
        q = nm.quantize(net.core, calibration=x_cal)
    f, i = _answers(q, net, x)
    same = float((f == i).float().mean())
    xs = x[:, :64].numpy().astype(np.int64)
    s_float = float_reference(net.core, xs).spikes[0]
    s_int = nm.simulate(q, xs, record_states=False).spikes[0]
    spikes_same = float((s_float == s_int).mean())
    print(f"  float vs integer (PTQ): same answer on {same:.1%} of 512 test sequences "
          f"(float {evaluate(net, x, y):.1%}); same spike at {spikes_same:.2%} of "
          f"{s_int.size} (step, sequence, neuron) on 64 sequences ({int(s_float.sum())} "
          f"float spikes, {int(s_int.sum())} integer); delay line {q.layers[0].conv_size} "
          f"taps; saturation on the calibration data: {q.meta['calibration_saturation']}")
    summary.update(conv_size=args.conv_size, train_s=round(train_s, 1), same_answer=same,
                   same_spike=spikes_same, total_s=round(time.perf_counter() - t0, 1))
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"total {summary['total_s']} s")


if __name__ == "__main__":
    main()
