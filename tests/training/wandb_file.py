"""Read the records of an offline W&B run file (``run-<id>.wandb``) — what ``wandb sync`` would upload.

The file is a 7-byte header (``:W&B``, magic 0xBEE1, version) followed by a LevelDB-style log: 32 KiB blocks of
records, each with a 7-byte header (crc32, length u16, type: 1 full, 2 first, 3 middle, 4 last) and a
protobuf ``wandb.proto.wandb_internal_pb2.Record`` as payload. W&B's internal format; used by tests only.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

BLOCK = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def run_files(root: Path) -> list[Path]:
    """The run files under ``root``, complete. W&B's service may still be writing a run's file after
    ``run.finish()`` returns (train.py's process exit waits for it); shutting W&B down here waits too."""
    import wandb

    wandb.teardown()
    return sorted(root.rglob("run-*.wandb"))


def records(path: Path) -> Iterator:
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B" and struct.unpack("<H", data[4:6])[0] == 0xBEE1, f"{path} is not a W&B run file"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        if BLOCK - pos % BLOCK < 7:  # no room for a record header: the rest of the block is padding
            pos += BLOCK - pos % BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:  # zero padding
            pos += BLOCK - pos % BLOCK
            continue
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == FULL:
            pending = chunk
        elif kind in (FIRST, MIDDLE):
            pending = (pending if kind == MIDDLE else b"") + chunk
            continue
        elif kind == LAST:
            pending += chunk
        record = wandb_internal_pb2.Record()
        record.ParseFromString(pending)
        pending = b""
        yield record


def history(path: Path) -> list[dict]:
    """Every logged step as a dict of metric → value (W&B's JSON-encoded values decoded)."""
    rows = []
    for r in records(path):
        if r.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item})
    return rows


def run_info(path: Path):
    """The run record: id, group, display name, job type, config."""
    for r in records(path):
        if r.WhichOneof("record_type") == "run":
            return r.run
    raise AssertionError(f"no run record in {path}")


def exit_code(path: Path) -> int | None:
    for r in records(path):
        if r.WhichOneof("record_type") == "exit":
            return r.exit.exit_code
    return None
