"""Demo stage "plots": the memory network's recorded trial and the language model's
spikes across the tokens of a sample."""

from __future__ import annotations

from pathlib import Path

import torch

from astro_neuron.lm.data import encode
from astro_neuron.lm.train import load_model
from astro_neuron.neuro import demo_plots as memory_plots
from astro_neuron.plot import token_raster

__all__ = ["demo_plots"]


def demo_plots(out_dir: Path, memory_checkpoint: Path, lm_checkpoint: Path | None,
               lm_prompt: str) -> list[str]:
    """The memory network's plots, and the LM's spikes across the tokens of a sample."""
    paths = [str(p) for p in memory_plots(out_dir, memory_checkpoint)]
    if lm_checkpoint is not None and Path(lm_checkpoint).is_file():
        paths.append(str(_lm_token_raster(out_dir, Path(lm_checkpoint), lm_prompt)))
    return paths


def _lm_token_raster(out_dir: Path, checkpoint: Path, prompt: str) -> Path:
    import matplotlib  # deferred: slow to import, only the drawing functions need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
