"""The model families siri supports, found in ``siri/models/families/`` (one module each, its
``FAMILY`` a ``ModelFamily``), looked up by the HF config's ``model_type``."""
from __future__ import annotations

import importlib
import pkgutil

from siri.models import families
from siri.models.family import ModelFamily


def _discover() -> dict[str, ModelFamily]:
    found: dict[str, ModelFamily] = {}
    for info in pkgutil.iter_modules(families.__path__):
        module = importlib.import_module(f"{families.__name__}.{info.name}")
        family = getattr(module, "FAMILY", None)
        if not isinstance(family, ModelFamily):
            raise TypeError(f"{module.__name__} must bind FAMILY to a siri.models.family.ModelFamily")
        if family.model_type == ModelFamily.model_type:
            raise TypeError(f"{module.__name__}: its family must set model_type")
        if family.model_type in found:
            raise ValueError(f"model type {family.model_type!r} is declared twice in {families.__name__}")
        found[family.model_type] = family
    return dict(sorted(found.items()))


#: model_type -> its family, for every family in siri/models/families/
FAMILIES: dict[str, ModelFamily] = _discover()
#: the HF ``model_type``s siri's engine runs
SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(FAMILIES)


def find_family(model_type: str) -> ModelFamily | None:
    """The family of ``model_type``, or None when siri has none."""
    return FAMILIES.get(model_type)


def get_family(model_type: str) -> ModelFamily:
    """The family of ``model_type``; ValueError naming the supported ones when siri has none."""
    family = FAMILIES.get(model_type)
    if family is None:
        raise ValueError(f"siri supports the model types {SUPPORTED_MODEL_TYPES}; got {model_type!r}")
    return family
