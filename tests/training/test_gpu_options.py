"""The GPU options where there is no GPU: ``model.fused_cross_entropy`` falls back to the plain loss with one
warning (and may change on resume), and ``trainer.precision=fp8`` swaps exactly the blocks' linear layers for
torchao's float8 ones without changing the state dict. Their GPU behaviour: test_gpu_options_cuda.py."""

from __future__ import annotations

import pytest
import torch
from torchao.float8.float8_linear import Float8Linear

from model import GPT, GPTConfig
from tests.conftest import read_metrics
from training.distributed import float8_linears
from training.signals import Stopped

ARGS = ["trainer.max_steps=6", "trainer.eval_every=3"]
WARNING = (
    "model.fused_cross_entropy: liger-kernel's kernels need a CUDA GPU, not the cpu; the plain head and "
    "cross-entropy run instead"
)


def test_fused_cross_entropy_on_the_cpu_warns_once_trains_as_without_and_may_change_on_resume(
    tmp_path, tiny_train, caplog
):
    plain = read_metrics(tiny_train(tmp_path / "plain", ARGS))
    with pytest.raises(Stopped):
        tiny_train(tmp_path / "run", ARGS + ["trainer.stop_at=3"])
    caplog.clear()
    with caplog.at_level("WARNING", logger="train"):
        resumed = read_metrics(tiny_train(tmp_path / "run", ARGS + ["model.fused_cross_entropy=true"]))
    assert [r.message for r in caplog.records if "fused_cross_entropy" in r.message] == [WARNING]
    keys = ("step", "train/loss", "train/grad_norm", "val/loss")
    assert [[r.get(k) for k in keys] for r in resumed] == [[r.get(k) for k in keys] for r in plain]


def test_fp8_swaps_the_blocks_linear_layers_alone_and_keeps_the_state_dict():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    float8_linears(model)
    swapped = sorted(name for name, m in model.named_modules() if isinstance(m, Float8Linear))
    layers = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
    assert swapped == sorted(f"blocks.{i}.{layer}" for i in range(2) for layer in layers)
    assert not isinstance(model.lm_head, Float8Linear) and model.lm_head.weight is model.wte.weight
    after = model.state_dict()
    assert list(after) == list(before)
    assert all(after[k].dtype == torch.float32 and torch.equal(after[k], v) for k, v in before.items())


def test_fp8_leaves_linear_layers_whose_sizes_fp8_matmuls_cannot_take():
    """fp8 matmuls take dimensions divisible by 16: a 24-wide model keeps every layer as it was."""
    model = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=24))
    float8_linears(model)
    assert not any(isinstance(m, Float8Linear) for m in model.modules())
