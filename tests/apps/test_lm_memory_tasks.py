"""The memory-task runner (docs/memory.md): checks its input, saves every run as it
finishes and resumes from those files, writes the table (JSON, text, plot)."""

from __future__ import annotations

import json

import pytest
import torch

from astro_neuron.apps.tasks import lm_memory
from astro_neuron.apps.tasks.lm_memory import resolve_models, run_memory_tasks


def _quick(tmp_path, **kw):
    args = dict(table="capacity", sizes=(2,), models=("AM-SNet", "Transformer"),
                lrs=(1e-3, 1e-2), seeds=2, quick=True, out_dir=tmp_path, progress=False,
                lengths=(32,))
    args.update(kw)
    return run_memory_tasks(**args)


@pytest.mark.parametrize("lr", [0, -1e-3, float("nan"), True])
def test_memory_tasks_rejects_bad_lr(lr, tmp_path):
    with pytest.raises(ValueError, match="lr must be"):
        _quick(tmp_path, lrs=(lr,))


@pytest.mark.parametrize("kw,match", [
    ({"table": "lm"}, "table"), ({"noise": "pink"}, "noise"), ({"seeds": 0}, "seeds"),
    ({"models": ("GPT",)}, "unknown model"), ({"models": ("X={bad",)}, "JSON"),
    ({"models": ('X={"tau_astro": -1}',)}, "tau_astro"), ({"lrs": ()}, "at least one"),
    ({"sizes": (20,)}, "too short"), ({"examples": 0}, "examples"),
    ({"mix_lengths": (32,)}, "not shorter"), ({"mix_lengths": (0,)}, "mix_lengths"),
    ({"mix_lengths": (4,)}, "too short"),
    ({"warmup": 1.0}, "warmup"), ({"warmup": -0.1}, "warmup"), ({"warmup": float("nan")}, "warmup"),
    ({"train_length": 64}, "longer than"), ({"train_length": 0}, "train_length"),
    ({"train_length": 16, "mix_lengths": (16,)}, "not shorter"),
    ({"train_length": 6}, "too short"),
])
def test_memory_tasks_rejects_bad_settings(kw, match, tmp_path):
    with pytest.raises((ValueError, TypeError), match=match):
        _quick(tmp_path, **kw)
    assert not list(tmp_path.iterdir())          # refused before any training


def test_sweep_seeds_files_and_resume(tmp_path, monkeypatch):
    res = _quick(tmp_path)
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    # per model: 2 rates at seed 0, then seed 1 at the better one
    assert len(runs) == 6 and len(res["runs"]) == 6
    for s in res["summary"]:
        assert len(s["accuracy"]) == 2 and set(s["sweep"]) == {"0.001", "0.01"}
        assert s["sweep"][f"{s['best_lr']:g}"] == max(s["sweep"].values())
        assert s["min"] <= s["mean"] <= s["max"] and s["chance"] == pytest.approx(1 / 64)
    saved = json.loads((tmp_path / "memory_capacity.json").read_text())
    assert saved["summary"] == res["summary"]
    assert (tmp_path / "memory_capacity.png").stat().st_size > 10_000
    assert "Transformer" in (tmp_path / "memory_capacity.txt").read_text()

    # resume: nothing is trained again, the same table comes back
    def no_training(*a, **k):
        raise AssertionError("a finished run was trained again")
    monkeypatch.setattr(lm_memory, "train_task", no_training)
    again = _quick(tmp_path)
    assert again["summary"] == res["summary"]
    # a changed setting is not taken from the old files
    with pytest.raises(AssertionError, match="trained again"):
        _quick(tmp_path, examples=32)


# quick: 64 sequences of 16 = 4 steps a run, so a warm-up share of 0.25 is 1 step
@pytest.mark.parametrize("option, value, saved, passed, off", [
    ("warmup", 0.25, 0.25, ("warmup_steps", 1), 0),
    ("mix_lengths", (16,), [16], ("mix_lengths", [16]), []),
])
def test_training_options_reach_training_and_the_resume_key(tmp_path, monkeypatch, option,
                                                             value, saved, passed, off):
    seen = []
    real = lm_memory.train_task

    def spy(*a, **k):
        seen.append(k[passed[0]])
        return real(*a, **k)
    monkeypatch.setattr(lm_memory, "train_task", spy)
    one = dict(models=("Transformer",), lrs=(1e-3,), seeds=1)
    res = _quick(tmp_path, **one, **{option: value})
    assert seen == [passed[1]] and res["settings"][option] == saved
    run = json.loads(next((tmp_path / "runs").iterdir()).read_text())
    assert run["settings"][option] == saved
    _quick(tmp_path, **one, **{option: value})
    assert seen == [passed[1]]                       # resumed, not trained again
    _quick(tmp_path, **one)
    assert seen == [passed[1], off]                  # without the option: a different run


