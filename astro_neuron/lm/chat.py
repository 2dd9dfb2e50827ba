"""Dialogue data for fine-tuning: the chat template, the loss mask, JSONL files and the
built-in question/answer turns (docs/lm.md, "Dialogue fine-tuning").

The template, with the byte tokenizer (:func:`astro_neuron.lm.data.encode`, one token
per UTF-8 byte, no special tokens)::

    User: <user text>\\n
    Assistant: <assistant text>\\n\\n
    User: <next user text>\\n
    Assistant: ...

A turn of the assistant ends with a blank line (``"\\n\\n"``), which is how a model
says it has finished (:data:`END_OF_TURN`); a turn's text therefore may not contain a
blank line itself, nor start or end with white space. The loss is taken on the
assistant's bytes and its closing ``"\\n\\n"`` only; every other target (the user's
turn, the ``"Assistant: "`` prefix the program writes) holds the ignore index
:data:`IGNORE` (-1, the index the models' loss ignores).

A JSONL file holds one conversation per line, in the common ``messages`` form::

    {"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}

Roles alternate, starting with ``user``; at least one ``assistant`` turn. Any error
names the line and the turn.

Built-in data (:func:`builtin_dialogues`), offline: for every documented public
function, class and method of the standard-library sources that form the built-in
corpus, the question "What does `module.name` do?" and as the answer the first sentence
of its docstring. Questions from the corpus's train files are the train split; those
from its validation and test files (which the base model never read) are held out.
"""

from __future__ import annotations

import ast
import json
import re
import sysconfig
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Optional, Sequence

import torch
from torch import Tensor

from astro_neuron.io import atomic_write
from astro_neuron.lm.base import sample
from astro_neuron.lm.data import _split_of, _stdlib_files, encode
from astro_neuron.validate import non_negative_int, number_in_range, optional, positive_int

__all__ = ["IGNORE", "USER", "ASSISTANT", "END_OF_TURN", "ROLES", "Dialogue", "check_dialogue",
           "render", "prompt_text", "encode_dialogue", "load_jsonl", "save_jsonl",
           "builtin_dialogues", "collate", "batch_for_step", "ChatDataError", "ChatSession"]

IGNORE = -1
USER = "User: "
ASSISTANT = "Assistant: "
END_OF_TURN = "\n\n"
ROLES = ("user", "assistant")

Dialogue = list          # [{"role": "user"|"assistant", "content": str}, ...]


class ChatDataError(ValueError):
    """A conversation that does not fit the chat format; the message says where."""


def check_dialogue(messages, where: str = "conversation") -> list[dict]:
    """Check one conversation; returns it as a list of ``{"role", "content"}`` dicts."""
    if not isinstance(messages, (list, tuple)):
        raise ChatDataError(f"{where}: 'messages' must be a list of turns, got "
                            f"{type(messages).__name__}")
    if not messages:
        raise ChatDataError(f"{where}: no turns")
    out = []
    for i, m in enumerate(messages):
        w = f"{where}, turn {i + 1}"
        if not isinstance(m, dict):
            raise ChatDataError(f"{w}: a turn must be an object with 'role' and 'content', "
                                f"got {type(m).__name__}")
        extra = sorted(set(m) - {"role", "content"})
        if extra or "role" not in m or "content" not in m:
            raise ChatDataError(f"{w}: a turn needs exactly the keys 'role' and 'content', "
                                f"got {sorted(m)}")
        role, text = m["role"], m["content"]
        if role not in ROLES:
            raise ChatDataError(f"{w}: role must be 'user' or 'assistant', got {role!r}")
        want = ROLES[i % 2]
        if role != want:
            raise ChatDataError(f"{w}: roles must alternate starting with 'user'; expected "
                                f"{want!r}, got {role!r}")
        if not isinstance(text, str):
            raise ChatDataError(f"{w}: content must be a string, got {type(text).__name__}")
        if not text.strip():
            raise ChatDataError(f"{w}: content is empty")
        if text != text.strip():
            raise ChatDataError(f"{w}: content must not start or end with white space "
                                f"(got {text[:20]!r}...)")
        if END_OF_TURN in text:
            raise ChatDataError(f"{w}: content must not contain a blank line ('\\n\\n'): "
                                "the template ends an assistant turn with one")
        out.append({"role": role, "content": text})
    if len(out) < 2:
        raise ChatDataError(f"{where}: needs at least one 'assistant' turn (there is no "
                            "assistant text to learn)")
    return out


def render(messages: Dialogue) -> str:
    """The conversation as text in the template (no checks)."""
    parts = []
    for m in messages:
        if m["role"] == "user":
            parts.append(f"{USER}{m['content']}\n")
        else:
            parts.append(f"{ASSISTANT}{m['content']}{END_OF_TURN}")
    return "".join(parts)


