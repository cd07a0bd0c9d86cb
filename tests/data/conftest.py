"""Every data test gets its own token cache and ``datasets`` cache under ``tmp_path``: no test sees another's."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def local_caches(tmp_path, monkeypatch):
    """``$GPT_DATA_CACHE`` (what ``data.cache_dir`` defaults to) and the ``datasets`` cache inside ``tmp_path``."""
    import datasets

    monkeypatch.setenv("GPT_DATA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf"))
    return tmp_path / "cache"
