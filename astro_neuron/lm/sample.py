"""Sampling text from a trained checkpoint (``astro-neuron generate``)."""

from __future__ import annotations

from typing import Optional

import torch

from astro_neuron.lm.data import decode, encode
from astro_neuron.lm.train import load_model
from astro_neuron.validate import positive_int

__all__ = ["sample_text"]


def sample_text(checkpoint, prompt: str = "def ", max_new_tokens: int = 300,
                temperature: float = 0.8, top_k: Optional[int] = None, num_samples: int = 1,
                seed: int = 0, device: str = "cpu") -> list[str]:
    """Continue ``prompt`` ``num_samples`` times; returns the texts (prompt included).

    The prompt is read in parallel, then every new byte costs one recurrent step.
    """
    positive_int("num_samples", num_samples)
    if not prompt:
        raise ValueError("prompt must not be empty (give at least one character)")
    model, _ = load_model(checkpoint, device)
    model.eval()
    g = torch.Generator(device=device).manual_seed(seed)
    idx = encode(prompt)[None].repeat(num_samples, 1).to(device)
    out = model.generate(idx, max_new_tokens, temperature=temperature, top_k=top_k,
                         generator=g)
    return [decode(row) for row in out.cpu()]
