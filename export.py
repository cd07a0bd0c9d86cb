"""Export a trained run for transformers: ``python export.py checkpoint=<run dir> out=<folder> [key=value ...]``.

    python export.py checkpoint=outputs/2025-06-01/12-00-00 out=exported/nano             # its latest checkpoint
    python export.py checkpoint=outputs/.../checkpoints/step-00000500 out=exported/step500 dtype=bfloat16

Loads the checkpoint as sample.py does (the model from its ``model_config``, the tokenizer from the
``tokenizer.json`` beside it) and writes ``out``: config.json, generation_config.json, model.safetensors,
tokenizer.json and tokenizer_config.json, which ``AutoModelForCausalLM`` and ``AutoTokenizer`` load with no custom
code — arch gpt2 as ``GPT2LMHeadModel``, arch llama as ``LlamaForCausalLM``, the tokenizer as a
``PreTrainedTokenizerFast`` whose end-of-text token (the run's document separator) is its eos and bos. The folder
appears complete or not at all. Needs transformers (the hf extra). Keys and defaults: conf/export.yaml; more in
docs/huggingface.md. Bad input ends with one ``error:`` line and exit code 2, with nothing written.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from data import atomic
from data.tokenizer import as_transformers_tokenizer
from model import GPTConfig
from model.hf import CLASSES, quiet, require_transformers, to_transformers
from sample import find_checkpoint, load_checkpoint_tokenizer, load_model, run_separator
from training.config import USER_ERRORS, ConfigError, check_keys, check_overrides_or_exit, resolved

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def check_export_config(cfg: Mapping[str, Any]) -> None:
    """Every export.yaml value, before anything is loaded."""
    check_keys(cfg, "export")
    if cfg.get("checkpoint") in (None, "", "???"):
        raise ConfigError(
            "checkpoint", "a run directory or checkpoint folder (python export.py checkpoint=<run dir> out=<folder>)"
        )
    if cfg.get("out") in (None, "", "???"):
        raise ConfigError("out", "the folder to write (python export.py checkpoint=<run dir> out=<folder>)")
    if not isinstance(cfg["out"], str):  # out=[a] would write a folder named "['a']"
        raise ConfigError("out", "a folder path (a number quoted: out='\"123\"')", cfg["out"])
    if cfg.get("dtype") not in DTYPES:
        raise ConfigError("dtype", f"one of {', '.join(DTYPES)}", cfg.get("dtype"))
    if not isinstance(cfg.get("overwrite"), bool):
        raise ConfigError("overwrite", "true or false", cfg.get("overwrite"))


def check_out(out: Path, overwrite: bool, checkpoint: Path) -> None:
    """``out`` is a new or empty folder, or one that ``overwrite`` allows to replace: never one that holds the
    checkpoint or the current directory, which replacing it would delete."""
    for folder in (out, *out.parents):
        if folder.exists() and not folder.is_dir():
            raise ConfigError(f"out: {str(folder)!r} is a file; give a folder to write the model into")
    for what, inside in (("the checkpoint it exports", checkpoint), ("the current directory", Path.cwd())):
        if inside.resolve().is_relative_to(out.resolve()):
            raise ConfigError(f"out: {str(out)!r} holds {what}; give a folder of its own for the model")
    # a run's checkpoints folder is training's: it replaces and prunes what is in it, an export with them
    owned = checkpoint.parent if checkpoint.parent.name == "checkpoints" else checkpoint
    if out.resolve().is_relative_to(owned.resolve()):
        raise ConfigError(
            f"out: {str(out)!r} is inside the checkpoints at {owned} (training replaces and prunes them); "
            "give a folder of its own"
        )
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(
            f"out: {str(out)!r} already holds files; choose a new folder, or overwrite=true to replace it"
        )
    others = sorted(p.name for p in out.iterdir() if not is_model_file(p)) if out.is_dir() else []
    if overwrite and others:  # a home folder or another run's, named by mistake: replacing it would delete them
        raise ConfigError(
            f"out: {str(out)!r} holds more than a model folder ({', '.join(others[:3])}"
            f"{', …' if len(others) > 3 else ''}); overwrite=true replaces only an earlier export: choose a new folder"
        )


def softmax_rows(config: GPTConfig, state: Mapping[str, Any], tokenizer_size: int) -> int:
    """The rows the export keeps: the tokenizer's where the rest is padding (out of the softmax since
    ``padded_from``, dropped as padding before it), every row of a ``model.init_from`` folder's own vocabulary,
    each of which was in the run's softmax."""
    if config.padded_from is not None:
        return config.padded_from
    init_from = OmegaConf.select(OmegaConf.create(state.get("config") or {}), "model.init_from")
    return config.vocab_size if init_from else tokenizer_size


