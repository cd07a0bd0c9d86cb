"""Byte-level BPE tokenizers: trained with ``tokenizers`` on the training split, or loaded from a file.

A trained tokenizer splits text with GPT-2's pre-tokenizer regex over the 256 byte symbols, learns merges up
to ``vocab_size`` entries, and puts the special tokens first (so ``<|endoftext|>`` is id 0). The model's
embedding may be padded past ``vocab_size`` (to a multiple of 64); padding ids never occur in data.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import json
import re
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from data.corpus import utf8_len
from data.errors import DataError

EOT = "<|endoftext|>"
BYTE_ALPHABET = 256
# The trainer reserves memory for every entry of vocab_size up front, so a huge one aborts inside Rust (2**28 does
# under an 8 GB memory limit) although uint32 ids allow 2**32; 2**24 is far past any vocabulary in use.
MAX_VOCAB_SIZE = 2**24
TRAIN_BATCH_CHARS = 1 << 20  # text handed to the trainer per Python → Rust call
# The trainer applies a merge to a pre-token ("word") in place, shifting the rest of the word at each occurrence:
# a word of n characters costs it time growing as n², so one long run (a DNA sequence or a line of letters without
# whitespace, a huge indent) would stall training. Training cuts every pre-token longer than this into pieces of
# this many characters. Prose and code hardly ever hold one (their longest, long numbers and table rules, run to a
# few hundred characters), so their tokenizer is the one trained without the cut. Encoding is never cut.
MAX_TRAIN_PRE_TOKEN = 1000
# The pre-tokenizer's \s (Unicode White_Space): Python's also holds U+001C–U+001F, which the pre-tokenizer does not.
WHITESPACE = "\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
T = TypeVar("T")


def check_vocab_size(vocab_size: object, special_tokens: list[str]) -> None:
    """``data.vocab_size`` must hold the 256 byte symbols and every special token, and be at most
    ``MAX_VOCAB_SIZE``."""
    need = BYTE_ALPHABET + len(special_tokens)
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool) or vocab_size < need:
        raise DataError(
            f"data.vocab_size must be an integer ≥ {need} (the 256 byte symbols + {len(special_tokens)} special "
            f"tokens), got {vocab_size!r}"
        )
    if vocab_size > MAX_VOCAB_SIZE:
        raise DataError(
            f"data.vocab_size must be at most {MAX_VOCAB_SIZE:,} (2**24; the trainer reserves memory for every "
            f"entry up front), got {vocab_size!r}"
        )


def batched(items: Iterable[T], max_chars: int, chars: Callable[[T], int] = len) -> Iterator[list[T]]:
    """Consecutive items grouped into lists of about ``max_chars`` characters of text (at least one item each):
    enough text per call into ``tokenizers`` that its threads stay busy, little enough to stream."""
    batch: list[T] = []
    size = 0
    for item in items:
        batch.append(item)
        size += chars(item)
        if size >= max_chars:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def byte_level_pre_tokenizer() -> pre_tokenizers.ByteLevel:
    """GPT-2's pre-tokenizer over the 256 byte symbols: runs of letters, of digits, of other symbols (each may
    take one space before it) and of whitespace."""
    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


PRE_TOKENIZER = byte_level_pre_tokenizer()


@functools.lru_cache(maxsize=8)
def long_runs(min_chars: int) -> re.Pattern[str]:
    """Whole runs of ``min_chars`` or more non-whitespace, or whitespace, characters: every pre-token longer than
    ``min_chars`` lies in one (with the space before it). Anchored at a run's start, so a search is linear."""
    space, other = f"[{WHITESPACE}]", f"[^{WHITESPACE}]"
    return re.compile(f"(?<!{other}){other}{{{min_chars},}}|(?<!{space}){space}{{{min_chars},}}")


