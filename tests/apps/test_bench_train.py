"""``bench train``'s FLOP count, MFU and FLOP-parity ceiling (issue 14, item 3).

The model-FLOPs formulas are checked against ``torch.utils.flop_counter`` on tiny
models (every matrix product the training step runs, forward and backward) and
against a hand count at the benchmark's own shapes.
"""

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from astro_neuron.apps.bench.lm import (
    _train_table, _train_targets, attention_flops_per_token, ceiling, matmul_params,
    scan_flops_per_token, train_flops_per_token,
)
from astro_neuron.apps.cli import main
from astro_neuron.lm.config import AMSNetConfig
from astro_neuron.lm.model import build_model


pytestmark = pytest.mark.usefixtures("one_thread")


def _counted_flops(model, B: int, T: int) -> int:
    """Every matrix product of one training step, by ``FlopCounterMode``. Its registry
    leaves out the in-place ``addmm_`` / ``baddbmm_`` (the AM-SU projection's and the
    astrocyte scan's accumulating products), so they are counted here. Attention
    runs the math kernel, which the counter sees as two ``bmm`` each way."""
    extra = {torch.ops.aten.addmm_: lambda s, a, b, *x, out_shape=None, **k:
             2 * a[0] * a[1] * b[1],
             torch.ops.aten.baddbmm_: lambda s, a, b, *x, out_shape=None, **k:
             2 * a[0] * a[1] * a[2] * b[2]}
    x = torch.randint(0, 256, (B, T))
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False,
                                                       custom_mapping=extra) as fc:
        _, loss = model(x, x)
        loss.backward()
    return fc.get_total_flops()


@pytest.mark.parametrize("T", [40, 48])          # a shorter last chunk, and none
@pytest.mark.parametrize("extra", [{}, {"astrocyte": False}, {"arch": "transformer"}],
                         ids=["amsnet", "astro_off", "transformer"])
def test_flops_per_token_equal_the_counted_products(extra, T):
    torch.manual_seed(0)
    cfg = AMSNetConfig(n_layer=2, d_model=16, n_head=2, block_size=T, chunk_size=16,
                       **extra)
    m = build_model(cfg)
    B = 2
    counted = _counted_flops(m, B, T)
    if cfg.arch == "transformer":
        # the math kernel computes the masked half too: 2T / (T + 1) times the causal count
        att = attention_flops_per_token(cfg, T) * B * T
        assert counted == pytest.approx(6 * matmul_params(m) * B * T + att * 2 * T / (T + 1),
                                        rel=1e-12)
    else:
        assert counted == pytest.approx(train_flops_per_token(m, T) * B * T, rel=1e-12)
    # a shorter last chunk costs less per token than a full one
    if cfg.arch == "amsnet" and cfg.astrocyte:
        assert (scan_flops_per_token(cfg, T) < scan_flops_per_token(cfg)) == (T % 16 != 0)


def test_flops_by_hand_at_the_benchmark_shapes():
    """d 64, 2 layers, one head of 64, chunk 64, vocabulary 256: both models have
    13 d^2 matmul weights per layer plus the tied embedding; the scan costs
    3 (2 C (d_k + d_v) + 4 d_k d_v) = 1536 d per token and layer, causal attention
    3 * 4 d (T + 1) / 2 = 6 d (T + 1): the same at T = 255."""
    d, L, V = 64, 2, 256
    base = dict(n_layer=L, d_model=d, n_head=1, block_size=256)
    am, tf, off = (build_model(AMSNetConfig(**base, **e))
                   for e in ({}, {"arch": "transformer"}, {"astrocyte": False}))
    assert matmul_params(am) == matmul_params(tf) == L * 13 * d * d + V * d
    assert matmul_params(off) == L * 10 * d * d + V * d
    assert scan_flops_per_token(am.config, 256) == L * 1536 * d
    assert attention_flops_per_token(tf.config, 256) == L * 6 * d * 257
    assert train_flops_per_token(off, 256) == 6 * (L * 10 * d * d + V * d)
    assert scan_flops_per_token(tf.config) == attention_flops_per_token(am.config, 256) == 0
    row = {"T": 256, **{f"{n}_flops_per_token": train_flops_per_token(m, 256)
                        for n, m in (("amsnet", am), ("transformer", tf), ("astro_off", off))}}
    c = ceiling(row)
    prod = 6 * (L * 13 * d * d + V * d)
    assert c["parity"] == pytest.approx((prod + L * 6 * d * 257) / (prod + L * 1536 * d))
    assert c["parity"] == pytest.approx(1.0, abs=0.002)      # attention = scan at T ~ 256
    assert c["astro_parity"] == pytest.approx(1.58, abs=0.01)
    assert "of_ceiling" not in c


