"""snnTorch-style cell: :class:`AstroLeaky`, the AM-SU with snnTorch's calling convention.

    import snntorch as snn, snntorch.functional as SF
    from astro_neuron.integrations.snntorch import AstroLeaky

    cell = AstroLeaky(40, 64, spike_grad=snn.surrogate.atan())
    state = cell.init_astroleaky()              # None: zeros on the first call
    for t in range(T):
        spk, state = cell(x_seq[t], state)      # x [B, 40] -> spk [B, 64]

The cell owns an :class:`astro_neuron.AMSU` (``cell.amsu``: its parameters, its pure
functions; equations in docs/model.md) and adds only the calling convention:
``spk, state = cell(x, state)`` with ``state`` an :class:`~astro_neuron.AMSUState`
``(u [B, N], H [B, A, d_k, d_v], t)``, or with ``init_hidden=True`` the state kept
inside (``spk = cell(x)``). :meth:`AstroLeaky.forward_sequence` runs a whole
``[T, B, in]`` sequence at once (the chunked parallel form when exact).

Reset, without snnTorch's global list: snnTorch neurons register themselves in the
class-level list ``SpikingNeuron.instances`` and ``snntorch.utils.reset`` resets
through it (only for built-in classes). ``AstroLeaky`` keeps no such list (it is
not a ``SpikingNeuron``): reset one cell with :meth:`AstroLeaky.reset_mem`, or every
cell of a network (nested ones included, and the stock snnTorch neurons in it) with
:func:`reset`.

This module does not import snnTorch: snnTorch surrogates (``snntorch.surrogate.*``
closures) are plain callables, accepted through
:func:`astro_neuron.functional.surrogate.as_surrogate`; the spike rule stays the
strict ``u + o > theta`` (as snnTorch's own).
"""

from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from astro_neuron.amsu import AMSU
from astro_neuron.functional.amsu import AMSUState

__all__ = ["AstroLeaky", "reset"]


