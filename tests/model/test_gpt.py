"""The GPT itself: its config check, building on the meta device, activation checkpointing, and that it learns."""

from __future__ import annotations

import math
import warnings
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch

from model import GPT, GPTConfig, ModelConfigError, check_model_config, padded_vocab

PRESET_NAMES = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "conf" / "model").glob("*.yaml"))

VALID = {"arch": "gpt2", "n_layer": 2, "n_head": 4, "n_embd": 128, "block_size": 64, "dropout": 0.0, "bias": True}


# ---- config check ---------------------------------------------------------------------------------------------


def test_a_valid_model_config_passes():
    check_model_config(VALID)
    check_model_config({**VALID, "arch": "llama", "n_kv_head": 2, "mlp_hidden": 96, "tie_embeddings": False})


def test_every_gptconfig_field_but_those_the_tokenizer_sets_is_a_model_setting():
    from_tokenizer = ("vocab_size", "document_separator", "padded_from")
    defaults = {f.name: getattr(GPTConfig(), f.name) for f in fields(GPTConfig) if f.name not in from_tokenizer}
    check_model_config(defaults)
    for key in from_tokenizer[1:]:
        with pytest.raises(ModelConfigError, match=rf"^model\.{key} must be absent"):
            check_model_config({**defaults, key: 10})


def test_the_python_defaults_of_the_model_are_the_base_presets(preset_values):
    # GPT(GPTConfig()) from Python builds what model=base trains: one shape, written in two places, kept equal
    base = preset_values("base")
    code = {f.name: getattr(GPTConfig(), f.name) for f in fields(GPTConfig) if f.name in base}
    assert code == {k: base[k] for k in code}
    assert set(base) - set(code) == {"name", "init_from"}


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_every_preset_passes_the_check_and_builds(name, preset_values, on_meta):
    values = preset_values(name)
    check_model_config(values)
    model = on_meta(GPTConfig.from_dict({**values, "vocab_size": padded_vocab(1000)}))
    assert model.num_params() > 0


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"n_embd": 130}, "model.n_embd must be divisible by model.n_head (4), got 130"),
        ({"arch": "bert"}, "model.arch must be one of gpt2, llama, got 'bert'"),
        ({"n_layer": 0}, "model.n_layer must be an integer > 0, got 0"),
        ({"n_head": -2}, "model.n_head must be an integer > 0, got -2"),
        ({"n_embd": 0}, "model.n_embd must be an integer > 0, got 0"),
        ({"block_size": 0}, "model.block_size must be an integer > 0, got 0"),
        ({"n_layer": True}, "model.n_layer must be an integer > 0, got True"),
        ({"n_layer": 2.0}, "model.n_layer must be an integer > 0, got 2.0"),
        ({"dropout": 1.0}, "model.dropout must be in [0, 1), got 1.0"),
        ({"dropout": -0.1}, "model.dropout must be in [0, 1), got -0.1"),
        ({"dropout": math.nan}, "model.dropout must be in [0, 1), got nan"),
        ({"n_kv_head": 3}, "model.n_kv_head must be null or a divisor of model.n_head (4), got 3"),
        ({"n_kv_head": 0}, "model.n_kv_head must be null or a divisor of model.n_head (4), got 0"),
        ({"mlp_hidden": 0}, "model.mlp_hidden must be an integer > 0, got 0"),
        ({"bias": "maybe"}, "model.bias must be true or false, got 'maybe'"),
        ({"tie_embeddings": 1}, "model.tie_embeddings must be true or false, got 1"),
        ({"norm_eps": 0}, "model.norm_eps must be a number > 0, got 0"),
        ({"rope_theta": -1.0}, "model.rope_theta must be a number > 0, got -1.0"),
        ({"activation": "relu"}, "model.activation must be one of gelu, gelu_tanh, relu2, got 'relu'"),
        ({"qk_norm": "yes"}, "model.qk_norm must be true or false, got 'yes'"),
        ({"logit_softcap": 0}, "model.logit_softcap must be null or a number > 0, got 0"),
        ({"logit_softcap": "high"}, "model.logit_softcap must be null or a number > 0, got 'high'"),
    ],
)
def test_a_bad_model_value_raises_one_line_naming_the_key_the_rule_and_the_value(changes, message):
    with pytest.raises(ModelConfigError) as info:
        check_model_config({**VALID, **changes})
    assert str(info.value) == message


