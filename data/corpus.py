"""Corpora: where the text documents come from, split into train and val deterministically.

Three sources, one interface (``Corpus.documents(split)`` yields strings):
- ``builtin``: the running interpreter's own standard library ``.py`` sources (on every machine, offline);
- ``text_files``: local files — plain text (``.txt``, ``.md``, ``.py``, …: one document per file) or tables
  (``.jsonl``/``.json``, ``.parquet``, ``.csv``: one document per row's ``text_column``), read with
  ``datasets.load_dataset`` on local data files;
- ``hub``: a Hugging Face dataset by name, split and text column, optionally streamed, optionally capped.

The split is by document: a document belongs to val when a hash of its key (relative path, or file and row)
falls below ``val_fraction``, so adding documents never moves others. When that leaves val empty (a corpus
of one or two files), the last ``val_fraction`` of every document's lines becomes val instead.
"""

from __future__ import annotations

import glob
import hashlib
import os
import sysconfig
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.errors import ConfigError

TEXT_SUFFIXES = (".txt", ".md", ".py", ".rst", ".text")
TABLE_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
SPLITS = ("train", "val")


def in_val(key: str, val_fraction: float) -> bool:
    """Whether the document with this key belongs to val: a stable hash of the key, not its position."""
    h = int.from_bytes(hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=8).digest(), "big")
    return h / 2**64 < val_fraction


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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
    """UTF-8 text of a file, or None when it is skipped. ``policy``: skip | replace | error."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        if policy == "error":
            raise ConfigError(
                f"{name}: not valid UTF-8 at byte {e.start}; set data.on_decode_error=skip (drop such files) "
                "or =replace (keep them with U+FFFD)"
            ) from None
        if len(stats.examples) < 3:
            stats.examples.append(name)
        if policy == "replace":
            stats.replaced += 1
            return raw.decode("utf-8", errors="replace")
        stats.skipped += 1
        return None


class Corpus:
    """Documents of one source. ``fingerprint`` changes whenever the documents or the split would."""

    name: str = "corpus"

    def __init__(self, cfg: Any):
        self.cfg = cfg
        self.val_fraction = float(cfg.get("val_fraction", 0.05))
        self.max_documents = cfg.get("max_documents")
        self.max_bytes = cfg.get("max_bytes")
        self.decode_stats = DecodeStats()
        self._line_split: bool | None = None

    # Subclasses provide keyed documents in a fixed order, and what identifies them.
    def keyed_documents(self) -> Iterator[tuple[str, str]]:
        raise NotImplementedError

    def identity(self) -> Iterable[str]:
        raise NotImplementedError

    @property
    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for part in self.identity():
            h.update(part.encode("utf-8", "surrogateescape"))
            h.update(b"\0")
        h.update(f"val={self.val_fraction}|max_docs={self.max_documents}|max_bytes={self.max_bytes}".encode())
        return h.hexdigest()

    def _capped(self) -> Iterator[tuple[str, str]]:
        n_bytes = 0
        for i, (key, text) in enumerate(self.keyed_documents()):
            if self.max_documents is not None and i >= self.max_documents:
                return
            n_bytes += len(text.encode("utf-8", "surrogateescape"))
            if self.max_bytes is not None and n_bytes > self.max_bytes:
                return
            yield key, text

    def uses_line_split(self) -> bool:
        """True when hashing keys gives val no document, so each document is split by lines instead."""
        if self._line_split is None:
            self._line_split = not any(in_val(key, self.val_fraction) for key, _ in self._capped())
        return self._line_split

    def documents(self, split: str) -> Iterator[str]:
        """The texts of ``split`` (train | val), in a fixed order."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        line_split = self.val_fraction > 0 and self.uses_line_split()
        for key, text in self._capped():
            if line_split:
                part = split_lines(text, self.val_fraction)[split == "val"]
                if part:
                    yield part
            elif in_val(key, self.val_fraction) == (split == "val"):
                yield text


class FileCorpus(Corpus):
    """Plain-text files, one document each, ordered by path; their bytes are part of the fingerprint."""

    def __init__(self, cfg: Any, files: list[Path], root: Path):
        super().__init__(cfg)
        self.files, self.root = files, root
        self.policy = cfg.get("on_decode_error", "skip")

    def _key(self, f: Path) -> str:
        return f.relative_to(self.root).as_posix() if f.is_relative_to(self.root) else str(f)

    def keyed_documents(self) -> Iterator[tuple[str, str]]:
        stats = DecodeStats()  # counted afresh on every pass over the files
        for f in self.files:
            text = decode(f.read_bytes(), str(f), self.policy, stats)
            if text is not None:
                yield self._key(f), text
        self.decode_stats = stats

    def identity(self) -> Iterable[str]:
        yield f"files|policy={self.policy}"
        for f in self.files:
            yield self._key(f)
            yield file_digest(f)


