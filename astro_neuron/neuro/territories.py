"""Astrocytic territories: which synapses each astrocyte ensheathes.

A population has ``n_inputs`` pre-synaptic fibres and ``N`` neurons, so its synapses
are the pairs ``(i -> j)``. Astrocyte ``a`` covers the synapses from the fibres it
senses, ``inputs[a]``, onto the neurons it contacts, ``neurons[a]``:

    synapses of a = {(i -> j) : inputs[a, i] and neurons[a, j]}

Territories may be disjoint (each neuron in one territory, as in the AM-SU's own
blocks) or overlap (a neuron contacted by several astrocytes). Give them as masks
(:meth:`Territories.from_masks`) or by a rule: :meth:`~Territories.blocks`,
:meth:`~Territories.tiled`, :meth:`~Territories.random`, :meth:`~Territories.spatial`.
How populations and networks use them: docs/neuroscience.md, "Territories of a population" and "Astrocytes, territories and the tripartite coupling".
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from astro_neuron.validate import positive_int, positive_number

__all__ = ["Territories"]


def _bool_mask(name: str, mask, shape_hint: str) -> Tensor:
    t = torch.as_tensor(mask)
    if t.dim() != 2:
        raise ValueError(f"{name} must be a 2-D mask {shape_hint}, got shape {list(t.shape)}")
    if t.dtype != torch.bool:
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains NaN or Inf")
        if not bool(((t == 0) | (t == 1)).all()):
            raise ValueError(f"{name} must hold only 0/1 or booleans")
        t = t != 0
    return t.detach().cpu().clone()


class Territories:
    """Territories of ``A`` astrocytes over ``N`` neurons (and optionally the inputs).

    Args:
        neurons: mask ``[A, N]``: astrocyte ``a`` contacts the synapses onto neuron ``j``.
        inputs: mask ``[A, n_inputs]``: the pre-synaptic fibres astrocyte ``a`` senses;
            ``None`` (default): every fibre.
    """

    def __init__(self, neurons, inputs=None) -> None:
        self.neurons = _bool_mask("neurons", neurons, "[n_astrocytes, n_neurons]")
        A, N = self.neurons.shape
        if A < 1 or N < 1:
            raise ValueError(f"territories need at least one astrocyte and one neuron, "
                             f"got neurons mask of shape {[A, N]}")
        empty = (~self.neurons.any(1)).nonzero().flatten().tolist()
        if empty:
            raise ValueError(f"astrocytes {empty} contact no neuron: every territory needs "
                             "at least one neuron")
        self.inputs: Optional[Tensor] = None
        if inputs is not None:
            self.inputs = _bool_mask("inputs", inputs, "[n_astrocytes, n_inputs]")
            if self.inputs.shape[0] != A:
                raise ValueError(f"inputs mask has {self.inputs.shape[0]} rows but there are "
                                 f"{A} astrocytes (neurons mask {list(self.neurons.shape)})")
            blind = (~self.inputs.any(1)).nonzero().flatten().tolist()
            if blind:
                raise ValueError(f"astrocytes {blind} sense no input fibre")

    # ------------------------------------------------------------ properties
    @property
    def n_astrocytes(self) -> int:
        return self.neurons.shape[0]

    @property
    def n_neurons(self) -> int:
        return self.neurons.shape[1]

    @property
    def n_inputs(self) -> Optional[int]:
        """Number of input fibres the masks were made for (``None``: any)."""
        return None if self.inputs is None else self.inputs.shape[1]

    @property
    def sizes(self) -> Tensor:
        """Neurons per astrocyte ``[A]``."""
        return self.neurons.sum(1)

    @property
    def coverage(self) -> Tensor:
        """Astrocytes per neuron ``[N]`` (0: a neuron no astrocyte contacts)."""
        return self.neurons.sum(0)

    @property
    def overlapping(self) -> bool:
        return bool((self.coverage > 1).any())

    def slots(self) -> Tensor:
        """``[A, m]`` neuron index of each astrocyte's value slot (``-1``: padding),
        ``m`` the largest territory; neurons in increasing order."""
        A, m = self.n_astrocytes, int(self.sizes.max())
        idx = torch.full((A, m), -1, dtype=torch.long)
        for a in range(A):
            js = self.neurons[a].nonzero().flatten()
            idx[a, : len(js)] = js
        return idx

    def input_mask(self, n_inputs: int) -> Tensor:
        """``[A, n_inputs]`` bool: the fibres each astrocyte senses."""
        if self.inputs is None:
            return torch.ones(self.n_astrocytes, n_inputs, dtype=torch.bool)
        if self.inputs.shape[1] != n_inputs:
            raise ValueError(f"territories' inputs mask has {self.inputs.shape[1]} fibres, "
                             f"the population has n_in={n_inputs}")
        return self.inputs

    def synapse_mask(self, n_inputs: int) -> Tensor:
        """``[A, N, n_inputs]`` bool: astrocyte ``a`` ensheathes synapse ``i -> j``."""
        return self.neurons[:, :, None] & self.input_mask(n_inputs)[:, None, :]

    def __repr__(self) -> str:
        sizes = self.sizes.tolist()
        inp = "all inputs" if self.inputs is None else f"{self.inputs.sum(1).tolist()} inputs"
        return (f"Territories(n_astrocytes={self.n_astrocytes}, n_neurons={self.n_neurons}, "
                f"sizes={sizes}, overlapping={self.overlapping}, {inp})")

    # ------------------------------------------------------------ rules
    @classmethod
    def from_masks(cls, neurons, inputs=None) -> "Territories":
        """Territories from explicit masks (see the class docstring)."""
        return cls(neurons, inputs)

    @classmethod
    def blocks(cls, n_neurons: int, n_astrocytes: int) -> "Territories":
        """Disjoint contiguous blocks of ``n_neurons / n_astrocytes`` neurons: the
        AM-SU's own layout (a population with these equals an :class:`AMSU`)."""
        _check_counts(n_neurons, n_astrocytes)
        if n_neurons % n_astrocytes:
            raise ValueError(f"blocks need n_neurons ({n_neurons}) divisible by n_astrocytes "
                             f"({n_astrocytes}); use tiled(...) for uneven territories")
        m = n_neurons // n_astrocytes
        mask = torch.zeros(n_astrocytes, n_neurons, dtype=torch.bool)
        for a in range(n_astrocytes):
            mask[a, a * m:(a + 1) * m] = True
        return cls(mask)

    @classmethod
    def tiled(cls, n_neurons: int, n_astrocytes: int, overlap: float = 0.0,
              n_inputs: Optional[int] = None,
              input_overlap: Optional[float] = None) -> "Territories":
        """Neurons on a ring, one tile per astrocyte, each territory widened by
        ``overlap`` (a fraction of a tile, half on each side): ``overlap=0`` gives
        disjoint tiles that cover every neuron, ``overlap=0.5`` territories 1.5 tiles
        wide (rounded to whole neurons).

        With ``n_inputs``, the input fibres are tiled the same way (a topographic
        projection: astrocyte ``a`` senses the fibres of tile ``a``), with
        ``input_overlap`` (default: ``overlap``).
        """
        neurons = _ring_tiles(n_neurons, n_astrocytes, overlap, "overlap")
        inputs = None
        if n_inputs is not None:
            io = overlap if input_overlap is None else input_overlap
            inputs = _ring_tiles(n_inputs, n_astrocytes, io, "input_overlap")
        return cls(neurons, inputs)

    @classmethod
    def random(cls, n_neurons: int, n_astrocytes: int, p: float,
               generator: Optional[torch.Generator] = None) -> "Territories":
        """Each (astrocyte, neuron) contact drawn with probability ``p``; every
        astrocyte keeps at least one neuron (some neurons may have no astrocyte)."""
        _check_counts(n_neurons, n_astrocytes)
        if not 0.0 < p <= 1.0:
            raise ValueError(f"p must be in (0, 1], got {p!r}")
        mask = torch.rand(n_astrocytes, n_neurons, generator=generator) < p
        for a in (~mask.any(1)).nonzero().flatten().tolist():
            mask[a, int(torch.randint(n_neurons, (1,), generator=generator))] = True
        return cls(mask)

    @classmethod
    def spatial(cls, neuron_pos, astro_pos, radius: float) -> "Territories":
        """Astrocyte ``a`` contacts the neurons within ``radius`` of it (positions
        ``[N, D]`` and ``[A, D]``, any unit): a domain rule, overlapping when
        astrocytes are closer than ``2 * radius``."""
        npos = torch.as_tensor(neuron_pos, dtype=torch.float64)
        apos = torch.as_tensor(astro_pos, dtype=torch.float64)
        if npos.dim() != 2 or apos.dim() != 2 or npos.shape[1] != apos.shape[1]:
            raise ValueError(f"neuron_pos [N, D] and astro_pos [A, D] need the same D, got "
                             f"{list(npos.shape)} and {list(apos.shape)}")
        positive_number("radius", radius)
        return cls(torch.cdist(apos, npos) <= radius)


def _check_counts(n_neurons: int, n_astrocytes: int) -> None:
    for name, v in (("n_neurons", n_neurons), ("n_astrocytes", n_astrocytes)):
        positive_int(name, v)
    if n_astrocytes > n_neurons:
        raise ValueError(f"n_astrocytes ({n_astrocytes}) exceeds n_neurons ({n_neurons})")


def _ring_tiles(n: int, A: int, overlap: float, what: str) -> Tensor:
    _check_counts(n, A)
    if not math.isfinite(overlap) or overlap < 0:
        raise ValueError(f"{what} must be >= 0, got {overlap!r}")
    tile = n / A
    ext = round(overlap * tile / 2)            # neurons added on each side of a tile
    mask = torch.zeros(A, n, dtype=torch.bool)
    for a in range(A):
        lo, hi = round(a * tile) - ext, round((a + 1) * tile) + ext
        mask[a, torch.arange(lo, min(hi, lo + n)) % n] = True
    return mask
