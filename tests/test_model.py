"""The GPT (gpt2 and llama style): presets and their sizes, equivalence with the reference implementations,
training, activation checkpointing, KV-cache generation, sampling masks, FLOP accounting and config checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from data import TrainBatches
from model import GPT, GPTConfig, generate, sample_next
from model.flops import cpu_peak_flops, gpu_peak_flops, measure_matmul_flops, model_flops_per_token
from model.generate import KVCache
from scheduling import Schedule, build_scheduler
from tests.conftest import TINY, compose_config, group_options, read_metrics, run_train, train_records
from training.checkpoint import load
from training.distributed import autocast
from training.engine import train_update
from training.errors import ConfigError
from training.optim import build_optimizer
from training.validate import check_config

GPT2_VOCAB = 50257  # GPT-2's tokenizer; the parameter counts below are the usual ones at this vocabulary
LLAMA_VOCAB = 32000  # LLaMA's tokenizer

# Preset → (nominal size the name promises, tolerance). GPT-2 medium is 354.8M, published as "345M"/"350M".
GPT2_SIZES = {"gpt2": (124e6, 0.01), "gpt2-medium": (350e6, 0.015), "gpt2-large": (774e6, 0.01),
              "gpt2-xl": (1558e6, 0.01)}  # fmt: skip


def preset_config(name: str, vocab_size: int, **overrides) -> GPTConfig:
    """A preset as train.py builds it: the composed ``cfg.model`` plus the tokenizer's vocabulary."""
    model_cfg = OmegaConf.to_container(compose_config([f"model={name}"]).model)
    return GPTConfig.from_dict({**model_cfg, "vocab_size": vocab_size, **overrides})


def tiny_config(arch: str, **overrides) -> GPTConfig:
    values = dict(vocab_size=64, block_size=16, n_layer=2, n_head=4, n_embd=32, arch=arch, bias=arch == "gpt2")
    if arch == "llama":
        values.update(n_kv_head=2, tie_embeddings=False)
    return GPTConfig(**{**values, **overrides})


def on_meta(config: GPTConfig) -> GPT:
    with torch.device("meta"):
        return GPT(config)


# ---- presets -------------------------------------------------------------------------------------------------


def test_the_model_group_has_every_preset():
    expected = {"nano", "micro", "gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "llama-nano", "llama-micro",
                "llama-small"}  # fmt: skip
    assert expected <= set(group_options("model"))


