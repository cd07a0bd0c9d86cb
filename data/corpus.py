"""Corpora: where the text documents come from, split into train and val deterministically.

Three sources and a fork's, one interface (``Corpus.split_documents()`` yields ``(split, text)`` in a fixed order):
- ``builtin``: the running interpreter's own standard library ``.py`` sources (on every machine, offline);
- ``text_files``: local files — plain text (``.txt``, ``.md``, ``.py``, …: one document per file) or tables
  (``.jsonl``/``.json``, ``.parquet``, ``.csv``: one document per row's ``text_column``), the tables read
  with ``datasets.load_dataset`` on local data files, file by file;
- ``hub``: a Hugging Face dataset by name (or a local dataset folder, or a builder such as ``json`` with
  ``data_files``), split and text column, optionally streamed.
- a fork's: ``data._target_`` names a Corpus subclass (or a function returning one), called as
  ``Target(data settings, **its own keys)``; it yields keyed documents and its identity (docs/extending.md).

Caps: ``max_documents`` and ``max_bytes`` (UTF-8) bound the stream of non-empty documents before the split
(with ``val_split``, each of the dataset's two splits); the document that crosses ``max_bytes`` is cut at the cap.

The split is by document: a document belongs to val when a hash of its key (relative path, file and row, or
row) falls below ``val_fraction``, so adding documents never moves others (paths are relative to the deepest
folder that holds every file: one added outside it changes every key). When that leaves either split
without a document (a corpus of one or two files), the last ``val_fraction`` of every document's lines
becomes val instead, and the log says so. A dataset with its own validation split (``val_split``) uses it whole for val.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import itertools
import json
import logging
import os
import sysconfig
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from data.errors import DataError
from scheduling.spec import dotted, first_line

SOURCES = ("builtin", "text_files", "hub")  # the template's; a fork's is named by data._target_
# The keys every source has, besides its own: the tokenizer's and the cache's, which a mixture's sources share,
# and the caps and the split, which each source of a mixture may set (the mixture's value is their default).
SHARED_KEYS = ("vocab_size", "tokenizer", "special_tokens", "tokenizer_train_bytes", "cache_dir", "document_mask")
COMMON_KEYS = ("val_fraction", "max_documents", "max_bytes", "on_decode_error")
TARGET = "_target_"
TEXT_SUFFIXES = (".txt", ".md", ".py", ".rst", ".text")
TABLE_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
SPLITS = ("train", "val")

log = logging.getLogger(__name__)


def in_val(key: str, val_fraction: float) -> bool:
    """Whether the document with this key belongs to val: blake2b(key) / 2⁶⁴ < val_fraction."""
    h = int.from_bytes(hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=8).digest(), "big")
    return h / 2**64 < val_fraction


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes, read in chunks; a file that cannot be read is a one-line DataError."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror or e})") from None
    return h.hexdigest()


def utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogateescape"))


def printable(name: str) -> str:
    """A file name fit for a message: the bytes of a name that is not UTF-8 (held as surrogates, which no log
    file or terminal can encode) as ``\\xNN`` escapes."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def split_lines(text: str, val_fraction: float) -> tuple[str, str]:
    """(train, val) parts of one document: val is its last ``val_fraction`` of lines (at least one line)."""
    lines = text.splitlines(keepends=True)
    n_val = max(1, int(round(len(lines) * val_fraction))) if len(lines) > 1 else 0
    cut = len(lines) - n_val
    return "".join(lines[:cut]), "".join(lines[cut:])


@dataclass
class DecodeStats:
    """Documents whose bytes were not valid UTF-8, and what was done with them."""

    skipped: int = 0
    replaced: int = 0
    examples: list[str] = field(default_factory=list)


def decode(raw: bytes, name: str, policy: str, stats: DecodeStats) -> str | None:
    """UTF-8 text of a file, or None when it is skipped. ``policy`` (data.on_decode_error): skip | replace | error."""
    try:
        return raw.decode("utf-8-sig")  # a byte order mark (an editor's, on Windows) is no text
    except UnicodeDecodeError as e:
        name = printable(name)
        if policy == "error":
            raise DataError(
                f"{name}: not valid UTF-8 at byte {e.start}; set data.on_decode_error=skip (drop such files) "
                "or =replace (keep them with U+FFFD)"
            ) from None
        if len(stats.examples) < 3:
            stats.examples.append(name)
        if policy == "replace":
            stats.replaced += 1
            return raw.decode("utf-8-sig", errors="replace")
        stats.skipped += 1
        return None


