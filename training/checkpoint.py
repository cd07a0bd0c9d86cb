"""Checkpoints: one folder per saved step, written atomically, plus a pointer to the latest complete one.

``checkpoints/step-00000100/`` holds ``state.pt`` (model, optimizer, scheduler, counters, RNG states, config,
the metric sinks' state — tensors and plain Python values only, loaded with ``torch.load(weights_only=True)``) and
``tokenizer.json``. A folder is assembled under ``checkpoints/.tmp-*``, every file fsynced, then renamed into
place; ``checkpoints/latest`` (the folder's name) is replaced last. A process killed at any moment leaves the
previous checkpoint and pointer intact; leftover ``.tmp-*`` folders are ignored and cleaned up later.

``checksums.json`` records each file's size and crc32 (per 64 MiB), written before the folder is renamed into
place. Every load checks them first: a file changed in place or truncated since is refused in one line naming
it, and a resume falls back to the newest earlier checkpoint that is intact. A folder from before checksums
(no checksums.json) loads unchecked, with a warning.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data.atomic import (
    CHECKSUM_CHUNK_BYTES,
    begin,
    commit,
    file_checksums,
    replace_file,
    restore_set_aside,
    size_text,
    space_for,
)
from model import TOKENIZER_KEYS, TRAINING_ONLY, GPTConfig
from scheduling.spec import CONFIG_KEYS, first_line
from training import distributed
from training.config import ConfigError, is_int

log = logging.getLogger("train")

STATE_FILE = "state.pt"
CHECKSUMS = "checksums.json"
LATEST = "latest"
STEP_DIR = re.compile(r"^step-(\d{8,})$")


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


def save(
    root: Path,
    step: int,
    state: dict[str, Any],
    files: dict[str, str | bytes],
    keep: int = 0,
    tmp: Path | None = None,
    keep_every: int = 0,
    stale: frozenset[int] = frozenset(),
) -> Path:
    """Write checkpoint ``step`` under ``root`` atomically (into ``tmp`` if the sharded state is already there),
    point ``latest`` at it, then ``prune`` to the newest ``keep`` (and the newest at a multiple of ``keep_every``),
    ``stale`` ones left out of the count.
    Out of space, nothing of it is left and ``latest`` still names the previous checkpoint: ``DiskFull`` says how
    much it needed."""
    needed = state_bytes(state) + sum(len(data) for data in files.values())
    previous = latest(root)
    kept = f"the latest complete checkpoint, {previous}, is kept" if previous else "no checkpoint was written"
    with space_for(
        root / step_dir_name(step),
        needed,
        f"{kept}; free space (or lower trainer.keep_checkpoints) and re-run the same command to resume",
    ):
        tmp = tmp or begin(root, step_dir_name(step))
        try:
            with open(tmp / STATE_FILE, "wb") as fh:  # through a Python file, a full disk raises ENOSPC, not
                torch.save(state, fh)  # torch's "unexpected pos"
            for name, data in files.items():
                (tmp / name).write_bytes(data.encode() if isinstance(data, str) else data)
            write_checksums(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        final = commit(tmp, root / step_dir_name(step))  # fsyncs every file, then renames into place
        replace_file(root / LATEST, final.name + "\n")
    if keep > 0:
        prune(root, keep, step, keep_every, stale)
    return final


def write_checksums(folder: Path) -> None:
    """``checksums.json`` in ``folder``: the size and the crc32 of each 64 MiB of every file under it (an FSDP
    run's shards too). crc32 catches accidental damage (a bad disk, a partial copy), which is what it is for."""
    files = {
        path.relative_to(folder).as_posix(): {"bytes": path.stat().st_size, "crc32": file_checksums(path)}
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != CHECKSUMS
    }
    record = {"algorithm": "crc32", "chunk_bytes": CHECKSUM_CHUNK_BYTES, "files": files}
    (folder / CHECKSUMS).write_text(json.dumps(record, indent=1) + "\n")


def read_checksums(record_file: Path) -> tuple[dict[str, dict], int]:
    """The files a checksums.json records (name → {"bytes", "crc32"}) and its chunk size; a ValueError when it
    is not the record ``write_checksums`` writes (it must list state.pt, each file with a crc32 per chunk)."""
    record = json.loads(record_file.read_text())
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    files, chunk_bytes = record.get("files"), record.get("chunk_bytes")
    if not is_int(chunk_bytes) or chunk_bytes <= 0:
        raise ValueError(f"chunk_bytes is {chunk_bytes!r}, not a positive integer")
    if not isinstance(files, dict) or STATE_FILE not in files:
        raise ValueError(f"its files do not list {STATE_FILE}")
    for name, saved in files.items():
        size = saved.get("bytes") if isinstance(saved, dict) else None
        crcs = saved.get("crc32") if isinstance(saved, dict) else None
        if not isinstance(size, int) or size < 0 or not isinstance(crcs, list) or len(crcs) != -(-size // chunk_bytes):
            raise ValueError(f"the entry of {name} is not a size and a crc32 per chunk")
    return files, chunk_bytes


def damage(folder: Path) -> str | None:
    """What changed in checkpoint ``folder`` since it was saved, as one line naming the file; None when every
    file is as its checksums.json records (or it predates checksums: ``load`` says so)."""
    record_file = folder / CHECKSUMS
    if not record_file.is_file():
        m = STEP_DIR.match(folder.name)
        earlier = [s for s in saved_steps(folder.parent) if m and s < int(m.group(1))]
        if any((folder.parent / step_dir_name(s) / CHECKSUMS).is_file() for s in earlier):
            # a template that writes checksums wrote an earlier checkpoint of this run: this one's was deleted
            return (
                f"checkpoint {record_file}: missing (the run's earlier checkpoints have theirs), so its files "
                "cannot be checked"
            )
        return None
    try:
        files, chunk_bytes = read_checksums(record_file)
    except (OSError, ValueError, RecursionError) as e:  # RecursionError: JSON nested too deep to parse
        return f"checkpoint {record_file}: cannot be read ({first_line(e)}), so its files cannot be checked"
    for name, saved in files.items():
        path = folder / name
        if not path.is_file():
            return f"checkpoint {path}: missing since it was saved"
        size = path.stat().st_size
        if size != saved["bytes"]:
            return (
                f"checkpoint {path}: damaged since it was saved (it holds {size_text(size)}, "
                f"{size_text(saved['bytes'])} were written)"
            )
        now = file_checksums(path, chunk_bytes)
        bad = next((i for i, (a, b) in enumerate(zip(saved["crc32"], now, strict=True)) if a != b), None)
        if bad is not None:
            start = bad * chunk_bytes
            end = min(start + chunk_bytes, size)
            return f"checkpoint {path}: damaged since it was saved (bytes {start:,}–{end:,} differ, crc32)"
    for path in sorted(folder.rglob("*")):  # a file the record leaves out would be read unchecked
        name = path.relative_to(folder).as_posix()  # a hidden file is none of its (an NFS .nfs…, an editor's)
        if path.is_file() and path.name != CHECKSUMS and not path.name.startswith(".") and name not in files:
            return f"checkpoint {path}: not in its {CHECKSUMS} (added, or its entry removed, since it was saved)"
    return None


def verify(folder: Path) -> None:
    """Refuse checkpoint ``folder`` in one line when a file of it changed since it was saved."""
    why = damage(folder)
    if why is not None:
        raise ConfigError(why)


def newest_intact(root: Path) -> Path | None:
    """The checkpoint under ``root`` to continue from: the latest, or when it is damaged the newest earlier one
    that is intact (said in a warning); None when there is none at all. Every kept checkpoint damaged is a
    one-line error naming the latest one's damaged file."""
    newest = passed_over(root, latest(root))
    if newest is None:
        return None
    why = damage(newest)
    if why is None:
        return newest
    m = STEP_DIR.match(newest.name)
    earlier = [s for s in saved_steps(root) if not m or s < int(m.group(1))]
    for step in reversed(earlier):
        folder = root / step_dir_name(step)
        if damage(folder) is None:
            log.warning("%s; resuming from the previous complete checkpoint, %s", why, folder)
            return folder
    raise ConfigError(
        f"{why}; no earlier intact checkpoint is kept to resume from (trainer.keep_checkpoints ≥ 2 keeps one); "
        "start the run again in a new hydra.run.dir"
    )


def newest_periodic(root: Path, every: int, until: int) -> Path | None:
    """The newest intact checkpoint at a multiple of ``every`` up to update ``until``: one an uninterrupted run has
    too (a stop's checkpoint in between it has not), so a rollback goes where that run's would. A damaged one is
    passed over with a warning; None when there is none."""
    for step in reversed(saved_steps(root)):
        if step <= until and step % every == 0:
            folder = root / step_dir_name(step)
            why = damage(folder)
            if why is None:
                return folder
            log.warning("%s; passing over it", why)
    return None


def state_bytes(state: Any) -> int:
    """The bytes of the tensors in ``state`` (each storage once): about what ``torch.save`` writes."""
    storages: dict[int, int] = {}

    def visit(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            storage = value.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
        elif isinstance(value, dict):
            for v in value.values():
                visit(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                visit(v)

    visit(state)
    return sum(storages.values())


def saved_steps(root: Path) -> list[int]:
    """Steps of the complete checkpoint folders under ``root``, ascending."""
    if not root.is_dir():
        return []
    steps = []
    for entry in root.iterdir():
        m = STEP_DIR.match(entry.name)
        if m and (entry / STATE_FILE).is_file():
            steps.append(int(m.group(1)))
    return sorted(steps)


def prune(
    root: Path, keep: int, current: int | None = None, keep_every: int = 0, stale: frozenset[int] = frozenset()
) -> None:
    """Delete all but the newest ``keep`` checkpoints up to ``current`` (the one just written) and, with
    ``keep_every``, the newest at a multiple of it; and temporary folders left by killed saves. Checkpoints past
    ``current`` are a line the run went back from (a resume from an earlier checkpoint of its own directory): left
    alone, each replaced when the run saves at its update. ``stale`` ones, such a line's that the run has passed
    (or a damaged one its resume passed over), count for none of the ``keep`` and are deleted."""
    steps = [s for s in saved_steps(root) if current is None or s <= current]
    kept = [s for s in steps if s not in stale]
    spared = set(kept[-keep:]) | set([s for s in kept if keep_every and s % keep_every == 0][-1:])
    for step in steps:
        if step not in spared:
            shutil.rmtree(root / step_dir_name(step), ignore_errors=True)
    for entry in root.iterdir():
        if entry.name.startswith((".tmp-", ".old-")) and entry.is_dir():
            parts = entry.name.split("-")  # .tmp-step-00000100-<pid>-<random>, .old-step-00000100-<pid>
            if len(parts) < 4 or parts[3] != str(os.getpid()):
                shutil.rmtree(entry, ignore_errors=True)


def abandon_after(root: Path, step: int) -> None:
    """After a rollback to checkpoint ``step``: remove the checkpoints after it (a stop's, on the line the run went
    back from: resuming there would take the batches the rollback skipped, and pruning would keep it over the
    periodic one a later spike goes back to), and point ``latest`` at it."""
    for later in [s for s in saved_steps(root) if s > step]:
        shutil.rmtree(root / step_dir_name(later), ignore_errors=True)
    replace_file(root / LATEST, step_dir_name(step) + "\n")


def named_latest(root: Path) -> Path | None:
    """The folder the ``latest`` pointer names, if there is a pointer (a garbled one names no folder)."""
    pointer = root / LATEST
    return root / pointer.read_text(errors="replace").strip() if pointer.is_file() else None


def latest(root: Path) -> Path | None:
    """The latest complete checkpoint under ``root``: the one ``latest`` names, else the highest step."""
    target = named_latest(root)
    if target is not None and (target / STATE_FILE).is_file():
        return target
    steps = saved_steps(root)
    return root / step_dir_name(steps[-1]) if steps else None


def passed_over(root: Path, taken: Path | None) -> Path | None:
    """``taken``, from ``latest``, said in a warning where it passed over the folder ``latest`` names (its state
    file deleted since) or ``latest`` names none: said where a checkpoint is chosen, once; with none taken, the
    caller's line says it."""
    if taken is not None and (lost := lost_latest(root)) is not None:
        log.warning("checkpoint %s: its %s is missing; passing over it", lost, STATE_FILE)
    elif taken is not None and (named := named_latest(root)) is not None and named != taken:
        said = (root / LATEST).read_text(errors="replace").strip()[:80]
        log.warning(  # garbled, or a folder deleted since: the highest step may be of another line
            "%s names no checkpoint (%r); taking the highest step, %s", root / LATEST, said, taken.name
        )
    return taken


def lost_latest(root: Path) -> Path | None:
    """The checkpoint folder ``latest`` names when its state file was deleted since (saves are atomic)."""
    target = named_latest(root)
    if target is None or not STEP_DIR.match(target.name) or not target.is_dir():
        return None
    return None if (target / STATE_FILE).is_file() else target


def resolve(path: str | os.PathLike, key: str = "trainer.resume") -> Path:
    """A checkpoint folder from ``<key>=<path>``: a checkpoint folder, its state file, a ``checkpoints``
    folder or a run directory."""
    p = Path(os.path.expanduser(str(path)))
    if not p.exists():
        raise ConfigError(f"{key}: {str(path)!r} does not exist")
    if p.is_file():
        if p.name != STATE_FILE:  # another file would name its folder's run without saying so
            raise ConfigError(
                f"{key}: {str(path)!r} is a file, not a checkpoint (a run directory, its checkpoints/ folder, a "
                f"checkpoint folder or its {STATE_FILE})"
            )
        p = p.parent
    if (p / STATE_FILE).is_file():
        return p
    for root in (p / "checkpoints", p):
        found = passed_over(root, latest(root))
        if found is not None:
            return found
    raise ConfigError(f"{key}: {str(path)!r} holds no checkpoint (no {STATE_FILE} under it)")


def load(path: Path, verify_files: bool = True, mmap: bool = False) -> dict[str, Any]:
    """The state of checkpoint folder ``path``, on the CPU; a file changed since it was saved (unless
    ``verify_files=False``: already checked), a corrupt or a foreign one is a one-line error. ``mmap``: tensors
    are read from the file as they are used (sampling and exporting use the weights, not the optimizer's
    twice-as-large state) — never for a file that is then written over in place, which would pull the pages
    from under them."""
    if verify_files:
        verify(path)
    file = path / STATE_FILE
    try:
        with warnings.catch_warnings():
            # a file pickled with a newer protocol than torch.save's: the weights-only loader warns that it may
            # not follow, then either reads it or fails — and a failure is reported below in one line
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            state = torch.load(file, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:
        raise ConfigError(f"checkpoint {file}: {unreadable(file, e)}") from None
    if not isinstance(state, dict) or "model" not in state or "step" not in state:
        raise ConfigError(f"checkpoint {file}: not a checkpoint of this template (no model state and step)")
    if not (path / CHECKSUMS).is_file() and distributed.env_world()[0] == 0:
        log.warning(
            "checkpoint %s: no %s (saved before checksums were kept, or lost since): loaded unchecked", path, CHECKSUMS
        )
    return state


def unreadable(file: Path, error: Exception) -> str:
    """Why torch.load refused ``file``, in words: torch's own first line is a paragraph on ``weights_only``."""
    if unsafe := re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error)):
        return (
            f"not a checkpoint of this template (it pickles {unsafe.group(1)}, an object a weights-only load does "
            "not build)"
        )
    if not zipfile.is_zipfile(file):
        return "cannot be read, it is truncated or corrupt (not the zip archive torch.save writes)"
    return f"cannot be read, it is truncated or corrupt ({first_line(error)})"


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and CUDA generator states, as tensors and plain values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss)},
        "numpy_cached_gaussian": float(cached),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_as_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], state["numpy_cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(cuda)


def _as_tuple(value: Any) -> Any:
    """random.setstate wants tuples where a round trip may have produced lists."""
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuple(v) for v in value)
    return value


