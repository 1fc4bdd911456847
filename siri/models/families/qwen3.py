"""Qwen3: per-head RMSNorm of q and k before RoPE; every attention projection carries a bias
when ``attention_bias`` says so (off in the released models)."""
from __future__ import annotations

from siri.models.family import ModelFamily


class Qwen3(ModelFamily):
    model_type = "qwen3"
    qk_norm = True


FAMILY = Qwen3()