class Corpus:
    """Documents of one source. ``fingerprint`` changes whenever the documents or the split would."""

    name: str = "corpus"
    settings: str = ""  # a fork's source: its code's path and its own keys, which its identity() need not name

    def __init__(self, cfg: Any):
        self.cfg = cfg
        self.val_fraction = float(cfg.get("val_fraction", 0.05))
        self.max_documents = cfg.get("max_documents")
        self.max_bytes = cfg.get("max_bytes")
        self.decode_stats = DecodeStats()
        self._line_split: bool | None = None

    # Subclasses (the template's sources, a fork's: docs/extending.md) provide keyed documents in a fixed order, and
    # what identifies them; a document's bytes go through ``decoded``.
    def keyed_documents(self) -> Iterator[tuple[str, str]]:
        """Every document once, as (key, text), in the same order on every pass; the key (unique, stable) decides
        its split."""
        raise NotImplementedError

    def identity(self) -> Iterable[str]:
        """What tells these documents apart from any others (names and content digests): the token cache's key."""
        raise NotImplementedError

    def say_rows_without_text(self) -> None:
        """Warn of the rows read as empty documents for want of text (a table's; files have none)."""

    @cached_property
    def fingerprint(self) -> str:
        """sha256 over the source's identity (names, content digests), a fork's settings, the caps and the split
        settings; once."""
        h = hashlib.sha256()
        for part in (*self.identity(), *([self.settings] if self.settings else [])):
            h.update(part.encode("utf-8", "surrogateescape"))
            h.update(b"\0")
        val = self.val_fraction if self.splits_off_val else "its own split"  # else val_fraction does nothing
        h.update(f"val={val}|max_docs={self.max_documents}|max_bytes={self.max_bytes}".encode())
        return h.hexdigest()

    @property
    def splits_off_val(self) -> bool:
        """Whether validation is held out of the documents by ``val_fraction`` (not a split of the source's own)."""
        return True

    def decoded(self, raw: bytes, name: str) -> str | None:
        """A document's UTF-8 text, or None when ``data.on_decode_error`` skips it (counted, for the warning)."""
        return decode(raw, name, self.cfg.get("on_decode_error", "skip"), self.decode_stats)

    def capped(self, documents: Iterable[tuple[str, str]]) -> Iterator[tuple[str, str]]:
        """Non-empty documents until ``max_documents`` or ``max_bytes`` (the last one cut at the cap); each pass
        counts the documents it could not decode afresh."""
        self.decode_stats = DecodeStats()
        n_docs = n_bytes = 0
        for key, text in documents:
            if not text:
                continue
            if self.max_documents is not None and n_docs >= self.max_documents:
                return
            if self.max_bytes is not None:
                room = self.max_bytes - n_bytes
                if room <= 0:
                    return
                size = utf8_len(text)
                if size > room:  # cut on a character boundary
                    text = text.encode("utf-8", "surrogateescape")[:room].decode("utf-8", "ignore")
                    size = room
                n_bytes += size
            n_docs += 1
            yield key, text

    def uses_line_split(self) -> bool:
        """True when hashing keys leaves train or val without a document, so documents are split by lines."""
        if self._line_split is None:
            seen = set()
            for key, _ in self.capped(self.keyed_documents()):
                seen.add(in_val(key, self.val_fraction))
                if len(seen) == 2:  # stops at the first document of each split: cheap on a large corpus
                    break
            self._line_split = len(seen) < 2
            if len(seen) == 1:
                log.info(
                    "data: every document of %r hashed into %s; using the last %g%% of each document's lines "
                    "as val (data.val_fraction)",
                    self.name,
                    "val" if seen.pop() else "train",
                    100 * self.val_fraction,
                )
        return self._line_split

    def split_documents(self) -> Iterator[tuple[str, str]]:
        """Every document once, as (split, text), in a fixed order: one pass over the source."""
        line_split = self.uses_line_split()
        for key, text in self.capped(self.keyed_documents()):
            if line_split:
                for split, part in zip(SPLITS, split_lines(text, self.val_fraction), strict=True):
                    if part:
                        yield split, part
            else:
                yield ("val" if in_val(key, self.val_fraction) else "train"), text

    def documents(self, split: str) -> Iterator[str]:
        """The texts of ``split`` (train | val), in a fixed order."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return (text for s, text in self.split_documents() if s == split)


class FileCorpus(Corpus):
    """Plain-text files, one document each, ordered by path; their bytes are part of the fingerprint."""

    def __init__(self, cfg: Any, files: list[Path], root: Path, name: str = "files"):
        super().__init__(cfg)
        self.files, self.root, self.name = files, root, name
        self.policy = cfg.get("on_decode_error", "skip")

    @cached_property
    def keys(self) -> list[str]:
        """Each file's path relative to the root, with forward slashes: what the split hashes."""
        return [f.relative_to(self.root).as_posix() if f.is_relative_to(self.root) else str(f) for f in self.files]

    def keyed_documents(self) -> Iterator[tuple[str, str]]:
        for f, key in zip(self.files, self.keys, strict=True):
            try:
                with open(f, "rb") as fh:
                    raw = fh.read()
            except OSError as e:
                raise DataError(f"{f}: cannot be read ({e.strerror or e})") from None
            text = self.decoded(raw, str(f))
            if text is not None:
                yield key, text

    def identity(self) -> Iterable[str]:
        yield f"files|policy={self.policy}"
        for f, key in zip(self.files, self.keys, strict=True):
            yield key
            yield file_digest(f)


