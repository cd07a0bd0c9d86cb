"""Fixtures for the model tests: tiny configs of either arch, and the model presets as train.py reads them."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from model import GPT, GPTConfig


def _tiny_config(arch: str, **overrides) -> GPTConfig:
    """vocab 64, context 16, 2 layers of 4 heads of size 8; llama with 2 key/value heads and an untied head."""
    values = dict(vocab_size=64, block_size=16, n_layer=2, n_head=4, n_embd=32, arch=arch, bias=arch == "gpt2")
    if arch == "llama":
        values.update(n_kv_head=2, tie_embeddings=False)
    return GPTConfig(**{**values, **overrides})


@pytest.fixture
def tiny_config():
    return _tiny_config


def load_preset(name: str) -> dict:
    """``cfg.model`` of ``model=<name>`` as train.py composes it (the preset over conf/model/base.yaml)."""
    from training.config import compose

    return OmegaConf.to_container(compose([f"model={name}"]).model, resolve=True)


@pytest.fixture
def preset_values():
    return load_preset


@pytest.fixture
def preset():
    """``preset(name, vocab_size, **overrides)``: the GPTConfig train.py builds from a preset and a tokenizer."""

    def build(name: str, vocab_size: int, **overrides) -> GPTConfig:
        return GPTConfig.from_dict({**load_preset(name), "vocab_size": vocab_size, **overrides})

    return build


@pytest.fixture
def on_meta():
    """Build a GPT on the meta device: shapes and parameter counts without memory or initialisation time."""

    def build(config: GPTConfig) -> GPT:
        with torch.device("meta"):
            return GPT(config)

    return build
