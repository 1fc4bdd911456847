"""The engine's forward pass over a Hugging Face causal LM's own modules and parameters.

Norms, projections, MLPs, rotary embeddings and the LM head are the model's own modules,
called directly (no weight copy, so an optimizer step is visible at the next call). Attention
is siri's: K/V go into the paged cache with ``append_kv``; queries attend with
``paged_prefill_attention`` (new tokens, causal, against their pages) or
``paged_decode_attention`` (one token per sequence).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from siri.ops.paged_attention import append_kv, paged_decode_attention, paged_prefill_attention

SUPPORTED_MODEL_TYPES = ("qwen2", "qwen3", "llama")
SUPPORTED_HEAD_DIMS = (64, 80, 96, 128, 256)


@dataclass
class Batch:
    """Tokens to run, flattened over sequences.

    input_ids, positions, slot_mapping: ``[T]`` int64. block_table: ``[B, max_pages]`` int32.
    seq_lens: ``[B]`` int32 (cached tokens after this step). cu_seqlens: ``[B + 1]`` int32 for
    prefill (None for decode, where T == B). logits_index: ``[R]`` int64 rows of T whose logits
    are wanted.
    """

    input_ids: torch.Tensor
    positions: torch.Tensor
    slot_mapping: torch.Tensor
    block_table: torch.Tensor
    seq_lens: torch.Tensor
    cu_seqlens: torch.Tensor | None
    logits_index: torch.Tensor


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class ModelRunner:
    """Runs ``Batch``es through ``model`` (a transformers Qwen2/Qwen3/Llama causal LM)."""

    def __init__(self, model: torch.nn.Module):
        config = model.config
        if config.model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(f"siri's engine supports the model types {SUPPORTED_MODEL_TYPES}; "
                             f"got {config.model_type!r} ({type(model).__name__})")
        if getattr(config, "use_sliding_window", False) and config.model_type != "llama":
            raise ValueError("sliding-window attention is not supported by siri's engine")
        self.model = model
        self.backbone = model.model
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = getattr(config, "num_key_value_heads", None) or self.num_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.num_heads
        self.num_layers = config.num_hidden_layers
        self.vocab_size = config.vocab_size
        self.max_positions = getattr(config, "max_position_embeddings", None)
        self.has_qk_norm = config.model_type == "qwen3"
        if self.head_dim not in SUPPORTED_HEAD_DIMS:
            raise ValueError(f"siri's paged attention supports head_dim in {SUPPORTED_HEAD_DIMS}; this model has "
                             f"head_dim {self.head_dim}")

    @property
    def dtype(self) -> torch.dtype:
        return self.backbone.embed_tokens.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.backbone.embed_tokens.weight.device

    @torch.no_grad()
    def forward(self, batch: Batch, k_caches: list[torch.Tensor], v_caches: list[torch.Tensor]) -> torch.Tensor:
        """Returns ``[R, V]`` logits of the rows in ``batch.logits_index``, after writing every
        token's K/V into the caches."""
        hidden = self.backbone.embed_tokens(batch.input_ids)                       # [T, H]
        cos, sin = self.backbone.rotary_emb(hidden.unsqueeze(0), batch.positions.unsqueeze(0))
        cos, sin = cos[0].unsqueeze(1), sin[0].unsqueeze(1)                        # [T, 1, D]
        for index, layer in enumerate(self.backbone.layers):
            residual = hidden
            hidden = self._attention(layer.self_attn, layer.input_layernorm(hidden), cos, sin, batch,
                                     k_caches[index], v_caches[index])
            hidden = residual + hidden
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        last = self.backbone.norm(hidden.index_select(0, batch.logits_index))
        return self.model.lm_head(last)

    def _attention(self, attn, x, cos, sin, batch, k_cache, v_cache):
        tokens = x.shape[0]
        q = attn.q_proj(x).view(tokens, self.num_heads, self.head_dim)
        k = attn.k_proj(x).view(tokens, self.num_kv_heads, self.head_dim)
        v = attn.v_proj(x).view(tokens, self.num_kv_heads, self.head_dim)
        if self.has_qk_norm:
            q, k = attn.q_norm(q), attn.k_norm(k)
        q = (q * cos + _rotate_half(q) * sin).to(x.dtype).contiguous()
        k = (k * cos + _rotate_half(k) * sin).to(x.dtype).contiguous()
        append_kv(k, v.contiguous(), k_cache, v_cache, batch.slot_mapping)
        if batch.cu_seqlens is None:
            out = paged_decode_attention(q, k_cache, v_cache, batch.block_table, batch.seq_lens,
                                         scale=attn.scaling)
        else:
            out = paged_prefill_attention(q, k_cache, v_cache, batch.block_table, batch.seq_lens,
                                          batch.cu_seqlens, scale=attn.scaling)
        return attn.o_proj(out.reshape(tokens, self.num_heads * self.head_dim))
