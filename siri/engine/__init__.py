"""siri's rollout engine: paged KV cache, continuous batching, per-request caps, over a
Hugging Face model's own parameters."""
from siri.engine.llm_engine import LLMEngine, sequence_seed
from siri.models import SUPPORTED_MODEL_TYPES
from siri.engine.params import CompletionOutput, SamplingParams

__all__ = ["LLMEngine", "SamplingParams", "CompletionOutput", "SUPPORTED_MODEL_TYPES", "sequence_seed"]
