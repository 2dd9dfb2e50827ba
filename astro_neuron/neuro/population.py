"""A population of AM-SU neurons and astrocytes with territories (a tripartite network).

Built from the existing pieces, not a second copy of the equations (docs/model.md):

* the astrocytes are an :class:`~astro_neuron.AMSU` without neuron path (its
  astrocyte output ``o``), whose key/value/query weights are masked by the
  territories (each astrocyte senses only its synapses). Astrocyte ``a`` has one
  value slot per neuron it contacts;
* a routing (neuron-astrocyte coupling) adds each slot's output to its neuron; a
  neuron in several territories receives the sum, each contact with its own
  learnable gain (initially ``1 / number of astrocytes contacting the neuron``);
* the neurons are leaky integrators with the AM-SU's spike rule: ``u_t = beta u_{t-1}
  + I_t`` and spikes ``Theta(u_t + o_t - theta)``: the LIF's forms
  (:func:`astro_neuron.functional.lif.run` with the drive ``o``), parameters owned
  by an :class:`~astro_neuron.LIF`; the astrocytes run through
  :func:`astro_neuron.functional.amsu.run`.

With :meth:`Territories.blocks` the population computes exactly what an
:class:`~astro_neuron.AMSU` computes (tested); :meth:`TripartitePopulation.from_amsu`
copies a trained layer into one. Guide: docs/neuroscience.md.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from astro_neuron.amsu import AMSU, MODES
from astro_neuron.functional import amsu as F_amsu
from astro_neuron.functional import lif as F_lif
from astro_neuron.functional.amsu import AMSUState
from astro_neuron.lif import LIF
from astro_neuron.neuro.presets import Preset
from astro_neuron.neuro.presets import preset as get_preset
from astro_neuron.neuro.territories import Territories
from astro_neuron.neuro.traces import TRACE_KINDS, astro_trajectory
from astro_neuron.validate import choice, optional

__all__ = ["TripartitePopulation", "PopulationOutput", "PopulationState"]


class PopulationOutput(NamedTuple):
    """``[T, B, N]`` each; ``astro`` is the astrocyte trace when one was asked for:
    ``[T, B, A]`` (summary) or ``[T, B, *H]`` (full)."""

    spikes: Tensor
    u: Tensor                    # membrane before reset (what the threshold saw, minus o)
    o: Tensor                    # astrocyte drive added before the threshold
    astro: Optional[Tensor] = None


class PopulationState(NamedTuple):
    u: Tensor                    # [B, N] membrane (after reset)
    astro: AMSUState             # state of the astrocytes (H [B, A, d_k, m] or nonlinear)


class TripartitePopulation(nn.Module):
    """``N`` AM-SU neurons fed by ``n_in`` fibres, with astrocytes over territories.

    Input ``[T, B, n_in]`` (time-major), output spikes ``[T, B, N]``.

    Args:
        n_in: pre-synaptic fibres.
        n_neurons: neurons ``N``.
        territories: a :class:`Territories` over the ``N`` neurons (default:
            ``Territories.blocks(n_neurons, n_astrocytes)``, the AM-SU layout).
        n_astrocytes: used only when ``territories`` is not given.
        d_key: the astrocytes' sensing dimension ``d_k``.
        preset: ``"biology"`` (ms, default), ``"machine_learning"`` or a :class:`Preset`;
            ``dt``, ``tau_mem``, ``tau_astro``, ``threshold``, ``reset`` override it.
        astro_model: ``"linear"`` or ``"li_rinzel"`` (see :mod:`astro_neuron.astrocytes`).
        connectivity: optional ``[N, n_in]`` 0/1 mask of existing synapses.
        store_traces: after each forward, keep ``u_seq``, ``o_seq`` ``[T, B, N]`` and
            ``astro_seq`` ``[T, B, A]`` as attributes (for SpikingJelly's
            ``AttributeMonitor``).
    """

    def __init__(self, n_in: int, n_neurons: int, territories: Optional[Territories] = None,
                 *, n_astrocytes: int = 4, d_key: int = 8,
                 preset: Union[str, Preset] = "biology", astro_model="linear",
                 connectivity=None, surrogate=None, spike_levels: int = 1,
                 store_traces: bool = False, bias: bool = True, learn_tau: bool = True,
                 learn_threshold: bool = True, chunk_size: int = 64, dt: Optional[float] = None,
                 tau_mem: Optional[float] = None, tau_astro=None,
                 threshold: Optional[float] = None, reset: Optional[str] = None) -> None:
        super().__init__()
        overrides = {k: v for k, v in dict(dt=dt, tau_mem=tau_mem, tau_astro=tau_astro,
                                           threshold=threshold, reset=reset).items()
                     if v is not None}
        self.preset = get_preset(preset, **overrides)
        if territories is None:
            territories = Territories.blocks(n_neurons, n_astrocytes)
        if not isinstance(territories, Territories):
            raise TypeError(f"territories must be a Territories, got {type(territories).__name__}")
        if territories.n_neurons != n_neurons:
            raise ValueError(f"territories cover {territories.n_neurons} neurons, the "
                             f"population has n_neurons={n_neurons}")
        self.territories = territories
        self.store_traces = bool(store_traces)
        pr = self.preset
        A = territories.n_astrocytes
        slots = territories.slots()                                    # [A, m]
        m = slots.shape[1]

        self.synapses = nn.Linear(n_in, n_neurons, bias=bias)          # W_I, b_I
        self.neurons = LIF(n_neurons, tau_mem=pr.tau_mem, threshold=pr.threshold,
                           surrogate=surrogate, reset=pr.reset, spike_levels=spike_levels,
                           dt=pr.dt, learn_tau=learn_tau, learn_threshold=learn_threshold,
                           chunk_size=chunk_size)
        self.astrocytes = AMSU(n_in, A * m, n_astrocytes=A, d_key=d_key, neuron_path=False,
                               tau_astro=pr.tau_astro, dt=pr.dt, astro_model=astro_model,
                               surrogate=surrogate, bias=False, learn_tau=learn_tau,
                               learn_threshold=False, chunk_size=chunk_size)
        self.astrocytes.log_tau_mem.requires_grad_(False)              # no membrane there

        conn = None
        if connectivity is not None:
            conn = torch.as_tensor(connectivity)
            if tuple(conn.shape) != (n_neurons, n_in) or not bool(((conn == 0) | (conn == 1)).all()):
                raise ValueError(f"connectivity must be a 0/1 mask of shape [{n_neurons}, "
                                 f"{n_in}] [n_neurons, n_in], got {list(conn.shape)}")
            conn = conn.to(torch.get_default_dtype())
        self.register_buffer("connectivity", conn)
        self.register_buffer("astro_weight_mask", self._astro_mask(slots, n_in, d_key, conn))
        flat = slots.flatten()
        valid = (flat >= 0).nonzero().flatten()
        self.register_buffer("slot_index", valid)                      # valid slots
        self.register_buffer("slot_neuron", flat[valid])               # their neurons
        with torch.no_grad():
            gain = torch.zeros(A * m)
            gain[valid] = 1.0 / territories.coverage[flat[valid]].to(gain.dtype)
            self.astrocytes.astro_gain.copy_(gain)
        self.u_seq = self.o_seq = self.astro_seq = None

    def _astro_mask(self, slots: Tensor, n_in: int, d_key: int,
                    conn: Optional[Tensor]) -> Tensor:
        """Mask of the astrocytes' weight rows ``[A*d_k + A*m + A*d_k, n_in]`` (in the
        order of ``spec.parts``: K | V | Q).

        Value slot ``(a, s)`` of neuron ``j`` senses the synapses ``i -> j`` of
        astrocyte ``a``'s territory; keys and queries sense every fibre that has a
        synapse in the territory.
        """
        A, m = slots.shape
        sense = self.territories.input_mask(n_in)                      # [A, n_in]
        v = sense[:, None, :] & (slots >= 0)[..., None]                # [A, m, n_in]
        if conn is not None:
            v = v & conn.bool()[slots.clamp(min=0)]
            sense = v.any(1)
        kq = sense[:, None, :].expand(A, d_key, n_in).reshape(A * d_key, n_in)
        rows = {"K": kq, "V": v.reshape(A * m, n_in), "Q": kq}
        mask = torch.cat([rows[name] for name, _ in self.astrocytes.spec.parts])
        return mask.to(torch.get_default_dtype())

    # ------------------------------------------------------------ properties
    @property
    def dt(self) -> float:
        return self.preset.dt

    @property
    def time_unit(self) -> str:
        return self.preset.time_unit

    @property
    def n_neurons(self) -> int:
        return self.territories.n_neurons

    @property
    def n_astrocytes(self) -> int:
        return self.territories.n_astrocytes

    @property
    def astro_model(self) -> str:
        return self.astrocytes.astro_model

    def astro_params(self):
        """The astrocytes' :class:`~astro_neuron.functional.AMSUParams`, territory-masked."""
        p = self.astrocytes.params()
        return p._replace(weight=p.weight * self.astro_weight_mask)

    def synaptic_weight(self) -> Tensor:
        """``W_I`` ``[N, n_in]`` (masked by ``connectivity`` when given)."""
        w = self.synapses.weight
        return w if self.connectivity is None else w * self.connectivity

    def route(self, o_slots: Tensor) -> Tensor:
        """Astrocyte slot outputs ``[..., A*m]`` -> neuron drive ``[..., N]`` (sum over
        the astrocytes contacting each neuron)."""
        out = o_slots.new_zeros(*o_slots.shape[:-1], self.n_neurons)
        return out.index_add(-1, self.slot_neuron, o_slots.index_select(-1, self.slot_index))

    # ------------------------------------------------------------ forward
    def init_state(self, batch_size: int) -> PopulationState:
        w = self.synapses.weight
        return PopulationState(w.new_zeros(batch_size, self.n_neurons),
                               self.astrocytes.init_state(batch_size))

    def run(self, x_seq: Tensor, state: Optional[PopulationState] = None,
            current: Optional[Tensor] = None, mode: str = "auto",
            trace: Optional[str] = None) -> tuple[PopulationOutput, PopulationState]:
        """Run ``x_seq`` ``[T, B, n_in]``; return ``(PopulationOutput, state)``.

        ``current``: an injected current, broadcastable to ``[T, B, N]``, in units of the
        threshold: a constant current ``c`` holds the membrane at ``c`` (``c = 1`` is
        the rheobase), whatever ``dt``. It enters as ``(1 - beta) c`` per step, the
        exact solution of ``tau_mem du/dt = -u + c`` over the step (a physical current,
        not a per-step increment). ``mode``: ``"auto"`` (parallel where the model allows it),
        ``"chunked"``, ``"recurrent"`` or ``"loop"``, as for :meth:`AMSU.run`.
        ``trace``: ``"summary"`` or ``"full"`` also returns the astrocyte state of
        every step in ``PopulationOutput.astro`` (runs the astrocytes step by step).
        """
        choice("mode", mode, MODES)
        optional(choice, "trace", trace, TRACE_KINDS)
        self._check_input(x_seq)
        T, B = x_seq.shape[:2]
        if state is None:
            state = self.init_state(B)
        elif not isinstance(state, PopulationState):
            raise TypeError(f"state must be a PopulationState(u, astro), got {type(state).__name__}")
        elif tuple(state.u.shape) != (B, self.n_neurons):
            raise ValueError(f"state.u must have shape [{B}, {self.n_neurons}] [batch, "
                             f"n_neurons], got {list(state.u.shape)}")
        nspec = self.neurons.spec
        if mode == "chunked" and nspec.reset != "none":
            raise ValueError(f"the parallel (chunked) form is exact only without a reset, but "
                             f"reset={nspec.reset!r}; use mode='recurrent' or 'loop'")

        # astrocytes: they sense the input only, so they run first, for all steps
        p_a, spec_a = self.astro_params(), self.astrocytes.spec
        astro_trace = None
        if trace is not None:
            out_a, astro_state, astro_trace = astro_trajectory(x_seq, state.astro, p_a, spec_a,
                                                               keep=trace)
        else:
            out_a, astro_state = F_amsu.run(x_seq, state.astro, p_a, spec_a, mode,
                                            self.astrocytes.chunk_size)
        o = self.route(out_a.o)                                        # [T, B, N]

        # neurons: leaky membrane, spikes on u + o
        I = F.linear(x_seq, self.synaptic_weight(), self.synapses.bias)
        if current is not None:
            # a physical current: held constant over a step, it moves u towards its
            # value with the membrane time constant, exactly (u_t = beta u + (1 - beta) c
            # solves tau du/dt = -u + c), so the response does not depend on dt
            I = I + (1.0 - self.neurons.beta) * self._check_current(current, T, B)
        # the neurons are LIFs whose threshold also sees the astrocyte output o
        form = "chunked" if nspec.reset == "none" and mode in ("auto", "chunked") else "loop"
        s, u, u_T = F_lif.run(I, state.u, self.neurons.beta, self.neurons.threshold, nspec,
                              form, self.neurons.chunk_size, name="neurons", o=o)
        out = PopulationOutput(s, u, o, astro_trace)
        return out, PopulationState(u_T, astro_state)

    def forward(self, x_seq: Tensor, state: Optional[PopulationState] = None,
                current: Optional[Tensor] = None, return_state: bool = False,
                mode: str = "auto"):
        """Spikes ``[T, B, N]`` (and the final state); with ``store_traces`` also sets
        ``u_seq``, ``o_seq`` and ``astro_seq``."""
        out, state = self.run(x_seq, state, current, mode,
                              trace="summary" if self.store_traces else None)
        if self.store_traces:
            self.u_seq, self.o_seq, self.astro_seq = (out.u.detach(), out.o.detach(),
                                                      out.astro.detach())
        return (out.spikes, state) if return_state else out.spikes

    # ------------------------------------------------------------ checks
    def _check_input(self, x: Tensor) -> None:
        n_in = self.synapses.in_features
        if not isinstance(x, Tensor):
            raise TypeError(f"input must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 3 or x.shape[-1] != n_in:
            raise ValueError(f"input must be [T, B, n_in] with n_in={n_in}, got shape "
                             f"{list(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"input must be a floating-point tensor, got {x.dtype}")

    def _check_current(self, current: Tensor, T: int, B: int) -> Tensor:
        if not isinstance(current, Tensor) or not current.is_floating_point():
            raise TypeError("current must be a floating-point torch.Tensor")
        try:
            torch.broadcast_shapes(current.shape, (T, B, self.n_neurons))
        except RuntimeError:
            raise ValueError(f"current of shape {list(current.shape)} does not broadcast to "
                             f"[T, B, N] = {[T, B, self.n_neurons]}") from None
        if not bool(torch.isfinite(current).all()):
            raise ValueError("current contains NaN or Inf")
        return current

    # ------------------------------------------------------------ conversion
    @classmethod
    def from_amsu(cls, layer: AMSU, time_unit: str = "step") -> "TripartitePopulation":
        """A population with the AM-SU's own block territories and ``layer``'s
        parameters: it computes what ``layer`` computes (spikes, u, o)."""
        s = layer.spec
        if not (s.astrocyte and s.neuron_path) or s.synapse != "identity" or s.rotary:
            raise ValueError("from_amsu needs an AMSU with astrocyte and neuron path on, "
                             "synapse='identity' and no rotary positions")
        pr = Preset("from_amsu", time_unit, dt=layer.dt, tau_mem=1.0, tau_astro=(1.0, 1.0),
                    threshold=1.0, reset=s.reset)
        pop = cls(s.in_features, s.n_neurons, Territories.blocks(s.n_neurons, s.n_astrocytes),
                  d_key=s.d_key, preset=pr, astro_model=s.astro_model, surrogate=s.surrogate,
                  spike_levels=s.spike_levels, bias=layer.bias is not None,
                  chunk_size=layer.chunk_size).to(layer.weight.dtype)
        N = s.n_neurons
        with torch.no_grad():
            pop.synapses.weight.copy_(layer.weight[:N])
            if layer.bias is not None:
                pop.synapses.bias.copy_(layer.bias)
            pop.astrocytes.weight.copy_(layer.weight[N:])
            pop.astrocytes.log_tau_astro.copy_(layer.log_tau_astro)
            pop.astrocytes.astro_gain.copy_(layer.astro_gain)
            pop.neurons.log_tau_mem.copy_(layer.log_tau_mem)
            pop.neurons.log_threshold.copy_(layer.log_threshold)
        return pop

    def extra_repr(self) -> str:
        return (f"n_in={self.synapses.in_features}, n_neurons={self.n_neurons}, "
                f"preset={self.preset.name!r}, dt={self.dt} {self.time_unit}, "
                f"{self.territories!r}")
