"""The engine's forward pass over a Hugging Face causal LM's own modules and parameters.

Projections, MLPs, rotary tables and the LM head are the model's own modules and parameters,
called directly (no weight copy, so an optimizer step is visible at the next call); RMSNorm is
``F.rms_norm`` over the model's own weight (bitwise the HF module, in 2 ops instead of 7).
Attention is siri's: ``rotary_append_kv`` rotates q and k and writes k/v to the paged cache,
and ``paged_attention_run`` attends, planned from host facts, so a layer reads no device
memory on the host. A decode layer of a Qwen2/Llama model is 18 torch ops (the projections 3,
rotary+append 1, attention 1, o_proj 2, two RMSNorms 4, MLP 5, residual adds 2).

What differs between the model families (Qwen3's q/k norm, which RoPE variants run, sliding
windows) is each family's module in ``siri.models.families``, looked up by ``model_type``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from siri._ext import _C
from siri.models import SUPPORTED_MODEL_TYPES, find_family, rope_type
from siri.ops.paged_attention import paged_attention_run
from siri.ops.rotary import rotary_append_kv

#: the head sizes siri's paged-attention kernels are compiled for (csrc's one list)
SUPPORTED_HEAD_DIMS: tuple[int, ...] = tuple(_C.SUPPORTED_HEAD_DIMS)


@dataclass
class Batch:
    """Tokens to run, flattened over sequences.

    input_ids, positions, slot_mapping: ``[T]`` int64. block_table: ``[B, max_pages]`` int32.
    kv_lens: ``[T]`` int32, the tokens each one attends to (itself included). query_seq:
    ``[T]`` int32, each token's block-table row, or None for decode (token i is row i).
    max_kv_len, total_kv_len: host ints, an upper bound of kv_lens and their sum (the
    attention's split plan). logits_index: ``[R]`` int64 rows of T whose logits are wanted, or
    None for all of them. chunk_tokens: ``[1]`` int32 on the device, the attention's split
    length read when the kernels run (a CUDA graph's replays), or None to plan from the host
    facts.
    """

    input_ids: torch.Tensor
    positions: torch.Tensor
    slot_mapping: torch.Tensor
    block_table: torch.Tensor
    kv_lens: torch.Tensor
    query_seq: torch.Tensor | None
    max_kv_len: int
    total_kv_len: int
    logits_index: torch.Tensor | None
    chunk_tokens: torch.Tensor | None = None


def _rms_norm(norm: Any, x: torch.Tensor) -> torch.Tensor:
    """The HF RMSNorm module's result, bitwise (normalise in fp32, round, then scale). ``norm``:
    the model's RMSNorm (``weight``, ``variance_epsilon``)."""
    return F.rms_norm(x, (x.shape[-1],), None, norm.variance_epsilon) * norm.weight


class ModelRunner:
    """Runs ``Batch``es through ``model`` (a transformers Qwen2/Qwen3/Llama causal LM)."""

    def __init__(self, model: torch.nn.Module):
        # a transformers model: its config and submodules are read by attribute, untyped
        config: Any = model.config
        family = find_family(config.model_type)
        if family is None:
            raise ValueError(f"siri's engine supports the model types {SUPPORTED_MODEL_TYPES}; "
                             f"got {config.model_type!r} ({type(model).__name__})")
        family.check_engine_config(config)
        self.family = family
        self.model: Any = model
        self.backbone: Any = model.model
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = getattr(config, "num_key_value_heads", None) or self.num_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.num_heads
        self.num_layers = config.num_hidden_layers
        self.vocab_size = config.vocab_size
        self.max_positions = getattr(config, "max_position_embeddings", None)
        self.has_qk_norm = family.qk_norm
        self.rope_type = rope_type(config)
        #: whether a CUDA graph can capture this model's rotary module (see ``ModelFamily``)
        self.rope_graph_capturable = family.rope_graph_capturable(self.rope_type)
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
        """Returns ``[R, V]`` logits of the rows in ``batch.logits_index`` (all T rows when it
        is None), after writing every token's K/V into the caches."""
        hidden = self.backbone.embed_tokens(batch.input_ids)                       # [T, H]
        cos, sin = self.backbone.rotary_emb(hidden.unsqueeze(0), batch.positions.unsqueeze(0))
        cos, sin = cos[0], sin[0]                                                  # [T, D]
        for index, layer in enumerate(self.backbone.layers):
            attended = self._attention(layer.self_attn, _rms_norm(layer.input_layernorm, hidden), cos, sin, batch,
                                       k_caches[index], v_caches[index])
            hidden = hidden + attended
            hidden = hidden + layer.mlp(_rms_norm(layer.post_attention_layernorm, hidden))
        if batch.logits_index is not None:
            hidden = hidden.index_select(0, batch.logits_index)
        return self.model.lm_head(_rms_norm(self.backbone.norm, hidden))

    def _attention(self, attn, x, cos, sin, batch, k_cache, v_cache):
        tokens = x.shape[0]
        q, k, v = attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)
        if self.has_qk_norm:
            q = _rms_norm(attn.q_norm, q.view(tokens, self.num_heads, self.head_dim))
            k = _rms_norm(attn.k_norm, k.view(tokens, self.num_kv_heads, self.head_dim))
        q = rotary_append_kv(q, k, v, cos, sin, k_cache, v_cache, batch.slot_mapping)
        out = paged_attention_run(q, k_cache, v_cache, batch.block_table, batch.kv_lens, batch.query_seq,
                                  max_kv_len=batch.max_kv_len, total_kv_len=batch.total_kv_len, scale=attn.scaling,
                                  chunk_tokens=batch.chunk_tokens)
        return attn.o_proj(out.view(tokens, -1))
