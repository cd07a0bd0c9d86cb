"""Corpora: each source on small local files, the caps, and the deterministic train/val split."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from data import DataError, build_corpus, prepare
from data.corpus import in_val
from tests.data.corpora import (
    DOCS,
    assert_cache_holds_the_corpus,
    data_cfg,
    decoded_documents,
    read_texts,
    write_tables,
    write_texts,
)

LINE_SPLIT_NOTE = "lines as val (data.val_fraction)"


def test_builtin_corpus_splits_files_by_a_hash_of_their_path():
    cfg = data_cfg("builtin", max_documents=60)
    corpus = build_corpus(cfg)
    pairs = list(corpus.split_documents())
    assert len(pairs) == 60 and {s for s, _ in pairs} == {"train", "val"}
    keys = [key for key, _ in corpus.capped(corpus.keyed_documents())]
    assert [s for s, _ in pairs] == ["val" if in_val(k, cfg.val_fraction) else "train" for k in keys]
    assert all(k.endswith(".py") for k in keys)
    assert list(build_corpus(cfg).split_documents()) == pairs  # deterministic


def test_text_files_folder_reads_every_text_file_and_skips_hidden_ones(tmp_path, caplog):
    root = tmp_path / "corpus"
    write_texts(root, DOCS[:20], ".txt")
    write_texts(root / "sub", DOCS[20:30], ".md")
    write_texts(root / "code", DOCS[30:], ".py")
    write_texts(root / ".git", ["hidden"], ".txt")
    (root / "image.png").write_bytes(b"\x89PNG")
    caplog.set_level("INFO", logger="data")
    cache = prepare(data_cfg("text_files", path=str(root), val_fraction=0.2))
    keys = [f"doc{i:03d}.txt" for i in range(20)] + [f"sub/doc{i:03d}.md" for i in range(10)]
    keys += [f"code/doc{i:03d}.py" for i in range(10)]
    key_of = dict(zip(DOCS, keys, strict=True))
    train, val = decoded_documents(cache, "train"), decoded_documents(cache, "val")
    assert sorted(train + val) == sorted(DOCS) and train and val
    assert all(in_val(key_of[d], 0.2) for d in val) and not any(in_val(key_of[d], 0.2) for d in train)
    assert cache.meta["bytes"]["train"] + cache.meta["bytes"]["val"] == sum(len(d.encode()) for d in DOCS)
    assert LINE_SPLIT_NOTE not in caplog.text  # whole documents in each split: nothing to say


def test_a_folder_that_cannot_be_read_is_refused_not_skipped(tmp_path, monkeypatch):
    root = tmp_path / "corpus"
    write_texts(root, DOCS[:4])
    write_texts(root / "locked", DOCS[4:8])
    scandir = os.scandir

    def denied(path="."):  # what chmod 000 does to a user without root's override
        if Path(path) == root / "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", denied)
    with pytest.raises(DataError, match=rf"^{re.escape(str(root / 'locked'))}: cannot be read \(Permission denied\)$"):
        build_corpus(data_cfg("text_files", path=str(root)))


def test_a_byte_order_mark_is_not_read_as_text(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "bom.txt").write_bytes("\ufeffhello world\n".encode())
    corpus = build_corpus(data_cfg("text_files", path=str(tmp_path / "c")))
    assert [text for _, text in corpus.keyed_documents()] == ["hello world\n"]


def test_adding_documents_moves_no_existing_document_to_the_other_split(tmp_path):
    write_texts(tmp_path / "c", DOCS[:20])
    cfg = data_cfg("text_files", path=str(tmp_path / "c"), val_fraction=0.3)
    before = dict((text, split) for split, text in build_corpus(cfg).split_documents())
    write_texts(tmp_path / "c" / "more", DOCS[20:])
    after = dict((text, split) for split, text in build_corpus(cfg).split_documents())
    assert {text: after[text] for text in before} == before and len(after) == len(DOCS)


def test_text_files_glob_reads_only_the_matching_files(tmp_path):
    write_texts(tmp_path / "c", DOCS[:10], ".txt")
    write_texts(tmp_path / "c" / "notes", DOCS[10:14], ".md")
    corpus = build_corpus(data_cfg("text_files", path=str(tmp_path / "c" / "**" / "*.md")))
    assert [text for _, text in corpus.keyed_documents()] == DOCS[10:14]


def test_a_list_may_mix_absolute_and_relative_paths(tmp_path, monkeypatch):
    write_texts(tmp_path / "c" / "here", DOCS[:4])
    write_texts(tmp_path / "c" / "there", DOCS[4:8])
    monkeypatch.chdir(tmp_path / "c")
    corpus = build_corpus(data_cfg("text_files", path=["here", str(tmp_path / "c" / "there")]))
    keys = [key for key, _ in corpus.keyed_documents()]
    assert keys == [f"here/doc{i:03d}.txt" for i in range(4)] + [f"there/doc{i:03d}.txt" for i in range(4)]


def test_a_single_file_gives_its_last_lines_to_val_and_says_so_once(tmp_path, caplog):
    (path,) = write_texts(tmp_path / "c", [DOCS[5]])
    caplog.set_level("INFO", logger="data")
    corpus = build_corpus(data_cfg("text_files", path=str(path), val_fraction=0.25))
    train, val = list(corpus.documents("train")), list(corpus.documents("val"))
    assert len(train) == len(val) == 1 and train[0] + val[0] == DOCS[5]
    assert len(val[0].splitlines()) == round(len(DOCS[5].splitlines()) * 0.25)
    notes = [r for r in caplog.records if LINE_SPLIT_NOTE in r.getMessage()]
    assert len(notes) == 1, caplog.text  # two passes over the corpus, one line in the log
    assert "last 25% of each document's lines" in notes[0].getMessage() and notes[0].name.startswith("data")


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "csv"])
def test_text_files_tables_read_the_configured_column(tmp_path, fmt):
    rows = [{"id": i, "body": doc} for i, doc in enumerate(DOCS)]
    write_tables(tmp_path / "t", rows, fmt)
    cfg = data_cfg("text_files", path=str(tmp_path / "t"), text_column="body", val_fraction=0.2)
    pairs = list(build_corpus(cfg).split_documents())
    assert sorted(t for _, t in pairs) == sorted(DOCS)
    expect = ["val" if in_val(f"part{k}.{fmt}:{i}", 0.2) else "train" for k in range(2) for i in range(20)]
    assert [s for s, _ in pairs] == expect  # keyed by file and row: adding a file moves no other row


@pytest.mark.parametrize("streaming", [True, False])
def test_hub_code_path_on_a_local_dataset_folder_and_on_json_data_files(tmp_path, streaming):
    rows = [{"text": doc, "n": i} for i, doc in enumerate(DOCS)]
    write_tables(tmp_path / "ds", rows, "jsonl")
    order = [r["text"] for k in range(2) for r in rows[k::2]]  # the files in order, rows in order
    cfg = data_cfg("hub", name=str(tmp_path / "ds"), streaming=streaming)
    assert read_texts(cfg) == order

    files = str(tmp_path / "ds" / "*.jsonl")
    cfg = data_cfg("hub", name="json", data_files=files, streaming=streaming, max_documents=25)
    assert read_texts(cfg) == order[:25]
    assert_cache_holds_the_corpus(prepare(cfg), cfg)


def test_a_dataset_with_its_own_validation_split_uses_it_whole_for_val(tmp_path):
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS[:30]))
    (tmp_path / "valid.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS[30:]))
    files = {"train": str(tmp_path / "train.jsonl"), "validation": str(tmp_path / "valid.jsonl")}
    cfg = data_cfg("hub", name="json", streaming=True, data_files=files, val_split="validation")
    cache = prepare(cfg)
    assert decoded_documents(cache, "train") == DOCS[:30]
    assert decoded_documents(cache, "val") == DOCS[30:]
    assert prepare({**cfg, "val_fraction": 0.3}).path == cache.path  # a share it does not take: the same tokens


def test_caps_bound_documents_and_bytes(tmp_path):
    write_texts(tmp_path / "c", DOCS)
    assert read_texts(data_cfg("text_files", path=str(tmp_path / "c"), max_documents=7)) == DOCS[:7]
    cap = sum(len(d.encode()) for d in DOCS[:3]) + 10
    texts = read_texts(data_cfg("text_files", path=str(tmp_path / "c"), max_bytes=cap))
    assert texts[:3] == DOCS[:3] and len(texts) == 4
    assert len(texts[3].encode()) == 10 and DOCS[3].startswith(texts[3])  # the crossing one is cut at the cap


def test_an_existing_path_with_glob_characters_in_its_name_is_that_path(tmp_path):
    write_texts(tmp_path / "t" / "x[1]", DOCS[:4])
    write_texts(tmp_path / "t" / "x1", DOCS[4:6])  # what the name read as a glob would match instead
    corpus = build_corpus(data_cfg("text_files", path=str(tmp_path / "t" / "x[1]")))
    assert [text for _, text in corpus.keyed_documents()] == DOCS[:4]
    (one,) = write_texts(tmp_path / "f", ["one file\n"], ".txt")
    named = one.rename(tmp_path / "f" / "notes[draft].txt")
    assert [text for _, text in build_corpus(data_cfg("text_files", path=str(named))).keyed_documents()] == [
        "one file\n"
    ]


def source_settings(cfg) -> dict:
    """A data option's settings as a fork's source file has them: builtin's without its own key."""
    from omegaconf import OmegaConf

    return {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k != "exclude"}