def prompt_text(user: str) -> str:
    """What is fed to the model for one user turn; it then writes the answer."""
    return f"{USER}{user}\n{ASSISTANT}"


def encode_dialogue(messages: Dialogue, max_len: Optional[int] = None
                    ) -> tuple[Tensor, Tensor]:
    """Token ids ``(n,)`` of the rendered conversation and the per-token mask ``(n,)``
    (True on the assistant's bytes and its closing ``"\\n\\n"``). ``max_len``: keep the
    first ``max_len`` tokens."""
    ids, mask = [], []
    for m in messages:
        if m["role"] == "user":
            t = encode(f"{USER}{m['content']}\n")
            ids.append(t)
            mask.append(torch.zeros(t.numel(), dtype=torch.bool))
        else:
            p, a = encode(ASSISTANT), encode(m["content"] + END_OF_TURN)
            ids += [p, a]
            mask += [torch.zeros(p.numel(), dtype=torch.bool),
                     torch.ones(a.numel(), dtype=torch.bool)]
    ids_t, mask_t = torch.cat(ids), torch.cat(mask)
    if max_len is not None:
        ids_t, mask_t = ids_t[:max_len], mask_t[:max_len]
    return ids_t, mask_t


def collate(dialogues: Sequence[Dialogue], max_len: int) -> tuple[Tensor, Tensor]:
    """Inputs ``x`` and targets ``y`` ``(B, T)`` for next-token training.

    ``y[b, t]`` is the token after ``x[b, t]`` where that token is an assistant token,
    :data:`IGNORE` elsewhere (user turns, template prefixes, padding). Conversations are
    cut at ``max_len + 1`` tokens and padded at the end (padding is never scored; the
    models are causal, so it does not change the scored positions).
    """
    positive_int("max_len", max_len)
    rows = [encode_dialogue(d, max_len + 1) for d in dialogues]
    T = max(r[0].numel() for r in rows) - 1
    x = torch.zeros(len(rows), T, dtype=torch.long)
    y = torch.full((len(rows), T), IGNORE, dtype=torch.long)
    for i, (ids, mask) in enumerate(rows):
        n = ids.numel() - 1
        x[i, :n] = ids[:-1]
        y[i, :n] = torch.where(mask[1:], ids[1:], torch.full_like(ids[1:], IGNORE))
    return x, y


def batch_for_step(dialogues: Sequence[Dialogue], step: int, seed: int, batch_size: int,
                   max_len: int) -> tuple[Tensor, Tensor]:
    """The training batch of ``step``: conversations drawn by a generator seeded by
    ``(seed, step)`` only, so a resumed run draws the batches of an uninterrupted one."""
    if not dialogues:
        raise ValueError("no conversations to draw a batch from")
    non_negative_int("step", step)
    positive_int("batch_size", batch_size)
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    pick = torch.randint(len(dialogues), (batch_size,), generator=g).tolist()
    return collate([dialogues[i] for i in pick], max_len)


# ------------------------------------------------------------------ a session

class ChatSession:
    """A conversation with a model on its recurrent state (``astro-neuron chat``).

    Every byte, the user's and the model's own, goes through one :meth:`step` of the
    model, and the cache is kept between turns: the model's state after turn ``n`` is
    the state it starts turn ``n + 1`` from (for AM-SNet a fixed-size state; for the
    Transformer a KV cache that grows with the conversation). ``temperature`` 0 is
    greedy. An answer ends at the template's blank line or after ``max_new_tokens``
    bytes (the blank line is then fed, so the next turn starts cleanly).
    """

    def __init__(self, model, max_new_tokens: int = 256, temperature: float = 0.0,
                 top_k: Optional[int] = None, seed: int = 0) -> None:
        positive_int("max_new_tokens", max_new_tokens)
        number_in_range("temperature", temperature, 0)
        optional(positive_int, "top_k", top_k)
        self.model = model.eval()
        self.max_new_tokens, self.temperature, self.top_k = max_new_tokens, temperature, top_k
        dev = next(model.parameters()).device
        self.device = dev
        self.generator = torch.Generator(device=dev).manual_seed(seed)
        self.cache = None
        self.logits: Optional[Tensor] = None
        self.history = bytearray()          # every byte read so far, user's and model's

    @property
    def tokens(self) -> int:
        return len(self.history)

    def feed(self, text: str) -> None:
        """Read ``text`` into the state (one step per byte)."""
        for t in encode(text).tolist():
            self._step(t)

    def _step(self, t: int) -> None:
        idx = torch.tensor([t], device=self.device)
        self.logits, self.cache = self.model.step(idx, self.cache)
        self.history.append(t)

    def reply(self, user: str) -> str:
        """The model's answer to one user turn (the template's blank line removed)."""
        if not isinstance(user, str) or not user.strip():
            raise ValueError("a user turn must be non-empty text")
        user = " ".join(user.strip().split("\n\n"))
        self.feed(prompt_text(user))
        out = bytearray()
        end = END_OF_TURN.encode()
        with torch.inference_mode():
            for _ in range(self.max_new_tokens):
                t = int(sample(self.logits, self.temperature, self.top_k, self.generator))
                out.append(t)
                self._step(t)
                if out.endswith(end):
                    break
            else:
                tail = END_OF_TURN[1:] if out.endswith(b"\n") else END_OF_TURN
                self.feed(tail)
        return out.decode("utf-8", errors="replace").removesuffix(END_OF_TURN).strip()