def training_pieces(text: str, max_pre_token: int = MAX_TRAIN_PRE_TOKEN) -> list[str]:
    """``text`` cut inside each pre-token longer than ``max_pre_token`` characters, every ``max_pre_token``
    characters from its start, so that no piece holds a longer one: the trainer's work stays linear in the text.
    A text without such a pre-token is one piece, itself. The pieces join to ``text``."""
    if max_pre_token < 3:
        # A shorter cap cuts a contraction ("'ll", whose rest then runs on into the letters after it) or a word just
        # after its space (which then joins the whitespace before it): the pieces would hold longer pre-tokens.
        raise ValueError(f"max_pre_token must be at least 3, got {max_pre_token}")
    if len(text) <= max_pre_token:
        return [text]
    cuts = set()
    for run in long_runs(max_pre_token).finditer(text):
        # The run with the character on each side pre-tokenizes as it does inside the text: the one before starts
        # a pre-token (the run's first may take it as its space), the one after ends the run.
        first = max(run.start() - 1, 0)
        for _, (start, end) in PRE_TOKENIZER.pre_tokenize_str(text[first : run.end() + 1]):
            if end - start > max_pre_token:
                cuts.update(range(first + start + max_pre_token, first + end, max_pre_token))
    if not cuts:
        return [text]
    bounds = [0, *sorted(cuts), len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


def train_tokenizer(
    texts: Iterable[str], vocab_size: int, special_tokens: list[str], max_pre_token: int | None = MAX_TRAIN_PRE_TOKEN
) -> Tokenizer:
    """A byte-level BPE with ``vocab_size`` entries, special tokens first (so ``<|endoftext|>`` is id 0), learnt
    from ``texts`` with every pre-token longer than ``max_pre_token`` characters cut (None: none is)."""
    check_vocab_size(vocab_size, special_tokens)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = byte_level_pre_tokenizer()
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    if max_pre_token is not None:
        texts = (piece for text in texts for piece in training_pieces(text, max_pre_token))
    # Lists of texts rather than single texts: the trainer then counts words of a whole list in parallel.
    with killable():
        tok.train_from_iterator(batched(texts, TRAIN_BATCH_CHARS), trainer)
    check_special_tokens_apart(tok, special_tokens)
    return tok


def check_special_tokens_apart(tok: Tokenizer, special_tokens: list[str]) -> None:
    """A special token that is also a token of plain text (a byte symbol, ``a``; a learnt merge, ``the``) shares
    its id: every occurrence in the documents would become it (the separator: a document cut at each)."""
    was, tok.encode_special_tokens = tok.encode_special_tokens, True  # encoded as plain text, as the documents are
    try:
        for s in special_tokens:
            if tok.encode(s, add_special_tokens=False).ids == [tok.token_to_id(s)]:
                raise DataError(
                    f"data.special_tokens: {s!r} is also a token of plain text (a byte symbol or a learnt merge), so "
                    f"the documents' every {s!r} would become it; choose a marked form, such as '<|{s}|>'"
                )
    finally:
        tok.encode_special_tokens = was


@contextlib.contextmanager
def killable() -> Iterator[None]:
    """SIGTERM ends the process at once, as by default, during a long call into native code (the BPE's merges,
    minutes for a large vocabulary): a Python handler would run only after it returned, past a scheduler's grace."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def capped(texts: Iterable[str], max_bytes: int | None) -> Iterator[str]:
    """The texts until about ``max_bytes`` UTF-8 bytes have gone by (all of them when None)."""
    seen = 0
    for text in texts:
        if max_bytes is not None and seen >= max_bytes:
            return
        seen += utf8_len(text)
        yield text


def load_tokenizer(path: str | Path, key: str = "data.tokenizer") -> Tokenizer:
    """A ``tokenizer.json`` written by ``tokenizers`` (or transformers' fast tokenizers)."""
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # missing file, not JSON, not a tokenizer
        reason = "does not exist" if not Path(path).exists() else f"is not a tokenizers JSON file ({e})"
        raise DataError(f"{key}: {str(path)!r} {reason}") from None


def tokenizer_hash(tok: Tokenizer | str) -> str:
    """sha256 of the tokenizer's JSON (a tokenizer, or its JSON text): what the token cache and checkpoints record
    to tell tokenizers apart."""
    text = tok if isinstance(tok, str) else tok.to_str()
    return hashlib.sha256(text.encode()).hexdigest()


def eot_id(tok: Tokenizer, special_tokens: list[str]) -> int:
    """The id that separates documents: the first special token (``<|endoftext|>`` by default)."""
    name = special_tokens[0] if special_tokens else EOT
    ident = tok.token_to_id(name)
    if ident is None:
        raise DataError(
            f"data.special_tokens: the tokenizer has no {name!r} token to separate documents; "
            "put one of its special tokens first in data.special_tokens"
        )
    return ident


def special_tokens_of(tok: Tokenizer) -> list[str]:
    """The tokenizer's special tokens in id order (a trained tokenizer's ``data.special_tokens`` as given)."""
    return [t.content for _, t in sorted(tok.get_added_tokens_decoder().items()) if t.special]


BYTE_LEVEL_CHARS = frozenset(pre_tokenizers.ByteLevel.alphabet())  # each stands for one byte
METASPACE = "\u2581"  # SentencePiece's "▁": a space
BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")  # a byte-fallback token: one byte


def token_byte_lengths(tok: Tokenizer, size: int | None = None) -> np.ndarray:
    """How many bytes of text each token id stands for (0 for special tokens and padding ids), int64 of ``size``.

    Byte-level tokens map one character to one byte, so a token's length in characters is its length in
    bytes. In a SentencePiece-style vocabulary (Llama 2, Mistral) ``▁`` is a space and a byte-fallback token
    ``<0xNN>`` is one byte (the space such a tokenizer prepends to each document counts as one). Any other token
    counts the UTF-8 length of its decoding. Summed over the tokens of a text, this gives the text's UTF-8 length —
    the denominator of bits per byte.
    """
    size = size or tok.get_vocab_size()
    special = {t.content for t in tok.get_added_tokens_decoder().values() if t.special}
    lengths = np.zeros(size, dtype=np.int64)
    byte_level = isinstance(tok.decoder, decoders.ByteLevel)
    parts = json.loads(tok.to_str())
    metaspace = METASPACE in json.dumps(
        [parts.get(k) for k in ("normalizer", "pre_tokenizer", "decoder")], ensure_ascii=False
    )
    byte_fallback = bool((parts.get("model") or {}).get("byte_fallback"))
    for token, ident in tok.get_vocab().items():
        if ident >= size or token in special:
            continue
        if byte_level and all(c in BYTE_LEVEL_CHARS for c in token):
            lengths[ident] = len(token)
        elif byte_fallback and BYTE_TOKEN.fullmatch(token):
            lengths[ident] = 1
        elif metaspace:  # decoding one token alone drops its leading space
            lengths[ident] = len(token.replace(METASPACE, " ").encode("utf-8"))
        else:
            lengths[ident] = len(tok.decode([ident]).encode("utf-8"))
    return lengths


def as_transformers_tokenizer(tok: Tokenizer, special_tokens: list[str], model_max_length: int) -> Any:
    """``tok`` as transformers' ``PreTrainedTokenizerFast``: the document separator (the first special token) is
    its end-of-text (eos) and start (bos) token, the other special tokens its additional ones; encoding adds no token
    and decoding leaves the text as ours does (no clean-up of spaces). Needs transformers."""
    from transformers import PreTrainedTokenizerFast

    separator = special_tokens[0] if special_tokens else EOT
    tok = Tokenizer.from_str(tok.to_str())  # a copy: the caller's keeps its post-processor
    tok.post_processor = None  # encode as training did, with no start token added (a Llama folder's adds one)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=separator,
        eos_token=separator,
        additional_special_tokens=[t for t in special_tokens[1:] if t != separator],
        clean_up_tokenization_spaces=False,
        model_max_length=model_max_length,
        model_input_names=["input_ids", "attention_mask"],  # no token_type_ids, which LlamaForCausalLM refuses
    )
