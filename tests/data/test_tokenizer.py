"""Tokenizers: trained on the training split or given as a file, token widths, and bytes per token."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from data import DataError, prepare, token_byte_lengths
from data import tokenizer as tokenizer_module
from data.cache import token_dtype
from data.tokenizer import batched, train_tokenizer
from tests.data.corpora import DOCS, EOT, assert_cache_holds_the_corpus, data_cfg, write_texts


def test_trained_tokenizer_has_the_configured_vocab_and_special_tokens_first(tmp_path):
    write_texts(tmp_path / "c", DOCS * 3)
    cache = prepare(data_cfg("text_files", path=str(tmp_path / "c"), vocab_size=300, special_tokens=[EOT, "<|pad|>"]))
    tok = cache.tokenizer()
    assert tok.get_vocab_size() == cache.vocab_size <= 300
    assert (tok.token_to_id(EOT), tok.token_to_id("<|pad|>")) == (0, 1) and cache.eot_id == 0
    lengths = token_byte_lengths(tok, 384)
    assert lengths.shape == (384,) and lengths[0] == lengths[1] == 0 and not lengths[cache.vocab_size :].any()
    for doc in DOCS[:5]:  # a text's token byte lengths add up to its UTF-8 length
        assert lengths[tok.encode(doc).ids].sum() == len(doc.encode())


def test_a_special_token_the_tokenizer_learns_from_plain_text_is_refused_naming_it():
    """'def', a merge the BPE learns from the documents' code, would share its id with the special token: every
    'def' of the documents would become it."""
    with pytest.raises(DataError, match=r"^data.special_tokens: 'def' is also a token of plain text"):
        train_tokenizer(DOCS * 3, 300, [EOT, "def"])
    tok = train_tokenizer(DOCS * 3, 300, [EOT, "<|def|>"])
    assert len(tok.encode("def", add_special_tokens=False).ids) == 1  # the merge, now a token of its own


def test_token_byte_lengths_of_a_split_add_up_to_its_utf8_bytes(tmp_path):
    """The denominator of bits per byte: end-of-text tokens count 0 bytes, every other token its text's bytes."""
    write_texts(tmp_path / "c", DOCS)
    cache = prepare(data_cfg("text_files", path=str(tmp_path / "c"), val_fraction=0.3))
    lengths = token_byte_lengths(cache.tokenizer())
    for split in ("train", "val"):
        assert lengths[np.asarray(cache.tokens(split))].sum() == cache.meta["bytes"][split] > 0


def test_a_given_tokenizer_is_used_instead_of_training_one(tmp_path):
    write_texts(tmp_path / "c", DOCS)
    first = prepare(data_cfg("text_files", path=str(tmp_path / "c")))
    given_file = tmp_path / "tokenizer.json"
    given_file.write_text(first.tokenizer().to_str())
    second = prepare(data_cfg("text_files", path=str(tmp_path / "c"), tokenizer=str(given_file), vocab_size=9999))
    assert second.path != first.path and "file" in second.meta["tokenizer_settings"]
    assert second.meta["tokenizer_hash"] == first.meta["tokenizer_hash"]
    assert np.array_equal(second.tokens("train"), first.tokens("train"))


def big_vocab_tokenizer(path: Path, extra: int) -> None:
    """A byte-level BPE whose vocab exceeds 2¹⁶ ids (filler tokens after the bytes): needs uint32 tokens."""
    vocab = {EOT: 0}
    for ch in pre_tokenizers.ByteLevel.alphabet():
        vocab[ch] = len(vocab)
    for i in range(extra):
        vocab[f"<filler{i}>"] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([EOT])
    tok.save(str(path))


def test_token_files_are_uint16_when_every_id_fits_else_uint32(tmp_path):
    assert token_dtype(2**16) == np.uint16 and token_dtype(2**16 + 1) == np.uint32  # ids 0 … 2¹⁶−1 fit
    write_texts(tmp_path / "c", DOCS[:8])
    big_vocab_tokenizer(tmp_path / "big.json", 2**16)
    cfg = data_cfg("text_files", path=str(tmp_path / "c"), tokenizer=str(tmp_path / "big.json"))
    cache = prepare(cfg)
    assert cache.vocab_size > 2**16 and cache.meta["dtype"] == "uint32"
    assert (cache.path / "train.bin").stat().st_size == 4 * cache.meta["tokens"]["train"]
    assert_cache_holds_the_corpus(cache, cfg)


@settings(max_examples=100, deadline=None)
@given(sizes=st.lists(st.integers(0, 50), max_size=30), max_chars=st.integers(1, 80))
def test_batched_keeps_order_and_closes_a_batch_once_it_reaches_max_chars(sizes, max_chars):
    texts = ["x" * n for n in sizes]
    batches = list(batched(texts, max_chars))
    assert [t for b in batches for t in b] == texts and all(batches)
    for b in batches[:-1]:  # each full batch reached max_chars only with its last text
        assert sum(map(len, b)) >= max_chars > sum(map(len, b[:-1]))
    if batches:
        assert sum(map(len, batches[-1][:-1])) < max_chars


def test_the_transformers_tokenizer_encodes_as_training_does_without_an_added_start_token(tmp_path):
    """A folder's tokenizer.json may put a start token before every text (Llama's); training never adds it."""
    from tokenizers.processors import TemplateProcessing

    from data.tokenizer import as_transformers_tokenizer

    tok = train_tokenizer(DOCS * 3, 300, ["</s>", "<s>"])
    tok.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    hf = as_transformers_tokenizer(tok, ["</s>", "<s>"], 64)
    text = DOCS[0][:40]
    assert hf(text)["input_ids"] == tok.encode(text, add_special_tokens=False).ids
    assert tok.encode(text).ids[0] == tok.token_to_id("<s>")  # the caller's tokenizer is left as it was


