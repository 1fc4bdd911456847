"""The sizes of a decoder-only transformer, read from its Hugging Face config (no weights).

    shape = model_shape("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B")
    shape.num_parameters()        # 1,777,088,000
    shape.kv_bytes_per_token(2)   # 28,672: K and V of every layer in bf16

Covers the Llama/Qwen2/Qwen3/Mistral family (RMSNorm, grouped-query attention, SwiGLU MLP),
which is what the memory plan's activation counts are measured on; where a family's
parameters differ (biases, Qwen3's q/k norms), its module in ``siri.models.families`` says
how, and a model type with none counts as Llama with the config's ``attention_bias``. The shapes of the paper's
models are built in, so planning their runs needs neither the network nor a download.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from siri.models.family import ModelFamily, config_value
from siri.models.registry import find_family

#: HF config fields of models whose runs people plan before downloading them.
KNOWN_MODELS: dict[str, dict[str, Any]] = {
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B": dict(
        model_type="qwen2", hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
        num_attention_heads=12, num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=False,
        max_position_embeddings=131072),
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B": dict(
        model_type="qwen2", hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
        num_attention_heads=28, num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False,
        max_position_embeddings=131072),
}


@dataclass(frozen=True)
class ModelShape:
    """Sizes of a decoder-only transformer.

    ``qkv_bias`` / ``o_bias``: the q/k/v and the output projections carry biases (Qwen2: q/k/v
    only; Llama with ``attention_bias``: all four). ``mlp_bias``: the MLP's three projections
    do (Llama with ``mlp_bias``). ``qk_norm``: each layer RMS-normalises q and k per head (Qwen3)."""

    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    tie_word_embeddings: bool
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False
    model_type: str = "unknown"

    @classmethod
    def from_hf_config(cls, config) -> "ModelShape":
        """From a ``transformers.PretrainedConfig`` or a dict of its fields."""
        def get(name: str, default: Any = None) -> Any:
            return config_value(config, name, default)

        missing = [k for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                               "num_attention_heads", "vocab_size") if get(k) is None]
        if missing:
            raise ValueError(f"model config lacks {', '.join(missing)}: not a decoder-only transformer "
                             f"the memory plan knows (Llama/Qwen2/Mistral family)")
        heads = int(get("num_attention_heads"))
        hidden = int(get("hidden_size"))
        model_type = str(get("model_type", "unknown"))
        family = find_family(model_type) or ModelFamily()
        qkv_bias, o_bias = family.projection_biases(config)
        return cls(hidden_size=hidden, intermediate_size=int(get("intermediate_size")),
                   num_layers=int(get("num_hidden_layers")), num_heads=heads,
                   num_kv_heads=int(get("num_key_value_heads") or heads),
                   head_dim=int(get("head_dim") or hidden // heads), vocab_size=int(get("vocab_size")),
                   tie_word_embeddings=bool(get("tie_word_embeddings", False)),
                   qkv_bias=qkv_bias, o_bias=o_bias, mlp_bias=family.mlp_bias(config),
                   qk_norm=family.qk_norm, model_type=model_type)

    @property
    def kv_dim(self) -> int:
        """Width of one of K or V per token per layer (kv heads x head dim)."""
        return self.num_kv_heads * self.head_dim

    def layer_parameters(self) -> int:
        h, q = self.hidden_size, self.num_heads * self.head_dim
        attention = h * q + 2 * h * self.kv_dim + q * h
        if self.qkv_bias:
            attention += q + 2 * self.kv_dim
        if self.o_bias:
            attention += h
        if self.qk_norm:
            attention += 2 * self.head_dim
        mlp = 3 * h * self.intermediate_size
        if self.mlp_bias:
            mlp += 2 * self.intermediate_size + h
        return attention + mlp + 2 * h  # SwiGLU MLP, two RMSNorms

    def num_parameters(self) -> int:
        embedding = self.vocab_size * self.hidden_size
        head = 0 if self.tie_word_embeddings else embedding
        return embedding + self.num_layers * self.layer_parameters() + self.hidden_size + head

    def largest_parameter(self) -> int:
        """Elements of the largest single weight (the embedding or the MLP's)."""
        return max(self.vocab_size * self.hidden_size, self.hidden_size * self.intermediate_size)

    def kv_bytes_per_token(self, element_bytes: int) -> int:
        """KV-cache bytes one token takes across all layers."""
        return self.num_layers * 2 * self.kv_dim * element_bytes


def model_shape(path: str, *, trust_remote_code: bool = False) -> ModelShape:
    """The shape of the model at ``path`` (a directory or Hub id): its config on this machine,
    else the built-in table, else the config downloaded by transformers (config.json only)."""
    from siri.models.loading import local_model_config

    config = local_model_config(path, trust_remote_code=trust_remote_code)
    if config is None and path in KNOWN_MODELS:
        return ModelShape.from_hf_config(KNOWN_MODELS[path])
    if config is None:
        import transformers

        try:
            config = transformers.AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as e:
            raise ValueError(f"model.path {path!r}: no config on this machine and none could be "
                             f"downloaded ({e.__class__.__name__}); give a local model directory") from None
    return ModelShape.from_hf_config(config)
