"""Read the records of an offline W&B run file (``run-<id>.wandb``) — what ``wandb sync`` would upload — with
the reader ``python -m scheduling.audit`` uses (``scheduling.audit.wandb_records``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path


def run_files(root: Path) -> list[Path]:
    """The run files under ``root``, complete. W&B's service may still be writing a run's file after
    ``run.finish()`` returns (train.py's process exit waits for it); shutting W&B down here waits too."""
    import wandb

    wandb.teardown()
    return sorted(root.rglob("run-*.wandb"))


def records(path: Path) -> Iterator:
    from scheduling.audit import wandb_records

    return wandb_records(path)


def history(path: Path) -> list[dict]:
    """Every logged step as a dict of metric → value (W&B's JSON-encoded values decoded)."""
    rows = []
    for r in records(path):
        if r.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item})
    return rows


def summary(path: Path) -> dict:
    """The run's summary as the file leaves it: each summary record's updates and removals, in order."""
    out: dict = {}
    for r in records(path):
        if r.WhichOneof("record_type") == "summary":
            for item in r.summary.update:
                out[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
            for item in r.summary.remove:
                out.pop(item.key or "/".join(item.nested_key), None)
    return out


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
