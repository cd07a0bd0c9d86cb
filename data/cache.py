"""The token cache: a corpus tokenized once, as one flat token file per split plus its metadata.

``<cache_dir>/<corpus>-<key>/`` holds ``tokenizer.json``, ``train.bin``, ``val.bin`` (uint16 when the vocab
fits, else uint32; documents joined with the end-of-text token after each) and ``meta.json`` (token and byte
counts, dtype, tokenizer hash, source fingerprint). The key hashes the corpus fingerprint and the tokenizer
settings, so a changed source or tokenizer gets a new directory and an unchanged one is reused. The directory
is built under a temporary name and renamed into place only when complete, so a killed preparation never
leaves a cache that a later run trusts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from data.corpus import SPLITS, Corpus, build_corpus, file_digest
from data.tokenizer import EOT, capped, eot_id, load_tokenizer, tokenizer_hash, train_tokenizer
from training.errors import ConfigError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
ENCODE_BATCH_BYTES = 4 << 20  # text handed to one encode_batch call


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


@dataclass
class TokenCache:
    """A complete cache directory: memory-mapped tokens per split, the tokenizer and the metadata."""

    path: Path
    meta: dict[str, Any]

    @classmethod
    def open(cls, path: Path) -> TokenCache | None:
        """The cache at ``path`` if it is complete and consistent, else None."""
        try:
            meta = json.loads((path / "meta.json").read_text())
            itemsize = np.dtype(meta["dtype"]).itemsize
            for split in SPLITS:
                if (path / f"{split}.bin").stat().st_size != meta["tokens"][split] * itemsize:
                    return None
            if not (path / "tokenizer.json").is_file() or meta.get("format") != FORMAT_VERSION:
                return None
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return cls(path, meta)

    def tokens(self, split: str) -> np.ndarray:
        return np.memmap(self.path / f"{split}.bin", dtype=self.meta["dtype"], mode="r")

    def tokenizer(self) -> Tokenizer:
        return Tokenizer.from_file(str(self.path / "tokenizer.json"))

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    @property
    def eot_id(self) -> int:
        return int(self.meta["eot_id"])


def _batches(texts: Iterable[str], max_bytes: int) -> Iterator[list[str]]:
    batch: list[str] = []
    size = 0
    for text in texts:
        batch.append(text)
        size += len(text)
        if size >= max_bytes:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def encode_to_file(tok: Tokenizer, texts: Iterable[str], eot: int, dtype: np.dtype, path: Path) -> tuple[int, int]:
    """Tokenize ``texts`` in parallel batches (``encode_batch_fast``), each followed by ``eot``, into ``path``.

    Returns (tokens written, UTF-8 bytes of text encoded).
    """
    n_tokens = n_bytes = 0
    with open(path, "wb") as fh:
        for batch in _batches(texts, ENCODE_BATCH_BYTES):
            encodings = tok.encode_batch_fast(batch, add_special_tokens=False)
            ids: list[int] = []
            for enc in encodings:
                ids.extend(enc.ids)
                ids.append(eot)
            arr = np.asarray(ids, dtype=dtype)
            arr.tofile(fh)
            n_tokens += arr.size
            n_bytes += sum(len(t.encode("utf-8", "surrogateescape")) for t in batch)
        fh.flush()
        os.fsync(fh.fileno())
    return n_tokens, n_bytes


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def tokenizer_settings(cfg: Any) -> dict[str, Any]:
    """What determines the tokenizer: a given file's hash, or the training settings."""
    special = list(cfg.get("special_tokens") or [EOT])
    given = cfg.get("tokenizer")
    if given:
        if not Path(given).is_file():
            raise ConfigError(f"data.tokenizer: {str(given)!r} does not exist")
        return {"file": file_digest(given), "special_tokens": special}
    return {
        "vocab_size": cfg.get("vocab_size"),
        "special_tokens": special,
        "train_bytes": cfg.get("tokenizer_train_bytes"),
    }


