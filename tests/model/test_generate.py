"""Sampling: the KV cache computes what recomputation does, and temperature, top-k, top-p and the padding mask
restrict the draws as documented."""

from __future__ import annotations

import importlib

import pytest
import torch

from model import GPT, KVCache, full_context_forward, generate, sample_next


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("new_tokens", [8, 30])  # prompt + new within block_size (16), and well past it
def test_kv_cache_generation_equals_recomputation_at_temperature_zero(arch, new_tokens, tiny_config):
    torch.manual_seed(0)
    model = GPT(tiny_config(arch)).eval()
    prompt = torch.randint(0, 64, (3, 5))
    cached = generate(model, prompt, new_tokens, temperature=0.0, use_cache=True)
    recomputed = generate(model, prompt, new_tokens, temperature=0.0, use_cache=False)
    assert cached.shape == (3, 5 + new_tokens)
    assert torch.equal(cached, recomputed)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_kv_cache_logits_match_the_full_forward_pass(arch, tiny_config):
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


def test_a_kv_cache_takes_a_block_only_as_its_first_input(tiny_config):
    config = tiny_config("gpt2")
    model = GPT(config).eval()
    cache = KVCache(config, 1, config.block_size)
    with torch.no_grad():
        model(torch.zeros(1, 4, dtype=torch.long), cache=cache)
        with pytest.raises(ValueError, match="one at a time"):
            model(torch.zeros(1, 2, dtype=torch.long), cache=cache)


def test_the_kv_cache_holds_the_dtype_autocast_computes_the_keys_in(tiny_config):
    torch.manual_seed(0)
    config = tiny_config("llama")
    model = GPT(config).eval()
    cache = KVCache(config, 1, config.block_size)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(torch.zeros(1, 3, dtype=torch.long), cache=cache)
        model(torch.zeros(1, 1, dtype=torch.long), cache=cache)
    assert cache.k.dtype == cache.v.dtype == torch.bfloat16 and cache.length == 4


def test_generation_runs_attention_without_cudnn_and_restores_it(monkeypatch, tiny_config):
    """cuDNN's attention builds a plan per new key length, and a growing KV cache meets a new one every token."""
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
    seen.clear()
    full_context_forward(model)
    assert seen and not any(seen)
    model(torch.zeros(1, 4, dtype=torch.long))  # training and evaluation keep every kernel
    assert seen[-1] == before


@pytest.mark.parametrize("training", [True, False])
def test_sampling_leaves_the_model_in_the_mode_it_found_it(training, tiny_config, monkeypatch):
    model = GPT(tiny_config("gpt2", dropout=0.1)).train(training)
    generate(model, torch.zeros(1, 1, dtype=torch.long), 3)
    assert model.training is training
    full_context_forward(model)
    assert model.training is training
    sampling = importlib.import_module("model.generate")  # the module; the package's `generate` is the function
    monkeypatch.setattr(sampling, "sample_next", lambda *a: 1 / 0)  # sampling fails midway
    with pytest.raises(ZeroDivisionError):
        generate(model, torch.zeros(1, 1, dtype=torch.long), 3)
    assert model.training is training  # however sampling ends


def test_generation_never_samples_the_padding_ids(tiny_config):
    torch.manual_seed(0)
    model = GPT(tiny_config("gpt2")).eval()
    out = generate(model, torch.zeros(4, 1, dtype=torch.long), 40, temperature=2.0, vocab_size=10)
    assert out.max() < 10


@pytest.mark.parametrize(
    "setting, message",
    [
        ({"temperature": -1.0}, "temperature must be ≥ 0"),
        ({"top_k": 0}, "top_k must be None or ≥ 1"),
        ({"top_p": 0.0}, r"top_p must be None or in \(0, 1\]"),
        ({"top_p": 1.5}, r"top_p must be None or in \(0, 1\]"),
    ],
)
def test_a_sampling_setting_out_of_range_is_refused_not_skipped(setting, message, tiny_config):
    """top_p=0 sampled from the whole distribution (transformers reads it as greedy): no filter is skipped silently."""
    model = GPT(tiny_config("gpt2")).eval()
    with pytest.raises(ValueError, match=f"^{message}"):
        generate(model, torch.zeros(1, 1, dtype=torch.long), 2, **setting)


def test_top_k_1_and_a_tiny_top_p_are_greedy():
    torch.manual_seed(0)
    logits = torch.randn(64, 50)
    greedy = logits.argmax(dim=-1, keepdim=True)
    assert torch.equal(sample_next(logits, temperature=0.0), greedy)
    assert torch.equal(sample_next(logits, temperature=1.5, top_k=1), greedy)
    assert torch.equal(sample_next(logits, temperature=1.5, top_p=1e-6), greedy)
    assert torch.equal(sample_next(logits, temperature=1.5, top_p=1e-300), greedy)  # 0 in float32: all cut


@pytest.mark.parametrize("temperature", [1e-40, 1e-300])
def test_a_temperature_too_small_for_float32_is_greedy_not_an_error(temperature):
    torch.manual_seed(0)
    logits = torch.randn(8, 50) - 3.0 * torch.arange(8).unsqueeze(1)  # rows all negative, rows with positives
    logits[0, 40:] = float("-inf")  # padded ids, masked
    for options in ({}, {"top_k": 5}, {"top_p": 0.9}):
        assert torch.equal(sample_next(logits, temperature, **options), logits.argmax(dim=-1, keepdim=True))


def test_a_row_whose_logits_overflowed_is_greedy_and_the_others_sample_as_before():
    """fp16 logits that overflowed (+inf, or NaN from inf − inf) in some rows: those rows take their argmax and
    the draws of the other rows are the ones they would get anyway."""
    torch.manual_seed(0)
    logits = torch.randn(4, 50)
    clean = sample_next(logits, 1.0, generator=torch.Generator().manual_seed(1))
    logits[1, 7] = float("inf")
    logits[2, 3] = float("nan")
    for options in ({}, {"top_k": 5}, {"top_p": 0.9}):
        out = sample_next(logits, 1.0, generator=torch.Generator().manual_seed(1), **options)
        assert out[1].item() == 7 and out[2].item() == logits[2].argmax().item()
    out = sample_next(logits, 1.0, generator=torch.Generator().manual_seed(1))
    assert out[0].item() == clean[0].item() and out[3].item() == clean[3].item()


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