def find_resume(resume: Any, run_dir: Path) -> Path | None:
    """``trainer.resume``: auto = the run directory's latest intact checkpoint if any; false = refuse a run
    directory that has checkpoints; a path = that checkpoint, or that run directory's latest intact one — where the
    run directory holds no checkpoint of its own yet, and this run has not gone on from it: a branch, or a run sent
    back to its own older checkpoint, run again (a requeue) continues from its own latest. The folder returned has
    been verified (``newest_intact``, ``verify``)."""
    for folder in restore_set_aside(run_dir / "checkpoints"):  # a kill while a checkpoint was replaced
        log.warning("%s was being replaced when its run stopped: the copy set aside is back in its place", folder)
    if resume == "auto":
        found = newest_intact(run_dir / "checkpoints")
        if found is None and (lost := lost_latest(run_dir / "checkpoints")) is not None:
            log.warning("checkpoint %s: its %s is missing, and no other is kept: starting afresh", lost, STATE_FILE)
        return found
    if resume is False:
        if latest(run_dir / "checkpoints") is not None:
            raise ConfigError(
                f"trainer.resume=false, but the run directory {run_dir} already holds checkpoints; "
                "use a new hydra.run.dir, or trainer.resume=auto to continue it"
            )
        return None
    own, named = run_dir / "checkpoints", Path(os.path.expanduser(str(resume)))
    # first: the run's own checkpoints, when it names another run (a branch requeued after its source was pruned)
    if not named.resolve().is_relative_to(run_dir.resolve()) and (mine := newest_intact(own)) is not None:
        log.info(
            "trainer.resume names %s, but %s holds this run's own checkpoints: continuing from %s", resume, own, mine
        )
        return mine
    # an older checkpoint of this run named, and the run has gone on from it: the same command again continues
    newest = latest(own)
    if newest is not None and resumed_with(newest) == named.resolve() and (mine := newest_intact(own)) is not None:
        log.info("trainer.resume names %s, which this run went on from: continuing from %s", resume, mine)
        return mine
    folder = resolve(resume)
    if named.resolve() in (folder.resolve(), (folder / STATE_FILE).resolve()):  # that checkpoint, and no other
        verify(folder)
        return folder
    return newest_intact(folder.parent)


