"""``model.init_from``: a run that starts from a GPT-2- or Llama-style model saved by transformers' ``save_pretrained``
(continued pretraining), from a local folder.

The folder decides what its weights need. Its config.json sets the architecture keys (``model.hf.ARCH_KEYS``),
replacing the chosen preset's; a command-line override that contradicts them is refused in one line, except a
smaller ``model.block_size`` (the same model on a shorter context). Its tokenizer.json replaces the trained BPE
(``data.tokenizer``, so the token cache keys on it); its end-of-text token separates documents, followed by its
other special tokens (``data.special_tokens``, unless given), so that an export keeps them special. The model
keeps the folder's vocabulary size, unpadded, so that its first evaluation is the loss transformers computes.
The weights are loaded before update 0 of a fresh run; a resumed run takes its own checkpoint's.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, open_dict

from data.tokenizer import load_tokenizer, special_tokens_of
from model import GPTConfig, ModelConfigError, padded_vocab
from model.hf import ARCH_KEYS, architecture, read_config, read_weights
from scheduling.spec import first_line
from training.config import ConfigError

log = logging.getLogger("train")


def source_folder(source: Any) -> Path:
    """The folder ``model.init_from`` names: one holding a config.json, else a one-line error."""
    if not isinstance(source, str) or not source:
        raise ModelConfigError(
            "model.init_from", "null or a local folder saved by transformers' save_pretrained", source
        )
    folder = Path(os.path.expanduser(source))
    if not (folder / "config.json").is_file():
        # a hub id (gpt2, owner/name), not a local path (/…, ./…, ~/…, a/b/c)
        hub_id = re.fullmatch(r"\w[\w.-]*(/[\w.-]+)?", source) and not folder.exists()
        hint = (
            f"; for a model on the hub, download it first: hf download {source} --local-dir <folder>" if hub_id else ""
        )
        raise ModelConfigError(
            f"model.init_from: {source!r} is not a folder saved by transformers' save_pretrained (no config.json){hint}"
        )
    return folder


def overridden(overrides: list[str] | None) -> set[str]:
    """The keys the command line sets (``model.n_layer=3`` → ``model.n_layer``)."""
    return {o.lstrip("+~").split("=", 1)[0] for o in overrides or [] if "=" in o}


# What an architecture key means nothing to: llama has no biases and a SwiGLU MLP, gpt2 no rotary embeddings.
IGNORED = {"gpt2": ("rope_theta",), "llama": ("bias", "activation")}


def shape(values: Mapping[str, Any]) -> dict[str, Any]:
    """What the architecture keys make of the model: two sets of keys with the same shape build the same model (a
    null n_kv_head is n_head, a null mlp_hidden the arch's default, and a key the arch ignores does not count)."""
    c = GPTConfig.from_dict(dict(values))
    found = {k: getattr(c, k) for k in ARCH_KEYS if k not in IGNORED.get(c.arch, ())}
    return {**found, "n_kv_head": c.kv_heads, "mlp_hidden": c.hidden}


def end_of_text(folder: Path, hf_config: Any, tokenizer) -> str | None:
    """The folder's end-of-text token: tokenizer_config.json's eos_token, else config.json's eos_token_id."""
    settings = folder / "tokenizer_config.json"
    if settings.is_file():
        try:
            found = json.loads(settings.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise ConfigError(f"model.init_from: {settings} cannot be read ({first_line(e)})") from None
        if not isinstance(found, dict):
            raise ConfigError(f"model.init_from: {settings} is not a JSON object of tokenizer settings")
        eos = found.get("eos_token")
        eos = eos.get("content") if isinstance(eos, dict) else eos
        if isinstance(eos, str) and tokenizer.token_to_id(eos) is not None:
            return eos
    ident = getattr(hf_config, "eos_token_id", None)
    ident = ident[0] if isinstance(ident, list) and ident else ident
    return tokenizer.id_to_token(ident) if isinstance(ident, int) else None


def with_init_from(cfg: DictConfig, overrides: list[str] | None = None) -> DictConfig:
    """``cfg`` with the architecture keys and tokenizer of the folder ``model.init_from`` names (``cfg`` itself
    without one); ``overrides`` are the command line's, which must not contradict the folder."""
    source = cfg.model.get("init_from")
    if source is None:
        return cfg
    folder = source_folder(source)
    hf_config = read_config(folder)
    keys = architecture(hf_config, str(folder))
    given = overridden(overrides)
    model = {**cfg.model, **keys}
    for key in sorted(k for k in ARCH_KEYS if f"model.{k}" in given):
        value = cfg.model.get(key)
        if key == "block_size" and isinstance(value, int) and 0 < value <= keys["block_size"]:
            model["block_size"] = value  # a shorter context: the first positions of the same model
        elif shape({**model, key: value}) != shape(model):
            raise ModelConfigError(
                f"model.{key}={value!r} contradicts model.init_from={source}, whose config.json "
                f"gives {keys.get(key)!r}; drop the override (the folder sets the architecture)"
                + ("; a smaller block_size is allowed" if key == "block_size" else "")
            )
    tokenizer_file = folder / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise ModelConfigError(
            f"model.init_from: {folder} has no tokenizer.json; save its fast tokenizer there "
            "(AutoTokenizer.from_pretrained(folder).save_pretrained(folder))"
        )
    given_tokenizer = cfg.data.get("tokenizer")
    if given_tokenizer and Path(os.path.expanduser(str(given_tokenizer))).resolve() != tokenizer_file.resolve():
        raise ConfigError(
            "data.tokenizer", f"null with model.init_from (its tokenizer is {tokenizer_file})", given_tokenizer
        )
    special = list(cfg.data.get("special_tokens") or [])
    if "data.special_tokens" not in given:
        tokenizer = load_tokenizer(tokenizer_file, key="model.init_from")
        eos = end_of_text(folder, hf_config, tokenizer)
        # the end-of-text first (it separates documents), then the folder's other special tokens, kept by an export
        special = [eos, *(t for t in special_tokens_of(tokenizer) if t != eos)] if eos else special
    out = copy.deepcopy(cfg)
    with open_dict(out):
        out.model.update({k: model[k] for k in keys})
        out.model.name = folder.name  # the model is the folder's, whatever preset it overrode
        out.data.tokenizer, out.data.special_tokens = str(tokenizer_file), special
    log.info(
        "model.init_from: %s (%s, %d layers, %d heads, width %d, context %d); its tokenizer.json, %r "
        "separating documents",
        folder,
        keys["arch"],
        keys["n_layer"],
        keys["n_head"],
        keys["n_embd"],
        out.model.block_size,
        special[0] if special else None,
    )
    return out


def model_vocab(model: Mapping[str, Any], tokenizer_vocab: int) -> int:
    """The model's vocabulary size: the tokenizer's padded to a multiple of 64, or an imported model's own."""
    if model.get("init_from") is None:
        return padded_vocab(tokenizer_vocab)
    folder = source_folder(model["init_from"])
    vocab = int(read_config(folder).vocab_size)
    if tokenizer_vocab > vocab:
        raise ModelConfigError(
            f"model.init_from: {folder}/tokenizer.json has {tokenizer_vocab} tokens, more than "
            f"the model's vocab_size of {vocab} (config.json)"
        )
    return vocab


def initial_weights(model: Mapping[str, Any], config: GPTConfig) -> dict[str, torch.Tensor] | None:
    """The weights a fresh run starts from: an imported model's (as ours for ``config``), else None (a random
    initialisation)."""
    if model.get("init_from") is None:
        return None
    return read_weights(source_folder(model["init_from"]), config)