def builtin_files(exclude: Iterable[str]) -> tuple[list[Path], Path]:
    """The standard library's ``.py`` files of the running interpreter, sorted, minus excluded directories."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = set(exclude)
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in skip]  # pruned, not walked: site-packages can be huge
        files += [Path(folder, n) for n in names if n.endswith(".py")]
    return sorted(files, key=lambda f: f.relative_to(root).as_posix()), root


def expand_paths(path: Any) -> list[Path]:
    """``data.path``: a file, a directory (searched recursively, hidden entries skipped) or a glob; or a list."""
    if path in (None, "", "???"):
        raise DataError(
            f"data.path must be a file, a directory or a glob of text files (data=text_files), got {path!r}"
        )
    known = TEXT_SUFFIXES + tuple(TABLE_FORMATS)
    found: list[Path] = []
    for p in [path] if isinstance(path, (str, os.PathLike)) else list(path):
        p = os.path.expanduser(str(p))
        # A path that exists is that file or folder even when its name holds glob characters (``t/x[1]``).
        if glob.has_magic(p) and not os.path.exists(p):
            matches = sorted(Path(m) for m in glob.glob(p, recursive=True) if Path(m).is_file())
            if not matches:
                raise DataError(f"data.path: no file matches the glob {p!r}")
            found += matches
        elif Path(p).is_dir():
            matches = sorted(f for f in files_under(Path(p)) if f.suffix.lower() in known and f.is_file())
            if not matches:
                raise DataError(f"data.path: the directory {p!r} holds no file ending in {', '.join(known)}")
            found += matches
        elif Path(p).is_file():
            found.append(Path(p))
        else:
            raise DataError(f"data.path: {p!r} does not exist (give a file, a directory or a glob)")
    if len({f.is_absolute() for f in found}) > 1:  # a common parent needs them all absolute or all relative
        found = [f.absolute() for f in found]
    return list(dict.fromkeys(found))  # a file named twice is read once


def files_under(root: Path) -> Iterator[Path]:
    """The files under ``root`` but hidden ones (a name starting with "."), not following links to folders; a
    folder that cannot be read is a DataError (skipped, its files would be missing unsaid)."""

    def refuse(e: OSError) -> None:
        raise DataError(f"{printable(str(e.filename))}: cannot be read ({e.strerror or e})")

    for folder, dirs, names in os.walk(root, onerror=refuse):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        yield from (Path(folder) / name for name in names if not name.startswith("."))


def common_parent(files: list[Path]) -> Path:
    """The deepest directory that holds every file: what document keys are relative to."""
    return Path(os.path.commonpath([str(f.parent) for f in files]))


def short_error(e: BaseException) -> str:
    """The first line of an exception's message, and of its root cause when that says more."""
    root = e
    while (root.__cause__ or root.__context__) is not None and root is not (root.__cause__ or root.__context__):
        root = root.__cause__ or root.__context__
    return first_line(e) if root is e else f"{first_line(e)} ({first_line(root)})"


