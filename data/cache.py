"""The token cache: a corpus tokenized once, as one flat token file per split plus its metadata.

``<cache_dir>/<corpus>-<key>/`` holds ``tokenizer.json``, ``train.bin``, ``val.bin`` (uint16 when the vocab
fits, else uint32; every document followed by the end-of-text token) and ``meta.json`` (token, byte and
document counts, dtype, tokenizer hash, source fingerprint, tokenizer settings, and a crc32 of every 64 MiB of
each token file). ``<key>`` hashes the source
fingerprint (file names and content digests, caps, split settings) and the tokenizer settings (vocab size and
special tokens, or the given tokenizer file's digest): a changed source or tokenizer gets a new directory, an
unchanged one is reused. ``cache_dir`` is ``data.cache_dir`` (by default ``$GPT_DATA_CACHE`` or ``.cache/data``).

Atomicity: a cache is assembled in ``<cache_dir>/.tmp-<corpus>-<key>-*/`` and committed with ``data.atomic``
(every file fsynced, then renamed into place) only when complete. A cache is trusted only if its meta.json
matches the config, its token files have the sizes and checksums and its tokenizer the hash that meta.json
records — checked on every reuse, so a preparation killed at any moment, or a file damaged since, is never
used: it is rebuilt (the batches also check each token id against the vocabulary, for damage during a run).
The next ``prepare()`` removes the abandoned temporary directory (its builder's file lock is gone) and builds
afresh. Processes preparing the same cache at once wait for each other (a lock file) instead of all building.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tokenizers import Tokenizer

from data import atomic
from data.batches import too_short
from data.corpus import SPLITS, Corpus, build_corpus, file_digest, utf8_len
from data.errors import DataError
from data.tokenizer import (
    EOT,
    batched,
    capped,
    check_vocab_size,
    eot_id,
    load_tokenizer,
    tokenizer_hash,
    train_tokenizer,
)
from scheduling.spec import first_line

if TYPE_CHECKING:
    from data.mixture import Mixture

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; concurrent builds still end correct, just duplicated
    fcntl = None

log = logging.getLogger(__name__)

FORMAT_VERSION = 4
ENCODE_BATCH_CHARS = 4 << 20  # text per encode_batch call: enough documents to keep every core busy
DEFAULT_CACHE_DIR = ".cache/data"
BUILDING = ".building"  # the lock file a builder holds inside its temporary directory
DISK_FULL_HINT = "free space there, or point data.cache_dir (or $GPT_DATA_CACHE) at a filesystem with room"
STALE_UNLOCKED_SECONDS = 600  # another cache's temporary directory younger than this may be a live build


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id < 2¹⁶, else uint32."""
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


@dataclass
class TokenCache:
    """A complete cache directory: memory-mapped tokens per split, the tokenizer and the metadata."""

    path: Path
    meta: dict[str, Any]

    @classmethod
    def open(cls, path: Path, fingerprint: str | None = None, settings: dict | None = None) -> TokenCache | None:
        """The cache at ``path`` if it is complete and consistent (and built from ``fingerprint`` with
        tokenizer ``settings`` when given), else None."""
        meta, _ = inspect(path, fingerprint, settings)
        return None if meta is None else cls(path, meta)

    def tokens(self, split: str) -> np.ndarray:
        """The split's token ids, memory-mapped read-only (uint16 or uint32)."""
        return np.memmap(self.path / f"{split}.bin", dtype=self.meta["dtype"], mode="r")

    def tokenizer(self) -> Tokenizer:
        return Tokenizer.from_file(str(self.path / "tokenizer.json"))

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    @property
    def eot_id(self) -> int:
        return int(self.meta["eot_id"])