@pytest.mark.parametrize("name", sorted(GPT2_SIZES))
def test_gpt2_presets_have_gpt2s_parameter_counts(name):
    """All unique parameters, tied embeddings, GPT-2's vocab of 50257 (gpt2: 124,439,808), counted against
    transformers' GPT2LMHeadModel of the same shape and against the size in the preset's name."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = preset_config(name, GPT2_VOCAB)
    assert config.block_size == 1024 and config.arch == "gpt2" and config.tie_embeddings
    ours = on_meta(config).num_params()
    with torch.device("meta"):
        reference = GPT2LMHeadModel(
            GPT2Config(
                vocab_size=GPT2_VOCAB,
                n_positions=1024,
                n_embd=config.n_embd,
                n_layer=config.n_layer,
                n_head=config.n_head,
            )
        )
    assert ours == sum(p.numel() for p in reference.parameters())
    nominal, tolerance = GPT2_SIZES[name]
    assert abs(ours - nominal) / nominal < tolerance, ours


@pytest.mark.parametrize("name", ["llama-nano", "llama-micro", "llama-small"])
def test_llama_presets_count_like_transformers_llama(name):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = preset_config(name, LLAMA_VOCAB)
    assert config.arch == "llama"
    ours = on_meta(config).num_params()
    with torch.device("meta"):
        reference = LlamaForCausalLM(
            LlamaConfig(
                vocab_size=LLAMA_VOCAB,
                hidden_size=config.n_embd,
                intermediate_size=config.hidden,
                num_hidden_layers=config.n_layer,
                num_attention_heads=config.n_head,
                num_key_value_heads=config.kv_heads,
                tie_word_embeddings=config.tie_embeddings,
            )
        )
    assert ours == sum(p.numel() for p in reference.parameters())


def test_llama_small_is_125m_with_grouped_query_attention_and_an_untied_head():
    config = preset_config("llama-small", LLAMA_VOCAB)
    assert config.kv_heads < config.n_head and not config.tie_embeddings
    n = on_meta(config).num_params()
    assert abs(n - 125e6) / 125e6 < 0.01, n


def test_micro_has_about_10m_parameters_besides_the_embeddings():
    model = on_meta(preset_config("micro", 4096))
    non_embedding = model.num_params() - model.wte.weight.numel() - model.wpe.weight.numel()
    assert 9.5e6 < non_embedding < 11e6, non_embedding


def test_any_preset_field_can_be_overridden():
    cfg = compose_config(["model=gpt2", "model.n_layer=8", "model.arch=llama", "model.n_kv_head=4"])
    check_config(cfg)
    config = GPTConfig.from_dict({**OmegaConf.to_container(cfg.model), "vocab_size": 128})
    assert (config.n_layer, config.arch, config.kv_heads, config.n_embd) == (8, "llama", 4, 768)


# ---- config checks --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override,key",
    [
        ("model.n_embd=130", "model.n_embd"),  # not divisible by 4 heads
        ("model.n_layer=0", "model.n_layer"),
        ("model.n_head=-2", "model.n_head"),
        ("model.n_embd=0", "model.n_embd"),
        ("model.block_size=0", "model.block_size"),
        ("model.dropout=1.0", "model.dropout"),
        ("model.dropout=-0.1", "model.dropout"),
        ("model.arch=bert", "model.arch"),
        ("model.n_kv_head=3", "model.n_kv_head"),  # not a divisor of 4 heads
        ("model.mlp_hidden=0", "model.mlp_hidden"),
        ("model.bias=maybe", "model.bias"),
        ("model.norm_eps=0", "model.norm_eps"),
        ("+model.vocab_size=100", "model.vocab_size"),  # set by the tokenizer, not here
    ],
)
def test_bad_model_values_raise_config_error_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as info:
        check_config(compose_config(["model=nano", override]))
    assert "\n" not in str(info.value)


def test_llama_needs_an_even_head_size_for_rotary_embeddings():
    with pytest.raises(ConfigError, match="even"):
        check_config(compose_config(["model=llama-nano", "model.n_head=8", "model.n_embd=72"]))


@pytest.mark.parametrize("name", ["nano", "micro", "gpt2", "gpt2-xl", "llama-nano", "llama-micro", "llama-small"])
def test_every_preset_passes_the_checks(name):
    check_config(compose_config([f"model={name}"]))


# ---- equivalence with the reference implementations ------------------------------------------------------------


def test_gpt2_arch_computes_what_transformers_gpt2_computes():
    """Same weights → same logits: GELU (tanh), pre-LN blocks, learned positions, tied head."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = tiny_config("gpt2")
    reference = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=64,
            n_positions=16,
            n_embd=32,
            n_layer=2,
            n_head=4,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            activation_function="gelu_new",
            layer_norm_epsilon=1e-5,
        )
    ).eval()
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
    idx = torch.randint(0, 64, (2, 16))
    logits, _ = model(idx, idx)
    torch.testing.assert_close(logits, reference(idx).logits, atol=1e-5, rtol=1e-4)


