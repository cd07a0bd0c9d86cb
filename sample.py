"""Generate text from a trained run: ``python sample.py checkpoint=<run dir> [key=value ...]``.

    python sample.py checkpoint=outputs/2025-06-01/12-00-00                 # 200 tokens from a new document
    python sample.py checkpoint=outputs/2025-06-01/12-00-00 "prompt='def '" num_samples=3 temperature=0.7
    python sample.py checkpoint=outputs/.../checkpoints/step-00000500 temperature=0   # greedy, one checkpoint

Loads the checkpoint (a run directory means its latest one), rebuilds the model from the checkpoint's own
``model_config`` and its tokenizer from the ``tokenizer.json`` beside it, and prints ``num_samples``
continuations of the prompt (temperature, top-k, top-p, with a KV cache). Keys and defaults: conf/sample.yaml.
A missing, empty or corrupt checkpoint ends with one ``error:`` line and exit code 2.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hydra
import torch
import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from tokenizers import Tokenizer

from data.cache import special_tokens
from data.tokenizer import load_tokenizer, special_tokens_of, tokenizer_hash
from model import GPT, TOKENIZER_KEYS, GPTConfig, ModelConfigError, check_model_config, sample_text
from scheduling.spec import first_line, is_int, is_number
from training import checkpoint, distributed
from training.config import USER_ERRORS, ConfigError, check_keys, check_overrides_or_exit, enough_memory, resolved

SEPARATOR = "-" * 40
SAMPLE_PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # trainer.precision's but fp8, a way to train


def check_sample_config(cfg: Mapping[str, Any]) -> None:
    """Every sample.yaml value, before anything is loaded."""
    check_keys(cfg, "sample")
    if cfg.get("checkpoint") in (None, "", "???"):
        raise ConfigError("checkpoint", "a run directory or checkpoint folder (python sample.py checkpoint=<run dir>)")
    for key in ("max_new_tokens", "num_samples"):
        if not is_int(cfg.get(key)) or cfg[key] < 1:
            raise ConfigError(key, "an integer > 0", cfg.get(key))
    temperature = cfg.get("temperature")
    if not is_number(temperature) or temperature < 0:
        raise ConfigError("temperature", "a number ≥ 0 (0 = greedy)", temperature)
    top_k = cfg.get("top_k")
    if top_k is not None and (not is_int(top_k) or top_k < 1):
        raise ConfigError("top_k", "null or an integer > 0", top_k)
    top_p = cfg.get("top_p")
    if top_p is not None and (not is_number(top_p) or not 0 < top_p <= 1):
        raise ConfigError("top_p", "null or a number in (0, 1]", top_p)
    seed = cfg.get("seed")
    if not is_int(seed) or not -(2**63) <= seed < 2**64:  # what torch's generators take
        raise ConfigError("seed", "an integer in [-2**63, 2**64)", seed)
    if not isinstance(cfg.get("prompt"), str):  # Hydra reads prompt=123 as a number, prompt=null as None
        raise ConfigError(
            "prompt", 'a string (quote a number: \'prompt="123"\'; "" starts a new document)', cfg.get("prompt")
        )


def find_checkpoint(path: str) -> Path:
    """The checkpoint folder that ``path`` names (``checkpoint.resolve``), with errors that name our key."""
    return checkpoint.resolve(path, key="checkpoint")


def load_model(folder: Path, device: torch.device) -> tuple[GPT, dict[str, Any]]:
    """The model of checkpoint ``folder`` in eval mode on ``device``, and the checkpoint's state."""
    state = checkpoint.load(folder, mmap=True)
    saved = state.get("model_config")
    if not isinstance(saved, dict):
        raise ConfigError(f"checkpoint {folder / checkpoint.STATE_FILE}: it has no model_config to rebuild the model")
    try:
        # every setting as a run's is checked (a key of a newer version, a value of another type), the tokenizer's
        # three by from_dict
        check_model_config({k: v for k, v in saved.items() if k not in TOKENIZER_KEYS})
        with torch.device("meta"):  # no time spent on a random init that the weights replace anyway
            model = GPT(GPTConfig.from_dict(saved))
    except ModelConfigError as e:  # the checkpoint's, not a key of sample.py
        raise ConfigError(f"checkpoint {folder / checkpoint.STATE_FILE}: its model_config: {e}") from None
    model.materialize(device)
    checkpoint.load_weights(folder, state, model)
    broken = next((name for name, p in model.named_parameters() if not torch.isfinite(p).all()), None)
    if broken is not None:  # a run that diverged: every sample would be the argmax of NaN
        raise ConfigError(f"checkpoint {folder}: its weights hold values that are not finite ({broken})")
    return model.eval(), state


