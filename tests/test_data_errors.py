"""Bad data input: one actionable line (ConfigError), nothing left behind; a killed preparation is never trusted."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from data import TrainBatches, ValBatches, prepare
from data.cache import TokenCache, cache_path
from data.corpus import build_corpus
from data.tokenizer import train_tokenizer
from tests.conftest import ROOT, TINY, run_train
from tests.test_data import DOCS, data_cfg, write_tables, write_texts
from training.errors import ConfigError


def assert_refused(cfg, cache_dir: Path, *phrases: str) -> str:
    """prepare() raises a one-line ConfigError naming ``phrases`` and creates no cache or temporary directory."""
    with pytest.raises(ConfigError) as info:
        prepare(cfg)
    message = str(info.value)
    assert "\n" not in message
    for phrase in phrases:
        assert phrase in message, message
    assert not cache_dir.exists(), sorted(p.name for p in cache_dir.iterdir())
    return message


def test_a_missing_path_is_refused(tmp_path):
    cfg = data_cfg("text_files", tmp_path / "cache", path=str(tmp_path / "nowhere"))
    assert_refused(cfg, tmp_path / "cache", "data.path", "does not exist", str(tmp_path / "nowhere"))


def test_a_glob_matching_no_file_is_refused(tmp_path):
    write_texts(tmp_path / "c", DOCS[:3])
    cfg = data_cfg("text_files", tmp_path / "cache", path=str(tmp_path / "c" / "*.md"))
    assert_refused(cfg, tmp_path / "cache", "data.path", "no file matches")


def test_an_empty_corpus_is_refused(tmp_path):
    write_texts(tmp_path / "c", ["", "", ""])
    cfg = data_cfg("text_files", tmp_path / "cache", path=str(tmp_path / "c"))
    assert_refused(cfg, tmp_path / "cache", "no text")


def test_a_corpus_shorter_than_one_block_is_refused_when_batches_are_built(tmp_path):
    write_texts(tmp_path / "c", ["tiny text\nin two lines\n", "more tiny\ntext\n", "and a bit\nmore\n"])
    cache = prepare(data_cfg("text_files", tmp_path / "cache", path=str(tmp_path / "c"), val_fraction=0.5))
    for make in (lambda: TrainBatches(cache.tokens("train"), 64, 4), lambda: ValBatches(cache.tokens("val"), 64, 4, 2)):
        with pytest.raises(ConfigError, match=r"fewer than one window of model\.block_size \+ 1 = 65"):
            make()


@pytest.mark.parametrize("streaming", [True, False])
def test_a_missing_text_column_is_refused(tmp_path, monkeypatch, streaming):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf"))
    write_tables(tmp_path / "t", [{"body": d} for d in DOCS], "jsonl")
    cfg = data_cfg("text_files", tmp_path / "cache", path=str(tmp_path / "t"), streaming=streaming)
    assert_refused(cfg, tmp_path / "cache", "data.text_column", "'text'", "body")
    hub = data_cfg("hub", tmp_path / "cache", name=str(tmp_path / "t"), text_column="content", streaming=streaming)
    assert_refused(hub, tmp_path / "cache", "data.text_column", "'content'", "body")


@pytest.mark.parametrize("streaming", [True, False])
def test_a_table_that_does_not_parse_is_refused(tmp_path, monkeypatch, streaming):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf"))
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "rows.jsonl").write_text('{"text": "a fine row"}\n{"text": oops}\n')
    cfg = data_cfg("text_files", tmp_path / "cache", path=str(tmp_path / "t"), streaming=streaming)
    assert_refused(cfg, tmp_path / "cache", "rows.jsonl", "data: cannot")


def test_undecodable_files_are_skipped_and_counted(tmp_path, caplog):
    write_texts(tmp_path / "c", DOCS[:10])
    (tmp_path / "c" / "latin1.txt").write_bytes("caf\xe9 cr\xe8me\n".encode("latin-1") * 3)
    cache = prepare(data_cfg("text_files", tmp_path / "cache", path=str(tmp_path / "c"), on_decode_error="skip"))
    assert cache.meta["skipped_undecodable"] == 1 and cache.meta["replaced_undecodable"] == 0
    assert cache.meta["documents"]["train"] + cache.meta["documents"]["val"] >= 10
    assert "latin1.txt" in caplog.text and "not valid UTF-8" in caplog.text


def test_undecodable_files_are_replaced_or_refused_by_config(tmp_path):
    write_texts(tmp_path / "c", DOCS[:10])
    (tmp_path / "c" / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1") * 3)
    replaced = prepare(data_cfg("text_files", tmp_path / "cache", path=str(tmp_path / "c"), on_decode_error="replace"))
    assert replaced.meta["replaced_undecodable"] == 1
    assert "caf\ufffd" in replaced.tokenizer().decode(
        np.asarray(replaced.tokens("train")).tolist() + list(replaced.tokens("val"))
    )
    strict = data_cfg("text_files", tmp_path / "strict", path=str(tmp_path / "c"), on_decode_error="error")
    assert_refused(strict, tmp_path / "strict", "latin1.txt", "not valid UTF-8", "data.on_decode_error")


def test_only_undecodable_files_is_an_empty_corpus_that_says_why(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "a.txt").write_bytes(b"\xff\xfe broken")
    cfg = data_cfg("text_files", tmp_path / "cache", path=str(tmp_path / "c"))
    assert_refused(cfg, tmp_path / "cache", "no text", "1 file(s) skipped as not UTF-8", "on_decode_error=replace")


def test_a_vocab_too_small_for_the_byte_alphabet_is_refused(tmp_path):
    write_texts(tmp_path / "c", DOCS[:5])
    cfg = data_cfg("text_files", tmp_path / "cache", path=str(tmp_path / "c"), vocab_size=200)
    assert_refused(cfg, tmp_path / "cache", "data.vocab_size", "≥ 257", "200")


def test_a_missing_given_tokenizer_is_refused(tmp_path):
    write_texts(tmp_path / "c", DOCS[:5])
    cfg = data_cfg("text_files", tmp_path / "cache", path=str(tmp_path / "c"), tokenizer=str(tmp_path / "tok.json"))
    assert_refused(cfg, tmp_path / "cache", "data.tokenizer", "does not exist")


def test_a_corpus_with_no_validation_text_is_refused_and_leaves_nothing(tmp_path):
    write_texts(tmp_path / "c", ["one single line without a newline"])
    cfg = data_cfg("text_files", tmp_path / "cache", path=str(tmp_path / "c"))
    assert_refused(cfg, tmp_path / "cache", "no validation text", "data.val_fraction")


# ---- a killed preparation ---------------------------------------------------------------------------------

PREPARE_SCRIPT = """
import json, sys
sys.path.insert(0, {root!r})
import data.cache
data.cache.ENCODE_BATCH_CHARS = 20_000  # many small writes, so the kill lands in the middle of them
data.cache.prepare(json.loads({cfg!r}))
"""


def test_a_preparation_killed_mid_write_is_never_trusted_and_the_next_one_rebuilds(tmp_path, caplog):
    """SIGKILL a real process while it writes the token files; the next prepare() builds a complete cache."""
    write_texts(tmp_path / "c", [doc * 20 for doc in DOCS] * 4)  # ~1 MB
    train_tokenizer(DOCS, 300, ["<|endoftext|>"]).save(str(tmp_path / "tokenizer.json"))
    cache_dir = tmp_path / "cache"
    cfg = {"source": "text_files", "path": str(tmp_path / "c"), "cache_dir": str(cache_dir),
           "tokenizer": str(tmp_path / "tokenizer.json")}  # fmt: skip
    script = textwrap.dedent(PREPARE_SCRIPT.format(root=str(ROOT), cfg=json.dumps(cfg)))
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        partial = None
        while partial is None and time.monotonic() < deadline and proc.poll() is None:
            partial = next((p for p in cache_dir.glob(".tmp-*/train.bin") if p.stat().st_size > 0), None)
            time.sleep(0.002)
        assert partial is not None, f"the preparation ended ({proc.returncode}) before it was caught writing"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    final = cache_path(cfg, build_corpus(cfg))
    assert partial.parent.is_dir() and not final.exists()  # half-written files only under a temporary name
    assert not (partial.parent / "meta.json").exists() and TokenCache.open(partial.parent) is None

    caplog.set_level("INFO", logger="data.cache")
    cache = prepare(cfg)
    assert cache.path == final and "tokenizing" in caplog.text and "abandoned" in caplog.text
    assert not partial.parent.exists() and not list(cache_dir.glob(".tmp-*"))
    assert TokenCache.open(final) is not None
    assert cache.meta["documents"]["train"] + cache.meta["documents"]["val"] == len(DOCS) * 4


# ---- end to end: python train.py ---------------------------------------------------------------------------


def assert_one_error_line(proc: subprocess.CompletedProcess, *phrases: str) -> None:
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


def test_train_py_with_a_missing_path_exits_2_with_one_line(tmp_path):
    run, cache = tmp_path / "run", tmp_path / "cache"
    args = TINY + ["data=text_files", f"data.path={tmp_path / 'missing'}"]
    proc = run_train(args, run, cache, check=False)
    assert_one_error_line(proc, "data.path", "does not exist")
    assert not run.exists() and not cache.exists()


def test_train_py_with_an_unreachable_hub_dataset_exits_2_with_one_line(tmp_path):
    run, cache = tmp_path / "run", tmp_path / "cache"
    args = TINY + ["data=hub", "data.name=no-such-owner/no-such-dataset"]
    proc = run_train(args, run, cache, check=False, env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    assert_one_error_line(proc, "no-such-owner/no-such-dataset", "HF_HUB_OFFLINE")
    assert not run.exists() and not cache.exists()
