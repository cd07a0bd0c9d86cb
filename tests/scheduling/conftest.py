"""Fixtures for the scheduling tests: conf/ composed as ``python -m scheduling.plot`` composes it."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from scheduling import unless_budget

CONF = Path(__file__).resolve().parents[2] / "conf"


@pytest.fixture
def compose_config():
    """``compose_config(overrides)``: the composed training config, with the resolver conf/ uses registered."""
    if not OmegaConf.has_resolver("unless_budget"):
        OmegaConf.register_new_resolver("unless_budget", unless_budget)

    def compose_config(overrides: list[str]):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose(config_name="config", overrides=overrides)

    return compose_config
