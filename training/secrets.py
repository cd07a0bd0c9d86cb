"""Keep secrets out of everything a run writes: config dumps, logs, checkpoints, metrics and W&B.

A secret is the value of an environment variable whose name contains KEY, TOKEN, SECRET, PASSWORD or
CREDENTIAL (``WANDB_API_KEY``, ``HF_TOKEN``), or of a config key with such a word as a part of its name
(``hf_token``, ``api_key``; not ``max_tokens``): a key a fork adds to its config groups, and its value given
as a command-line override.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SECRET_ENV = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)", re.IGNORECASE)
SECRET_KEY = re.compile(r"(^|[_.-])(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)($|[_.-])", re.IGNORECASE)
REDACTED = "<redacted>"
_registered: set[str] = set()


def register_overrides(overrides: list[str]) -> None:
    """Treat the values of secret-looking keys given on the command line (``data.hf_token=…``) as secrets."""
    for override in overrides:
        key, sep, value = override.partition("=")
        if sep and SECRET_KEY.search(key.split(".")[-1]) and len(value) >= 4:
            _registered.add(value)


def secret_values() -> list[str]:
    """Values of environment variables whose names look secret (long enough not to match by chance), and of
    secret-looking command-line overrides."""
    env = {v for k, v in os.environ.items() if SECRET_ENV.search(k) and len(v) >= 8}
    return sorted(env | _registered, key=len, reverse=True)


def redact(obj: Any, secrets: list[str] | None = None) -> Any:
    """A copy of a config container (or override list) with secret-looking keys and secret values masked."""
    secrets = secret_values() if secrets is None else secrets
    if isinstance(obj, Mapping):
        return {
            k: (REDACTED if SECRET_KEY.search(str(k)) and obj[k] not in (None, "") else redact(v, secrets))
            for k, v in obj.items()
        }
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact(v, secrets) for v in obj)
    if isinstance(obj, str):
        key, sep, _ = obj.partition("=")  # an override such as trainer.hf_token=abc
        if sep and SECRET_KEY.search(key.split(".")[-1]):
            return f"{key}={REDACTED}"
        for s in secrets:
            if s in obj:
                obj = obj.replace(s, REDACTED)
    return obj


def scrub_hydra_files(run_dir: Path) -> None:
    """Rewrite what Hydra saved in ``<run_dir>/.hydra`` (config, hydra config, overrides) without secrets."""
    from omegaconf import OmegaConf

    for path in sorted((run_dir / ".hydra").glob("*.yaml")):
        original = path.read_text()
        data = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        clean = OmegaConf.to_yaml(OmegaConf.create(redact(data)))
        if clean != OmegaConf.to_yaml(OmegaConf.create(data)) or any(s in original for s in secret_values()):
            path.write_text(clean)
