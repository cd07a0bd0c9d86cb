"""Equivalence with the reference implementations in transformers: the same weights give the same logits, and the
presets have the parameter counts transformers' models of the same shape have."""

from __future__ import annotations

import pytest
import torch

from model import GPT

GPT2_VOCAB = 50257  # GPT-2's tokenizer
LLAMA_VOCAB = 32000  # LLaMA's tokenizer

# GPT-2's presets and the sizes published for the models they are named after (medium is 354.8M, published as
# "345M"/"350M"), with the tolerance each name allows.
GPT2_SIZES = {"gpt2": (124e6, 0.01), "gpt2-medium": (350e6, 0.015), "gpt2-large": (774e6, 0.01),
              "gpt2-xl": (1558e6, 0.01)}  # fmt: skip


def transformers_config(config, vocab: int | None = None):
    """The transformers config of the same shape: ``GPT2Config`` for arch gpt2, ``LlamaConfig`` for llama."""
    from transformers import GPT2Config, LlamaConfig

    vocab = vocab or config.vocab_size
    if config.arch == "gpt2":
        return GPT2Config(vocab_size=vocab, n_positions=config.block_size, n_embd=config.n_embd,
                          n_layer=config.n_layer, n_head=config.n_head, resid_pdrop=0.0, embd_pdrop=0.0,
                          attn_pdrop=0.0, activation_function="gelu_new", layer_norm_epsilon=config.norm_eps,
                          tie_word_embeddings=config.tie_embeddings)  # fmt: skip
    return LlamaConfig(vocab_size=vocab, hidden_size=config.n_embd, intermediate_size=config.hidden,
                       num_hidden_layers=config.n_layer, num_attention_heads=config.n_head,
                       num_key_value_heads=config.kv_heads, max_position_embeddings=config.block_size,
                       rms_norm_eps=config.norm_eps, tie_word_embeddings=config.tie_embeddings,
                       rope_parameters={"rope_type": "default", "rope_theta": config.rope_theta})  # fmt: skip


@pytest.mark.parametrize("name", sorted(GPT2_SIZES))
def test_gpt2_presets_count_like_transformers_gpt2_and_match_their_published_size(name, preset, on_meta):
    """All unique parameters (the tied head counts once) at GPT-2's vocabulary of 50257."""
    from transformers import GPT2LMHeadModel

    config = preset(name, GPT2_VOCAB)
    ours = on_meta(config).num_params()
    with torch.device("meta"):
        reference = GPT2LMHeadModel(transformers_config(config, GPT2_VOCAB))
    assert ours == sum(p.numel() for p in reference.parameters())
    nominal, tolerance = GPT2_SIZES[name]
    assert abs(ours - nominal) / nominal < tolerance, ours


@pytest.mark.parametrize("name", ["llama-nano", "llama-micro", "llama-small"])
def test_llama_presets_count_like_transformers_llama(name, preset, on_meta):
    from transformers import LlamaForCausalLM

    config = preset(name, LLAMA_VOCAB)
    ours = on_meta(config).num_params()
    with torch.device("meta"):
        reference = LlamaForCausalLM(transformers_config(config, LLAMA_VOCAB))
    assert ours == sum(p.numel() for p in reference.parameters())


def test_gpt2_arch_computes_what_transformers_gpt2_computes(tiny_config):
    """Same weights → same logits: GELU (tanh), pre-LN blocks, learned positions, tied head."""
    from transformers import GPT2LMHeadModel

    torch.manual_seed(0)
    config = tiny_config("gpt2")
    reference = GPT2LMHeadModel(transformers_config(config)).eval()
    ref = reference.state_dict()
    ours = {"wte.weight": ref["transformer.wte.weight"], "wpe.weight": ref["transformer.wpe.weight"],
            "lm_head.weight": ref["transformer.wte.weight"], "ln_f.weight": ref["transformer.ln_f.weight"],
            "ln_f.bias": ref["transformer.ln_f.bias"]}  # fmt: skip
    for i in range(config.n_layer):
        h = f"transformer.h.{i}."
        for name in ("ln_1", "ln_2"):
            ours[f"blocks.{i}.{name}.weight"] = ref[h + f"{name}.weight"]
            ours[f"blocks.{i}.{name}.bias"] = ref[h + f"{name}.bias"]
        for name in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):  # Conv1D stores (in, out)
            ours[f"blocks.{i}.{name}.weight"] = ref[h + f"{name}.weight"].t()
            ours[f"blocks.{i}.{name}.bias"] = ref[h + f"{name}.bias"]
    model = GPT(config).eval()
    model.load_state_dict(ours)
    idx = torch.randint(0, config.vocab_size, (2, config.block_size))
    logits, _ = model(idx, idx)
    torch.testing.assert_close(logits, reference(idx).logits, atol=1e-5, rtol=1e-4)


def test_llama_arch_computes_what_transformers_llama_computes(tiny_config):
    """Same weights → same logits: rotary positions, RMSNorm, SwiGLU, grouped-query attention, untied head."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    config = tiny_config("llama", mlp_hidden=48)
    reference = LlamaForCausalLM(transformers_config(config)).eval()
    ref = reference.state_dict()
    ours = {"wte.weight": ref["model.embed_tokens.weight"], "lm_head.weight": ref["lm_head.weight"],
            "ln_f.weight": ref["model.norm.weight"]}  # fmt: skip
    for i in range(config.n_layer):
        h = f"model.layers.{i}."
        ours[f"blocks.{i}.ln_1.weight"] = ref[h + "input_layernorm.weight"]
        ours[f"blocks.{i}.ln_2.weight"] = ref[h + "post_attention_layernorm.weight"]
        ours[f"blocks.{i}.attn.c_attn.weight"] = torch.cat([ref[h + f"self_attn.{p}_proj.weight"] for p in "qkv"])
        ours[f"blocks.{i}.attn.c_proj.weight"] = ref[h + "self_attn.o_proj.weight"]
        ours[f"blocks.{i}.mlp.c_fc.weight"] = torch.cat([ref[h + f"mlp.{p}_proj.weight"] for p in ("gate", "up")])
        ours[f"blocks.{i}.mlp.c_proj.weight"] = ref[h + "mlp.down_proj.weight"]
    model = GPT(config).eval()
    model.load_state_dict(ours)
    idx = torch.randint(0, config.vocab_size, (2, config.block_size))
    logits, _ = model(idx, idx)
    torch.testing.assert_close(logits, reference(idx).logits, atol=1e-5, rtol=1e-4)
