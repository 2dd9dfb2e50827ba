"""Byte tokenizer, the built-in corpus, enwik8 / WikiText-103 loaders, batches."""

from __future__ import annotations

import pytest
import torch

from astro_neuron.lm import data as D


def test_tokenizer_round_trip():
    text = "def f(x):\n    return 'héllo ✓'\n"
    ids = D.encode(text)
    assert ids.dtype == torch.int64 and ids.max() < 256
    assert len(ids) == len(text.encode()) and D.decode(ids) == text
    assert D.decode([0xFF, 0x41]) == "\ufffdA"                     # invalid bytes replaced
    with pytest.raises(TypeError):
        D.encode(b"bytes")


def test_stdlib_corpus_is_deterministic_and_excludes_tests(tmp_path):
    c = D.stdlib_corpus()
    assert c.info["files"] > 300 and c.info["bytes"] > 5_000_000
    n = c.info["bytes"]
    assert 0.85 < c.train.numel() / n < 0.95 and c.val.numel() > 0 and c.test.numel() > 0
    assert "sha256" in c.info and "stdlib" in c.describe()
    files = D._stdlib_files(__import__("pathlib").Path(c.info["root"]))
    rels = [p.relative_to(c.info["root"]).as_posix() for p in files]
    assert rels == sorted(rels)
    assert not any(part in ("test", "tests", "idle_test", "site-packages")
                   for r in rels for part in r.split("/"))
    assert not any(r.split("/")[-1].startswith("test_") for r in rels)
    # the same files give the same split and hash (a fake stdlib folder, no cache)
    for name, body in (("a.py", "x = 1\n"), ("b.py", "y = 2\n"), ("tests/t.py", "no\n")):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(body)
    c1, c2 = D.stdlib_corpus(str(tmp_path)), D.stdlib_corpus.__wrapped__(str(tmp_path))
    assert c1.info["files"] == 2 and c1.info["sha256"] == c2.info["sha256"]
    assert b"no" not in bytes(torch.cat([c1.train, c1.val, c1.test]).tolist())


def test_enwik8_standard_split(tmp_path):
    f = tmp_path / "enwik8"
    with open(f, "wb") as fh:                      # sparse 100 MB file with markers
        fh.truncate(D.ENWIK8_BYTES)
        for off, b in ((0, b"A"), (89_999_999, b"B"), (90_000_000, b"C"),
                       (95_000_000, b"D"), (99_999_999, b"E")):
            fh.seek(off)
            fh.write(b)
    c = D.load_enwik8(f)
    assert (c.train.numel(), c.val.numel(), c.test.numel()) == (90_000_000, 5_000_000,
                                                                5_000_000)
    assert (c.train[0], c.train[-1], c.val[0], c.test[0], c.test[-1]) == tuple(map(ord, "ABCDE"))
    small = tmp_path / "small"
    small.write_bytes(b"x" * 1000)
    with pytest.raises(ValueError, match="100,000,000"):
        D.load_enwik8(small)
    with pytest.raises(FileNotFoundError):
        D.load_enwik8(tmp_path / "missing")


def test_wikitext103_raw_files(tmp_path):
    for name, body in (("wiki.train.raw", " = A = \n text\n"), ("wiki.valid.raw", " v \n"),
                       ("wiki.test.raw", " t \n")):
        (tmp_path / name).write_text(body)
    c = D.load_corpus("wikitext103", str(tmp_path))
    assert D.decode(c.train) == " = A = \n text\n" and D.decode(c.test) == " t \n"
    (tmp_path / "wiki.test.raw").unlink()
    with pytest.raises(FileNotFoundError, match="wiki.test.raw"):
        D.load_wikitext103(tmp_path)
    with pytest.raises(ValueError, match="needs a path"):
        D.load_corpus("enwik8")
    with pytest.raises(ValueError, match="corpus must be one of"):
        D.load_corpus("imagenet")


def test_batches_are_a_function_of_step_and_split_across_ranks():
    data = torch.arange(1000, dtype=torch.int64) % 256
    x, y = D.batch_for_step(data, 7, 0, 8, 16)
    x2, _ = D.batch_for_step(data, 7, 0, 8, 16)
    assert torch.equal(x, x2) and x.shape == (8, 16) and torch.equal(x[:, 1:], y[:, :-1])
    assert not torch.equal(x, D.batch_for_step(data, 8, 0, 8, 16)[0])
    parts = [D.batch_for_step(data, 7, 0, 8, 16, rank=r, world_size=2)[0] for r in range(2)]
    assert torch.equal(torch.cat(parts), x)
    with pytest.raises(ValueError, match="divisible"):
        D.batch_for_step(data, 0, 0, 7, 16, world_size=2)
    with pytest.raises(ValueError, match="fewer than"):
        D.batch_for_step(data[:10], 0, 0, 2, 16)


def test_eval_windows_cover_split_in_order():
    data = torch.arange(101) % 256
    x, y = D.eval_windows(data, 10)
    assert x.shape == (10, 10) and torch.equal(x.flatten(), data[:100])
    assert torch.equal(y.flatten(), data[1:101])
    assert D.eval_windows(data, 10, max_tokens=30)[0].shape == (3, 10)
