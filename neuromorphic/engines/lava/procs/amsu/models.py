"""ProcessModels of ``AMSUNeuron``: ``fixed_pt`` (integer) and ``floating_pt``.

The fixed-point model follows the conventions of Lava's bit-accurate LIF
(``lava/proc/lif/models.py``): 24-bit states, 12-bit decays applied as
``x * (4096 - d) >> 12`` rounded toward zero, a 17-bit threshold left-shifted by 6,
strict ``>``. The operations a stock LIF does not have (the astrocyte's products,
requantizing shifts, graded spikes) are written out below with named constants;
docs/neuromorphic.md states each one. This file is an implementation of its own,
not a call into ``neuromorphic.engines.step``: the tests compare the two.
"""

import numpy as np

from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from neuromorphic.engines.lava.procs.amsu.process import AMSUNeuron
from neuromorphic.spec.fields import AMSU_FIELDS, field_map
from neuromorphic.spec.widths import (
    DECAY_SHIFT, MAX_LEVELS, OPERAND_BITS_RANGE, STATE_BITS, VTH_SHIFT, message_bits,
    senses_relu, senses_relu_query, senses_square,
)

_F = field_map(AMSU_FIELDS)   # widths of the parameter Vars: the schema's

_RESET_NONE, _RESET_SUBTRACT, _RESET_ZERO = "none", "subtract", "zero"


class _AMSUBase(PyLoihiProcessModel):
    """Shape bookkeeping shared by both models."""

    def __init__(self, proc_params):
        super().__init__(proc_params)
        p = self.proc_params
        self.batch = int(p["batch"])
        self.n = int(p["n_neurons"])
        self.n_astro = int(p["n_astrocytes"])
        self.d_key = int(p["d_key"])
        self.d_value = self.n // self.n_astro
        self.neuron_path = bool(p["neuron_path"])
        self.astrocyte = bool(p["astrocyte"])
        self.reset = str(p["reset"])
        self.levels = int(p["spike_levels"])
        self.conv_size = int(p["conv_size"])
        self.delay_line = self.astrocyte and self.conv_size > 1
        self.relu = senses_relu(self.astrocyte, p["sensing"])
        self.relu_q = senses_relu_query(self.astrocyte, p["sensing"])
        self.square = senses_square(self.astrocyte, p["sensing"])
        sizes = []
        if self.neuron_path:
            sizes.append(("I", self.n))
        if self.astrocyte:
            ak = self.n_astro * self.d_key
            sizes += [("K", ak), ("V", self.n), ("Q", ak)]
        self.slices, start = {}, 0
        for name, size in sizes:
            self.slices[name] = slice(start, start + size)
            start += size
        self.n_rows = start

    def receive(self):
        """Synaptic input as ``[B, rows]``."""
        return self.a_in.recv().reshape(self.batch, self.n_rows)


