"""Zero-shot evaluation through lm-evaluation-harness (docs/lm.md, "Zero-shot evaluation").

:class:`AstroNeuronLM` is an ``lm_eval`` model, registered as ``"astro-neuron"`` when
this module is imported, for any checkpoint ``astro-neuron train`` writes (AM-SNet or
the Transformer baseline)::

    import lm_eval
    from astro_neuron.lm.harness import AstroNeuronLM, local_task
    lm = AstroNeuronLM(checkpoint="out/ckpt.safetensors")
    res = lm_eval.simple_evaluate(model=lm, tasks=[local_task("piqa", "my_piqa.jsonl")])

The plain ``lm_eval`` program does not import outside packages (lm-eval 0.4.13 has no
plugin entry point for models), so from the shell use ``astro-neuron lm-eval ...``,
which registers the model and then runs lm_eval's own command line with the same
arguments.

How requests are computed (byte tokenizer, :mod:`astro_neuron.lm.data`):

* ``loglikelihood``: requests are grouped by their context; each context is read once
  (:meth:`prefill`, the parallel form) and its recurrent state (AM-SNet) or KV cache
  (Transformer) is copied for every continuation of that context; the continuations
  then advance together one token per :meth:`step` (a batch of choices).
* ``loglikelihood_rolling``: the document after one ``"\\n"`` token, read in one
  prefill (up to ``prefill_length`` tokens) and then token by token on the state, so
  every token is predicted from all tokens before it (no windows).
* ``generate_until``: prefill, then greedy (or sampled) steps until a stop string or
  ``max_gen_toks`` bytes.

The byte vocabulary has no end-of-text token: ``"\\n"`` (byte 10; the corpora's
document separator) stands in as the prefix of empty contexts and rolling documents.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
import lm_eval
import yaml
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.tasks import TaskManager
from torch import Tensor
from tqdm.auto import tqdm

from astro_neuron.lm.base import LanguageModel, sample
from astro_neuron.lm.data import decode
from astro_neuron.lm.train import load_model, resolve_device
from astro_neuron.validate import choice, positive_int

__all__ = ["AstroNeuronLM", "MODEL_NAME", "TASK_DIR", "FORMATS", "BUILTIN_TASKS",
           "local_task", "builtin_task", "expand_cache", "continuation_logprobs",
           "NEWLINE", "evaluate", "chance"]

MODEL_NAME = "astro-neuron"
NEWLINE = 10                                 # "\n": the stand-in end-of-text token
TASK_DIR = Path(__file__).parent / "eval_tasks"
FORMATS = ("piqa", "sciq")
BUILTIN_TASKS = {"stdlib_piqa": ("piqa", "stdlib_piqa.jsonl"),
                 "stdlib_sciq": ("sciq", "stdlib_sciq.jsonl")}


def expand_cache(cache: Any, n: int) -> Any:
    """A copy of a one-sequence cache (``AMSNetCache`` or ``KVCache``) for ``n``
    sequences: every tensor (or list of tensors) along the batch dimension repeated
    ``n`` times, integers (the position) kept. Works on any dataclass of such fields,
    so a new state of the model needs no change here."""
    out = {}
    for f in dataclasses.fields(cache):
        v = getattr(cache, f.name)
        if isinstance(v, Tensor):
            v = v.expand(n, *v.shape[1:]).clone()
        elif isinstance(v, list):
            v = [x.expand(n, *x.shape[1:]).clone() if isinstance(x, Tensor) else x
                 for x in v]
        out[f.name] = v
    return type(cache)(**out)


@torch.inference_mode()
def continuation_logprobs(model: LanguageModel, last_logits: Tensor, cache: Any,
                          conts: list[list[int]]) -> list[tuple[Tensor, Tensor]]:
    """Log-probabilities of each continuation after a shared context.

    ``last_logits`` ``(1, V)``: the logits after the context's last token; ``cache``
    its state (one sequence, left unchanged). The continuations advance together,
    one :meth:`step` per token position, on copies of the state (shorter ones are
    padded; their padding is never scored). Returns per continuation
    ``(logprobs (n,), greedy (n,) bool)`` of its tokens.
    """
    n, L = len(conts), max(len(c) for c in conts)
    toks = torch.zeros(n, L, dtype=torch.long)
    for i, c in enumerate(conts):
        toks[i, :len(c)] = torch.tensor(c, dtype=torch.long)
    dev = last_logits.device
    toks = toks.to(dev)
    state = expand_cache(cache, n)
    logits = last_logits.expand(n, -1)
    lps, greedy = [], []
    for j in range(L):
        lp = F.log_softmax(logits.double(), dim=-1)                      # (n, V)
        lps.append(lp.gather(1, toks[:, j:j + 1])[:, 0])
        greedy.append(lp.argmax(-1) == toks[:, j])
        if j + 1 < L:
            logits, state = model.step(toks[:, j], state)
    lp_all, g_all = torch.stack(lps, 1).cpu(), torch.stack(greedy, 1).cpu()  # (n, L)
    return [(lp_all[i, :len(c)], g_all[i, :len(c)]) for i, c in enumerate(conts)]


@register_model(MODEL_NAME)
class AstroNeuronLM(TemplateLM):
    """An astro-neuron language model as an lm-evaluation-harness ``LM``.

    Args:
        checkpoint: a ``.safetensors`` file written by ``astro-neuron train``.
        model: instead of ``checkpoint``, a model object (``AMSNet`` or ``Transformer``).
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (default ``cpu``; a CUDA device
            without a GPU falls back to the CPU with a warning, as lm_eval's ``hf`` model).
        batch_size: how many choices of one context advance together, one ``step``
            per byte (default 64; lm_eval's ``--batch_size``, 1 unless given).
        prefill_length: longest span read in one parallel pass; the rest of a longer
            rolling document is read token by token on the state (default 4096).
        progress: show progress bars.

    lm_eval passes ``batch_size``, ``max_batch_size`` and ``device`` to every model;
    ``batch_size="auto"`` means the default.
    """

    def __init__(self, checkpoint: Optional[str] = None, model: Optional[LanguageModel] = None,
                 device: Optional[str] = None, batch_size: Any = 64,
                 max_batch_size: Any = None, prefill_length: Any = 4096,
                 progress: Any = True, **unused) -> None:
        super().__init__()
        if unused:
            raise ValueError(f"unknown model_args {sorted(unused)} for the astro-neuron "
                             "model; known: checkpoint, device, batch_size, prefill_length, "
                             "progress")
        if (checkpoint is None) == (model is None):
            raise ValueError("give exactly one of checkpoint=PATH (a .safetensors file from "
                             "`astro-neuron train`) or model=<AMSNet or Transformer>")
        if device not in (None, "") and str(device).startswith("cuda") \
                and not torch.cuda.is_available():
            # lm_eval's command line passes --device cuda:0 unless told otherwise;
            # like its Hugging Face model, run on the CPU when there is no GPU
            warnings.warn(f"device {device!r} asked for but torch sees no CUDA GPU: "
                          "running on the CPU", stacklevel=2)
            device = "cpu"
        dev = resolve_device(str(device)) if device not in (None, "") else None
        if checkpoint is not None:
            model, _ = load_model(str(checkpoint), dev or "cpu")
        elif not isinstance(model, LanguageModel):
            raise TypeError(f"model must be an AMSNet or Transformer, got "
                            f"{type(model).__name__}")
        elif dev is not None:
            model = model.to(dev)
        self.model = model.eval()
        if self.model.config.vocab_size != 256:
            raise ValueError("the harness adapter reads text as bytes: the model needs "
                             f"vocab_size 256, got {self.model.config.vocab_size}")
        self._device = self.model.wte.weight.device
        bs = 64 if batch_size in (None, "auto") or str(batch_size).startswith("auto") \
            else int(batch_size)
        self.batch_size = positive_int("batch_size", bs)
        self.prefill_length = positive_int("prefill_length", int(prefill_length))
        self.progress = str(progress).lower() not in ("false", "0", "no")

    # ---------------------------------------------------------------- tokenizer
    @property
    def eot_token_id(self) -> int:
        return NEWLINE

    @property
    def max_length(self) -> int:
        return self.prefill_length

    @property
    def tokenizer_name(self) -> str:
        return "bytes"

    def tok_encode(self, string: str, add_special_tokens: Optional[bool] = None,
                   **kwargs) -> list[int]:
        return list(string.encode("utf-8"))

    def tok_decode(self, tokens) -> str:
        return decode(tokens)

    # ---------------------------------------------------------------- reading
    def _read(self, tokens: list[int]) -> tuple[Tensor, Any, Tensor]:
        """Read ``tokens`` (one sequence): ``(logits (T, V) float64, cache, last (1, V))``
        where ``logits[i]`` predicts token ``i + 1``; the first ``prefill_length``
        tokens in one parallel pass, the rest one step each."""
        idx = torch.tensor(tokens, dtype=torch.long, device=self._device)
        head = idx[: self.prefill_length]
        logits, cache = self.model.prefill(head[None])                   # (1, t, V)
        out = [logits[0].double()]
        for tok in idx[self.prefill_length:]:
            last, cache = self.model.step(tok.view(1), cache)
            out.append(last.double())
        all_logits = torch.cat(out, 0)
        return all_logits, cache, all_logits[-1:]

    # ---------------------------------------------------------------- requests
    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs):
        """``requests``: ``((context, continuation), context_ids, continuation_ids)``."""
        groups: dict[tuple, list[int]] = {}
        for i, (_, ctx, cont) in enumerate(requests):
            if not cont:
                raise ValueError("an empty continuation has no token to score")
            groups.setdefault(tuple(ctx), []).append(i)
        results: list = [None] * len(requests)
        bar = tqdm(total=len(requests), desc="astro-neuron loglikelihood",
                   disable=disable_tqdm or not self.progress)
        with torch.inference_mode():
            for ctx, members in groups.items():
                _, cache, last = self._read(list(ctx))
                for s in range(0, len(members), self.batch_size):
                    part = members[s:s + self.batch_size]
                    scored = continuation_logprobs(self.model, last, cache,
                                                   [requests[i][2] for i in part])
                    for i, (lp, g) in zip(part, scored):
                        res = (float(lp.double().sum()), bool(g.all()))
                        results[i] = res
                        self.cache_hook.add_partial("loglikelihood", requests[i][0], res)
                    bar.update(len(part))
        bar.close()
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        out = []
        for req in tqdm(requests, desc="astro-neuron rolling loglikelihood",
                        disable=disable_tqdm or not self.progress):
            (text,) = req.args
            toks = self.tok_encode(text)
            if not toks:
                out.append(0.0)
                continue
            with torch.inference_mode():
                logits, _, _ = self._read([NEWLINE] + toks[:-1])        # predicts toks
                tgt = torch.tensor(toks, device=logits.device)
                lp = F.log_softmax(logits, -1).gather(1, tgt[:, None])
            ll = float(lp.double().sum())
            out.append(ll)
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), ll)
        return out

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        out = []
        for req in tqdm(requests, desc="astro-neuron generate",
                        disable=disable_tqdm or not self.progress):
            context, gen_kwargs = req.args
            text = self._generate(context, dict(gen_kwargs or {}))
            out.append(text)
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
        return out

    def _generate(self, context: str, kw: dict) -> str:
        until = kw.pop("until", None) or []
        if isinstance(until, str):
            until = [until]
        max_new = positive_int("max_gen_toks", int(kw.pop("max_gen_toks", 256)))
        do_sample = bool(kw.pop("do_sample", False))
        temperature = float(kw.pop("temperature", 0.0))
        top_k = kw.pop("top_k", None)
        seed = kw.pop("seed", 0)
        if not do_sample:
            temperature = 0.0
        g = torch.Generator(device=self._device).manual_seed(int(seed or 0))
        ctx = self.tok_encode(context) or [NEWLINE]
        new: list[int] = []
        with torch.inference_mode():
            _, cache, logits = self._read(ctx)
            for _ in range(max_new):
                nxt = sample(logits, temperature, None if top_k is None else int(top_k), g)
                new.append(int(nxt))
                text = decode(new)
                if any(u in text for u in until):
                    break
                logits, cache = self.model.step(nxt.view(1), cache)
        text = decode(new)
        for u in until:
            text = text.split(u)[0]
        return text

    def get_model_info(self) -> dict:
        cfg = self.model.config
        return {"model_arch": cfg.arch, "model_num_parameters": self.model.num_params(),
                "d_model": cfg.d_model, "n_layer": cfg.n_layer}


# -------------------------------------------------------------------- tasks


def _template(fmt: str) -> dict:
    choice("format", fmt, FORMATS)
    with open(TASK_DIR / f"{fmt}_local.yaml", encoding="utf-8") as f:
        return yaml.safe_load(f)


def local_task(fmt: str, data_file, name: Optional[str] = None) -> dict:
    """The task config (a dict lm_eval's ``simple_evaluate(tasks=[...])`` takes) that
    scores a local JSONL file in the ``fmt`` format (``"piqa"``: goal, sol1, sol2,
    label; ``"sciq"``: support, question, distractor1-3, correct_answer) with the
    official prompts of lm_eval's ``piqa`` and ``sciq`` tasks (the YAML files in
    ``astro_neuron/lm/eval_tasks``). Read with datasets' ``json`` loader: no network."""
    path = Path(data_file)
    if not path.is_file():
        raise FileNotFoundError(f"{fmt} data file not found: {path}")
    cfg = _template(fmt)
    cfg["task"] = name or f"{fmt}_local"
    cfg["dataset_kwargs"] = {"data_files": {"validation": str(path.resolve())}}
    return cfg


def chance(task: dict) -> float:
    """The chance accuracy of a task config made by :func:`local_task`: 1 / choices."""
    return 0.5 if "sol1" in task["doc_to_choice"] else 0.25


def builtin_task(name: str) -> dict:
    """One of the small built-in tasks (:data:`BUILTIN_TASKS`, about the built-in
    corpus) as a task config for ``simple_evaluate``."""
    choice("task", name, tuple(BUILTIN_TASKS))
    fmt, file = BUILTIN_TASKS[name]
    return local_task(fmt, TASK_DIR / file, name)


def evaluate(lm: "AstroNeuronLM", tasks, limit: Optional[int] = None, progress: bool = False,
             **kwargs) -> dict:
    """``lm_eval.simple_evaluate`` of ``lm`` on ``tasks``: names of the built-in tasks
    (:data:`BUILTIN_TASKS`), task configs (:func:`local_task`) or names of lm_eval's own
    tasks (``"piqa"``, ``"sciq"``: those need their datasets, from the hub or its cache).

    Only when a name of lm_eval's own tasks is given does lm_eval index its ~14,000
    task files (about 15 s on this machine). ``limit``: the first ``limit`` documents
    of each task. Returns lm_eval's result dict (``res["results"][task]["acc,none"]``).
    """
    if isinstance(tasks, (str, dict)):
        tasks = [tasks]
    configs = [builtin_task(t) if isinstance(t, str) and t in BUILTIN_TASKS else t
               for t in tasks]
    if not configs:
        raise ValueError("give at least one task")
    own = any(isinstance(t, str) for t in configs)
    manager = TaskManager(include_path=str(TASK_DIR), include_defaults=own)
    lm.progress = progress
    return lm_eval.simple_evaluate(model=lm, tasks=configs, task_manager=manager,
                                   limit=limit, verbosity="ERROR", **kwargs)