def no_parquet_rows(path: Path) -> bool:
    """A parquet file whose footer says it holds no rows (an unreadable one is for datasets to report)."""
    if path.suffix.lower() != ".parquet":
        return False
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path).metadata.num_rows == 0
    except Exception:
        return False


def first_bad_line(path: Path) -> str | None:
    """Where a JSON-lines or CSV table stops parsing, as ``line N: why`` (N: the line its bad row starts on), read
    with Python's own parsers: the errors of datasets' readers count rows from 0, from the header, per block, or
    not at all. None if none is found there."""
    import csv
    import json

    line, suffix = 1, path.suffix.lower()
    try:
        if suffix == ".csv":
            with path.open(encoding="utf-8", newline="") as f:
                reader, width = csv.reader(f, strict=True), None
                while True:
                    line = reader.line_num + 1
                    row = next(reader, None)
                    if row is None:
                        return None
                    width = len(row) if width is None else width
                    if row and len(row) != width:
                        return f"line {line}: {len(row)} fields where the header has {width}"
        if suffix == ".jsonl":
            with path.open("rb") as f:  # line by line, so that a line whose bytes are not UTF-8 is named too
                for raw in f:
                    if raw.strip():
                        json.loads(raw.decode("utf-8"))
                    line += 1
    except csv.Error as e:
        return f"line {line}: {e}"
    except json.JSONDecodeError as e:
        return f"line {line}: not JSON ({e.msg}, column {e.colno})"
    except UnicodeDecodeError as e:  # a CSV's is met a block at a time: its line is not known
        return f"line {line}: not valid UTF-8 (its byte {e.start + 1})" if suffix == ".jsonl" else None
    except OSError:
        return None
    return None


@contextlib.contextmanager
def quiet_datasets() -> Iterator[None]:
    """Silence the log lines and progress bars of ``datasets`` and of the hub client under it (two lines for each
    retry of an unreachable hub): their errors come back to us as one DataError."""
    import datasets
    from huggingface_hub.utils import logging as hub_logging

    levels = datasets.logging.get_verbosity(), hub_logging.get_verbosity()
    bars_were_off = datasets.utils.are_progress_bars_disabled()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    hub_logging.set_verbosity(hub_logging.CRITICAL)
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        datasets.logging.set_verbosity(levels[0])
        hub_logging.set_verbosity(levels[1])
        if not bars_were_off:
            datasets.enable_progress_bars()


