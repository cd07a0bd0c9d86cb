"""Small corpora on disk and the ``data`` configs that read them, shared by the data tests."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from data import build_corpus
from data.cache import TokenCache
from data.corpus import Corpus
from tests.conftest import compose_config

EOT = "<|endoftext|>"

# Documents with multi-byte characters, so byte counts and token counts differ.
DOCS = [
    f"Document {i}: naïve café, 東京 and ünïcödé ✓ — line {i}.\n" + f"def f(x):\n    return x * {i}\n" * (i % 5 + 1)
    for i in range(40)
]


def data_cfg(option: str, **values):
    """The composed ``data`` group of ``option`` with ``values`` set (paths need no override quoting). Its
    ``cache_dir`` is ``$GPT_DATA_CACHE``, which the ``local_caches`` fixture points into ``tmp_path``."""
    cfg = compose_config([f"data={option}"]).data
    cfg.vocab_size = values.pop("vocab_size", 320)
    for key, value in values.items():
        OmegaConf.update(cfg, key, value, force_add=True)
    return cfg


def write_texts(root: Path, docs: list[str], suffix: str = ".txt") -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, doc in enumerate(docs):
        p = root / f"doc{i:03d}{suffix}"
        p.write_text(doc, encoding="utf-8")
        paths.append(p)
    return paths


def write_tables(root: Path, rows: list[dict], fmt: str, n_files: int = 2) -> None:
    """``rows`` dealt round-robin into ``n_files`` tables ``part<k>.<fmt>`` (jsonl | parquet | csv)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root.mkdir(parents=True, exist_ok=True)
    for k in range(n_files):
        part = rows[k::n_files]
        path = root / f"part{k}.{fmt}"
        if fmt == "jsonl":
            path.write_text("".join(json.dumps(r) + "\n" for r in part))
        elif fmt == "parquet":
            pq.write_table(pa.Table.from_pylist(part), path)
        else:
            with open(path, "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=list(part[0]))
                writer.writeheader()
                writer.writerows(part)


def split_on_eot(tokens: np.ndarray, eot: int) -> list[list[int]]:
    """Token ids of each document in a split (every document ends with the end-of-text token)."""
    assert len(tokens) and tokens[-1] == eot
    cuts = np.flatnonzero(tokens == eot)
    return [tokens[a + 1 : b].tolist() for a, b in zip(np.r_[-1, cuts[:-1]], cuts, strict=True)]


def decoded_documents(cache: TokenCache, split: str) -> list[str]:
    tok = cache.tokenizer()
    return [tok.decode(ids) for ids in split_on_eot(np.asarray(cache.tokens(split)), cache.eot_id)]


def assert_cache_holds_the_corpus(cache: TokenCache, cfg) -> None:
    """Decoding each split's tokens gives back exactly that split's documents, in order."""
    for split in ("train", "val"):
        assert decoded_documents(cache, split) == list(build_corpus(cfg).documents(split)), split


def read_texts(cfg) -> list[str]:
    """The documents a config reads, in order, after the caps and before the train/val split."""
    corpus = build_corpus(cfg)
    return [text for _, text in corpus.capped(corpus.keyed_documents())]


class Listed(Corpus):
    """A fork's source: the documents its ``texts`` key lists, keyed by their index."""

    def __init__(self, cfg, texts: list[str], name: str = "listed"):
        super().__init__(cfg)
        if not texts:
            raise ValueError("texts: give one document at least")
        self.texts, self.name = list(texts), name

    def keyed_documents(self):
        return ((str(i), text) for i, text in enumerate(self.texts))

    def identity(self):
        return iter(self.texts)


class ListedAgain(Listed):
    """Another fork's source reading the same documents (its own code may do anything with them)."""


def not_a_corpus(cfg, texts: list[str]):
    return list(texts)
