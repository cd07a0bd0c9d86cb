"""The project's one error type for bad input: a config value, a data file or a checkpoint."""

from __future__ import annotations

from typing import Any

_UNSET = object()


class ConfigError(ValueError):
    """Bad user input. Its message is one line that names the key or file, what is allowed and what was given.

    The entry points print it as ``error: <message>`` and exit non-zero without a traceback.
    """

    def __init__(self, key: str, expected: str | None = None, got: Any = _UNSET):
        if expected is None:
            message = key
        elif got is _UNSET:
            message = f"{key} must be {expected}"
        else:
            message = f"{key} must be {expected}, got {got!r}"
        super().__init__(" ".join(message.split()))  # always one line
