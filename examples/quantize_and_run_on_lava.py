"""Train an AM-SU network, quantize it (PTQ and QAT), save it, and run it on Lava.

Shows the whole path of docs/neuromorphic.md on the delayed-recall task:

1. train a float AM-SU network (``astro_neuron.tasks.MemoryNet``);
2. post-training quantization (``nm.quantize(model, calibration=x)``);
3. quantization-aware fine-tuning (``nm.prepare_qat``), then export;
4. save / load the integer network file (``nm.save``, ``nm.load``);
5. simulate it with the NumPy reference, the torch view and Lava ``fixed_pt``, and check
   that all three agree bit for bit (``nm.compare``);
6. compare float and integer accuracy.

Run::

    python examples/quantize_and_run_on_lava.py            # about a minute
    python examples/quantize_and_run_on_lava.py --quick    # seconds (used by the tests)
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny settings")
    ap.add_argument("--out", default="out/example_lava", help="output folder")
    args = ap.parse_args()

    import neuromorphic as nm
    from astro_neuron.tasks import MemoryNet, RecallTask, delayed_recall, evaluate, train_memory_net
    from astro_neuron.apps.demo.lava import finetune_qat, integer_accuracy

    torch.set_num_threads(1)          # small per-step ops; Lava's forked workers need it too
    torch.manual_seed(0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    task = RecallTask(delay=30) if args.quick else RecallTask()
    net = MemoryNet(task)

    # 1. train the float network
    train_memory_net(net, steps=40 if args.quick else 200, batch_size=32, progress=False)
    x_test, y_test = delayed_recall(task, 64 if args.quick else 256,
                                    torch.Generator().manual_seed(1))
    x_cal, _ = delayed_recall(task, 16 if args.quick else 64, torch.Generator().manual_seed(2))
    print(f"float accuracy           {evaluate(net, x_test, y_test):6.1%}")

    # 2. post-training quantization
    q_ptq = nm.quantize(net.core, calibration=x_cal)
    print(q_ptq.summary())
    print(f"integer accuracy (PTQ)   {integer_accuracy(q_ptq, net, x_test, y_test):6.1%}")

    # 3. quantization-aware fine-tuning of a copy, then export
    tuned = copy.deepcopy(net)
    qat = nm.prepare_qat(tuned.core, x_cal)
    finetune_qat(qat, tuned, steps=3 if args.quick else 60, progress=False)
    q_qat = nm.quantize(qat, calibration=x_cal)
    print(f"integer accuracy (QAT)   {integer_accuracy(q_qat, tuned, x_test, y_test):6.1%}")

    # 4. the file
    path = nm.save(q_qat, out / "memory_amsu_int.h5")
    q_qat = nm.load(path)
    print(f"saved and reloaded {path}")

    # 5. three backends, bit for bit (input padded so the last step's answer is inside)
    x = nm.pad_latency(x_test[:, :2].numpy().astype(np.int64), q_qat.latency)
    ref = nm.simulate(q_qat, x, backend="reference")
    for backend in ("torch", "lava"):
        r = nm.simulate(q_qat, x, backend=backend)
        print(f"{backend:>6} vs reference: {nm.compare(r, ref)} ({r.seconds:.2f} s; "
              f"reference {ref.seconds:.3f} s)")
        if not nm.compare(r, ref).equal:
            raise SystemExit(f"{backend} differs from the reference")


if __name__ == "__main__":
    main()
