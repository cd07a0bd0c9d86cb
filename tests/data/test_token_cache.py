"""The token cache: reused while source and tokenizer are unchanged, rebuilt otherwise, never trusted half-made
or damaged, built once when several preparations race."""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import threading
import time

import numpy as np
import pytest

import data.cache
from data import DataError, TokenCache, atomic, prepare
from data.atomic import DiskFull
from data.cache import BUILDING, STALE_UNLOCKED_SECONDS, building, cache_path, remove_abandoned
from data.corpus import build_corpus
from tests.conftest import compose_config
from tests.data.corpora import DOCS, EOT, data_cfg, decoded_documents, write_texts


@pytest.fixture
def corpus_cfg(tmp_path):
    """A ``text_files`` config over 40 small documents."""
    write_texts(tmp_path / "c", DOCS)
    return data_cfg("text_files", path=str(tmp_path / "c"))


def test_cache_is_reused_when_source_and_tokenizer_are_unchanged(corpus_cfg, caplog):
    first = prepare(corpus_cfg)
    stamp = (first.path / "train.bin").stat().st_mtime_ns
    caplog.set_level("INFO", logger="data")
    again = prepare(corpus_cfg)
    assert again.path == first.path and (again.path / "train.bin").stat().st_mtime_ns == stamp
    assert "reusing" in caplog.text and "tokenizing" not in caplog.text
    meta = json.loads((first.path / "meta.json").read_text())
    assert meta["tokens"]["train"] == len(first.tokens("train")) and meta["source_fingerprint"]
    assert meta["bytes"]["train"] > meta["tokens"]["train"]


@pytest.mark.parametrize("fmt", ["txt", "jsonl"])
def test_the_same_files_spelled_by_another_path_reuse_the_cache(fmt, tmp_path, monkeypatch, caplog):
    from tests.data.corpora import write_tables

    if fmt == "txt":
        write_texts(tmp_path / "c", DOCS)
    else:
        write_tables(tmp_path / "c", [{"text": d} for d in DOCS], fmt)
    first = prepare(data_cfg("text_files", path=str(tmp_path / "c")))
    (tmp_path / "x").mkdir()
    monkeypatch.chdir(tmp_path)
    caplog.set_level("INFO", logger="data")
    for spelled in ("c", "./c/", str(tmp_path / "x" / ".." / "c")):
        assert prepare(data_cfg("text_files", path=spelled)).path == first.path
    assert "tokenizing" not in caplog.text