def inspect(path: Path, fingerprint: str | None = None, settings: dict | None = None) -> tuple[dict | None, str]:
    """(meta, "") for a complete, consistent cache at ``path``; else (None, why not)."""
    try:
        meta = json.loads((path / "meta.json").read_text())
        if not isinstance(meta, dict):
            raise TypeError(f"it holds a {type(meta).__name__}, not an object")
        if meta.get("format") != FORMAT_VERSION:
            return None, f"format {meta.get('format')}, this version reads {FORMAT_VERSION}"
        if fingerprint is not None and meta["source_fingerprint"] != fingerprint:
            return None, "built from another source"
        if settings is not None and meta["tokenizer_settings"] != json.loads(json.dumps(settings)):
            return None, "built with other tokenizer settings"
        itemsize = np.dtype(meta["dtype"]).itemsize
        for split in SPLITS:
            size, expected = (path / f"{split}.bin").stat().st_size, meta["tokens"][split] * itemsize
            if size != expected:
                return None, f"{split}.bin holds {size:,} bytes, meta.json records {expected:,}"
        tok_json = (path / "tokenizer.json").read_text()
        if tokenizer_hash(tok_json) != meta["tokenizer_hash"]:
            return None, "tokenizer.json is not the one it was built with"
        tok = Tokenizer.from_str(tok_json)
        vocab, separator = tok.get_vocab_size(), tok.token_to_id(meta["tokenizer_settings"]["special_tokens"][0])
        if (meta["vocab_size"], meta["eot_id"], meta["dtype"]) != (vocab, separator, token_dtype(vocab).name):
            return None, "meta.json's vocab_size, eot_id or dtype are not those of tokenizer.json"
        chunk_bytes = meta["checksums"]["chunk_bytes"]
        for split in SPLITS:
            recorded, now = meta["checksums"][f"{split}.bin"], atomic.file_checksums(path / f"{split}.bin", chunk_bytes)
            bad = next((i for i, (a, b) in enumerate(zip(recorded, now, strict=True)) if a != b), None)
            if bad is not None:
                start = bad * chunk_bytes
                end = min(start + chunk_bytes, (path / f"{split}.bin").stat().st_size)
                return None, f"{split}.bin bytes {start:,}–{end:,} are not those it was built with (crc32)"
    except OSError as e:
        return None, f"{e.strerror}: {e.filename}"
    except (ValueError, KeyError, TypeError, RecursionError) as e:  # RecursionError: JSON nested too deep
        return None, f"meta.json is unreadable ({type(e).__name__}: {e})"
    return meta, ""


def encode_corpus(
    tok: Tokenizer,
    documents: Iterable[tuple[str, str]],
    eot: int,
    dtype: np.dtype,
    out_dir: Path,
    given: str | None = None,
) -> dict[str, dict[str, int]]:
    """Tokenize (split, text) documents into ``out_dir/<split>.bin``, each document followed by ``eot``; the
    files are left unsynced (committing the directory fsyncs them). A tokenizer that cannot encode a document (one
    ``given`` as ``data.tokenizer`` without an unknown token) is a DataError.

    Documents go to ``encode_batch_fast`` (parallel over documents, no offsets computed) about
    ``ENCODE_BATCH_CHARS`` at a time, in order. The encoding runs in worker threads (it releases the GIL)
    so that reading the next documents and writing the last ids overlap it, and two batches may be in
    flight so the cores do not idle on one batch's longest document. Returns per split: tokens, UTF-8 bytes,
    documents.
    """
    counts = {key: dict.fromkeys(SPLITS, 0) for key in ("tokens", "bytes", "documents")}

    def encode(batch: list[tuple[str, str]]) -> list:
        try:
            return tok.encode_batch_fast([text for _, text in batch], add_special_tokens=False)
        except Exception as e:  # tokenizers raises Exception: a given tokenizer with no unknown token, say
            named = f"; data.tokenizer: {str(given)!r} needs an unknown token" if given else ""
            raise DataError(f"data: the tokenizer cannot encode the corpus ({first_line(e)}){named}") from None

    def write(batch: list[tuple[str, str]], encodings: list) -> None:
        ids: dict[str, list[int]] = {s: [] for s in SPLITS}
        for (split, text), enc in zip(batch, encodings, strict=True):
            out = ids[split]
            out += enc.ids
            out.append(eot)
            counts["bytes"][split] += utf8_len(text)
            counts["documents"][split] += 1
        for split, split_ids in ids.items():
            if split_ids:
                # file.write, not ndarray.tofile: a full disk then raises ENOSPC, which reads as DiskFull (tofile's
                # "N requested and M written" carries no errno)
                files[split].write(np.asarray(split_ids, dtype=dtype).tobytes())
                counts["tokens"][split] += len(split_ids)

    with contextlib.ExitStack() as stack:
        files = {s: stack.enter_context(open(out_dir / f"{s}.bin", "wb")) for s in SPLITS}
        pool = stack.enter_context(ThreadPoolExecutor(max_workers=2, thread_name_prefix="encode"))
        pending: deque = deque()
        for batch in batched(documents, ENCODE_BATCH_CHARS, chars=lambda doc: len(doc[1])):
            pending.append((batch, pool.submit(encode, batch)))
            if len(pending) > 2:
                done, future = pending.popleft()
                write(done, future.result())
        while pending:
            done, future = pending.popleft()
            write(done, future.result())
    return counts


