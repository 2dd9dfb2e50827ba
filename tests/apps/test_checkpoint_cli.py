"""Checkpoints on the command line: every command that opens one refuses a pickle
(its code never runs), a damaged or NaN file is one error line, `convert-checkpoint`
converts only with --trust-pickle, and SIGTERM saves like Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from astro_neuron.apps.cli import main
from astro_neuron.io import _canonical, _digest
from neuro_data import tiny_memory_checkpoint

ROOT = Path(__file__).resolve().parents[2]
TINY = ["model.d_model=16", "model.n_head=2", "model.n_layer=1", "model.block_size=16",
        "model.ffn_mult=2", "train.batch_size=4", "train.max_steps=2", "train.warmup_steps=1",
        "train.eval_interval=2", "train.eval_tokens=64", "train.ckpt_interval=2"]

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def lm_ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("train")
    assert main(["train", "--config", "tiny", "--out", str(out), "--device", "cpu",
                 "--no-progress", *TINY]) == 0
    return out / "ckpt.safetensors"


@pytest.fixture(scope="module")
def mem_ckpt(tmp_path_factory):
    return tiny_memory_checkpoint(tmp_path_factory.mktemp("mem") / "memory_amsu.safetensors")


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _commands(path, tmp_path):
    return [["eval", str(path), "--tokens", "64"],
            ["generate", str(path), "--max-new-tokens", "2"],
            ["quantize", str(path), "--out", str(tmp_path / "q.h5"), "--calib-samples", "2",
             "--eval-samples", "2", "--no-progress"],
            ["export", str(path), "--to", "nir", "--out", str(tmp_path / "x.nir")],
            ["record", str(path), "--out", str(tmp_path / "r.npz")],
            ["bench", "generate", "--checkpoint", str(path), "--contexts", "16", "--tokens",
             "1", "--repeats", "1", "--no-rss"]]


def _one_error_line(capsys, match):
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1 and "Traceback" not in err, err
    assert match in err, err


def test_no_command_runs_a_pickled_payload(tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"config": {}, "model": {}, "task": {}, "state_dict": {},
                "x": _Payload(marker)}, evil)
    for argv in _commands(evil, tmp_path):
        assert main(argv) == 2, argv
        _one_error_line(capsys, "convert-checkpoint")
        assert not marker.exists(), argv
    run = tmp_path / "run"
    run.mkdir()
    evil.replace(run / "ckpt.safetensors")
    assert main(["train", "--config", "tiny", "--out", str(run), "--resume", "--device", "cpu",
                 "--no-progress", *TINY]) == 2
    _one_error_line(capsys, "pickled PyTorch")
    assert main(["convert-checkpoint", str(run / "ckpt.safetensors"),
                 str(tmp_path / "new.safetensors")]) == 2
    _one_error_line(capsys, "--trust-pickle")
    assert not marker.exists() and not (tmp_path / "new.safetensors").exists()


def test_damaged_and_nan_checkpoints_are_one_error_line(tmp_path, lm_ckpt, mem_ckpt, capsys):
    from safetensors import safe_open
    from safetensors.torch import save_file
    import json

    for src in (lm_ckpt, mem_ckpt):
        data = bytearray(src.read_bytes())
        for i in range(64):                                  # 64 flipped bytes in the weights
            data[len(data) - 300 + i] ^= 0xFF
        bad = tmp_path / f"flipped_{src.name}"
        bad.write_bytes(bytes(data))
        with safe_open(str(src), framework="pt") as f:
            header, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
        doc = json.loads(header["astro_neuron"])
        name = sorted(k for k in tensors if k.startswith("model.") and tensors[k].numel() > 1)[0]
        tensors[name] = tensors[name].clone()
        tensors[name].view(-1)[0] = float("nan")
        nan = tmp_path / f"nan_{src.name}"
        mj = _canonical(doc)
        save_file(tensors, str(nan), metadata={"astro_neuron": mj,
                                              "sha256": _digest(mj, tensors)})
        lm = src == lm_ckpt
        cmds = [c for c in _commands(bad, tmp_path) if (c[0] in ("eval", "generate", "bench"))
                == lm]
        for argv in cmds:
            assert main(argv) == 2, argv
            _one_error_line(capsys, "checksum does not match")
        for argv in [c for c in _commands(nan, tmp_path)
                     if (c[0] in ("eval", "generate", "bench")) == lm]:
            assert main(argv) == 2, argv
            _one_error_line(capsys, f"tensor '{name}' holds NaN or infinite values")
    # an LM checkpoint given to quantize, a MemoryNet one given to eval
    assert main(["quantize", str(lm_ckpt), "--no-progress"]) == 2
    _one_error_line(capsys, "holds a 'lm' checkpoint, not a 'memory-net' one")
    assert main(["eval", str(mem_ckpt)]) == 2
    _one_error_line(capsys, "holds a 'memory-net' checkpoint, not a 'lm' one")


def test_convert_checkpoint_command(tmp_path, mem_ckpt, capsys):
    from astro_neuron.tasks import MemoryNet

    net = MemoryNet.load(mem_ckpt)
    torch.save(net.checkpoint(), tmp_path / "old.pt")
    assert main(["convert-checkpoint", str(tmp_path / "old.pt"),
                 str(tmp_path / "new.safetensors")]) == 2
    _one_error_line(capsys, "refusing to unpickle")
    assert main(["convert-checkpoint", str(tmp_path / "old.pt"),
                 str(tmp_path / "new.safetensors"), "--trust-pickle"]) == 0
    assert "memory-net checkpoint" in capsys.readouterr().out
    assert main(["record", str(tmp_path / "new.safetensors"), "--out",
                 str(tmp_path / "r.npz")]) == 0


def test_sigterm_saves_and_exits_143(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "astro_neuron", "train", "--config", "tiny", "--out", str(out),
           "--device", "cpu", "--no-progress", *TINY, "train.max_steps=100000",
           "train.ckpt_interval=1", "train.eval_interval=100000"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.time() + 240
        while not (out / "ckpt.safetensors").exists() and time.time() < deadline \
                and proc.poll() is None:
            time.sleep(0.2)
        assert (out / "ckpt.safetensors").exists()
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, stderr
    assert "interrupted (SIGTERM): checkpoint saved at step" in stdout, stdout
    assert "Traceback" not in stderr
    from astro_neuron.lm.train import load_model

    step = load_model(out / "ckpt.safetensors")[1]["step"]
    assert f"saved at step {step} " in stdout
    assert not list(out.glob(".*.tmp"))
