"""The bridge to transformers: a GPT of this template as ``GPT2LMHeadModel`` (arch gpt2) or ``LlamaForCausalLM``
(arch llama), and a saved model of those two classes as this template's model keys and weights.

transformers is optional (the ``hf`` extra) and is imported only when a function here needs it.

Layouts: GPT-2's ``Conv1D`` stores a linear layer as (in, out), so those weights are transposed both ways. Ours
fuses projections that Llama keeps apart — ``c_attn`` is q, k, v stacked and ``c_fc`` is gate, up stacked — so
they are split on export and stacked on import. ``GPT2LMHeadModel`` always has biases: a model trained without
them exports zero biases, which compute the same function.

Vocabulary: the embedding rows past the tokenizer's size (padding to a multiple of 64, never a target and never
sampled) are dropped on export, so the exported model's vocabulary is its tokenizer's; an imported model keeps
its own vocabulary size, so its logits, and its loss, stay exactly its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from model.gpt import GPT, TOKENIZER_KEYS, TRAINING_ONLY, GPTConfig, ModelConfigError
from scheduling.spec import first_line

# The model keys a transformers config sets on import (neither class has a query/key norm or a logit cap); dropout
# and activation checkpointing stay the run's own.
ARCH_KEYS = (
    "arch",
    "n_layer",
    "n_head",
    "n_kv_head",
    "n_embd",
    "block_size",
    "bias",
    "mlp_hidden",
    "tie_embeddings",
    "activation",
    "rope_theta",
    "norm_eps",
    "qk_norm",
    "logit_softcap",
)
# Model keys that an export need not carry: training's own (TRAINING_ONLY), the tokenizer's (its vocabulary is
# written) and the document mask's reset positions (docs/huggingface.md says what it leaves out). Any other key of
# GPTConfig that ARCH_KEYS lacks (a fork's) is exported only at its default: its code is not in transformers' class.
NOT_EXPORTED = (*TRAINING_ONLY, *TOKENIZER_KEYS, "reset_positions")
# GPT-2's activation_function for each model.activation, and the names transformers also gives them
GPT2_ACTIVATIONS = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu2": "relu2"}
GPT2_ACTIVATION_OF = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu2": "relu2"}

# Per block: (our name, their names stacked along dim 0 in ours, stored transposed by them)
GPT2_BLOCK = [
    (f"{part}.{p}", (f"{part}.{p}",), p == "weight" and "." in part)
    for part in ("ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj")
    for p in ("weight", "bias")
]
LLAMA_BLOCK = [
    ("ln_1.weight", ("input_layernorm.weight",), False),
    ("attn.c_attn.weight", ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"), False),
    ("attn.c_proj.weight", ("self_attn.o_proj.weight",), False),
    ("ln_2.weight", ("post_attention_layernorm.weight",), False),
    ("mlp.c_fc.weight", ("mlp.gate_proj.weight", "mlp.up_proj.weight"), False),
    ("mlp.c_proj.weight", ("mlp.down_proj.weight",), False),
]


def require_transformers(feature: str) -> Any:
    """The transformers module, or a one-line error saying that ``feature`` needs the ``hf`` extra."""
    try:
        import transformers
    except ImportError:
        raise ModelConfigError(
            f"{feature} needs transformers, which is not installed; install the hf extra: pip install -e '.[hf]'"
        ) from None
    with quiet_imports():  # its models import torchao where it is installed
        import transformers.modeling_utils  # noqa: F401
    return transformers


# What importing torchao logs where it is installed: its kernels built for another Python or torch, and torch's
# deprecation of how it registers its types; a screen of warnings about kernels the template does not use.
NOISY_ON_IMPORT = ("torchao", "torch.utils._pytree")


@contextmanager
def quiet_imports() -> Iterator[None]:
    """The loggers of ``NOISY_ON_IMPORT`` at ERROR only while an import runs, then as they were."""
    import logging

    loggers = [logging.getLogger(name) for name in NOISY_ON_IMPORT]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


@contextmanager
def quiet() -> Iterator[None]:
    """transformers without its progress bars and warnings (a loading report of the missing tensors, which the
    caller turns into its own one line), restored afterwards."""
    from transformers.utils import logging as hf_logging

    bars, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def transformers_config(
    config: GPTConfig,
    vocab_size: int | None = None,
    *,
    eos_token_id: int | None = None,
    bos_token_id: int | None = None,
) -> Any:
    """The transformers config of the same model: ``GPT2Config`` for arch gpt2, ``LlamaConfig`` for llama, with
    ``vocab_size`` rows (default: the model's). A setting the class cannot express raises ``ModelConfigError``."""
    t = require_transformers("exporting to transformers")
    vocab = vocab_size or config.vocab_size
    tokens = {"bos_token_id": bos_token_id, "eos_token_id": eos_token_id, "tie_word_embeddings": config.tie_embeddings}
    if config.qk_norm:
        raise ModelConfigError(
            "model.qk_norm",
            "false to export (GPT2LMHeadModel and LlamaForCausalLM have no query/key norm)",
            config.qk_norm,
        )
    if config.logit_softcap is not None:
        raise ModelConfigError(
            "model.logit_softcap",
            "null to export (GPT2LMHeadModel and LlamaForCausalLM do not cap logits)",
            config.logit_softcap,
        )
    if config.arch not in FORMATS:
        raise ModelConfigError("model.arch", f"one of {', '.join(FORMATS)} to export", config.arch)
    for f in fields(config):
        value = getattr(config, f.name)
        if f.name not in ARCH_KEYS + NOT_EXPORTED and value != f.default:
            raise ModelConfigError(
                f"model.{f.name}", f"{f.default!r} to export (model/hf.py does not carry it into transformers)", value
            )
    return FORMATS[config.arch].config(t, config, vocab, tokens)


def gpt2_config(t: Any, config: GPTConfig, vocab: int, tokens: dict[str, Any]) -> Any:
    if config.activation not in GPT2_ACTIVATIONS:  # a fork's own: GPT2LMHeadModel would compute another model
        raise ModelConfigError(
            "model.activation",
            f"one of {', '.join(GPT2_ACTIVATIONS)} to export (model/hf.py's GPT2_ACTIVATIONS)",
            config.activation,
        )
    if config.kv_heads != config.n_head:
        raise ModelConfigError(
            "model.n_kv_head",
            "null with arch=gpt2 (GPT2LMHeadModel has no grouped-query attention; arch=llama exports it)",
            config.n_kv_head,
        )
    return t.GPT2Config(
        vocab_size=vocab,
        n_positions=config.block_size,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        n_inner=config.hidden,
        activation_function=GPT2_ACTIVATIONS[config.activation],
        resid_pdrop=config.dropout,
        embd_pdrop=config.dropout,
        attn_pdrop=config.dropout,
        layer_norm_epsilon=config.norm_eps,
        **tokens,
    )


def llama_config(t: Any, config: GPTConfig, vocab: int, tokens: dict[str, Any]) -> Any:
    # LlamaForCausalLM drops out only attention weights: dropout, a training setting, is not carried over.
    return t.LlamaConfig(
        vocab_size=vocab,
        hidden_size=config.n_embd,
        intermediate_size=config.hidden,
        num_hidden_layers=config.n_layer,
        num_attention_heads=config.n_head,
        num_key_value_heads=config.kv_heads,
        head_dim=config.head_dim,
        max_position_embeddings=config.block_size,
        rms_norm_eps=config.norm_eps,
        rope_theta=config.rope_theta,
        hidden_act="silu",
        attention_bias=False,
        mlp_bias=False,
        **tokens,
    )


def _split_rows(config: GPTConfig, ours: str) -> list[int]:
    """How a fused weight of ours splits into theirs: q, k, v heads, or the gate and up halves."""
    if ours.startswith("attn.c_attn"):
        d = config.head_dim
        return [config.n_head * d, config.kv_heads * d, config.kv_heads * d]
    return [config.hidden, config.hidden]


def to_transformers_state_dict(
    state: dict[str, torch.Tensor], config: GPTConfig, vocab_size: int | None = None
) -> dict[str, torch.Tensor]:
    """Our ``state_dict`` in the names and layouts of ``transformers_config(config, vocab_size)``'s model, the
    embedding and head cut to ``vocab_size`` rows; a model without biases gets zero ones under arch gpt2."""
    vocab = vocab_size or config.vocab_size
    f = FORMATS[config.arch]
    block_prefix, embedding = f.block_prefix, f.embedding

    def ours(name: str) -> torch.Tensor:
        if name in state:
            return state[name]
        weight = state[name.rsplit(".", 1)[0] + ".weight"]  # a bias GPT-2 has and this model does not
        return torch.zeros(weight.shape[0], dtype=weight.dtype)

    out = {embedding: state["wte.weight"][:vocab], "lm_head.weight": state["lm_head.weight"][:vocab]}
    out.update({theirs: ours(name) for name, theirs in f.top})
    for i in range(config.n_layer):
        for name, theirs, transposed in f.block:
            w = ours(f"blocks.{i}.{name}")
            parts = w.split(_split_rows(config, name)) if len(theirs) > 1 else [w]
            for their_name, part in zip(theirs, parts, strict=True):
                out[f"{block_prefix}{i}.{their_name}"] = part.t() if transposed else part
    return {k: v.contiguous() for k, v in out.items()}


def from_transformers_state_dict(state: dict[str, torch.Tensor], config: GPTConfig) -> dict[str, torch.Tensor]:
    """A transformers GPT-2 or Llama ``state_dict`` as ours for ``config`` (its arch, from ``architecture``):
    fused projections stacked, GPT-2's Conv1D weights transposed, position embeddings cut to ``block_size``."""
    f = FORMATS[config.arch]
    block_prefix, embedding = f.block_prefix, f.embedding
    out = {"wte.weight": state[embedding], "lm_head.weight": state.get("lm_head.weight", state[embedding])}
    out.update({name: state[theirs] for name, theirs in f.top})
    if "wpe.weight" in out:
        out["wpe.weight"] = out["wpe.weight"][: config.block_size]
    for i in range(config.n_layer):
        for name, theirs, transposed in f.block:
            w = torch.cat([state[f"{block_prefix}{i}.{t}"] for t in theirs])
            out[f"blocks.{i}.{name}"] = w.t() if transposed else w
    return {k: v.contiguous() for k, v in out.items()}


def to_transformers(
    model: GPT, vocab_size: int, *, eos_token_id: int, bos_token_id: int, dtype: torch.dtype = torch.float32
) -> Any:
    """``model`` as a transformers model (``GPT2LMHeadModel`` or ``LlamaForCausalLM``) in ``dtype`` with its first
    ``vocab_size`` rows (those of its softmax), its generation config greedy-ready (end-of-text as eos and pad)."""
    t = require_transformers("exporting to transformers")
    config = transformers_config(model.config, vocab_size, eos_token_id=eos_token_id, bos_token_id=bos_token_id)
    weights = to_transformers_state_dict(model.state_dict(), model.config, vocab_size)
    hf = t.AutoModelForCausalLM.from_config(config).to(dtype)
    hf.load_state_dict({k: v.to(dtype) for k, v in weights.items()}, strict=True)
    hf.tie_weights()
    hf.generation_config.pad_token_id = eos_token_id  # no pad token: batches pad with end-of-text, as GPT-2's do
    return hf.eval()


def architecture(hf_config: Any, source: str) -> dict[str, Any]:
    """Our model keys (``ARCH_KEYS``; ``activation`` only for gpt2, ``rope_theta`` only for llama) for a
    transformers GPT-2 or Llama config; what our GPT cannot compute raises ``ModelConfigError`` naming ``source``
    and the setting."""
    kind = getattr(hf_config, "model_type", None)
    found = next((f for f in FORMATS.values() if f.model_type == kind), None)
    if found is None:
        raise ModelConfigError(
            f"model.init_from: {source} holds a {kind!r} model (model_type in config.json); "
            f"only {' and '.join(CLASSES.values())} style models ({', '.join(FORMATS)}) can be "
            "imported"
        )

    def refuse(setting: str, value: Any, allowed: str) -> ModelConfigError:
        return ModelConfigError(
            f"model.init_from: {source} has {setting}={value!r} in config.json; only {allowed} can be imported"
        )

    keys = found.read(hf_config, refuse, bool(getattr(hf_config, "tie_word_embeddings", True)))
    return {**keys, "qk_norm": False, "logit_softcap": None}


def read_gpt2(c: Any, refuse: Callable[..., Exception], tie: bool) -> dict[str, Any]:
    if c.activation_function not in GPT2_ACTIVATION_OF:
        raise refuse("activation_function", c.activation_function, " or ".join(GPT2_ACTIVATION_OF))
    for setting, wanted in (
        ("scale_attn_weights", True),
        ("scale_attn_by_inverse_layer_idx", False),
        ("add_cross_attention", False),
    ):
        if bool(getattr(c, setting, wanted)) != wanted:
            raise refuse(setting, getattr(c, setting), f"{setting}={str(wanted).lower()}")
    return {
        "arch": "gpt2",
        "n_layer": c.n_layer,
        "n_head": c.n_head,
        "n_kv_head": None,
        "n_embd": c.n_embd,
        "block_size": c.n_positions,
        "bias": True,
        "mlp_hidden": c.n_inner or None,
        "tie_embeddings": tie,
        "activation": GPT2_ACTIVATION_OF[c.activation_function],
        "norm_eps": float(c.layer_norm_epsilon),
    }


def read_llama(c: Any, refuse: Callable[..., Exception], tie: bool) -> dict[str, Any]:
    rope = dict(getattr(c, "rope_parameters", None) or getattr(c, "rope_scaling", None) or {})
    theta = rope.get("rope_theta", getattr(c, "rope_theta", 10000.0))
    checks = (
        ("hidden_act", c.hidden_act, "silu"),
        ("attention_bias", bool(c.attention_bias), False),
        ("mlp_bias", bool(getattr(c, "mlp_bias", False)), False),
        ("rope_type", rope.get("rope_type", rope.get("type", "default")), "default"),
        (
            "head_dim",
            getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads,
            c.hidden_size // c.num_attention_heads,
        ),
    )
    for setting, value, wanted in checks:
        if value != wanted:
            raise refuse(setting, value, f"{setting}={wanted!r}")
    return {
        "arch": "llama",
        "n_layer": c.num_hidden_layers,
        "n_head": c.num_attention_heads,
        "n_kv_head": c.num_key_value_heads,
        "n_embd": c.hidden_size,
        "block_size": c.max_position_embeddings,
        "bias": False,
        "mlp_hidden": c.intermediate_size,
        "tie_embeddings": tie,
        "rope_theta": float(theta),
        "norm_eps": float(c.rms_norm_eps),
    }


@dataclass(frozen=True)
class Format:
    """How one architecture style maps onto its transformers class; every difference between the two is here."""

    cls: str  # the transformers class
    model_type: str  # config.json's model_type
    block_prefix: str  # where their blocks live
    embedding: str  # their token embedding
    top: list[tuple[str, str]]  # (our name, theirs) outside the blocks, beside the embedding and the head
    block: list[tuple[str, tuple[str, ...], bool]]  # per block: ours, theirs stacked in ours, stored transposed
    config: Callable[..., Any]  # (transformers, our config, vocabulary, token settings) → their config
    read: Callable[..., dict[str, Any]]  # (their config, refuse, tied) → our model keys


FORMATS = {
    "gpt2": Format(
        "GPT2LMHeadModel",
        "gpt2",
        "transformer.h.",
        "transformer.wte.weight",
        [
            ("wpe.weight", "transformer.wpe.weight"),
            ("ln_f.weight", "transformer.ln_f.weight"),
            ("ln_f.bias", "transformer.ln_f.bias"),
        ],
        GPT2_BLOCK,
        gpt2_config,
        read_gpt2,
    ),
    "llama": Format(
        "LlamaForCausalLM",
        "llama",
        "model.layers.",
        "model.embed_tokens.weight",
        [("ln_f.weight", "model.norm.weight")],
        LLAMA_BLOCK,
        llama_config,
        read_llama,
    ),
}
CLASSES = {arch: f.cls for arch, f in FORMATS.items()}


def read_config(folder: Path) -> Any:
    """The transformers config saved in ``folder`` (no network), or a one-line error naming the folder."""
    t = require_transformers("model.init_from")
    try:
        return t.AutoConfig.from_pretrained(str(folder), local_files_only=True)
    except Exception as e:  # missing or unreadable config.json, an unknown model_type
        raise ModelConfigError(f"model.init_from: {folder}/config.json cannot be read ({first_line(e)})") from None


def read_weights(folder: Path, config: GPTConfig) -> dict[str, torch.Tensor]:
    """The weights saved in ``folder`` (safetensors or PyTorch files, sharded or not) as our fp32 state dict for
    ``config``."""
    t = require_transformers("model.init_from")
    try:
        with quiet():
            hf, info = t.AutoModelForCausalLM.from_pretrained(
                str(folder), local_files_only=True, output_loading_info=True
            )
    except Exception as e:
        reason = first_line(e)
        raise ModelConfigError(f"model.init_from: the weights in {folder} cannot be loaded ({reason})") from None
    missing = sorted(info.get("missing_keys") or [])  # transformers would start these from random values
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise ModelConfigError(f"model.init_from: the weights in {folder} lack {shown}, which its config.json has")
    state = {k: v.float() for k, v in hf.state_dict().items()}
    return from_transformers_state_dict(state, config)