def is_model_file(path: Path) -> bool:
    """A file an export (or transformers' save_pretrained) writes: its weights and its JSON settings."""
    named = path.name in ("merges.txt", "vocab.txt", "chat_template.jinja")
    return path.is_file() and not path.is_symlink() and (path.suffix in (".json", ".safetensors") or named)


def readable_by_transformers_4(config: dict[str, Any], tokenizer: dict[str, Any]) -> None:
    """What transformers 5 writes that version 4 (still what many tools pin) would misread, written both ways: the
    rotary base (5: inside ``rope_parameters``; 4 reads ``rope_theta`` and would fall back to 10000 silently),
    the tokenizer's class (5: ``TokenizersBackend``) and its other special tokens (5: a list under
    ``extra_special_tokens``, which 4 takes for a dict)."""
    rope = config.get("rope_parameters")
    if isinstance(rope, dict) and "rope_theta" in rope:
        config.setdefault("rope_theta", rope["rope_theta"])
    tokenizer["tokenizer_class"] = "PreTrainedTokenizerFast"
    extra = tokenizer.pop("extra_special_tokens", None)
    if extra:
        tokenizer["additional_special_tokens"] = list(extra)


def save(hf_model: Any, hf_tokenizer: Any, folder: Path) -> None:
    """``save_pretrained`` both into ``folder`` in files transformers 4 and 5 read alike, every file readable as
    the umask allows (the temporary folder was made private)."""
    with quiet():
        hf_model.save_pretrained(folder)
        hf_tokenizer.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    tokenizer = json.loads((folder / "tokenizer_config.json").read_text())
    readable_by_transformers_4(config, tokenizer)
    for name, settings in (("config.json", config), ("tokenizer_config.json", tokenizer)):
        (folder / name).write_text(json.dumps(settings, indent=2) + "\n")
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for file in folder.iterdir():
        file.chmod(0o666 & ~umask)


def export(cfg: DictConfig) -> Path:
    """Write the checkpoint that ``cfg.checkpoint`` names as a transformers model folder ``cfg.out``."""
    values = resolved(cfg)
    check_export_config(values)
    require_transformers("export.py")
    out = Path(os.path.expanduser(str(values["out"])))
    folder = find_checkpoint(str(values["checkpoint"]))
    check_out(out, values["overwrite"], folder)
    model, state = load_model(folder, torch.device("cpu"))
    tokenizer = load_checkpoint_tokenizer(folder, model, state)
    special, separator = run_separator(state, tokenizer, folder)
    vocab = softmax_rows(model.config, state, tokenizer.get_vocab_size())
    hf_model = to_transformers(
        model, vocab, eos_token_id=separator, bos_token_id=separator, dtype=DTYPES[values["dtype"]]
    )
    hf_tokenizer = as_transformers_tokenizer(tokenizer, special, model.config.block_size)
    parent = out.resolve().parent
    made = [p for p in (parent, *parent.parents) if not p.exists()]  # innermost first: removed if it fails
    try:
        with atomic.space_for(out, hint="free some, or give out= another disk"):
            tmp = atomic.begin(parent, out.name)
            try:
                save(hf_model, hf_tokenizer, tmp)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            atomic.commit(tmp, out.resolve())
    except BaseException as e:
        for folder in made:
            with contextlib.suppress(OSError):
                folder.rmdir()
        if isinstance(e, OSError) and not isinstance(e, atomic.DiskFull):  # one it may not write, or replace
            raise ConfigError(f"out: {str(out)!r} cannot be written ({e.strerror or e})") from None
        raise
    print(
        f"checkpoint {folder} (update {state['step']}) → {out}: {CLASSES[model.config.arch]}, "
        f"{hf_model.num_parameters() / 1e6:.2f}M parameters, vocab {vocab}, {values['dtype']}",
        file=sys.stderr,
    )
    return out


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
def main(cfg: DictConfig) -> None:
    """Export; a bad input is one ``error:`` line and exit code 2."""
    try:
        export(cfg)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    check_overrides_or_exit(sys.argv[1:], "export")
    main()
