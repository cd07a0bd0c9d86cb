"""Data: corpus (``data.corpus``) → tokenizer (``data.tokenizer``) → token cache (``data.cache``) → batches
(``data.batches``); a weighted mixture of corpora (``data.mixture``) shares one tokenizer. Bad input raises
``DataError``; ``data.atomic`` writes files and directories atomically."""

from data.batches import MixtureValBatches, TrainBatches, ValBatches
from data.cache import TokenCache, prepare
from data.corpus import build_corpus
from data.errors import DataError
from data.tokenizer import token_byte_lengths

__all__ = [
    "DataError",
    "MixtureValBatches",
    "TokenCache",
    "TrainBatches",
    "ValBatches",
    "build_corpus",
    "prepare",
    "token_byte_lengths",
]
