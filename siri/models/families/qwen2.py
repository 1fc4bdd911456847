"""Qwen2 (Qwen2, Qwen2.5, DeepSeek-R1-Distill-Qwen): q/k/v projections always carry biases,
the output projection never does."""
from __future__ import annotations

from typing import Any

from siri.models.family import ModelFamily


class Qwen2(ModelFamily):
    model_type = "qwen2"

    def projection_biases(self, config: Any) -> tuple[bool, bool]:
        return True, False


FAMILY = Qwen2()
