"""Read a trained torch model as a chain of layers the integer network can express.

Accepted models: an :class:`astro_neuron.AMSU`; an ``nn.Sequential`` of ``AMSU``
layers and ``nn.Linear`` + :class:`astro_neuron.LIF` pairs (the Linear is the LIF's
synapse); or any module with such a Sequential as ``.core`` (e.g.
:class:`astro_neuron.tasks.MemoryNet`, whose float read-out stays outside).

Every layer becomes a :class:`LayerRef` (the torch modules, nothing copied) with the
integer kind it maps to:

* ``"amsu"``: an AM-SU (astrocyte on or off), or a Linear + LIF pair that Lava's stock
  LIF cannot run exactly (reset "none"/"subtract", graded spikes, per-neuron or
  learnable time constants / thresholds). Runs on this package's ``AMSUNeuron``.
* ``"lif"``: Linear + LIF with reset "zero", binary spikes, one fixed time constant and
  one fixed threshold for the population: Lava's stock ``LIF`` runs it.

:class:`FloatNetwork` is the same chain with float64 NumPy parameters (for Lava's
``floating_pt`` run), and :func:`float_reference` runs the torch model the way the
Lava graph runs it: with the synapse's one-step delay before every layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import nn

from astro_neuron.amsu import AMSU
from astro_neuron.functional.amsu import AMSUParams, amsu_step, init_state
from astro_neuron.functional.lif import lif_step
from astro_neuron.lif import LIF
from neuromorphic.engines.common import RunOutput
from neuromorphic.spec import MAX_CONV_SIZE, SENSINGS

__all__ = ["LayerRef", "extract_layers", "FloatLayer", "FloatNetwork", "float_network",
           "float_reference", "delay"]


@dataclass
class LayerRef:
    """One layer of the model: ``amsu`` (an AMSU module) or ``linear`` + ``lif``."""

    kind: str                      # integer kind: "amsu" | "lif"
    name: str
    amsu: Optional[AMSU] = None
    linear: Optional[nn.Linear] = None
    lif: Optional[LIF] = None

    @property
    def n_in(self) -> int:
        return self.amsu.spec.in_features if self.amsu is not None else self.linear.in_features

    @property
    def n_neurons(self) -> int:
        return self.amsu.spec.n_neurons if self.amsu is not None else self.lif.spec.n_neurons

    @property
    def spike_levels(self) -> int:
        return (self.amsu or self.lif).spec.spike_levels

    @property
    def reset(self) -> str:
        return (self.amsu or self.lif).spec.reset

    @property
    def astrocyte(self) -> bool:
        return self.amsu is not None and self.amsu.spec.astrocyte

    @property
    def neuron_path(self) -> bool:
        return self.amsu is None or self.amsu.spec.neuron_path

    @property
    def n_astrocytes(self) -> int:
        return self.amsu.spec.n_astrocytes if self.astrocyte else 1

    @property
    def d_key(self) -> int:
        return self.amsu.spec.d_key if self.astrocyte else 1

    @property
    def conv_size(self) -> int:
        """Taps of the delay line on what the astrocyte senses (1: none)."""
        return getattr(self.amsu.spec, "conv_size", 1) if self.astrocyte else 1

    @property
    def sensing(self) -> str:
        """What the astrocyte senses: ``"identity"``, ``"relu"`` (non-negative k, q),
        ``"relu2"`` (their squares) or ``"relu-key"`` (non-negative k, signed q)."""
        return getattr(self.amsu.spec, "sensing", "identity") if self.astrocyte else "identity"

    @property
    def parts(self) -> tuple:
        if self.amsu is not None:
            return self.amsu.spec.parts
        return (("I", self.n_neurons),)

    # float tensors of the layer, in the form the equations use (autograd intact)
    def weight(self) -> torch.Tensor:
        return self.amsu.weight if self.amsu is not None else self.linear.weight

    def bias(self) -> Optional[torch.Tensor]:
        if self.amsu is not None:
            return self.amsu.bias if self.neuron_path else None
        return self.linear.bias

    def beta(self) -> torch.Tensor:
        return (self.amsu or self.lif).beta

    def threshold(self) -> torch.Tensor:
        return (self.amsu or self.lif).threshold

    def gamma(self) -> torch.Tensor:
        return self.amsu.gamma

    def gain(self) -> torch.Tensor:
        """Per-neuron read-out gain ``g_astro / sqrt(d_key)``."""
        return self.amsu.astro_gain / math.sqrt(self.amsu.spec.d_key)

    def conv(self) -> Optional[torch.Tensor]:
        """The delay line's taps ``[conv_size, A*d_k + N]`` (row j: lag j), or None."""
        return self.amsu.conv if self.conv_size > 1 else None


