"""Random integer networks and spike inputs, for tests, the benchmark and fuzzing.

``random_network`` draws every field inside its legal range, with magnitudes chosen
so that the neurons actually spike and the states move (a network of zeros would
make bit-exactness tests pass trivially).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from neuromorphic.spec import AMSULayer, LIFLayer, QuantizedNetwork, Synapse, message_bits

__all__ = ["random_network", "random_spikes"]


def _weights(rng, rows: int, cols: int, scale: int = 60) -> np.ndarray:
    w = rng.integers(-scale, scale + 1, size=(rows, cols))
    return (w // 2) * 2                       # even: Lava's mixed mode keeps them as they are


def random_network(seed: int = 0, n_in: int = 12, sizes: Sequence[int] = (16,),
                   kinds: Optional[Sequence[str]] = None, n_astrocytes: int = 2,
                   d_key: int = 4, spike_levels: int = 1, input_levels: int = 1,
                   reset: Optional[str] = None, operand_bits: int = 8,
                   conv_size: int = 1, sensing: str = "identity") -> QuantizedNetwork:
    """A random valid :class:`QuantizedNetwork`.

    ``kinds[i]``: ``"amsu"`` (default), ``"amsu-off"`` (astrocyte off), ``"amsu-only"``
    (neuron path off) or ``"lif"`` (stock Lava LIF). ``reset=None`` draws one per layer.
    ``conv_size > 1``: every layer with an astrocyte senses through a delay line of that
    many taps (random 8-bit taps and shifts). The random draws of a network without
    delay line do not depend on this option. ``sensing="relu"``: every layer with an
    astrocyte senses non-negative keys and queries (no random draw depends on it);
    ``"relu2"``: their squares, requantized by random shifts ``shift_k2``, ``shift_q2``
    in 5..8 (drawn from a stream of their own: the other draws are those of "relu");
    ``"relu-key"``: non-negative keys, signed queries (the draws of "relu").
    """
    rng = np.random.default_rng(seed)
    kinds = list(kinds or ["amsu"] * len(sizes))
    layers = []
    levels = input_levels
    for i, (N, kind) in enumerate(zip(sizes, kinds)):
        syn_bits = message_bits(levels)
        if kind == "lif":
            syn = Synapse(_weights(rng, N, n_in), weight_exp=int(rng.integers(0, 3)),
                          num_message_bits=syn_bits)
            layers.append(LIFLayer(
                syn, N, du=4095, dv=int(rng.integers(200, 2000)),
                vth=int(rng.integers(40, 200)),
                bias_mant=rng.integers(-200, 200, N), bias_exp=rng.integers(0, 3, N),
                name=f"lif{i}"))
            levels = 1
        else:
            astro = kind in ("amsu", "amsu-only")
            npath = kind in ("amsu", "amsu-off")
            A = n_astrocytes if astro else 1
            dk = d_key if astro else 1
            P = (N if npath else 0) + ((2 * A * dk + N) if astro else 0)
            L = spike_levels
            r = reset or str(rng.choice(["none", "subtract", "zero"]))
            kw = dict(
                synapse=Synapse(_weights(rng, P, n_in), weight_exp=0, num_message_bits=syn_bits),
                n_neurons=N, n_astrocytes=A, d_key=dk, neuron_path=npath, astrocyte=astro,
                reset=r, spike_levels=L, operand_bits=operand_bits,
                vth=rng.integers(60, 260, N), name=f"amsu{i}")
            if npath:
                kw.update(du=rng.integers(100, 3000, N), bias_mant=rng.integers(-300, 300, N),
                          bias_exp=rng.integers(0, 4, N), shift_i=int(rng.integers(-8, -3)))
            if astro:
                kw.update(shift_k=int(rng.integers(0, 4)), shift_v=int(rng.integers(0, 4)),
                          shift_q=int(rng.integers(0, 4)), dH=rng.integers(1, 600, (A, dk)),
                          shift_kv=int(rng.integers(-2, 3)), shift_r=int(rng.integers(2, 7)),
                          gain=rng.integers(-127, 128, N), shift_o=int(rng.integers(-4, 2)))
                if conv_size > 1:
                    tr = np.random.default_rng([seed, i, conv_size])   # own stream
                    kw.update(conv_size=conv_size,
                              conv_taps=tr.integers(-127, 128, (conv_size, A * dk + N)),
                              shift_ck=int(tr.integers(5, 9)), shift_cv=int(tr.integers(5, 9)))
                kw["sensing"] = sensing
                if sensing == "relu2":
                    sq = np.random.default_rng([seed, i, 2])        # own stream
                    kw.update(shift_k2=int(sq.integers(5, 9)), shift_q2=int(sq.integers(5, 9)))
            layers.append(AMSULayer(**kw))
            levels = L
        n_in = N
    return QuantizedNetwork(tuple(layers), input_size=layers[0].synapse.weight.shape[1],
                            input_levels=input_levels, meta={"source": f"random_network({seed})"})


def random_spikes(seed: int, T: int, batch: int, n_in: int, levels: int = 1,
                  rate: float = 0.3) -> np.ndarray:
    """Random input ``[T, batch, n_in]``: each value non-zero with probability ``rate``,
    then uniform in ``1..levels``."""
    rng = np.random.default_rng(seed)
    on = rng.random((T, batch, n_in)) < rate
    vals = rng.integers(1, levels + 1, size=(T, batch, n_in))
    return (on * vals).astype(np.int64)
