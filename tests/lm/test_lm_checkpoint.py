"""Checkpoints are data: safetensors + JSON, checksummed, checked against their config;
old pickled .pt files never run code; atomic writes follow the umask and leave no .tmp."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from astro_neuron.apps.convert import convert_pickle_checkpoint
from astro_neuron.io import (
    CheckpointError, PickleCheckpointError, _canonical, _digest, atomic_json, atomic_write,
    load_checkpoint, load_pickle_checkpoint, save_checkpoint,
)
from astro_neuron.lm.data import Corpus, stdlib_corpus
from astro_neuron.lm.train import (
    CKPT_NAME, NonFiniteLoss, load_model, load_run_config, make_optimizer, train,
)
from astro_neuron.tasks import MemoryNet, RecallTask

TINY = ["model.d_model=16", "model.n_head=2", "model.n_layer=1", "model.block_size=16",
        "model.ffn_mult=2", "train.batch_size=4", "train.max_steps=4", "train.warmup_steps=2",
        "train.eval_interval=4", "train.eval_tokens=64", "train.ckpt_interval=2",
        "train.device='cpu'", "train.lr=3e-3"]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def corpus():
    c = stdlib_corpus()
    return Corpus("slice", c.train[:20000].clone(), c.val[:2000].clone(), c.test[:2000].clone())


def _run(out, *extra):
    return load_run_config("tiny", TINY + [f"train.out_dir='{Path(out).as_posix()}'", *extra])


@pytest.fixture(scope="module")
def lm_ckpt(tmp_path_factory, corpus):
    out = tmp_path_factory.mktemp("lm")
    train(_run(out), progress=False, corpus=corpus)
    return out / CKPT_NAME


@pytest.fixture(scope="module")
def mem_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    net = MemoryNet(RecallTask(n_classes=2, channels_per_class=2, go_channels=2, cue_len=2,
                               delay=3, recall_len=2), n_neurons=8, n_astrocytes=2, d_key=4)
    return net.save(tmp_path_factory.mktemp("mem") / "memory_amsu.safetensors"), net


def _raw(path):
    """(header metadata, tensors) read with safetensors directly, no checks."""
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        return f.metadata(), {k: f.get_tensor(k) for k in f.keys()}


def _write_raw(path, meta_doc, tensors):
    """A well-formed file with a valid checksum around any content (a careful forger)."""
    mj = _canonical(meta_doc) if meta_doc is not None else None
    header = {"astro_neuron": mj, "sha256": _digest(mj, tensors)}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=header)


# ----------------------------------------------------------------- the format

def test_lm_checkpoint_is_safetensors_plus_json_and_round_trips(lm_ckpt):
    header, tensors = _raw(lm_ckpt)
    doc = json.loads(header["astro_neuron"])
    assert doc["format"] == "astro-neuron-checkpoint" and doc["kind"] == "lm"
    assert doc["meta"]["step"] == 4 and len(doc["meta"]["losses"]) == 4
    assert doc["meta"]["run_config"]["train"]["seed"] == 0
    assert any(k.startswith("model.") for k in tensors)
    assert any(k.endswith(".exp_avg_sq") for k in tensors) and "rng.torch_cpu" in tensors
    assert len(header["sha256"]) == 64
    model, ck = load_model(lm_ckpt)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, tensors["model." + k], rtol=0, atol=0)
    # the optimizer state fits a fresh optimizer of the same model
    opt = make_optimizer(model, _run("x").train)
    sd = opt.state_dict()
    sd["state"] = ck["optimizer"]
    opt.load_state_dict(sd)


def test_memory_net_round_trips(mem_ckpt):
    path, net = mem_ckpt
    back = MemoryNet.load(path)
    assert back.task == net.task and back.config["n_neurons"] == 8
    for k, v in net.state_dict().items():
        torch.testing.assert_close(back.state_dict()[k], v, rtol=0, atol=0)


# ----------------------------------------------------------------- damaged files

def _flip(src, dst, where, n=64):
    data = bytearray(Path(src).read_bytes())
    for i in range(n):
        data[where + i] ^= 0xFF
    Path(dst).write_bytes(bytes(data))


@pytest.mark.parametrize("which", ["lm", "mem"])
def test_damaged_files_give_one_clear_error(tmp_path, lm_ckpt, mem_ckpt, which):
    src = lm_ckpt if which == "lm" else mem_ckpt[0]
    load = load_model if which == "lm" else MemoryNet.load
    size = src.stat().st_size
    cases = {}
    _flip(src, tmp_path / "flipped_end.safetensors", size - 200)       # in the tensor data
    cases["flipped_end.safetensors"] = "checksum does not match"
    _flip(src, tmp_path / "flipped_mid.safetensors", size // 2 + 100)
    cases["flipped_mid.safetensors"] = "checksum does not match|damaged"
    _flip(src, tmp_path / "flipped_head.safetensors", 20, 8)           # in the JSON header
    cases["flipped_head.safetensors"] = "damaged|not valid JSON|checksum"
    (tmp_path / "truncated.safetensors").write_bytes(src.read_bytes()[: size - 1000])
    cases["truncated.safetensors"] = "damaged or not a safetensors file"
    (tmp_path / "empty.safetensors").write_bytes(b"")
    cases["empty.safetensors"] = "damaged or not a safetensors file"
    (tmp_path / "text.safetensors").write_text("hello, not a checkpoint\n")
    cases["text.safetensors"] = "damaged or not a safetensors file"
    save_file({"w": torch.ones(3)}, str(tmp_path / "foreign.safetensors"))
    cases["foreign.safetensors"] = "not an astro-neuron checkpoint"
    save_file({"w": torch.ones(3)}, str(tmp_path / "foreign2.safetensors"),
              metadata={"format": "pt"})
    cases["foreign2.safetensors"] = "not an astro-neuron checkpoint"
    for name, match in cases.items():
        with pytest.raises(CheckpointError, match=match) as err:
            load(tmp_path / name)
        assert str(tmp_path / name) in str(err.value), err.value
    with pytest.raises(FileNotFoundError, match="not found"):
        load(tmp_path / "missing.safetensors")
    with pytest.raises(CheckpointError, match="is a folder"):
        load(tmp_path)


def test_wrong_kind_is_refused(lm_ckpt, mem_ckpt):
    with pytest.raises(CheckpointError, match="holds a 'lm' checkpoint, not a 'memory-net'"):
        MemoryNet.load(lm_ckpt)
    with pytest.raises(CheckpointError, match="holds a 'memory-net' checkpoint, not a 'lm'"):
        load_model(mem_ckpt[0])


@pytest.mark.parametrize("which", ["lm", "mem"])
def test_nan_or_inf_tensor_with_a_valid_checksum_is_refused_by_name(tmp_path, lm_ckpt,
                                                                     mem_ckpt, which):
    src = lm_ckpt if which == "lm" else mem_ckpt[0]
    load = load_model if which == "lm" else MemoryNet.load
    header, tensors = _raw(src)
    doc = json.loads(header["astro_neuron"])
    name = sorted(k for k in tensors if k.startswith("model.") and tensors[k].numel() > 1)[0]
    for bad in (float("nan"), float("inf")):
        t = dict(tensors)
        t[name] = t[name].clone()
        t[name].view(-1)[1] = bad
        _write_raw(tmp_path / "bad.safetensors", doc, t)
        with pytest.raises(CheckpointError, match=f"tensor '{name}' holds NaN or infinite"):
            load(tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match="holds NaN"):
        save_checkpoint(tmp_path / "x.safetensors", "lm", {}, {"w": torch.tensor([float("nan")])})
    assert not (tmp_path / "x.safetensors").exists()


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path, lm_ckpt, mem_ckpt):
    header, tensors = _raw(lm_ckpt)
    doc = json.loads(header["astro_neuron"])
    wrong = dict(doc, meta=dict(doc["meta"], config=dict(doc["meta"]["config"], d_model=32)))
    _write_raw(tmp_path / "wrong.safetensors", wrong, tensors)
    with pytest.raises(CheckpointError, match=r"do not fit its config \(tensor 'model\..*"
                                              r"torch.float32 \(.*16.*\), the config needs"):
        load_model(tmp_path / "wrong.safetensors")
    t = dict(tensors)
    t["model.extra"] = torch.zeros(2)
    del t["model.wte.weight"]
    _write_raw(tmp_path / "names.safetensors", doc, t)
    with pytest.raises(CheckpointError, match=r"missing tensors \['model.wte.weight'\]; "
                                              r"unexpected tensors \['model.extra'\]"):
        load_model(tmp_path / "names.safetensors")
    t = {k: (v.double() if k == "model.wte.weight" else v) for k, v in tensors.items()}
    _write_raw(tmp_path / "dtype.safetensors", doc, t)
    with pytest.raises(CheckpointError, match="'model.wte.weight' is torch.float64"):
        load_model(tmp_path / "dtype.safetensors")
    t = dict(tensors)
    key = next(k for k in t if k.endswith(".exp_avg"))
    t[key] = torch.zeros(3)
    _write_raw(tmp_path / "opt.safetensors", doc, t)
    with pytest.raises(CheckpointError, match=f"tensor '{key}' is torch.float32 \\(3,\\)"):
        load_model(tmp_path / "opt.safetensors")
    bad_meta = dict(doc, meta=dict(doc["meta"], step=-1))
    _write_raw(tmp_path / "step.safetensors", bad_meta, tensors)
    with pytest.raises(CheckpointError, match="entry 'step' must be a non-negative integer"):
        load_model(tmp_path / "step.safetensors")
    bad_cfg = dict(doc, meta=dict(doc["meta"], config=dict(doc["meta"]["config"], n_head=0)))
    _write_raw(tmp_path / "cfg.safetensors", bad_cfg, tensors)
    with pytest.raises(CheckpointError, match="stored model config is invalid"):
        load_model(tmp_path / "cfg.safetensors")
    mh, mt = _raw(mem_ckpt[0])
    mdoc = json.loads(mh["astro_neuron"])
    mwrong = dict(mdoc, meta=dict(mdoc["meta"], config=dict(mdoc["meta"]["config"],
                                                            n_neurons=10)))
    _write_raw(tmp_path / "mwrong.safetensors", mwrong, mt)
    with pytest.raises(CheckpointError, match="do not fit its config"):
        MemoryNet.load(tmp_path / "mwrong.safetensors")


def test_resume_from_weights_that_do_not_fit_the_config_is_one_clear_error(tmp_path,
                                                                           lm_ckpt, corpus):
    header, tensors = _raw(lm_ckpt)
    doc = json.loads(header["astro_neuron"])
    t = {k: (torch.zeros(5) if k == "model.wte.weight" else v) for k, v in tensors.items()}
    (tmp_path / "run").mkdir()
    _write_raw(tmp_path / "run" / CKPT_NAME, doc, t)
    with pytest.raises(CheckpointError, match="checkpoint to resume .* do not fit its config "
                                              r"\(tensor 'model.wte.weight'"):
        train(_run(tmp_path / "run"), resume=True, progress=False, corpus=corpus)


# ----------------------------------------------------------------- pickles never run

class _Payload:
    """Unpickling this calls Path.touch(marker): proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _evil(path, marker, layout):
    obj = {"config": {}, "model": {}, "task": {}, "state_dict": {}, "x": _Payload(marker)}
    if layout == "zip":
        torch.save(obj, path)
    else:
        torch.save(obj, path, _use_new_zipfile_serialization=False)
    return path


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_a_pickle_payload_never_runs_when_any_loader_opens_it(tmp_path, corpus, layout):
    from astro_neuron.neuro import demo_plots

    marker = tmp_path / "pwned"
    evil = _evil(tmp_path / "evil.pt", marker, layout)
    named = _evil(tmp_path / "evil.safetensors", marker, layout)   # the name does not matter
    for path in (evil, named):
        for load in (load_model, MemoryNet.load,
                     lambda p: load_checkpoint(p, "lm"),
                     lambda p: demo_plots(tmp_path / "plots", p),
                     lambda p: load_pickle_checkpoint(p),
                     lambda p: convert_pickle_checkpoint(p, tmp_path / "new.safetensors")):
            with pytest.raises(PickleCheckpointError,
                               match="convert-checkpoint|--trust-pickle"):
                load(path)
            assert not marker.exists()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    _evil(run_dir / CKPT_NAME, marker, layout)
    with pytest.raises(PickleCheckpointError, match="convert-checkpoint"):
        train(_run(run_dir), resume=True, progress=False, corpus=corpus)
    (run_dir / CKPT_NAME).unlink()
    _evil(run_dir / "ckpt.pt", marker, layout)                       # an old run folder
    with pytest.raises(CheckpointError, match="old pickled one: convert it first"):
        train(_run(run_dir), resume=True, progress=False, corpus=corpus)
    assert not marker.exists()
    # control: the payload is real, and runs once the user says they trust the file
    with pytest.raises(CheckpointError):
        convert_pickle_checkpoint(evil, tmp_path / "new.safetensors", trust_pickle=True)
    assert marker.exists()