def _unsupported(where: str, what: str) -> None:
    raise ValueError(f"{where}: {what}")


def _check_amsu(where: str, m: AMSU) -> None:
    s = m.spec
    if s.synapse != "identity":
        _unsupported(where, f"AMSU synapse={s.synapse!r} has no integer form (a sigmoid needs "
                            "a lookup table the integer AM-SU does not have); use 'identity'")
    if getattr(s, "clock", "time") != "time":
        _unsupported(where, f"AMSU clock={s.clock!r} (a phase advanced by the astrocyte's "
                            "activity softplus(W_E x), turning k and q by its cosines and "
                            "scaling the write) has no integer form: a softplus and the "
                            "cosines of a running phase are not integer-expressible; the "
                            "integer export needs clock='time' and rotary=False")
    if s.rotary:
        _unsupported(where, "AMSU rotary=True (rotary positions) has no integer form")
    if not s.spiking:
        _unsupported(where, "AMSU spiking=False (the non-spiking twin) emits no spikes to "
                            "quantize")
    norm = getattr(s, "readout_norm", "none")
    if norm != "none":
        _unsupported(where, f"AMSU readout_norm={norm!r} has no integer form (an RMS "
                            "normalisation of the read-out is not integer-expressible); the "
                            "integer export needs readout_norm='none'")
    conv = getattr(s, "conv_size", 1)
    if s.astrocyte and conv > MAX_CONV_SIZE:
        _unsupported(where, f"AMSU conv_size={conv}: the integer delay line has at most "
                            f"{MAX_CONV_SIZE} taps")
    sensing = getattr(s, "sensing", "identity")
    if s.astrocyte and sensing not in SENSINGS:
        _unsupported(where, f"AMSU sensing={sensing!r} has no integer form (the integer "
                            f"network has sensing {', '.join(map(repr, SENSINGS))})")
    retention = getattr(s, "retention", "fixed")
    if retention != "fixed":
        _unsupported(where, f"AMSU retention={retention!r} (an input-dependent astrocyte "
                            "retention, sigmoid(W_G x)^(1/temperature)) is not "
                            "integer-expressible: a sigmoid and a fractional power per step "
                            "have no integer form; the integer export needs retention='fixed'")


def _lif_fits_stock(lin: nn.Linear, lif: LIF) -> bool:
    s = lif.spec
    if s.reset != "zero" or s.spike_levels != 1:
        return False
    if lif.log_tau_mem.requires_grad or lif.log_threshold.requires_grad:
        return False
    tau, th = lif.log_tau_mem.detach(), lif.log_threshold.detach()
    return bool((tau == tau[0]).all()) and bool((th == th[0]).all())


