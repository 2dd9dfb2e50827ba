"""What the network is run on: input spikes, and the task a file may describe.

:func:`check_spikes` is the one check of spike inputs (the simulator, the converter's
calibration and QAT use it). :func:`check_task` validates the ``meta["task"]`` a file
may carry (the command line builds simulation inputs from it): the metadata are not
covered by the checksum (format 1 hashes the dynamics only), so they are checked
against bounds and against the checksummed input size instead, when a file is loaded.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from astro_neuron import validate

__all__ = ["check_spikes", "check_task", "TASK_FIELDS", "MAX_TASK_STEPS"]

MAX_TASK_STEPS = 1 << 16        # steps of one task sequence a file may ask for

# meta["task"] of name "delayed_recall": field -> (kind, lo, hi)
TASK_FIELDS = {
    "n_classes": ("int", 1, 1 << 20), "channels_per_class": ("int", 1, 1 << 20),
    "go_channels": ("int", 1, 1 << 20), "cue_len": ("int", 1, MAX_TASK_STEPS),
    "delay": ("int", 0, MAX_TASK_STEPS), "recall_len": ("int", 1, MAX_TASK_STEPS),
    "p_cue": ("prob", 0, 1), "p_noise": ("prob", 0, 1),
}


def check_spikes(x, n_in: Optional[int] = None, what: str = "input spikes") -> np.ndarray:
    """``x`` as an int64 array ``[T, B, n_in]`` of spike counts; clear errors otherwise.

    Accepts ``[T, n_in]`` too (one sequence), numpy or torch, float or integer dtype,
    as long as every value is a non-negative integer.
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except Exception:
            raise TypeError(f"{what} must be an array, got {type(x).__name__}") from None
    if x.dtype.kind not in "biuf":
        raise TypeError(f"{what} must be numeric, got dtype {x.dtype}")
    if x.ndim == 2:
        x = x[:, None, :]
    if x.ndim != 3:
        raise ValueError(f"{what} must have shape [T, B, n_in] (or [T, n_in]), got "
                         f"{list(x.shape)}")
    if n_in is not None and x.shape[2] != n_in:
        raise ValueError(f"{what} have {x.shape[2]} channels (last dim of {list(x.shape)}), "
                         f"the network expects {n_in}")
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"{what} need at least one step and one sequence, got {list(x.shape)}")
    if x.dtype.kind == "f":
        if not np.isfinite(x).all():
            raise ValueError(f"{what} contain NaN or Inf")
        if not np.array_equal(x, np.round(x)):
            raise ValueError(f"{what} must be spike counts (integers); got non-integer values "
                             f"such as {x[x != np.round(x)].flat[0]!r}")
    if x.size and x.min() < 0:
        raise ValueError(f"{what} must be non-negative spike counts, got {x.min()}")
    return x.astype(np.int64)


def check_task(task: Any, input_size: int, where: str = "meta/task") -> Any:
    """A file's task description, checked: a known task's fields within bounds and its
    input width equal to the network's (checksummed) ``input_size``. Unknown task names
    pass unchanged (nothing builds inputs from them)."""
    if task is None or not isinstance(task, dict) or task.get("name") != "delayed_recall":
        return task
    unknown = sorted(set(task) - set(TASK_FIELDS) - {"name"})
    missing = sorted(set(TASK_FIELDS) - set(task))
    if unknown or missing:
        raise ValueError(f"{where} must have exactly the fields {sorted(TASK_FIELDS)} "
                         f"(unknown: {unknown}, missing: {missing})")
    for key, (kind, lo, hi) in TASK_FIELDS.items():
        if kind == "int":
            validate.int_in_range(f"{where}/{key}", task[key], lo, hi)
        else:
            validate.probability(f"{where}/{key}", task[key])
    n_in = task["n_classes"] * task["channels_per_class"] + task["go_channels"]
    if n_in != input_size:
        raise ValueError(f"{where}: n_classes * channels_per_class + go_channels = {n_in}, "
                         f"but the network has {input_size} inputs")
    steps = task["cue_len"] + task["delay"] + task["recall_len"]
    if steps > MAX_TASK_STEPS:
        raise ValueError(f"{where}: a sequence of cue_len + delay + recall_len = {steps} steps "
                         f"exceeds {MAX_TASK_STEPS}")
    return task
