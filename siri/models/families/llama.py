"""Llama (Llama 2/3/3.x and models that reuse its architecture): every attention projection
carries a bias when ``attention_bias`` says so; no sliding window."""
from __future__ import annotations

from typing import Any

from siri.models.family import ModelFamily


class Llama(ModelFamily):
    model_type = "llama"

    def uses_sliding_window(self, config: Any) -> bool:
        return False  # transformers' Llama attends over the whole context whatever the config says


FAMILY = Llama()
