"""AM-SNet, the spiking language model, and everything to train, compare and sample it.

::

    from astro_neuron.lm import AMSNetConfig, AMSNet
    model = AMSNet(AMSNetConfig(n_layer=4, d_model=256))
    logits, loss = model(idx, targets)                 # parallel (chunked) form, idx (B, T)
    logits_t, cache = model.step(idx_t, cache)         # recurrent, O(1) per token
    out = model.generate(idx, max_new_tokens=100, temperature=0.8, top_k=40)

Guide: docs/lm.md. Sub-modules: ``config``, ``model`` (AM-SNet), ``baselines``
(the KV-cache Transformer), ``data`` (byte tokenizer, corpora), ``train``, ``tasks``
(MQAR, selective copy), ``sample``. The benchmarks, the variant comparison, the
memory-task runner and the demo stage are applications: :mod:`astro_neuron.apps`.
"""

from astro_neuron.lm.config import AMSNetConfig
from astro_neuron.lm.model import AMSNet, AMSNetCache, build_model

__all__ = ["AMSNetConfig", "AMSNet", "AMSNetCache", "build_model"]