def resumed_with(folder: Path) -> Path | None:
    """The path the run that wrote checkpoint ``folder`` was given as ``trainer.resume`` (its config.yaml), if any."""
    from omegaconf import OmegaConf

    try:
        resume = OmegaConf.load(folder / "config.yaml").trainer.resume
    except Exception:  # no config, or not one of this template's: nothing to go by
        return None
    return Path(os.path.expanduser(resume)).resolve() if isinstance(resume, str) and resume != "auto" else None


# Model settings a resume may change, as it may change the optimizer's: those of how training computes, the
# padding out of the softmax, which a checkpoint from before it did not record, and the document separator, which
# data.document_mask sets (a data setting: named with the others a resume changes).
HOW_NOT_WHAT = (*TRAINING_ONLY, "padded_from", "document_separator")


def check_fits_before_data(state: dict[str, Any], model: dict[str, Any], data: dict[str, Any], path: Path) -> None:
    """What :func:`check_fits` can tell from the config alone, before the data is prepared (which may train a
    tokenizer and write a token cache only to be refused): the model's shape, and the size of a trained tokenizer."""
    from omegaconf import OmegaConf

    shape = {f.name for f in fields(GPTConfig)} - {*TOKENIZER_KEYS, *HOW_NOT_WHAT}
    check_fits(state, {k: v for k, v in model.items() if k in shape}, None, path)
    before = OmegaConf.create(state["config"]).get("data") if state.get("config") else None
    if before is None or before.get("tokenizer") or data.get("tokenizer"):
        return
    if before.get("vocab_size") != data.get("vocab_size"):
        raise ConfigError(
            f"checkpoint {path}: it was trained with another tokenizer than data builds now (data.vocab_size "
            f"{before.get('vocab_size')} → {data.get('vocab_size')}); resume with the same data settings"
        )