def test_a_forks_source_named_by_target_is_built_split_and_cached_like_the_templates(tmp_path, monkeypatch):
    monkeypatch.setenv("GPT_DATA_CACHE", str(tmp_path / "cache"))
    texts = [f"document {i}: " + "some text of a fork's source. " * 20 for i in range(40)]
    cfg = source_settings(data_cfg("builtin", _target_="tests.data.corpora.Listed", texts=texts))
    corpus = build_corpus(cfg)
    assert corpus.name == "listed" and next(corpus.documents("val"), None) is not None
    assert sorted([*corpus.documents("train"), *corpus.documents("val")]) == sorted(texts)
    cache = prepare(cfg)
    assert cache.path.name.startswith("listed-") and prepare(cfg).path == cache.path
    for key, value in (
        ("texts", texts[1:]),
        ("on_decode_error", "replace"),
        ("_target_", "tests.data.corpora.ListedAgain"),
    ):
        assert prepare({**cfg, key: value}).path != cache.path, key  # other documents, or settings, or code


@pytest.mark.parametrize(
    "target, texts, says",
    [
        ("tests.data.corpora.Lsted", ["a"], r"^data._target_: 'tests.data.corpora.Lsted' cannot be imported \("),
        ("tests.data.corpora.Listed", [], r"^data: tests.data.corpora.Listed refused its settings \(ValueError: texts"),
        ("tests.data.corpora.not_a_corpus", ["a"], r"^data: tests.data.corpora.not_a_corpus built list, not a data"),
    ],
)
def test_a_forks_source_that_cannot_be_built_is_one_line(target, texts, says):
    cfg = source_settings(data_cfg("builtin", _target_=target, texts=texts))
    with pytest.raises(DataError, match=says):
        build_corpus(cfg)


def test_a_forks_source_file_with_target_mistyped_is_told_that_key_not_data_source():
    from training.config import ConfigError, check_data

    for typo in ("_targt_", "target", "__target__"):
        cfg = {"_target_": None, "source": "gz", typo: "tests.data.corpora.Listed", "texts": ["a"]}
        with pytest.raises(ConfigError, match=rf"^data.{typo}: did you mean data._target_, the dotted path of the"):
            check_data(cfg)
    for argument in ("targets", "target_lr", "target_len"):  # a source's own keys that are no typo
        with pytest.raises(ConfigError, match=r"^data.source must be one of"):
            check_data({"_target_": None, "source": "gz", argument: 1})
