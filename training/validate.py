"""The single place that checks a composed config, before any work is done or any file written.

Each check raises ``ConfigError`` naming the key, what is allowed and what was given. Hydra's own
composition errors (an unknown group option, a mistyped key) are reported by Hydra before this runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from model.gpt import ARCHS
from training.distributed import DEVICES, PRECISIONS
from training.errors import ConfigError
from training.parallel import STRATEGIES

COMPILE = ("auto", True, False)
NONFINITE = ("stop", "skip")
LOGGERS = ("wandb", "csv", "none")
SOURCES = ("builtin", "text_files", "hub")
DECODE_POLICIES = ("skip", "replace", "error")
PROVISIONAL_STEPS = 10**9  # stands for T in checks made before a budget fixes it


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def positive_int(section: Mapping[str, Any], key: str, prefix: str, minimum: int = 1) -> int:
    v = section.get(key)
    if not _is_int(v) or v < minimum:
        raise ConfigError(f"{prefix}.{key}", f"an integer ≥ {minimum}" if minimum != 1 else "an integer > 0", v)
    return v


def one_of(section: Mapping[str, Any], key: str, prefix: str, allowed: tuple) -> Any:
    v = section.get(key)
    if v not in allowed or isinstance(v, bool) != any(isinstance(a, bool) and a == v for a in allowed):
        raise ConfigError(f"{prefix}.{key}", f"one of {', '.join(str(a).lower() for a in allowed)}", v)
    return v


def check_model(m: Mapping[str, Any]) -> None:
    """``cfg.model``: a known arch, positive sizes, n_embd divisible by n_head (and an even head size for
    rotary embeddings), dropout in [0, 1), n_kv_head dividing n_head, switches that are booleans, and no key
    GPTConfig does not know (the vocabulary size comes from the tokenizer, not from here)."""
    from dataclasses import fields

    from model.gpt import GPTConfig

    known = {f.name for f in fields(GPTConfig)} - {"vocab_size"}
    for key in m:
        if key not in known:
            raise ConfigError(f"model.{key}", f"absent: model settings are {', '.join(sorted(known))}", m[key])
    one_of(m, "arch", "model", ARCHS)
    for key in ("n_layer", "n_head", "n_embd", "block_size"):
        positive_int(m, key, "model")
    if m["n_embd"] % m["n_head"]:
        raise ConfigError("model.n_embd", f"divisible by model.n_head ({m['n_head']})", m["n_embd"])
    if m["arch"] == "llama" and (m["n_embd"] // m["n_head"]) % 2:
        raise ConfigError(
            "model.n_embd", "such that n_embd / n_head is even (rotary embeddings rotate pairs)", m["n_embd"]
        )
    dropout = m.get("dropout", 0.0)
    if not _is_number(dropout) or not 0.0 <= dropout < 1.0:
        raise ConfigError("model.dropout", "in [0, 1)", dropout)
    for key in ("bias", "tie_embeddings", "activation_checkpointing"):
        if key in m and not isinstance(m[key], bool):
            raise ConfigError(f"model.{key}", "true or false", m[key])
    kv = m.get("n_kv_head")
    if kv is not None and (not _is_int(kv) or kv < 1 or m["n_head"] % kv):
        raise ConfigError("model.n_kv_head", f"null or a divisor of model.n_head ({m['n_head']})", kv)
    if m.get("mlp_hidden") is not None:
        positive_int(m, "mlp_hidden", "model")
    for key in ("rope_theta", "norm_eps"):
        if key in m and (not _is_number(m[key]) or m[key] <= 0):
            raise ConfigError(f"model.{key}", "a number > 0", m[key])


def check_optim(o: Mapping[str, Any]) -> None:
    if o.get("name", "adamw") != "adamw":
        raise ConfigError("optim.name", "adamw", o.get("name"))
    lr = o.get("lr")
    if not _is_number(lr) or lr <= 0:
        raise ConfigError("optim.lr", "> 0", lr)
    betas = o.get("betas")
    if (
        not isinstance(betas, (list, tuple))
        or len(betas) != 2
        or not all(_is_number(b) and 0.0 <= b < 1.0 for b in betas)
    ):
        raise ConfigError("optim.betas", "two numbers in [0, 1), e.g. [0.9, 0.98]", list(betas or []))
    eps = o.get("eps")
    if not _is_number(eps) or eps <= 0:
        raise ConfigError("optim.eps", "> 0", eps)
    wd = o.get("weight_decay")
    if not _is_number(wd) or wd < 0:
        raise ConfigError("optim.weight_decay", "≥ 0", wd)
    one_of(o, "fused", "optim", ("auto", True, False))


def check_stop_at(stop_at: Any, total_steps: int | None) -> None:
    """``trainer.stop_at`` must stop before T (checked again once a budget has fixed T)."""
    if stop_at is None:
        return
    if not _is_int(stop_at) or stop_at < 1 or (total_steps is not None and stop_at >= total_steps):
        bound = f"trainer.max_steps = {total_steps}" if total_steps is not None else "T"
        raise ConfigError("trainer.stop_at", f"null or an integer in [1, {bound})", stop_at)


def check_trainer(t: Mapping[str, Any]) -> None:
    from training.budget import budget_key

    budget_key(t)
    for key in ("batch_size", "grad_accum_steps", "eval_batches", "log_every"):
        positive_int(t, key, "trainer")
    for key in ("eval_every", "ckpt_every", "sample_tokens"):
        positive_int(t, key, "trainer", minimum=0)
    positive_int(t, "keep_checkpoints", "trainer", minimum=2 if t.get("ckpt_every") else 1)
    if not _is_int(t.get("seed")):
        raise ConfigError("trainer.seed", "an integer", t.get("seed"))
    clip = t.get("grad_clip")
    if not _is_number(clip) or clip < 0:
        raise ConfigError("trainer.grad_clip", "≥ 0 (0 = no clipping)", clip)
    check_stop_at(t.get("stop_at"), t.get("max_steps"))
    one_of(t, "device", "trainer", DEVICES)
    one_of(t, "precision", "trainer", PRECISIONS)
    one_of(t, "compile", "trainer", COMPILE)
    one_of(t, "strategy", "trainer", STRATEGIES)
    if t.get("global_batch_tokens") is not None:
        positive_int(t, "global_batch_tokens", "trainer")
    one_of(t, "nonfinite", "trainer", NONFINITE)
    resume = t.get("resume")
    if resume is not False and resume != "auto" and not (isinstance(resume, str) and resume):
        raise ConfigError("trainer.resume", "auto, false or a checkpoint or run directory", resume)
    if not isinstance(t.get("allow_schedule_change"), bool):
        raise ConfigError("trainer.allow_schedule_change", "true or false", t.get("allow_schedule_change"))


def grad_accum_steps(t: Mapping[str, Any], block_size: int, world_size: int) -> int:
    """Micro-batches per update: ``trainer.grad_accum_steps``, or derived from ``trainer.global_batch_tokens`` so
    the global batch stays the same whatever the number of ranks."""
    target = t.get("global_batch_tokens")
    if target is None:
        return int(t["grad_accum_steps"])
    per_micro_step = t["batch_size"] * block_size * world_size
    if target % per_micro_step:
        raise ConfigError(
            "trainer.global_batch_tokens",
            f"a multiple of batch_size × block_size × ranks = {t['batch_size']} × {block_size} × {world_size} "
            f"= {per_micro_step}",
            target,
        )
    return target // per_micro_step


def check_data(d: Mapping[str, Any]) -> None:
    one_of(d, "source", "data", SOURCES)
    vf = d.get("val_fraction", 0.05)
    if d.get("val_split") is None and (not _is_number(vf) or not 0.0 < vf < 1.0):
        raise ConfigError("data.val_fraction", "a fraction in (0, 1)", vf)
    if not d.get("tokenizer"):
        from data.tokenizer import check_vocab_size

        check_vocab_size(d.get("vocab_size"), list(d.get("special_tokens") or ["<|endoftext|>"]))
    for key in ("max_documents", "max_bytes", "tokenizer_train_bytes"):
        if d.get(key) is not None:
            positive_int(d, key, "data")
    one_of(d, "on_decode_error", "data", DECODE_POLICIES)
    if d.get("source") == "text_files" and d.get("path") in (None, "", "???"):
        raise ConfigError("data.path", "a file, a directory or a glob for data=text_files", d.get("path"))
    if d.get("source") == "hub" and not d.get("name"):
        raise ConfigError("data.name", "a Hugging Face dataset name for a hub corpus", d.get("name"))


def check_logger(lg: Mapping[str, Any]) -> None:
    one_of(lg, "name", "logger", LOGGERS)
    if lg["name"] == "wandb":
        from training.wandb_logger import MODES

        one_of(lg, "mode", "logger", MODES)


def check_config(cfg: Mapping[str, Any]) -> None:
    """Every check that needs nothing but the config: model, optim, trainer, data, logger and schedule."""
    if not isinstance(cfg, dict):  # an OmegaConf DictConfig: check the plain, resolved values
        from omegaconf import OmegaConf

        cfg = OmegaConf.to_container(cfg, resolve=True)
    check_model(cfg["model"])
    check_optim(cfg["optim"])
    check_trainer(cfg["trainer"])
    grad_accum_steps(cfg["trainer"], cfg["model"]["block_size"], 1)
    check_data(cfg["data"])
    check_logger(cfg["logger"])
    from scheduling import schedule_from_config

    # With a token or time budget T is known only later: check here what does not depend on it.
    total = cfg["trainer"]["max_steps"] or PROVISIONAL_STEPS
    schedule_from_config(cfg["schedule"], total, cfg["optim"]["lr"])
