"""The integer network's schema: widths, the field tables, the layer and network
classes generated from them, the content checksum, and the checks of inputs.

* :mod:`~neuromorphic.spec.widths`: every width and range, the format version;
* :mod:`~neuromorphic.spec.fields`: each field of a layer declared once;
* :mod:`~neuromorphic.spec.network`: :class:`QuantizedNetwork` and its layers;
* :mod:`~neuromorphic.spec.inputs`: spike inputs and task metadata.
"""

from neuromorphic.spec.fields import (
    AMSU_FIELDS, AMSU_STATES, BITS, LIF_FIELDS, LIF_STATES, SYNAPSE_FIELDS, Field, State,
    bits_for,
)
from neuromorphic.spec.inputs import check_spikes, check_task
from neuromorphic.spec.network import (
    LAYER_TYPES, AMSULayer, Layer, LIFLayer, QuantizedNetwork, Synapse, canonical_digest,
    to_dict,
)
from neuromorphic.spec.widths import *  # noqa: F401,F403  (the widths are the schema's words)
from neuromorphic.spec.widths import __all__ as _widths

__all__ = ["Field", "State", "AMSU_FIELDS", "LIF_FIELDS", "SYNAPSE_FIELDS", "AMSU_STATES",
           "LIF_STATES", "BITS", "bits_for", "AMSULayer", "LIFLayer", "Layer", "LAYER_TYPES",
           "Synapse",
           "QuantizedNetwork", "canonical_digest", "to_dict", "check_spikes",
           "check_task"] + list(_widths)