def special_tokens(cfg: Any) -> list[str]:
    """``data.special_tokens`` as strings; ``<|endoftext|>`` alone when unset."""
    return [str(s) for s in (cfg.get("special_tokens") or [EOT])]


def given_tokenizer(given: Any) -> Path:
    """``data.tokenizer``: an existing tokenizer.json, else a one-line DataError."""
    path = Path(str(given))
    if path.is_dir():
        raise DataError(f"data.tokenizer: {str(path)!r} is a folder; give the tokenizer.json file (or null)")
    if not path.is_file():
        raise DataError(f"data.tokenizer: {str(path)!r} does not exist (give a tokenizer.json, or null)")
    return path


def tokenizer_settings(cfg: Any) -> dict[str, Any]:
    """What determines the tokenizer: a given file's digest, or the training settings."""
    special = special_tokens(cfg)
    given = cfg.get("tokenizer")
    if given:
        return {"file": file_digest(str(given_tokenizer(given))), "special_tokens": special}
    return {
        "vocab_size": cfg.get("vocab_size"),
        "special_tokens": special,
        "train_bytes": cfg.get("tokenizer_train_bytes"),
    }


def cache_root(cfg: Any) -> Path:
    """``data.cache_dir``, else ``$GPT_DATA_CACHE``, else ``.cache/data`` (relative to the working directory)."""
    root = cfg.get("cache_dir") or os.environ.get("GPT_DATA_CACHE") or DEFAULT_CACHE_DIR
    return Path(os.path.expanduser(str(root)))


def cache_path(cfg: Any, corpus: Corpus, settings: dict[str, Any] | None = None) -> Path:
    """``<cache_dir>/<corpus>-<key>``, key = sha256(format, source fingerprint, tokenizer settings)[:16]."""
    settings = settings if settings is not None else tokenizer_settings(cfg)
    blob = json.dumps([FORMAT_VERSION, corpus.fingerprint, settings], sort_keys=True)
    key = hashlib.sha256(blob.encode()).hexdigest()[:16]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", corpus.name).strip("_.")[-48:] or "corpus"
    return cache_root(cfg) / f"{name}-{key}"


def _lock(fh, blocking: bool = True) -> bool:
    """An exclusive advisory lock on ``fh``; False when another process holds it. Where the filesystem has no
    locks, a blocking call goes on without one and a non-blocking one answers False (nothing is taken for
    abandoned that might be live)."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        return True
    except BlockingIOError:
        return False
    except OSError:
        return blocking


def remove_abandoned(final: Path) -> None:
    """Delete the ``.tmp-*`` directories of builds that died: nobody holds their lock. ``final``'s own at once (its
    build lock is held: none of them is live), another cache's only once older than a build takes to lock its
    folder; where the filesystem has no locks, none with a lock file (it may be live)."""
    for tmp in final.parent.glob(".tmp-*"):
        lock_file = tmp / BUILDING
        try:
            young = time.time() - tmp.stat().st_mtime < STALE_UNLOCKED_SECONDS
            if lock_file.exists() and fcntl is not None:
                with open(lock_file, "rb") as fh:
                    if not _lock(fh, blocking=False):
                        continue  # a live build
                if young and not tmp.name.startswith(f".tmp-{final.name}-"):
                    continue  # its builder may be between making its lock file and locking it
            elif young:
                continue  # just created, or no locks to tell: leave young ones alone
        except OSError:
            continue
        log.info("data: removing the abandoned partial cache %s", tmp)
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def writable_cache_dir(folder: Path) -> Iterator[None]:
    """Make ``folder`` (the cache directory) if missing and check that it can be written, for the block; one
    DataError naming ``data.cache_dir`` when it cannot be. A block that fails leaves no directory it made."""
    try:
        created = make_dirs(folder)
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
    except OSError as e:
        raise DataError(
            f"data.cache_dir: {folder} cannot be written ({e.strerror or e}); give a folder you can write, or "
            "set GPT_DATA_CACHE"
        ) from None
    try:
        yield
    except BaseException:
        for d in reversed(created):  # only while empty: a cache another process put there stays
            with contextlib.suppress(OSError):
                d.rmdir()
        raise


def make_dirs(path: Path) -> list[Path]:
    """mkdir -p; returns the directories it created, outermost first (to undo on failure)."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    path.mkdir(parents=True, exist_ok=True)
    return missing[::-1]


