"""Named parameter sets with their units: one for biology (milliseconds), one for
machine learning (steps, the AMSU defaults). See docs/neuroscience.md, "Presets".

    >>> from astro_neuron.neuro import preset, make_amsu
    >>> p = preset("biology")                    # dt = 1 ms, tau_mem = 20 ms, ...
    >>> layer = make_amsu(100, 80, "biology", n_astrocytes=4)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Union

from astro_neuron.amsu import AMSU

__all__ = ["Preset", "PRESETS", "preset", "make_amsu"]


@dataclass(frozen=True)
class Preset:
    """Time constants and spike rule of a layer; times in ``time_unit``."""

    name: str
    time_unit: str                       # "ms" or "step"
    dt: float                            # one simulation step
    tau_mem: float                       # membrane time constant
    tau_astro: tuple[float, float]       # range of astrocyte time constants (log-spread)
    threshold: float                     # firing threshold (u is in units of it)
    reset: str                           # "none" | "subtract" | "zero"
    description: str = ""

    def __post_init__(self) -> None:
        if self.time_unit not in ("ms", "step"):
            raise ValueError(f"time_unit must be 'ms' or 'step', got {self.time_unit!r}")
        for name in ("dt", "tau_mem", "threshold"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not v > 0 or v == float("inf"):
                raise ValueError(f"preset {name} must be positive and finite, got {v!r}")
        lo, hi = self.tau_astro
        if not 0 < lo <= hi < float("inf"):
            raise ValueError(f"preset tau_astro must be (low, high) with 0 < low <= high, "
                             f"got {self.tau_astro!r}")

    def amsu_kwargs(self) -> dict:
        """Keyword arguments for :class:`astro_neuron.AMSU` (and populations)."""
        return {"dt": self.dt, "tau_mem": self.tau_mem, "tau_astro": tuple(self.tau_astro),
                "threshold": self.threshold, "reset": self.reset}


PRESETS: dict[str, Preset] = {
    "biology": Preset(
        "biology", "ms", dt=1.0, tau_mem=20.0, tau_astro=(1000.0, 10000.0), threshold=1.0,
        reset="zero",
        description="cortical time scales in ms: 1 ms steps, 20 ms membrane, astrocytes "
                    "1-10 s (IP3 decays in ~7 s in NEST's astrocyte_lr_1994); the membrane "
                    "returns to rest (0) after a spike"),
    "machine_learning": Preset(
        "machine_learning", "step", dt=1.0, tau_mem=2.0, tau_astro=(10.0, 1000.0),
        threshold=1.0, reset="none",
        description="the AMSU defaults: time in steps (tokens), no reset so the parallel "
                    "(chunked) form trains"),
}
_ALIASES = {"ml": "machine_learning", "bio": "biology"}


def preset(name: Union[str, Preset], **overrides) -> Preset:
    """The preset ``name`` (``"biology"``, ``"machine_learning"``; aliases ``"bio"``,
    ``"ml"``), with fields replaced by ``overrides``."""
    if isinstance(name, Preset):
        base = name
    else:
        key = _ALIASES.get(name, name)
        if key not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)} "
                             f"(aliases {sorted(_ALIASES)})")
        base = PRESETS[key]
    bad = set(overrides) - {f.name for f in dataclasses.fields(Preset)}
    if bad:
        raise TypeError(f"preset() got unknown fields {sorted(bad)}")
    return dataclasses.replace(base, **overrides) if overrides else base


def make_amsu(in_features: int, n_neurons: int, preset_name: Union[str, Preset] = "biology",
              **kwargs):
    """An :class:`astro_neuron.AMSU` with the preset's time constants; ``kwargs`` are
    passed on and win over the preset."""
    return AMSU(in_features, n_neurons, **{**preset(preset_name).amsu_kwargs(), **kwargs})
