"""Time and size of a training checkpoint of the default config: the data-only format
(safetensors + JSON + SHA-256, flushed to disk) against the old pickled torch.save.

    OMP_NUM_THREADS=1 python scripts/measure_checkpoint.py        (docs/lm.md)
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import torch

from astro_neuron.lm.train import (
    build_model, load_model, load_run_config, make_optimizer, save_lm_checkpoint,
)


def best(f, n: int = 5) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    torch.set_num_threads(1)
    run = load_run_config("default")
    torch.manual_seed(0)
    model = build_model(run.model)
    opt = make_optimizer(model, run.train)
    x = torch.randint(0, 256, (2, 64))
    _, loss = model(x, x)
    loss.backward()
    opt.step()
    info = {"step": 1, "losses": [float(loss.detach())], "evals": [], "tokens_seen": 128,
            "train_time_s": 1.0, "world_size": 1}
    d = Path(tempfile.mkdtemp())
    new, old_path = d / "ckpt.safetensors", d / "ckpt.pt"
    t_save = best(lambda: save_lm_checkpoint(new, model, run.to_dict(), opt, info,
                                             torch.get_rng_state()))
    t_load = best(lambda: load_model(new))
    old = {"config": run.model.to_dict(), "run_config": run.to_dict(),
           "model": model.state_dict(), "optimizer": opt.state_dict(), **info}
    t_old_save = best(lambda: torch.save(old, old_path))
    t_old_load = best(lambda: torch.load(old_path, weights_only=False))  # our own file
    print(f"params {model.num_params():,}")
    print(f"safetensors: {new.stat().st_size:,} bytes, save {t_save * 1e3:.0f} ms, "
          f"load with checks and model rebuild {t_load * 1e3:.0f} ms")
    print(f"old .pt:     {old_path.stat().st_size:,} bytes, torch.save {t_old_save * 1e3:.0f} "
          f"ms, torch.load {t_old_load * 1e3:.0f} ms")
    for p in (new, old_path):
        os.unlink(p)


if __name__ == "__main__":
    main()
