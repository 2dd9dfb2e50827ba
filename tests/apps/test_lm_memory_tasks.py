"""The memory-task runner checks its learning rate (moved from
tests/lm/test_lm_memory_readout.py)."""

from __future__ import annotations

import pytest

from astro_neuron.apps.tasks.lm_memory import run_memory_tasks


@pytest.mark.parametrize("lr", [0, -1e-3, float("nan"), True])
def test_memory_tasks_rejects_bad_lr(lr, tmp_path):
    with pytest.raises(ValueError, match="lr must be"):
        run_memory_tasks(("copy",), (64,), ("AM-SNet",), quick=True, out_dir=tmp_path, lr=lr,
                         progress=False)