def check_fits(
    state: dict[str, Any],
    model_config: dict[str, Any],
    tokenizer_hash: str | None,
    path: Path,
    data_changes: Callable[[], str] | None = None,
) -> None:
    """Refuse a checkpoint whose model shape, vocabulary or tokenizer differ from what the config builds. A
    setting the checkpoint predates counts as its default (what that checkpoint's model did); ``data_changes``
    says which data settings differ, for a tokenizer refused."""
    saved = state.get("model_config", {})
    if saved:
        saved = {**{f.name: f.default for f in fields(GPTConfig)}, **saved}
    diff = [
        f"{k} {saved.get(k)!r} → {v!r}" for k, v in model_config.items() if saved.get(k) != v and k not in HOW_NOT_WHAT
    ]
    if diff:
        raise ConfigError(
            f"checkpoint {path}: it holds a model of another shape or vocab than the config asks for "
            f"({', '.join(diff[:4])}); resume with the same model and data settings"
        )
    if tokenizer_hash is not None and state.get("tokenizer_hash") not in (None, tokenizer_hash):
        changes = data_changes() if data_changes is not None else ""
        raise ConfigError(
            f"checkpoint {path}: it was trained with another tokenizer than data builds now"
            + (f" ({changes}); resume with the same data settings" if changes else "")
        )
    changed = [
        f"model.{k} {saved[k]!r} → {model_config[k]!r}"
        for k in TRAINING_ONLY
        if k in model_config and saved.get(k, model_config[k]) != model_config[k]
    ]
    if changed:  # allowed, as the optimizer's settings are: named as they are
        log.info("from update %d, the model's %s", state["step"], ", ".join(changed))