class TableCorpus(Corpus):
    """Rows read with ``datasets.load_dataset``; one document per row's ``text_column``.

    ``files`` given: local tables of one ``builder`` (json | parquet | csv), loaded one file at a time so a
    row's key is (file, row). Otherwise ``builder`` is a hub dataset name, a local dataset folder, or a
    builder with ``cfg.data_files``, and a row's key is its index.
    """

    def __init__(self, cfg: Any, builder: str, name: str, files: list[Path] | None = None):
        super().__init__(cfg)
        self.builder, self.name, self.files = builder, name, files
        self.text_column = cfg.get("text_column") or "text"
        self.streaming = bool(cfg.get("streaming", False))
        self.root = common_parent(files) if files else None
        self.without_text: dict[str, tuple[int, int, int]] = {}  # table → rows without text, rows read, first
        self.read_afresh: set[tuple[str, str]] = set()  # the (split, files) loaded afresh by this corpus

    def load(self, split: str, data_files: Any = None) -> Any:
        """The dataset split (a ``Dataset``, or an ``IterableDataset`` when streaming); errors as DataError."""
        import datasets

        kwargs: dict[str, Any] = {"split": split, "streaming": self.streaming}
        data_files = data_files if data_files is not None else self.cfg.get("data_files")
        if data_files:
            kwargs["data_files"] = plain(data_files)
        for key, arg in (("config_name", "name"), ("revision", "revision")):
            if self.cfg.get(key):
                kwargs[arg] = self.cfg.get(key)
        where = str(data_files[0]) if self.files else self.builder
        from_hub = not self.files and not Path(self.builder).exists() and not data_files
        read = (split, str(plain(data_files)))
        if self.local() and not self.streaming and read not in self.read_afresh:
            # datasets knows local files again by their mtime, not content: read them afresh (once here), unchecked
            # against the sizes recorded for the old content
            kwargs.update(download_mode="force_redownload", verification_mode="no_checks")
            self.read_afresh.add(read)
        if from_hub:  # it may retry for a while before it answers or fails
            log.info("data: loading %r split %r from the Hugging Face hub", self.builder, split)
        try:
            with quiet_datasets():
                ds = datasets.load_dataset(self.builder, **kwargs)
        except Exception as e:  # the hub, the network or the files: say which, in one line
            hint = " (check data.name and the network; with HF_HUB_OFFLINE=1 only cached datasets load)"
            hint = hint if from_hub else ""
            raise DataError(f"data: cannot load {where!r} split {split!r}{hint}: {self.why(where, e)}") from None
        columns = ds.column_names
        if columns == [] and next(iter(ds), None) is None:  # no row, or (JSON Lines) rows of no key: {}
            if self.files:
                with open(where, "rb") as fh:
                    if any(line.strip() for line in fh):
                        raise self.missing_column(where, columns)
            return []
        if columns is not None and self.text_column not in columns:
            raise self.missing_column(where, columns)
        return ds

    def why(self, where: str, error: Exception) -> str:
        """Why a table failed to load or read: the line of a local file that does not parse, else the error."""
        return (first_bad_line(Path(where)) if self.files else None) or short_error(error)

    def missing_column(self, where: str, columns: Iterable[str]) -> DataError:
        return DataError(
            f"data.text_column must be a column of {where!r} ({', '.join(columns)}), got {self.text_column!r}"
        )

    def rows(self, ds: Any, where: str) -> Iterator[str]:
        """The text of each row; a missing column or a file that fails to parse mid-stream is a DataError. Rows
        without text (a null, or a JSON Lines row without the key) are counted for ``say_rows_without_text``."""
        nulls = read = first = 0
        try:
            with quiet_datasets():  # for the whole pass: toggling log levels per row would be slow
                it = iter(ds)
                for number in itertools.count(1):
                    try:
                        row = next(it)
                    except StopIteration:
                        return
                    except Exception as e:
                        raise DataError(f"data: cannot read {where!r}: {self.why(where, e)}") from None
                    read = number
                    if self.text_column not in row:
                        raise self.missing_column(where, row)
                    text = row[self.text_column]
                    if text is not None and not isinstance(text, str):  # null: a row without text, an empty one
                        raise DataError(
                            f"data: {where!r} row {number}: data.text_column {self.text_column!r} must hold text, "
                            f"got {type(text).__name__}"
                        )
                    if text is None:
                        nulls, first = nulls + 1, first or number
                    yield text or ""
        finally:  # the pass read to its end, or stopped at a cap: what it read
            if nulls:
                self.without_text[where] = (nulls, read, first)
            else:
                self.without_text.pop(where, None)

    def say_rows_without_text(self) -> None:
        """One warning per table whose rows lacked text in the last pass over it (the tokenizing one)."""
        for where, (nulls, read, first) in self.without_text.items():
            log.warning(
                "data: %s: %d of the %d row(s) read have no %r (null, or the key missing; the first: row %d): read "
                "as empty documents",
                where,
                nulls,
                read,
                self.text_column,
                first,
            )

    def keyed_documents(self) -> Iterator[tuple[str, str]]:
        if self.files:
            for f in self.files:
                if f.stat().st_size == 0 or no_parquet_rows(f):  # no document, as an empty text file (datasets
                    continue  # cannot load either)
                key = f.relative_to(self.root).as_posix()
                for i, text in enumerate(self.rows(self.load("train", [str(f)]), str(f))):
                    yield f"{key}:{i}", text
            return
        split = self.cfg.get("split") or "train"
        for i, text in enumerate(self.rows(self.load(split), self.builder)):
            yield f"{i}", text

    def split_documents(self) -> Iterator[tuple[str, str]]:
        val_split = self.cfg.get("val_split")
        if not val_split:
            yield from super().split_documents()
            return
        # The dataset has its own validation split: its train split whole for train, that one whole for val.
        for split in SPLITS:
            for text in self.documents(split):
                yield split, text

    def documents(self, split: str) -> Iterator[str]:
        val_split = self.cfg.get("val_split")
        if not val_split or split not in SPLITS:
            return super().documents(split)
        if split == "train":  # without touching the validation split (tokenizer training reads only this)
            return (text for _, text in self.capped(self.keyed_documents()))
        val_rows = enumerate(self.rows(self.load(val_split), f"{self.builder}:{val_split}"))
        return (text for _, text in self.capped((str(i), text) for i, text in val_rows))

    @property
    def splits_off_val(self) -> bool:
        return not self.cfg.get("val_split")

    def check_local_data_files(self) -> None:
        """Each of ``data.data_files`` that names local files (those of a builder, json, csv, parquet, or of a
        dataset folder; a hub dataset's are its repository's) matches one: datasets would fail with StopIteration."""
        from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES

        folder = self.dataset_folder()
        if not self.files and not self.cfg.get("data_files") and self.builder in _PACKAGED_DATASETS_MODULES:
            # datasets would read whatever the working directory holds, which the cache's key cannot see
            raise DataError(
                f"data.data_files: the {self.builder!r} builder reads local files: name them (data.data_files=…), "
                "or read them with data=text_files data.path=…"
            )
        if not self.cfg.get("data_files") or (folder is None and self.builder not in _PACKAGED_DATASETS_MODULES):
            return
        for item in data_file_items(self.cfg.get("data_files")):
            if "://" not in str(item) and not local_data_files([item], folder or Path()):
                under = f" under {folder}" if folder else " in the working directory"
                under = "" if os.path.isabs(os.path.expanduser(str(item))) else under
                raise DataError(f"data.data_files: {str(item)!r} matches no file{under}")

    def local(self) -> bool:
        """Whether the rows come from local files (tables, a dataset folder, a builder's data_files), not the hub."""
        from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES

        return bool(self.files) or self.dataset_folder() is not None or self.builder in _PACKAGED_DATASETS_MODULES

    def dataset_folder(self) -> Path | None:
        """The local dataset folder ``builder`` names, else None: a hub name, or a packaged builder (``json``,
        ``csv``, …), which ``datasets`` takes before a folder of the same name."""
        from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES

        folder = Path(self.builder)
        return folder if self.builder not in _PACKAGED_DATASETS_MODULES and folder.is_dir() else None

    def identity(self) -> Iterable[str]:
        cfg = self.cfg
        folder = self.dataset_folder()  # by where it is, however that is spelled
        builder = str(folder.resolve()) if folder else self.builder
        yield f"table|{builder}|{cfg.get('config_name')}|{cfg.get('split')}|{cfg.get('val_split')}"
        yield f"{cfg.get('revision')}|{self.text_column}"
        if self.files:  # by their paths under the common folder, as their rows' keys: however the path is spelled
            for f in self.files:
                yield f"{f.relative_to(self.root).as_posix()}:{file_digest(f)}"
            return
        if cfg.get("data_files"):
            yield str(plain(cfg.get("data_files")))
            # The files datasets reads: relative data_files are under the dataset folder, else the working directory.
            for f in local_data_files(cfg.get("data_files"), folder or Path()):
                key = f.relative_to(folder).as_posix() if folder and f.is_relative_to(folder) else str(f)
                yield f"{key}:{file_digest(f)}"
        elif folder:  # a dataset folder on disk: its files are the content
            for f in sorted(f for f in folder.rglob("*") if f.is_file() and ".git" not in f.parts):
                yield f"{f.relative_to(folder).as_posix()}:{file_digest(f)}"


