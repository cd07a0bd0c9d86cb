"""Sampling from a GPT: temperature, top-k and top-p (nucleus), with a KV cache."""

from __future__ import annotations

import torch

from model.gpt import GPT, GPTConfig


class KVCache:
    """Keys and values of every layer for positions 0..length-1, preallocated to ``max_length``."""

    def __init__(self, config: GPTConfig, batch_size: int, max_length: int, device, dtype):
        shape = (config.n_layer, batch_size, config.kv_heads, max_length, config.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0

    def layer(self, i: int) -> _LayerCache:
        return _LayerCache(self, i)

    def advance(self, n: int) -> None:
        self.length += n


class _LayerCache:
    def __init__(self, cache: KVCache, i: int):
        self.cache, self.i = cache, i

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, Hkv, T, D) after the cached positions; return all keys and values so far."""
        c, start, end = self.cache, self.cache.length, self.cache.length + k.size(2)
        c.k[self.i, :, :, start:end] = k
        c.v[self.i, :, :, start:end] = v
        return c.k[self.i, :, :, :end], c.v[self.i, :, :, :end]


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Next token ids (B, 1) from last-position logits (B, V). Temperature 0 is greedy (argmax)."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k is not None and 0 < top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and 0.0 < top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop = cumulative - sorted_logits.softmax(dim=-1) > top_p  # keep the smallest set reaching top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)


@torch.no_grad()
def generate(
    model: GPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    vocab_size: int | None = None,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Extend idx (B, T) by ``max_new_tokens`` sampled tokens → (B, T + max_new_tokens).

    ``vocab_size`` masks the padded ids past the tokenizer's vocabulary. With ``use_cache`` the prompt is
    processed once and each new token attends to the cached keys and values; once the context reaches
    ``block_size`` (or without a cache) every step recomputes the last ``block_size`` tokens.
    """
    was_training = model.training
    model.eval()
    block = model.config.block_size
    cache = None
    if use_cache and idx.size(1) < block:
        weight = model.wte.weight
        cache = KVCache(model.config, idx.size(0), block, weight.device, weight.dtype)
    step_input = idx
    for _ in range(max_new_tokens):
        if cache is not None and cache.length + step_input.size(1) > block:
            cache = None  # the context is full: fall back to a sliding window without the cache
        if cache is not None:
            logits, _ = model(step_input, cache=cache)
        else:
            logits, _ = model(idx[:, -block:])
        logits = logits[:, -1, :]
        if vocab_size is not None and vocab_size < logits.size(-1):
            logits[:, vocab_size:] = float("-inf")
        next_id = sample_next(logits, temperature, top_k, top_p, generator)
        idx = torch.cat((idx, next_id), dim=1)
        step_input = next_id
    model.train(was_training)
    return idx
