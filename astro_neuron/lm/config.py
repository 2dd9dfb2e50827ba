"""Configuration of the language models: one dataclass for AM-SNet and its baselines.

The same :class:`AMSNetConfig` builds the AM-SNet, each of its ablations and the
same-size causal Transformer (``arch="transformer"``), so every comparison goes
through one code path (see docs/lm.md). Checkpoints store ``asdict(config)``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from astro_neuron.functional.amsu import CLOCKS, RETENTIONS, SENSINGS
from astro_neuron.validate import (
    boolean, choice, finite_number, non_negative_int, number_in_range, positive_int,
    positive_number, probability,
)

__all__ = ["AMSNetConfig", "ARCHS", "AMSNET_ONLY", "config_from_dict", "stored_config",
           "transformer_twin"]

ARCHS = ("amsnet", "transformer")
#: the model options only the AM-SNet reads: the Transformer baseline
#: (``arch="transformer"``) has no spiking neurons or astrocytes, so a value other than
#: the default is an error there rather than silently ignored (:func:`transformer_twin`).
#: ``chunk_size`` is not one: it chooses how the AM-SNet's parallel form runs, not what
#: it computes, and the Transformer accepts and ignores it as it does ``mode``.
AMSNET_ONLY = ("d_key", "ffn_hidden", "tau_mem", "tau_astro", "tau_ffn", "threshold",
               "spike_levels", "astro_gain", "synapse_init", "astro_norm", "surrogate_alpha",
               "astrocyte", "neuron_path", "spiking", "rotary_fraction", "conv_size",
               "retention", "gate_temperature", "gate_bias", "sensing", "clock", "clock_step",
               "clock_rate", "decay_clock", "clock_threshold")
TAU_ASTRO_INITS = ("retnet",)       # named decay initialisations (astro_neuron.AMSU's)


@dataclass
class AMSNetConfig:
    """Shape and options of an AM-SNet (or its Transformer twin); see docs/lm.md."""

    arch: str = "amsnet"            # "amsnet" (AM-SU token mixing) or "transformer" (baseline)
    vocab_size: int = 256           # tokens; 256 = bytes (the byte tokenizer)
    block_size: int = 256           # training context: tokens per sequence
    n_layer: int = 4                # blocks
    n_head: int = 4                 # astrocytes per AM-SU layer (attention heads: transformer)
    d_key: int = 0                  # dimensions each astrocyte senses in (its k, q size d_k);
                                    # 0: the head size d_model / n_head (AM-SNet only)
    d_model: int = 256              # residual width d = N, the neurons of an AM-SU layer
    ffn_mult: int = 4               # channel-mixing width = ffn_mult * d_model spiking neurons
    ffn_hidden: int = 0             # channel-mixing width in neurons, overriding ffn_mult
                                    # (AM-SNet only; 0: ffn_mult * d_model). For ablations
                                    # at equal parameters (bench train, docs/benchmarks.md)
    tau_mem: float = 2.0            # AM-SU membrane time constant (tokens)
    tau_astro: tuple = (10.0, 1000.0)  # astrocyte time constants (tokens), log-spread over
                                       # each astrocyte's key channels; or "retnet"
                                       # (astrocyte a decays by 1 - 2^(-5-a), RetNet's)
    tau_ffn: float = 2.0            # time constant of the channel-mixing LIF neurons (tokens)
    threshold: float = 1.0          # initial firing threshold theta (learned)
    spike_levels: int = 1           # 1: binary spikes; L > 1: graded spikes in {0..L}
    astro_gain: float = 0.1         # initial per-neuron astrocyte gain g_astro (learned);
                                    # small: see docs/lm.md, "Findings"
    synapse_init: float = 0.1       # initial synaptic weights W_I, relative to nn.Linear's;
                                    # small, so the astrocyte is not drowned (docs/lm.md)
    astro_norm: bool = True         # RMS-normalise each astrocyte's read-out over its neurons
                                    # before g_astro (False: the plain AM-SU, docs/lm.md)
    surrogate_alpha: float = 2.0    # width of the ATan surrogate gradient
    astrocyte: bool = True          # False: ablation "spiking neuron alone" (o_t = 0)
    neuron_path: bool = True        # False: ablation "astrocyte alone" (u_t = 0)
    spiking: bool = True            # False: non-spiking twin (spike -> smooth surrogate step)
    rotary_base: float = 10000.0    # rotary position base (q, k of the astrocyte / attention)
    rotary_fraction: float = 1.0    # share of the astrocyte's d_k key/query channels rotated
                                    # (partial rotary; the Transformer always rotates all)
    chunk_size: int = 64            # chunk length of the parallel (chunked) form
    conv_size: int = 1              # taps of the AM-SU's pre-synaptic delay line on k, v
                                    # (Zoology's short convolution); 1: none (docs/model.md)
    retention: str = "fixed"        # astrocyte retention: "fixed" (the paper), "gated"
                                    # (input-dependent, GLA) or "selective" (docs/model.md)
    gate_temperature: float = 16.0  # temperature of the retention gate
    gate_bias: float = 0.0          # initial bias of the retention gate
    sensing: str = "identity"       # what the astrocyte senses: "identity" (the paper),
                                    # "relu" (non-negative k, q), "relu2" (their squares)
                                    # or "relu-key" (non-negative k, signed q;
                                    # docs/model.md, docs/memory.md)
    clock: str = "time"             # what turns the astrocyte's rotary channels: "time"
                                    # (the step count) or "activity" (a phase its activity
                                    # advances; docs/model.md, docs/memory.md)
    clock_step: float = 0.05        # the activity at the start (clock="activity")
    clock_rate: float = 1.0         # how far a unit of phase turns the keys (clock="activity";
                                    # 2: a sharper count, docs/memory.md)
    decay_clock: str = "time"       # what the astrocyte's decay runs on: "time" (every
                                    # step) or "activity" (gamma ** a_t; clock="activity")
    clock_threshold: float = 0.0    # the activity below which an astrocyte is silent
                                    # (clock="activity": max(softplus(.) - it, 0))
    init_std: float = 0.02          # std of embeddings and output projections (GPT-2 style);
                                    # "width": 1 / sqrt(d_model), resolved when the config
                                    # is made (what attention needs to learn MQAR at small
                                    # widths: docs/memory.md, "The Transformer's init")

    def __post_init__(self) -> None:
        choice("arch", self.arch, ARCHS)
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "d_model", "ffn_mult",
                     "spike_levels", "chunk_size"):
            positive_int(name, getattr(self, name))
        if self.d_model % self.n_head:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_head "
                             f"({self.n_head})")
        if (self.d_model // self.n_head) % 2:
            raise ValueError(f"rotary positions need an even head size, got d_model/n_head = "
                             f"{self.d_model // self.n_head}")
        tau = self.tau_astro
        if isinstance(tau, str):
            choice("tau_astro", tau, TAU_ASTRO_INITS)
        elif isinstance(tau, (int, float)) and not isinstance(tau, bool):
            tau = (float(tau), float(tau))
        if not isinstance(tau, (tuple, list, str)) or (not isinstance(tau, str) and len(tau) != 2):
            raise ValueError(f"tau_astro must be a number, a (low, high) pair or 'retnet', "
                             f"got {tau!r}")
        if not isinstance(tau, str):
            self.tau_astro = (float(tau[0]), float(tau[1]))
        if isinstance(self.init_std, str):
            choice("init_std", self.init_std, ("width",))
            self.init_std = self.d_model ** -0.5
        for name in ("tau_mem", "tau_ffn", "threshold", "surrogate_alpha", "init_std",
                     "synapse_init"):
            setattr(self, name, positive_number(name, getattr(self, name)))
        if not isinstance(self.tau_astro, str):
            lo, hi = self.tau_astro
            if not (math.isfinite(lo) and math.isfinite(hi)) or lo <= 0 or hi < lo:
                raise ValueError(f"tau_astro=(low, high) needs 0 < low <= high, got "
                                 f"{self.tau_astro}")
        finite_number("astro_gain", self.astro_gain)
        for name in ("astrocyte", "neuron_path", "spiking", "astro_norm"):
            boolean(name, getattr(self, name))
        if not (self.astrocyte or self.neuron_path):
            raise ValueError("astrocyte=false and neuron_path=false leave the AM-SU no input")
        self.rotary_fraction = probability("rotary_fraction", self.rotary_fraction)
        positive_int("conv_size", self.conv_size)
        choice("retention", self.retention, RETENTIONS)
        choice("sensing", self.sensing, SENSINGS)
        choice("clock", self.clock, CLOCKS)
        self.clock_step = positive_number("clock_step", self.clock_step)
        self.clock_rate = positive_number("clock_rate", self.clock_rate)
        if self.clock_rate != 1 and self.clock != "activity":
            raise ValueError(f"clock_rate={self.clock_rate!r} is an option of clock='activity' "
                             f"(how fast its phase turns the keys), but clock={self.clock!r}")
        choice("decay_clock", self.decay_clock, CLOCKS)
        number_in_range("clock_threshold", self.clock_threshold, 0)
        self.clock_threshold = float(self.clock_threshold)
        if self.clock_threshold and self.clock != "activity":
            raise ValueError(f"clock_threshold={self.clock_threshold!r} is an option of "
                             f"clock='activity', but clock={self.clock!r}")
        if self.decay_clock == "activity" and self.clock != "activity":
            raise ValueError("decay_clock='activity' decays the astrocyte by its activity, "
                             f"which only clock='activity' has, but clock={self.clock!r}")
        self.gate_temperature = positive_number("gate_temperature", self.gate_temperature)
        finite_number("gate_bias", self.gate_bias)
        number_in_range("rotary_base", self.rotary_base, 1, lo_open=True)
        non_negative_int("d_key", self.d_key)           # 0: the head size
        non_negative_int("ffn_hidden", self.ffn_hidden)   # 0: ffn_mult * d_model
        if self.d_key % 2:
            raise ValueError(f"d_key must be even (rotary positions turn pairs of key "
                             f"channels), got {self.d_key}")
        if self.arch != "amsnet":
            unused = [f"{n}={getattr(self, n)!r}" for n, v in _amsnet_only_defaults().items()
                      if getattr(self, n) != v]
            if unused:
                raise ValueError(f"{', '.join(unused)}: AM-SNet option(s) that "
                                 f"arch={self.arch!r} does not use; leave them at their "
                                 "defaults (transformer_twin(config) gives the Transformer "
                                 "of an AM-SNet config)")

    @property
    def head_size(self) -> int:
        """d_model / n_head: the neurons (values) of one astrocyte, or an attention head."""
        return self.d_model // self.n_head

    @property
    def key_size(self) -> int:
        """d_k: the dimensions one astrocyte senses in (``d_key``, or the head size)."""
        return self.d_key or self.head_size

    @property
    def ffn_size(self) -> int:
        """The channel-mixing layer's spiking neurons (``ffn_hidden``, or
        ``ffn_mult * d_model``)."""
        return self.ffn_hidden or self.ffn_mult * self.d_model

    def to_dict(self) -> dict:
        d = asdict(self)
        if not isinstance(self.tau_astro, str):
            d["tau_astro"] = list(self.tau_astro)
        return d


def _amsnet_only_defaults() -> dict[str, Any]:
    """The defaults of the options in :data:`AMSNET_ONLY`, by name."""
    return {f.name: f.default for f in fields(AMSNetConfig) if f.name in AMSNET_ONLY}


def transformer_twin(config: AMSNetConfig) -> AMSNetConfig:
    """The same-size causal Transformer of ``config``: its shape (``vocab_size``,
    ``block_size``, ``n_layer``, ``n_head``, ``d_model``, ``ffn_mult``), rotary base and
    init, with every option in :data:`AMSNET_ONLY` back at its default."""
    return replace(config, arch="transformer", **_amsnet_only_defaults())


def stored_config(d: dict[str, Any]) -> AMSNetConfig:
    """:func:`config_from_dict` for a config read from a checkpoint. A Transformer saved
    before 2026-12-04 may hold AM-SNet options (:data:`AMSNET_ONLY`) away from their
    defaults, accepted and unused then; they are set back to the defaults, which changes
    nothing the model computes, so such a checkpoint still loads."""
    if isinstance(d, dict) and d.get("arch") == "transformer":
        d = {**d, **_amsnet_only_defaults()}
    return config_from_dict(d)


def check_table(cls, d: Any, what: str) -> dict[str, Any]:
    """``d`` as a dict of ``cls``'s fields (a dataclass): a TypeError when it is not a
    dict, a ValueError naming ``what`` and the unknown keys otherwise."""
    if not isinstance(d, dict):
        raise TypeError(f"{what} must be a table/dict, got {type(d).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown {what} key(s) {unknown}; known: {sorted(known)}")
    return dict(d)


def config_from_dict(d: dict[str, Any]) -> AMSNetConfig:
    """Build a config from a dict (a TOML table, a checkpoint), rejecting unknown keys."""
    d = check_table(AMSNetConfig, d, "model config")
    if isinstance(d.get("tau_astro"), list):
        d["tau_astro"] = tuple(d["tau_astro"])
    return AMSNetConfig(**d)
