"""Train a GPT with Hydra: ``python train.py [group=option ...] [key=value ...]``.

    python train.py                                   # the nano GPT on the built-in corpus (CPU or GPU)
    python train.py model=micro schedule=wsd optim.lr=1e-3 trainer.max_steps=500
    python train.py -m schedule=cosine,linear         # a sweep: one run directory per job
    torchrun --nproc_per_node=8 train.py model=gpt2   # data parallel over 8 GPUs

Reads top to bottom: check the config, build data, model, optimizer and schedule, resume if there is a
checkpoint, then the loop — one optimizer update per iteration, ``scheduler.step()`` once after each.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import sys
import time
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from data import TrainBatches, ValBatches, prepare, token_byte_lengths
from model import GPT, GPTConfig, generate
from model.flops import model_flops_per_token, peak_flops
from scheduling import build_scheduler, restore_scheduler, schedule_from_config
from training import checkpoint, distributed
from training.engine import NONFINITE, OVERFLOW, evaluate, train_update
from training.errors import ConfigError
from training.metrics import ConsoleSink, CsvSink, JsonlSink, Metrics, redact
from training.optim import build_optimizer
from training.validate import check_config

log = logging.getLogger("train")

VOCAB_MULTIPLE = 64  # the model's vocab is padded to a multiple of this (faster matmuls)


def padded_vocab(vocab_size: int) -> int:
    return VOCAB_MULTIPLE * math.ceil(vocab_size / VOCAB_MULTIPLE)


def find_resume_checkpoint(cfg: DictConfig, run_dir: Path) -> Path | None:
    """``trainer.resume``: auto = the run dir's latest checkpoint if any; false = refuse a run dir that has
    checkpoints; a path = that checkpoint (or that run directory's latest)."""
    resume, own = cfg.trainer.resume, checkpoint.latest(run_dir / "checkpoints")
    if resume == "auto":
        return own
    if resume is False:
        if own is not None:
            raise ConfigError(
                f"trainer.resume=false, but the run directory {run_dir} already holds checkpoints; "
                "use a new hydra.run.dir, or trainer.resume=auto to continue it"
            )
        return None
    return checkpoint.resolve(resume)


def check_checkpoint_fits(state: dict, model_config: GPTConfig, tokenizer_hash: str, path: Path) -> None:
    saved = state.get("model_config", {})
    diff = [f"{k} {saved.get(k)!r} → {v!r}" for k, v in model_config.to_dict().items() if saved.get(k) != v]
    if diff:
        raise ConfigError(
            f"checkpoint {path}: it holds a model of another shape or vocab than the config asks for "
            f"({', '.join(diff[:4])}); resume with the same model and data settings"
        )
    if state.get("tokenizer_hash") not in (None, tokenizer_hash):
        raise ConfigError(f"checkpoint {path}: it was trained with another tokenizer than data builds now")


def train(cfg: DictConfig) -> float:
    # ---- config: every check before any work or file --------------------------------------------------
    check_config(cfg)
    dist = distributed.init(cfg.trainer.device)
    run_dir = Path(distributed.broadcast_object(HydraConfig.get().runtime.output_dir)).resolve()
    device, seed = dist.device, cfg.trainer.seed
    precision = distributed.resolve_precision(cfg.trainer.precision, device)
    use_compile = device.type == "cuda" if cfg.trainer.compile == "auto" else cfg.trainer.compile
    T = cfg.trainer.max_steps
    schedule = schedule_from_config(cfg.schedule, T, cfg.optim.lr)
    resume_from = find_resume_checkpoint(cfg, run_dir)
    state = checkpoint.load(resume_from) if resume_from else None
    if not dist.is_main:
        logging.getLogger().setLevel(logging.WARNING)

    # ---- data: corpus → tokenizer → token cache → batches (rank 0 prepares, the others reuse) ----------
    if not dist.is_main:
        distributed.barrier()
    cache = prepare(cfg.data)
    if dist.is_main:
        distributed.barrier()
    tokenizer = cache.tokenizer()
    block, batch, accum = cfg.model.block_size, cfg.trainer.batch_size, cfg.trainer.grad_accum_steps
    train_batches = TrainBatches(cache.tokens("train"), block, batch, accum, dist.world_size, dist.rank, seed)
    val_batches = ValBatches(cache.tokens("val"), block, batch, cfg.trainer.eval_batches, dist.world_size, dist.rank)
    token_bytes = torch.from_numpy(token_byte_lengths(tokenizer, padded_vocab(cache.vocab_size))).to(device)

    # ---- model, optimizer, schedule ------------------------------------------------------------------
    torch.manual_seed(seed)  # the same initial weights on every rank
    model_config = GPTConfig.from_dict(
        {**OmegaConf.to_container(cfg.model), "vocab_size": padded_vocab(cache.vocab_size)}
    )
    if state is not None:
        check_checkpoint_fits(state, model_config, cache.meta["tokenizer_hash"], resume_from)
    raw_model = GPT(model_config).to(device)
    optimizer = build_optimizer(raw_model, cfg.optim, device)
    scheduler = build_scheduler(optimizer, schedule)
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    start, tokens_seen, wandb_id = 0, 0, None
    if state is not None:
        raw_model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        restore_scheduler(scheduler, state["scheduler"], cfg.trainer.allow_schedule_change)
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start, tokens_seen, wandb_id = state["step"], state["tokens"], state.get("wandb_run_id")
        rng = state["rng"]
        checkpoint.set_rng_state(rng[dist.rank] if dist.rank < len(rng) else rng[0])
    else:
        torch.manual_seed(seed + dist.rank)  # dropout differs across ranks
    model = torch.compile(raw_model) if use_compile else raw_model
    if dist.distributed:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    autocast = distributed.autocast(device, precision)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    # ---- outputs: metric sinks and the start-of-run summary (from here on the run directory is written) --
    n_params = raw_model.num_params()
    flops_per_token = model_flops_per_token(raw_model)
    peak = peak_flops(device, precision)
    tokens_per_update = train_batches.tokens_per_update
    config_yaml = OmegaConf.to_yaml(redact(OmegaConf.to_container(cfg, resolve=True)))
    metrics = Metrics([])
    wandb_sink = None
    if dist.is_main:
        resume_step = start if state is not None else None
        sinks = [JsonlSink(run_dir / "metrics.jsonl", resume_step), ConsoleSink(T, cfg.trainer.log_every)]
        if cfg.logger.name == "csv":
            sinks.append(CsvSink(run_dir / "metrics.csv", resume_step))
        if cfg.logger.name == "wandb":
            from training.wandb_logger import WandbSink

            wandb_sink = WandbSink(cfg.logger, run_dir, redact(OmegaConf.to_container(cfg, resolve=True)), wandb_id)
            wandb_sink.run.summary["params"] = n_params
            sinks.append(wandb_sink)
        metrics = Metrics(sinks)
    log.info(
        "model %s: %.2fM parameters | %d tokens per update | T = %d updates (%s) | device %s, %s%s | run dir %s",
        model_config.arch, n_params / 1e6, tokens_per_update, T, schedule.name, device, precision,
        ", compiled" if use_compile else "", run_dir,
    )  # fmt: skip
    if state is not None:
        log.info("resuming from %s at update %d", resume_from, start)

    def save_checkpoint(step: int) -> None:
        rngs = distributed.gather_object(checkpoint.rng_state())
        if not dist.is_main:
            return
        ckpt_state = {
            "model": raw_model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "step": step,
            "tokens": tokens_seen,
            "rng": rngs,
            "model_config": model_config.to_dict(),
            "tokenizer_hash": cache.meta["tokenizer_hash"],
            "config": config_yaml,
            "wandb_run_id": wandb_sink.run_id if wandb_sink else wandb_id,
        }
        files = {"tokenizer.json": tokenizer.to_str(), "config.yaml": config_yaml}
        path = checkpoint.save(run_dir / "checkpoints", step, ckpt_state, files, cfg.trainer.keep_checkpoints)
        log.info("checkpoint %s", path)

    def run_eval(step: int) -> float:
        val_loss, val_bpb = evaluate(model, val_batches, token_bytes, device=device, autocast=autocast)
        metrics.log(step, {"val/loss": val_loss, "val/bpb": val_bpb})
        return val_loss

    # ---- the loop: update t uses lr = peak · λ(t); one scheduler.step() after each optimizer step ----------
    t, started, ok = start, time.perf_counter(), False
    try:
        while t < T:
            if cfg.trainer.eval_every and t % cfg.trainer.eval_every == 0:
                run_eval(t)
            t0 = time.perf_counter()
            lr = optimizer.param_groups[0]["lr"]  # what update t uses
            update = train_update(
                model, optimizer, scheduler, train_batches.micro_batches(t),
                device=device, autocast=autocast, scaler=scaler, grad_clip=cfg.trainer.grad_clip,
            )  # fmt: skip
            if update.status == OVERFLOW:
                continue  # fp16 overflow: the scaler lowered its scale; retry update t with the same batch
            if update.status == NONFINITE:
                if cfg.trainer.nonfinite == "stop":
                    raise ConfigError(
                        f"update {t}: the loss ({update.loss}) or gradient norm ({update.grad_norm}) is not "
                        "finite; no optimizer step was taken with it and the last good checkpoint is kept "
                        "(lower optim.lr, or set trainer.nonfinite=skip to skip such batches)"
                    )
                scheduler.step()  # skip the batch: the update index and the schedule move on without a step
                metrics.summary["skipped_nonfinite"] = metrics.summary.get("skipped_nonfinite", 0) + 1
            step_time = time.perf_counter() - t0
            tokens_seen += tokens_per_update
            tokens_per_sec = tokens_per_update / step_time
            mfu = flops_per_token * tokens_per_sec / (peak * dist.world_size) if peak else None
            metrics.log(t, {
                "train/loss": update.loss, "train/lr": lr, "train/grad_norm": update.grad_norm,
                "train/tokens_per_sec": tokens_per_sec, "train/mfu": mfu, "train/step_time": step_time,
                "tokens": tokens_seen,
            })  # fmt: skip
            t += 1
            if cfg.trainer.ckpt_every and t % cfg.trainer.ckpt_every == 0 and t < T:
                save_checkpoint(t)
        final_val = run_eval(T)
        save_checkpoint(T)
        if dist.is_main and cfg.trainer.sample_tokens:
            prompt = torch.tensor([tokenizer.encode(cfg.trainer.sample_prompt).ids], device=device)
            with autocast:
                out = generate(raw_model, prompt, cfg.trainer.sample_tokens, temperature=0.8, top_k=50,
                               vocab_size=cache.vocab_size)  # fmt: skip
            sample = tokenizer.decode(out[0].tolist())
            log.info("sample:\n%s", sample)
            if wandb_sink is not None:
                wandb_sink.log_table("sample", ["step", "prompt", "text"], [[T, cfg.trainer.sample_prompt, sample]])
        ok = True
        log.info("done in %.1f s: val loss %.4f | outputs in %s", time.perf_counter() - started, final_val, run_dir)
        return final_val
    finally:
        metrics.close(ok)
        distributed.shutdown()


def fresh_run_dir(run_dir: Path) -> bool:
    """A run directory that holds nothing but what Hydra wrote at start-up."""
    return run_dir.is_dir() and all(p.name in (".hydra", "train.log") for p in run_dir.iterdir())


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """Run ``train``; a bad config, data file or checkpoint ends the run with one line and exit code 2."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    fresh = fresh_run_dir(run_dir)
    try:
        return train(cfg)
    except ConfigError as e:
        if HydraConfig.get().mode == RunMode.MULTIRUN or os.environ.get("HYDRA_FULL_ERROR") == "1":
            log.error("error: %s", e)
            raise  # a sweep records the job as failed and runs its siblings
        if fresh and not (run_dir / "metrics.jsonl").exists() and distributed.env_world()[0] == 0:
            shutil.rmtree(run_dir, ignore_errors=True)  # leave nothing behind for a run that never started
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def rank_argv(argv: list[str]) -> list[str]:
    """Under torchrun every rank runs Hydra; only rank 0 may create the run directory (the others receive
    its path), or each rank would make its own timestamped directory."""
    rank, _, world = distributed.env_world()
    if world == 1 or rank == 0:
        return argv
    kept = [a for a in argv if not a.lstrip("+").startswith(("hydra.run.dir=", "hydra.output_subdir="))]
    return kept + ["hydra.run.dir=.", "hydra.output_subdir=null", "hydra/job_logging=disabled"]


if __name__ == "__main__":
    sys.argv = rank_argv(sys.argv)
    main()