@contextlib.contextmanager
def building(tmp: Path) -> Iterator[None]:
    """Hold a lock file in ``tmp`` while it is being filled, so no one takes it for abandoned; on success the
    lock file is removed (the young directory's mtime then protects it until it is renamed)."""
    if fcntl is None:
        yield
        return
    with open(tmp / BUILDING, "wb") as fh:
        _lock(fh)
        yield
        (tmp / BUILDING).unlink()


def build(cfg: Any, corpus: Corpus, final: Path, window: int = 1) -> TokenCache:
    """Train or load the tokenizer, tokenize ``corpus`` into a temporary directory, commit it as ``final`` — unless
    a split holds fewer tokens than one ``window`` (then nothing is left)."""
    started = time.perf_counter()
    special = special_tokens(cfg)
    tmp = atomic.begin(final.parent, final.name)
    try:
        with building(tmp):
            if cfg.get("tokenizer"):
                tok = load_tokenizer(cfg.get("tokenizer"))
            else:
                train_texts = capped(corpus.documents("train"), cfg.get("tokenizer_train_bytes"))
                tok = train_tokenizer(train_texts, cfg.get("vocab_size"), special)
            eot = eot_id(tok, special)
            vocab = tok.get_vocab_size()
            dtype = token_dtype(vocab)
            tok_json = tok.to_str()
            (tmp / "tokenizer.json").write_text(tok_json)  # committing the directory fsyncs every file
            # A special token's text inside a document ("<|endoftext|>" on a page about tokenizers) is encoded as
            # text: the separator follows each document once, and only there.
            tok.encode_special_tokens = True
            counts = encode_corpus(tok, corpus.split_documents(), eot, dtype, tmp, cfg.get("tokenizer"))
            corpus.say_rows_without_text()  # a table's rows without text, read as empty documents
            check_splits(corpus, counts)
            for split in SPLITS:  # a cache no run of this block size can use: refused before it is kept
                if counts["tokens"][split] < window:
                    raise too_short(counts["tokens"][split], window, split)
            checksums = {f"{s}.bin": atomic.file_checksums(tmp / f"{s}.bin") for s in SPLITS}
            meta = {
                "format": FORMAT_VERSION,
                "corpus": corpus.name,
                "source_fingerprint": corpus.fingerprint,
                "tokenizer_hash": tokenizer_hash(tok_json),
                "tokenizer_settings": tokenizer_settings(cfg),
                "vocab_size": vocab,
                "eot_id": eot,
                "dtype": dtype.name,
                **counts,
                "checksums": {"algorithm": "crc32", "chunk_bytes": atomic.CHECKSUM_CHUNK_BYTES, **checksums},
                "skipped_undecodable": corpus.decode_stats.skipped,
                "replaced_undecodable": corpus.decode_stats.replaced,
                "build_seconds": round(time.perf_counter() - started, 2),
            }
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    except BaseException as e:
        written = atomic.tree_bytes(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        cause = atomic.disk_full_cause(e)
        if cause is not None:
            quota = cause.errno == errno.EDQUOT
            raise atomic.DiskFull(final, written, at_least=True, hint=DISK_FULL_HINT, quota=quota) from e
        raise
    cache = TokenCache(final, meta)
    try:
        with atomic.space_for(final, hint=DISK_FULL_HINT):
            atomic.commit(tmp, final, replace=False)
    except atomic.DiskFull:
        raise
    except OSError:  # FileExistsError too: another process finished the same cache first, so keep theirs
        theirs = TokenCache.open(final)
        if theirs is None:
            raise
        cache = theirs
    stats = corpus.decode_stats
    if stats.skipped or stats.replaced:
        log.warning(
            "data: %d file(s) were not valid UTF-8 and were %s (e.g. %s); data.on_decode_error sets this",
            stats.skipped + stats.replaced,
            "skipped" if stats.skipped else "decoded with U+FFFD",
            ", ".join(stats.examples),
        )
    log.info(
        "data: %d train + %d val tokens (%s, vocab %d) in %.1f s",
        meta["tokens"]["train"],
        meta["tokens"]["val"],
        dtype.name,
        vocab,
        meta["build_seconds"],
    )
    return cache


def check_splits(corpus: Corpus, counts: dict[str, dict[str, int]]) -> None:
    for split in SPLITS:
        if counts["documents"][split] == 0:
            raise no_text(corpus, split)


def no_text(corpus: Corpus, split: str) -> DataError:
    """The corpus gives ``split`` no text: what to change, the likeliest first."""
    if split == "train":
        return DataError(
            f"data: the corpus {corpus.name!r} gives no training text; lower data.val_fraction "
            f"(now {corpus.val_fraction}) or add documents"
        )
    caps = [f"data.{key}={getattr(corpus, key)}" for key in ("max_documents", "max_bytes") if getattr(corpus, key)]
    more = f"read more of it (now {', '.join(caps)}) or " if caps else ""
    return DataError(
        f"data: the corpus {corpus.name!r} gives no validation text; {more}add documents or lines (a document "
        f"of one line is trained on whole), or raise data.val_fraction (now {corpus.val_fraction})"
    )


def check_not_empty(corpus: Corpus) -> None:
    """An empty corpus (no file, or only empty or undecodable ones) is refused before anything is written."""
    if next(corpus.capped(corpus.keyed_documents()), None) is not None:
        return
    stats = corpus.decode_stats
    why = ""
    if stats.skipped:
        why = (
            f" ({stats.skipped} file(s) skipped as not UTF-8, e.g. {stats.examples[0]}; "
            "data.on_decode_error=replace keeps them)"
        )
    raise DataError(f"data: the corpus {corpus.name!r} has no text{why}; check data.path / data.name and the caps")


@contextlib.contextmanager
def build_lock(final: Path) -> Iterator[None]:
    """Exclusive while one process prepares ``final``; others wait here, then find the cache complete."""
    lock_path = final.parent / f".{final.name}.lock"
    waiting_said = False
    while True:
        fh = open(lock_path, "wb")
        if not _lock(fh, blocking=False):
            if not waiting_said:
                log.info("data: another process is preparing %s; waiting for it", final)
                waiting_said = True
            _lock(fh)
        try:  # the holder we waited for removed its file as it left: a newcomer may lock the one now at the path
            if os.fstat(fh.fileno()).st_ino == os.stat(lock_path).st_ino:
                break
        except FileNotFoundError:
            pass
        fh.close()
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            lock_path.unlink()  # while still held, so whoever opens the path next locks a new file
        fh.close()


def prepare(cfg: Any, build_if_missing: bool = True, window: int = 1) -> TokenCache | Mixture:
    """The token cache for the ``data`` config: reused when its fingerprint matches, else built atomically (a
    mixture's: one per source, data.mixture); a new one whose split holds fewer tokens than one ``window``
    (model.block_size + 1) is refused before it is kept.

    Any DataError (bad path, empty corpus, missing column, …) leaves no cache or temporary directory behind.
    """
    if cfg.get("source") == "mixture":
        from data.mixture import prepare_mixture  # it builds on this module

        return prepare_mixture(cfg, build_if_missing, window)
    if not cfg.get("tokenizer"):
        check_vocab_size(cfg.get("vocab_size"), special_tokens(cfg))
    corpus = build_corpus(cfg)
    settings = tokenizer_settings(cfg)
    path = cache_path(cfg, corpus, settings)
    fingerprint = corpus.fingerprint
    cache = TokenCache.open(path, fingerprint, settings)
    if cache is not None:
        log.info("data: reusing token cache %s", path)
        return cache
    if not build_if_missing:
        why = inspect(path, fingerprint, settings)[1] if path.exists() else "it does not exist"
        raise DataError(f"data: the token cache {path} is missing, incomplete or damaged ({why})")
    check_not_empty(corpus)
    if not corpus.splits_off_val and next(iter(corpus.documents("val")), None) is None:
        # a dataset's own validation split (data.val_split), read before hours of tokenizing the training one
        raise DataError(f"data: the corpus {corpus.name!r} gives no validation text (data.val_split)")
    with writable_cache_dir(path.parent), build_lock(path):
        cache = TokenCache.open(path, fingerprint, settings)
        if cache is not None:  # built by the process we waited for
            return cache
        remove_abandoned(path)
        if path.exists():  # only ever renamed into place complete, so something damaged it: rebuild
            log.warning(
                "data: the token cache %s is damaged (%s); rebuilding it",
                path,
                inspect(path, fingerprint, settings)[1],
            )
            shutil.rmtree(path)
        log.info("data: tokenizing %s into %s", corpus.name, path)
        return build(cfg, corpus, path, window)
