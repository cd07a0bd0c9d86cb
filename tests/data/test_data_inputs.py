"""Bad data input: a DataError with one actionable line, and nothing written (no cache, temporary directory or
lock file); undecodable files are skipped, replaced or refused as configured."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from data import DataError, build_corpus, prepare
from data.tokenizer import check_vocab_size
from tests.conftest import compose_config
from tests.data.corpora import DOCS, data_cfg, write_tables, write_texts
from training.config import ConfigError, check_config


def assert_refused(cfg, match: str, cache_dir: Path | None = None) -> str:
    """prepare() raises a one-line DataError matching ``match`` and leaves the cache directory as it was (absent
    unless the test made it)."""
    cache_dir = Path(cache_dir or os.environ["GPT_DATA_CACHE"])
    before = sorted(os.listdir(cache_dir)) if cache_dir.exists() else None
    with pytest.raises(DataError, match=match) as info:
        prepare(cfg)
    assert "\n" not in str(info.value)
    after = sorted(os.listdir(cache_dir)) if cache_dir.exists() else None
    assert after == before, after
    return str(info.value)


@pytest.mark.parametrize(
    "values, match",
    [
        ({"source": "nope"}, r"^data\.source must be one of builtin, text_files, hub, got 'nope'$"),
        ({"source": "hub", "name": None}, r"^data\.name must be a Hugging Face dataset name .*, got None$"),
        ({"source": "text_files", "path": None}, r"^data\.path must be a file, a directory or a glob .*, got None$"),
        ({"streaming": "yes"}, r"^data\.streaming must be true or false, got 'yes'$"),
        ({"text_column": ""}, r"^data\.text_column must be the name of the column that holds the text, got ''$"),
    ],
)
def test_a_bad_data_setting_is_refused_before_any_file_is_read(values, match):
    with pytest.raises(DataError, match=match):
        build_corpus({"source": "text_files", "path": "/nowhere", **values})


def test_a_missing_path_is_refused(tmp_path):
    cfg = data_cfg("text_files", path=str(tmp_path / "nowhere"))
    assert_refused(
        cfg, rf"^data\.path: '{tmp_path / 'nowhere'}' does not exist \(give a file, a directory or a glob\)$"
    )


def test_a_glob_matching_no_file_is_refused(tmp_path):
    write_texts(tmp_path / "c", DOCS[:3])
    assert_refused(data_cfg("text_files", path=str(tmp_path / "c" / "*.md")), r"^data\.path: no file matches the glob")


def test_a_directory_without_text_files_is_refused(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "image.png").write_bytes(b"\x89PNG")
    assert_refused(data_cfg("text_files", path=str(tmp_path / "c")), r"holds no file ending in \.txt, \.md")


def test_text_files_mixed_with_tables_are_refused_naming_one_of_each(tmp_path):
    write_texts(tmp_path / "c", DOCS[:2])
    write_tables(tmp_path / "c", [{"text": d} for d in DOCS[:2]], "jsonl", n_files=1)
    assert_refused(
        data_cfg("text_files", path=str(tmp_path / "c")),
        r"mixes text files \(\S+\.txt, …\) and tables \(\S+\.jsonl, …\)",
    )


def test_an_empty_corpus_is_refused(tmp_path):
    write_texts(tmp_path / "c", ["", "", ""])
    assert_refused(data_cfg("text_files", path=str(tmp_path / "c")), r"^data: the corpus 'files-c' has no text;")


@pytest.mark.parametrize("streaming", [True, False])
def test_a_missing_text_column_is_refused(tmp_path, streaming):
    write_tables(tmp_path / "t", [{"body": d} for d in DOCS], "jsonl")
    cfg = data_cfg("text_files", path=str(tmp_path / "t"), streaming=streaming)
    assert_refused(cfg, r"^data\.text_column must be a column of .*part0\.jsonl' \(body\), got 'text'$")
    hub = data_cfg("hub", name=str(tmp_path / "t"), text_column="content", streaming=streaming)
    assert_refused(hub, r"^data\.text_column must be a column of .* \(body\), got 'content'$")


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
@pytest.mark.parametrize("text", [["a", "list"], 42])
def test_a_text_column_that_does_not_hold_text_is_refused_naming_the_row(tmp_path, fmt, text):
    """Not read as its Python repr ("['a', 'list']", "42"), nor trained on."""
    write_texts(tmp_path / "t", DOCS[:4])
    write_tables(tmp_path / "t", [{"text": text}] * 3, fmt, n_files=1)  # a column of one type: lists, numbers
    cfg = data_cfg("text_files", path=str(tmp_path / "t" / f"*.{fmt}"))
    kind = type(text).__name__
    assert_refused(cfg, rf"^data: '.*part0\.{fmt}' row 1: data\.text_column 'text' must hold text, got {kind}$")


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_an_empty_table_file_is_read_as_no_rows_as_an_empty_text_file_is(tmp_path, fmt):
    import pyarrow as pa
    import pyarrow.parquet as pq

    write_tables(tmp_path / "t", [{"text": d} for d in DOCS], fmt, n_files=1)
    if fmt == "parquet":  # a table with its column and no row, its suffix in either case
        pq.write_table(pa.table({"text": pa.array([], pa.string())}), tmp_path / "t" / "empty.parquet")
        pq.write_table(pa.table({"text": pa.array([], pa.string())}), tmp_path / "t" / "EMPTY2.PARQUET")
    else:
        (tmp_path / "t" / "empty.jsonl").write_bytes(b"")
        (tmp_path / "t" / "blank.jsonl").write_bytes(b"\n  \n\n")  # lines, but no row
    cache = prepare(data_cfg("text_files", path=str(tmp_path / "t")))
    assert sum(cache.meta["documents"].values()) == len(DOCS)


def test_rows_without_text_are_read_as_empty_documents_and_counted_once(tmp_path, caplog):
    """A key misspelt in some rows ("body"): datasets fills the column with null there."""
    rows = [{"text": d} if i % 2 == 0 else {"body": d} for i, d in enumerate(DOCS)]
    write_tables(tmp_path / "t", rows, "jsonl", n_files=1)
    with caplog.at_level("WARNING", logger="data"):
        prepare(data_cfg("text_files", path=str(tmp_path / "t")))
    said = [r.getMessage() for r in caplog.records if "row(s) read have no" in r.getMessage()]
    assert said == [
        f"data: {tmp_path / 't' / 'part0.jsonl'}: 20 of the 40 row(s) read have no 'text' (null, or the key "
        "missing; the first: row 2): read as empty documents"
    ]
    caplog.clear()
    with caplog.at_level("WARNING", logger="data"):  # a pass cut at a cap (10 documents) says what it read
        prepare(data_cfg("text_files", path=str(tmp_path / "t"), max_documents=10))
    [said] = [r.getMessage() for r in caplog.records if "row(s) read have no" in r.getMessage()]
    nulls, read = map(int, re.search(r": (\d+) of the (\d+) row\(s\) read", said).groups())
    assert read < 40 and nulls in (read // 2, (read + 1) // 2)
    (tmp_path / "t" / "part0.jsonl").write_text("{}\n" * 5)  # rows, none with the column: refused, not empty
    assert_refused(data_cfg("text_files", path=str(tmp_path / "t")), r"^data\.text_column must be a column of")


def test_data_files_matching_no_file_is_refused_naming_the_key(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_tables(tmp_path / "t", [{"text": d} for d in DOCS], "jsonl", n_files=1)
    files = {"train": str(tmp_path / "t" / "part0.jsonl"), "validation": "val/*.jsonl"}
    cfg = data_cfg("hub", name="json", data_files=files, val_split="validation")
    assert_refused(cfg, r"^data\.data_files: 'val/\*\.jsonl' matches no file in the working directory$")


def test_a_builder_without_data_files_is_refused_rather_than_reading_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # datasets would read the .jsonl files here, unseen by the cache's key
    write_tables(tmp_path, [{"text": d} for d in DOCS], "jsonl", n_files=1)
    for builder in ("json", "csv", "parquet"):
        assert_refused(data_cfg("hub", name=builder), rf"^data\.data_files: the '{builder}' builder reads local files")


def test_a_table_rewritten_with_its_old_modification_time_is_read_again(tmp_path):
    """datasets knows a local file again by its path and mtime: a copy that keeps the mtime (cp -p, rsync -a,
    tar) would give the old rows to the new cache."""
    path, fresh = tmp_path / "t" / "part0.jsonl", tmp_path / "fresh" / "part0.jsonl"
    write_tables(tmp_path / "t", [{"text": d} for d in DOCS], "jsonl", n_files=1)
    stamp = path.stat().st_mtime_ns
    before = prepare(data_cfg("text_files", path=str(path), streaming=False)).meta["tokens"]
    fresh.parent.mkdir()
    fresh.write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS[: len(DOCS) // 2]))
    path.write_bytes(fresh.read_bytes())
    os.utime(path, ns=(stamp, stamp))
    again = prepare(data_cfg("text_files", path=str(path), streaming=False)).meta["tokens"]
    assert again == prepare(data_cfg("text_files", path=str(fresh), streaming=False)).meta["tokens"] != before


def test_a_datasets_validation_split_that_does_not_exist_is_refused_before_tokenizing(tmp_path, caplog):
    write_tables(tmp_path / "t", [{"text": d} for d in DOCS], "jsonl", n_files=1)
    cfg = data_cfg("hub", name="json", data_files=str(tmp_path / "t" / "part0.jsonl"), val_split="validation")
    with caplog.at_level("INFO", logger="data"):
        assert_refused(cfg, r"""^data: cannot load 'json' split 'validation': Unknown split "validation"\.""")
    assert "tokenizing" not in caplog.text


def test_a_given_tokenizer_that_cannot_encode_the_corpus_is_refused(tmp_path):
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel

    write_texts(tmp_path / "c", DOCS[:5])
    Tokenizer(WordLevel({"a": 0, "<|endoftext|>": 1})).save(str(tmp_path / "tok.json"))  # no unknown token
    cfg = data_cfg("text_files", path=str(tmp_path / "c"), tokenizer=str(tmp_path / "tok.json"))
    assert_refused(cfg, r"^data: the tokenizer cannot encode the corpus \(.*\); data\.tokenizer: '.*tok\.json'")


@pytest.mark.parametrize("streaming", [True, False])
@pytest.mark.parametrize(
    "name, text, where",
    [
        (
            "rows.jsonl",
            '{"text": "a fine row"}\n\n{"text": "two"}\n{"text": oops}\n',
            r"line 4: not JSON \(Expecting value",
        ),
        ("rows.csv", 'text,n\n"fine",1\n"a, b",2\n"open,3\nx,4\n', "line 4: unexpected end of data"),
        ("rows.csv", "text,n\nfine,1\nx,2,3\n", "line 3: 3 fields where the header has 2"),
        ("ROWS.CSV", "text,n\nfine,1\nx,2,3\n", "line 3: 3 fields where the header has 2"),  # any case
        ("rows.jsonl", '{"text": "a"}\n{"text": "\udcff"}\n', r"line 2: not valid UTF-8 \(its byte 11\)"),
    ],
)
def test_a_table_that_does_not_parse_is_refused_naming_the_line(tmp_path, streaming, name, text, where):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / name).write_bytes(text.encode("utf-8", "surrogateescape"))  # \udcff: the byte 0xff
    cfg = data_cfg("text_files", path=str(tmp_path / "t"), streaming=streaming)
    assert_refused(cfg, rf"^data: cannot (load|read) '.*{name}'.*: {where}")


def test_an_unreachable_hub_dataset_is_refused_with_a_hint(monkeypatch):
    import datasets
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # as HF_HUB_OFFLINE=1 does: no network
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    cfg = data_cfg("hub", name="no-such-owner/no-such-dataset")
    assert_refused(
        cfg,
        r"^data: cannot load 'no-such-owner/no-such-dataset' split 'train' \(check data\.name and "
        r"the network; with HF_HUB_OFFLINE=1 only cached datasets load\): ",
    )


def test_an_unreachable_hub_says_once_what_it_loads_and_not_each_retry(monkeypatch, capfd, caplog):
    """The hub client logs two lines for each of its retries (to its own handler and through ours)."""
    import datasets
    import huggingface_hub

    def unreachable(*args, **kwargs):
        for n in range(1, 6):
            hub_log = huggingface_hub.utils.logging.get_logger("huggingface_hub.utils._http")
            hub_log.warning("'[Errno -2] Name or service not known' thrown while requesting HEAD …")
            hub_log.warning(f"Retrying in 1s [Retry {n}/5].")
        raise ConnectionError("Couldn't reach the Hub")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    with caplog.at_level("INFO"):
        assert_refused(data_cfg("hub", name="owner/dataset"), r"^data: cannot load 'owner/dataset' split 'train' \(")
    assert [r.getMessage() for r in caplog.records] == [
        "data: loading 'owner/dataset' split 'train' from the Hugging Face hub"
    ]
    assert "Retry" not in capfd.readouterr().err


def test_undecodable_files_are_skipped_and_counted(tmp_path, caplog):
    write_texts(tmp_path / "c", DOCS[:10])
    (tmp_path / "c" / "latin1.txt").write_bytes("caf\xe9 cr\xe8me\n".encode("latin-1") * 3)
    cache = prepare(data_cfg("text_files", path=str(tmp_path / "c"), on_decode_error="skip"))
    assert cache.meta["skipped_undecodable"] == 1 and cache.meta["replaced_undecodable"] == 0
    assert cache.meta["documents"]["train"] + cache.meta["documents"]["val"] >= 10
    assert "latin1.txt" in caplog.text and "not valid UTF-8" in caplog.text


def test_undecodable_files_are_replaced_or_refused_by_config(tmp_path):
    write_texts(tmp_path / "c", DOCS[:10])
    (tmp_path / "c" / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1") * 3)
    replaced = prepare(data_cfg("text_files", path=str(tmp_path / "c"), on_decode_error="replace"))
    assert replaced.meta["replaced_undecodable"] == 1
    tokens = np.concatenate([replaced.tokens("train"), replaced.tokens("val")]).tolist()
    assert "caf\ufffd" in replaced.tokenizer().decode(tokens)
    strict = data_cfg("text_files", path=str(tmp_path / "c"), on_decode_error="error", cache_dir=str(tmp_path / "s"))
    assert_refused(strict, r"latin1\.txt: not valid UTF-8 at byte 3; set data\.on_decode_error=skip", tmp_path / "s")


def test_only_undecodable_files_is_an_empty_corpus_that_says_why(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "a.txt").write_bytes(b"\xff\xfe broken")
    cfg = data_cfg("text_files", path=str(tmp_path / "c"))
    assert_refused(cfg, r"has no text \(1 file\(s\) skipped as not UTF-8, .*a\.txt; data\.on_decode_error=replace")


def test_a_vocab_too_small_for_the_byte_alphabet_is_refused(tmp_path):
    write_texts(tmp_path / "c", DOCS[:5])
    cfg = data_cfg("text_files", path=str(tmp_path / "c"), vocab_size=200)
    assert_refused(
        cfg,
        r"^data\.vocab_size must be an integer ≥ 257 \(the 256 byte symbols \+ 1 special tokens\), "
        r"got 200$",
    )


def test_a_missing_given_tokenizer_is_refused(tmp_path):
    write_texts(tmp_path / "c", DOCS[:5])
    cfg = data_cfg("text_files", path=str(tmp_path / "c"), tokenizer=str(tmp_path / "tok.json"))
    assert_refused(cfg, r"^data\.tokenizer: '.*tok\.json' does not exist \(give a tokenizer\.json, or null\)$")


def test_a_corpus_with_no_validation_text_fails_mid_build_and_leaves_the_cache_directory_as_it_was(tmp_path):
    write_texts(tmp_path / "good", DOCS)
    other = prepare(data_cfg("text_files", path=str(tmp_path / "good")))  # the cache directory holds another cache
    write_texts(tmp_path / "c", ["one single line without a newline"])
    cfg = data_cfg("text_files", path=str(tmp_path / "c"))
    assert_refused(
        cfg,
        r"^data: the corpus 'files-doc000' gives no validation text; add documents or lines .* raise "
        r"data\.val_fraction \(now 0\.05\)",
    )
    assert os.listdir(other.path.parent) == [other.path.name]  # no temporary directory or lock file left
    capped = data_cfg("text_files", path=str(tmp_path / "good"), max_bytes=10)  # enough text, but read 10 bytes of it
    assert_refused(capped, r"^data: .* no validation text; read more of it \(now data\.max_bytes=10\) or add")

    empty_cache_dir = tmp_path / "fresh"
    assert_refused(
        data_cfg("text_files", path=str(tmp_path / "c"), cache_dir=str(empty_cache_dir)),
        r"no validation text",
        empty_cache_dir,
    )


def test_a_missing_cache_is_refused_when_building_is_not_allowed(tmp_path):
    write_texts(tmp_path / "c", DOCS[:5])
    with pytest.raises(DataError, match=r"^data: the token cache .* is missing, incomplete or damaged \(it does not"):
        prepare(data_cfg("text_files", path=str(tmp_path / "c")), build_if_missing=False)


def test_a_cache_dir_that_cannot_be_made_or_a_file_that_cannot_be_read_is_one_line(tmp_path):
    from data.corpus import file_digest

    write_texts(tmp_path / "c", DOCS[:5])
    (tmp_path / "a-file").write_text("")
    blocked = tmp_path / "a-file" / "cache"  # under a file: no folder can be made there
    assert_refused(
        data_cfg("text_files", path=str(tmp_path / "c"), cache_dir=str(blocked)),
        rf"^data\.cache_dir: {blocked} cannot be written \(.+\); give a folder you can write, or set GPT_DATA_CACHE$",
        blocked,
    )
    with pytest.raises(DataError, match=rf"^{tmp_path / 'c'}: cannot be read \(Is a directory\)$"):
        file_digest(tmp_path / "c")


def test_a_vocab_too_large_for_the_trainer_is_refused(tmp_path):
    """5e9 used to abort inside the trainer's Rust (a failed memory allocation), leaving files behind."""
    write_texts(tmp_path / "c", DOCS[:5])
    cfg = data_cfg("text_files", path=str(tmp_path / "c"), vocab_size=2**24 + 1)
    assert_refused(cfg, r"^data\.vocab_size must be at most 16,777,216 \(2\*\*24; .*\), got 16777217$")
    with pytest.raises(DataError, match=r"^data\.vocab_size must be at most 16,777,216 .*, got 5000000000$"):
        check_vocab_size(5_000_000_000, ["<|endoftext|>"])
    check_vocab_size(2**24, ["<|endoftext|>"])


