"""The data pipeline: each source on small local files, the token cache, batch determinism, bits per byte."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from data import TrainBatches, ValBatches, build_corpus, prepare, token_byte_lengths
from data.cache import TokenCache, token_dtype
from data.corpus import in_val
from tests.conftest import compose_config, group_options
from training.engine import evaluate

EOT = "<|endoftext|>"

# Documents with multi-byte characters, so byte counts and token counts differ.
DOCS = [
    f"Document {i}: naïve café, 東京 and ünïcödé ✓ — line {i}.\n" + f"def f(x):\n    return x * {i}\n" * (i % 5 + 1)
    for i in range(40)
]


def data_cfg(option: str, cache_dir: Path, **values):
    """The composed ``data`` group of ``option`` with ``values`` set (paths need no override quoting)."""
    cfg = compose_config([f"data={option}"]).data
    cfg.cache_dir = str(cache_dir)
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


# ---- sources ---------------------------------------------------------------------------------------------


def test_every_data_option_composes_with_the_public_keys():
    for option in group_options("data"):
        cfg = compose_config([f"data={option}"]).data
        assert {"vocab_size", "cache_dir", "val_fraction", "on_decode_error", "max_bytes"} <= set(cfg), option
        if cfg.source == "hub":
            assert {"name", "text_column", "streaming", "max_documents", "split"} <= set(cfg), option
    assert compose_config().data.source == "builtin"
    assert {"path", "text_column"} <= set(compose_config(["data=text_files"]).data)


def test_hub_presets_name_their_datasets():
    presets = {o: compose_config([f"data={o}"]).data for o in ("tinystories", "fineweb_edu", "openwebtext")}
    assert presets["tinystories"].name == "roneneldan/TinyStories"
    assert presets["tinystories"].val_split == "validation"
    assert (presets["fineweb_edu"].name, presets["fineweb_edu"].config_name) == (
        "HuggingFaceFW/fineweb-edu",
        "sample-10BT",
    )
    assert presets["openwebtext"].name == "Skylion007/openwebtext"
    assert presets["fineweb_edu"].streaming and presets["openwebtext"].streaming


def test_builtin_corpus_splits_files_by_a_hash_of_their_path(tmp_path):
    cfg = data_cfg("builtin", tmp_path, max_documents=60)
    corpus = build_corpus(cfg)
    pairs = list(corpus.split_documents())
    assert len(pairs) == 60 and {s for s, _ in pairs} == {"train", "val"}
    keys = [key for key, _ in corpus.capped(corpus.keyed_documents())]
    assert [s for s, _ in pairs] == ["val" if in_val(k, 0.05) else "train" for k in keys]
    assert all(k.endswith(".py") for k in keys)
    assert list(build_corpus(cfg).split_documents()) == pairs  # deterministic


def test_text_files_folder_reads_every_text_file_and_skips_hidden_ones(tmp_path):
    root = tmp_path / "corpus"
    write_texts(root, DOCS[:20], ".txt")
    write_texts(root / "sub", DOCS[20:30], ".md")
    write_texts(root / "code", DOCS[30:], ".py")
    write_texts(root / ".git", ["hidden"], ".txt")
    (root / "image.png").write_bytes(b"\x89PNG")
    cache = prepare(data_cfg("text_files", tmp_path / "cache", path=str(root), val_fraction=0.2))
    keys = [f"doc{i:03d}.txt" for i in range(20)] + [f"sub/doc{i:03d}.md" for i in range(10)]
    keys += [f"code/doc{i:03d}.py" for i in range(10)]
    key_of = dict(zip(DOCS, keys, strict=True))
    train, val = decoded_documents(cache, "train"), decoded_documents(cache, "val")
    assert sorted(train + val) == sorted(DOCS) and train and val
    assert all(in_val(key_of[d], 0.2) for d in val) and not any(in_val(key_of[d], 0.2) for d in train)
    assert cache.meta["bytes"]["train"] + cache.meta["bytes"]["val"] == sum(len(d.encode()) for d in DOCS)


def test_text_files_glob_and_a_single_file(tmp_path):
    root = tmp_path / "corpus"
    write_texts(root, DOCS[:10], ".txt")
    write_texts(root / "notes", DOCS[10:14], ".md")
    corpus = build_corpus(data_cfg("text_files", tmp_path / "cache", path=str(root / "**" / "*.md")))
    assert [text for _, text in corpus.keyed_documents()] == DOCS[10:14]

    # One file: no whole document can go to val, so its last val_fraction of lines does.
    single = data_cfg("text_files", tmp_path / "cache", path=str(root / "doc005.txt"), val_fraction=0.25)
    train, val = list(build_corpus(single).documents("train")), list(build_corpus(single).documents("val"))
    assert len(train) == len(val) == 1 and train[0] + val[0] == DOCS[5]
    assert len(val[0].splitlines()) == round(len(DOCS[5].splitlines()) * 0.25)


def write_tables(root: Path, rows: list[dict], fmt: str, n_files: int = 2) -> None:
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


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "csv"])
def test_text_files_tables_read_the_configured_column(tmp_path, fmt):
    rows = [{"id": i, "body": doc} for i, doc in enumerate(DOCS)]
    write_tables(tmp_path / "t", rows, fmt)
    cfg = data_cfg("text_files", tmp_path, path=str(tmp_path / "t"), text_column="body", val_fraction=0.2)
    corpus = build_corpus(cfg)
    pairs = list(corpus.split_documents())
    assert sorted(t for _, t in pairs) == sorted(DOCS)
    expect = ["val" if in_val(f"part{k}.{fmt}:{i}", 0.2) else "train" for k in range(2) for i in range(20)]
    assert [s for s, _ in pairs] == expect  # keyed by file and row: adding a file moves no other row


@pytest.mark.parametrize("streaming", [True, False])
def test_hub_code_path_on_a_local_dataset_folder_and_on_json_data_files(tmp_path, monkeypatch, streaming):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf"))  # not the user's cache
    rows = [{"text": doc, "n": i} for i, doc in enumerate(DOCS)]
    write_tables(tmp_path / "ds", rows, "jsonl")
    order = [r["text"] for k in range(2) for r in rows[k::2]]  # the files in order, rows in order
    cfg = data_cfg("hub", tmp_path / "cache", name=str(tmp_path / "ds"), streaming=streaming)
    assert read_texts(cfg) == order
    assert_cache_holds_the_corpus(prepare(cfg), cfg)

    files = str(tmp_path / "ds" / "*.jsonl")
    cfg = data_cfg("hub", tmp_path / "cache", name="json", data_files=files, streaming=streaming, max_documents=25)
    assert read_texts(cfg) == order[:25]
    assert_cache_holds_the_corpus(prepare(cfg), cfg)


def test_hub_preset_uses_the_datasets_own_validation_split(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf"))
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS[:30]))
    (tmp_path / "valid.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS[30:]))
    files = {"train": str(tmp_path / "train.jsonl"), "validation": str(tmp_path / "valid.jsonl")}
    cfg = data_cfg("tinystories", tmp_path / "cache", name="json", streaming=True, data_files=files)
    cache = prepare(cfg)
    assert decoded_documents(cache, "train") == DOCS[:30]
    assert decoded_documents(cache, "val") == DOCS[30:]


def test_caps_bound_documents_and_bytes(tmp_path):
    write_texts(tmp_path / "c", DOCS)
    assert read_texts(data_cfg("text_files", tmp_path, path=str(tmp_path / "c"), max_documents=7)) == DOCS[:7]
    cap = sum(len(d.encode()) for d in DOCS[:3]) + 10
    texts = read_texts(data_cfg("text_files", tmp_path, path=str(tmp_path / "c"), max_bytes=cap))
    assert texts[:3] == DOCS[:3] and len(texts) == 4
    assert len(texts[3].encode()) == 10 and DOCS[3].startswith(texts[3])  # the crossing one is cut at the cap


# ---- tokenizer ---------------------------------------------------------------------------------------------


def test_trained_tokenizer_has_the_configured_vocab_and_special_tokens_first(tmp_path):
    write_texts(tmp_path / "c", DOCS * 3)
    cfg = data_cfg("text_files", tmp_path / "cache", path=str(tmp_path / "c"), vocab_size=300,
                   special_tokens=[EOT, "<|pad|>"])  # fmt: skip
    cache = prepare(cfg)
    tok = cache.tokenizer()
    assert tok.get_vocab_size() == cache.vocab_size <= 300
    assert (tok.token_to_id(EOT), tok.token_to_id("<|pad|>")) == (0, 1) and cache.eot_id == 0
    assert (cache.path / "tokenizer.json").is_file()
    lengths = token_byte_lengths(tok, 384)
    assert lengths.shape == (384,) and lengths[0] == lengths[1] == 0 and not lengths[cache.vocab_size :].any()
    for doc in DOCS[:5]:  # a text's token byte lengths add up to its UTF-8 length
        assert lengths[tok.encode(doc).ids].sum() == len(doc.encode())


def test_a_given_tokenizer_is_used_instead_of_training_one(tmp_path):
    write_texts(tmp_path / "c", DOCS)
    first = prepare(data_cfg("text_files", tmp_path / "cache", path=str(tmp_path / "c")))
    given = tmp_path / "tokenizer.json"
    given.write_text(first.tokenizer().to_str())
    cfg = data_cfg("text_files", tmp_path / "cache", path=str(tmp_path / "c"), tokenizer=str(given), vocab_size=9999)
    second = prepare(cfg)
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


def test_token_files_are_uint16_when_the_vocab_fits_else_uint32(tmp_path):
    assert token_dtype(2**16) == np.uint16 and token_dtype(2**16 + 1) == np.uint32
    write_texts(tmp_path / "c", DOCS[:8])
    big_vocab_tokenizer(tmp_path / "big.json", 2**16)
    cfg = data_cfg("text_files", tmp_path / "cache", path=str(tmp_path / "c"), tokenizer=str(tmp_path / "big.json"))
    cache = prepare(cfg)
    assert cache.vocab_size > 2**16 and cache.meta["dtype"] == "uint32"
    assert (cache.path / "train.bin").stat().st_size == 4 * cache.meta["tokens"]["train"]
    assert_cache_holds_the_corpus(cache, cfg)


# ---- cache -------------------------------------------------------------------------------------------------


def test_cache_is_reused_when_source_and_tokenizer_are_unchanged(tmp_path, caplog):
    write_texts(tmp_path / "c", DOCS)
    cfg = data_cfg("text_files", tmp_path / "cache", path=str(tmp_path / "c"))
    first = prepare(cfg)
    stamp = (first.path / "train.bin").stat().st_mtime_ns
    caplog.set_level("INFO", logger="data.cache")
    again = prepare(cfg)
    assert again.path == first.path and (again.path / "train.bin").stat().st_mtime_ns == stamp
    assert "reusing" in caplog.text and "tokenizing" not in caplog.text
    meta = json.loads((first.path / "meta.json").read_text())
    assert meta["tokens"]["train"] == len(first.tokens("train")) and meta["source_fingerprint"]
    assert meta["tokenizer_hash"] and meta["bytes"]["train"] > meta["tokens"]["train"]


def test_cache_is_rebuilt_when_a_source_file_changes(tmp_path):
    paths = write_texts(tmp_path / "c", DOCS)
    cfg = data_cfg("text_files", tmp_path / "cache", path=str(tmp_path / "c"))
    first = prepare(cfg)
    paths[3].write_text(DOCS[3] + "an edit\n")
    second = prepare(cfg)
    assert second.path != first.path
    assert second.meta["source_fingerprint"] != first.meta["source_fingerprint"]
    assert DOCS[3] + "an edit\n" in decoded_documents(second, "train") + decoded_documents(second, "val")


@pytest.mark.parametrize("change", [{"vocab_size": 300}, {"special_tokens": [EOT, "<|sep|>"]}])
def test_cache_is_rebuilt_when_tokenizer_settings_change(tmp_path, change):
    write_texts(tmp_path / "c", DOCS * 2)
    first = prepare(data_cfg("text_files", tmp_path / "cache", path=str(tmp_path / "c")))
    second = prepare(data_cfg("text_files", tmp_path / "cache", path=str(tmp_path / "c"), **change))
    assert second.path != first.path
    assert second.meta["tokenizer_hash"] != first.meta["tokenizer_hash"]
    assert second.meta["source_fingerprint"] == first.meta["source_fingerprint"]


def test_a_damaged_cache_is_not_trusted_and_is_rebuilt(tmp_path):
    write_texts(tmp_path / "c", DOCS)
    cfg = data_cfg("text_files", tmp_path / "cache", path=str(tmp_path / "c"))
    good = prepare(cfg)
    expect = np.array(good.tokens("train"))
    with open(good.path / "train.bin", "r+b") as fh:
        fh.truncate(10)
    assert TokenCache.open(good.path) is None
    rebuilt = prepare(cfg)
    assert rebuilt.path == good.path and np.array_equal(rebuilt.tokens("train"), expect)


def test_concurrent_preparations_of_one_cache_build_it_once(tmp_path, caplog):
    from concurrent.futures import ThreadPoolExecutor

    write_texts(tmp_path / "c", DOCS * 3)
    cfg = data_cfg("text_files", tmp_path / "cache", path=str(tmp_path / "c"))
    caplog.set_level("INFO", logger="data.cache")
    with ThreadPoolExecutor(2) as pool:  # flock locks conflict between open files, so threads contend too
        caches = list(pool.map(lambda _: prepare(cfg), range(2)))
    assert caches[0].path == caches[1].path and caches[0].meta == caches[1].meta
    assert caplog.text.count("data: tokenizing") == 1
    assert sorted(os.listdir(tmp_path / "cache")) == [caches[0].path.name]


def test_cache_dir_comes_from_the_environment_by_default(tmp_path, monkeypatch):
    monkeypatch.setenv("GPT_DATA_CACHE", str(tmp_path / "env-cache"))
    assert compose_config().data.cache_dir == str(tmp_path / "env-cache")
    write_texts(tmp_path / "c", DOCS[:6])
    cfg = {"source": "text_files", "path": str(tmp_path / "c"), "vocab_size": 300}  # the Python API, no Hydra
    assert prepare(cfg).path.parent == tmp_path / "env-cache"


# ---- batches -----------------------------------------------------------------------------------------------

TOKENS = np.arange(10_000, dtype=np.uint16)  # token i = i: a window's first token is its offset


def windows(batches: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    return torch.cat([x for x, _ in batches])


def test_train_windows_are_a_function_of_seed_and_update_alone():
    a = TrainBatches(TOKENS, 16, 4, grad_accum_steps=2, seed=3)
    b = TrainBatches(TOKENS, 16, 4, grad_accum_steps=2, seed=3)  # a "restart": new objects, no state
    for t in (0, 1, 7, 1000):
        for (xa, ya), (xb, yb) in zip(a.micro_batches(t), b.micro_batches(t), strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
            assert xa.shape == (4, 16) and xa.dtype == torch.int64
            assert torch.equal(xa[:, 1:], ya[:, :-1])  # targets are the inputs shifted by one
    assert not torch.equal(windows(a.micro_batches(0)), windows(a.micro_batches(1)))
    assert not torch.equal(
        windows(a.micro_batches(0)), windows(TrainBatches(TOKENS, 16, 4, 2, seed=4).micro_batches(0))
    )
    for x, y in a.micro_batches(5):  # every window is a contiguous run of the token array
        assert torch.equal(x, x[:, :1] + torch.arange(16)) and torch.equal(y, x + 1)


@pytest.mark.parametrize("world,accum,batch", [(2, 1, 4), (4, 1, 2), (2, 2, 2), (1, 4, 2)])
def test_ranks_and_micro_steps_together_see_the_one_process_global_batch(world, accum, batch):
    one = TrainBatches(TOKENS, 16, world * accum * batch, seed=11)
    for t in (0, 3):
        per_rank = [TrainBatches(TOKENS, 16, batch, accum, world, r, seed=11).micro_batches(t) for r in range(world)]
        # micro-step m of rank r holds rows [(m·world + r)·batch, …+batch) of the one-process batch
        assembled = torch.cat([per_rank[r][m][0] for m in range(accum) for r in range(world)])
        assert torch.equal(assembled, one.micro_batches(t)[0][0])


def test_val_windows_are_fixed_and_split_across_ranks():
    val = ValBatches(TOKENS, 32, 4, eval_batches=3)
    first, second = list(val), list(val)
    again = list(ValBatches(TOKENS, 32, 4, eval_batches=3))
    assert len(first) == 3
    for a, b, c in zip(first, second, again, strict=True):
        assert torch.equal(a[0], b[0]) and torch.equal(a[0], c[0]) and torch.equal(a[1], c[1])
    assert first[0][0][0, 0] == TOKENS[0] and first[-1][1][-1, -1] == TOKENS[-1]  # spans the whole split
    ranks = [list(ValBatches(TOKENS, 32, 2, eval_batches=3, world_size=2, rank=r)) for r in range(2)]
    assembled = torch.cat([ranks[r][i][0] for i in range(3) for r in range(2)])
    assert torch.equal(assembled, windows(first))


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 300), block=st.integers(1, 64), t=st.integers(0, 10**6), seed=st.integers(0, 2**31))
def test_every_window_lies_inside_the_split(n, block, t, seed):
    tokens = np.arange(n, dtype=np.uint32)
    if n < block + 1:
        return
    offsets = TrainBatches(tokens, block, 8, seed=seed).offsets(t)
    assert offsets.min() >= 0 and offsets.max() <= n - block - 1
    x, y = TrainBatches(tokens, block, 8, seed=seed).micro_batches(t)[0]
    assert torch.equal(y - x, torch.ones_like(x))


# ---- bits per byte ------------------------------------------------------------------------------------------


class UniformModel(torch.nn.Module):
    """Logits 0 over a vocab of V: every target costs ln V nats."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab

    def forward(self, idx, targets, reduction="mean"):
        logits = torch.zeros(*idx.shape, self.vocab)
        return logits, F.cross_entropy(logits.view(-1, self.vocab), targets.reshape(-1), reduction=reduction)


