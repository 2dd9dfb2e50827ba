"""The memory-task generators follow the field's protocol (docs/memory.md): MQAR with
disjoint key/value vocabularies, each key asked once on its own, the answer only at
the query; noise from its own vocabulary (or one filler); Mamba-style selective copy;
the copy probe (one value a fixed distance before the last position)."""

from __future__ import annotations

import pytest
import torch

from astro_neuron.lm import tasks as K
from astro_neuron.lm.tasks import copy_gap_batch, mqar_batch, selective_copy_batch


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("noise", ["random", "constant"])
@pytest.mark.parametrize("T,n", [(64, 4), (256, 8), (1024, 16), (16, 4)])
def test_mqar_structure(T, n, noise):
    x, y = mqar_batch(32, T, n, noise=noise, generator=_g())
    assert x.shape == y.shape == (32, T) and x.dtype == torch.long
    keys, vals = x[:, 0:2 * n:2], x[:, 1:2 * n:2]
    assert ((keys >= K.KEY0) & (keys < K.KEY0 + K.N_KEYS)).all()
    assert ((vals >= K.VAL0) & (vals < K.VAL0 + K.N_VALUES)).all()
    for b in range(32):
        assert len(set(keys[b].tolist())) == n and len(set(vals[b].tolist())) == n
        q = (y[b] >= 0).nonzero().view(-1)
        assert len(q) == n and (q >= 2 * n).all() and (q % 2 == 0).all()
        pair = dict(zip(keys[b].tolist(), vals[b].tolist()))
        assert sorted(x[b, q].tolist()) == sorted(pair)                 # each key asked once
        assert all(pair[int(x[b, p])] == int(y[b, p]) for p in q)       # its own value
        rest = torch.ones(T, dtype=torch.bool)
        rest[:2 * n], rest[q] = False, False
        if noise == "constant":
            assert (x[b, rest] == K.FILLER).all()
        else:
            assert ((x[b, rest] >= K.NOISE0) & (x[b, rest] < K.NOISE0 + K.N_NOISE)).all()
    if noise == "random":                    # noise really varies
        assert len(torch.unique(x[:, 2 * n:])) > 50


def test_mqar_query_places():
    """Uniform places spread over the sequence; Zoology's power law keeps them near
    the pairs."""
    T, n = 1024, 8
    _, yu = mqar_batch(256, T, n, generator=_g(), query_dist="uniform")
    _, yp = mqar_batch(256, T, n, generator=_g(), query_dist="power")
    mu = (yu >= 0).nonzero()[:, 1].float().mean()
    mp = (yp >= 0).nonzero()[:, 1].float().mean()
    assert 450 < mu < 570 and mp < 300, (mu, mp)


def test_mqar_seeded_and_random():
    a = mqar_batch(4, 64, 4, generator=_g(3))
    b = mqar_batch(4, 64, 4, generator=_g(3))
    c = mqar_batch(4, 64, 4, generator=_g(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[0], c[0])


@pytest.mark.parametrize("noise", ["random", "constant"])
def test_selective_copy_structure(noise):
    T, M = 256, 16
    x, y = selective_copy_batch(32, T, M, n_symbols=16, noise=noise, generator=_g())
    region = T - M - 1
    assert (x[:, region] == K.SEP).all() and (x[:, region + 1:] == K.MARK).all()
    for b in range(32):
        data_pos = ((x[b, :region] >= K.DATA0) & (x[b, :region] < K.DATA0 + 16)).nonzero()
        data = x[b, data_pos.view(-1)]
        assert len(data) == M                                    # data keeps its order
        assert torch.equal(y[b, region:region + M], data)
        assert (y[b, :region] == -1).all() and y[b, -1] == -1
        other = torch.ones(region, dtype=torch.bool)
        other[data_pos.view(-1)] = False
        if noise == "constant":
            assert (x[b, :region][other] == K.FILLER).all()
        else:
            assert (x[b, :region][other] >= K.NOISE0).all()


@pytest.mark.parametrize("call,match", [
    (lambda: mqar_batch(2, 64, 0), "n_pairs"),
    (lambda: mqar_batch(2, 64, 65), "n_pairs"),
    (lambda: mqar_batch(2, 15, 4), "too short"),
    (lambda: mqar_batch(2, 64, 4, noise="white"), "noise"),
    (lambda: mqar_batch(2, 64, 4, query_dist="gauss"), "query_dist"),
    (lambda: mqar_batch(0, 64, 4), "batch_size"),
    (lambda: selective_copy_batch(2, 40, 16), "too short"),
    (lambda: selective_copy_batch(2, 256, 16, n_symbols=129), "n_symbols"),
    (lambda: selective_copy_batch(2, 256, 0), "n_tokens"),
    (lambda: copy_gap_batch(2, 64, gap=63), "gap"),
    (lambda: copy_gap_batch(2, 64, gap=-1), "gap"),
    (lambda: copy_gap_batch(2, 64, noise="pink"), "noise"),
])
def test_generators_reject_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("noise", ["random", "constant"])
@pytest.mark.parametrize("T,gap", [(64, 10), (64, 0), (64, 62), (8, 3)])
def test_copy_gap_structure(T, gap, noise):
    x, y = copy_gap_batch(64, T, gap=gap, noise=noise, generator=_g())
    assert x.shape == y.shape == (64, T)
    v = x[:, T - 1 - gap]
    assert ((v >= K.VAL0) & (v < K.VAL0 + K.N_VALUES)).all()
    assert (y[:, T - 1] == v).all() and (y[:, :T - 1] == -1).all()
    rest = torch.cat([x[:, :T - 1 - gap], x[:, T - gap:]], 1)   # all but the value
    if noise == "constant":
        assert (rest == K.FILLER).all()
    else:
        assert ((rest >= K.NOISE0) & (rest < K.NOISE0 + K.N_NOISE)).all()
    assert len(set(v.tolist())) > 20                              # values vary
    x2, _ = copy_gap_batch(64, T, gap=gap, noise=noise, generator=_g())
    assert torch.equal(x, x2)
    assert K.chance("gap") == 1 / K.N_VALUES


def test_generator_type_checked():
    with pytest.raises(TypeError, match="generator"):
        mqar_batch(2, 64, 4, generator=0)