def load_checkpoint_tokenizer(folder: Path, model: GPT, state: dict[str, Any]) -> Tokenizer:
    """The tokenizer.json beside checkpoint ``folder``, refused if it is not the one the run recorded (its
    ``tokenizer_hash``: a checkpoint from before checksums holds no other guard) or has more tokens than
    ``model``'s vocabulary."""
    tokenizer = load_tokenizer(folder / "tokenizer.json", key=f"checkpoint {folder}")
    recorded = state.get("tokenizer_hash")
    if recorded is not None and tokenizer_hash(tokenizer) != recorded:
        raise ConfigError(f"checkpoint {folder}: its tokenizer.json is not the tokenizer the run was trained with")
    if tokenizer.get_vocab_size() > model.config.vocab_size:
        raise ConfigError(f"checkpoint {folder}: its tokenizer.json has more tokens than its model's vocabulary")
    return tokenizer


def run_special_tokens(state: dict[str, Any], tokenizer: Tokenizer, folder: Path) -> list[str]:
    """``data.special_tokens`` of the run (its first one separates documents), from the checkpoint's config; for a
    checkpoint without one, the tokenizer's special tokens in id order (as a trained tokenizer puts them)."""
    if isinstance(state.get("config"), str):
        try:
            data = OmegaConf.create(state["config"]).get("data") or {}
            return special_tokens(data)
        except (ValueError, TypeError, AttributeError, yaml.YAMLError, OmegaConfBaseException) as e:
            raise ConfigError(f"checkpoint {folder}: its config cannot be read ({first_line(e)})") from None
    return special_tokens_of(tokenizer) or special_tokens({})


def run_separator(state: dict[str, Any], tokenizer: Tokenizer, folder: Path) -> tuple[list[str], int]:
    """The run's special tokens and the id of the first, which separates documents; one line naming the
    checkpoint when its tokenizer.json lacks it."""
    special = run_special_tokens(state, tokenizer, folder)
    separator = tokenizer.token_to_id(special[0])
    if separator is None:
        raise ConfigError(
            f"checkpoint {folder}: its tokenizer.json has no {special[0]!r}, the run's document "
            "separator (data.special_tokens)"
        )
    return special, separator


def sample(cfg: DictConfig) -> list[str]:
    """Load the checkpoint that ``cfg.checkpoint`` names and return the generated texts."""
    values = resolved(cfg)
    check_sample_config(values)
    device = distributed.resolve_device(values["device"], key="device")
    precision = distributed.resolve_precision(values["precision"], device, "precision", SAMPLE_PRECISIONS)
    folder = find_checkpoint(str(values["checkpoint"]))
    model, state = load_model(folder, device)
    tokenizer = load_checkpoint_tokenizer(folder, model, state)
    _, separator = run_separator(state, tokenizer, folder)
    print(
        f"checkpoint {folder} (update {state['step']}): {model.config.arch}, "
        f"{model.num_params() / 1e6:.2f}M parameters, on {device} in {precision}",
        file=sys.stderr,
    )
    torch.manual_seed(values["seed"])
    generator = torch.Generator(device=device).manual_seed(values["seed"])
    top_p = values["top_p"]
    with enough_memory(f"{values['num_samples']} samples at once", "num_samples, max_new_tokens"):
        return sample_text(
            model,
            tokenizer,
            values["prompt"],
            values["max_new_tokens"],
            separator=separator,
            temperature=float(values["temperature"]),
            top_k=values["top_k"],
            top_p=None if top_p is None or math.isclose(top_p, 1.0) else float(top_p),
            num_samples=values["num_samples"],
            generator=generator,
            autocast=distributed.autocast(device, precision),
        )


@hydra.main(version_base="1.3", config_path="conf", config_name="sample")
def main(cfg: DictConfig) -> None:
    """Print the samples, separated by a line of dashes; a bad input is one ``error:`` line and exit code 2."""
    try:
        texts = sample(cfg)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    for i, text in enumerate(texts):
        if i:
            print(SEPARATOR)
        print(text)


if __name__ == "__main__":
    check_overrides_or_exit(sys.argv[1:], "sample")
    main()
