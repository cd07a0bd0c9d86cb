"""The GPT: a pre-LN decoder-only transformer, GPT-2 style or llama style, in one file.

Shapes: B batch, T time (tokens), C = n_embd, H heads, Hkv key/value heads, D = C / H head size, V vocab.
- ``arch="gpt2"``: learned position embeddings, LayerNorm, GELU MLP (4C; exact or GPT-2's tanh approximation),
  biases unless ``bias=False``.
- ``arch="llama"``: rotary position embeddings, RMSNorm, SwiGLU MLP, no biases (``bias`` is ignored).
Either may use grouped-query attention (``n_kv_head`` < ``n_head``) and an untied output head
(``tie_embeddings=False``). Attention is ``scaled_dot_product_attention`` with a causal mask (flash kernels on
GPU), Q, K and V come from one fused projection, and generation can keep a KV cache (model/generate.py). With a
``document_separator`` attention stays inside each document of the window: FlexAttention with a block mask when
training on a GPU, else a boolean mask, built once per forward; ``reset_positions`` restarts positions there.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from scheduling.spec import SettingError, is_int, is_number


@dataclass(frozen=True)
class Style:
    """What an architecture style (``model.arch``) decides; every difference between the styles is read here."""

    rotary: bool  # rotary position embeddings (else a learned position embedding)
    rms_norm: bool  # RMSNorm (else LayerNorm)
    swiglu: bool  # a SwiGLU MLP of hidden 8C/3 rounded up to 64 (else GELU of hidden 4C)
    biases: bool  # linear layers and norms may have biases (model.bias)


STYLES = {
    "gpt2": Style(rotary=False, rms_norm=False, swiglu=False, biases=True),
    "llama": Style(rotary=True, rms_norm=True, swiglu=True, biases=False),
}
ARCHS = tuple(STYLES)


def relu_squared(x: torch.Tensor) -> torch.Tensor:
    return F.relu(x).square()


# model.activation → the gpt2 MLP's function: a new one is an entry here (model/hf.py's GPT2_ACTIVATIONS to export)
ACTIVATIONS = {
    "gelu": functools.partial(F.gelu, approximate="none"),
    "gelu_tanh": functools.partial(F.gelu, approximate="tanh"),
    "relu2": relu_squared,  # ReLU², the Primer MLP's
}
VOCAB_MULTIPLE = 64  # the model's vocabulary is padded to a multiple of this: faster embedding and head matmuls


def padded_vocab(vocab_size: int) -> int:
    """The model's vocabulary size for a tokenizer of ``vocab_size`` entries (the extra ids are never sampled)."""
    return VOCAB_MULTIPLE * math.ceil(vocab_size / VOCAB_MULTIPLE)


# The GPTConfig keys the tokenizer sets, never conf/model/: the (padded) vocabulary, its first padding id, and
# with data.document_mask the document separator.
TOKENIZER_KEYS = ("vocab_size", "padded_from", "document_separator")
# The GPTConfig keys that change how the model trains, not the function its weights compute: a resume may change
# them (a smaller card's activation checkpointing, a dropout for the rest of the run) and an export leaves them out.
TRAINING_ONLY = ("dropout", "activation_checkpointing", "fused_cross_entropy")