def plain(value: Any) -> Any:
    """An OmegaConf list or dict as plain Python (``datasets`` checks the types); anything else as it is."""
    try:
        from omegaconf import OmegaConf

        if OmegaConf.is_config(value):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf comes with hydra
        pass
    return value


def data_file_items(data_files: Any) -> list[str]:
    """Each path or glob ``data_files`` names (a path, glob, list, or dict of split → those)."""
    data_files = plain(data_files)
    if isinstance(data_files, dict):
        return [v for value in data_files.values() for v in ([value] if isinstance(value, str) else value)]
    return [data_files] if isinstance(data_files, str) else list(data_files)


def local_data_files(data_files: Any, base: Path) -> list[Path]:
    """The local files that ``data_files`` (relative ones under ``base``) names, sorted."""
    found = set()
    for item in data_file_items(data_files):
        # root_dir, not a joined pattern: glob characters in the folder's own name stay literal
        matches = glob.glob(os.path.expanduser(str(item)), root_dir=base, recursive=True)
        found.update(base / m for m in matches if (base / m).is_file())
    return sorted(found)


def source_keys(cfg: Any) -> dict[str, Any]:
    """A fork's source's own keys: those of its settings that no source shares, as plain values."""
    return {k: plain(v) for k, v in cfg.items() if k not in (TARGET, "source", "weight", *SHARED_KEYS, *COMMON_KEYS)}