@pytest.mark.parametrize("value", ["[a,b]", "true", "{x:1}", "5"])
@pytest.mark.parametrize("option", ["text_files", "mixture"])
def test_a_cache_dir_that_is_not_a_path_is_refused_naming_the_key(option, value, monkeypatch):
    """Not made into a folder named after its Python repr ("['a', 'b']", "True"); a mixture's names data.cache_dir,
    not a source's key. An empty one is the default folder: GPT_DATA_CACHE exported empty, which the presets read."""
    overrides = [f"data={option}", f"data.cache_dir={value}"] + (["data.path=x"] if option == "text_files" else [])
    with pytest.raises(ConfigError, match=r"^data\.cache_dir must be null or a folder path, "):
        check_config(compose_config(overrides))
    check_config(compose_config([f"data={option}", "data.cache_dir=null"] + overrides[2:]))
    monkeypatch.setenv("GPT_DATA_CACHE", "")
    check_config(compose_config([f"data={option}"] + overrides[2:]))


def test_a_file_name_that_is_not_utf8_is_printable_in_every_message(tmp_path, caplog):
    """A name's undecodable bytes are surrogates in Python, which a log file or terminal cannot encode: they are
    written as \\xNN."""
    write_texts(tmp_path / "c", DOCS[:10])
    name = os.fsdecode(b"caf\xe9.txt")
    (tmp_path / "c" / name).write_bytes("caf\xe9\n".encode("latin-1"))
    prepare(data_cfg("text_files", path=str(tmp_path / "c")))
    (warning,) = [r.getMessage() for r in caplog.records if "not valid UTF-8" in r.getMessage()]
    assert "caf\\xe9.txt" in warning.encode("utf-8").decode()
    strict = data_cfg("text_files", path=str(tmp_path / "c"), on_decode_error="error", cache_dir=str(tmp_path / "s"))
    message = assert_refused(strict, r"caf\\xe9\.txt: not valid UTF-8 at byte 3", tmp_path / "s")
    message.encode("utf-8")