def full_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Full model and optimizer state dicts keyed by parameter name, on the CPU (for a DDP or single run)."""
    # imported where used: torch.distributed.checkpoint is slow to import, and a run stopped by a bad config,
    # sample.py and export.py need none of it
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    if distributed.is_initialized():
        return get_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    model_sd, optim_sd = get_state_dict(model, optimizer)
    return {k: v.detach().cpu() for k, v in model_sd.items()}, optim_sd


def load_sharded(folder: Path, state: dict[str, Any]) -> None:
    """Fill ``state`` ({"model": …[, "optimizer": …]}, tensors of any strategy and world size) in place from the
    torch.distributed.checkpoint folder ``folder``: training resumes and sample.py loads weights through this."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException

    if not (folder / ".metadata").is_file():
        raise ConfigError(f"checkpoint {folder}: its sharded state is incomplete (no .metadata)")
    try:
        with warnings.catch_warnings():  # one process reading shards written by several: intended
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.load(state, checkpoint_id=str(folder))
    except (Exception, CheckpointException) as e:  # a BaseException: a shard missing or cut, each rank's error in it
        failures = getattr(e, "failures", None) or {0: (e, None)}
        cause = next(iter(failures.values()))[0]
        if not isinstance(cause, Exception):  # Ctrl-C while it read, wrapped as the shard's failure: not damage
            raise cause from None
        why = f"{type(cause).__name__}: {first_line(cause)}"
        raise ConfigError(f"checkpoint {folder}: its sharded state cannot be read ({why})") from None