def extract_layers(model: nn.Module, prefer_stock_lif: bool = True) -> list[LayerRef]:
    """The model as a list of :class:`LayerRef`; a clear ``ValueError`` for anything else."""
    if isinstance(model, AMSU):
        _check_amsu("AMSU", model)
        return [LayerRef("amsu", "amsu0", amsu=model)]
    core = model
    if not isinstance(model, nn.Sequential) and isinstance(getattr(model, "core", None),
                                                          nn.Sequential):
        core = model.core
    if not isinstance(core, nn.Sequential):
        raise TypeError(
            "model must be an astro_neuron.AMSU, an nn.Sequential of AMSU and Linear + LIF "
            f"layers, or have such a Sequential as .core; got {type(model).__name__}")
    mods = list(core.named_children())
    if not mods:
        raise ValueError("model is an empty nn.Sequential")
    out: list[LayerRef] = []
    i = 0
    while i < len(mods):
        name, m = mods[i]
        where = f"layer {name!r} ({type(m).__name__})"
        if isinstance(m, AMSU):
            _check_amsu(where, m)
            out.append(LayerRef("amsu", f"amsu{len(out)}", amsu=m))
            i += 1
        elif isinstance(m, nn.Linear):
            if i + 1 >= len(mods) or not isinstance(mods[i + 1][1], LIF):
                _unsupported(where, "an nn.Linear must be followed by an astro_neuron.LIF (the "
                                    "Linear is that LIF layer's synapse)")
            lif = mods[i + 1][1]
            if lif.spec.n_neurons != m.out_features:
                _unsupported(where, f"Linear out_features={m.out_features} but the next LIF "
                                    f"has n_neurons={lif.spec.n_neurons}")
            if not lif.spec.spiking:
                _unsupported(f"layer {mods[i + 1][0]!r} (LIF)", "spiking=False emits no spikes")
            kind = "lif" if prefer_stock_lif and _lif_fits_stock(m, lif) else "amsu"
            out.append(LayerRef(kind, f"{kind}{len(out)}", linear=m, lif=lif))
            i += 2
        elif isinstance(m, LIF):
            _unsupported(where, "a LIF layer needs an nn.Linear before it (its synapse)")
        else:
            _unsupported(where, "not supported by the integer network (supported: AMSU, "
                                "nn.Linear + LIF)")
    prev = None
    for ref in out:
        if prev is not None and ref.n_in != prev.n_neurons:
            raise ValueError(f"{ref.name} expects {ref.n_in} inputs but {prev.name} has "
                             f"{prev.n_neurons} neurons")
        prev = ref
    return out


# ----------------------------------------------------------------- the float network

@dataclass
class FloatLayer:
    kind: str
    weight: np.ndarray             # [P, n_in]
    bias: np.ndarray               # [N]
    beta: np.ndarray               # [N]
    threshold: np.ndarray          # [N]
    gamma: np.ndarray              # [A, dk] (ones when astrocyte off)
    gain: np.ndarray               # [N] g / sqrt(dk)
    n_neurons: int
    n_astrocytes: int
    d_key: int
    neuron_path: bool
    astrocyte: bool
    reset: str
    spike_levels: int
    in_levels: int
    conv: Optional[np.ndarray] = None   # [conv_size, A*dk + N] delay-line taps, or None
    sensing: str = "identity"           # "relu": k, q <- max(k, 0), max(q, 0) after the line;
                                        # "relu2": their squares

    @property
    def conv_size(self) -> int:
        return 1 if self.conv is None else self.conv.shape[0]

    @property
    def state_names(self) -> tuple:
        if self.kind == "lif":
            return ("a", "u", "v")
        return ("a",) + (("u",) if self.neuron_path else ()) + \
            (("H",) if self.astrocyte else ()) + (("conv",) if self.conv is not None else ())

    def state_shapes(self, batch: int) -> dict:
        N = self.n_neurons
        if self.kind == "lif":
            return {"a": (batch, N), "u": (batch, N), "v": (batch, N)}
        out = {"a": (batch, self.weight.shape[0])}
        if self.neuron_path:
            out["u"] = (batch, N)
        if self.astrocyte:
            out["H"] = (batch, self.n_astrocytes, self.d_key, N // self.n_astrocytes)
        if self.conv is not None:
            out["conv"] = (batch, self.conv_size - 1, self.conv.shape[1])
        return out


@dataclass
class FloatNetwork:
    layers: list
    input_size: int
    input_levels: int


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float64).cpu().numpy().copy()