def builtin_files(exclude: Iterable[str]) -> tuple[list[Path], Path]:
    """The standard library's ``.py`` files of the running interpreter, sorted, minus excluded directories."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = set(exclude)
    files = sorted(
        (f for f in root.rglob("*.py") if not skip.intersection(f.relative_to(root).parts[:-1])),
        key=lambda f: f.relative_to(root).as_posix(),
    )
    return files, root


class BuiltinCorpus(FileCorpus):
    name = "stdlib"

    def __init__(self, cfg: Any):
        files, root = builtin_files(cfg.get("exclude") or ())
        super().__init__(cfg, files, root)


def expand_paths(path: Any) -> list[Path]:
    """``data.path``: a file, a directory (searched recursively) or a glob; several as a list."""
    if path in (None, "", "???"):
        raise ConfigError("data.path", "a file, a directory or a glob of text files (data=text_files)", path)
    found: list[Path] = []
    for p in [path] if isinstance(path, (str, os.PathLike)) else list(path):
        p = os.path.expanduser(str(p))
        if glob.has_magic(p):
            matches = sorted(Path(m) for m in glob.glob(p, recursive=True) if Path(m).is_file())
            if not matches:
                raise ConfigError(f"data.path: no file matches {p!r}")
            found += matches
        elif Path(p).is_dir():
            matches = sorted(
                f
                for f in Path(p).rglob("*")
                if f.is_file() and f.suffix.lower() in TEXT_SUFFIXES + tuple(TABLE_FORMATS)
            )
            if not matches:
                known = ", ".join(TEXT_SUFFIXES + tuple(TABLE_FORMATS))
                raise ConfigError(f"data.path: directory {p!r} holds no file ending in {known}")
            found += matches
        elif Path(p).is_file():
            found.append(Path(p))
        else:
            raise ConfigError(f"data.path: {p!r} does not exist")
    return found


class TableCorpus(Corpus):
    """Rows of local tables or of a hub dataset, read with ``datasets.load_dataset``; one document per row."""

    def __init__(self, cfg: Any, builder: str, data_files: list[str] | None, name: str):
        super().__init__(cfg)
        self.builder, self.data_files, self.name = builder, data_files, name
        self.text_column = cfg.get("text_column", "text")
        self.streaming = bool(cfg.get("streaming", False))

    def _dataset(self, split: str | None = None):
        import datasets

        kwargs: dict[str, Any] = {"streaming": self.streaming}
        if self.data_files:
            kwargs["data_files"] = self.data_files
        if self.cfg.get("config_name"):
            kwargs["name"] = self.cfg.get("config_name")
        if self.cfg.get("revision"):
            kwargs["revision"] = self.cfg.get("revision")
        split = split or self.cfg.get("split") or "train"
        try:
            ds = datasets.load_dataset(self.builder, split=split, **kwargs)
        except ConfigError:
            raise
        except Exception as e:  # the hub, the network or the files: say which, in one line
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            where = self.data_files or self.builder
            hint = ""
            if not self.data_files:
                hint = " (no network, or HF_HUB_OFFLINE=1? hub datasets need the Hugging Face Hub)"
            raise ConfigError(f"data: cannot load {where!r} split {split!r}{hint}: {first}") from None
        columns = ds.column_names
        if columns is not None and self.text_column not in columns:
            raise ConfigError("data.text_column", f"a column of {self.name!r} ({', '.join(columns)})", self.text_column)
        return ds

    def keyed_documents(self) -> Iterator[tuple[str, str]]:
        for i, row in enumerate(self._dataset()):
            text = row.get(self.text_column)
            if text is None:
                raise ConfigError("data.text_column", f"a column of {self.name!r}", self.text_column)
            if text:
                yield f"{i}", str(text)

    def documents(self, split: str) -> Iterator[str]:
        val_split = self.cfg.get("val_split")
        if not val_split:
            yield from super().documents(split)
            return
        # The dataset has its own validation split: use it whole for val, the train split whole for train.
        if split == "train":
            yield from (text for _, text in self._capped())
            return
        ds = self._dataset(val_split)
        for i, row in enumerate(ds):
            if self.max_documents is not None and i >= self.max_documents:
                return
            if row.get(self.text_column):
                yield str(row[self.text_column])

    def identity(self) -> Iterable[str]:
        yield f"{self.builder}|{self.cfg.get('config_name')}|{self.cfg.get('split')}|{self.cfg.get('val_split')}"
        yield f"{self.cfg.get('revision')}|{self.text_column}"
        for f in self.data_files or ():
            yield f + ":" + file_digest(f)


def build_corpus(cfg: Any) -> Corpus:
    """The corpus that the ``data`` config group describes."""
    source = cfg.get("source")
    if source == "builtin":
        return BuiltinCorpus(cfg)
    if source == "text_files":
        files = expand_paths(cfg.get("path"))
        tables = [f for f in files if f.suffix.lower() in TABLE_FORMATS]
        if tables and len(tables) != len(files):
            raise ConfigError("data.path: mixes text files and tables (.jsonl/.parquet/.csv); give one kind")
        if tables:
            builders = {TABLE_FORMATS[f.suffix.lower()] for f in tables}
            if len(builders) > 1:
                raise ConfigError(f"data.path: mixes table formats ({', '.join(sorted(builders))}); give one")
            return TableCorpus(cfg, builders.pop(), [str(f) for f in tables], name=str(cfg.get("path")))
        common = Path(os.path.commonpath([str(f.parent) for f in files]))
        corpus = FileCorpus(cfg, files, common)
        corpus.name = "files"
        return corpus
    if source == "hub":
        name = cfg.get("name")
        if not name:
            raise ConfigError("data.name", "a Hugging Face dataset name such as roneneldan/TinyStories", name)
        return TableCorpus(cfg, str(name), cfg.get("data_files"), name=str(name))
    raise ConfigError("data.source", "one of builtin, text_files, hub", source)
