"""SpikingJelly 2.0 node: :class:`AMSUNode`, the AM-SU as a ``neuron.BaseNode``.

    from spikingjelly.activation_based import functional, layer, neuron
    from astro_neuron.integrations.spikingjelly import AMSUNode

    net = nn.Sequential(layer.Linear(40, 64), AMSUNode(64, 64, step_mode="s"),
                        layer.Linear(64, 4), neuron.LIFNode())
    functional.set_step_mode(net, "m")     # x_seq [T, B, 40] -> [T, B, 4]
    y = net(x_seq); functional.reset_net(net)

The node follows SpikingJelly 2.0.0's node contract: registered memories
(``v``: membrane ``[B, N]``, ``H``: astrocyte state ``[B, A, d_k, d_v]``, ``t``: steps
taken, the rotary position), ``materialize_states``, a pure
``single_step_functional_forward`` and a ``multi_step_functional_forward`` that
runs the chunked parallel form when it is exact (``reset="none"``) and the exact
recurrent form otherwise. The equations are not restated here: the node owns an
:class:`astro_neuron.AMSU` (``node.amsu``) and calls its pure functions
(docs/model.md; mapping and caveats: docs/integrations.md).

The spike rule is the project's strict ``u + o > theta`` (SpikingJelly's own
neurons fire on ``>=``), whatever surrogate is passed; SpikingJelly surrogates
(``spikingjelly.activation_based.surrogate.*``) supply the backward only.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from torch import Tensor

try:
    from spikingjelly.activation_based import neuron as _sj_neuron
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "astro_neuron.integrations.spikingjelly needs the 'spikingjelly' package "
        "(version 2.0), which is not importable here: install it with "
        "`pip install --no-deps spikingjelly==2.0.0` (scripts/install.sh does this; "
        f"see docs/integrations.md). Original error: {exc}") from exc

if not hasattr(_sj_neuron.BaseNode, "single_step_functional_forward"):  # pragma: no cover
    import spikingjelly as _sj

    raise ImportError(
        "astro_neuron.integrations.spikingjelly needs SpikingJelly >= 2.0 (the "
        "functional node contract); found version "
        f"{getattr(_sj, '__version__', 'unknown')}")

from astro_neuron.amsu import AMSU  # noqa: E402
from astro_neuron.functional.amsu import AMSUOutput, AMSUState, reset_membrane  # noqa: E402

__all__ = ["AMSUNode"]

# SpikingJelly node attributes whose meaning lives in the AM-SU (its spec or its
# parameters): reading them gives the AM-SU's value, setting them is routed there.
_MAPPED = ("v_threshold", "v_reset", "surrogate_function", "detach_reset")


class AMSUNode(_sj_neuron.BaseNode):
    """The AM-SU layer as a SpikingJelly 2.0 neuron node.

    Shapes: ``step_mode="s"``: ``x`` ``[B, in_features]`` -> spikes ``[B, N]``;
    ``step_mode="m"``: ``x_seq`` ``[T, B, in_features]`` -> spikes ``[T, B, N]``.
    Unlike SpikingJelly's element-wise neurons the node has its own input
    projections (it is a layer: ``in_features`` -> ``n_neurons``), as ``AMSU`` is.

    Args:
        in_features, n_neurons, n_astrocytes, d_key, and every other positional or
            keyword argument: those of :class:`astro_neuron.AMSU` (``tau_mem``,
            ``tau_astro``, ``threshold``, ``surrogate``, ``reset``, ``rotary``, ...).
        step_mode: ``"s"`` (one step per call) or ``"m"`` (a whole sequence per call).
        store_v_seq: in ``"m"`` keep the post-reset membrane of every step in
            ``self.v_seq`` ``[T, B, N]`` (in ``"s"`` append to it each step), as
            SpikingJelly's ``BaseNode`` does.
        surrogate_function: SpikingJelly's name for ``surrogate`` (give one or the
            other); any SpikingJelly surrogate module or project surrogate.

    Memories (``functional.reset_net`` returns them to these sentinels and the next
    call builds zeros of the input's batch size): ``v = 0.0`` (membrane, after
    reset), ``H = 0.0`` (astrocyte state; ``None`` while the astrocyte is off),
    ``t = 0``. As in SpikingJelly, a call whose batch size differs from the stored
    state's starts from a fresh zero state.

    Forms: ``"s"`` runs one AM-SU step (:func:`astro_neuron.functional.amsu_step`);
    ``"m"`` runs ``AMSU.run``: the chunked parallel form without reset, the exact
    recurrent loop with a reset. Both give the same spikes and states (to float
    rounding; see docs/integrations.md).

    The SpikingJelly attributes map onto the AM-SU: ``v_threshold`` is the learnable
    threshold ``theta`` ``[N]`` (read-only here), ``v_reset`` is ``0.0`` for
    ``reset="zero"`` and ``None`` otherwise (read-only), ``surrogate_function`` and
    ``detach_reset`` read and write the layer's spec.
    """

    def __init__(self, in_features: int, n_neurons: int, n_astrocytes: int = 4,
                 d_key: int = 16, *amsu_args, step_mode: str = "s",
                 store_v_seq: bool = False, surrogate_function=None, **amsu_kwargs) -> None:
        if surrogate_function is not None:
            if amsu_kwargs.get("surrogate") is not None:
                raise ValueError("give either surrogate= or surrogate_function= (its "
                                 "SpikingJelly name), not both")
            amsu_kwargs["surrogate"] = surrogate_function
        if not isinstance(store_v_seq, bool):
            raise TypeError(f"store_v_seq must be a bool, got {store_v_seq!r}")
        # BaseNode's threshold / reset / surrogate arguments are placeholders: the AMSU
        # built below owns those quantities (see _MAPPED and __setattr__).
        super().__init__(v_threshold=1.0, v_reset=None, surrogate_function=None,
                         detach_reset=False, step_mode=step_mode, store_v_seq=store_v_seq)
        self.amsu = AMSU(in_features, n_neurons, n_astrocytes, d_key, *amsu_args,
                         **amsu_kwargs)
        # BaseNode registered "v" (the membrane); add the astrocyte and the clock.
        self.register_memory("H", 0.0)
        self.register_memory("t", 0)
        self._register_option_memories()

    def _register_option_memories(self) -> None:
        """The memories the layer's options add after ``(v, H, t)``: the delay line
        (``AMSUState.conv``) and the activity clock (``AMSUState.phase``, after ``conv``,
        which is then registered even without a delay line)."""
        spec = self.amsu.spec
        if (spec.conv_size > 1 or spec.activity_clock) and "conv" not in self._memories:
            self.register_memory("conv", None)
        if spec.activity_clock and "phase" not in self._memories:
            self.register_memory("phase", None)

    @classmethod
    def from_amsu(cls, layer: AMSU, step_mode: str = "s",
                  store_v_seq: bool = False) -> "AMSUNode":
        """A node around an existing :class:`astro_neuron.AMSU` (parameters shared)."""
        if not isinstance(layer, AMSU):
            raise TypeError(f"layer must be an astro_neuron.AMSU, got {type(layer).__name__}")
        s = layer.spec
        node = cls(s.in_features, s.n_neurons, s.n_astrocytes, s.d_key,
                   step_mode=step_mode, store_v_seq=store_v_seq, device="meta")
        node.amsu = layer
        node._register_option_memories()
        return node

    # ---------------------------------------------------------------- mapped attributes
    @property
    def v_threshold(self) -> Tensor:
        """The AM-SU's learnable threshold ``theta`` ``[N]``."""
        return self.amsu.threshold

    @property
    def v_reset(self) -> Optional[float]:
        """``0.0`` for ``reset="zero"``, ``None`` (soft reset or no reset) otherwise."""
        return 0.0 if self.amsu.spec.reset == "zero" else None

    @property
    def surrogate_function(self):
        """The spike function in use (strict ``>`` forward, the surrogate's backward)."""
        return self.amsu.spec.surrogate

    @property
    def detach_reset(self) -> bool:
        return self.amsu.spec.detach_reset

    def __setattr__(self, name: str, value) -> None:
        if name in _MAPPED:
            if "amsu" not in self.__dict__.get("_modules", {}):
                return  # BaseNode.__init__ placeholders
            spec = self.amsu.spec
            if name == "surrogate_function":
                self.amsu.spec = dataclasses.replace(spec, surrogate=value)
            elif name == "detach_reset":
                if not isinstance(value, bool):
                    raise TypeError(f"detach_reset must be a bool, got {value!r}")
                self.amsu.spec = dataclasses.replace(spec, detach_reset=value)
            elif name == "v_threshold":
                raise AttributeError(
                    "AMSUNode.v_threshold is the AM-SU's learnable threshold; give "
                    "threshold= at construction or change node.amsu.log_threshold")
            else:
                raise AttributeError(
                    "AMSUNode.v_reset follows reset= ('zero' -> 0.0, else None); choose "
                    "the reset at construction")
            return
        super().__setattr__(name, value)

    # ---------------------------------------------------------------- SpikingJelly contract
    def _check_rank(self, x, step_mode: str) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"AMSUNode input must be a torch.Tensor, got {type(x).__name__}")
        seq = step_mode == "m"
        want = 3 if seq else 2
        if x.dim() != want:
            layout = "[T, B, in_features]" if seq else "[B, in_features]"
            hint = ""
            if not seq and x.dim() == 3:
                hint = ": a sequence? use step_mode='m' (functional.set_step_mode(net, 'm'))"
            elif seq and x.dim() == 2:
                hint = ": one step? use step_mode='s'"
            raise ValueError(f"AMSUNode in step_mode={step_mode!r} takes input of shape "
                             f"{layout}, got {list(x.shape)}{hint}")

    def materialize_states(self, inputs: tuple, states: tuple, step_mode: str) -> tuple:
        """``(v, H, t)`` ready for the functional forward (zeros on first use)."""
        if len(inputs) != 1:
            raise TypeError(f"AMSUNode takes one input tensor, got {len(inputs)}")
        x = inputs[0]
        self._check_rank(x, step_mode)
        batch = x.shape[1] if step_mode == "m" else x.shape[0]
        spec = self.amsu.spec
        v, H, t = states[:3]
        conv = states[3] if len(states) > 3 else None
        phase = states[4] if len(states) > 4 else None
        # the delay line a 4th memory; the activity clock a 5th (after conv, None or not)
        n = 5 if spec.activity_clock else 4 if spec.conv_size > 1 else 3
        if not isinstance(v, Tensor) or tuple(v.shape) != (batch, spec.n_neurons):
            return tuple(self.amsu.init_state(batch, device=x.device, dtype=x.dtype))[:n]
        if spec.conv_size > 1:
            conv = conv.to(device=x.device, dtype=x.dtype) if isinstance(conv, Tensor) else \
                self.amsu.init_state(batch, device=x.device, dtype=x.dtype).conv
        if spec.activity_clock:
            phase = phase.to(device=x.device) if isinstance(phase, Tensor) \
                else self.amsu.init_state(batch, device=x.device, dtype=x.dtype).phase
        v = v.to(device=x.device, dtype=x.dtype)
        if not spec.astrocyte:
            H = None
        elif isinstance(H, Tensor):
            H = H.to(device=x.device, dtype=x.dtype)
        else:
            H = self.amsu.init_state(batch, device=x.device, dtype=x.dtype).H
        return (v, H, t, conv, phase)[:n]

    def single_step_functional_forward(self, inputs: tuple, states: tuple, **kwargs):
        """One AM-SU step: ``((x [B, in],), (v, H, t))`` -> ``((spikes [B, N],), (v, H, t))``.

        Pure: neither the module's memories nor ``states`` are changed.
        """
        _no_kwargs(kwargs)
        out, new = self.amsu.step_full(inputs[0], AMSUState(*states))
        return (out.spikes,), tuple(new)[:len(states)]

    def multi_step_functional_forward(self, inputs: tuple, states: tuple, **kwargs):
        """T steps at once: chunked parallel form without reset, recurrent with one."""
        _no_kwargs(kwargs)
        out, new = self._run_seq(inputs[0], states)
        return (out.spikes,), tuple(new)[:len(states)]

    def _run_seq(self, x_seq: Tensor, states: tuple) -> tuple[AMSUOutput, AMSUState]:
        return self.amsu.run(x_seq, AMSUState(*states), mode="auto")

    def multi_step_forward(self, x_seq: Tensor, *args, **kwargs):
        if not self.store_v_seq:
            return super().multi_step_forward(x_seq, *args, **kwargs)
        # BaseNode would fall back to a loop of single steps to record v_seq; the
        # post-reset membranes follow element-wise from the sequence form's output.
        _no_kwargs(kwargs)
        states = self.materialize_states((x_seq, *args), tuple(self._memories.values()), "m")
        out, new = self._run_seq(x_seq, states)
        for name, value in zip(self._memories, tuple(new)[:len(self._memories)], strict=True):
            self._memories[name] = value
        spec = self.amsu.spec
        self.v_seq = (reset_membrane(out.u, out.spikes, self.amsu.threshold, spec)
                      if spec.neuron_path else out.u)
        return out.spikes

    def detach(self) -> None:
        """Detach the memories from the graph (for truncated BPTT; ``detach_net``).

        Rebinds instead of ``detach_()``: the states of the sequence form can be views.
        """
        for name, value in self._memories.items():
            if isinstance(value, Tensor):
                self._memories[name] = value.detach()
        if isinstance(self.v_seq, Tensor):
            self.v_seq = self.v_seq.detach()

    def extra_repr(self) -> str:
        return f"step_mode={self.step_mode}, store_v_seq={self.store_v_seq}"


def _no_kwargs(kwargs: dict) -> None:
    if kwargs:
        raise TypeError(f"AMSUNode forward takes no keyword arguments, got {sorted(kwargs)}")