def test_the_vocabulary_size_is_not_a_model_setting():
    """It comes from the tokenizer; a key GPTConfig does not know at all is refused the same way."""
    for key in ("vocab_size", "n_layers"):
        with pytest.raises(ModelConfigError, match=rf"^model\.{key} must be absent: model settings are "):
            check_model_config({**VALID, key: 12})


def test_rotary_embeddings_need_an_even_head_size():
    with pytest.raises(ModelConfigError, match=r"model\.n_embd .*even"):
        check_model_config({**VALID, "arch": "llama", "n_head": 8, "n_embd": 72})
    check_model_config({**VALID, "arch": "gpt2", "n_head": 8, "n_embd": 72})  # learned positions: any head size


def test_the_model_config_error_is_a_value_error():
    assert issubclass(ModelConfigError, ValueError)


def test_building_an_unknown_arch_raises_the_same_error_as_the_check(tiny_config):
    with pytest.raises(ModelConfigError) as built:
        GPT(tiny_config("bert"))
    with pytest.raises(ModelConfigError) as checked:
        check_model_config({**VALID, "arch": "bert"})
    assert str(built.value) == str(checked.value)


# ---- shapes and storage ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("vocab", [1, 63, 64, 65, 50257])
def test_the_vocabulary_pads_to_the_next_multiple_of_64(vocab):
    padded = padded_vocab(vocab)
    assert padded % 64 == 0 and vocab <= padded < vocab + 64


def test_a_longer_sequence_than_the_context_is_refused(tiny_config):
    model = GPT(tiny_config("gpt2"))
    with pytest.raises(ValueError, match="block_size=16"):
        model(torch.zeros(1, 17, dtype=torch.long))


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_a_model_built_on_meta_and_materialized_computes_what_the_original_does(arch, tiny_config, on_meta):
    """The rotary tables are recomputed, not loaded (they are not in the state dict), and a tied head stays tied."""
    torch.manual_seed(0)
    config = tiny_config(arch, tie_embeddings=True)
    original = GPT(config).eval()
    state = original.state_dict()
    assert not any(k.startswith("rope") for k in state)
    restored = on_meta(config).materialize("cpu")
    restored.load_state_dict(state)
    restored.eval()
    assert restored.lm_head.weight is restored.wte.weight
    idx = torch.randint(0, 64, (2, 16))
    torch.testing.assert_close(restored(idx, idx)[0], original(idx, idx)[0], rtol=0, atol=0)


# ---- training ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_activation_checkpointing_gives_the_same_loss_and_gradients(arch, tiny_config):
    torch.manual_seed(0)
    plain = GPT(tiny_config(arch))
    recomputed = GPT(tiny_config(arch, activation_checkpointing=True))
    recomputed.load_state_dict(plain.state_dict())
    idx = torch.randint(0, 64, (4, 16))
    targets = torch.randint(0, 64, (4, 16))
    losses = []
    for model in (plain, recomputed):
        _, loss = model(idx, targets)
        loss.backward()
        losses.append(loss)
    torch.testing.assert_close(losses[0], losses[1], rtol=0, atol=0)
    for (name, a), b in zip(plain.named_parameters(), recomputed.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=1e-7, msg=name)


def test_the_loss_is_summed_or_averaged_over_tokens_as_asked(tiny_config):
    torch.manual_seed(0)
    model = GPT(tiny_config("gpt2")).eval()
    idx = torch.randint(0, 64, (2, 16))
    _, mean = model(idx, idx)
    _, per_token = model(idx, idx, reduction="none")
    assert per_token.shape == (32,)
    torch.testing.assert_close(per_token.mean(), mean)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("cap", [None, 3.0])
