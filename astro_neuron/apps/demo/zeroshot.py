"""The zero-shot stage of ``astro-neuron demo`` (called by :mod:`astro_neuron.apps.demo`).

Scores the language model the ``lm`` stage trained, with lm-evaluation-harness, on
the built-in PIQA-format task ``stdlib_piqa`` (32 questions about Python code; which
of two lines does what the question asks): accuracy against chance (50%). Nothing is
downloaded (datasets' ``json`` loader reads the shipped file). docs/lm.md, "Zero-shot
evaluation".
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["demo_stage", "TASK"]

TASK = "stdlib_piqa"                   # = one of harness.BUILTIN_TASKS


def demo_stage(lm_ckpt: Path, quick: bool = False, progress: bool = True) -> dict:
    """Zero-shot accuracy of the checkpoint on :data:`TASK` (``quick``: 8 questions).

    Returns ``{"task", "docs", "acc", "acc_stderr", "acc_norm", "chance", "checkpoint"}``.
    """
    # deferred: lm_eval and datasets take about 2.5 s to import; `astro-neuron` starts without
    import astro_neuron.lm.harness as harness

    lm = harness.AstroNeuronLM(checkpoint=str(lm_ckpt))
    task = harness.builtin_task(TASK)
    res = harness.evaluate(lm, [task], limit=8 if quick else None, progress=progress)
    r = res["results"][TASK]
    out = {"task": TASK, "docs": int(res["n-samples"][TASK]["effective"]),
           "acc": r["acc,none"], "acc_stderr": r["acc_stderr,none"],
           "acc_norm": r["acc_norm,none"], "chance": harness.chance(task),
           "checkpoint": str(lm_ckpt)}
    print(f"  {TASK} (PIQA format, {out['docs']} questions, chance {out['chance']:.0%}): "
          f"acc {out['acc']:.1%} +- {out['acc_stderr']:.1%}, acc_norm {out['acc_norm']:.1%}")
    return out
