"""Training tokens/s on a GPU: AM-SNet with the astrocyte scan on flash-linear-attention's
GLA kernels, AM-SNet with the torch chunked form on the same GPU, and the Transformer.

One training step = forward, backward, AdamW; the median of ``--steps`` timed steps after
``--warmup`` (Triton compiles and autotunes on the first calls), CUDA synchronised. One
JSON line per point, then a table. docs/benchmarks.md ("On a GPU") quotes a run.

    python scripts/device_train_speed.py --out out/device/speed.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from astro_neuron.functional.scan_fla import fla_available, scan_backend
from astro_neuron.lm.config import AMSNetConfig
from astro_neuron.lm.model import build_model

POINTS = [(128, 2, 2, 256, 16), (128, 2, 2, 1024, 16), (128, 2, 2, 4096, 16),
          (512, 4, 4, 1024, 16), (512, 4, 4, 4096, 8)]   # d_model, layers, heads, T, batch
MODELS = [("AM-SNet (GLA kernels)", {}, "fla"), ("AM-SNet (torch scan)", {}, "torch"),
          ("Transformer", {"arch": "transformer"}, "torch")]


def step_time(d, L, H, T, B, ov, backend, warmup, steps) -> float:
    torch.manual_seed(0)
    model = build_model(AMSNetConfig(vocab_size=256, block_size=T, n_layer=L, n_head=H,
                                     d_model=d, **ov)).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    idx = torch.randint(0, 256, (B, T), device="cuda")
    times = []
    with scan_backend(backend):
        for i in range(warmup + steps):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            _, loss = model(idx, idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            torch.cuda.synchronize()
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="out/device/speed.json")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=20)
    a = p.parse_args()
    rows = []
    for d, L, H, T, B in POINTS:
        for name, ov, backend in MODELS:
            if backend == "fla" and not fla_available():
                continue
            try:
                s = step_time(d, L, H, T, B, ov, backend, a.warmup, a.steps)
                r = {"model": name, "d_model": d, "n_layer": L, "T": T, "batch": B,
                     "s_per_step": round(s, 5), "tokens_per_s": round(B * T / s)}
            except Exception as e:                      # noqa: BLE001 (report, go on)
                r = {"model": name, "d_model": d, "T": T, "error": f"{type(e).__name__}: {e}"}
            rows.append(r)
            print(json.dumps(r), flush=True)
    with open(a.out, "w") as f:
        json.dump({"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
                   "rows": rows}, f, indent=1)
    print(f"\n{'d_model':>7} {'T':>5} " + " ".join(f"{m[0]:>24}" for m in MODELS))
    for d, L, H, T, B in POINTS:
        cells = []
        for name, _, _ in MODELS:
            r = next((r for r in rows if r["model"] == name and r["d_model"] == d
                      and r["T"] == T), None)
            cells.append(f"{r['tokens_per_s']:>24,}" if r and "tokens_per_s" in r
                         else f"{'-':>24}")
        print(f"{d:>7} {T:>5} " + " ".join(cells))


if __name__ == "__main__":
    main()