def test_llama_arch_computes_what_transformers_llama_computes():
    """Same weights → same logits: rotary positions, RMSNorm, SwiGLU, grouped-query attention, untied head."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = tiny_config("llama", mlp_hidden=48)
    reference = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=64,
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=16,
            rms_norm_eps=1e-5,
            tie_word_embeddings=False,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        )
    ).eval()
    ref = reference.state_dict()
    ours = {"wte.weight": ref["model.embed_tokens.weight"], "lm_head.weight": ref["lm_head.weight"],
            "ln_f.weight": ref["model.norm.weight"]}  # fmt: skip
    for i in range(config.n_layer):
        h = f"model.layers.{i}."
        ours[f"blocks.{i}.ln_1.weight"] = ref[h + "input_layernorm.weight"]
        ours[f"blocks.{i}.ln_2.weight"] = ref[h + "post_attention_layernorm.weight"]
        qkv = [ref[h + f"self_attn.{p}_proj.weight"] for p in "qkv"]
        ours[f"blocks.{i}.attn.c_attn.weight"] = torch.cat(qkv)
        ours[f"blocks.{i}.attn.c_proj.weight"] = ref[h + "self_attn.o_proj.weight"]
        gate_up = [ref[h + f"mlp.{p}_proj.weight"] for p in ("gate", "up")]
        ours[f"blocks.{i}.mlp.c_fc.weight"] = torch.cat(gate_up)
        ours[f"blocks.{i}.mlp.c_proj.weight"] = ref[h + "mlp.down_proj.weight"]
    model = GPT(config).eval()
    model.load_state_dict(ours)
    idx = torch.randint(0, 64, (2, 16))
    logits, _ = model(idx, idx)
    torch.testing.assert_close(logits, reference(idx).logits, atol=1e-5, rtol=1e-4)


# ---- training ---------------------------------------------------------------------------------------------------


def test_llama_loss_falls_over_30_updates_of_the_training_step():
    """The real update (train_update, build_optimizer, LambdaLR) on windows of a learnable token stream."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    phrases = rng.integers(0, 64, size=(8, 12))  # text made of 8 recurring 12-token phrases
    tokens = phrases[rng.integers(0, 8, size=2000)].reshape(-1).astype(np.uint16)
    batches = TrainBatches(tokens, block_size=16, batch_size=8, seed=0)
    model = GPT(tiny_config("llama"))
    optim_cfg = {"lr": 1e-2, "betas": [0.9, 0.98], "eps": 1e-6, "weight_decay": 0.1}
    optimizer = build_optimizer(model, optim_cfg, torch.device("cpu"))
    scheduler = build_scheduler(optimizer, Schedule("constant"))
    losses = [
        train_update(
            model,
            optimizer,
            scheduler,
            batches.micro_batches(t),
            device=torch.device("cpu"),
            autocast=autocast(torch.device("cpu"), "fp32"),
        ).loss
        for t in range(30)
    ]
    assert all(math.isfinite(x) for x in losses)
    assert np.mean(losses[-3:]) < 0.6 * np.mean(losses[:3]), losses


def test_llama_nano_trains_end_to_end_with_the_same_checkpoint_format(tmp_path, data_cache):
    args = [a for a in TINY if not a.startswith("model=")] + ["model=llama-nano", "trainer.max_steps=30",
                                                              "optim.lr=2e-3", "trainer.eval_every=15"]  # fmt: skip
    run_train(args, tmp_path / "run", data_cache)
    records = train_records(tmp_path / "run")
    first = np.mean([records[t]["train/loss"] for t in range(3)])
    last = np.mean([records[t]["train/loss"] for t in range(27, 30)])
    assert last < first - 0.5, (first, last)
    assert all(r["train/mfu"] > 0 for r in records.values())
    evals = [r["val/loss"] for r in read_metrics(tmp_path / "run") if "val/loss" in r]
    assert evals[-1] < evals[0]
    state = load(tmp_path / "run" / "checkpoints" / "step-00000030")
    assert state["model_config"]["arch"] == "llama"
    assert {"model", "optimizer", "scheduler", "step", "tokens", "rng", "model_config"} <= set(state)
    assert not any(k.startswith("rope") for k in state["model"])  # rotary tables are rebuilt, not saved


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_activation_checkpointing_gives_the_same_loss_and_gradients(arch):
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


# ---- generation ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("new_tokens", [8, 30])  # prompt + new within block_size (16), and well past it
def test_kv_cache_generation_equals_recomputation_at_temperature_zero(arch, new_tokens):
    torch.manual_seed(0)
    model = GPT(tiny_config(arch)).eval()
    prompt = torch.randint(0, 64, (3, 5))
    cached = generate(model, prompt, new_tokens, temperature=0.0, use_cache=True)
    recomputed = generate(model, prompt, new_tokens, temperature=0.0, use_cache=False)
    assert cached.shape == (3, 5 + new_tokens)
    assert torch.equal(cached, recomputed)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_kv_cache_logits_match_the_full_forward_pass(arch):
    torch.manual_seed(0)
    config = tiny_config(arch)
    model = GPT(config).eval()
    idx = torch.randint(0, 64, (2, 16))
    with torch.no_grad():
        full, _ = model(idx, idx)  # (2, 16, V): logits at every position
        cache = KVCache(config, 2, config.block_size)
        step_logits = [model(idx[:, :6], cache=cache)[0][:, -1]]
        for t in range(6, 16):
            step_logits.append(model(idx[:, t : t + 1], cache=cache)[0][:, -1])
    torch.testing.assert_close(torch.stack(step_logits, dim=1), full[:, 5:], atol=1e-5, rtol=1e-5)


