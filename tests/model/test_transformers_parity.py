"""Equivalence with the reference implementations in transformers, through the bridge of ``model.hf``: the weights
mapped either way give the same logits, and the presets have the parameter counts transformers' models of the
same shape have."""

from __future__ import annotations

import pytest
import torch

from model import GPT, ModelConfigError
from model.hf import from_transformers_state_dict, to_transformers_state_dict, transformers_config

GPT2_VOCAB = 50257  # GPT-2's tokenizer
LLAMA_VOCAB = 32000  # LLaMA's tokenizer

# GPT-2's presets and the sizes published for the models they are named after (medium is 354.8M, published as
# "345M"/"350M"), with the tolerance each name allows.
GPT2_SIZES = {
    "gpt2": (124e6, 0.01),
    "gpt2-medium": (350e6, 0.015),
    "gpt2-large": (774e6, 0.01),
    "gpt2-xl": (1558e6, 0.01),
}


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
    model = GPT(config).eval()
    model.load_state_dict(from_transformers_state_dict(reference.state_dict(), config))
    idx = torch.randint(0, config.vocab_size, (2, config.block_size))
    logits, _ = model(idx, idx)
    torch.testing.assert_close(logits, reference(idx).logits, atol=1e-5, rtol=1e-4)


def test_llama_arch_computes_what_transformers_llama_computes(tiny_config):
    """Same weights → same logits: rotary positions, RMSNorm, SwiGLU, grouped-query attention, untied head."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    config = tiny_config("llama", mlp_hidden=48)
    reference = LlamaForCausalLM(transformers_config(config)).eval()
    model = GPT(config).eval()
    model.load_state_dict(from_transformers_state_dict(reference.state_dict(), config))
    idx = torch.randint(0, config.vocab_size, (2, config.block_size))
    logits, _ = model(idx, idx)
    torch.testing.assert_close(logits, reference(idx).logits, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "arch, overrides",
    [
        ("gpt2", {"bias": False, "tie_embeddings": False, "activation": "gelu"}),
        ("gpt2", {"activation": "relu2"}),
        ("llama", {"tie_embeddings": True, "rope_theta": 500.0}),
    ],
)
def test_our_weights_in_transformers_give_our_logits_over_the_tokenizers_vocabulary(tiny_config, arch, overrides):
    """Ours → theirs: the padded rows past the tokenizer's 50 tokens are dropped, a model without biases gets zero
    ones (GPT-2 always has them), the exact GELU stays exact, the untied or tied head stays so, and the logits of
    the real tokens agree."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    config = tiny_config(arch, **overrides)
    model = GPT(config).eval()
    reference = AutoModelForCausalLM.from_config(transformers_config(config, vocab_size=50)).eval()
    reference.load_state_dict(to_transformers_state_dict(model.state_dict(), config, vocab_size=50), strict=True)
    idx = torch.randint(0, 50, (2, config.block_size))
    logits, _ = model(idx, idx)
    torch.testing.assert_close(logits[..., :50], reference(idx).logits, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "arch, activation", [("gpt2", "gelu"), ("gpt2", "gelu_tanh"), ("gpt2", "relu2"), ("llama", "gelu_tanh")]
)
def test_the_mapping_both_ways_gives_back_the_same_weights_and_shape(tiny_config, arch, activation):
    """Ours → theirs → ours is the identity, and the transformers config reads back as the same model keys."""
    from model.hf import architecture

    config = tiny_config(arch, activation=activation)
    state = GPT(config).state_dict()
    back = from_transformers_state_dict(to_transformers_state_dict(state, config), config)
    assert back.keys() == state.keys()
    assert all(torch.equal(back[k], state[k]) for k in state)
    rebuilt = type(config)(**{**config.to_dict(), **architecture(transformers_config(config), "folder")})
    assert {k: v.shape for k, v in GPT(rebuilt).state_dict().items()} == {k: v.shape for k, v in state.items()}
    same = ("tie_embeddings", "norm_eps", "block_size") + (("rope_theta",) if arch == "llama" else ("activation",))
    assert [getattr(rebuilt, k) for k in same] == [getattr(config, k) for k in same]


def test_a_gpt2_model_with_grouped_query_attention_is_refused_naming_the_setting(tiny_config):
    with pytest.raises(ModelConfigError, match=r"^model\.n_kv_head must be null with arch=gpt2 .*, got 2$"):
        transformers_config(tiny_config("gpt2", n_kv_head=2))


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_a_model_with_a_query_key_norm_is_refused_naming_the_setting(tiny_config, arch):
    with pytest.raises(ModelConfigError, match=r"^model\.qk_norm must be false to export .*, got True$"):
        transformers_config(tiny_config(arch, qk_norm=True))


def test_a_forks_model_key_that_export_does_not_know_is_refused_unless_at_its_default(tiny_config):
    """A fork adds a key to GPTConfig and its code to model/gpt.py: transformers' class computes none of it."""
    import dataclasses

    from model import GPTConfig

    @dataclasses.dataclass
    class ForkConfig(GPTConfig):
        attn_temperature: float = 1.0

    config = ForkConfig(**tiny_config("gpt2").to_dict())
    transformers_config(config)  # at its default the model is the template's
    with pytest.raises(ModelConfigError, match=r"^model\.attn_temperature must be 1\.0 to export .*model/hf\.py"):
        transformers_config(dataclasses.replace(config, attn_temperature=0.5))


def test_a_forks_activation_that_gpt2_does_not_name_is_refused_naming_the_setting(tiny_config):
    import dataclasses

    with pytest.raises(
        ModelConfigError, match=r"^model\.activation must be one of gelu, gelu_tanh, relu2 to export .*mish'$"
    ):
        transformers_config(dataclasses.replace(tiny_config("gpt2"), activation="mish"))


def test_a_model_with_capped_logits_is_refused_naming_the_setting(tiny_config):
    with pytest.raises(ModelConfigError, match=r"^model\.logit_softcap must be null to export .*, got 30\.0$"):
        transformers_config(tiny_config("llama", logit_softcap=30.0))


@pytest.mark.parametrize(
    "make, setting",
    [
        (lambda t: t.LlamaConfig(attention_bias=True), "attention_bias=True"),
        (lambda t: t.LlamaConfig(rope_scaling={"rope_type": "linear", "factor": 2.0}), "rope_type='linear'"),
        (lambda t: t.GPT2Config(activation_function="relu"), "activation_function='relu'"),
        (lambda t: t.MistralConfig(), "holds a 'mistral' model"),
    ],
)
def test_a_transformers_model_ours_cannot_compute_is_refused_in_one_line(make, setting):
    import transformers

    from model.hf import architecture

    with pytest.raises(ModelConfigError, match=r"^model\.init_from: folder ") as e:
        architecture(make(transformers), "folder")
    assert setting in str(e.value) and "\n" not in str(e.value)


def test_the_transformers_bridge_imports_without_a_screen_of_torchao_warnings():
    """Where torchao is installed, transformers' models import it: its kernels for another Python or torch, and
    torch's deprecations, log a warning each; the bridge keeps them off the console, then restores the loggers."""
    import logging
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import logging; from model.hf import require_transformers; t = require_transformers('x'); "
        "t.LlamaForCausalLM, t.GPT2LMHeadModel; print(logging.getLogger('torchao').level)"
    )
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr[-2000:]
    assert proc.stdout == f"{logging.NOTSET}\n"  # as it was
