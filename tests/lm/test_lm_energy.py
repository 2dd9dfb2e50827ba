"""Operation counts per token: hand counts on tiny models, the spike-driven accumulates
against an independent count from the layers' inputs, the integer network's SynOps."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import neuromorphic as nm
from astro_neuron.apps.cli import main
from astro_neuron.lm import AMSNetConfig, build_model
from astro_neuron.lm.energy import E_AC_PJ, E_MAC_PJ, amsnet_ops, count_ops, transformer_ops
from astro_neuron.lm.train import save_lm_checkpoint
from neuromorphic.energy import layer_synops, synaptic_ops
from neuromorphic.randnet import random_network

TINY = dict(d_model=8, n_head=2, n_layer=1, ffn_mult=4, block_size=16, chunk_size=8)


def _tiny(seed=0, **opts):
    torch.manual_seed(seed)
    return build_model(AMSNetConfig(**{**TINY, **opts})).eval()


def _kinds(rep):
    return rep.total("mac"), rep.total("ac"), rep.total("add")


def _silent_ops(**opts):
    """The op counts of a tiny AM-SNet in which nothing reaches threshold."""
    model = _tiny(**opts)
    with torch.no_grad():
        for b in model.blocks:
            b.amsu.log_threshold.fill_(30.0)
            b.lif.log_threshold.fill_(30.0)
    return count_ops(model, "def f(x): return x\n")


def test_amsnet_counts_equal_a_hand_count_and_silence_means_no_accumulate():
    rep = _silent_ops()
    # d 8, 2 astrocytes of d_k = d_v = 4, channel mixing f = 32, vocabulary 256:
    #   norm1 17 (8 squares + rsqrt + 8 scales) | proj 32 rows x 8 = 256 | membrane 8
    #   rotary 2 (k, q) x 2 astrocytes x 4 channels x 2 = 32 | decay, write, read 32 each
    #   read-out rms 8 + 2 + 8, gain 8 = 26 | norm2 17 | w_1 32 x 8 = 256 | LIF 32
    #   norm_f 17 | head 256 x 8 = 2048
    assert rep.total("mac") == 17 + 256 + 8 + 32 + 3 * 32 + 26 + 17 + 256 + 32 + 17 + 2048
    # bias 8, u + o 8, thresholds 8 + 32, two residuals 8 each
    assert rep.total("add") == 8 + 8 + 8 + 32 + 8 + 8
    assert rep.total("ac") == 0 and all(v == 0 for v in rep.firing.values())
    mac, ac, add = _kinds(rep)
    assert rep.energy_pj == pytest.approx(E_MAC_PJ * mac + E_AC_PJ * (ac + add))
    assert rep.grouped()["amsu.write"].mac == 32 and "H^T q" in rep.grouped()["amsu.read"].note
    assert "amsu.sensing" not in rep.grouped()
    # non-negative sensing adds one comparison per key and query channel: 2 x 2 x 4
    rep2 = _silent_ops(sensing="relu")
    assert rep2.total("add") - rep.total("add") == 2 * 2 * 4 == rep2.grouped()["amsu.sensing"].add
    assert rep2.total("mac") == rep.total("mac")
    # squared: a comparison and a product per channel
    rep3 = _silent_ops(sensing="relu2")
    assert rep3.total("mac") - rep.total("mac") == 2 * 2 * 4 == rep3.grouped()["amsu.sensing"].mac
    assert rep3.total("add") == rep2.total("add")
    # the key alone: one comparison per key channel
    rep4 = _silent_ops(sensing="relu-key")
    assert rep4.total("add") - rep.total("add") == 2 * 4 == rep4.grouped()["amsu.sensing"].add


def test_a_single_spike_costs_its_fan_out():
    model = _tiny()
    d, f = 8, 32
    zeros_a, zeros_f = torch.zeros(1, 1, d), torch.zeros(1, 1, f)
    one = zeros_f.clone()
    one[0, 0, 5] = 1.0
    ops = {x.name: x for x in amsnet_ops(model, [zeros_a], [one])}
    assert ops["block0.w_2"].ac == d and ops["block0.w_o"].ac == 0
    two = zeros_a.clone()
    two[0, 0, 1] = 2.0                                 # a graded spike of value 2
    ops = {x.name: x for x in amsnet_ops(model, [two], [zeros_f])}
    assert ops["block0.w_o"].ac == 2 * d
    # over 4 tokens, one spike is a quarter of a fan-out per token
    a4 = torch.zeros(1, 4, d)
    a4[0, 2, 0] = 1.0
    ops = {x.name: x for x in amsnet_ops(model, [a4], [torch.zeros(1, 4, f)])}
    assert ops["block0.w_o"].ac == d / 4


def test_accumulates_follow_the_spikes_the_layers_receive():
    """Independent count: forward hooks on W_O and W_2 see the spikes the model feeds
    them; AC per token = their sum x fan-out / tokens."""
    model = _tiny(seed=3, synapse_init=1.0, astro_gain=1.0, n_layer=2)
    seen: dict = {}
    hooks = [m.register_forward_hook(
        lambda mod, inp, out, name=name: seen.setdefault(name, []).append(inp[0].sum()))
        for name, m in model.named_modules() if name.endswith(("w_o", "w_2"))]
    text = "import os\nprint(os.getcwd())\n" * 3
    rep = count_ops(model, text)
    for h in hooks:
        h.remove()
    T = len(text)
    ops = {x.name: x for x in rep.layers}
    fired = 0.0
    for name, sums in seen.items():
        block = name.split(".")[1]
        want = float(sums[0]) * model.config.d_model / T   # first pass: spike_record("amsu")
        assert ops[f"block{block}.{name.split('.')[-1]}"].ac == pytest.approx(want, rel=1e-9)
        fired += want
    assert fired > 0                                     # the test sees spiking layers


def test_non_spiking_twin_pays_dense_macs_where_spikes_were():
    twin = count_ops(_tiny(spiking=False), "abcdef")
    ops = {x.name: x for x in twin.layers}
    assert ops["block0.w_o"].mac == 8 * 8 and ops["block0.w_o"].ac == 0
    assert ops["block0.w_2"].mac == 32 * 8


def test_transformer_counts_grow_with_the_context():
    cfg = AMSNetConfig(**{**TINY, "arch": "transformer"})
    model = build_model(cfg)
    rep = count_ops(model, "abc")                        # positions 0, 1, 2: mean 2 keys
    ops = {x.name: x for x in rep.layers}
    d, H = 8, 2
    assert ops["block0.attn.scores"].mac == d + d * 2
    assert ops["block0.attn.values"].mac == d * 2
    assert ops["block0.attn.softmax"].mac == 2 * H * 2 and ops["block0.attn.softmax"].add == H * 2
    hidden = 4 * d + d // 2
    assert ops["block0.fc"].mac == d * hidden == model.blocks[0].fc.weight.numel()
    late = {x.name: x for x in transformer_ops(cfg, torch.tensor([2047]))}
    assert late["block0.attn.scores"].mac == d + d * 2048
    assert rep.total("ac") == 0


def test_bad_text_and_constants_are_clear_errors():
    model = _tiny()
    with pytest.raises(ValueError, match="at least one token"):
        count_ops(model, "")
    with pytest.raises(ValueError, match="e_mac"):
        count_ops(model, "a", e_mac=-1.0)
    with pytest.raises(ValueError):
        count_ops(model, torch.tensor([[300]]))


def test_integer_network_synops_per_spike_and_fan_out():
    net = random_network(seed=2, n_in=6, sizes=(5, 4), kinds=["lif", "amsu"])
    w0 = net.layers[0].synapse.effective_weight()
    silent = np.zeros((10, 1, 6), dtype=np.int64)
    rows = synaptic_ops(net, silent)
    assert rows[0].synops == 0 and rows[0].spikes_in == 0
    one = silent.copy()
    one[3, 0, 2] = 1
    rows = synaptic_ops(net, one)
    assert rows[0].synops == pytest.approx(w0.shape[0] / 10)          # 5 targets, 10 steps
    assert rows[0].synops_nonzero == pytest.approx(int((w0[:, 2] != 0).sum()) / 10)
    amsu = net.layers[1]
    assert rows[1].astro_ops == 3 * amsu.n_astrocytes * amsu.d_key * amsu.d_value + 4
    assert rows[0].neuron_ops == 2 * 5
    # graded input: one event per non-zero value, whatever its size
    w = np.array([[2, 0], [0, 4], [6, 8]])
    assert layer_synops(w, np.array([[3, 0], [1, 1]])) == (3 * 3, 2 * 2 + 1 * 2)


def test_energy_command(tmp_path, capsys):
    ckpt = save_lm_checkpoint(tmp_path / "m.safetensors", _tiny(synapse_init=1.0))
    out = tmp_path / "e.json"
    assert main(["energy", str(ckpt), "--text", "def f(x):\n    return x\n",
                 "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "amsnet" in text and "transformer" in text and "AM-SNet / Transformer" in text
    res = json.loads(out.read_text())
    a, t = res["models"]
    assert a["energy_pj"] == pytest.approx(E_MAC_PJ * a["mac"] + E_AC_PJ * (a["ac"] + a["add"]))
    assert t["ac"] == 0 and t["arch"] == "transformer"
    net = tmp_path / "n.h5"
    nm.save(random_network(seed=1, n_in=6, sizes=(4,)), net)
    assert main(["energy", str(net), "--steps", "20"]) == 0
    assert "SynOps" in capsys.readouterr().out
    assert main(["energy", str(ckpt), "--text", ""]) == 2