# ------------------------------------------------------------------ files

def load_jsonl(path) -> list[Dialogue]:
    """Read conversations from a JSONL file (one ``{"messages": [...]}`` per line; blank
    lines are skipped); every line is checked, errors name the line."""
    path = Path(path)
    if path.is_dir():
        raise ChatDataError(f"chat data {path} is a folder; give a .jsonl file")
    if not path.is_file():
        raise FileNotFoundError(f"chat data file not found: {path}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise ChatDataError(f"{path} is not UTF-8 text ({exc})") from None
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}, line {n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ChatDataError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") \
                from None
        if not isinstance(obj, dict) or "messages" not in obj:
            raise ChatDataError(f"{where}: each line must be an object with a 'messages' "
                                "list, e.g. {\"messages\": [{\"role\": \"user\", \"content\": "
                                "\"...\"}, {\"role\": \"assistant\", \"content\": \"...\"}]}")
        out.append(check_dialogue(obj["messages"], where))
    if not out:
        raise ChatDataError(f"{path} holds no conversations")
    return out


def save_jsonl(dialogues: Iterable[Dialogue], path) -> Path:
    """Write conversations as JSONL (the format :func:`load_jsonl` reads)."""
    text = "".join(json.dumps({"messages": check_dialogue(d)}, ensure_ascii=False) + "\n"
                   for d in dialogues)
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


# ------------------------------------------------------------------ built-in data

_SENTENCE = re.compile(r"^(.+?[.!?])(?:\s|$)", re.S)
MIN_ANSWER, MAX_ANSWER = 12, 160


def _first_sentence(doc: str) -> Optional[str]:
    para = doc.strip().split("\n\n")[0]
    para = " ".join(para.split())
    m = _SENTENCE.match(para)
    s = m.group(1) if m else para
    if not (MIN_ANSWER <= len(s) <= MAX_ANSWER) or not s[0].isalpha():
        return None
    if s.startswith((">>>", "Usage", "usage")) or "\t" in s:
        return None
    return s


def _module_name(rel: str) -> str:
    parts = rel[:-3].split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _documented(tree: ast.Module, module: str):
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) \
                and not node.name.startswith("_"):
            yield f"{module}.{node.name}", ast.get_docstring(node)
            if isinstance(node, ast.ClassDef):
                for sub in node.body:
                    if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)) \
                            and not sub.name.startswith("_"):
                        yield f"{module}.{node.name}.{sub.name}", ast.get_docstring(sub)


@lru_cache(maxsize=2)
def _builtin(root: Optional[str]) -> dict:
    base = Path(root or sysconfig.get_paths()["stdlib"])
    if not base.is_dir():
        raise FileNotFoundError(f"standard library folder not found: {base}")
    splits: dict[str, list] = {"train": [], "heldout": []}
    seen: set = set()
    for path in _stdlib_files(base):
        rel = path.relative_to(base).as_posix()
        module = _module_name(rel)
        if any(p.startswith("_") and p != "__init__" for p in module.split(".")):
            continue
        try:
            tree = ast.parse(path.read_bytes())
        except (SyntaxError, ValueError):
            continue
        split = "train" if _split_of(rel) == "train" else "heldout"
        for name, doc in _documented(tree, module):
            ans = _first_sentence(doc) if doc else None
            if ans is None or name in seen:
                continue
            seen.add(name)
            splits[split].append([{"role": "user", "content": f"What does `{name}` do?"},
                                  {"role": "assistant", "content": ans}])
    return splits


def builtin_dialogues(split: str = "train", root: Optional[str] = None) -> list[Dialogue]:
    """The built-in question/answer turns: ``split`` ``"train"`` (questions about the
    corpus's train files) or ``"heldout"`` (its validation and test files)."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    data = _builtin(root)
    if not data[split]:
        raise ValueError(f"no documented functions found for split {split!r}")
    return [[dict(m) for m in d] for d in data[split]]     # copies: the cache stays intact