def test_bits_per_byte_of_a_uniform_model_is_ln_v_over_bytes_per_token(tmp_path):
    write_texts(tmp_path / "c", DOCS)
    cache = prepare(data_cfg("text_files", tmp_path / "cache", path=str(tmp_path / "c"), val_fraction=0.3))
    val = torch.from_numpy(np.asarray(cache.tokens("val"), dtype=np.int64))
    n_tokens, n_docs, n_bytes = len(val), cache.meta["documents"]["val"], cache.meta["bytes"]["val"]
    vocab = 64 * math.ceil(cache.vocab_size / 64)  # the padded vocab, as train.py builds the model
    token_bytes = torch.from_numpy(token_byte_lengths(cache.tokenizer(), vocab))
    # One batch whose targets are the whole val split: n_docs end-of-text targets (0 bytes) and the text.
    batches = [(torch.zeros_like(val)[None], val[None])]
    loss, bpb = evaluate(
        UniformModel(vocab), batches, token_bytes, device=torch.device("cpu"), autocast=torch.no_grad()
    )
    assert loss == pytest.approx(math.log(vocab), rel=1e-6)  # float32 cross-entropy
    # by hand: the text targets cost (n_tokens − n_docs)·ln V nats and encode the val text's UTF-8 bytes
    assert bpb == pytest.approx((n_tokens - n_docs) * math.log(vocab) / (math.log(2) * n_bytes), rel=1e-6)


def test_the_cache_directory_holds_only_complete_caches_after_preparing(tmp_path):
    write_texts(tmp_path / "c", DOCS)
    prepare(data_cfg("text_files", tmp_path / "cache", path=str(tmp_path / "c")))
    entries = sorted(os.listdir(tmp_path / "cache"))
    assert len(entries) == 1 and entries[0].startswith("files-c-")
    assert sorted(os.listdir(tmp_path / "cache" / entries[0])) == [
        "meta.json",
        "tokenizer.json",
        "train.bin",
        "val.bin",
    ]
