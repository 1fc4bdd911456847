"""The model-facing code: what differs between model families (``family``, one module per
family in ``families/``, looked up through ``registry``), a model's sizes from its config
(``shape``), loading a model and tokenizer (``loading``), and tiny models built from scratch
(``tiny_lm``)."""
from siri.models.family import ModelFamily, rope_type
from siri.models.registry import FAMILIES, SUPPORTED_MODEL_TYPES, find_family, get_family

__all__ = ["ModelFamily", "rope_type", "FAMILIES", "SUPPORTED_MODEL_TYPES", "find_family", "get_family"]
