"""Astrocyte models an AM-SU layer can use (``AMSU(astro_model=...)``).

==============  ===========================================  =====================
name            model                                        forms
==============  ===========================================  =====================
``"linear"``    the paper's matrix state ``H`` (docs/model.md)  step, loop, chunked
``"li_rinzel"`` Li-Rinzel calcium/IP3 compartments            step, loop (sequential)
==============  ===========================================  =====================

Both are driven by the same pre-synaptic activity (the key ``k`` and value ``v``
projected from the input) and feed the neuron the same way (read by the query ``q``,
scaled by ``g_astro / sqrt(d_k)``, added to the membrane before the threshold). The
nonlinear model's equations, units and parameter sources: docs/neuroscience.md.

:func:`astro_summary` reduces an astrocyte state to one number per astrocyte, the
"calcium-like trace" recorders store and plots draw: the Frobenius norm of ``H^a``
for the linear model, the mean Ca2+ concentration (µM) for Li-Rinzel.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Union

import torch
from torch import Tensor

from astro_neuron.functional.li_rinzel import CA, LiRinzel

__all__ = ["ASTRO_MODELS", "LiRinzel", "resolve_astro_model", "astro_summary",
           "summary_label"]

#: name -> model class (``None``: the built-in linear astrocyte)
ASTRO_MODELS: dict[str, Any] = {"linear": None, "li_rinzel": LiRinzel}


def resolve_astro_model(astro_model: Union[str, Any], dt: float):
    """``"linear"``, or the nonlinear model object for a layer with step ``dt``.

    ``astro_model`` is a name of :data:`ASTRO_MODELS` or a model object (such as
    ``LiRinzel(delta_IP3=1.0)``); an object gets the layer's ``dt``.
    """
    if isinstance(astro_model, str):
        if astro_model not in ASTRO_MODELS:
            raise ValueError(f"astro_model must be one of {tuple(ASTRO_MODELS)} or a model "
                             f"object, got {astro_model!r}")
        cls = ASTRO_MODELS[astro_model]
        return "linear" if cls is None else cls(dt=dt)
    if dataclasses.is_dataclass(astro_model) and hasattr(astro_model, "step"):
        return dataclasses.replace(astro_model, dt=dt)
    raise TypeError(f"astro_model must be a name {tuple(ASTRO_MODELS)} or a model object "
                    f"such as LiRinzel(...), got {type(astro_model).__name__}")


def astro_summary(H: Tensor, astro_model: Union[str, Any] = "linear") -> Tensor:
    """One number per astrocyte: ``[..., A, d_k, d_v]`` (linear) or
    ``[..., 3, A, d_k, d_v]`` (Li-Rinzel) -> ``[..., A]``.

    Linear: ``||H^a||_F``; Li-Rinzel: mean Ca2+ (µM) over the astrocyte's compartments.
    """
    if _is_linear(astro_model):
        return torch.linalg.vector_norm(H, dim=(-2, -1))
    return H[..., CA, :, :, :].mean(dim=(-2, -1))


def summary_label(astro_model: Union[str, Any] = "linear") -> str:
    """Axis label for :func:`astro_summary` of this model."""
    return "|H| per astrocyte (a.u.)" if _is_linear(astro_model) else "Ca2+ (µM)"


def _is_linear(astro_model) -> bool:
    name = astro_model if isinstance(astro_model, str) else getattr(astro_model, "name", None)
    if name not in ASTRO_MODELS:
        raise ValueError(f"unknown astro_model {astro_model!r}")
    return ASTRO_MODELS[name] is None
