"""The GPT model: its definition, config and config check (``model.gpt``), FLOP accounting (``model.flops``)
and sampling with a KV cache (``model.generate``)."""

from model.generate import KVCache, full_context_forward, generate, sample_next, sample_text
from model.gpt import (
    ARCHS,
    GPT,
    TOKENIZER_KEYS,
    TRAINING_ONLY,
    GPTConfig,
    ModelConfigError,
    check_model_config,
    padded_vocab,
)

__all__ = [
    "ARCHS",
    "GPT",
    "GPTConfig",
    "KVCache",
    "ModelConfigError",
    "TOKENIZER_KEYS",
    "TRAINING_ONLY",
    "check_model_config",
    "full_context_forward",
    "generate",
    "padded_vocab",
    "sample_next",
    "sample_text",
]
