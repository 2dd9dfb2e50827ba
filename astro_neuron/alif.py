"""``astro_neuron.ALIF``: adaptive leaky integrate-and-fire neurons (LSNN's) as an ``nn.Module``."""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from astro_neuron.amsu import TauLike, _tau_tensor
from astro_neuron.functional import alif as F_alif
from astro_neuron.functional.alif import ALIFSpec, ALIFState, alif_step
from astro_neuron.validate import boolean, positive_number

__all__ = ["ALIF", "ALIFState"]


class ALIF(nn.Module):
    """``n_neurons`` adaptive LIF neurons (Bellec et al. 2018); input ``[T, B, ..., N]`` currents.

    Equations: :mod:`astro_neuron.functional.alif`. Learnable ``log tau_mem`` and
    ``log threshold`` (as :class:`~astro_neuron.LIF`) and ``log tau_adapt`` (with
    ``learn_tau``); ``beta_adapt`` (threshold increase per unit of adaptation ``b``, in
    the unit of the membrane, >= 0) is fixed, as in LSNN. Its default, 180 with
    ``v_th = 1``, is LSNN's ratio (``v_th = 0.01``, ``beta = 1.8``): one spike raises the
    threshold by ``beta_adapt / tau_adapt`` (0.9 ``v_th`` at ``tau_adapt`` = 200 steps),
    decaying with ``tau_adapt``. ``recurrent=True`` adds a learnable recurrent weight ``[N, N]``
    (an LSNN layer), initialised uniform in ``+-rec_scale/sqrt(N)``. Sequential only:
    the threshold depends on past spikes. State: :class:`ALIFState` ``(v, b, z)``.
    """

    def __init__(self, n_neurons: int, tau_mem: TauLike = 20.0, tau_adapt: TauLike = 200.0,
                 threshold: TauLike = 1.0, beta_adapt: TauLike = 180.0, surrogate=None,
                 reset: str = "subtract", spike_levels: int = 1, spiking: bool = True,
                 recurrent: bool = False, rec_scale: float = 1.0, dt: float = 1.0,
                 learn_tau: bool = True, learn_threshold: bool = True,
                 detach_reset: bool = False, device=None, dtype=None) -> None:
        super().__init__()
        self.spec = ALIFSpec(n_neurons, reset=reset, spike_levels=spike_levels,
                             spiking=spiking, detach_reset=detach_reset, surrogate=surrogate)
        self.dt = positive_number("dt", float(dt))
        boolean("recurrent", recurrent)
        fk = {"device": device, "dtype": dtype or torch.get_default_dtype()}
        N = n_neurons
        self.log_tau_mem = nn.Parameter(torch.log(_tau_tensor("tau_mem", tau_mem, (N,))).to(**fk),
                                        requires_grad=learn_tau)
        self.log_tau_adapt = nn.Parameter(
            torch.log(_tau_tensor("tau_adapt", tau_adapt, (N,))).to(**fk), requires_grad=learn_tau)
        self.log_threshold = nn.Parameter(
            torch.log(_tau_tensor("threshold", threshold, (N,))).to(**fk),
            requires_grad=learn_threshold)
        ba = torch.as_tensor(beta_adapt, dtype=torch.float64)
        ba = ba.reshape(()).expand(N) if ba.numel() == 1 else ba
        if tuple(ba.shape) != (N,) or not bool(torch.isfinite(ba).all()) or bool((ba < 0).any()):
            raise ValueError(f"beta_adapt must be a finite number >= 0 or [{N}] of them, "
                             f"got {beta_adapt!r}")
        self.register_buffer("beta_adapt", ba.clone().to(**fk))
        if recurrent:
            bound = positive_number("rec_scale", float(rec_scale)) / math.sqrt(N)
            self.w_rec = nn.Parameter(torch.empty(N, N, **fk).uniform_(-bound, bound))
        else:
            self.w_rec = None

    @property
    def alpha(self) -> Tensor:
        """Membrane decay ``exp(-dt / tau_mem)`` ``[N]``."""
        return torch.exp(-self.dt * torch.exp(-self.log_tau_mem))

    @property
    def rho(self) -> Tensor:
        """Adaptation decay ``exp(-dt / tau_adapt)`` ``[N]``."""
        return torch.exp(-self.dt * torch.exp(-self.log_tau_adapt))

    @property
    def threshold(self) -> Tensor:
        """Baseline threshold ``v_th`` ``[N]``."""
        return self.log_threshold.exp()

    def _params(self):
        return self.alpha, self.rho, self.threshold, self.beta_adapt, self.w_rec

    def run(self, x_seq: Tensor, state: Optional[ALIFState] = None
            ) -> tuple[Tensor, Tensor, Tensor, ALIFState]:
        """``(spikes, v before reset, adaptive thresholds, final state)`` of ``x_seq``
        ``[T, B, ..., N]`` (through :func:`astro_neuron.functional.alif.run`, NaN/Inf checked)."""
        a, r, th, ba, w = self._params()
        return F_alif.run(x_seq, state, a, r, th, ba, self.spec, w)

    def forward(self, x_seq: Tensor, state: Optional[ALIFState] = None,
                return_state: bool = False):
        z, _, _, st = self.run(x_seq, state)
        return (z, st) if return_state else z

    def step(self, x_t: Tensor, state: Optional[ALIFState] = None) -> tuple[Tensor, ALIFState]:
        """One step: ``x_t`` ``[B, ..., N]`` -> ``(spikes, state)``."""
        F_alif._check_input(x_t, self.spec.n_neurons, False)
        params = self._params()
        F_alif._check_rec(params[-1], self.spec.n_neurons)
        st = F_alif.init_state(x_t) if state is None else F_alif._check_state(state, x_t.shape)
        out = alif_step(x_t, st, *params[:4], self.spec, params[4])
        F_alif.check_run(x_t, state, params, out, seq=False)
        return out[0], out[3]

    def extra_repr(self) -> str:
        return (f"{self.spec.n_neurons}, reset={self.spec.reset!r}, dt={self.dt}, "
                f"recurrent={self.w_rec is not None}, spike_levels={self.spec.spike_levels}, "
                f"surrogate={self.spec.surrogate!r}")