class AstroLeaky(nn.Module):
    """The AM-SU layer as an snnTorch-style recurrent cell.

    Shapes: ``x`` ``[B, in_features]`` -> ``spk`` ``[B, n_neurons]``; ``state`` is
    ``AMSUState(u [B, N], H [B, A, d_k, d_v], t)`` (``u`` is the membrane after reset,
    snnTorch's ``mem``). Equations: docs/model.md (they differ from ``snn.Leaky`` in
    where a subtractive reset is applied: see docs/integrations.md).

    Args:
        in_features, n_neurons, n_astrocytes, d_key, and every other positional or
            keyword argument: those of :class:`astro_neuron.AMSU`.
        spike_grad: snnTorch's name for ``surrogate``: any snnTorch surrogate closure
            (``snntorch.surrogate.atan()``, ``fast_sigmoid()``, ...), SpikingJelly
            surrogate or project surrogate. Give it or ``surrogate``, not both.
        reset_mechanism: snnTorch's name for ``reset`` (``"subtract"``, ``"zero"``,
            ``"none"``); the default stays the AM-SU's ``"none"``.
        init_hidden: keep the state inside the cell: ``spk = cell(x)``.
        output: with ``init_hidden``, return ``(spk, state)`` instead of ``spk``.
    """

    def __init__(self, in_features: int, n_neurons: int, n_astrocytes: int = 4,
                 d_key: int = 16, *amsu_args, spike_grad=None,
                 reset_mechanism: Optional[str] = None, init_hidden: bool = False,
                 output: bool = False, **amsu_kwargs) -> None:
        super().__init__()
        for name, alias, value in (("surrogate", "spike_grad", spike_grad),
                                   ("reset", "reset_mechanism", reset_mechanism)):
            if value is None:
                continue
            if amsu_kwargs.get(name) is not None:
                raise ValueError(f"give either {name}= or {alias}= (its snnTorch name), "
                                 "not both")
            amsu_kwargs[name] = value
        for name, value in (("init_hidden", init_hidden), ("output", output)):
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool, got {value!r}")
        self.amsu = AMSU(in_features, n_neurons, n_astrocytes, d_key, *amsu_args,
                         **amsu_kwargs)
        self.init_hidden = init_hidden
        self.output = output
        self.state: Optional[AMSUState] = None   # used only with init_hidden=True

    @classmethod
    def from_amsu(cls, layer: AMSU, init_hidden: bool = False,
                  output: bool = False) -> "AstroLeaky":
        """A cell around an existing :class:`astro_neuron.AMSU` (parameters shared)."""
        if not isinstance(layer, AMSU):
            raise TypeError(f"layer must be an astro_neuron.AMSU, got {type(layer).__name__}")
        s = layer.spec
        cell = cls(s.in_features, s.n_neurons, s.n_astrocytes, s.d_key,
                   init_hidden=init_hidden, output=output, device="meta")
        cell.amsu = layer
        return cell

    # ---------------------------------------------------------------- snnTorch-style API
    @property
    def spike_grad(self):
        """The spike function in use (strict ``>`` forward, the surrogate's backward)."""
        return self.amsu.spec.surrogate

    @property
    def reset_mechanism(self) -> str:
        return self.amsu.spec.reset

    @property
    def threshold(self) -> Tensor:
        """The learnable threshold ``theta`` ``[N]``."""
        return self.amsu.threshold

    @property
    def mem(self) -> Optional[Tensor]:
        """With ``init_hidden``: the stored membrane ``u`` ``[B, N]`` (``None`` before use)."""
        return None if self.state is None else self.state.u

    def reset_mem(self) -> None:
        """Forget the stored state: the next call starts from zeros. Returns ``None``,
        the initial state to pass explicitly."""
        self.state = None
        return None

    def init_astroleaky(self, batch_size: Optional[int] = None) -> Optional[AMSUState]:
        """Reset (as :meth:`reset_mem`) and return the initial state: ``None`` (zeros of
        the right batch size are built on the first call), or with ``batch_size`` the
        explicit zero ``AMSUState``."""
        self.reset_mem()
        if batch_size is None:
            return None
        return self.amsu.init_state(batch_size)

    def detach_hidden(self) -> None:
        """Detach the stored state from the graph (truncated BPTT with ``init_hidden``)."""
        if self.state is not None:
            self.state = _map_state(AMSUState(*self.state), lambda z: z.detach())

    def _start(self, state: Optional[AMSUState], batch: int, what: str) -> Optional[AMSUState]:
        if not self.init_hidden:
            return state
        if state is not None:
            raise TypeError(f"`state` should not be passed to {what} while init_hidden=True "
                            "(the cell keeps it; reset with reset_mem())")
        stored = self.state
        if stored is not None and stored.u.shape[0] != batch:
            return None  # as snnTorch: a new batch size starts from zeros
        return stored

    def _finish(self, spk: Tensor, state: AMSUState):
        if not self.init_hidden:
            return spk, state
        self.state = state
        return (spk, state) if self.output else spk

    def forward(self, x: Tensor, state: Optional[AMSUState] = None):
        """One step: ``x`` ``[B, in]`` -> ``(spk [B, N], state)`` (``spk`` alone with
        ``init_hidden=True``, unless ``output=True``)."""
        if isinstance(x, Tensor) and x.dim() == 3:
            raise ValueError(
                f"AstroLeaky takes one time step [B, in_features], got {list(x.shape)}: "
                "loop over time, or use cell.forward_sequence(x_seq) for [T, B, in_features]")
        batch = x.shape[0] if isinstance(x, Tensor) and x.dim() else 0
        out, new = self.amsu.step_full(x, self._start(state, batch, "forward"))
        return self._finish(out.spikes, new)

    def forward_sequence(self, x_seq: Tensor, state: Optional[AMSUState] = None):
        """All steps of ``x_seq`` ``[T, B, in]`` at once -> ``(spk [T, B, N], state)``.

        Same results as calling the cell T times (chunked parallel form without a
        reset, the exact recurrent form with one). Return convention as ``forward``.
        """
        batch = x_seq.shape[1] if isinstance(x_seq, Tensor) and x_seq.dim() == 3 else 0
        out, new = self.amsu.run(x_seq, self._start(state, batch, "forward_sequence"))
        return self._finish(out.spikes, new)

    def _apply(self, fn, *args, **kwargs):
        # .to() / .double() / .cuda() move the stored state along with the parameters
        out = super()._apply(fn, *args, **kwargs)
        if self.state is not None:
            self.state = _map_state(AMSUState(*self.state), fn)
        return out

    def extra_repr(self) -> str:
        return f"init_hidden={self.init_hidden}, output={self.output}"


def _map_state(state: AMSUState, fn) -> AMSUState:
    """``fn`` applied to every tensor of ``state`` (the step count ``t`` kept; the
    activity clock's phase stays float64 whatever ``fn`` casts to)."""
    st = AMSUState(*(z if z is None or not isinstance(z, Tensor) else fn(z) for z in state))
    return st if st.phase is None else st._replace(phase=st.phase.double())


def reset(net: nn.Module) -> nn.Module:
    """Reset the stored state of every cell in ``net`` (nested ones too).

    Calls ``reset_mem()`` on each module of ``net.modules()`` that has one: every
    :class:`AstroLeaky` and the stock snnTorch neurons (``snn.Leaky``,
    ``snn.Synaptic``, ...), instance by instance. Returns ``net``.
    """
    if not isinstance(net, nn.Module):
        raise TypeError(f"net must be an nn.Module, got {type(net).__name__}")
    for module in net.modules():
        fn = getattr(module, "reset_mem", None)
        if callable(fn):
            fn()
    return net
