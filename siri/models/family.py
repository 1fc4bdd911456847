"""What a model family is to siri: the few ways Hugging Face decoder-only causal LMs of one
``model_type`` differ from each other in what siri's engine runs and its memory plan counts.

Every family siri supports shares the rest: token embedding, RMSNorm before attention and MLP,
grouped-query attention with rotate-half RoPE, a SwiGLU MLP, a final RMSNorm and an LM head.
A family is a subclass of ``ModelFamily`` in its own file under ``siri/models/families/``,
bound to the module-level name ``FAMILY``; ``siri.models.registry`` finds it there.
"""
from __future__ import annotations

from typing import Any, ClassVar

#: The RoPE variants (HF ``rope_type``) that transformers' rotary modules compute for these
#: families. The engine takes cos/sin from the model's own rotary module, so every one of them
#: runs (eagerly); ``ModelFamily.device_reading_rope_types`` says which a CUDA graph cannot hold.
HF_ROPE_TYPES = ("default", "linear", "dynamic", "yarn", "longrope", "llama3")


def config_value(config: Any, name: str, default: Any = None) -> Any:
    """Field ``name`` of a ``transformers.PretrainedConfig`` or a dict of its fields."""
    if isinstance(config, dict):
        return config.get(name, default)
    return getattr(config, name, default)


def rope_type(config: Any) -> str:
    """The model's RoPE variant ("default", "linear", "dynamic", "yarn", "llama3", ...)."""
    params = config_value(config, "rope_parameters") or config_value(config, "rope_scaling") or {}
    return params.get("rope_type", params.get("type", "default"))


class ModelFamily:
    """One ``model_type``'s differences. Subclasses set the class attributes and override the
    methods whose default does not hold for them."""

    #: the HF config's ``model_type`` (``ModelFamily()`` itself stands for a model of no known
    #: family: what the memory plan assumes of a Llama-like model it has no module for)
    model_type: ClassVar[str] = "unknown"
    #: the attention RMS-normalises each head of q and k before RoPE (``self_attn.q_norm`` and
    #: ``self_attn.k_norm``, one ``[head_dim]`` weight each per layer)
    qk_norm: ClassVar[bool] = False
    #: the RoPE variants the family's rotary module implements
    rope_types: ClassVar[tuple[str, ...]] = HF_ROPE_TYPES
    #: of those, the variants whose HF module reads a device value on the host in every forward
    #: (dynamic NTK scaling compares the longest position with its cached length): such a
    #: forward syncs, and a CUDA graph cannot capture it
    device_reading_rope_types: ClassVar[tuple[str, ...]] = ("dynamic",)

    def projection_biases(self, config: Any) -> tuple[bool, bool]:
        """(the q/k/v projections carry biases, the output projection carries one). Default:
        both follow the config's ``attention_bias``."""
        bias = bool(config_value(config, "attention_bias", False))
        return bias, bias

    def mlp_bias(self, config: Any) -> bool:
        """Whether the MLP's gate/up/down projections carry biases (the config's ``mlp_bias``)."""
        return bool(config_value(config, "mlp_bias", False))

    def uses_sliding_window(self, config: Any) -> bool:
        """Whether some layer attends over a sliding window (which siri's engine does not run):
        the config's ``layer_types`` when it has them, else its ``use_sliding_window``."""
        layer_types = config_value(config, "layer_types")
        if layer_types is not None:
            return "sliding_attention" in layer_types
        return bool(config_value(config, "use_sliding_window", False))

    def rope_graph_capturable(self, rope: str) -> bool:
        """Whether a CUDA graph can capture this family's rotary module for RoPE variant ``rope``."""
        return rope not in self.device_reading_rope_types

    def check_engine_config(self, config: Any) -> None:
        """Raise ValueError, naming what is unsupported, for a config siri's engine cannot run."""
        rope = rope_type(config)
        if rope not in self.rope_types:
            raise ValueError(f"siri's engine runs {self.model_type} models with rope_type in {self.rope_types}; "
                             f"this model has rope_type {rope!r}")
        if self.uses_sliding_window(config):
            raise ValueError("sliding-window attention is not supported by siri's engine")

    def __repr__(self) -> str:
        return f"<model family {self.model_type!r}>"