def test_generation_runs_attention_without_cudnn_and_restores_it(monkeypatch):
    # cuDNN's attention builds a plan per new key length; a growing KV cache met a new one every token
    import torch.nn.functional as F

    seen: list[bool] = []
    sdpa = F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        seen.append(torch.backends.cuda.cudnn_sdp_enabled())
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    torch.manual_seed(0)
    model = GPT(tiny_config("gpt2")).eval()
    before = torch.backends.cuda.cudnn_sdp_enabled()
    generate(model, torch.zeros(1, 1, dtype=torch.long), 20)  # 16 cached positions, then full-context windows
    assert seen and not any(seen)
    assert torch.backends.cuda.cudnn_sdp_enabled() == before
    model(torch.zeros(1, 4, dtype=torch.long))  # training and evaluation keep every kernel
    assert seen[-1] == before


def test_generation_never_samples_the_padding_ids():
    torch.manual_seed(0)
    model = GPT(tiny_config("gpt2")).eval()
    out = generate(model, torch.zeros(4, 1, dtype=torch.long), 40, temperature=2.0, vocab_size=10)
    assert out.max() < 10


def test_top_k_1_and_a_tiny_top_p_are_greedy():
    logits = torch.randn(64, 50)
    greedy = logits.argmax(dim=-1, keepdim=True)
    assert torch.equal(sample_next(logits, temperature=0.0), greedy)
    assert torch.equal(sample_next(logits, temperature=1.5, top_k=1), greedy)
    assert torch.equal(sample_next(logits, temperature=1.5, top_p=1e-6), greedy)


def test_top_k_samples_only_the_k_most_likely_ids():
    torch.manual_seed(0)
    logits = torch.randn(1, 30).repeat(2000, 1)
    allowed = set(torch.topk(logits[0], 5).indices.tolist())
    seen = set(sample_next(logits, temperature=3.0, top_k=5).flatten().tolist())
    assert seen == allowed  # every one of the 5 shows up in 2000 draws at temperature 3


@pytest.mark.parametrize("top_p,kept", [(0.35, {0}), (0.5, {0, 1}), (0.75, {0, 1, 2}), (0.95, {0, 1, 2, 3})])
def test_top_p_keeps_the_smallest_set_of_most_likely_ids_reaching_p(top_p, kept):
    """Probabilities 0.4, 0.3, 0.2, 0.1 (ids 0-3, then ids with ~0): p = 0.5 needs ids 0 and 1."""
    torch.manual_seed(0)
    probs = torch.tensor([0.4, 0.3, 0.2, 0.1] + [1e-9] * 6)
    logits = probs.log().repeat(4000, 1)
    seen = set(sample_next(logits, temperature=1.0, top_p=top_p).flatten().tolist())
    assert seen == kept


# ---- FLOPs and peaks -------------------------------------------------------------------------------------------


def test_flops_per_token_of_a_hand_checked_gpt2():
    """vocab 64, block T=8, L=2 layers, H=2 heads of Q=8, C=16, biases, tied head.
    N counts every parameter but the position embedding (8·16): wte 64·16 = 1024 (it is also the head);
    per layer ln_1 2·16 = 32, c_attn 16·48 + 48 = 816, c_proj 16·16 + 16 = 272, ln_2 32, c_fc 16·64 + 64 = 1088,
    mlp c_proj 64·16 + 16 = 1040, together 3280, twice = 6560; ln_f 32. N = 1024 + 6560 + 32 = 7616.
    6N = 45,696; 12·L·H·Q·T = 12·2·2·8·8 = 3072; total 48,768 FLOPs per token."""
    config = GPTConfig(vocab_size=64, block_size=8, n_layer=2, n_head=2, n_embd=16, arch="gpt2")
    assert model_flops_per_token(GPT(config)) == 48_768


def test_flops_per_token_of_a_hand_checked_untied_llama():
    """vocab 64, T=8, L=2, H=2 query heads of Q=8 (1 key/value head), C=16, SwiGLU hidden 32, untied head.
    The input embedding is a lookup and not counted; the head 64·16 = 1024 is. Per layer ln_1 16,
    c_attn 16·(2 + 2·1)·8 = 512, c_proj 16·16 = 256, ln_2 16, c_fc 16·64 = 1024, c_proj 32·16 = 512:
    2336, twice = 4672; ln_f 16. N = 4672 + 16 + 1024 = 5712. 6N = 34,272; + 12·2·2·8·8 = 3072 → 37,344."""
    config = GPTConfig(vocab_size=64, block_size=8, n_layer=2, n_head=2, n_embd=16, arch="llama", n_kv_head=1,
                       mlp_hidden=32, tie_embeddings=False)  # fmt: skip
    assert model_flops_per_token(GPT(config)) == 37_344


