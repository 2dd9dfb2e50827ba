"""``astro-neuron memory-neuron`` (docs/memory.md): bad arguments end as one ``error:``
line with status 2 before anything trains; a tiny run writes its table, JSON and plot,
chooses a learning rate on the validation batch at each delay (or only the first), and
a rerun resumes without retraining, also from the format before the per-delay sweep."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from astro_neuron.apps.cli import main
from astro_neuron.apps.tasks.neuron_memory import run_neuron_memory

TINY = ["--models", "lif", "--delays", "5", "--seeds", "0", "--steps", "2", "--n-eval", "8",
        "--batch-size", "2", "--neurons", "8", "--no-progress"]


@pytest.mark.parametrize("argv, message", [
    (["--delays", "x"], "expected an integer, got 'x'"),
    (["--delays", "-1"], "--delays must be an integer in [0, 100000]"),
    (["--seeds", "0", "-3"], "--seeds must be an integer in [0, "),
    (["--lrs", "0"], "--lrs must be a finite number in (0, 10]"),
    (["--lrs", "nan"], "--lrs must be a finite number"),
    (["--steps", "0"], "--steps must be an integer in [1, "),
    (["--items", "0"], "--items must be an integer in [1, 8]"),
    (["--p-distract", "1.5"], "--p-distract must be a finite number in [0, 1]"),
    (["--jobs", "0"], "--jobs must be an integer in [1, 64]"),
    (["--neurons", "6"], "--neurons must be a multiple of 4, got 6"),
    (["--models", "amsu,gru"], "--models: unknown ['gru']"),
    (["--models", ","], "--models: unknown"),
    (["--sweep-at", "last"], "invalid choice: 'last'"),
    (["--tie-margin", "2"], "--tie-margin must be a finite number in [0, 1]"),
    (["--models", "lif", "--lr-from", "lif"], "--lr-from: 'lif' must be MODEL=OTHER"),
    (["--models", "lif", "--lr-from", "alif=lif"], "--lr-from: 'alif=lif' must be"),
    (["--models", "lif", "--lr-from", "lif=lif"], "--lr-from: 'lif=lif' must be"),
])
def test_bad_arguments(argv, message, capsys, tmp_path):
    assert main(["memory-neuron", "--quick", "--out", str(tmp_path / "o"), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not (tmp_path / "o" / "results.json").exists()


def test_out_is_a_file(tmp_path, capsys):
    f = tmp_path / "f"
    f.write_text("x")
    assert main(["memory-neuron", *TINY, "--out", str(f)]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err


def test_library_errors(tmp_path):
    with pytest.raises(ValueError, match="models must be some of"):
        run_neuron_memory(models=["gru"], out_dir=tmp_path)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        run_neuron_memory(models=["lif"], steps=0, out_dir=tmp_path)
    with pytest.raises(ValueError, match="give at least one learning rate"):
        run_neuron_memory(models=["lif"], lrs=[], out_dir=tmp_path)
    with pytest.raises(ValueError, match="sweep_at must be one of"):
        run_neuron_memory(models=["lif"], sweep_at="last", out_dir=tmp_path)
    with pytest.raises(ValueError, match="tie_margin must be a finite number in"):
        run_neuron_memory(models=["lif"], tie_margin=-0.1, out_dir=tmp_path)
    with pytest.raises(ValueError, match="lr_from: 'lif': 'gru' must map"):
        run_neuron_memory(models=["lif"], lr_from={"lif": "gru"}, out_dir=tmp_path)
    assert not (tmp_path / "results.json").exists()


def test_tiny_run_sweeps_writes_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["memory-neuron", *TINY, "--delays", "5", "7", "--lrs", "1e-3", "1e-2",
            "--seeds", "0", "1", "--out", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    res = json.loads((out / "results.json").read_text())
    assert res["settings"]["sweep_at"] == "each"
    assert set(res["runs"]) == {f"lif/{d}/0/{lr}" for d in (5, 7) for lr in (0.001, 0.01)} | {
        f"lif/{d}/1/{res['lr']['lif'][str(d)]}" for d in (5, 7)}
    for d in ("5", "7"):                       # a sweep at each delay, on validation
        assert set(res["lr_sweep"]["lif"][d]) == {"0.001", "0.01"}
        assert res["lr"]["lif"][d] in (1e-3, 1e-2)
        sweep_run = res["runs"][f"lif/{d}/0/{res['lr']['lif'][d]}"]
        assert res["cells"][f"lif/{d}/0"] == sweep_run and "val_accuracy" in sweep_run
        assert res["cells"][f"lif/{d}/1"]["lr"] == res["lr"]["lif"][d]
        assert 0 <= res["table"][f"lif/{d}"]["mean"] <= 1 and res["table"][f"lif/{d}"]["n_seeds"] == 2
    assert "LIF" in text and "chance 25%" in text and "learning-rate sweep" in text
    assert (out / "neuron_memory.png").stat().st_size > 10_000
    # a rerun with the same settings trains nothing new
    assert main(argv) == 0
    assert "resuming" in capsys.readouterr().out
    again = json.loads((out / "results.json").read_text())
    assert again["runs"] == res["runs"] and again["cells"] == res["cells"]


def _fake_cell(calls, val):
    """A stand-in for one training run: records its arguments, validation accuracy
    ``val[(delay, lr)]``, test accuracy by seed."""
    def cell(model, delay, seed, lr, steps, batch, n_eval, n_neurons, p_distract, n_items,
             progress=False, validate=False):
        calls.append((model, delay, seed, lr, validate))
        out = {"lr": lr, "train_s": 0.0, "final_loss": 1.0, "accuracy": 0.5 + seed / 100,
               "trial_accuracy": 0.25}
        if validate:
            out["val_accuracy"], out["val_trial_accuracy"] = val[(delay, lr)], 0.0
        return out
    return cell


# validation accuracy per (delay, rate): at delay 5 the best is 1e-2 (1e-3 is 2 points
# below, not tied); at delay 9, 3e-2 is best but 1e-2 is within the 1-point margin
VAL = {(5, 1e-3): 0.90, (5, 1e-2): 0.92, (5, 3e-2): 0.60,
       (9, 1e-3): 0.30, (9, 1e-2): 0.795, (9, 3e-2): 0.80}
KW = dict(models=["lif"], delays=[9, 5], seeds=[0, 1, 2], lrs=[1e-3, 1e-2, 3e-2], steps=2,
          batch_size=2, n_eval=8, n_neurons=8, progress=False)


def test_sweep_per_delay_picks_per_delay_and_resumes(tmp_path, monkeypatch, capsys):
    from astro_neuron.apps.tasks import neuron_memory as nm
    calls: list = []
    monkeypatch.setattr(nm, "_cell", _fake_cell(calls, VAL))
    res = run_neuron_memory(**KW, out_dir=tmp_path)
    assert res["lr"]["lif"] == {"9": 1e-2, "5": 1e-2}          # the tie at 9 went to 1e-2
    assert res["lr_sweep"]["lif"]["9"] == {"0.001": 0.30, "0.01": 0.795, "0.03": 0.80}
    # delays in the order given (9 first), the sweep on seed 0 with validation, then
    # the other seeds at that delay's rate without it; nothing trained twice
    assert calls == [("lif", 9, 0, lr, True) for lr in (1e-3, 1e-2, 3e-2)] + [
        ("lif", 9, s, 1e-2, False) for s in (1, 2)] + [
        ("lif", 5, 0, lr, True) for lr in (1e-3, 1e-2, 3e-2)] + [
        ("lif", 5, s, 1e-2, False) for s in (1, 2)]
    assert res["table"]["lif/9"]["accuracies"] == [0.5, 0.51, 0.52]
    assert res["delays"] == [5, 9]
    # with no margin the best rate wins the tie at 9
    res0 = run_neuron_memory(**KW, out_dir=tmp_path / "m0", tie_margin=0.0)
    assert res0["lr"]["lif"] == {"9": 3e-2, "5": 1e-2}
    # the rerun trains nothing; a wider margin re-chooses from the stored sweep (1e-3
    # ties at delay 5) and trains only the two missing cells
    n = len(calls)
    assert run_neuron_memory(**KW, out_dir=tmp_path)["cells"] == res["cells"]
    assert len(calls) == n
    wide = run_neuron_memory(**KW, out_dir=tmp_path, tie_margin=0.05)
    assert wide["lr"]["lif"] == {"9": 1e-2, "5": 1e-3}
    assert calls[n:] == [("lif", 5, s, 1e-3, False) for s in (1, 2)]
    # one sweep at the shortest delay: its rate at every delay, no sweep at 9
    n = len(calls)
    first = run_neuron_memory(**KW, out_dir=tmp_path / "first", sweep_at="first")
    assert first["lr"]["lif"] == {"9": 1e-2, "5": 1e-2} and set(first["lr_sweep"]["lif"]) == {"5"}
    assert calls[n:] == [("lif", 5, 0, lr, True) for lr in (1e-3, 1e-2, 3e-2)] + [
        ("lif", 9, s, 1e-2, False) for s in (0, 1, 2)] + [("lif", 5, s, 1e-2, False) for s in (1, 2)]


def test_lr_from_another_model_and_table_only(tmp_path, monkeypatch, capsys):
    """A model with ``lr_from`` has no sweep: it uses the other model's rate at each
    delay, whose sweep runs are trained even when that model is not in the run;
    ``train=False`` tabulates what is there and trains nothing."""
    from astro_neuron.apps.tasks import neuron_memory as nm
    calls: list = []
    monkeypatch.setattr(nm, "_cell", _fake_cell(calls, VAL))
    kw = {**KW, "delays": [5], "seeds": [0, 1]}
    res = run_neuron_memory(**{**kw, "models": ["alif"]}, lr_from={"alif": "lif"},
                            out_dir=tmp_path)
    assert calls == [("lif", 5, 0, lr, True) for lr in (1e-3, 1e-2, 3e-2)] + [
        ("alif", 5, s, 1e-2, False) for s in (0, 1)]
    assert res["lr"]["alif"] == {"5": 1e-2} and res["lr_sweep"]["alif"] == {}
    assert res["table"]["alif/5"]["n_seeds"] == 2
    n = len(calls)
    both = run_neuron_memory(**{**kw, "models": ["lif", "alif"]}, lr_from={"alif": "lif"},
                             out_dir=tmp_path, train=False)
    assert len(calls) == n                        # lif seed 1 is missing, not trained
    assert both["table"]["lif/5"]["n_seeds"] == 1 and both["table"]["alif/5"]["n_seeds"] == 2
    text = capsys.readouterr().out
    assert "(1 seed)" in text and "table only, nothing trained" in text and both["wall_s"] is None
    assert (tmp_path / "neuron_memory.png").exists()


def test_resume_refuses_other_settings_and_bad_json(tmp_path, monkeypatch):
    from astro_neuron.apps.tasks import neuron_memory as nm
    monkeypatch.setattr(nm, "_cell", _fake_cell([], VAL))
    run_neuron_memory(**KW, out_dir=tmp_path)
    before = (tmp_path / "results.json").read_text()
    with pytest.raises(ValueError, match=r"other settings .*'steps': \(2, 3\)"):
        run_neuron_memory(**{**KW, "steps": 3}, out_dir=tmp_path)
    assert (tmp_path / "results.json").read_text() == before      # nothing overwritten
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot be read as JSON"):
        run_neuron_memory(**KW, out_dir=tmp_path)


def test_imports_the_format_before_the_per_delay_sweep(tmp_path, monkeypatch, capsys):
    """A results.json of the delay-100-only sweep (lr_sweep keyed model/lr, cells keyed
    model/delay/seed) seeds the runs: matching runs are not trained again; a sweep run
    with no validation accuracy is."""
    from astro_neuron.apps.tasks import neuron_memory as nm
    calls: list = []
    monkeypatch.setattr(nm, "_cell", _fake_cell(calls, VAL))
    def run(lr, seed, val=None):
        r = {"lr": lr, "train_s": 1.0, "final_loss": 1.0, "accuracy": 0.7, "trial_accuracy": 0.5}
        return r if val is None else {**r, "val_accuracy": val, "val_trial_accuracy": 0.5}
    old = {"settings": {"steps": 2, "batch_size": 2, "lrs": [1e-3, 1e-2, 3e-2], "n_eval": 8,
                        "n_neurons": 8, "p_distract": 0.2, "n_items": 2},
           "delays": [5, 9], "seeds": [0, 1, 2],
           "lr_sweep": {f"lif/{lr}": run(lr, 0, VAL[(5, lr)]) for lr in (1e-3, 1e-2, 3e-2)},
           "cells": {"lif/5/0": {**run(1e-2, 0, 0.92), "from_sweep": True},
                     "lif/5/1": run(1e-2, 1), "lif/5/2": run(1e-2, 2),
                     "lif/9/0": run(1e-2, 0), "lif/9/1": run(1e-2, 1), "lif/9/2": run(1e-2, 2)}}
    (tmp_path / "results.json").write_text(json.dumps(old))
    res = run_neuron_memory(**KW, out_dir=tmp_path)
    assert "imported from the format before the per-delay sweep" in capsys.readouterr().out
    # delay 9 needs its own sweep (the old cell at 1e-2 has no validation: retrained);
    # its chosen rate, 1e-2, reuses the old seeds 1 and 2; delay 5: nothing trained
    assert calls == [("lif", 9, 0, lr, True) for lr in (1e-3, 1e-2, 3e-2)]
    assert res["table"]["lif/5"]["accuracies"] == [0.7, 0.7, 0.7]
    assert res["table"]["lif/9"]["accuracies"] == [0.5, 0.7, 0.7]


@pytest.mark.slow          # starting a worker process imports torch again (10-40 s on 2 cores)
def test_worker_processes(tmp_path):
    res = run_neuron_memory(models=["lif", "alif"], delays=[3], seeds=[0], steps=1,
                            batch_size=2, n_eval=4, n_neurons=8, jobs=2, out_dir=tmp_path,
                            progress=False)
    assert set(res["cells"]) == {"lif/3/0", "alif/3/0"}
    assert Path(tmp_path / "neuron_memory.png").exists()
