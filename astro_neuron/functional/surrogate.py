"""Surrogate-gradient spike functions.

Every spike function here has the *exact* Heaviside step as its forward pass,
with the strict comparison Lava and snnTorch use (``x > 0`` spikes, ``x == 0`` does
not), and the derivative of a smooth step (the *primitive*) as its backward pass.

All primitives are normalised smooth steps: they rise from 0 to 1, so their
derivative integrates to 1. Foreign surrogates (``spikingjelly.activation_based.
surrogate.*`` modules, ``snntorch.surrogate.*`` closures, or any callable that maps a
tensor to spikes with a custom backward) are accepted through :func:`as_surrogate`,
which keeps the foreign backward but enforces the strict forward.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from astro_neuron.validate import broadcasts_into, positive_number

__all__ = [
    "Surrogate", "ATan", "Sigmoid", "FastSigmoid", "SuperSpike", "Triangle",
    "heaviside", "as_surrogate", "spike", "fire_levels",
]


def heaviside(x: Tensor) -> Tensor:
    """Exact step with the strict comparison: 1 where ``x > 0``, else 0."""
    return (x > 0).to(x.dtype)


class _SurrogateSpike(torch.autograd.Function):
    """Heaviside forward, ``sg.derivative`` backward."""

    @staticmethod
    def forward(ctx, x: Tensor, sg: "Surrogate") -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.sg = sg
        return heaviside(x)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * ctx.sg.derivative(x), None


class Surrogate:
    """Base class: subclasses define :meth:`primitive` and :meth:`derivative`.

    ``sg(x)`` returns spikes (exact step forward, ``derivative`` backward);
    ``sg.primitive(x)`` is the smooth step itself (used by the non-spiking twin).
    """

    def primitive(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def derivative(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def grad_(self, t: Tensor, grad: Tensor) -> Tensor:
        """``grad * derivative(t)``, allowed to overwrite ``t`` (a fresh tensor the
        caller owns) to save temporaries; subclasses override it with in-place passes."""
        return torch.mul(grad, self.derivative(t))

    def __call__(self, x: Tensor) -> Tensor:
        return _SurrogateSpike.apply(x, self)

    def _params(self) -> dict:
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self._params().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self._params() == other._params()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(self._params().items())))


def _positive(name: str, value: float) -> float:
    return positive_number(name, float(value))


class ATan(Surrogate):
    """Arc-tangent surrogate (Fang et al. 2021; the default).

    primitive ``atan(pi/2 * alpha * x) / pi + 1/2``;
    derivative ``(alpha/2) / (1 + (pi/2 * alpha * x)^2)``. Identical to
    SpikingJelly's ``ATan`` and snnTorch's ``atan`` for the same ``alpha``.
    """

    def __init__(self, alpha: float = 2.0) -> None:
        self.alpha = _positive("alpha", alpha)

    def _params(self) -> dict:
        return {"alpha": self.alpha}

    def primitive(self, x: Tensor) -> Tensor:
        return torch.atan(math.pi / 2 * self.alpha * x) / math.pi + 0.5

    def derivative(self, x: Tensor) -> Tensor:
        # in place on one fresh tensor: the backward of every spiking layer runs this
        # over (T, B, N); five temporaries cost more than the arithmetic (issue 14)
        t = torch.mul(x, math.pi / 2 * self.alpha)
        return t.square_().add_(1).reciprocal_().mul_(self.alpha / 2)

    def grad_(self, t: Tensor, grad: Tensor) -> Tensor:
        # grad / (2/alpha + (2/alpha) c^2 t^2), c = pi/2 alpha: two passes over t
        # (one fused multiply-add for the denominator, one division), in place
        c = math.pi / 2 * self.alpha
        base = torch.full((), 2 / self.alpha, dtype=t.dtype, device=t.device)
        torch.addcmul(base, t, t, value=c * c * 2 / self.alpha, out=t)
        return torch.div(grad, t, out=t)


class Sigmoid(Surrogate):
    """Logistic surrogate: primitive ``sigmoid(alpha x)``; derivative
    ``alpha * s * (1 - s)``. Same as SpikingJelly's ``Sigmoid``."""

    def __init__(self, alpha: float = 4.0) -> None:
        self.alpha = _positive("alpha", alpha)

    def _params(self) -> dict:
        return {"alpha": self.alpha}

    def primitive(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.alpha * x)

    def derivative(self, x: Tensor) -> Tensor:
        s = torch.sigmoid(self.alpha * x)
        return self.alpha * s * (1 - s)


class FastSigmoid(Surrogate):
    """Fast sigmoid / SuperSpike (Zenke & Ganguli 2018), normalised.

    primitive ``1/2 + x*slope / (2 (1 + slope|x|))``;
    derivative ``(slope/2) / (1 + slope|x|)^2``.
    snnTorch's ``fast_sigmoid(slope)`` uses ``1/(1+slope|x|)^2`` (not normalised,
    larger by ``2/slope``); pass that closure directly if you want its scale.
    """

    def __init__(self, slope: float = 25.0) -> None:
        self.slope = _positive("slope", slope)

    def _params(self) -> dict:
        return {"slope": self.slope}

    def primitive(self, x: Tensor) -> Tensor:
        return 0.5 + 0.5 * self.slope * x / (1 + self.slope * x.abs())

    def derivative(self, x: Tensor) -> Tensor:
        return (self.slope / 2) / (1 + self.slope * x.abs()) ** 2

    def grad_(self, t: Tensor, grad: Tensor) -> Tensor:
        # grad / ((2/slope) (1 + slope |t|)^2), in place on t
        t.abs_().mul_(self.slope).add_(1).square_().mul_(2 / self.slope)
        return torch.div(grad, t, out=t)