# ----------------------------------------------------------------- conversion

def test_convert_old_lm_and_memory_checkpoints_then_resume(tmp_path, corpus):
    full = train(_run(tmp_path / "full"), progress=False, corpus=corpus)
    # an old-format training checkpoint at step 2, as train() wrote it before
    run = _run(tmp_path / "cut", "train.max_steps=2")
    train(run, progress=False, corpus=corpus)
    model, ck = load_model(tmp_path / "cut" / CKPT_NAME)
    opt = make_optimizer(model, run.train)
    sd = opt.state_dict()
    sd["state"] = ck["optimizer"]
    opt.load_state_dict(sd)
    old = {"config": ck["config"], "run_config": ck["run_config"],
           "model": model.state_dict(), "optimizer": opt.state_dict(), "step": ck["step"],
           "losses": ck["losses"], "evals": ck["evals"], "tokens_seen": ck["tokens_seen"],
           "train_time_s": ck["train_time_s"], "world_size": 1}
    torch.save(old, tmp_path / "old.pt")
    (tmp_path / "cut" / CKPT_NAME).unlink()
    with pytest.raises(PickleCheckpointError, match="--trust-pickle"):
        convert_pickle_checkpoint(tmp_path / "old.pt", tmp_path / "cut" / CKPT_NAME)
    kind, dst = convert_pickle_checkpoint(tmp_path / "old.pt", tmp_path / "cut" / CKPT_NAME,
                                          trust_pickle=True)
    assert kind == "lm" and load_model(dst)[1]["step"] == 2
    resumed = train(_run(tmp_path / "cut"), resume=True, progress=False, corpus=corpus)
    torch.testing.assert_close(torch.tensor(resumed["losses"]), torch.tensor(full["losses"]),
                               rtol=1e-6, atol=0)
    # MemoryNet: the dict MemoryNet.checkpoint() gave to torch.save
    net = MemoryNet(RecallTask(n_classes=2, channels_per_class=2, go_channels=2, cue_len=2,
                               delay=3, recall_len=2), n_neurons=8, n_astrocytes=2, d_key=4)
    torch.save(net.checkpoint(), tmp_path / "mem.pt")
    kind, dst = convert_pickle_checkpoint(tmp_path / "mem.pt", tmp_path / "mem.safetensors",
                                          trust_pickle=True)
    assert kind == "memory-net"
    for k, v in MemoryNet.load(dst).state_dict().items():
        torch.testing.assert_close(v, net.state_dict()[k], rtol=0, atol=0)
    torch.save({"foo": 1}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="neither an LM checkpoint"):
        convert_pickle_checkpoint(tmp_path / "foreign.pt", tmp_path / "f.safetensors",
                                  trust_pickle=True)
    with pytest.raises(ValueError, match="must end in .safetensors"):
        convert_pickle_checkpoint(tmp_path / "mem.pt", tmp_path / "mem.pt", trust_pickle=True)


