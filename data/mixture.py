"""Mixtures: several sources, each with a weight, sharing one tokenizer; batches draw from them by weight.

``data.source: mixture`` and ``data.sources`` maps a name to one source's settings: its ``source`` (builtin,
text_files or hub), its ``weight`` (> 0; the weights are normalised to sum to 1) and that source's own keys
(``path``, ``name``, ``val_fraction``, ``max_bytes``, …). The tokenizer's settings (``vocab_size``,
``special_tokens``, ``tokenizer``, ``tokenizer_train_bytes``), ``cache_dir`` and ``document_mask`` belong to the
mixture; its ``val_fraction``, ``max_documents``, ``max_bytes`` and ``on_decode_error`` are each source's default.

One byte-level BPE is trained on a weighted sample of the sources' training documents — interleaved so that each
source's share of the bytes follows its weight, ending at ``tokenizer_train_bytes`` or when a source runs out —
and cached under ``<cache_dir>/tokenizer-<key>/``. Each source is then tokenized with it into its own token cache
(data.cache), so a source shared by two mixtures with the same tokenizer is tokenized once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from data import atomic
from data.cache import (
    DISK_FULL_HINT,
    FORMAT_VERSION,
    TokenCache,
    build_lock,
    cache_root,
    check_not_empty,
    given_tokenizer,
    no_text,
    prepare,
    special_tokens,
    writable_cache_dir,
)
from data.corpus import (
    COMMON_KEYS,
    SHARED_KEYS,
    SOURCES,
    SPLITS,
    TARGET,
    Corpus,
    build_corpus,
    plain,
    utf8_len,
)
from data.errors import DataError
from data.tokenizer import check_vocab_size, tokenizer_hash, train_tokenizer

log = logging.getLogger(__name__)

# The keys a source of a mixture may set besides ``source`` and ``weight``: COMMON_KEYS for every source (the
# mixture's own value is each source's default), and by source; a fork's source (``_target_``), its own.
SOURCE_KEYS = {
    "builtin": ("exclude",),
    "text_files": ("path", "text_column", "streaming"),
    "hub": ("name", "config_name", "split", "val_split", "data_files", "revision", "text_column", "streaming"),
}
NAME = re.compile(r"[A-Za-z0-9_-]+")  # a source's name is part of its metric names: val/<name>/bpb


def source_configs(cfg: Any) -> dict[str, tuple[float, dict[str, Any]]]:
    """``data.sources`` checked: name → (weight, that source's data settings with the mixture's shared keys).

    Raises a one-line DataError for an empty mixture, a name unfit for a metric, an unknown source, a weight
    that is not a number > 0, or a key the source does not have.
    """
    sources = plain(cfg.get("sources"))
    if not isinstance(sources, Mapping) or not sources:
        raise DataError(
            "data.sources must map each source's name to its settings ({source: builtin|text_files|hub, weight: "
            f"…, …}}) for data=mixture, got {sources!r}"
        )
    shared = {key: plain(cfg.get(key)) for key in (*SHARED_KEYS, *COMMON_KEYS) if cfg.get(key) is not None}
    out = {}
    for name, entry in sources.items():
        key = f"data.sources.{name}"
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise DataError(f"{key}: a source's name may hold letters, digits, _ and - only (it names its metrics)")
        if not isinstance(entry, Mapping):
            raise DataError(f"{key} must be a mapping of that source's settings, got {entry!r}")
        source = entry.get("source")
        plugged = entry.get(TARGET) is not None  # a fork's source: its own keys are its code's to take
        if plugged and source in SOURCES:
            raise DataError(f"{key}: source={source} is the template's and _target_ a fork's; give one of them")
        if source not in SOURCES and not plugged:
            raise DataError(
                f"{key}.source must be one of {', '.join(SOURCES)} (or a fork's, named by {key}._target_), got "
                f"{source!r}"
            )
        weight = entry.get("weight")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight < math.inf:
            raise DataError(f"{key}.weight must be a finite number > 0, got {weight!r}")
        allowed = ("source", "weight", *COMMON_KEYS, *SOURCE_KEYS.get(source, ()))
        for k in entry:
            if k in SHARED_KEYS:
                raise DataError(f"{key}.{k}: the sources of a mixture share it; set data.{k} instead")
            if k not in allowed and not plugged:
                raise DataError(f"{key}.{k} is not a key of a {source} source; it has {', '.join(allowed)}")
        out[name] = (float(weight), {**shared, **{k: v for k, v in entry.items() if k != "weight"}})
    return out


PIECE_CHARS = 1024  # the least of a document taken at a time: a long one is taken in pieces, as its share allows


def weighted_sample(corpora: Mapping[str, Corpus], weights: Mapping[str, float], max_bytes: int | None):
    """The sources' training documents interleaved so that each one's share of the bytes follows its weight: the
    next piece always comes from the source furthest below its share, as much of its document as takes it to the
    next source's level (``PIECE_CHARS`` at least, cut after a line where one ends), so that a long document
    cannot take its source far past its share. Ends after about ``max_bytes`` bytes, or when a source runs out
    (taking more of the others would break the proportions)."""
    # by name: the sources' order in the config (a tie's winner) leaves the sample, as it leaves the cache's key
    streams: dict[str, Iterator[str]] = {name: iter(corpora[name].documents("train")) for name in sorted(corpora)}
    current = dict.fromkeys(streams, ("", 0))  # each source's document, and where the next piece starts in it
    taken = dict.fromkeys(streams, 0)
    total = 0
    while max_bytes is None or total < max_bytes:
        level = {n: taken[n] / weights[n] for n in streams}
        name = min(streams, key=level.__getitem__)
        text, start = current[name]
        if start == len(text):
            text, start = next(streams[name], None), 0
            if text is None:
                return
        room = min((level[n] - level[name] for n in streams if n != name), default=math.inf) * weights[name]
        end = start + max(PIECE_CHARS, int(min(room, len(text) - start)))
        if end < len(text):
            end = text.rfind("\n", (start + end) // 2, end) + 1 or end
        piece = text[start:end]
        current[name] = (text, min(end, len(text)))
        size = utf8_len(piece)
        taken[name] += size
        total += size
        yield piece


def shared_tokenizer(
    cfg: Any, corpora: Mapping[str, Corpus], weights: Mapping[str, float], build_if_missing: bool = True
) -> Path:
    """The mixture's tokenizer.json: ``data.tokenizer`` when given, else the BPE trained on the weighted sample,
    cached under ``<cache_dir>/tokenizer-<key>/`` (key: the sources' fingerprints and weights, the settings) with
    its hash in ``meta.json``; one damaged since it was trained is trained again, with a warning."""
    if cfg.get("tokenizer"):
        return given_tokenizer(cfg.get("tokenizer"))
    special = special_tokens(cfg)
    check_vocab_size(cfg.get("vocab_size"), special)
    settings = [cfg.get("vocab_size"), special, cfg.get("tokenizer_train_bytes")]
    parts = sorted((name, weights[name], c.fingerprint) for name, c in corpora.items())
    key = hashlib.sha256(json.dumps([FORMAT_VERSION, parts, settings]).encode()).hexdigest()[:16]
    final = cache_root(cfg) / f"tokenizer-{key}"
    path = final / "tokenizer.json"
    why = tokenizer_damage(final)  # a folder is renamed into place complete: no lock needed to read one
    if why is None:
        return path
    if not build_if_missing:
        raise DataError(f"data: the mixture's tokenizer {final} is missing or damaged ({why})")
    with writable_cache_dir(final.parent), build_lock(final):
        why = tokenizer_damage(final)
        if why is None:
            return path
        if final.exists():
            log.warning("data: the mixture's tokenizer %s is damaged (%s); training it again", final, why)
            shutil.rmtree(final)
        log.info("data: training the mixture's tokenizer into %s", final)
        sample = weighted_sample(corpora, weights, cfg.get("tokenizer_train_bytes"))
        text = train_tokenizer(sample, cfg.get("vocab_size"), special).to_str()
        meta = json.dumps({"tokenizer_hash": tokenizer_hash(text)})
        # As a token cache is written: a full disk is one line naming this folder of the cache, not the run's.
        with atomic.space_for(final, len(text.encode()) + len(meta), hint=DISK_FULL_HINT):
            tmp = atomic.begin(final.parent, final.name)
            try:
                (tmp / "tokenizer.json").write_text(text)
                (tmp / "meta.json").write_text(meta)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            atomic.commit(tmp, final)
    return path


def tokenizer_damage(folder: Path) -> str | None:
    """Why the mixture's tokenizer folder is not the one trained into it, or None when it is."""
    try:
        recorded = json.loads((folder / "meta.json").read_text())["tokenizer_hash"]
        if tokenizer_hash((folder / "tokenizer.json").read_text()) != recorded:
            return "tokenizer.json is not the one trained into it"
    except OSError as e:
        return f"{e.strerror}: {e.filename}"
    except (ValueError, KeyError, TypeError, RecursionError) as e:  # RecursionError: JSON nested too deep
        return f"meta.json is unreadable ({type(e).__name__}: {e})"
    return None


@dataclass
class Mixture:
    """The prepared mixture: each source's token cache (all tokenized with one tokenizer) and its weight (the
    weights sum to 1). It answers what a run asks of a :class:`TokenCache`: ``tokenizer()``, ``vocab_size``,
    ``eot_id`` and ``meta`` (the corpus's description, token counts summed over sources, the tokenizer hash)."""

    caches: dict[str, TokenCache]
    weights: dict[str, float]
    tokenizer_path: Path

    def tokens(self, split: str) -> dict[str, np.ndarray]:
        """Each source's token ids of ``split``, by name."""
        return {name: cache.tokens(split) for name, cache in self.caches.items()}

    def tokenizer(self) -> Tokenizer:
        return Tokenizer.from_file(str(self.tokenizer_path))

    @property
    def vocab_size(self) -> int:
        return next(iter(self.caches.values())).vocab_size

    @property
    def eot_id(self) -> int:
        return next(iter(self.caches.values())).eot_id

    @property
    def meta(self) -> dict[str, Any]:
        shares = ", ".join(f"{name} {100 * w:.3g}%" for name, w in self.weights.items())
        return {
            "corpus": f"mixture ({shares})",
            "tokens": {s: sum(c.meta["tokens"][s] for c in self.caches.values()) for s in SPLITS},
            "tokenizer_hash": tokenizer_hash(self.tokenizer_path.read_text()),
            "source_fingerprint": {name: c.meta["source_fingerprint"] for name, c in self.caches.items()},
        }


def in_source(name: str, error: DataError) -> DataError:
    """A source's error, its own keys named as the mixture's (``data.path`` → ``data.sources.<name>.path``); the
    keys the sources share stay ``data.<key>``, and a path that holds ``data.`` is left as it is."""
    own = "|".join(("source", TARGET, *COMMON_KEYS, *{k for keys in SOURCE_KEYS.values() for k in keys}))
    pattern = rf"(?<![\w./-])data\.(?=(?:{own})\b)"
    message = re.sub(pattern, f"data.sources.{name}.", str(error).removeprefix("data: "))
    return DataError(message if message.startswith(f"data.sources.{name}") else f"data.sources.{name}: {message}")


def warn_of_shared_files(corpora: Mapping[str, Corpus]) -> None:
    """Sources that read the same file (a subset given more weight as a source of its own) each split it their
    own way: one's validation text may be another's training text. Said, since it may be meant."""
    seen: dict[Path, str] = {}
    for name, corpus in corpora.items():
        for f in getattr(corpus, "files", None) or ():
            other = seen.setdefault(f.resolve(), name)
            if other != name:
                log.warning(
                    "data: data.sources.%s and data.sources.%s both read %s: each splits it its own way, so one's "
                    "validation text may be the other's training text",
                    other,
                    name,
                    f,
                )
                return


def prepare_mixture(cfg: Any, build_if_missing: bool = True, window: int = 1) -> Mixture:
    """The shared tokenizer, then each source's token cache built with it (or reused); a source without
    training or validation text, or any other bad source, is a one-line DataError that names it."""
    configs = source_configs(cfg)
    raw = {name: weight for name, (weight, _) in configs.items()}
    if math.isinf(sum(raw.values())):  # weights near 1e308: scaled first, so that their sum stays finite
        raw = {name: w / max(raw.values()) for name, w in raw.items()}
    weights = {name: w / sum(raw.values()) for name, w in raw.items()}
    for name, share in weights.items():
        if not share > 0:  # far below the others: it underflows, and the source would never be drawn
            raise DataError(
                f"data.sources.{name}.weight: {configs[name][0]:g} is 0 of the weights' sum in floating point; give "
                "weights within a factor of 1e300 of each other"
            )
    corpora = {}
    for name, (_, settings) in configs.items():
        try:
            corpora[name] = build_corpus(settings)
            check_not_empty(corpora[name])
        except DataError as e:
            raise in_source(name, e) from None
        # Both splits before anything is written: the shared tokenizer is written before any source's tokens.
        for split in SPLITS:
            if next(iter(corpora[name].documents(split)), None) is None:
                raise in_source(name, no_text(corpora[name], split))
    warn_of_shared_files(corpora)
    tokenizer_path = shared_tokenizer(cfg, corpora, weights, build_if_missing)
    caches = {}
    for name, (_, settings) in configs.items():
        try:
            caches[name] = prepare({**settings, "tokenizer": str(tokenizer_path)}, build_if_missing, window)
        except DataError as e:
            raise in_source(name, e) from None
    return Mixture(caches, weights, tokenizer_path)
