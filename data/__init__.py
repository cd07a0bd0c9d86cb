"""Data: corpus (``data.corpus``) → tokenizer (``data.tokenizer``) → token cache (``data.cache``) → batches
(``data.batches``)."""

from data.batches import TrainBatches, ValBatches
from data.cache import TokenCache, prepare
from data.corpus import build_corpus
from data.tokenizer import token_byte_lengths

__all__ = ["TokenCache", "TrainBatches", "ValBatches", "build_corpus", "prepare", "token_byte_lengths"]