SuperSpike = FastSigmoid


class Triangle(Surrogate):
    """Triangular surrogate (Esser et al. 2016; Bellec et al. 2018), normalised.

    derivative ``max(0, 1 - |x|/width) / width``; primitive the piecewise quadratic
    step that integrates it (0 below ``-width``, 1 above ``width``).
    """

    def __init__(self, width: float = 1.0) -> None:
        self.width = _positive("width", width)

    def _params(self) -> dict:
        return {"width": self.width}

    def primitive(self, x: Tensor) -> Tensor:
        w = self.width
        z = (x / w).clamp(-1.0, 1.0)
        return torch.where(z < 0, 0.5 * (1 + z) ** 2, 1 - 0.5 * (1 - z) ** 2)

    def derivative(self, x: Tensor) -> Tensor:
        return (1 - x.abs() / self.width).clamp(min=0) / self.width


class _Fire(torch.autograd.Function):
    """``sum_l Theta(y - l theta)`` (l = 1..L) with ``sg``'s derivative as the backward,
    fused: the forward is one comparison per level written straight into the output
    (no ``y - theta`` temporary; ``y > l theta`` and ``y - l theta > 0`` agree in IEEE
    arithmetic with gradual underflow), the backward forms ``y - l theta`` once per
    level and turns it in place into the input gradient (:meth:`Surrogate.grad_`); the
    threshold's gradient is the reduction of that tensor, negated after reducing."""

    @staticmethod
    def forward(ctx, y, threshold, sg, levels):  # type: ignore[override]
        dt = torch.result_type(y, threshold)
        shape = (y.shape if broadcasts_into(threshold.shape, y.shape)
                 else torch.broadcast_shapes(y.shape, threshold.shape))
        s = torch.empty(shape, dtype=dt, device=y.device)
        torch.gt(y, threshold, out=s)
        for level in range(2, levels + 1):
            s.add_(y > level * threshold)
        ctx.save_for_backward(y, threshold)
        ctx.sg, ctx.levels = sg, levels
        return s

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        y, threshold = ctx.saved_tensors
        sg, levels = ctx.sg, ctx.levels
        need_y, need_thr = ctx.needs_input_grad[:2]
        gy = gthr = None
        for level in range(1, levels + 1):
            thr = threshold if level == 1 else level * threshold
            if torch.is_grad_enabled():      # double backward: differentiable ops only
                t = grad * sg.derivative(y - thr)
            else:
                t = sg.grad_(torch.sub(y, thr), grad)
            if need_thr:
                gt = t.sum_to_size(threshold.shape) * -level
                gthr = gt if gthr is None else gthr + gt
            gy = t if gy is None else gy.add_(t)
        if need_y and gy.shape != y.shape:
            gy = gy.sum_to_size(y.shape)
        return (gy if need_y else None), gthr, None, None


def fire_levels(y: Tensor, threshold: Tensor, sg, levels: int = 1) -> Tensor:
    """Spikes ``sum_l sg(y - l * threshold)``, l = 1..``levels``, as one fused autograd
    node when ``sg`` is one of this module's surrogates (same values and gradients as
    the plain sum, to rounding); any other spike function runs the plain sum."""
    if isinstance(sg, Surrogate) and isinstance(threshold, Tensor):
        return _Fire.apply(y, threshold, sg, levels)
    s = sg(y - threshold)
    for level in range(2, levels + 1):
        s = s + sg(y - level * threshold)
    return s


class _Foreign:
    """Wraps a foreign surrogate callable: strict Heaviside forward, its backward."""

    def __init__(self, fn: Callable[[Tensor], Tensor]) -> None:
        self.fn = fn

    def __call__(self, x: Tensor) -> Tensor:
        y = self.fn(x)
        if not isinstance(y, Tensor) or y.shape != x.shape:
            raise TypeError(
                f"surrogate {self.fn!r} must map a tensor to a tensor of the same shape, "
                f"got {type(y).__name__} {getattr(y, 'shape', '')}")
        # exact strict step forward (y - y.detach() is exactly 0), foreign gradient backward
        return heaviside(x).detach() + (y - y.detach())

    def primitive(self, x: Tensor) -> Tensor:
        # SpikingJelly surrogates expose their smooth step as primitive_function
        prim = getattr(self.fn, "primitive_function", None)
        if prim is None:
            raise TypeError(
                f"surrogate {self.fn!r} has no smooth primitive; the non-spiking twin "
                "needs one of astro_neuron.surrogate's classes (e.g. ATan())")
        alpha = getattr(self.fn, "alpha", None)
        return prim(x, alpha) if alpha is not None else prim(x)

    def __repr__(self) -> str:
        return f"as_surrogate({self.fn!r})"


def as_surrogate(fn) -> Surrogate | _Foreign:
    """Return a spike function for ``fn``.

    ``None`` gives the default :class:`ATan`; our own surrogates are returned as they
    are; any other callable (SpikingJelly module, snnTorch closure) is wrapped so the
    forward is the strict step and the backward is ``fn``'s.
    """
    if fn is None:
        return ATan()
    if isinstance(fn, (Surrogate, _Foreign)):
        return fn
    if isinstance(fn, type) and issubclass(fn, Surrogate):
        raise TypeError(f"pass an instance, e.g. {fn.__name__}(), not the class")
    if not callable(fn):
        raise TypeError(f"surrogate must be callable, got {type(fn).__name__}")
    return _Foreign(fn)


def spike(x: Tensor, surrogate=None) -> Tensor:
    """Spikes of ``x`` (strict ``x > 0``) with ``surrogate``'s gradient."""
    return as_surrogate(surrogate)(x)