def float_network(model: nn.Module, input_levels: int = 1) -> FloatNetwork:
    """The model's float parameters as NumPy arrays, layer by layer."""
    refs = extract_layers(model)
    layers, levels = [], input_levels
    for ref in refs:
        N = ref.n_neurons
        b = ref.bias()
        layers.append(FloatLayer(
            kind=ref.kind, weight=_np(ref.weight()),
            bias=_np(b) if b is not None else np.zeros(N),
            beta=_np(ref.beta()) if ref.neuron_path else np.ones(N),
            threshold=_np(ref.threshold()),
            gamma=_np(ref.gamma()) if ref.astrocyte else np.ones((1, 1)),
            gain=_np(ref.gain()) if ref.astrocyte else np.zeros(N),
            n_neurons=N, n_astrocytes=ref.n_astrocytes, d_key=ref.d_key,
            neuron_path=ref.neuron_path, astrocyte=ref.astrocyte, reset=ref.reset,
            spike_levels=ref.spike_levels, in_levels=levels,
            conv=None if ref.conv() is None else _np(ref.conv()), sensing=ref.sensing))
        levels = ref.spike_levels
    return FloatNetwork(layers, refs[0].n_in, input_levels)


def delay(x: torch.Tensor, steps: int = 1) -> torch.Tensor:
    """``x`` ``[T, ...]`` delayed by ``steps`` (zeros first), length kept."""
    if steps == 0:
        return x
    return torch.cat([torch.zeros_like(x[:steps]), x[:-steps]], dim=0)


@torch.no_grad()
def float_reference(model: nn.Module, x_seq, synaptic_delay: bool = True):
    """Run the float model in float64 the way the Lava graph runs it.

    With ``synaptic_delay`` every layer sees its input one step late (Lava's Dense).
    Returns a :class:`~neuromorphic.engines.RunOutput` of float arrays with the
    same state names as the Lava run (``a``: the Dense buffer, ``u``/``H`` after the
    step; for stock-LIF layers ``u`` is the input current and ``v`` the membrane).
    """
    refs = extract_layers(model)
    x = torch.as_tensor(np.asarray(x_seq), dtype=torch.float64)
    spikes, states = [], []
    for ref in refs:
        W = ref.weight().detach().double()
        buf = x @ W.T          # the synapse (a Linear's bias is the neuron's bias)
        a = delay(buf) if synaptic_delay else buf
        st = {"a": buf}
        if ref.amsu is not None:
            s, st_more = _amsu_float_loop(ref.amsu, delay(x) if synaptic_delay else x)
        else:
            s, st_more = _lif_float_loop(ref, a)
        st.update(st_more)
        spikes.append(s.numpy())
        states.append({k: v.numpy() for k, v in st.items()})
        x = s
    return RunOutput(spikes, states)


def _amsu_float_loop(m: AMSU, x: torch.Tensor):
    """The float AM-SU (:func:`astro_neuron.functional.amsu.amsu_step`, the one definition)
    step by step on the (delayed) input spikes; returns spikes and the states after each
    step (``u`` after the reset, ``H``)."""
    spec = m.spec
    p = AMSUParams(*(None if t is None else t.detach().double() for t in m.params()))
    state = init_state(spec, x.shape[1], dtype=torch.float64)
    ss, us, Hs, cs = [], [], [], []
    line = spec.astrocyte and spec.conv_size > 1
    for t in range(x.shape[0]):
        out, state = amsu_step(x[t], state, p, spec)
        ss.append(out.spikes)
        us.append(state.u)
        if spec.astrocyte:
            Hs.append(state.H)
        if line:
            cs.append(state.conv)
    st = {}
    if spec.neuron_path:
        st["u"] = torch.stack(us)
    if spec.astrocyte:
        st["H"] = torch.stack(Hs)
    if line:
        st["conv"] = torch.stack(cs)
    return torch.stack(ss), st


def _lif_float_loop(ref: LayerRef, a: torch.Tensor):
    """Linear + LIF: ``u`` = the current (``W s + b`` as Lava's LIF current with du=1
    for stock layers), membrane after reset."""
    lif = ref.lif
    b = ref.linear.bias.detach().double() if ref.linear.bias is not None else 0.0
    beta, th = lif.beta.detach().double(), lif.threshold.detach().double()
    cur = a + b
    u = torch.zeros_like(a[0])
    ss, us = [], []
    for t in range(a.shape[0]):
        s, _, u = lif_step(cur[t], u, beta, th, lif.spec)
        ss.append(s)
        us.append(u)
    mem = torch.stack(us)
    if ref.kind == "lif":      # Lava LIF: u is the synaptic current, v the membrane
        return torch.stack(ss), {"u": a, "v": mem}
    return torch.stack(ss), {"u": mem}