def cache_path(cfg: Any, corpus: Corpus) -> Path:
    settings = tokenizer_settings(cfg)
    key = hashlib.sha256(
        json.dumps([FORMAT_VERSION, corpus.fingerprint, settings], sort_keys=True).encode()
    ).hexdigest()[:16]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", corpus.name).strip("_") or "corpus"
    return Path(os.path.expanduser(str(cfg.get("cache_dir") or ".cache/data"))) / f"{name}-{key}"


def build(cfg: Any, corpus: Corpus, final: Path) -> TokenCache:
    """Tokenize ``corpus`` into a new cache directory, atomically renamed to ``final``."""
    started = time.perf_counter()
    special = list(cfg.get("special_tokens") or [EOT])
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    try:
        if cfg.get("tokenizer"):
            tok = load_tokenizer(cfg.get("tokenizer"))
        else:
            tok = train_tokenizer(
                capped(corpus.documents("train"), cfg.get("tokenizer_train_bytes")),
                cfg.get("vocab_size"),
                special,
            )
        eot = eot_id(tok, special)
        vocab = tok.get_vocab_size()
        dtype = token_dtype(vocab)
        tok.save(str(tmp / "tokenizer.json"))
        tokens, nbytes = {}, {}
        for split in SPLITS:
            tokens[split], nbytes[split] = encode_to_file(
                tok, corpus.documents(split), eot, dtype, tmp / f"{split}.bin"
            )
        if tokens["train"] == 0:
            raise ConfigError(f"data: the corpus {corpus.name!r} has no training text (empty files, or a cap of 0?)")
        if tokens["val"] == 0:
            raise ConfigError(
                f"data: the corpus {corpus.name!r} gives no validation text; raise data.val_fraction "
                f"(now {corpus.val_fraction}) or add documents"
            )
        stats = corpus.decode_stats
        meta = {
            "format": FORMAT_VERSION,
            "corpus": corpus.name,
            "source_fingerprint": corpus.fingerprint,
            "tokenizer_hash": tokenizer_hash(tok),
            "tokenizer_settings": tokenizer_settings(cfg),
            "vocab_size": vocab,
            "eot_id": eot,
            "dtype": dtype.name,
            "tokens": tokens,
            "bytes": nbytes,
            "skipped_undecodable": stats.skipped,
            "replaced_undecodable": stats.replaced,
            "build_seconds": round(time.perf_counter() - started, 2),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        with open(tmp / "meta.json", "rb+") as fh:
            os.fsync(fh.fileno())
        _fsync_dir(tmp)
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished the same cache first: keep theirs
            if TokenCache.open(final) is None:
                raise
            shutil.rmtree(tmp, ignore_errors=True)
        _fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if stats.skipped or stats.replaced:
        what = "skipped" if stats.skipped else "decoded with U+FFFD"
        log.warning(
            "data: %d file(s) were not valid UTF-8 and were %s (e.g. %s)",
            stats.skipped + stats.replaced,
            what,
            ", ".join(stats.examples),
        )
    return TokenCache(final, meta)


def prepare(cfg: Any, build_if_missing: bool = True) -> TokenCache:
    """The token cache for the ``data`` config: reused when its fingerprint matches, else built."""
    corpus = build_corpus(cfg)
    path = cache_path(cfg, corpus)
    cache = TokenCache.open(path)
    if cache is not None:
        log.info("data: reusing token cache %s", path)
        return cache
    if not build_if_missing:
        raise ConfigError(f"data: the token cache {path} is missing or incomplete")
    if path.exists():  # only ever created complete, so something else damaged it: rebuild
        log.warning("data: the token cache %s is damaged; rebuilding it", path)
        shutil.rmtree(path)
    log.info("data: tokenizing %s into %s", corpus.name, path)
    return build(cfg, corpus, path)
