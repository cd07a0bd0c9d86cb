"""FLOP accounting (6N + 12·L·H·Q·T, counted by hand on small models) and the peaks MFU divides by: the GPU table's
lookup rules and the CPU peak's cache, which keeps the highest measurement."""

from __future__ import annotations

import json

import pytest
import torch

import model.flops as flops
from model import GPT, GPTConfig
from model.flops import cpu_peak_flops, gpu_peak_flops, measure_matmul_flops, model_flops_per_token

# ---- FLOPs per token --------------------------------------------------------------------------------------------


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
    config = GPTConfig(
        vocab_size=64,
        block_size=8,
        n_layer=2,
        n_head=2,
        n_embd=16,
        arch="llama",
        n_kv_head=1,
        mlp_hidden=32,
        tie_embeddings=False,
    )
    assert model_flops_per_token(GPT(config)) == 37_344


# ---- GPU peaks: how a device name and precision find their row ---------------------------------------------------


@pytest.mark.parametrize("name", ["NVIDIA A10G", "NVIDIA GB200", "NVIDIA GeForce RTX 4090 D", "Some New GPU"])
def test_a_gpu_without_a_row_of_its_own_gets_no_peak(name):
    """No published figures (A10G), or a different part whose name contains a listed one: no MFU, not a guess."""
    assert gpu_peak_flops(name, "bf16") is None


def test_a_precision_the_gpu_lacks_gets_no_peak():
    assert gpu_peak_flops("Tesla V100-SXM2-16GB", "bf16") is None
    assert gpu_peak_flops("Tesla V100-SXM2-16GB", "fp16") is not None


def test_fp32_counts_at_the_tf32_rate_only_when_tf32_is_allowed():
    with_tf32 = gpu_peak_flops("NVIDIA A100-SXM4-80GB", "fp32", tf32=True)
    without = gpu_peak_flops("NVIDIA A100-SXM4-80GB", "fp32", tf32=False)
    assert with_tf32 > without > 0
    # A GPU without TF32 tensor cores runs fp32 at its plain rate either way.
    assert gpu_peak_flops("Tesla T4", "fp32", tf32=True) == gpu_peak_flops("Tesla T4", "fp32", tf32=False)


@pytest.mark.parametrize(
    "variant,base",
    [
        ("NVIDIA H100 PCIe", "NVIDIA H100 80GB HBM3"),
        ("NVIDIA H100 NVL", "NVIDIA H100 80GB HBM3"),
        ("NVIDIA H200 NVL", "NVIDIA H200"),
        ("Tesla V100-PCIE-16GB", "Tesla V100-SXM2-16GB"),
        ("Tesla V100S-PCIE-32GB", "Tesla V100-SXM2-16GB"),
    ],
)
def test_a_gpu_variant_finds_its_own_row_before_the_family_row(variant, base):
    precision = "fp16"
    assert gpu_peak_flops(variant, precision) is not None
    assert gpu_peak_flops(variant, precision) != gpu_peak_flops(base, precision)


# ---- the CPU peak -------------------------------------------------------------------------------------------------


@pytest.fixture
def measurements(monkeypatch):
    """Replace the matmul measurement by a queue of rates; returns the queue (what is left is what was unused)."""
    queue: list[float] = []

    def measure(device, dtype=torch.float32):
        assert device == "cpu" and dtype == torch.float32
        return queue.pop(0)

    monkeypatch.setattr(flops, "measure_matmul_flops", measure)
    return queue


def test_the_cpu_peak_is_measured_once_then_read_from_the_cache(tmp_path, measurements):
    measurements.extend([5e10, 9e10])
    assert cpu_peak_flops(tmp_path) == 5e10
    assert cpu_peak_flops(tmp_path) == 5e10
    assert measurements == [9e10]  # the second call measured nothing


def test_a_lower_remeasurement_never_replaces_a_higher_peak(tmp_path, measurements):
    """A measurement on a busy machine is low; keeping it would inflate every MFU."""
    measurements.extend([8e10, 3e10])
    assert cpu_peak_flops(tmp_path) == 8e10
    assert cpu_peak_flops(tmp_path, refresh=True) == 8e10
    assert cpu_peak_flops(tmp_path) == 8e10 and not measurements
    assert list(json.loads((tmp_path / "hydra-gpt-template" / "cpu_peak_flops.json").read_text()).values()) == [8e10]


def test_a_higher_remeasurement_raises_the_stored_peak(tmp_path, measurements):
    measurements.extend([3e10, 8e10])
    assert cpu_peak_flops(tmp_path) == 3e10
    assert cpu_peak_flops(tmp_path, refresh=True) == 8e10
    assert cpu_peak_flops(tmp_path) == 8e10 and not measurements


def test_an_unreadable_cache_is_measured_again_and_rewritten(tmp_path, measurements):
    path = tmp_path / "hydra-gpt-template" / "cpu_peak_flops.json"
    path.parent.mkdir()
    path.write_text("{not json")
    measurements.append(4e10)
    assert cpu_peak_flops(tmp_path) == 4e10
    assert list(json.loads(path.read_text()).values()) == [4e10]


@pytest.mark.parametrize("bf16_speed", [2.0, 0.1])  # with bf16 instructions, and emulated
def test_a_bf16_run_on_a_cpu_counts_against_the_better_of_the_bf16_and_fp32_rates(bf16_speed, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    rates = {torch.float32: 5e10, torch.bfloat16: 5e10 * bf16_speed}
    measured = []
    monkeypatch.setattr(flops, "measure_matmul_flops", lambda device, dtype: measured.append(dtype) or rates[dtype])
    assert flops.peak_flops(torch.device("cpu"), "fp32") == 5e10
    assert flops.peak_flops(torch.device("cpu"), "bf16") == max(rates.values())
    assert flops.peak_flops(torch.device("cpu"), "fp32") == 5e10
    assert measured == [torch.float32, torch.bfloat16]  # each measured once, cached apart


def test_the_matmul_measurement_is_a_plausible_rate_and_leaves_the_runs_random_numbers_as_they_were():
    # measured lazily after a run's first update: a draw from the global generator would change its dropout
    state = torch.get_rng_state()
    rate = measure_matmul_flops("cpu", sizes=(128,), seconds=0.05)
    assert 1e8 < rate < 1e14
    assert torch.equal(torch.get_rng_state(), state)
