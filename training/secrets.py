"""Keep secrets out of everything a run writes: config dumps, logs, checkpoints, metrics and W&B.

A secret is the value of an environment variable whose name contains KEY, TOKEN, SECRET, PASSWORD or
CREDENTIAL (``WANDB_API_KEY``, ``HF_TOKEN``), or of a config key with such a word as a part of its name
(``hf_token``, ``api_key``; not ``max_tokens``): a key a fork adds to its config groups, and its value given
as a command-line override. A value shaped like a common credential is one too, under any key and inside any
text (``logger.notes=hf_…``): Hugging Face, OpenAI-style, GitHub and AWS keys, W&B's local-server keys, a URL's
password (``http://user:…@host``), and a bare 40-hex string (W&B's API keys) — except under a key naming a
revision, commit or sha, or as a path segment (HF's ``snapshots/<revision>/``), where 40 hex digits are a git
commit.

Everything a run writes goes through ``redact``: Hydra's files (a sweep's ``multirun.yaml`` too), the checkpoint's
config, each sink's config, settings and command line, and every log line (``RedactLogs``, in
``conf/hydra/job_logging``).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SECRET_ENV = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)", re.IGNORECASE)
SECRET_KEY = re.compile(r"(^|[_.-])(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)($|[_.-])", re.IGNORECASE)
REDACTED = "<redacted>"
# Credentials by their shape: Hugging Face, OpenAI (legacy and project, service-account and admin keys), GitHub
# (classic and fine-grained), AWS access key ids, W&B's local-server keys. Random, so a false match is unlikely.
SECRET_SHAPES = re.compile(
    r"(?<![A-Za-z0-9])(?:hf_[A-Za-z0-9]{30,}|sk-[A-Za-z0-9]{32,}|sk-(?:proj|svcacct|admin)-[A-Za-z0-9_-]{20,}"
    r"|gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,}|(?:AKIA|ASIA)[0-9A-Z]{16}|local-[0-9a-f]{40})"
    r"(?![A-Za-z0-9])"
)
# A URL's password (scheme://user:password@host: an MLflow tracking server, a proxy); the user name is kept.
URL_PASSWORD = re.compile(r"(?<=://)([^/\s:@]*):[^/\s@]+@")
# W&B's API keys are 40 hex digits, as are git commits: a commit is kept under such a key or in a path.
HEX40 = re.compile(r"(?<![0-9A-Za-z/])[0-9a-f]{40}(?![0-9A-Za-z])")
REVISION_KEY = re.compile(r"(^|[_.-])(REVISION|COMMIT|SHA)($|[_.-])", re.IGNORECASE)
KEY_BEFORE = re.compile(r"([\w.+~-]+)\s*[=:]\s*['\"]?$")  # the key a value follows: data.revision=…, sha: '…'
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


def redact(obj: Any, secrets: list[str] | None = None, key: str = "") -> Any:
    """A copy of a config container (or override list, or text) with secret-looking keys, secret values and
    credential-shaped strings masked; ``key``: the key ``obj`` is the value of."""
    secrets = secret_values() if secrets is None else secrets
    if isinstance(obj, Mapping):
        return {
            k: (REDACTED if SECRET_KEY.search(str(k)) and obj[k] not in (None, "") else redact(v, secrets, str(k)))
            for k, v in obj.items()
        }
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact(v, secrets, key) for v in obj)
    if isinstance(obj, str):
        override, sep, _ = obj.partition("=")  # an override such as trainer.hf_token=abc
        if sep and SECRET_KEY.search(override.split(".")[-1]):
            return f"{override}={REDACTED}"
        obj = redact_text(obj, secrets, key)
    return obj


def redact_text(text: str, secrets: list[str] | None = None, key: str = "") -> str:
    """``text`` (prose, a log line, overrides joined) with secret values and credential-shaped strings masked; a
    bare 40-hex string is kept only where the key it follows (``data.revision=…``), or else ``key``, names a
    revision, commit or sha."""
    for s in secret_values() if secrets is None else secrets:
        if s in text:
            text = text.replace(s, REDACTED)
    text = URL_PASSWORD.sub(rf"\1:{REDACTED}@", SECRET_SHAPES.sub(REDACTED, text))

    def commit_or_key(match: re.Match) -> str:
        before = KEY_BEFORE.search(text[max(0, match.start() - 200) : match.start()])
        name = before.group(1) if before else key
        return match.group(0) if REVISION_KEY.search(name.split(".")[-1]) else REDACTED

    return HEX40.sub(commit_or_key, text)


def scrub_hydra_files(*dirs: Path) -> None:
    """Rewrite what Hydra saved in each of ``dirs`` without secrets: a run's ``.hydra/`` (config, hydra config,
    overrides), a sweep's ``multirun.yaml``. Atomically, as a sweep's jobs may scrub its file at once."""
    from omegaconf import OmegaConf

    from data.atomic import replace_file

    paths = [p for d in dirs for p in (*sorted((d / ".hydra").glob("*.yaml")), d / "multirun.yaml") if p.is_file()]
    for path in paths:
        original = path.read_text()
        data = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        clean = OmegaConf.to_yaml(OmegaConf.create(redact(data)))
        if clean != OmegaConf.to_yaml(OmegaConf.create(data)) or redact(original) != original:
            replace_file(path, clean)


class RedactLogs(logging.Filter):
    """A logging filter for the run's handlers: a message is redacted before train.log, the console and what W&B
    captures of the console see it (an error can echo a URL with a token, or what the user typed)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: the handler reports it as logging does
            return True
        clean = redact_text(message)  # prose: a "key=value" inside it is not an override to cut at
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:  # a traceback echoes the error's text: the handlers take this
            record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
        return True
