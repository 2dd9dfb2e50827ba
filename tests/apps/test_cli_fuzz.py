"""A property-based fuzz test of the whole command line (issue 10, item 4).

Every sub-command is run in-process (``main(argv)``) from a small valid invocation with
one to three of its arguments replaced by random values: numbers of every sign and
size, NaN, inf, words, the empty string, and files that are missing, damaged (random
bytes), foreign (an ``.h5`` from another tool, a text file, the wrong kind of
checkpoint) or a folder. Each run must end with exit status 0, or with exactly one
``error:`` line and status 2: never a traceback, never ``nan`` printed as a result.

Bounded on purpose, to stay inside the CI budget (about a minute on two cores): sizes
drawn as valid are tiny (a valid huge size would run for hours; huge sizes are drawn
only where the parser's cap or the memory estimate refuses them), ``demo`` and
``bench simulate`` get invalid values only (a valid run trains or starts Lava), and
``--compile``, ``--compare`` and the Lava backend are left out. The examples are fixed
(derandomized) so CI runs the same ones each time; ``CLI_FUZZ_SCALE=10`` runs ten times
as many with a random seed.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import warnings

import h5py
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from astro_neuron.apps.cli import main
from neuro_data import small_recording, tiny_memory_checkpoint

pytestmark = pytest.mark.timeout(600)

TINY_LM = ["model.d_model=16", "model.n_head=2", "model.n_layer=1", "model.block_size=16",
           "model.ffn_mult=2", "train.batch_size=2", "train.max_steps=1", "train.warmup_steps=0",
           "train.eval_interval=1", "train.eval_tokens=32", "train.ckpt_interval=1"]


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    """Files of every kind, and a working folder the commands may write into."""
    d = tmp_path_factory.mktemp("fuzz")
    old = os.getcwd()
    os.chdir(d)                        # a default output path lands here, not in the repo
    try:
        assert main(["train", "--config", "tiny", "--out", str(d / "lm"), "--device", "cpu",
                     "--no-progress", *TINY_LM]) == 0
        tiny_memory_checkpoint(d / "mem.safetensors")
        assert main(["quantize", str(d / "mem.safetensors"), "--out", str(d / "net.h5"),
                     "--calib-samples", "4", "--eval-samples", "4", "--no-progress"]) == 0
        small_recording().save(d / "run.npz")
        rng = np.random.default_rng(0)
        (d / "random.pt").write_bytes(rng.bytes(4096))
        (d / "random.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + rng.bytes(2048))
        (d / "random.npz").write_bytes(b"PK\x03\x04" + rng.bytes(1024))
        (d / "text.toml").write_text("hello = [\n")
        (d / "empty.pt").write_bytes(b"")
        with h5py.File(d / "foreign.h5", "w") as f:         # an .h5 written by another tool
            f.create_dataset("data", data=np.arange(10.0))
            f.attrs["creator"] = "someone else"
        np.save(d / "floats.npy", rng.normal(size=(6, 12)))
        np.save(d / "spikes.npy", (rng.random((6, 12)) < 0.3).astype(np.int64))
        (d / "folder").mkdir()
        files = {k: str(d / v) for k, v in {
            "lm": "lm/ckpt.safetensors", "mem": "mem.safetensors", "h5": "net.h5", "rec": "run.npz",
            "random_pt": "random.pt", "random_h5": "random.h5", "random_npz": "random.npz",
            "text": "text.toml", "empty": "empty.pt", "foreign_h5": "foreign.h5",
            "floats": "floats.npy", "spikes": "spikes.npy", "folder": "folder",
            "missing": "no/such/file.pt", "under_file": "mem.safetensors/child"}.items()}
        files["dir"] = str(d)
        yield files
    finally:
        os.chdir(old)


# ----------------------------------------------------------------- values

def _num_text(x) -> str:
    return repr(x) if isinstance(x, float) else str(x)


JUNK = st.one_of(st.just(""), st.text(max_size=6), st.sampled_from(
    ["nan", "inf", "-inf", "NaN", "1e-45", "-0", "0x10", "1_000", "  3 ", "3.5", "1e309",
     "abc", "None", "true", "[]", "-", "--", "=", "\u00e9"]))
FLOATS = st.floats(allow_nan=True, allow_infinity=True).map(_num_text)


def ints(lo: int, small_hi: int, cap=None):
    """Valid tiny integers [lo, small_hi], invalid small ones, and, when the parser caps
    the option at ``cap`` (or the memory estimate refuses), huge ones beyond it."""
    parts = [st.integers(lo, small_hi), st.integers(-10**30, lo - 1), FLOATS, JUNK]
    if cap is not None:
        parts.append(st.integers(cap + 1, 10**40))
    return st.one_of(*parts).map(str)


def bad_ints(lo: int, cap=None):
    """Invalid values only: below ``lo``, above ``cap``, non-numbers (not " 3 " or
    "1_000", which Python reads as integers)."""
    def valid(text: str) -> bool:
        try:
            v = int(text.strip())
        except ValueError:
            return False
        return v >= lo and (cap is None or v <= cap)

    parts = [st.integers(-10**30, lo - 1), FLOATS, JUNK]
    if cap is not None:
        parts.append(st.integers(cap + 1, 10**40))
    return st.one_of(*parts).map(str).filter(lambda t: not valid(t))


def floats(lo: float, hi: float):
    return st.one_of(st.floats(lo, hi).map(_num_text), FLOATS, JUNK)


SEED = st.one_of(st.integers(0, 2**63 - 1), st.integers(-10**30, -1), st.integers(2**63, 10**30),
                 FLOATS, JUNK).map(str)
DEVICE = st.sampled_from(["cpu", "cuda", "cuda:7", "bogus", "", "CPU", "cpu:0", "meta", "mps"])


def files(*kinds):
    return st.sampled_from(kinds).map(lambda k: ("FILE", k))


ANY_FILE = files("lm", "mem", "h5", "rec", "random_pt", "random_h5", "random_npz", "text",
                 "empty", "foreign_h5", "floats", "folder", "missing", "under_file")
OUT_DIR = st.one_of(st.sampled_from([("FILE", "mem"), ("FILE", "under_file"),
                                     ("FILE", "folder"), ""]),
                    st.text("abc", min_size=1, max_size=3).map(lambda s: ("NEW", s)))
OUT_FILE = st.one_of(st.sampled_from([("FILE", "folder"), ("FILE", "under_file"), ""]),
                     st.sampled_from([".h5", ".json", ".nir", ".npz", ".png", ""]).map(
                         lambda ext: ("NEW", "o" + ext)))


def override(keys: dict):
    """``table.key=value`` with a value for that key (or any TOML-ish junk)."""
    def make(key):
        return st.one_of(keys[key], JUNK, FLOATS, st.sampled_from(
            ["true", "[1, 2]", '"s"', "{a = 1}", "nan", "inf", "-1", "0"])).map(
            lambda v: f"{key}={v}")
    return st.sampled_from(sorted(keys)).flatmap(make)


LM_KEYS = {
    "model.d_model": st.integers(2, 32).map(str), "model.n_head": st.integers(1, 4).map(str),
    "model.n_layer": st.integers(1, 2).map(str),
    "model.block_size": st.one_of(st.integers(1, 32), st.integers(10**9, 10**12)).map(str),
    "model.ffn_mult": st.integers(1, 3).map(str), "model.chunk_size": st.integers(1, 64).map(str),
    "model.vocab_size": st.integers(1, 300).map(str), "model.arch": st.sampled_from(
        ['"amsnet"', '"transformer"', '"gpt"']),
    "model.tau_mem": floats(-2, 5), "model.threshold": floats(-1, 3),
    "model.spike_levels": st.integers(-1, 3).map(str), "model.rotary_fraction": floats(-1, 2),
    "model.rotary_base": floats(-1, 1e5), "model.astro_gain": floats(-1, 1),
    "model.tau_astro": st.sampled_from(["[1.0, 2.0]", "[2.0, 1.0]", "[0, 1]", "3.0", "[nan, 1]"]),
    "train.batch_size": st.one_of(st.integers(1, 3), st.integers(10**9, 10**12)).map(str),
    "train.lr": floats(-1, 1), "train.min_lr": floats(-1, 1), "train.beta1": floats(-1, 2),
    "train.beta2": floats(-1, 2), "train.grad_clip": floats(-1, 5),
    "train.warmup_steps": st.integers(-3, 3).map(str),
    "train.eval_tokens": st.integers(-3, 64).map(str),
    "train.max_time_s": floats(-1, 10), "train.weight_decay": floats(-1, 1),
    "train.seed": SEED, "train.device": DEVICE.map(lambda s: f'"{s}"'),
    "data.corpus": st.sampled_from(['"stdlib"', '"enwik8"', '"nope"', '"file"']),
    "data.path": st.sampled_from(['"/no/such"', '""']), "model.unknown": st.just("1"),
    "wrong.table": st.just("1"),
}

# Per sub-command: a valid quick invocation (FILE markers are filled in) and the
# arguments the test may replace; None as the name: an extra positional override.
SPECS = {
    "train": (["train", "--config", "tiny", "--device", "cpu", "--no-progress",
               "--out", ("NEW", "t"), *TINY_LM],
              {"--config": st.one_of(st.sampled_from(["tiny", "nope", "a/b.toml", ""]),
                                     files("text", "folder", "random_pt", "missing")),
               "--out": OUT_DIR, "--device": DEVICE, None: override(LM_KEYS)}),
    "eval": (["eval", ("FILE", "lm"), "--tokens", "64", "--batch-size", "4"],
             {0: ANY_FILE, "--tokens": ints(1, 128), "--batch-size": ints(1, 8, 1 << 16),
              "--split": st.sampled_from(["train", "val", "test", "dev", ""]),
              "--corpus": st.sampled_from(["stdlib", "enwik8", "file", "nope", ""]),
              "--data-path": st.one_of(ANY_FILE, JUNK), "--device": DEVICE}),
    "generate": (["generate", ("FILE", "lm"), "--max-new-tokens", "4"],
                 {0: ANY_FILE, "--max-new-tokens": ints(0, 8, 1 << 20),
                  "--temperature": floats(-1, 3), "--top-k": ints(1, 300, 1 << 20),
                  "--num-samples": ints(1, 3, 4096), "--seed": SEED, "--device": DEVICE,
                  "--prompt": st.text(max_size=5)}),
    "compare": (["compare", "--config", "tiny", "--variants", "AM-SNet", "--no-progress",
                 "--out", ("NEW", "c"), *TINY_LM],
                {"--variants": st.sampled_from(["AM-SNet", "Transformer", "GPT-5", "", ","]),
                 "--out": OUT_DIR, None: override(LM_KEYS)}),
    "memory-tasks": (["memory-tasks", "--quick", "--task", "mqar", "--lengths", "64",
                      "--sizes", "4", "--lrs", "1e-3", "--seeds", "1",
                      "--models", "Transformer", "--no-progress", "--out", ("NEW", "m")],
                     {"--lengths": st.one_of(st.sampled_from(["8", "0", "-64", "64,x", "", ","]),
                                             st.integers(10**6, 10**30).map(str)),
                      "--batch-size": bad_ints(1, 1 << 16), "--examples": bad_ints(1, 10**9),
                      "--lrs": floats(-1, 1e-2), "--d-model": bad_ints(2, 8192),
                      "--n-layer": bad_ints(1, 256), "--seeds": bad_ints(1, 100),
                      "--models": st.sampled_from(["GPT", "", "AM-SNet,nope"]),
                      "--task": st.sampled_from(["both", "x", "", "copy"]), "--out": OUT_DIR}),
    "demo": (["demo", "--quick", "--no-progress", "--out", ("NEW", "d")],
             {"--threads": bad_ints(1, 1024),
              "--stages": st.sampled_from(["bogus", "memory,x", ","]),
              "--seed": st.one_of(st.integers(-10**30, -1), st.integers(2**63, 10**30),
                                  FLOATS, JUNK).map(str),
              "--out": st.sampled_from([("FILE", "mem"), ("FILE", "under_file"), ""])}),
    "plot": (["plot", ("FILE", "rec"), "--out", ("NEW", "p"), "--kinds", "raster"],
             {0: ANY_FILE, "--sample": ints(0, 1), "--dpi": ints(20, 40, 600),
              "--kinds": st.sampled_from(["raster", "pie", "", ",", "raster,membrane"]),
              "--out": OUT_DIR}),
    "record": (["record", ("FILE", "mem"), "--out", ("NEW", "r.npz")],
               {0: ANY_FILE, "--seed": SEED, "--label": ints(0, 2),
                "--out": st.one_of(OUT_FILE, st.just(("NEW", "r.npz")))}),
    "quantize": (["quantize", ("FILE", "mem"), "--out", ("NEW", "q.h5"), "--calib-samples", "2",
                  "--eval-samples", "2", "--no-progress"],
                 {0: ANY_FILE, "--out": OUT_FILE, "--qat-steps": ints(0, 1, 10**6),
                  "--calib-samples": ints(1, 3, 1 << 16), "--eval-samples": ints(1, 3, 1 << 16),
                  "--operand-bits": ints(2, 16), "--seed": SEED}),
    "export": (["export", ("FILE", "h5"), "--to", "json", "--out", ("NEW", "e.json")],
               {0: ANY_FILE, "--to": st.sampled_from(["nir", "json", "onnx", ""]),
                "--out": OUT_FILE, "--dt": floats(-1, 1)}),
    "simulate": (["simulate", ("FILE", "h5"), "--samples", "2"],
                 {0: ANY_FILE, "--backend": st.sampled_from(["reference", "torch", "gpu", ""]),
                  "--input": st.one_of(ANY_FILE, files("spikes", "floats")),
                  "--samples": ints(1, 3, 1 << 16), "--steps": ints(1, 20, 1 << 20),
                  "--rate": floats(-1, 2), "--seed": SEED,
                  "--save": st.one_of(OUT_FILE, st.just(("NEW", "s.npz")))}),
    "bench scan": (["bench", "scan", "--batch", "1", "--lengths", "8", "--neurons", "8",
                    "--astrocytes", "2", "--d-key", "2", "--in-features", "4", "--chunk", "4",
                    "--repeats", "1", "--loop-repeats", "1", "--no-frameworks"],
                   {"--batch": ints(1, 2, 1 << 20), "--lengths": ints(1, 16, 1 << 20),
                    "--neurons": ints(1, 8, 1 << 20), "--astrocytes": ints(1, 2, 4096),
                    "--d-key": ints(1, 4, 4096), "--in-features": ints(1, 8, 1 << 20),
                    "--chunk": ints(1, 8, 1 << 20), "--repeats": ints(1, 2, 1000),
                    "--threads": ints(1, 1, 1024), "--json": OUT_FILE}),
    "bench generate": (["bench", "generate", "--contexts", "8", "--d-model", "16", "--n-layer",
                        "1", "--n-head", "2", "--tokens", "2", "--repeats", "1", "--no-rss"],
                       {"--contexts": st.one_of(ints(1, 16, 1 << 24),
                                                st.sampled_from(["8,", ",", "8,-1", "8;9"])),
                        "--d-model": ints(2, 16, 8192), "--n-layer": ints(1, 1, 256),
                        "--n-head": ints(1, 4, 256), "--tokens": ints(1, 3, 1 << 16),
                        "--repeats": ints(1, 2, 1000), "--threads": ints(1, 1, 1024),
                        "--device": DEVICE, "--checkpoint": ANY_FILE}),
    "bench train": (["bench", "train", "--d-models", "16", "--n-layer", "1", "--lengths", "8",
                     "--tokens", "8", "--threads", "1", "--repeats", "1", "--peak-n", "16"],
                    {"--d-models": ints(2, 16, 8192), "--n-layer": ints(1, 1, 256),
                     "--lengths": ints(1, 16, 1 << 20), "--tokens": ints(1, 16, 1 << 24),
                     "--repeats": ints(1, 1, 1000), "--threads": ints(0, 1, 1024),
                     "--peak-n": ints(1, 32, 1 << 15), "--device": DEVICE}),
    "convert-checkpoint": (["convert-checkpoint", ("FILE", "random_pt"), ("NEW", "c.safetensors"),
                            "--trust-pickle"],
                           {0: ANY_FILE, 1: OUT_FILE}),
    "bench simulate": (["bench", "simulate", "--quick"],
                       {name: bad_ints(1, cap) for name, cap in (
                           ("--neurons", 1 << 16), ("--layers", 64), ("--steps", 1 << 20),
                           ("--astrocytes", 1024), ("--d-key", 1024), ("--inputs", 1 << 16),
                           ("--batch", 4096), ("--repeats", 1000))}
                       | {"--kind": st.sampled_from(["lava", "", "LIF"])}),
}
EXAMPLES = {"train": 20, "compare": 8, "memory-tasks": 12, "demo": 10, "quantize": 14,
            "bench simulate": 10}


def _fill(value, fx, new_dir):
    if isinstance(value, tuple):
        kind, name = value
        return fx[name] if kind == "FILE" else os.path.join(new_dir, name)
    return value


def _argv(command, changes, fx, new_dir):
    base, _ = SPECS[command]
    argv = [_fill(a, fx, new_dir) for a in base]
    n_words = len(command.split())
    for key, value in changes:
        value = _fill(value, fx, new_dir)
        if key is None:
            argv.append(value)
        elif isinstance(key, int):                       # positional: replace in place
            argv[n_words + key] = value
        elif key in argv:
            argv[argv.index(key) + 1] = value
        else:
            argv += [key, value]
    return argv


def run_cli(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def check(argv, rc, out, err):
    where = f"argv={argv!r}\nrc={rc}\nstdout={out[-2000:]}\nstderr={err[-2000:]}"
    assert "Traceback" not in out + err, where
    assert rc in (0, 2), where
    if rc == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), where
    else:
        assert not re.search(r"\bnan\b", out, re.IGNORECASE), where


_counter = iter(range(10**9))


@pytest.mark.parametrize("command", sorted(SPECS))
def test_cli_fuzz(command, fx):
    _, options = SPECS[command]
    change = st.sampled_from(sorted(options, key=str)).flatmap(
        lambda k: options[k].map(lambda v: (k, v)))

    # CLI_FUZZ_SCALE=10: ten times the examples, with a random seed (a longer hunt).
    scale = float(os.environ.get("CLI_FUZZ_SCALE", "1"))

    @settings(max_examples=int(EXAMPLES.get(command, 25) * scale), deadline=None,
              derandomize=scale == 1,
              database=None, suppress_health_check=list(HealthCheck))
    @given(changes=st.lists(change, min_size=1, max_size=3))
    def fuzz(changes):
        new_dir = os.path.join(fx["dir"], "runs", str(next(_counter)))
        argv = _argv(command, changes, fx, new_dir)
        torch.set_num_threads(1)
        rc, out, err = run_cli(argv)
        if os.environ.get("FUZZ_LOG"):           # to see the mix of outcomes
            with open(os.environ["FUZZ_LOG"], "a") as fh:
                fh.write(f"{command}\t{rc}\t{argv}\t{err.strip()[:150]}\n")
        check(argv, rc, out, err)

    fuzz()
