"""``astro_neuron.LIF``: a leaky integrate-and-fire layer as an ``nn.Module``."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from astro_neuron.amsu import MODES, TauLike, _tau_tensor
from astro_neuron.functional import lif as F_lif
from astro_neuron.functional.lif import LIFSpec, lif_step
from astro_neuron.validate import choice, positive_int, positive_number

__all__ = ["LIF"]


class LIF(nn.Module):
    """``n_neurons`` leaky integrate-and-fire neurons; input ``[T, B, ..., N]`` currents.

    Same parameterisation and spike rules as :class:`astro_neuron.AMSU` (learnable
    ``log tau_mem`` and ``log threshold``, strict ``>``, resets, graded spikes,
    non-spiking twin); see docs/model.md. The state is the membrane ``u`` ``[B, ..., N]``.
    """

    def __init__(self, n_neurons: int, tau_mem: TauLike = 2.0, threshold: TauLike = 1.0,
                 surrogate=None, reset: str = "none", spike_levels: int = 1,
                 spiking: bool = True, dt: float = 1.0, learn_tau: bool = True,
                 learn_threshold: bool = True, detach_reset: bool = False,
                 chunk_size: int = 64, device=None, dtype=None) -> None:
        super().__init__()
        self.spec = LIFSpec(n_neurons, reset=reset, spike_levels=spike_levels,
                            spiking=spiking, detach_reset=detach_reset, surrogate=surrogate)
        self.dt = positive_number("dt", float(dt))
        self.chunk_size = positive_int("chunk_size", chunk_size)
        fk = {"device": device, "dtype": dtype or torch.get_default_dtype()}
        self.log_tau_mem = nn.Parameter(
            torch.log(_tau_tensor("tau_mem", tau_mem, (n_neurons,))).to(**fk),
            requires_grad=learn_tau)
        self.log_threshold = nn.Parameter(
            torch.log(_tau_tensor("threshold", threshold, (n_neurons,))).to(**fk),
            requires_grad=learn_threshold)

    @property
    def tau_mem(self) -> Tensor:
        return self.log_tau_mem.exp()

    @property
    def beta(self) -> Tensor:
        return torch.exp(-self.dt * torch.exp(-self.log_tau_mem))

    @property
    def threshold(self) -> Tensor:
        return self.log_threshold.exp()

    def run(self, x_seq: Tensor, u0: Optional[Tensor] = None,
            mode: str = "auto") -> tuple[Tensor, Tensor, Tensor]:
        """``(spikes, u before reset, u_T)`` for ``x_seq`` ``[T, B, ..., N]``.

        ``mode``: ``"auto"`` (chunked without reset, else the loop), ``"chunked"``,
        ``"loop"`` (``"recurrent"`` is the loop); through
        :func:`astro_neuron.functional.lif.run` (NaN/Inf checked).
        """
        choice("mode", mode, MODES)
        form = "loop" if mode == "recurrent" else mode
        return F_lif.run(x_seq, u0, self.beta, self.threshold, self.spec, form,
                         self.chunk_size)

    def forward(self, x_seq: Tensor, u0: Optional[Tensor] = None,
                return_state: bool = False, mode: str = "auto"):
        s, _, u = self.run(x_seq, u0, mode)
        return (s, u) if return_state else s

    def step(self, x_t: Tensor, u: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """One step: ``(spikes, u after reset)``."""
        if u is None:
            u = torch.zeros_like(x_t)
        beta, thr = self.beta, self.threshold
        out = lif_step(x_t, u, beta, thr, self.spec)
        F_lif.check_run(x_t, u, beta, thr, out, seq=False)
        return out[0], out[2]

    def extra_repr(self) -> str:
        return (f"{self.spec.n_neurons}, reset={self.spec.reset!r}, dt={self.dt}, "
                f"spike_levels={self.spec.spike_levels}, surrogate={self.spec.surrogate!r}")
