"""The chat template, the assistant-only loss mask, JSONL files, the built-in
questions and the chat session on the recurrent state."""

import json

import pytest
import torch

from astro_neuron.lm import AMSNetConfig, build_model
from astro_neuron.lm.config import transformer_twin
from astro_neuron.lm.chat import (
    END_OF_TURN, IGNORE, ChatDataError, ChatSession, _builtin, batch_for_step,
    check_dialogue, collate, encode_dialogue, load_jsonl, prompt_text, render, save_jsonl,
)
from astro_neuron.lm.data import decode, encode

CONV = [{"role": "user", "content": "What does `a.b` do?"},
        {"role": "assistant", "content": "Return the b of a."},
        {"role": "user", "content": "And héllo?"},
        {"role": "assistant", "content": "Say hello."}]


def test_template_and_mask_cover_exactly_the_assistant_bytes():
    text = render(CONV)
    assert text == ("User: What does `a.b` do?\nAssistant: Return the b of a.\n\n"
                    "User: And héllo?\nAssistant: Say hello.\n\n")
    ids, mask = encode_dialogue(CONV)
    assert torch.equal(ids, encode(text))
    # slow reference: mark the assistant spans by searching the rendered bytes
    want = torch.zeros(len(text.encode()), dtype=torch.bool)
    pos = 0
    raw = text.encode()
    for m in CONV:
        if m["role"] == "assistant":
            span = (m["content"] + END_OF_TURN).encode()
            i = raw.index(b"Assistant: " + span, pos) + len(b"Assistant: ")
            want[i:i + len(span)] = True
            pos = i + len(span)
    assert torch.equal(mask, want)
    assert decode(ids[mask]) == "Return the b of a.\n\nSay hello.\n\n"


def test_collate_targets_match_a_loop_reference():
    convs = [CONV, CONV[:2]]
    x, y = collate(convs, max_len=40)
    for b, c in enumerate(convs):
        ids, mask = encode_dialogue(c, 41)
        for t in range(x.shape[1]):
            if t + 1 < ids.numel():
                assert x[b, t] == ids[t]
                assert y[b, t] == (ids[t + 1] if mask[t + 1] else IGNORE)
            else:
                assert y[b, t] == IGNORE                     # padding is never scored
    assert x.shape[1] == 40                                   # cut at max_len + 1 tokens


def test_batches_depend_on_seed_and_step_only():
    convs = [CONV, CONV[:2], [{"role": "user", "content": "x"},
                              {"role": "assistant", "content": "y z"}]]
    a = batch_for_step(convs, 5, 1, 4, 64)
    b = batch_for_step(list(convs), 5, 1, 4, 64)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    c = [batch_for_step(convs, s, 1, 4, 64)[0].shape for s in range(6)]
    assert len(set(c)) > 1 or not torch.equal(batch_for_step(convs, 6, 1, 4, 64)[0], a[0])


@pytest.mark.parametrize("messages, msg", [
    ([], "no turns"),
    ("hi", "must be a list"),
    ([{"role": "assistant", "content": "x"}], "alternate starting with 'user'"),
    ([{"role": "user", "content": "x"}], "at least one 'assistant'"),
    ([{"role": "user", "content": "x"}, {"role": "bot", "content": "y"}], "role must be"),
    ([{"role": "user", "content": "x"}, {"role": "assistant", "content": ""}], "empty"),
    ([{"role": "user", "content": "x"}, {"role": "assistant", "content": " y"}], "white space"),
    ([{"role": "user", "content": "x"}, {"role": "assistant", "content": "a\n\nb"}],
     "blank line"),
    ([{"role": "user", "content": 3}, {"role": "assistant", "content": "y"}], "string"),
    ([{"role": "user"}, {"role": "assistant", "content": "y"}], "exactly the keys"),
])
def test_bad_conversations_are_refused_with_where(messages, msg):
    with pytest.raises(ChatDataError, match=msg):
        check_dialogue(messages, "here")


def test_jsonl_round_trip_and_errors_name_the_line(tmp_path):
    p = save_jsonl([CONV, CONV[:2]], tmp_path / "d.jsonl")
    assert load_jsonl(p) == [CONV, CONV[:2]]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": CONV}) + "\n\n{oops\n")
    with pytest.raises(ChatDataError, match="line 3: not valid JSON"):
        load_jsonl(bad)
    bad.write_text(json.dumps({"turns": CONV}) + "\n")
    with pytest.raises(ChatDataError, match="line 1: each line must be an object"):
        load_jsonl(bad)
    bad.write_text(json.dumps({"messages": CONV[:1]}) + "\n")
    with pytest.raises(ChatDataError, match="line 1: needs at least one 'assistant'"):
        load_jsonl(bad)
    with pytest.raises(FileNotFoundError):
        load_jsonl(tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ChatDataError, match="no conversations"):
        load_jsonl(tmp_path / "empty.jsonl")


def test_builtin_questions_come_from_docstrings_split_by_file(tmp_path, monkeypatch):
    import astro_neuron.lm.chat as chat
    (tmp_path / "alpha.py").write_text(
        'def join(a, b):\n    """Join two path parts, inserting a slash.\n\n    More."""\n'
        'def _hidden():\n    """Private, skipped entirely."""\n'
        'class Box:\n    """A box that holds things.  Second sentence."""\n'
        '    def open(self):\n        """Open the box now."""\n'
        'def short():\n    """Tiny."""\n')
    (tmp_path / "beta.py").write_text('def run():\n    """Run the whole thing once."""\n')
    monkeypatch.setattr(chat, "_split_of", lambda rel: "train" if rel == "alpha.py" else "val")
    _builtin.cache_clear()
    try:
        d = _builtin(str(tmp_path))
    finally:
        _builtin.cache_clear()
    q = {c[0]["content"]: c[1]["content"] for c in d["train"]}
    assert q == {"What does `alpha.join` do?": "Join two path parts, inserting a slash.",
                 "What does `alpha.Box` do?": "A box that holds things.",
                 "What does `alpha.Box.open` do?": "Open the box now."}
    assert [c[0]["content"] for c in d["heldout"]] == ["What does `beta.run` do?"]


@pytest.mark.parametrize("arch", ["amsnet", "transformer"])
def test_chat_session_keeps_the_state_across_turns(arch):
    torch.manual_seed(0)
    # nn.Linear-sized synapses and gain: an untrained AM-SU that fires (the defaults
    # leave it silent until trained), so earlier turns leave a trace in the state
    cfg = AMSNetConfig(d_model=32, n_head=2, n_layer=1, block_size=64, synapse_init=1.0,
                       astro_gain=1.0)
    m = build_model(cfg if arch == "amsnet" else transformer_twin(cfg))
    s = ChatSession(m, max_new_tokens=12)
    s.reply("hi there")
    n1 = s.tokens
    s.reply("and now?")
    h = bytes(s.history)
    p1, p2 = prompt_text("hi there").encode(), prompt_text("and now?").encode()
    assert h.startswith(p1) and h[n1:].startswith(p2)
    assert h[:n1].endswith(END_OF_TURN.encode())        # turn 1 closed before turn 2
    # the state after two turns is the state of reading the whole transcript at once
    logits, _ = m(torch.tensor(list(h))[None])
    assert torch.allclose(s.logits[0], logits[0, -1], atol=1e-4, rtol=1e-4)
    fresh = ChatSession(m, max_new_tokens=12)
    fresh.feed(prompt_text("and now?"))
    assert not torch.allclose(fresh.logits, logits[:, n1 + len(p2) - 1], atol=1e-4)
