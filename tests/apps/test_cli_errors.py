"""The command-line cases of issue 10 ("tracebacks instead of one line", "nonsense
accepted"): each ends with one ``error:`` line and exit status 2, before any training
or allocation; ``--debug`` still shows the traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from astro_neuron.apps.cli import main
from astro_neuron.apps.cli.args import check_fits, check_writable_dir, check_writable_file


@pytest.fixture
def files(tmp_path):
    regular = tmp_path / "regular.pt"
    regular.write_bytes(b"not a checkpoint")
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "a.toml").write_text("[model]\n")
    return {"file": str(regular), "folder": str(folder), "tmp": str(tmp_path)}


CASES = [
    # issue 10, item 4: tracebacks
    (["train", "--out", "{file}/run", "train.max_steps=1"], "is a file, not a folder"),
    (["train", "--out", "{file}", "train.max_steps=1"], "exists and is not a folder"),
    (["eval", "{file}", "--device", "bogus"], "device must be cpu, cuda"),
    (["generate", "{file}", "--device", "bogus"], "device must be cpu, cuda"),
    (["bench", "generate", "--tokens", "0"], "--tokens must be an integer in [1, "),
    (["bench", "generate", "--threads", "0"], "--threads must be an integer in [1, "),
    (["bench", "train", "--threads", "-1"], "--threads must be an integer in [0, "),
    (["bench", "train", "--lengths", "0"], "--lengths must be an integer in [1, "),
    (["convert-checkpoint", "{tmp}/none.pt", "{tmp}/new.safetensors"], "not found"),
    (["bench", "scan", "--lengths", "0"], "--lengths must be an integer in [1, "),
    (["bench", "scan", "--lengths", "-5"], "--lengths must be an integer in [1, "),
    (["generate", "{file}", "--temperature", "1e-45"], "--temperature must be 0 (greedy) or in"),
    (["generate", "{file}", "--temperature", "nan"], "--temperature must be a finite number"),
    # chat shares generate's sampling options (it took 1e-45 and failed inside sampling)
    (["chat", "{file}", "--temperature", "1e-45"], "--temperature must be 0 (greedy) or in"),
    (["chat", "{file}", "--max-new-tokens", "0"], "--max-new-tokens must be an integer in [1, "),
    (["train", "--config", "{folder}"], "is a folder; give a TOML file or a built-in name"),
    (["train", "--config", "{file}"], "is not valid TOML"),
    (["train", "--config", "{tmp}/none.toml"], "config file not found"),
    # issue 10, item 5: nonsense accepted
    (["eval", "{file}", "--batch-size", "-1"], "--batch-size must be an integer in [1, "),
    (["memory-tasks", "--batch-size", "0", "--quick"], "--batch-size must be an integer"),
    (["train", "train.lr=0.1", "train.min_lr=1", "--out", "{tmp}/o"],
     "train.min_lr (1) must not exceed train.lr (0.1)"),
    (["compare", "model.arch=transformer", "--out", "{tmp}/c"],
     "remove model.arch='transformer'"),
    (["train", "--config", "tiny", "model.block_size=10000000", "--out", "{tmp}/o",
      "--device", "cpu"], "needs about"),
    # others found by trying each sub-command
    (["bench", "generate", "--repeats", "0"], "--repeats must be"),
    (["bench", "scan", "--threads", "-1"], "--threads must be"),
    (["generate", "{file}", "--seed", "-1"], "--seed must be an integer in [0, "),
    (["generate", "{file}", "--seed", "99999999999999999999999"], "--seed must be"),
    (["simulate", "{file}", "--samples", "100000000"], "--samples must be an integer"),
    (["bench", "simulate", "--neurons", "100000000"], "--neurons must be an integer"),
    (["simulate", "{file}", "--save", "{file}/x.npz"], "is not a folder"),
    (["quantize", "{file}", "--out", "{file}/q.h5"], "is not a folder"),
    (["record", "{file}", "--out", "{tmp}/r.png"], "must name a .npz file"),
    (["plot", "{folder}"], "is a folder, not a file"),
    (["plot", "{file}", "--out", "{file}"], "exists and is not a folder"),
    (["demo", "--out", "{file}"], "exists and is not a folder"),
    (["export", "{file}", "--to", "json", "--out", "{folder}"], "is a folder, not a file"),
    (["eval", "{file}", "--tokens", "abc"], "expected an integer, got 'abc'"),
    (["memory-tasks", "--lengths", "64,x"], "expected an integer, got 'x'"),
    (["memory-tasks", "--lrs", "inf"], "--lrs must be a finite number"),
]


@pytest.mark.parametrize("argv, match", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_one_error_line(files, capsys, argv, match):
    argv = [a.format(**files) for a in argv]
    assert main(argv) == 2
    cap = capsys.readouterr()
    lines = cap.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), cap.err
    assert match in lines[0]
    assert "Traceback" not in cap.err + cap.out
    assert not (Path(files["tmp"]) / "o" / "ckpt.pt").exists()     # nothing trained


def test_debug_shows_the_traceback(files):
    with pytest.raises(ValueError, match="must not exceed"):
        main(["--debug", "train", "train.lr=0.1", "train.min_lr=1", "--out", files["tmp"]])


def test_library_checks_behind_the_cli():
    from astro_neuron.apps.compare import compare
    from astro_neuron.apps.tasks.lm_memory import run_memory_tasks
    from astro_neuron.lm.train import RunConfig, TrainConfig, load_run_config

    with pytest.raises(ValueError, match="min_lr"):
        TrainConfig(lr=1e-3, min_lr=1e-2)
    with pytest.raises(ValueError, match="beta2"):
        TrainConfig(beta2=1.0)
    with pytest.raises(ValueError, match="batch_size"):
        run_memory_tasks("mqar", [64], models=["AM-SNet"], batch_size=0, quick=True)
    run = RunConfig.from_dict({"model": {"arch": "transformer"}})
    with pytest.raises(ValueError, match="AM-SNet config"):
        compare(run, "unused", ["AM-SNet"])
    with pytest.raises(IsADirectoryError):
        load_run_config(".")


def test_path_and_memory_checks(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    assert check_writable_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    with pytest.raises(ValueError, match="is a file, not a folder"):
        check_writable_dir(f / "sub" / "deeper")
    with pytest.raises(ValueError, match="is a folder, not a file"):
        check_writable_file(tmp_path)
    check_fits("small", 1024)
    with pytest.raises(ValueError, match=r"needs about 1\.0 PiB"):
        check_fits("huge", 2.0**50)