@dataclass
class GPTConfig:
    vocab_size: int = 50304
    block_size: int = 1024
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True
    arch: str = "gpt2"
    n_kv_head: int | None = None  # key/value heads (grouped-query attention); None = n_head
    mlp_hidden: int | None = None  # None: 4C (gpt2), or SwiGLU's 8C/3 rounded up to 64 (llama)
    tie_embeddings: bool = True
    activation: str = "gelu_tanh"  # gpt2 only: GPT-2's tanh-approximated GELU, "gelu" (exact, erf) or "relu2"
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    qk_norm: bool = False  # RMSNorm on each head's queries and keys before attention (bounded logits)
    logit_softcap: float | None = None  # c: output logits c·tanh(logits/c), bounded in (−c, c); None: as computed
    activation_checkpointing: bool = False  # recompute each block in the backward pass: less memory, one more forward
    # the training loss through liger-kernel's fused head + cross-entropy (CUDA): the (B, T, V) logits are never held
    fused_cross_entropy: bool = False
    reset_positions: bool = False  # with document_separator: positions (learned or rotary) restart at each document
    # The token id that begins a document (data.document_mask; set from the tokenizer, not model.*): a token then
    # attends only to the tokens of its own document. None: plain causal attention over the whole window.
    document_separator: int | None = None
    # The first id that pads the vocabulary past the tokenizer's (set from it, not model.*): the ids from here to
    # vocab_size are in no softmax, so losses and evaluations are over the tokenizer's ids, as an export's are.
    # None: no padding (a transformers folder's own vocabulary, or a checkpoint from before).
    padded_from: int | None = None

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head or self.n_head

    @property
    def style(self) -> Style:
        return STYLES[self.arch]

    @property
    def hidden(self) -> int:
        if self.mlp_hidden:
            return self.mlp_hidden
        if self.style.swiglu:
            return 64 * math.ceil(8 * self.n_embd / 3 / 64)
        return 4 * self.n_embd

    @classmethod
    def from_dict(cls, values: dict) -> GPTConfig:
        """A config from its keys (a checkpoint's model_config), the tokenizer's two checked too: a wrong type
        would fail deep in torch."""
        names = {f.name for f in fields(cls)}
        picked = {k: v for k, v in values.items() if k in names}
        if "vocab_size" in picked:
            _positive_int(picked, "vocab_size")
        separator = picked.get("document_separator")
        vocab = picked.get("vocab_size", cls.vocab_size)
        if separator is not None and not (is_int(separator) and 0 <= separator < vocab):
            raise ModelConfigError("model.document_separator", "null or a token id below model.vocab_size", separator)
        padded = picked.get("padded_from")
        if padded is not None and not (is_int(padded) and 0 < padded < vocab):
            raise ModelConfigError("model.padded_from", "null or a token id in (0, model.vocab_size)", padded)
        return cls(**picked)

    def to_dict(self) -> dict:
        return asdict(self)


class ModelConfigError(SettingError):
    """A bad model setting: ``ModelConfigError(key, expected, got)`` or a whole one-line message."""


def _positive_int(m: Mapping[str, Any], key: str) -> None:
    if not is_int(m.get(key)) or m[key] < 1:
        raise ModelConfigError(f"model.{key}", "an integer > 0", m.get(key))


def unused_settings(config: GPTConfig) -> list[str]:
    """Settings ``config.arch`` does not use that differ from their defaults (a sweep of ``model.rope_theta`` on a
    gpt2 model trains one model at every value): a line each to warn of. The gpt2-only ``bias`` and ``activation``
    are left out: a gpt2 preset switched to llama (``model=micro model.arch=llama``) carries them by design."""
    if not STYLES[config.arch].rotary and config.rope_theta != GPTConfig.rope_theta:
        return [
            f"model.rope_theta={config.rope_theta:g}: {config.arch} style has no rotary positions; it has no effect"
        ]
    return []