def test_train_length_trains_short_and_scores_at_the_cell_length(tmp_path, monkeypatch):
    trained, scored = [], []
    real_train, real_acc = lm_memory.train_task, lm_memory.task_accuracy

    def train(model, task, seq_len, *a, **k):
        trained.append(seq_len)
        return real_train(model, task, seq_len, *a, **k)

    def acc(model, x, y):
        scored.append(x.shape[1])
        return real_acc(model, x, y)
    monkeypatch.setattr(lm_memory, "train_task", train)
    monkeypatch.setattr(lm_memory, "task_accuracy", acc)
    one = dict(models=("AM-SNet", "Transformer"), lrs=(1e-3,), seeds=1)
    res = _quick(tmp_path, **one, train_length=16)
    assert trained == [16, 16] and scored == [32, 32]
    assert all(r["seq_len"] == 32 and r["settings"]["train_length"] == 16 for r in res["runs"])
    _quick(tmp_path, **one, train_length=16)
    assert trained == [16, 16]                       # resumed, not trained again
    _quick(tmp_path, **one)
    assert trained == [16, 16, 32, 32]               # without it: other runs


def test_resolve_models_variants():
    m = resolve_models(["AM-SNet", 'long tau={"tau_astro": [64, 4096]}'])
    assert m == {"AM-SNet": {}, "long tau": {"tau_astro": [64, 4096]}}
    with pytest.raises(ValueError, match="JSON object"):
        resolve_models(["x=[1]"])


def test_combine_tables(tmp_path):
    a = _quick(tmp_path / "a", lengths=(32,), sizes=(2,), models=("Transformer",), lrs=(1e-3,),
               seeds=1)
    b = _quick(tmp_path / "b", table="copy", lengths=(32,), sizes=(4,),
               models=("Transformer",), lrs=(1e-3,), seeds=1)
    out = tmp_path / "both.png"
    got = lm_memory.combine_tables([tmp_path / "a" / "memory_capacity.json",
                                    tmp_path / "b" / "memory_copy.json"], out)
    assert got == a["summary"] + b["summary"] and out.stat().st_size > 10_000
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(ValueError, match="not a memory-tasks table"):
        lm_memory.combine_tables([tmp_path / "x.json"], out)


def test_device_cuda_refused_without_cuda(tmp_path, monkeypatch):
    monkeypatch.setattr(lm_memory.torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="sees no CUDA GPU here"):
        _quick(tmp_path, device="cuda")
    assert not list(tmp_path.iterdir())


def _cell_settings(examples):
    return {"examples": examples, "batch_size": 4, "d_model": 16, "n_layer": 1,
            "n_head": 1, "n_eval": 8, "query_dist": "uniform", "warmup": 0.0,
            "mix_lengths": [], "train_length": None}


def test_run_cell_time_limit_marks_the_run_and_never_resumes_it(tmp_path, monkeypatch):
    """A run cut by its time limit records what it saw, and a later call trains it again
    (a cut run is not a finished one); a finished run is read back without training."""
    clock = iter(range(0, 10_000, 7))           # every perf_counter call: 7 s later
    monkeypatch.setattr(lm_memory.time, "perf_counter", lambda: float(next(clock)))
    import astro_neuron.lm.tasks as tasks
    monkeypatch.setattr(tasks.time, "perf_counter", lambda: float(next(clock)))
    r = lm_memory.run_cell("mqar", 32, 2, "random", "AM-SNet", {}, 1e-3, 0,
                           _cell_settings(400), tmp_path, time_limit=20.0)
    assert r["stopped_early"] and 4 <= r["examples_trained"] < 400
    saved = json.loads(next(tmp_path.iterdir()).read_text())
    assert saved["examples_trained"] == r["examples_trained"]
    monkeypatch.setattr(tasks.time, "perf_counter", __import__("time").perf_counter)
    monkeypatch.setattr(lm_memory.time, "perf_counter", __import__("time").perf_counter)
    r2 = lm_memory.run_cell("mqar", 32, 2, "random", "AM-SNet", {}, 1e-3, 0,
                            _cell_settings(400), tmp_path)
    assert "stopped_early" not in r2                          # trained again, in full
    trained = []
    monkeypatch.setattr(lm_memory, "train_task", lambda *a, **k: trained.append(1))
    r3 = lm_memory.run_cell("mqar", 32, 2, "random", "AM-SNet", {}, 1e-3, 0,
                            _cell_settings(400), tmp_path)
    assert not trained and r3 == r2                           # finished: read back


def test_run_cell_trains_and_scores_the_model_build_returns(tmp_path):
    """``build`` replaces the AM-SNet of ``overrides``: the runner trains and scores the
    model it returns (called once, after seeding) and saves the run under its name."""
    from astro_neuron.lm.config import AMSNetConfig
    from astro_neuron.lm.model import build_model
    built = []

    def build():
        m = build_model(AMSNetConfig(vocab_size=256, block_size=32, n_layer=1, n_head=1,
                                     d_model=16, arch="transformer"))
        built.append(m)
        return m

    r = lm_memory.run_cell("mqar", 32, 2, "random", "stand-in", {"probe": "x"}, 1e-3, 0,
                           _cell_settings(32), tmp_path, build=build)
    assert len(built) == 1 and r["model"] == "stand-in" and r["overrides"] == {"probe": "x"}
    assert 0.0 <= r["accuracy"] <= 1.0 and "stopped_early" not in r
    torch.manual_seed(0)                                   # the same init, untrained
    fresh = build()
    moved = [not torch.equal(a, b) for a, b in zip(built[0].parameters(), fresh.parameters())]
    assert any(moved)                                      # the built model was trained
    assert json.loads(next(tmp_path.iterdir()).read_text())["model"] == "stand-in"
