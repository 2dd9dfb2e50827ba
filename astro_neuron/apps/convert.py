"""One-time conversion of old pickled ``.pt`` checkpoints to the data-only format.

``astro-neuron convert-checkpoint OLD.pt NEW.safetensors --trust-pickle`` calls
:func:`convert_pickle_checkpoint`. Unpickling runs whatever code the file carries, so
the caller must say that it trusts the file (``trust_pickle=True``); nothing else in
astro-neuron unpickles a checkpoint. The converted file is rebuilt through the model's
own classes (the weights must fit the stored config) and written with
:func:`astro_neuron.io.save_checkpoint`, so it is checked like any new checkpoint.
"""

from __future__ import annotations

from pathlib import Path

from astro_neuron.io import CHECKPOINT_SUFFIX, CheckpointError, load_pickle_checkpoint
from astro_neuron.lm.config import stored_config
from astro_neuron.lm.model import build_model
from astro_neuron.lm.train import TrainConfig, make_optimizer, save_lm_checkpoint
from astro_neuron.tasks import MemoryNet

__all__ = ["convert_pickle_checkpoint"]

_LM_INFO = ("step", "losses", "evals", "tokens_seen", "train_time_s", "world_size")


def _convert_lm(src: Path, old: dict, dst: Path) -> Path:
    model = build_model(stored_config(old["config"]))
    model.load_state_dict(old["model"])
    run_config = old.get("run_config")
    opt = None
    if "optimizer" in old:
        train_table = dict((run_config or {}).get("train", {}))
        opt = make_optimizer(model, TrainConfig(**train_table))
        opt.load_state_dict(old["optimizer"])
    info = {k: old[k] for k in _LM_INFO if k in old}
    return save_lm_checkpoint(dst, model, run_config, opt, info)


def convert_pickle_checkpoint(src, dst, trust_pickle: bool = False) -> tuple[str, Path]:
    """Convert the old ``.pt`` checkpoint ``src`` (an LM checkpoint of ``astro-neuron
    train`` or a MemoryNet checkpoint of ``astro-neuron demo``) to ``dst``
    (``*.safetensors``). Refuses unless ``trust_pickle``. Returns ``(kind, dst)``."""
    src, dst = Path(src), Path(dst)
    if dst.suffix != CHECKPOINT_SUFFIX:
        raise ValueError(f"the converted checkpoint must end in {CHECKPOINT_SUFFIX}, got {dst}")
    if dst.resolve() == src.resolve():
        raise ValueError(f"write the converted checkpoint to a new file, not over {src}")
    old = load_pickle_checkpoint(src, trust_pickle=trust_pickle)
    try:
        if {"task", "config", "state_dict"} <= set(old):
            return "memory-net", MemoryNet.from_checkpoint(old).save(dst)
        if {"config", "model"} <= set(old):
            return "lm", _convert_lm(src, old, dst)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"old checkpoint {src} cannot be converted "
                              f"({type(exc).__name__}: {exc})") from None
    raise CheckpointError(f"old checkpoint {src} is neither an LM checkpoint ('config', "
                          f"'model') nor a MemoryNet one ('task', 'config', 'state_dict'); "
                          f"its keys: {sorted(map(str, old))[:10]}")