def test_ceiling_is_the_mfu_ratio():
    """of_ceiling = (AM/TF) / parity = AM MFU / TF MFU, whatever the peak."""
    row = {"T": 1024, "amsnet_flops_per_token": 3.0e6, "transformer_flops_per_token": 4.5e6,
           "astro_off_flops_per_token": 2.0e6, "am_vs_tf": 0.9}
    c = ceiling(row)
    assert c["parity"] == pytest.approx(1.5) and c["astro_parity"] == pytest.approx(1.5)
    assert c["need_1x"] == pytest.approx(2 / 3) and c["need_goal"] == pytest.approx(4 / 3)
    am_tps, peak = 1000.0, 5e10
    tf_tps = am_tps / row["am_vs_tf"]
    mfu_ratio = (3.0e6 * am_tps / peak) / (4.5e6 * tf_tps / peak)
    assert c["of_ceiling"] == pytest.approx(mfu_ratio) == pytest.approx(0.6)
    assert ceiling({**row, "T": 256})["need_goal"] == pytest.approx(2 / 3)


def test_table_and_targets_print_the_ceiling():
    row = {"threads": 1, "d_model": 512, "T": 1024, "batch": 4,
           "amsnet_flops_per_token": 42.2e6, "transformer_flops_per_token": 46.8e6,
           "astro_off_flops_per_token": 32.3e6, "am_vs_tf": 1.1, "astro_cost": 1.2}
    for n, tps in (("amsnet", 1100.0), ("transformer", 1000.0), ("astro_off", 1320.0)):
        row.update({f"{n}_tokens_per_s": tps, f"{n}_spread": 0.1, f"{n}_mfu": 0.4,
                    f"{n}_params": 1})
    row.update(ceiling(row))
    table = _train_table([row])
    assert "parity" in table and " 1.11x" in table and "99%" in table   # 1.1 / 1.109
    targets = _train_targets([row])
    assert ("ceiling 1.11x, needs AM MFU >= 1.80x the Transformer's, 72% of the measured "
            "peak)") in targets                       # 1.80 x the Transformer's 40%
    assert "MISSED" in targets
    hot = {**row, "transformer_mfu": 0.6}                 # 1.80 x 60% = 108% of the peak
    assert "108% of the measured peak: beyond the peak, out of reach" in _train_targets([hot])
    row2 = {**row, "T": 256, "am_vs_tf": 1.0, "astro_cost": 1.5,
            "transformer_flops_per_token": 84.4e6}
    row2.update(ceiling(row2))
    assert "reachable at equal MFU), astrocyte 1.50x" in _train_targets([row2])
    assert _train_targets([row2]).endswith(": met")


def test_bench_train_prints_the_ceiling(capsys):
    assert main(["bench", "train", "--d-models", "16", "--n-layer", "1", "--lengths", "64",
                 "--tokens", "64", "--threads", "1", "--repeats", "1", "--peak-n", "64"]) == 0
    out = capsys.readouterr().out
    assert "FLOP-parity ceiling" in out and "of ceil" in out and "astro FL" in out
    assert "threads 1, d 16, T 64: AM/TF" in out and "at equal MFU" in out
    # the astrocyte's cost against the ablation at equal parameters is the one judged
    assert "astro eq" in out and "eq par" in out
    assert "astrocyte at equal parameters" in out and "against the ablation at equal" in out


def test_train_configs_are_the_four_models_at_their_sizes():
    from astro_neuron.apps.bench.lm import train_configs
    cfgs = train_configs(AMSNetConfig(n_layer=2, d_model=64, n_head=1, block_size=256))
    assert list(cfgs) == ["amsnet", "transformer", "astro_off", "astro_eq"]
    p = {n: build_model(c).num_params() for n, c in cfgs.items()}
    assert p["astro_off"] < 0.85 * p["amsnet"]                   # 10 d^2 against 13 d^2
    assert abs(p["astro_eq"] - p["amsnet"]) < 0.002 * p["amsnet"]
    assert abs(p["transformer"] - p["amsnet"]) < 0.02 * p["amsnet"]


def test_targets_judge_the_astrocyte_at_equal_parameters():
    row = {"threads": 1, "d_model": 64, "T": 256, "batch": 16, "am_vs_tf": 1.05,
           "astro_cost": 1.6, "astro_cost_eq": 1.3,
           **{f"{n}_flops_per_token": f for n, f in (("amsnet", 3.0e6), ("transformer",
                                                   3.0e6), ("astro_off", 2.0e6),
                                                   ("astro_eq", 2.5e6))}}
    for n in ("amsnet", "transformer", "astro_off", "astro_eq"):
        row.update({f"{n}_tokens_per_s": 1000.0, f"{n}_spread": 0.1, f"{n}_mfu": 0.4,
                    f"{n}_params": 1})
    row.update(ceiling(row))
    assert row["astro_eq_parity"] == pytest.approx(1.2)
    t = _train_targets([row])
    assert "astrocyte at equal parameters 1.30x (<= 1.5x; 1.20x at equal MFU): met" in t
    assert "MISSED" in _train_targets([{**row, "astro_cost_eq": 1.55}])
    assert " 1.30x" in _train_table([row]) and "eq FL" in _train_table([row])