# ----------------------------------------------------------------- training edge cases

def test_resume_with_another_seed_or_batch_size_is_refused(lm_ckpt, tmp_path, corpus):
    out = lm_ckpt.parent
    for extra, match in ((["train.seed=1"], "train.seed=0, this run asks train.seed=1"),
                         (["train.batch_size=8"], "train.batch_size=4, this run asks "
                                                  "train.batch_size=8")):
        with pytest.raises(ValueError, match=match + ".*splice two different data streams"):
            train(_run(out, "train.max_steps=6", *extra), resume=True, progress=False,
                  corpus=corpus)


def test_divergence_right_before_an_evaluation_names_the_step(tmp_path, corpus):
    def poison(info):                  # after step 4's update, before its evaluation
        if info["step"] == 4:
            with torch.no_grad():
                info["model"].blocks[0].amsu.log_tau_mem.fill_(float("nan"))

    with pytest.raises(NonFiniteLoss, match="weights became NaN or infinite at step 4"):
        train(_run(tmp_path, "train.max_steps=8", "train.ckpt_interval=4"), progress=False,
              corpus=corpus, callback=poison)
    assert not (tmp_path / CKPT_NAME).exists()


def test_sigterm_saves_and_resumes_bit_identically(tmp_path, corpus):
    from astro_neuron.lm.train import TrainingStopped
    import signal

    full = train(_run(tmp_path / "full", "train.max_steps=6"), progress=False, corpus=corpus)

    def term(info):
        if info["step"] == 3:
            signal.raise_signal(signal.SIGTERM)

    run = _run(tmp_path / "cut", "train.max_steps=6", "train.ckpt_interval=100")
    with pytest.raises(TrainingStopped) as err:
        train(run, progress=False, corpus=corpus, callback=term)
    assert err.value.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL     # handler restored
    assert load_model(tmp_path / "cut" / CKPT_NAME)[1]["step"] == 3
    resumed = train(run, resume=True, progress=False, corpus=corpus)
    torch.testing.assert_close(torch.tensor(resumed["losses"]), torch.tensor(full["losses"]),
                               rtol=0, atol=0)