def plugged_corpus(cfg: Any) -> Corpus:
    """The corpus of a fork's source: ``data._target_`` (a Corpus subclass, or a function returning one) called
    as ``Target(cfg, **its own keys)``; each failure is one DataError line."""
    path, own = cfg.get(TARGET), source_keys(cfg)
    try:
        target = dotted(str(path))
    except ImportError as e:
        raise DataError(f"data._target_: {path!r} cannot be imported ({e})") from None
    try:
        corpus = target(cfg, **own)
    except (ValueError, TypeError, OSError) as e:  # its refusal of its settings
        raise DataError(f"data: {path} refused its settings ({type(e).__name__}: {first_line(e)})") from None
    if not isinstance(corpus, Corpus):
        raise DataError(f"data: {path} built {type(corpus).__name__}, not a data.corpus.Corpus (docs/extending.md)")
    # the token cache's key: another class, another of its keys or another decode policy is another cache
    settings = {TARGET: path, "on_decode_error": cfg.get("on_decode_error"), **own}
    corpus.settings = json.dumps(settings, sort_keys=True, default=str)
    return corpus


def build_corpus(cfg: Any) -> Corpus:
    """The corpus that the ``data`` config group describes (``data.source``: builtin | text_files | hub, or a
    fork's, which ``data._target_`` names)."""
    if cfg.get(TARGET) is not None:
        return plugged_corpus(cfg)
    source = cfg.get("source")
    if not isinstance(cfg.get("streaming", False), bool):
        raise DataError(f"data.streaming must be true or false, got {cfg.get('streaming')!r}")
    column = cfg.get("text_column", "text")
    if not isinstance(column, str) or not column:
        raise DataError(f"data.text_column must be the name of the column that holds the text, got {column!r}")
    if source == "builtin":
        files, root = builtin_files(cfg.get("exclude") or ())
        return FileCorpus(cfg, files, root, name="stdlib")
    if source == "text_files":
        files = expand_paths(cfg.get("path"))
        name = "files-" + (Path(os.path.commonpath([str(f) for f in files])).stem or "root")
        tables = [f for f in files if f.suffix.lower() in TABLE_FORMATS]
        if tables and len(tables) != len(files):
            text = next(f for f in files if f.suffix.lower() not in TABLE_FORMATS)
            raise DataError(
                f"data.path: mixes text files ({text}, …) and tables ({tables[0]}, …); give one kind, e.g. with a "
                "glob such as 'folder/**/*.txt'"
            )
        if tables:
            builders = {TABLE_FORMATS[f.suffix.lower()] for f in tables}
            if len(builders) > 1:
                raise DataError(f"data.path: mixes table formats ({', '.join(sorted(builders))}); give one")
            return TableCorpus(cfg, builders.pop(), name, files=tables)
        return FileCorpus(cfg, files, common_parent(files), name=name)
    if source == "hub":
        name = cfg.get("name")
        if not name:
            raise DataError(
                f"data.name must be a Hugging Face dataset name such as roneneldan/TinyStories, got {name!r}"
            )
        corpus = TableCorpus(cfg, str(name), name=str(name))
        corpus.check_local_data_files()
        return corpus
    raise DataError(f"data.source must be one of {', '.join(SOURCES)}, got {source!r}")
