"""Fixtures for the scheduling tests: conf/ composed as ``python -m scheduling.plot`` composes it."""

from __future__ import annotations

import pytest

from scheduling.spec import compose


@pytest.fixture
def compose_config():
    """``compose_config(overrides)``: the composed training config, with the resolver conf/ uses registered."""
    return compose