def test_a_sentencepiece_style_tokenizers_bytes_sum_to_the_texts_length():
    """Llama 2's kind: ``▁`` for a space (prepended to the text), and byte-fallback tokens ``<0xNN>`` of one byte."""
    from tokenizers import normalizers

    pieces = [("<unk>", 0.0)] + [(f"<0x{b:02X}>", -10.0) for b in range(256)]
    pieces += [(p, -1.0) for p in ["▁", "▁the", "▁cat", "t", "h", "e", "c", "a"]]
    tok = Tokenizer(models.Unigram(pieces, unk_id=0, byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    lengths = token_byte_lengths(tok)
    for text in ["the cat the cat", "the cat é", "東京 cat"]:
        ids = tok.encode(text).ids
        assert tok.decode(ids) == text
        assert lengths[ids].sum() == len(text.encode()) + 1  # the prepended space counts as a byte


PRE_TOKENIZER = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)  # the trained tokenizers' own


def pre_token_lengths(text: str) -> list[int]:
    return [end - start for _, (start, end) in PRE_TOKENIZER.pre_tokenize_str(text)]


def test_a_long_run_without_whitespace_reaches_the_trainer_in_pieces(monkeypatch):
    """A merge costs the trainer time in the length of each pre-token ("word") it rewrites, so one run of 300k
    letters (a DNA sequence) would take it time in 300k²: the texts it is handed have no pre-token over 1000
    characters, and its work, counted as the sum of their squared lengths, stays within 1000 × the text's length.
    Encoding is not cut: the whole run encodes and decodes back."""
    run = "".join(random.Random(0).choices("ACGT", k=300_000))
    texts = [*DOCS, f"> {run}\n{DOCS[0]}"]
    handed, original = [], tokenizer_module.batched

    def spy(items, max_chars):
        for batch in original(items, max_chars):
            handed.extend(batch)
            yield batch

    monkeypatch.setattr(tokenizer_module, "batched", spy)
    tok = train_tokenizer(texts, 400, [EOT])
    lengths = [n for text in handed for n in pre_token_lengths(text)]
    assert "".join(handed) == "".join(texts) and max(lengths) <= 1000
    assert sum(n * n for n in lengths) <= 1000 * len("".join(texts))
    assert tok.decode(tok.encode(texts[-1]).ids) == texts[-1]


def test_the_cut_leaves_the_tokenizer_of_text_without_long_pre_tokens_as_it_was():
    """Pre-tokens of exactly the cap (letters after a newline, symbols, spaces that end a text) are not cut: the
    trainer learns the very tokenizer it learns with no cut at all."""
    from data.tokenizer import MAX_TRAIN_PRE_TOKEN as CAP

    edge = f"{'=' * CAP}\n{'ACGT' * (CAP // 4)}\n{'7' * CAP} x\n{' ' * (CAP - 1)}"
    texts = [*DOCS * 3, edge]
    assert max(n for text in texts for n in pre_token_lengths(text)) == CAP
    cut = train_tokenizer(texts, 400, [EOT])
    assert cut.to_str() == train_tokenizer(texts, 400, [EOT], max_pre_token=None).to_str()
    assert cut.get_vocab_size() == 400


# Letters, digits (other scripts' too), symbols, contractions, whitespace: the pre-tokenizer's (U+0085, U+3000) and
# Python's alone (U+001C).
PIECES = [*"ab7٣²!'sl \n\t\x85\u3000\x1cé東", "'ll", " a"]
RUNS = st.lists(st.tuples(st.sampled_from(PIECES), st.integers(1, 12)), max_size=12)


@settings(max_examples=300, deadline=None)
@given(runs=RUNS, cap=st.integers(3, 8))
def test_training_pieces_cut_only_the_pre_tokens_longer_than_the_cap(runs, cap):
    """Checked against the pre-tokenizer itself, on runs of ``PIECES``; the pieces join to the text."""
    from data.tokenizer import training_pieces

    text = "".join(ch * n for ch, n in runs)
    pieces = training_pieces(text, cap)
    assert "".join(pieces) == text and (len(pieces) == 1 or all(pieces))
    assert all(n <= cap for piece in pieces for n in pre_token_lengths(piece))
    if max(pre_token_lengths(text), default=0) <= cap:
        assert pieces == [text]


TRAINS_LONG = """
import random, signal, sys
from data.tokenizer import train_tokenizer
signal.signal(signal.SIGTERM, lambda *_: sys.exit(3))  # as the run's start handles it: after the call returns
rng = random.Random(0)
words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 12))) for _ in range(300_000)]
print("training", flush=True)
train_tokenizer([" ".join(words[i : i + 1000]) for i in range(0, len(words), 1000)], 32768, ["<|endoftext|>"])
print("trained", flush=True)
"""


def test_a_sigterm_while_the_bpe_trains_ends_the_process_at_once(tmp_path):
    """The merges run in native code for minutes at a large vocabulary: a Python handler would run only after them,
    past a scheduler's grace before SIGKILL. The training takes seconds here; the signal comes after 0.3 s."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import ROOT

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", TRAINS_LONG], env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "training\n"
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGTERM and "trained" not in out
