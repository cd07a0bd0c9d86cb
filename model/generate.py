"""Sampling from a GPT: temperature, top-k and top-p (nucleus), with a KV cache; prompt text → text."""

from __future__ import annotations

import contextlib

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from model.gpt import GPT, GPTConfig


class KVCache:
    """Keys and values of every layer for positions 0..length-1, preallocated to ``max_length``.

    The buffers are allocated on the first update, with the device and dtype of the keys the model computes
    (so under bf16 autocast the cache holds bf16 and attention sees one dtype), unless given here.
    """

    def __init__(self, config: GPTConfig, batch_size: int, max_length: int, device=None, dtype=None):
        self.shape = (config.n_layer, batch_size, config.kv_heads, max_length, config.head_dim)
        self.k = self.v = None
        if device is not None and dtype is not None:
            self._allocate(torch.device(device), dtype)
        self.length = 0
        self.document_start = None  # (B,) where each row's current document began, with a document separator

    def _allocate(self, device: torch.device, dtype: torch.dtype) -> None:
        self.k = torch.zeros(self.shape, device=device, dtype=dtype)
        self.v = torch.zeros(self.shape, device=device, dtype=dtype)

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
        if c.k is None:
            c._allocate(k.device, k.dtype)
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
    """Next token ids (B, 1) from last-position logits (B, V).

    p = softmax(logits / temperature) restricted to the ``top_k`` most likely ids (ties with the k-th kept),
    then to the smallest set of most likely ids whose mass reaches ``top_p``; the most likely id always stays.
    Temperature 0 is greedy (argmax).
    """
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    greedy = logits.argmax(dim=-1, keepdim=True)
    scaled = logits.float() / temperature
    too_cold = ~scaled.amax(dim=-1, keepdim=True).isfinite()  # a temperature so small that float32 overflows
    logits = torch.where(too_cold, logits.float(), scaled)  # such rows are greedy (their limit), not NaN
    if top_k is not None and 0 < top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and 0.0 < top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs  # mass of the more likely ids
        cut = mass_before >= top_p
        cut[..., 0] = False  # the most likely id stays, whatever float32 makes of a tiny top_p
        sorted_logits = sorted_logits.masked_fill(cut, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    # a greedy row draws from its one-hot: multinomial refuses the inf or NaN its logits may hold (fp16 overflow)
    probs = torch.where(too_cold, torch.zeros_like(logits).scatter_(-1, greedy, 1.0), logits.softmax(dim=-1))
    return torch.where(too_cold, greedy, torch.multinomial(probs, num_samples=1, generator=generator))


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
    ``block_size`` (or without a cache) every step recomputes the last ``block_size`` tokens. A setting out of
    range (temperature < 0, top_k < 1, top_p outside (0, 1]) is a ValueError, not a filter silently skipped.
    """
    if not temperature >= 0:
        raise ValueError(f"temperature must be ≥ 0 (0 = greedy), got {temperature!r}")
    if top_k is not None and not top_k >= 1:
        raise ValueError(f"top_k must be None or ≥ 1, got {top_k!r}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be None or in (0, 1], got {top_p!r}")
    block = model.config.block_size
    cache = None
    if use_cache and idx.size(1) < block:
        cache = KVCache(model.config, idx.size(0), block)
    step_input = idx
    with _decoding(), _in_eval(model):
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
    return idx


@torch.no_grad()
def full_context_forward(model: GPT, autocast=None) -> None:
    """One forward over a full ``block_size`` context, run the way :func:`generate` runs the model (eval mode,
    :func:`_decoding`, the given autocast): the cost of one sampled token once the context has outgrown the KV
    cache. For timing sampling; it computes nothing that is kept."""
    idx = torch.zeros((1, model.config.block_size), dtype=torch.long, device=next(model.parameters()).device)
    with _decoding(), _in_eval(model), autocast if autocast is not None else contextlib.nullcontext():
        model(idx)


@contextlib.contextmanager
def _in_eval(model: GPT):
    """The model in eval mode (no dropout) while sampling, back in the mode it was in afterwards, however it ends."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@contextlib.contextmanager
def _decoding():
    """How the model runs while sampling: eagerly, even when compiled, since each step's new length and cache
    position would otherwise recompile it; and without cuDNN's attention kernel, which builds an execution plan
    for every new key length, while a KV cache meets a new key length at every token. Flash, memory-efficient
    and math attention need no such plans."""
    set_stance = getattr(torch.compiler, "set_stance", None)  # torch ≥ 2.6
    with (
        set_stance("force_eager") if set_stance is not None else contextlib.nullcontext(),
        sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]),
    ):
        yield


@torch.no_grad()
def encode_as_text(tokenizer, text: str) -> list[int]:
    """The ids of ``text`` as training encodes a document: no token added, and a special token's text in it
    (``<|endoftext|>`` written out) read as text, not as that token."""
    was = tokenizer.encode_special_tokens
    tokenizer.encode_special_tokens = True
    try:
        return tokenizer.encode(text, add_special_tokens=False).ids
    finally:
        tokenizer.encode_special_tokens = was


def sample_text(
    model: GPT,
    tokenizer,
    prompt: str,
    max_new_tokens: int,
    *,
    separator: int,
    temperature: float = 0.8,
    top_k: int | None = 200,
    top_p: float | None = None,
    num_samples: int = 1,
    generator: torch.Generator | None = None,
    autocast=None,
) -> list[str]:
    """``num_samples`` continuations of ``prompt``, each returned as prompt + generated text.

    ``tokenizer`` is a ``tokenizers.Tokenizer`` (the run's tokenizer.json). The samples run as one batch with
    the KV cache; ids past the tokenizer's vocabulary (the model's padding) are never sampled. An empty prompt
    starts from ``separator``, the id of the run's document separator (``data.tokenizer.eot_id``), as a new
    document does. ``autocast`` is the mixed-precision context to generate under.
    """
    device = next(model.parameters()).device
    prompt_ids = encode_as_text(tokenizer, prompt) if prompt else []
    start = prompt_ids or [separator]
    idx = torch.tensor([start] * num_samples, dtype=torch.long, device=device)
    with autocast if autocast is not None else contextlib.nullcontext():
        out = generate(
            model,
            idx,
            max_new_tokens,
            temperature,
            top_k,
            top_p,
            vocab_size=tokenizer.get_vocab_size(),
            generator=generator,
        )
    # Special tokens stay in the text: a generated document separator shows where one file ends.
    return [tokenizer.decode(prompt_ids + row[len(start) :], skip_special_tokens=False) for row in out.tolist()]