@implements(proc=AMSUNeuron, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyAMSUModelFixed(_AMSUBase):
    """Integer AM-SU, step by step (docs/neuromorphic.md, "AM-SU step")."""

    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=STATE_BITS)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=message_bits(MAX_LEVELS))
    u: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=STATE_BITS)
    H: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=STATE_BITS)
    du: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=_F["du"].bits)
    dH: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=_F["dH"].bits)
    vth: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=_F["vth"].bits)
    bias_mant: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=_F["bias_mant"].bits)
    bias_exp: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=_F["bias_exp"].bits)
    gain: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=_F["gain"].bits)
    conv_taps: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=_F["conv_taps"].bits)
    conv: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=OPERAND_BITS_RANGE[1])

    def __init__(self, proc_params):
        super().__init__(proc_params)
        # Widths (the same as Lava's LIF where the LIF has the quantity).
        self.state_bits = STATE_BITS
        self.state_limit = 2 ** (self.state_bits - 1) - 1   # saturate to +-(2^23 - 1)
        self.decay_shift = DECAY_SHIFT
        self.decay_unity = 2 ** self.decay_shift
        self.vth_shift = VTH_SHIFT
        self.operand_limit = 2 ** (int(self.proc_params["operand_bits"]) - 1) - 1
        p = self.proc_params
        self.shift = {k: int(p[f"shift_{k}"])
                      for k in ("i", "k", "v", "q", "kv", "r", "o", "ck", "cv", "k2", "q2")}

    # -- arithmetic of the hardware ---------------------------------------------------
    def requantize(self, x, n):
        """Shift right by n rounding half up; a negative n shifts left."""
        if n > 0:
            return np.right_shift(x + (1 << (n - 1)), n)
        if n < 0:
            return np.left_shift(x, -n)
        return x

    def decay(self, x, d):
        """x * (4096 - d) / 4096, rounded toward zero."""
        prod = x.astype(np.int64) * (self.decay_unity - d.astype(np.int64))
        return np.sign(prod) * np.right_shift(np.abs(prod), self.decay_shift)

    def saturate(self, x, limit):
        return np.clip(x, -limit, limit)

    # -- the step ----------------------------------------------------------------------
    def membrane(self, a):
        bias = np.left_shift(self.bias_mant.astype(np.int64), self.bias_exp.astype(np.int64))
        current = self.requantize(a[:, self.slices["I"]], self.shift["i"]) + bias
        u = self.saturate(self.decay(self.u, self.du) + current, self.state_limit)
        self.u[:] = u
        return u

    def astrocytes(self, a):
        B, A, dk, dv = self.batch, self.n_astro, self.d_key, self.d_value
        lim = self.operand_limit
        k = self.saturate(self.requantize(a[:, self.slices["K"]], self.shift["k"]), lim)
        v = self.saturate(self.requantize(a[:, self.slices["V"]], self.shift["v"]), lim)
        if self.delay_line:
            k, v = self.delay(k, v)
        q = self.saturate(self.requantize(a[:, self.slices["Q"]], self.shift["q"]), lim)
        if self.relu:      # non-negative key, after the delay line
            k = np.maximum(k, 0)
        if self.relu_q:    # and query (sensing="relu-key": the query stays signed)
            q = np.maximum(q, 0)
        if self.square:    # sensing="relu2": the squares, requantized to operands
            k = self.saturate(self.requantize(k * k, self.shift["k2"]), lim)
            q = self.saturate(self.requantize(q * q, self.shift["q2"]), lim)
        k, v, q = k.reshape(B, A, dk), v.reshape(B, A, dv), q.reshape(B, A, dk)
        outer = self.requantize(k[..., :, None] * v[..., None, :], self.shift["kv"])
        H = self.saturate(self.decay(self.H, self.dH[..., None]) + outer, self.state_limit)
        self.H[:] = H
        read = (H * q[..., :, None]).sum(axis=2)                    # H^T q: [B, A, dv]
        r = self.saturate(self.requantize(read, self.shift["r"]), self.state_limit)
        o = self.requantize(r.reshape(B, self.n) * self.gain.astype(np.int64), self.shift["o"])
        return self.saturate(o, self.state_limit)

    def delay(self, k, v):
        """The pre-synaptic delay line: per channel of k | v, the sum of the taps times
        this and the last conv_size - 1 inputs, requantized to an operand; the inputs
        move along the line (the oldest drops out)."""
        n_k = self.n_astro * self.d_key
        x = np.concatenate([k, v], axis=1)                             # [B, A*dk + N]
        line = self.conv.astype(np.int64)                              # [B, K-1, ...], oldest first
        taps = self.conv_taps.astype(np.int64)                         # [K, ...], row j: lag j
        total = taps[0] * x
        for lag in range(1, self.conv_size):
            total = total + taps[lag] * line[:, self.conv_size - 1 - lag]
        self.conv[:] = np.concatenate([line[:, 1:], x[:, None]], axis=1)
        lim = self.operand_limit
        return (self.saturate(self.requantize(total[:, :n_k], self.shift["ck"]), lim),
                self.saturate(self.requantize(total[:, n_k:], self.shift["cv"]), lim))

    def run_spk(self):
        a = self.receive().astype(np.int64)
        drive = np.zeros((self.batch, self.n), dtype=np.int64)
        if self.neuron_path:
            drive += self.membrane(a)
        if self.astrocyte:
            drive += self.astrocytes(a)
        theta = np.left_shift(self.vth.astype(np.int64), self.vth_shift)
        spikes = np.zeros_like(drive)
        for level in range(1, self.levels + 1):
            spikes += drive > level * theta
        if self.neuron_path and self.reset == _RESET_SUBTRACT:
            self.u[:] = self.saturate(self.u - spikes * theta, self.state_limit)
        elif self.neuron_path and self.reset == _RESET_ZERO:
            self.u[spikes > 0] = 0
        self.s_out.send(spikes.reshape(-1))