@pytest.mark.parametrize(
    "name,precision,tf32,peak",
    [
        ("NVIDIA A100-SXM4-80GB", "bf16", True, 312e12),
        ("NVIDIA A100-SXM4-80GB", "fp32", True, 156e12),  # TF32 tensor cores
        ("NVIDIA A100-SXM4-80GB", "fp32", False, 19.5e12),
        ("NVIDIA H100 80GB HBM3", "bf16", True, 989.5e12),
        ("NVIDIA H100 PCIe", "bf16", True, 756.5e12),
        ("NVIDIA H100 NVL", "fp16", True, 835.5e12),
        ("NVIDIA L4", "bf16", True, 121e12),
        ("NVIDIA L40S", "bf16", True, 362.05e12),
        ("NVIDIA A10", "bf16", True, 125e12),
        ("Tesla V100-SXM2-16GB", "fp32", True, 15.7e12),  # no TF32: the fp32 rate
        ("Tesla V100-SXM2-16GB", "bf16", True, None),  # no bf16 at all
        ("NVIDIA A10G", "bf16", True, None),  # no published data sheet: no guess
        ("NVIDIA GB200", "bf16", True, None),  # not a B200
        ("Some New GPU", "bf16", True, None),
    ],
)
def test_gpu_peaks_come_from_the_data_sheet_table(name, precision, tf32, peak):
    assert gpu_peak_flops(name, precision, tf32) == peak


def test_the_cpu_peak_is_measured_once_then_read_from_the_cache(tmp_path, monkeypatch):
    import model.flops as flops

    calls = []
    monkeypatch.setattr(flops, "measure_matmul_flops", lambda device: calls.append(device) or 5e10)
    assert cpu_peak_flops(tmp_path) == 5e10
    assert cpu_peak_flops(tmp_path) == 5e10
    assert len(calls) == 1
    assert cpu_peak_flops(tmp_path, refresh=True) == 5e10 and len(calls) == 2


def test_the_matmul_measurement_is_a_plausible_rate():
    rate = measure_matmul_flops("cpu", sizes=(128,), seconds=0.05)
    assert 1e8 < rate < 1e14


# ---- CUDA --------------------------------------------------------------------------------------------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@needs_cuda
def test_cuda_bf16_autocast_runs_the_matmuls_in_bf16_with_an_fp32_loss():
    from training.distributed import resolve_precision

    device = torch.device("cuda")
    if resolve_precision("auto", device) != "bf16":
        pytest.skip("this GPU has no bf16")
    model = GPT(tiny_config("gpt2")).to(device)
    idx = torch.randint(0, 64, (2, 16), device=device)
    with autocast(device, "bf16"):
        logits, loss = model(idx, idx)
    assert logits.dtype == torch.bfloat16 and loss.dtype == torch.float32


@needs_cuda
def test_cuda_fp16_update_uses_the_grad_scaler_and_steps():
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = GPT(tiny_config("llama")).to(device)
    optimizer = build_optimizer(model, {"lr": 1e-3, "betas": [0.9, 0.98], "eps": 1e-6, "weight_decay": 0.1}, device)
    scheduler = build_scheduler(optimizer, Schedule("constant"))
    scaler = torch.amp.GradScaler("cuda")
    idx = torch.randint(0, 64, (2, 16))
    before = [p.detach().clone() for p in model.parameters()]
    statuses = [
        train_update(
            model, optimizer, scheduler, [(idx, idx)], device=device, autocast=autocast(device, "fp16"), scaler=scaler
        ).status
        for _ in range(5)
    ]
    assert "ok" in statuses
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


@needs_cuda
def test_cuda_optimizer_is_fused_adamw():
    device = torch.device("cuda")
    model = GPT(tiny_config("gpt2")).to(device)
    optimizer = build_optimizer(model, {"lr": 1e-3, "betas": [0.9, 0.98], "eps": 1e-6, "weight_decay": 0.1}, device)
    assert optimizer.defaults["fused"]


@needs_cuda
def test_cuda_compiled_model_matches_eager():
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = GPT(tiny_config("llama")).to(device)
    idx = torch.randint(0, 64, (2, 16), device=device)
    _, eager = model(idx, idx)
    _, compiled = torch.compile(model)(idx, idx)
    torch.testing.assert_close(compiled, eager, atol=1e-4, rtol=1e-4)