def test_the_padding_ids_are_in_no_softmax_the_loss_is_over_the_tokenizers_ids(arch, cap, tiny_config):
    """A tokenizer of 50 ids padded to 64 rows: the padding's logits are −inf in training and in sampling, and the
    loss and its gradients are the cross-entropy over the first 50 logits alone (what an export computes)."""
    torch.manual_seed(0)
    padded = GPT(tiny_config(arch, padded_from=50, logit_softcap=cap))
    plain = GPT(tiny_config(arch, logit_softcap=cap))
    plain.load_state_dict(padded.state_dict())
    x, y = torch.randint(0, 50, (2, 16)), torch.randint(0, 50, (2, 16))
    logits, loss = padded(x, y)
    assert torch.isneginf(logits[..., 50:]).all() and torch.isfinite(logits[..., :50]).all()
    assert torch.isneginf(padded(x)[0][..., 50:]).all()
    theirs, _ = plain(x, y)
    expected = torch.nn.functional.cross_entropy(theirs[..., :50].reshape(-1, 50), y.reshape(-1))
    torch.testing.assert_close(loss, expected)
    loss.backward()
    expected.backward()
    for (name, a), b in zip(padded.named_parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


def test_a_padding_start_outside_the_vocabulary_is_one_line():
    for bad in (0, 64, 100, 2.5):
        with pytest.raises(ModelConfigError, match=r"^model\.padded_from must be null or a token id in \(0, "):
            GPTConfig.from_dict({"vocab_size": 64, "padded_from": bad})


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_the_loss_falls_on_a_learnable_token_stream(arch, tiny_config):
    """Text made of 8 recurring 12-token phrases: 30 AdamW steps on random windows cut the loss well down."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    phrases = rng.integers(0, 64, size=(8, 12))
    stream = torch.from_numpy(phrases[rng.integers(0, 8, size=400)].reshape(-1))
    model = GPT(tiny_config(arch))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        starts = torch.from_numpy(rng.integers(0, len(stream) - 17, size=8))
        windows = torch.stack([stream[s : s + 17] for s in starts])
        _, loss = model(windows[:, :-1], windows[:, 1:])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(x) for x in losses)
    assert np.mean(losses[-3:]) < 0.6 * np.mean(losses[:3]), losses


# ---- CUDA --------------------------------------------------------------------------------------------------------


@pytest.mark.cuda
def test_cuda_bf16_autocast_runs_the_matmuls_in_bf16_with_an_fp32_loss(tiny_config):
    if not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    model = GPT(tiny_config("gpt2")).cuda()
    idx = torch.randint(0, 64, (2, 16), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits, loss = model(idx, idx)
    assert logits.dtype == torch.bfloat16 and loss.dtype == torch.float32


@pytest.mark.cuda
def test_cuda_compiled_model_matches_eager(tiny_config):
    torch.manual_seed(0)
    model = GPT(tiny_config("llama")).cuda()
    idx = torch.randint(0, 64, (2, 16), device="cuda")
    _, eager = model(idx, idx)
    _, compiled = torch.compile(model)(idx, idx)
    torch.testing.assert_close(compiled, eager, atol=1e-4, rtol=1e-4)


FUNCTIONS = {
    "gelu": lambda h: torch.nn.functional.gelu(h),
    "gelu_tanh": lambda h: torch.nn.functional.gelu(h, approximate="tanh"),
    "relu2": lambda h: torch.relu(h) ** 2,
}


@pytest.mark.parametrize("activation", sorted(FUNCTIONS))
def test_the_gpt2_mlp_applies_the_function_model_activation_names(tiny_config, activation):
    torch.manual_seed(0)
    mlp = GPT(tiny_config("gpt2", activation=activation)).blocks[0].mlp
    x = torch.randn(2, 5, 32)
    torch.testing.assert_close(mlp(x), mlp.c_proj(FUNCTIONS[activation](mlp.c_fc(x))), rtol=0, atol=0)
    for other in set(FUNCTIONS) - {activation}:
        assert not torch.allclose(mlp(x), mlp.c_proj(FUNCTIONS[other](mlp.c_fc(x))), atol=1e-7), other


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_logit_softcap_bounds_the_logits_and_leaves_small_ones_almost_as_they_are(tiny_config, arch):
    """With cap c every logit lies in [−c, c] (fp32's tanh rounds to ±1 far out), in training and in sampling
    alike; the same weights without a cap give logits far outside it, and a cap far above them changes nothing."""
    x = torch.randint(0, 64, (2, 10))
    logits = {}
    for cap in (None, 2.0, 1e4):
        torch.manual_seed(0)
        model = GPT(tiny_config(arch, logit_softcap=cap)).eval()
        with torch.no_grad():
            model.lm_head.weight *= 50.0  # logits of tens
            logits[cap], _ = model(x, x)
            last, _ = model(x)
        torch.testing.assert_close(last[:, -1], logits[cap][:, -1])
    assert logits[None].abs().max() > 10.0
    assert logits[2.0].abs().max() <= 2.0
    torch.testing.assert_close(logits[2.0], 2.0 * torch.tanh(logits[None] / 2.0))
    torch.testing.assert_close(logits[1e4], logits[None], rtol=1e-5, atol=1e-4)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # capped in fp32 from a bf16 head
        model = GPT(tiny_config(arch, logit_softcap=2.0)).eval()
        bf16_capped, _ = model(x, x)
    assert bf16_capped.dtype == torch.float32 and bf16_capped.abs().max() <= 2.0


def test_qk_norm_under_bf16_autocast_normalises_in_fp32_without_a_dtype_warning(tiny_config):
    """Autocast hands the norms bf16 queries and keys; they are normalised in fp32 against the fp32 gain (torch
    otherwise warns of mismatched dtypes and leaves its fused kernel) and come back in bf16."""
    torch.manual_seed(0)
    model = GPT(tiny_config("llama", qk_norm=True))
    x = torch.randint(0, 64, (2, 10))
    with warnings.catch_warnings(), torch.autocast("cpu", dtype=torch.bfloat16):
        warnings.simplefilter("error")
        logits, loss = model(x, x)
    fp32_logits, _ = model(x, x)
    assert torch.isfinite(loss) and (logits.float() - fp32_logits).abs().max() < 0.1


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_qk_norm_makes_attention_blind_to_the_scale_of_queries_and_keys(tiny_config, arch):
    """Scaling the query and key projections scales the attention logits, unless qk_norm normalises them."""
    x = torch.randn(2, 10, 32)
    for qk_norm in (True, False):
        torch.manual_seed(0)
        model = GPT(tiny_config(arch, qk_norm=qk_norm))
        attn = model.blocks[0].attn
        rope = (model.rope_cos[:10], model.rope_sin[:10]) if arch == "llama" else None
        before = attn(x, rope)
        with torch.no_grad():
            qk_rows = (attn.n_head + attn.n_kv) * attn.d  # c_attn's output is [q | k | v]
            attn.c_attn.weight[:qk_rows] *= 8.0
            if attn.c_attn.bias is not None:
                attn.c_attn.bias[:qk_rows] *= 8.0
        after = attn(x, rope)
        assert torch.allclose(before, after, atol=1e-4) == qk_norm


@pytest.mark.parametrize("arch, warned", [("gpt2", True), ("llama", False)])
def test_a_rope_theta_the_arch_does_not_use_is_warned_of_when_the_model_is_built(arch, warned, tiny_config, caplog):
    from omegaconf import OmegaConf

    from training.distributed import Dist
    from training.engine import build_model

    trainer = OmegaConf.create({"precision": "fp32", "strategy": "single", "compile": False, "seed": 0, "grad_clip": 1})
    with caplog.at_level("WARNING"):
        build_model(trainer, Dist(), tiny_config(arch, rope_theta=500.0), keep_freed_memory=False)
        build_model(trainer, Dist(), tiny_config(arch), keep_freed_memory=False)  # the default: nothing to say
    said = [r.getMessage() for r in caplog.records]
    assert said == (["model.rope_theta=500: gpt2 style has no rotary positions; it has no effect"] if warned else [])


def test_the_loss_is_fp32_where_the_parameters_are_bf16_without_autocast():
    """FSDP's mixed precision on a GPU casts the parameters to bf16 and runs without autocast: the logits are bf16,
    yet the loss, its gradient and the per-token validation losses must be fp32 cross-entropies, as under autocast."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=384, block_size=16, n_layer=1, n_head=2, n_embd=32)).to(torch.bfloat16).eval()
    x = torch.randint(0, 384, (2, 16))
    logits, loss = model(x, x)
    _, per_token = model(x, x, reduction="none")
    assert logits.dtype == torch.bfloat16 and loss.dtype == per_token.dtype == torch.float32
    fp32_logits = logits.float().view(-1, 384)
    assert torch.equal(loss, torch.nn.functional.cross_entropy(fp32_logits, x.view(-1)))
    assert torch.equal(per_token, torch.nn.functional.cross_entropy(fp32_logits, x.view(-1), reduction="none"))
