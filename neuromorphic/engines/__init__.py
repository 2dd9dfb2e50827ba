"""The engines that run an integer network, each with one entry point::

    run(net, x [T, B, n_in] int, record_states=True, **options) -> RunOutput

* ``step``   (:mod:`~neuromorphic.engines.step`): the step specification, the definition;
* ``numpy``  (:mod:`~neuromorphic.engines.numpy_fast`): the fast form in NumPy;
* ``numba``  (:mod:`~neuromorphic.engines.numba_fast`): the fast form, compiled, threaded;
* ``torch``  (:mod:`~neuromorphic.engines.torch_view`): the QAT view, float64 tensors;
* ``lava``   (:mod:`~neuromorphic.engines.lava`): Lava's ``fixed_pt`` process models.

``reference`` is the fastest available form of the specification: ``numba`` when numba
imports, else ``numpy``. Every engine gives the same integers (tests/neuromorphic).
"""

from __future__ import annotations

from neuromorphic.engines import lava, numpy_fast, step, torch_view
from neuromorphic.engines.common import RunOutput

try:
    from neuromorphic.engines import numba_fast
    _NUMBA_MISSING = ""
except ImportError as _exc:     # numba missing or broken: every other engine still works
    numba_fast = None
    _NUMBA_MISSING = f"numba is not importable ({_exc})"

__all__ = ["ENGINES", "RunOutput", "engine", "jit_available", "run"]

ENGINES = ("reference", "step", "numpy", "numba", "torch", "lava")


def jit_available() -> tuple[bool, str]:
    """Whether the compiled engine can run: ``(True, "")`` or ``(False, why)``."""
    return (numba_fast is not None), _NUMBA_MISSING


def engine(name: str):
    """The ``run`` function of engine ``name`` (one of :data:`ENGINES`)."""
    if name not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {name!r}")
    if name == "reference":
        name = "numba" if numba_fast is not None else "numpy"
    if name == "numba" and numba_fast is None:
        raise ImportError(f"engine 'numba' needs numba: {_NUMBA_MISSING}; use 'numpy'")
    return {"step": step, "numpy": numpy_fast, "numba": numba_fast, "torch": torch_view,
            "lava": lava}[name].run


def run(net, x, record_states: bool = True, engine_name: str = "reference",
        **options) -> RunOutput:
    """``engine(engine_name)(net, x, record_states, **options)``."""
    return engine(engine_name)(net, x, record_states, **options)