# ----------------------------------------------------------------- atomic writes

def test_a_write_killed_midway_leaves_no_tmp_after_the_next_write(tmp_path):
    target = tmp_path / "ckpt.safetensors"
    code = textwrap.dedent(f"""
        import os, signal
        from astro_neuron.io import atomic_write
        def write(tmp):
            with open(tmp, "wb") as fh:
                fh.write(b"half a checkpoint")
                fh.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        atomic_write({str(target)!r}, write)
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", code], env=env, timeout=120)
    assert proc.returncode == -9
    left = list(tmp_path.glob(".ckpt.safetensors.*.tmp"))
    assert len(left) == 1 and not target.exists()
    save_checkpoint(target, "lm", {"a": 1}, {"w": torch.ones(2)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.safetensors"]
    assert load_checkpoint(target, "lm")[0] == {"a": 1}
    # a failing writer removes its own temporary file at once
    with pytest.raises(RuntimeError):
        atomic_write(target, lambda tmp: (_ for _ in ()).throw(RuntimeError("disk full")))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.safetensors"]


def test_a_stale_tmp_of_a_dead_process_is_removed_and_a_live_ones_is_kept(tmp_path):
    target = tmp_path / "m.json"
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True).stdout.strip()
        (tmp_path / f".m.json.{dead}.tmp").write_text("stale")
        (tmp_path / f".m.json.{live.pid}.tmp").write_text("being written")
        (tmp_path / ".other.json.1.tmp").write_text("another file's")
        atomic_json({"x": 1}, target)
        names = sorted(p.name for p in tmp_path.iterdir())
        assert names == [".m.json.%d.tmp" % live.pid, ".other.json.1.tmp", "m.json"]
    finally:
        live.kill()
        live.wait()


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        a = save_checkpoint(tmp_path / "c.safetensors", "lm", {}, {"w": torch.ones(2)})
        b = atomic_json({"x": 1}, tmp_path / "m.json")
    finally:
        os.umask(old)
    for p in (a, b):
        assert stat.S_IMODE(p.stat().st_mode) == mode, (p, oct(p.stat().st_mode))


def test_writing_into_a_regular_file_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("x")
    for target in (tmp_path / "file" / "m.json", tmp_path / "file" / "a" / "b" / "m.json"):
        with pytest.raises(ValueError, match="file is a file, not a folder"):
            atomic_json({}, target)
    with pytest.raises(ValueError, match="it is a folder"):
        atomic_json({}, tmp_path)
    with pytest.raises(ValueError, match="train.out_dir .*file is a file, not a folder"):
        train(_run(tmp_path / "file" / "run"), progress=False)


def test_sigkill_with_a_checkpoint_every_step_resumes_bit_identically(tmp_path, corpus):
    """A process killed with SIGKILL (no handler can run) right after step 3: the
    checkpoint of step 2 is complete, no temporary file stays, and the resumed run's
    losses equal an uninterrupted run's exactly."""
    over = TINY + ["train.max_steps=6", "train.ckpt_interval=1"]
    full = train(_run(tmp_path / "full", *over[-2:]), progress=False, corpus=corpus)
    code = textwrap.dedent(f"""
        import os, signal
        from astro_neuron.lm.data import Corpus, stdlib_corpus
        from astro_neuron.lm.train import load_run_config, train
        c = stdlib_corpus()
        corpus = Corpus("slice", c.train[:20000].clone(), c.val[:2000].clone(),
                        c.test[:2000].clone())
        run = load_run_config("tiny", {over!r} + ["train.out_dir={(tmp_path / 'cut').as_posix()}"])
        def kill(info):
            if info["step"] == 3:
                os.kill(os.getpid(), signal.SIGKILL)
        train(run, progress=False, corpus=corpus, callback=kill)
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", code], env=env, timeout=300)
    assert proc.returncode == -9
    assert load_model(tmp_path / "cut" / CKPT_NAME)[1]["step"] == 2
    resumed = train(_run(tmp_path / "cut", *over[-2:]), resume=True, progress=False,
                    corpus=corpus)
    assert not list((tmp_path / "cut").glob(".*.tmp"))
    torch.testing.assert_close(torch.tensor(resumed["losses"]), torch.tensor(full["losses"]),
                               rtol=0, atol=0)


def test_a_checkpoint_whose_header_length_starts_with_0x80_is_not_taken_for_a_pickle(tmp_path):
    """The first byte of a safetensors file is the low byte of its header's length; 0x80
    (a pickle's first byte) happens for one header length in 32."""
    path = tmp_path / "c.safetensors"
    for n in range(200):
        save_checkpoint(path, "lm", {"pad": "x" * n}, {"w": torch.ones(2)})
        if path.read_bytes()[0] == 0x80:
            break
    else:
        pytest.fail("no header length with low byte 0x80 in 200 tries")
    assert load_checkpoint(path, "lm")[0] == {"pad": "x" * n}