def load_weights(folder: Path, state: dict[str, Any], model: torch.nn.Module) -> None:
    """The weights of checkpoint ``folder`` (its loaded ``state``) into ``model`` in one process, whatever
    strategy saved them."""
    try:
        if state.get("sharded") == "dcp":
            weights = {"model": model.state_dict()}
            load_sharded(folder / "dcp", weights)  # fills the tensors in place
        else:
            model.load_state_dict(state["model"])
    except (RuntimeError, TypeError, KeyError) as e:  # TypeError, KeyError: an unchecked checkpoint's other shape
        reason = first_line(e)
        raise ConfigError(f"checkpoint {folder}: its weights do not fit its model_config ({reason})") from None


def group_settings(optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    """Each param group's settings but its parameters and lr (the schedule sets the lr on resume)."""
    return [{k: v for k, v in g.items() if k not in ("params", "lr", "initial_lr")} for g in optimizer.param_groups]


def as_list(value: Any) -> Any:
    """A tuple as a list (betas saved as one, configured as the other, are the same setting)."""
    return list(value) if isinstance(value, tuple) else value


class Checkpointer:
    """Saves and restores everything a run needs to continue exactly: model and optimizer (full, or sharded
    under FSDP), scheduler with its schedule, GradScaler, update index, tokens seen, every rank's RNG states,
    and what the run adds (``extra``: T, config, the sinks' state; ``files``: tokenizer.json, config.yaml). Call
    ``save`` on every rank."""

    def __init__(
        self, run_dir: Path, model, optimizer, scheduler, scaler, dist, strategy: str, keep: int, keep_every: int = 0
    ):
        self.root = run_dir / "checkpoints"
        self.model, self.scheduler, self.scaler = model, scheduler, scaler
        self.optimizer = getattr(optimizer, "optimizers", optimizer)  # torch's state dicts take each optimizer
        self.optimizers = self.optimizer if isinstance(self.optimizer, (list, tuple)) else [self.optimizer]
        self.dist, self.strategy, self.keep, self.keep_every = dist, strategy, keep, keep_every
        # The update this run's line of checkpoints starts from (its resume or rollback), and the steps it saved
        # since: any other checkpoint between the two is another line's (or one the resume found damaged).
        self.since: int | None = None
        self.written: set[int] = set()

    def stale(self, step: int) -> frozenset[int]:
        if self.since is None:
            return frozenset()
        return frozenset(s for s in saved_steps(self.root) if self.since < s < step and s not in self.written)

    def save(self, step: int, tokens: int, extra: dict[str, Any], files: dict[str, str | bytes]) -> Path | None:
        rngs = distributed.gather_object(rng_state())
        # rank 0 writes the folder; its failure (a full disk) is every rank's one line, not a wait for a peer
        tmp = distributed.from_rank_zero(lambda: begin(self.root, step_dir_name(step)), self.dist)
        state: dict[str, Any] = {"step": step, "tokens": tokens, "rng": rngs, **extra}
        if self.strategy == "fsdp":
            import torch.distributed.checkpoint as dcp
            from torch.distributed.checkpoint.state_dict import get_state_dict

            model_sd, optim_sd = get_state_dict(self.model, self.optimizer)
            dcp.save({"model": model_sd, "optimizer": optim_sd}, checkpoint_id=str(tmp / "dcp"))
            state["model"], state["optimizer"], state["sharded"] = {}, {}, "dcp"
        else:
            state["model"], state["optimizer"] = full_state(self.model, self.optimizer)
        state["scheduler"] = self.scheduler.state_dict()
        state["scaler"] = self.scaler.state_dict() if self.scaler is not None else None
        distributed.barrier()  # every shard is on disk before the folder is committed
        path = distributed.from_rank_zero(
            lambda: save(self.root, step, state, files, self.keep, tmp, self.keep_every, self.stale(step)), self.dist
        )
        self.written.add(step)
        return path if self.dist.is_main else None

    def restore(
        self,
        state: dict[str, Any],
        path: Path,
        allow_schedule_change: bool | str,
        optimizer_name: str,
        total_key: str = "trainer.max_steps",
    ) -> None:
        """Load ``state`` into the model, optimizer, scheduler and generators; ``total_key`` names what set T (a
        budget's key, where trainer.max_steps is null) in a refusal of another schedule."""
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_state_dict,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        from scheduling import restore_scheduler

        saved_name = state.get("optimizer_name", "adamw")
        if saved_name != optimizer_name and allow_schedule_change is not True:
            raise ConfigError(
                f"checkpoint {path}: it was trained with optim={saved_name}, the config asks for "
                f"optim={optimizer_name}; resume with the same optimizer, or set trainer.allow_schedule_change=true "
                "to continue with the new one (its state starts afresh)"
            )
        model_sd, optim_sd = state["model"], state["optimizer"]
        if state.get("sharded") == "dcp":
            model_sd, optim_sd = get_state_dict(self.model, self.optimizer)
            shards = {"model": model_sd, "optimizer": optim_sd}
            load_sharded(path / "dcp", shards if saved_name == optimizer_name else {"model": model_sd})
        options = StateDictOptions(full_state_dict=state.get("sharded") != "dcp", strict=True)
        set_model_state_dict(self.model, model_sd, options=options)
        if saved_name == optimizer_name:
            settings = [group_settings(o) for o in self.optimizers]  # the config's betas, eps, weight decay, …
            set_optimizer_state_dict(self.model, self.optimizer, optim_sd, options=options)
            changed = {}
            for optimizer, mine in zip(self.optimizers, settings, strict=True):
                for group, own in zip(optimizer.param_groups, mine, strict=True):
                    key = f"optim.{group['name']}." if "name" in group else "optim."
                    for k, v in own.items():
                        if as_list(group.get(k)) != as_list(v):
                            changed.setdefault(key + k, f"{key}{k} {as_list(group.get(k))!r} → {as_list(v)!r}")
                    group.update(own)  # loading put the checkpoint's settings back: the config's apply from here
            if changed:
                log.info("from update %d, the optimizer's %s", state["step"], ", ".join(changed.values()))
        else:
            for optimizer in self.optimizers:  # a rollback to another optimizer's checkpoint: none of the spike's state
                optimizer.state.clear()
            log.info(
                "from update %d, optim=%s replaces optim=%s (trainer.allow_schedule_change): its state starts afresh",
                state["step"],
                optimizer_name,
                saved_name,
            )
        keys = {**CONFIG_KEYS, "total_steps": total_key}
        restore_scheduler(self.scheduler, state["scheduler"], allow_schedule_change, keys)
        self.since, self.written = state["step"], set()
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        rngs = state["rng"]
        if len(rngs) == self.dist.world_size:
            set_rng_state(rngs[self.dist.rank])
        else:  # another world size: the generators can't continue per rank; start them afresh per rank
            torch.manual_seed(state["step"] * 1000 + self.dist.rank)
