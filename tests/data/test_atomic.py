"""data.atomic: a directory or file appears complete under its final name, or the previous one stays."""

from __future__ import annotations

import os

import pytest

from data import atomic


def filled(parent, name: str, files: dict[str, str]):
    tmp = atomic.begin(parent, name)
    for rel, text in files.items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        atomic.write_file(tmp / rel, text)
    return tmp


def test_begin_makes_a_temporary_directory_beside_the_final_one(tmp_path):
    tmp = atomic.begin(tmp_path / "a" / "b", "step-1")
    assert tmp.is_dir() and tmp.parent == tmp_path / "a" / "b" and not any(tmp.iterdir())
    assert tmp.name.startswith(f".tmp-step-1-{os.getpid()}-")
    assert atomic.begin(tmp_path / "a" / "b", "step-1") != tmp  # each call its own


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_a_committed_directory_has_the_permissions_mkdir_gives_under_the_umask(mask, tmp_path):
    before = os.umask(mask)
    try:
        final = atomic.commit(filled(tmp_path, "out", {"a.txt": "A"}), tmp_path / "out")
        made = tmp_path / "made"
        made.mkdir()
    finally:
        os.umask(before)
    assert final.stat().st_mode & 0o777 == made.stat().st_mode & 0o777 == 0o777 & ~mask


def test_commit_renames_the_complete_directory_into_place(tmp_path):
    tmp = filled(tmp_path, "out", {"a.txt": "A", "sub/b.bin": "B"})
    final = atomic.commit(tmp, tmp_path / "out")
    assert final == tmp_path / "out" and not tmp.exists()
    assert (final / "a.txt").read_text() == "A" and (final / "sub" / "b.bin").read_text() == "B"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_commit_replaces_an_existing_directory_whole(tmp_path):
    atomic.commit(filled(tmp_path, "out", {"old.txt": "1", "kept.txt": "1"}), tmp_path / "out")
    atomic.commit(filled(tmp_path, "out", {"kept.txt": "2"}), tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["kept.txt"]
    assert (tmp_path / "out" / "kept.txt").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no .tmp-* or .old-* left


def test_commit_without_replace_refuses_an_existing_directory_and_drops_its_own(tmp_path):
    atomic.commit(filled(tmp_path, "out", {"a.txt": "theirs"}), tmp_path / "out")
    tmp = filled(tmp_path, "out", {"a.txt": "ours"})
    with pytest.raises(FileExistsError):
        atomic.commit(tmp, tmp_path / "out", replace=False)
    assert (tmp_path / "out" / "a.txt").read_text() == "theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_failed_swap_puts_the_previous_directory_back(tmp_path, monkeypatch):
    atomic.commit(filled(tmp_path, "out", {"a.txt": "previous"}), tmp_path / "out")
    tmp = filled(tmp_path, "out", {"a.txt": "new"})
    real_rename = os.rename

    def rename(src, dst):
        if src == tmp:
            raise OSError("disk full")
        real_rename(src, dst)

    monkeypatch.setattr(atomic.os, "rename", rename)
    with pytest.raises(OSError, match="disk full"):
        atomic.commit(tmp, tmp_path / "out")
    assert (tmp_path / "out" / "a.txt").read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_replace_file_swaps_the_content_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "latest"
    atomic.replace_file(target, "step-1\n")
    atomic.replace_file(target, b"step-2\n")
    assert target.read_text() == "step-2\n" and [p.name for p in tmp_path.iterdir()] == ["latest"]


def test_a_failed_replace_file_keeps_the_old_content(tmp_path, monkeypatch):
    target = tmp_path / "latest"
    atomic.replace_file(target, "step-1\n")

    def replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", replace)
    with pytest.raises(OSError, match="disk full"):
        atomic.replace_file(target, "step-2\n")
    assert target.read_text() == "step-1\n" and [p.name for p in tmp_path.iterdir()] == ["latest"]


def test_fsync_dir_is_best_effort(tmp_path):
    atomic.fsync_dir(tmp_path)
    atomic.fsync_dir(tmp_path / "missing")  # nothing to flush, nothing raised


def test_what_a_killed_replacement_set_aside_is_put_back_but_not_a_live_ones(tmp_path):
    import subprocess

    gone = subprocess.Popen(["true"])
    gone.wait()
    (tmp_path / f".old-killed-{gone.pid}").mkdir()  # its process died between the two renames
    (tmp_path / f".old-busy-{os.getpid()}").mkdir()  # a live process in the middle of its commit
    (tmp_path / "done").mkdir()
    (tmp_path / f".old-done-{gone.pid}").mkdir()  # the new one made it: the old one is the cleanup's
    assert atomic.restore_set_aside(tmp_path) == [tmp_path / "killed"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f".old-busy-{os.getpid()}",
        f".old-done-{gone.pid}",
        "done",
        "killed",
    ]