def check_model_config(m: Mapping[str, Any]) -> None:
    """``cfg.model`` as plain values: a known arch, positive sizes, n_embd divisible by n_head (and an even head
    size for rotary embeddings), dropout in [0, 1), n_kv_head dividing n_head, switches that are booleans, and no
    key GPTConfig does not know (``TOKENIZER_KEYS`` come from the tokenizer, not from here)."""
    known = {f.name for f in fields(GPTConfig)} - set(TOKENIZER_KEYS)
    known |= {"name", "init_from"}  # the preset's name; a transformers folder to start from (training/init_from.py)
    for key in m:
        if key not in known:
            raise ModelConfigError(f"model.{key}", f"absent: model settings are {', '.join(sorted(known))}", m[key])
    arch = m.get("arch")
    if arch not in ARCHS:
        raise ModelConfigError("model.arch", f"one of {', '.join(ARCHS)}", arch)
    for key in ("n_layer", "n_head", "n_embd", "block_size"):
        _positive_int(m, key)
    if m["n_embd"] % m["n_head"]:
        raise ModelConfigError("model.n_embd", f"divisible by model.n_head ({m['n_head']})", m["n_embd"])
    if STYLES[arch].rotary and (m["n_embd"] // m["n_head"]) % 2:
        raise ModelConfigError(
            "model.n_embd", "such that n_embd / n_head is even (rotary embeddings rotate pairs)", m["n_embd"]
        )
    if m.get("activation", "gelu_tanh") not in tuple(ACTIVATIONS):  # a tuple: a list given is refused, not hashed
        raise ModelConfigError("model.activation", f"one of {', '.join(ACTIVATIONS)}", m.get("activation"))
    dropout = m.get("dropout", 0.0)
    if not is_number(dropout) or not 0.0 <= dropout < 1.0:
        raise ModelConfigError("model.dropout", "in [0, 1)", dropout)
    for key in (
        "bias",
        "tie_embeddings",
        "activation_checkpointing",
        "reset_positions",
        "qk_norm",
        "fused_cross_entropy",
    ):
        if key in m and not isinstance(m[key], bool):
            raise ModelConfigError(f"model.{key}", "true or false", m[key])
    kv = m.get("n_kv_head")
    if kv is not None and (not is_int(kv) or kv < 1 or m["n_head"] % kv):
        raise ModelConfigError("model.n_kv_head", f"null or a divisor of model.n_head ({m['n_head']})", kv)
    if m.get("mlp_hidden") is not None:
        _positive_int(m, "mlp_hidden")
    for key in ("rope_theta", "norm_eps"):
        if key in m and (not is_number(m[key]) or m[key] <= 0):
            raise ModelConfigError(f"model.{key}", "a number > 0", m[key])
    cap = m.get("logit_softcap")
    if cap is not None and (not is_number(cap) or cap <= 0):
        raise ModelConfigError("model.logit_softcap", "null or a number > 0", cap)


def norm(config: GPTConfig) -> nn.Module:
    if config.style.rms_norm:
        return nn.RMSNorm(config.n_embd, eps=config.norm_eps)
    return nn.LayerNorm(config.n_embd, eps=config.norm_eps, bias=config.bias and config.style.biases)


def rotary_tables(config: GPTConfig, length: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotary angles for positions 0..length-1: each (length, D/2), fp32."""
    d = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, d, 2, device=device, dtype=torch.float32) / d))
    angles = torch.outer(torch.arange(length, device=device, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (first half, second half) of x (B, H, T, D) by the angles of its positions: (T, D/2), or
    (B, T, D/2) when each sequence has its own positions (``reset_positions``)."""
    x1, x2 = x.float().chunk(2, dim=-1)
    cos, sin = (cos[None, None], sin[None, None]) if cos.dim() == 2 else (cos[:, None], sin[:, None])
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).type_as(x)


def document_starts(idx: torch.Tensor, separator: int, start: int = 0, carried: torch.Tensor | None = None):
    """For each token of idx (B, T), at positions start … start+T−1, the position where its document begins (B, T).

    A separator begins a document, as a BOS token would: it attends to itself alone and predicts the next
    document's first token. Tokens before a window's first separator belong to a document that began at
    ``carried`` (B,) — the KV cache's — or, without one, at the window's first token.
    """
    index = torch.arange(start, start + idx.size(1), device=idx.device)
    before = carried[:, None] if carried is not None else index[:1]
    return torch.where(idx == separator, index, before).cummax(dim=1).values


@functools.cache
def liger_cross_entropy():
    """liger-kernel's fused linear + cross-entropy (``model.fused_cross_entropy``), or None where it is not installed
    or does not load (it needs Triton). Run uncompiled: its Triton kernels stand outside the compiled graph."""
    try:
        from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy
    except Exception:  # absent, or present without a working Triton
        return None
    return torch.compiler.disable(liger_fused_linear_cross_entropy)


_flex_attention = None


def flex_attention(q, k, v, block_mask, enable_gqa: bool) -> torch.Tensor:
    """FlexAttention, compiled once: its fused kernel skips the blocks the mask leaves empty (CUDA)."""
    global _flex_attention
    if _flex_attention is None:
        from torch.nn.attention.flex_attention import flex_attention as flex

        _flex_attention = torch.compile(flex, dynamic=False)
    return _flex_attention(q, k, v, block_mask=block_mask, enable_gqa=enable_gqa)


def document_mask(doc_starts: torch.Tensor, start: int, n_keys: int, flex: bool):
    """What lets query i (at position start + i) see key j: doc_starts[b, i] ≤ j ≤ start + i, its own document.

    Built once per forward and shared by every layer: FlexAttention's block mask (``flex``), else a boolean
    (B, 1, T, n_keys) mask for ``scaled_dot_product_attention``.
    """
    B, T = doc_starts.shape
    if flex:
        from torch.nn.attention.flex_attention import create_block_mask

        def same_document(b, h, q_idx, kv_idx):
            return (kv_idx <= q_idx) & (kv_idx >= doc_starts[b, q_idx])

        return create_block_mask(same_document, B, None, T, n_keys, device=doc_starts.device)
    keys = torch.arange(n_keys, device=doc_starts.device)
    queries = torch.arange(start, start + T, device=doc_starts.device)
    return ((keys >= doc_starts[..., None]) & (keys <= queries[:, None]))[:, None]


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head, self.n_kv, self.d = config.n_head, config.kv_heads, config.head_dim
        bias = config.bias and config.style.biases
        self.c_attn = nn.Linear(config.n_embd, (self.n_head + 2 * self.n_kv) * self.d, bias=bias)  # fused QKV
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=bias)
        self.c_proj.residual_projection = True
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)
        self.rotary = config.style.rotary
        # qk_norm: queries and keys of unit RMS per head, so their dot products (the attention logits) stay
        # bounded whatever the weights' scale; a learned gain per dimension
        self.q_norm = nn.RMSNorm(self.d, eps=config.norm_eps) if config.qk_norm else None
        self.k_norm = nn.RMSNorm(self.d, eps=config.norm_eps) if config.qk_norm else None

    def forward(self, x: torch.Tensor, rope=None, cache=None, mask=None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split([self.n_head * self.d, self.n_kv * self.d, self.n_kv * self.d], dim=2)
        q = q.view(B, T, self.n_head, self.d).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, self.n_kv, self.d).transpose(1, 2)  # (B, Hkv, T, D)
        v = v.view(B, T, self.n_kv, self.d).transpose(1, 2)
        if self.q_norm is not None:  # in fp32 with the norm's fp32 gain: autocast leaves q and k in bf16 or fp16
            q, k = self.q_norm(q.float()).to(q.dtype), self.k_norm(k.float()).to(k.dtype)
        if self.rotary:
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        if cache is not None:
            k, v = cache.update(k, v)  # (B, Hkv, past + T, D)
        gqa = self.n_kv != self.n_head
        if mask is not None and not isinstance(mask, torch.Tensor):  # a FlexAttention block mask
            # contiguous: given the mixed strides rotary leaves (q, k new tensors, v a view), a compiled model's
            # FlexAttention computed wrong outputs (torch 2.13, inductor)
            y = flex_attention(q.contiguous(), k.contiguous(), v.contiguous(), mask, enable_gqa=gqa)
        else:
            # Without a document mask, one query attends to every cached key and a block of queries (training,
            # prefill) is causal; with one, the mask says which keys each query sees.
            y = F.scaled_dot_product_attention(
                q,
                k,
                v,
                attn_mask=mask,
                dropout_p=self.dropout if self.training else 0.0,
                is_causal=mask is None and T > 1,
                enable_gqa=gqa,
            )
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """down(activation(up(x))) (gpt2: ``model.activation``) or SwiGLU (llama): down(silu(gate(x)) · up(x))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.swiglu = config.style.swiglu
        self.activation = ACTIVATIONS[config.activation]
        bias = config.bias and config.style.biases
        self.c_fc = nn.Linear(config.n_embd, (2 if self.swiglu else 1) * config.hidden, bias=bias)  # fused gate+up
        self.c_proj = nn.Linear(config.hidden, config.n_embd, bias=bias)
        self.c_proj.residual_projection = True
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c_fc(x)
        if self.swiglu:
            gate, up = h.chunk(2, dim=-1)
            h = F.silu(gate) * up
        else:
            h = self.activation(h)
        return self.dropout(self.c_proj(h))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1, self.attn = norm(config), CausalSelfAttention(config)
        self.ln_2, self.mlp = norm(config), MLP(config)

    def forward(self, x: torch.Tensor, rope=None, cache=None, mask=None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), rope, cache, mask)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        if config.arch not in ARCHS:
            raise ModelConfigError("model.arch", f"one of {', '.join(ARCHS)}", config.arch)
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = None if config.style.rotary else nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = norm(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        # looked up here, not in forward: a compiled forward would trace the lookup's cache
        self.fused_loss = liger_cross_entropy() if config.fused_cross_entropy else None
        if config.style.rotary:
            cos, sin = rotary_tables(config, config.block_size)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """The output logits of hidden states ``x``. With logit_softcap c: c·tanh(logits/c) in fp32, smooth and
        bounded, so no logit can run away however high the lr. The padding ids (``padded_from`` on) at −inf: no
        probability goes to them."""
        logits = self.lm_head(x)
        c = self.config.logit_softcap
        if c is not None:
            logits = c * torch.tanh(logits.float() / c)
        if self.config.padded_from is not None:
            logits[..., self.config.padded_from :] = float("-inf")  # in place: a few columns, not a copy of them all
        return logits

    def _init_weights(self, module: nn.Module) -> None:
        """GPT-2 init: N(0, 0.02) weights, zero biases, residual projections scaled by 1/√(2·n_layer)."""
        if isinstance(module, nn.Linear):
            std = 0.02
            if getattr(module, "residual_projection", False):
                std /= math.sqrt(2 * self.config.n_layer)
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def materialize(self, device: torch.device | str) -> GPT:
        """Give a model built on the meta device real (uninitialised) storage on ``device``, ready for
        ``load_state_dict``: the output head stays tied to the embedding and the rotary tables are computed."""
        self.to_empty(device=device)
        if self.config.tie_embeddings:  # to_empty gives each module its own new tensor
            self.lm_head.weight = self.wte.weight
        self.reset_buffers()
        return self

    def reset_buffers(self) -> None:
        """Recompute the non-persistent rotary tables (after building on the meta device and ``to_empty``)."""
        if self.config.style.rotary:
            cos, sin = rotary_tables(self.config, self.config.block_size, device=self.wte.weight.device)
            self.rope_cos.copy_(cos)
            self.rope_sin.copy_(sin)

    def num_params(self, exclude_embeddings: bool = False) -> int:
        """Unique parameters (a tied embedding counts once). ``exclude_embeddings`` drops the lookup tables
        that do no matmul: the position embedding, and the token embedding when the head is untied."""
        n = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            if self.wpe is not None:
                n -= self.wpe.weight.numel()
            if not self.config.tie_embeddings:
                n -= self.wte.weight.numel()
        return n

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        cache=None,
        reduction: str = "mean",
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx (B, T) token ids → logits (B, T, V) and the cross-entropy against targets (B, T); without targets
        the last position's logits alone, (B, 1, V), and None: what sampling needs.
        With ``fused_cross_entropy``, in training on CUDA, the mean loss alone: the logits are None.

        With a KV cache the positions continue after the cached ones and the cache grows by T. With a
        ``document_separator`` each token attends only to the earlier tokens of its own document in the window
        (and with ``reset_positions`` its position counts from its document's first token).
        """
        B, T = idx.shape
        start = cache.length if cache is not None else 0
        if start and T > 1:
            raise ValueError("a KV cache takes a block of tokens only as its first input, then one at a time")
        if start + T > self.config.block_size:
            raise ValueError(f"sequence of {start + T} tokens exceeds model.block_size={self.config.block_size}")
        x = self.wte(idx)  # (B, T, C)
        positions, mask = torch.arange(start, start + T, device=idx.device), None
        if self.config.document_separator is not None:
            carried = cache.document_start if cache is not None and start else None
            starts = document_starts(idx, self.config.document_separator, start, carried)  # (B, T)
            if cache is not None:
                cache.document_start = starts[:, -1]
            # FlexAttention (compiled) for training on a GPU, where it has no dropout to apply; a boolean mask for
            # evaluation and sampling, which also run eagerly (generate's force_eager stance) where flex would crawl
            flex = idx.is_cuda and cache is None and self.training and self.config.dropout == 0
            mask = document_mask(starts, start, start + T, flex)
            if self.config.reset_positions:
                positions = positions - starts  # (B, T): each document counts from 0
        rope = None
        if self.wpe is not None:
            x = x + self.wpe(positions)
        else:
            rope = (self.rope_cos[positions], self.rope_sin[positions])
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            layer_cache = cache.layer(i) if cache is not None else None
            if self.config.activation_checkpointing and self.training and layer_cache is None:
                x = checkpoint(block, x, rope, None, mask, use_reentrant=False)
            else:
                x = block(x, rope, layer_cache, mask)
        if cache is not None:
            cache.advance(T)
        x = self.ln_f(x)
        if targets is None:
            return self.head(x[:, -1:, :]), None  # (B, 1, V): only the last position is needed
        if self.fused_loss is not None and self.training and reduction == "mean" and x.is_cuda:
            # the mean loss, the head's matmul and the cross-entropy fused in chunks: no logits are returned
            weight = self.lm_head.weight[: self.config.padded_from]  # the tokenizer's rows: padding is in no softmax
            loss = self.fused_loss(
                x.reshape(-1, x.size(-1)), weight, targets.reshape(-1), softcap=self.config.logit_softcap
            )
            return None, loss
        logits = self.head(x)
        # in fp32 whatever the logits' dtype: autocast would cast them, but FSDP's bf16 parameters run without it
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), reduction=reduction)
        return logits, loss
