"""``AMSUNeuron``: a population of AM-SU neurons (membrane and astrocytes) for Lava.

Ports and Vars only; the behaviour is in ``models.py`` (one class per tag). The
synaptic projection is *not* part of this process: a stock Lava ``Dense`` computes
``a = W s`` (rows I | K | V | Q) and sends it to ``a_in``. The population may hold a
batch of ``B`` independent copies (inputs and outputs are flat, batch-major).

The same Vars hold integers for the ``fixed_pt`` model and floats for the
``floating_pt`` one, as Lava's own LIF does (docs/neuromorphic.md, "Lava mapping"):

========== ========================== ==============================
Var        fixed_pt                   floating_pt
========== ========================== ==============================
u          membrane, 24-bit           membrane
H          astrocyte state, 24-bit    astrocyte state
du         12-bit decay (per neuron)  1 - beta
dH         12-bit decay [A, dk]       1 - gamma
vth        17-bit, effective << 6     threshold theta
bias_mant  13-bit mantissa            bias b
bias_exp   0..7                       unused
gain       8-bit                      g_astro / sqrt(d_key)
conv_taps  8-bit [conv_size, A*dk+N]  the delay line's taps
conv       the delay line [B, K-1,    the same, float
           A*dk+N], operand_bits
========== ========================== ==============================
"""

from __future__ import annotations

import typing as ty

from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var

from neuromorphic.spec.fields import AMSU_FIELDS, AMSU_STATES, by_kind, shape_of

_PARAMS = by_kind(AMSU_FIELDS, "int") + by_kind(AMSU_FIELDS, "flag") + \
    by_kind(AMSU_FIELDS, "choice")
ARRAYS = by_kind(AMSU_FIELDS, "array")
STATES = tuple(s for s in AMSU_STATES if s.name != "a")   # "a" lives in the Dense


class AMSUNeuron(AbstractProcess):
    """AM-SU neurons fed by a Dense synapse.

    Parameters (keyword only): ``batch`` and every field of
    :data:`neuromorphic.spec.fields.AMSU_FIELDS`: its scalars (sizes, flags, ``reset``,
    ``sensing``, the shifts; fixed_pt only for the shifts and ``operand_bits``) become
    ``proc_params``, its arrays (``du, bias_mant, bias_exp, vth, dH, gain, conv_taps``) Vars
    of the declared shapes. States ``u`` ``[B, N]``, ``H`` ``[B, A, dk, dv]`` and the delay
    line ``conv`` ``[B, conv_size - 1, A*dk + N]`` start at 0.
    """

    def __init__(self, *, batch: int, name: ty.Optional[str] = None, **fields) -> None:
        params = {f.name: fields.pop(f.name, f.default) for f in _PARAMS}
        arrays = {f.name: fields.pop(f.name, 0) for f in ARRAYS}
        super().__init__(batch=batch, name=name, **params, **fields)
        N, A = params["n_neurons"], params["n_astrocytes"]
        nc = params["conv_size"]
        # "lags": the delay line's length; one unused slot without delay line (a Var
        # cannot have a zero-sized axis), which the models never read
        sizes = {"B": batch, "N": N, "A": A, "dk": params["d_key"], "dv": N // A,
                 "nc": nc, "lags": max(nc - 1, 1), "dc": A * params["d_key"] + N}
        P = (N if params["neuron_path"] else 0) + \
            ((2 * A * params["d_key"] + N) if params["astrocyte"] else 0)
        self.a_in = InPort(shape=(batch * P,))
        self.s_out = OutPort(shape=(batch * N,))
        for s in STATES:
            setattr(self, s.name, Var(shape=shape_of(s.shape, sizes), init=0))
        for f in ARRAYS:
            setattr(self, f.name, Var(shape=shape_of(f.shape, sizes), init=arrays[f.name]))