@implements(proc=AMSUNeuron, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyAMSUModelFloat(_AMSUBase):
    """The float AM-SU (docs/model.md), for running the float network in Lava."""

    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    u: np.ndarray = LavaPyType(np.ndarray, float)
    H: np.ndarray = LavaPyType(np.ndarray, float)
    du: np.ndarray = LavaPyType(np.ndarray, float)
    dH: np.ndarray = LavaPyType(np.ndarray, float)
    vth: np.ndarray = LavaPyType(np.ndarray, float)
    bias_mant: np.ndarray = LavaPyType(np.ndarray, float)
    bias_exp: np.ndarray = LavaPyType(np.ndarray, float)
    gain: np.ndarray = LavaPyType(np.ndarray, float)
    conv_taps: np.ndarray = LavaPyType(np.ndarray, float)
    conv: np.ndarray = LavaPyType(np.ndarray, float)

    def run_spk(self):
        a = self.receive()
        B, A, dk, dv = self.batch, self.n_astro, self.d_key, self.d_value
        drive = np.zeros((B, self.n))
        if self.neuron_path:
            self.u[:] = (1 - self.du) * self.u + a[:, self.slices["I"]] + self.bias_mant
            drive += self.u
        if self.astrocyte:
            k, v = a[:, self.slices["K"]], a[:, self.slices["V"]]
            if self.delay_line:     # y_t = sum_j w_j x_{t-j}, summed from lag 0 up
                x = np.concatenate([k, v], axis=1)
                K = self.conv_size
                y = x * self.conv_taps[0]
                for lag in range(1, K):
                    y = y + self.conv[:, K - 1 - lag] * self.conv_taps[lag]
                self.conv[:] = np.concatenate([self.conv[:, 1:], x[:, None]], axis=1)
                k, v = y[:, :A * dk], y[:, A * dk:]
            q = a[:, self.slices["Q"]]
            if self.relu:      # non-negative key, after the delay line
                k = np.maximum(k, 0.0)
            if self.relu_q:    # and query (sensing="relu-key": the query stays signed)
                q = np.maximum(q, 0.0)
            if self.square:    # sensing="relu2": their squares
                k, q = k * k, q * q
            k = k.reshape(B, A, dk)
            v = v.reshape(B, A, dv)
            q = q.reshape(B, A, dk)
            self.H[:] = (1 - self.dH)[..., None] * self.H + k[..., :, None] * v[..., None, :]
            read = (self.H * q[..., :, None]).sum(axis=2)
            drive += read.reshape(B, self.n) * self.gain
        spikes = np.zeros_like(drive)
        for level in range(1, self.levels + 1):
            spikes += drive > level * self.vth
        if self.neuron_path and self.reset == _RESET_SUBTRACT:
            self.u[:] = self.u - spikes * self.vth
        elif self.neuron_path and self.reset == _RESET_ZERO:
            self.u[spikes > 0] = 0
        self.s_out.send(spikes.reshape(-1))