def test_two_dataset_folders_with_files_of_the_same_names_are_two_caches(tmp_path, monkeypatch):
    for name, docs in (("A", DOCS[:20]), ("B", DOCS[20:])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "train.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    monkeypatch.chdir(tmp_path)
    keys = [build_corpus(data_cfg("hub", name=n, data_files="train.jsonl")).fingerprint for n in ("A", "B")]
    assert keys[0] != keys[1]


def test_the_cache_directory_holds_only_the_complete_cache_after_preparing(corpus_cfg, local_caches):
    cache = prepare(corpus_cfg)
    assert os.listdir(local_caches) == [cache.path.name] and cache.path.name.startswith("files-c-")
    assert sorted(os.listdir(cache.path)) == ["meta.json", "tokenizer.json", "train.bin", "val.bin"]


def test_a_cache_no_window_of_the_run_fits_in_is_refused_before_it_is_kept(corpus_cfg, local_caches):
    with pytest.raises(DataError, match=r"^data: the train split has \d+ tokens, fewer than one window of model.bl"):
        prepare(corpus_cfg, window=10**6)
    assert not local_caches.exists() or os.listdir(local_caches) == []  # the run is refused: nothing left
    assert prepare(corpus_cfg, window=8).path.is_dir()  # one it fits in is kept


def test_cache_is_rebuilt_when_a_source_file_changes(tmp_path):
    paths = write_texts(tmp_path / "c", DOCS)
    cfg = data_cfg("text_files", path=str(tmp_path / "c"))
    first = prepare(cfg)
    paths[3].write_text(DOCS[3] + "an edit\n")
    second = prepare(cfg)
    assert second.path != first.path
    assert second.meta["source_fingerprint"] != first.meta["source_fingerprint"]
    assert DOCS[3] + "an edit\n" in decoded_documents(second, "train") + decoded_documents(second, "val")


@pytest.mark.parametrize("change", [{"vocab_size": 300}, {"special_tokens": [EOT, "<|sep|>"]}])
def test_cache_is_rebuilt_when_tokenizer_settings_change(corpus_cfg, change):
    first = prepare(corpus_cfg)
    second = prepare(data_cfg("text_files", path=corpus_cfg.path, **change))
    assert second.path != first.path
    assert second.meta["tokenizer_hash"] != first.meta["tokenizer_hash"]
    assert second.meta["source_fingerprint"] == first.meta["source_fingerprint"]


def test_a_damaged_cache_is_not_trusted_and_is_rebuilt(corpus_cfg):
    good = prepare(corpus_cfg)
    expect = np.array(good.tokens("train"))
    with open(good.path / "train.bin", "r+b") as fh:
        fh.truncate(10)
    assert TokenCache.open(good.path) is None
    rebuilt = prepare(corpus_cfg)
    assert rebuilt.path == good.path and np.array_equal(rebuilt.tokens("train"), expect)
    (good.path / "meta.json").write_text("null")  # JSON, but not the object a cache records
    assert TokenCache.open(good.path) is None
    (good.path / "meta.json").write_text("[" * 100_000 + "]" * 100_000)  # nested deeper than the parser recurses
    assert TokenCache.open(good.path) is None
    assert np.array_equal(prepare(corpus_cfg).tokens("train"), expect)


@pytest.mark.parametrize("field,value", [("vocab_size", 60000), ("eot_id", 5), ("dtype", "int16")])
def test_a_meta_json_that_disagrees_with_its_tokenizer_is_not_trusted(corpus_cfg, field, value):
    good = prepare(corpus_cfg)
    meta = json.loads((good.path / "meta.json").read_text())
    (good.path / "meta.json").write_text(json.dumps({**meta, field: value}))
    assert TokenCache.open(good.path) is None
    assert prepare(corpus_cfg).meta[field] == meta[field]  # rebuilt


def test_a_documents_own_separator_text_is_text_and_each_document_is_followed_by_one_separator(tmp_path):
    docs = [f"{EOT} begins this one.\n", f"the tokenizer's {EOT} marks the end\n", f"and a {EOT}{EOT} pair\n"]
    write_texts(tmp_path / "c", docs + DOCS)
    cache = prepare(data_cfg("text_files", path=str(tmp_path / "c")))
    tokens = np.concatenate([cache.tokens(split) for split in ("train", "val")])
    assert (tokens == cache.eot_id).sum() == len(docs + DOCS)
    assert sorted(decoded_documents(cache, "train") + decoded_documents(cache, "val")) == sorted(docs + DOCS)


def test_cache_dir_comes_from_the_environment_by_default(tmp_path, monkeypatch):
    monkeypatch.setenv("GPT_DATA_CACHE", str(tmp_path / "env-cache"))
    assert compose_config().data.cache_dir == str(tmp_path / "env-cache")
    write_texts(tmp_path / "c", DOCS[:6])
    cfg = {"source": "text_files", "path": str(tmp_path / "c"), "vocab_size": 300}  # the Python API, no Hydra
    assert prepare(cfg).path.parent == tmp_path / "env-cache"


def test_a_killed_preparation_is_never_trusted_and_the_next_one_cleans_up_and_rebuilds(corpus_cfg, caplog):
    """What a preparation killed mid-write leaves: a temporary directory with partial token files and a lock file
    that nobody holds any more (the kernel drops a dead process's locks)."""
    final = cache_path(corpus_cfg, build_corpus(corpus_cfg))
    partial = atomic.begin(final.parent, final.name)
    (partial / BUILDING).touch()
    (partial / "tokenizer.json").write_text("{}")
    (partial / "train.bin").write_bytes(b"\x01\x00" * 100)
    assert TokenCache.open(partial) is None and not final.exists()

    caplog.set_level("INFO", logger="data")
    cache = prepare(corpus_cfg)
    assert cache.path == final and TokenCache.open(final) is not None
    assert "abandoned" in caplog.text and not partial.exists()
    assert os.listdir(final.parent) == [final.name]


def test_a_live_build_is_not_taken_for_abandoned(tmp_path):
    """Another cache's build: locked, or younger than a build takes to lock it, it is live; this cache's own
    (its build lock is held) and old unlocked ones are dead."""
    live = atomic.begin(tmp_path, "files-x-0123")
    dead = atomic.begin(tmp_path, "files-y-4567")
    (dead / BUILDING).touch()
    locking = atomic.begin(tmp_path, "files-z-89ab")  # its builder between creating the lock file and locking it
    (locking / BUILDING).touch()
    own = atomic.begin(tmp_path, "files-w-cdef")
    (own / BUILDING).touch()
    long_ago = time.time() - 2 * STALE_UNLOCKED_SECONDS
    with building(live):  # a lock held on another open file conflicts, as another process's would
        for old in (live, dead):
            os.utime(old, (long_ago, long_ago))
        remove_abandoned(tmp_path / "files-w-cdef")
        assert live.is_dir() and (live / BUILDING).exists()
    assert not dead.exists() and not own.exists() and locking.is_dir()
    assert live.is_dir() and not (live / BUILDING).exists()  # a finished build drops its lock file


def test_where_the_filesystem_has_no_locks_no_build_with_a_lock_file_is_taken_for_abandoned(tmp_path, monkeypatch):
    """NFS without lockd: the build lock is no lock, so this cache's own folder may be another process's live build."""
    import fcntl

    own = atomic.begin(tmp_path, "files-w-cdef")
    (own / BUILDING).touch()

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    remove_abandoned(tmp_path / "files-w-cdef")
    assert own.is_dir()


def test_concurrent_preparations_of_one_cache_build_it_once(corpus_cfg, local_caches, monkeypatch, caplog):
    """Two threads prepare the same cache; whichever builds first waits inside the build until the other is
    blocked on the lock, so the other must find the cache complete when it gets the lock."""
    other_waits = threading.Event()

    class Watch(logging.Handler):
        def emit(self, record):
            if "waiting for it" in record.getMessage():
                other_waits.set()

    builds = []
    real_build = data.cache.build

    def build(*args, **kwargs):
        builds.append(threading.current_thread().name)
        assert other_waits.wait(60), "the second preparation never waited on the lock"
        return real_build(*args, **kwargs)

    monkeypatch.setattr(data.cache, "build", build)
    caplog.set_level("INFO", logger="data")
    watch = Watch()
    logging.getLogger("data").addHandler(watch)
    results = []
    try:
        threads = [threading.Thread(target=lambda: results.append(prepare(corpus_cfg))) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        logging.getLogger("data").removeHandler(watch)
    assert len(results) == 2 and len(builds) == 1
    assert results[0].path == results[1].path and results[0].meta == results[1].meta
    assert os.listdir(local_caches) == [results[0].path.name]  # the lock file is gone too


def test_one_waiting_on_the_lock_and_one_arriving_as_its_holder_leaves_are_never_inside_together(tmp_path, caplog):
    """The holder removes the lock file as it leaves: the one that waited holds the removed file's lock, and a
    newcomer creates and locks a new file at the path; each checks it locked the file now at the path."""
    final, inside, overlaps = tmp_path / "cache", set(), []
    b_waits, c_inside = threading.Event(), threading.Event()

    class Watch(logging.Handler):
        def emit(self, record):
            if "waiting for it" in record.getMessage():
                b_waits.set()

    def enter(name: str, stay: threading.Event | None = None) -> None:
        with data.cache.build_lock(final):
            overlaps.extend(sorted(inside))
            inside.add(name)
            if name == "C":
                c_inside.set()
            elif stay is not None:
                stay.wait(1)  # long enough for C to get in, were the lock not exclusive
            inside.discard(name)

    caplog.set_level("INFO", logger="data")
    watch = Watch()
    logging.getLogger("data").addHandler(watch)
    try:
        with data.cache.build_lock(final):  # A
            b = threading.Thread(target=enter, args=("B", c_inside))
            b.start()
            assert b_waits.wait(60), "B never waited on the lock"
        c = threading.Thread(target=enter, args=("C",))
        c.start()
        for t in (b, c):
            t.join(60)
    finally:
        logging.getLogger("data").removeHandler(watch)
    assert overlaps == [] and not list(tmp_path.iterdir())  # and the lock file is gone


def test_a_cache_another_process_finished_first_is_kept(corpus_cfg, local_caches, monkeypatch):
    """Without a shared lock two builders can both finish; the second one's commit finds the cache in place
    and keeps it."""
    real_commit = atomic.commit

    def commit(tmp, final, *, replace=True):
        shutil.copytree(tmp, final)  # the other process renames its identical cache into place first
        (final / "meta.json").write_text(json.dumps({**json.loads((tmp / "meta.json").read_text()), "mark": 1}))
        return real_commit(tmp, final, replace=replace)

    monkeypatch.setattr(atomic, "commit", commit)
    cache = prepare(corpus_cfg)
    assert cache.meta["mark"] == 1  # theirs
    assert os.listdir(local_caches) == [cache.path.name]


def test_bytes_overwritten_in_place_are_found_on_reuse_and_the_cache_is_rebuilt(corpus_cfg, caplog):
    """Same size, other bytes (0xff: token 65535 in a vocabulary of 300): the checksums recorded at build time
    catch it; the cache is refused in one line where it may not be rebuilt, else rebuilt."""
    good = prepare(corpus_cfg)
    expect = np.array(good.tokens("train"))
    with open(good.path / "train.bin", "r+b") as fh:
        fh.seek(40)
        fh.write(b"\xff" * 100)
    assert (good.path / "train.bin").stat().st_size == expect.nbytes and TokenCache.open(good.path) is None
    size = f"{expect.nbytes:,}"
    why = rf"\(train.bin bytes 0–{size} are not those it was built with \(crc32\)\)"
    where = re.escape(str(good.path))
    with pytest.raises(DataError, match=rf"^data: the token cache {where} is missing, incomplete or damaged {why}$"):
        prepare(corpus_cfg, build_if_missing=False)
    caplog.set_level("INFO", logger="data")
    rebuilt = prepare(corpus_cfg)
    assert re.search(rf"the token cache {where} is damaged {why}; rebuilding it", caplog.text)
    assert rebuilt.path == good.path and np.array_equal(rebuilt.tokens("train"), expect)


def test_a_full_disk_while_tokenizing_names_the_cache_and_leaves_nothing(corpus_cfg, local_caches, monkeypatch):
    def out_of_space(tok, documents, eot, dtype, out_dir, given=None):
        (out_dir / "train.bin").write_bytes(bytes(5000))  # what fitted
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(data.cache, "encode_corpus", out_of_space)
    with pytest.raises(DiskFull) as err:
        prepare(corpus_cfg)
    final = cache_path(corpus_cfg, build_corpus(corpus_cfg))
    assert str(err.value).startswith(f"no space left to write {final}: it needs more than ")
    assert str(err.value).endswith(
        "; free space there, or point data.cache_dir (or $GPT_DATA_CACHE) at a filesystem with room"
    )
    assert err.value.needed > 5000 and "\n" not in str(err.value)
    assert not local_caches.exists() or os.listdir(local_caches) == []


def test_a_dataset_folders_data_files_are_hashed_where_datasets_reads_them(tmp_path, monkeypatch):
    """``data_files`` relative to the dataset folder (as datasets resolves them), run from another directory: an
    edit to a file it names, or a new file its glob matches, builds a new cache holding the change."""
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "part0.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS[:20]))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    cfg = data_cfg("hub", name=str(folder), data_files="*.jsonl")
    first = prepare(cfg)
    assert prepare(cfg).path == first.path  # unchanged: reused

    edit = "an edited row, naïve and new\n"
    (folder / "part0.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in [edit, *DOCS[1:20]]))
    edited = prepare(cfg)
    assert edited.path != first.path
    assert edit in decoded_documents(edited, "train") + decoded_documents(edited, "val")

    added = "a row of a file added to the folder\n"
    (folder / "part1.jsonl").write_text(json.dumps({"text": added}) + "\n")
    grown = prepare(cfg)
    assert grown.path not in (first.path, edited.path)
    assert added in decoded_documents(grown, "train") + decoded_documents(grown, "val")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full, a device every write to fails ENOSPC")
def test_a_full_disk_while_writing_the_token_files_names_the_cache_and_leaves_nothing(
    corpus_cfg, local_caches, monkeypatch
):
    """The token files lead to /dev/full, where every write fails as on a full disk: one line, not numpy's
    "N requested and M written", which carries no errno."""
    real_begin = atomic.begin

    def begin(parent, name):
        tmp = real_begin(parent, name)
        for split in ("train", "val"):
            (tmp / f"{split}.bin").symlink_to("/dev/full")
        return tmp

    monkeypatch.setattr(atomic, "begin", begin)
    with pytest.raises(DiskFull) as err:
        prepare(corpus_cfg)
    final = cache_path(corpus_cfg, build_corpus(corpus_cfg))
    assert str(err.value).startswith(f"no space left to write {final}: it needs more than ")
    assert "\n" not in str(err.value) and err.value.errno == errno.ENOSPC
    assert not local_caches.exists()  # nor the cache directory this call made
