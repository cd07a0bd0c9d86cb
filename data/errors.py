"""The data package's error for bad input: a data config value, a source file, a tokenizer or a split."""

from __future__ import annotations


class DataError(ValueError):
    """Bad data input. Its message is one line that names the key or file, what is allowed and what was given;
    the entry points print it as ``error: <message>`` and exit non-zero without a traceback."""

    def __init__(self, message: str):
        super().__init__(" ".join(message.split()))  # always one line
