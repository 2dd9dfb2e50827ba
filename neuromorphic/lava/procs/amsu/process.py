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
========== ========================== ==============================
"""

from __future__ import annotations

import typing as ty

from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var


class AMSUNeuron(AbstractProcess):
    """AM-SU neurons fed by a Dense synapse.

    Parameters (keyword only): ``batch``, ``n_neurons``, ``n_astrocytes``, ``d_key``,
    ``neuron_path``, ``astrocyte``, ``reset`` ("none" | "subtract" | "zero"),
    ``spike_levels``, ``operand_bits``, the shifts ``shift_i, shift_k, shift_v,
    shift_q, shift_kv, shift_r, shift_o`` (fixed_pt only) and the parameter arrays
    ``du [N], bias_mant [N], bias_exp [N], vth [N], dH [A, dk], gain [N]``.
    """

    def __init__(self, *, batch: int, n_neurons: int, n_astrocytes: int, d_key: int,
                 neuron_path: bool, astrocyte: bool, reset: str, spike_levels: int,
                 operand_bits: int = 8, du=0, bias_mant=0, bias_exp=0, vth=1, dH=0, gain=0,
                 shift_i: int = 0, shift_k: int = 0, shift_v: int = 0, shift_q: int = 0,
                 shift_kv: int = 0, shift_r: int = 0, shift_o: int = 0,
                 name: ty.Optional[str] = None, **kwargs) -> None:
        super().__init__(batch=batch, n_neurons=n_neurons, n_astrocytes=n_astrocytes,
                         d_key=d_key, neuron_path=neuron_path, astrocyte=astrocyte,
                         reset=reset, spike_levels=spike_levels, operand_bits=operand_bits,
                         shift_i=shift_i, shift_k=shift_k, shift_v=shift_v, shift_q=shift_q,
                         shift_kv=shift_kv, shift_r=shift_r, shift_o=shift_o, name=name,
                         **kwargs)
        N, A, dk = n_neurons, n_astrocytes, d_key
        dv = N // A
        P = (N if neuron_path else 0) + ((2 * A * dk + N) if astrocyte else 0)
        self.a_in = InPort(shape=(batch * P,))
        self.s_out = OutPort(shape=(batch * N,))
        self.u = Var(shape=(batch, N), init=0)
        self.H = Var(shape=(batch, A, dk, dv), init=0)
        self.du = Var(shape=(N,), init=du)
        self.dH = Var(shape=(A, dk), init=dH)
        self.vth = Var(shape=(N,), init=vth)
        self.bias_mant = Var(shape=(N,), init=bias_mant)
        self.bias_exp = Var(shape=(N,), init=bias_exp)
        self.gain = Var(shape=(N,), init=gain)
