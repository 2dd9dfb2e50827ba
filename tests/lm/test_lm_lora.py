"""LoRA adapters: the adapted weight against W + (alpha/r) B A, merge / unmerge, every
form of the models (parallel, recurrent step), gradients, and the adapter files."""

import pytest
import torch

from astro_neuron.io import CheckpointError
from astro_neuron.lm import AMSNetConfig, build_model
from astro_neuron.lm.config import transformer_twin
from astro_neuron.lm.lora import (
    add_lora, apply_adapter, load_adapter, lora_modules, lora_parameters, lora_targets, merge,
    remove_lora, save_adapter, unmerge,
)

ARCHS = ["amsnet", "transformer"]


def _model(arch, seed=0):
    torch.manual_seed(seed)
    cfg = AMSNetConfig(d_model=32, n_head=2, n_layer=2, block_size=32, synapse_init=1.0,
                       astro_gain=1.0)
    return build_model(cfg if arch == "amsnet" else transformer_twin(cfg))


def _randomise(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in lora_parameters(model):
            p.copy_(0.05 * torch.randn(p.shape, generator=g))


def _steps(model, x):
    c, out = None, []
    for t in range(x.shape[1]):
        lo, c = model.step(x[:, t], c)
        out.append(lo)
    return torch.stack(out, 1)


@pytest.mark.parametrize("arch", ARCHS)
def test_targets_are_the_projection_matrices(arch):
    m = _model(arch)
    t = lora_targets(m)
    assert t and all(n.endswith(".weight") for n in t)
    assert not any("tau" in n or "norm" in n for n in t)
    params = dict(m.named_parameters())
    assert all(params[n].dim() == 2 for n in t)


@pytest.mark.parametrize("arch", ARCHS)
def test_adapted_model_equals_a_reference_with_the_weights_replaced(arch):
    m, ref = _model(arch), _model(arch)
    add_lora(m, rank=4, alpha=6.0)
    _randomise(m)
    with torch.no_grad():                       # slow obvious reference: W + alpha/r B A
        for name, lo in lora_modules(m).items():
            W = dict(ref.named_parameters())[name]
            W.add_((6.0 / 4) * lo.lora_B @ lo.lora_A)
    x = torch.randint(0, 256, (2, 24))
    y, _ = m(x)
    y_ref, _ = ref(x)
    assert torch.allclose(y, y_ref, atol=1e-5, rtol=1e-5)
    # the recurrent decode step sees the adapters too (it reads the weights directly)
    assert torch.allclose(_steps(m, x), y_ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_merge_equals_adapter_and_unmerge_restores_the_base_bit_for_bit(arch):
    m = _model(arch)
    base = {k: v.clone() for k, v in m.state_dict().items()}
    add_lora(m, rank=4)
    _randomise(m)
    x = torch.randint(0, 256, (2, 24))
    y_adapter, _ = m(x)
    merge(m)
    assert all(lo.merged for lo in lora_modules(m).values())
    y_merged, _ = m(x)
    assert torch.allclose(y_merged, y_adapter, atol=1e-6, rtol=1e-6)
    assert torch.allclose(_steps(m, x), y_adapter, atol=1e-4, rtol=1e-4)
    unmerge(m)
    y_again, _ = m(x)
    assert torch.equal(y_again, y_adapter)
    remove_lora(m, merged=False)
    sd = m.state_dict()
    assert sd.keys() == base.keys()
    assert all(torch.equal(sd[k], base[k]) for k in base)


@pytest.mark.parametrize("arch", ARCHS)
def test_only_the_adapters_train_and_their_gradients_match_the_reference(arch):
    m, ref = _model(arch), _model(arch)
    add_lora(m, rank=2, alpha=2.0)
    _randomise(m)
    x = torch.randint(0, 256, (2, 16))
    _, loss = m(x, x)
    loss.backward()
    trainable = [p for p in m.parameters() if p.requires_grad]
    assert {id(p) for p in trainable} == {id(p) for p in lora_parameters(m)}
    assert all(p.grad is not None for p in trainable)
    # reference: the gradient of W + B A through W's own gradient, dL/dB = dL/dW A^T
    deltas = {n: (lo.lora_B @ lo.lora_A).detach() for n, lo in lora_modules(m).items()}
    with torch.no_grad():
        for n, d in deltas.items():
            dict(ref.named_parameters())[n].add_(d)
    _, loss_ref = ref(x, x)
    loss_ref.backward()
    for n, lo in lora_modules(m).items():
        gW = dict(ref.named_parameters())[n].grad
        assert torch.allclose(lo.lora_B.grad, gW @ lo.lora_A.detach().t(), atol=1e-5, rtol=1e-3)
        assert torch.allclose(lo.lora_A.grad, lo.lora_B.detach().t() @ gW, atol=1e-5, rtol=1e-3)


def test_adapter_files_round_trip_and_refuse_another_base(tmp_path):
    m = _model("amsnet")
    add_lora(m, rank=4)
    _randomise(m)
    x = torch.randint(0, 256, (1, 20))
    y, _ = m(x)
    path = save_adapter(tmp_path / "adapter.safetensors", m, {"note": "t"})
    meta, tensors = load_adapter(tmp_path)
    assert meta["note"] == "t" and meta["targets"] == lora_targets(_model("amsnet"))
    fresh = _model("amsnet")
    apply_adapter(fresh, path)
    assert torch.allclose(fresh(x)[0], y, atol=1e-6, rtol=1e-6)
    with pytest.raises(CheckpointError, match="other base weights"):
        apply_adapter(_model("amsnet", seed=3), path)
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0xFF
    (tmp_path / "bad.safetensors").write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="checksum|damaged"):
        load_adapter(tmp_path / "bad.safetensors")


def test_bad_options():
    m = _model("amsnet")
    with pytest.raises(ValueError, match="rank"):
        add_lora(m, rank=0)
    with pytest.raises(ValueError, match="no module"):
        add_lora(m, targets=["blocks.9.w_o.weight"])
    m = _model("amsnet")
    with pytest.raises(ValueError, match="not a matrix"):
        add_lora(m, targets=["norm_f.weight"])
    m = _model("amsnet")
    add_lora(m)
    with pytest.raises(ValueError, match="already has"):
        add_lora(m)
