"""A full disk while a run writes (a checkpoint, metrics, plots) ends with one line naming the path and the bytes
needed or free, and the last complete checkpoint stays the latest, loadable, with nothing partial beside it.

The disk fills by injection: the write path's ``open`` hands out files whose writes fail with ENOSPC once the
bytes left are spent, as the kernel's do (``unshare -rm`` with a small tmpfs does the same where it is allowed;
docs/runs.md shows that run)."""

from __future__ import annotations

import builtins
import errno
import fcntl
import json
import os

import pytest

from data.atomic import DiskFull
from training import checkpoint
from training.loggers import JsonlSink
from training.run_lock import LOCK_FILE


class FillingFile:
    """A file on a filesystem with ``room[0]`` bytes left: a write past them fails with ENOSPC, and its bytes stay
    buffered, so closing the file tries them again and fails too (as Python's buffered files do)."""

    def __init__(self, fh, room: list[int]):
        self.fh, self.room, self.pending = fh, room, 0

    def write(self, data) -> int:
        size = len(data.encode() if isinstance(data, str) else data)
        if size > self.room[0]:
            self.pending += size
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room[0] -= size
        return self.fh.write(data)

    def close(self) -> None:
        self.fh.close()
        if self.pending > self.room[0]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self.fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.fh.close()


def filling_open(room: list[int], after_opens: int = 0):
    """``open`` whose files for writing fill up (see FillingFile) from the ``after_opens``-th one on."""
    opened = [0]

    def fake_open(path, mode="r", *args, **kwargs):
        fh = builtins.open(path, mode, *args, **kwargs)
        if not any(c in mode for c in "wa"):
            return fh
        opened[0] += 1
        return FillingFile(fh, room) if opened[0] > after_opens else fh

    return fake_open


def test_a_full_disk_during_a_checkpoint_keeps_the_last_one_latest_and_leaves_nothing_partial(
    tmp_path, tiny_train, monkeypatch
):
    run = tmp_path / "run"
    monkeypatch.setattr(checkpoint, "open", filling_open([20_000], after_opens=1), raising=False)
    with pytest.raises(DiskFull) as err:  # the first checkpoint (update 2) fits; the final one (4) does not
        tiny_train(run, ["trainer.max_steps=4", "trainer.ckpt_every=2", "trainer.eval_every=0"])
    root = run / "checkpoints"
    message = str(err.value)
    assert message.startswith(f"no space left to write {root}/step-00000004: it needs ") and "\n" not in message
    assert f"are free there; the latest complete checkpoint, {root}/step-00000002, is kept" in message
    kept = root / "step-00000002"
    written = sum(f.stat().st_size for f in kept.iterdir())
    assert 0.8 * written < err.value.needed < 1.2 * written  # what a checkpoint of this run takes
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-00000002"]
    assert checkpoint.latest(root) == kept and checkpoint.load(kept)["step"] == 2
    assert sorted(
        r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "train/loss" in r
    ) == [0, 1, 2, 3]
    fd = os.open(run / LOCK_FILE, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the failed run released its directory
    os.close(fd)


def test_a_full_disk_while_logging_metrics_names_the_file_and_the_bytes_of_the_record(tmp_path, monkeypatch):
    import training.loggers

    monkeypatch.setattr(training.loggers, "open", filling_open([300]), raising=False)
    sink = JsonlSink(tmp_path / "metrics.jsonl")
    sink.log(0, {"train/loss": 5.25, "train/lr": 1e-3})
    record = {"train/loss": 5.0, "train/lr": 1e-3, "train/grad_norm": 0.5, "train/tokens_per_sec": 12345.6}
    with pytest.raises(DiskFull) as err:
        for step in range(1, 10):
            sink.log(step, record)
    line = json.dumps({"step": step, **record}) + "\n"
    assert err.value.needed == len(line)
    assert str(err.value).startswith(f"no space left to write {tmp_path}/metrics.jsonl: it needs {len(line)} bytes; ")
    sink.close()  # what the failed write left buffered is lost without a second report, which would hide the first
    assert [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == list(range(step))


def test_a_full_disk_while_plotting_names_the_plots(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from training.plots import write_run_plots

    rows = [{"step": t, "train/loss": 5 - t / 10, "train/lr": 1e-3} for t in range(20)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    def out_of_space(self, fname, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Figure, "savefig", out_of_space)
    free = r"[\d.]+ [kMG]B \([\d,]+ bytes\) are free there$"
    with pytest.raises(DiskFull, match=rf"^no space left to write {tmp_path}/plots: {free}"):
        write_run_plots(tmp_path)
