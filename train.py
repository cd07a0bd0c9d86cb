"""Train a GPT with Hydra: ``python train.py [group=option ...] [key=value ...]``.

    python train.py                                   # the nano GPT on the built-in corpus (CPU or GPU)
    python train.py model=micro schedule=wsd optim.lr=1e-3 trainer.max_steps=500
    python train.py -m schedule=cosine,linear         # a sweep: one run directory per job
    torchrun --nproc_per_node=8 train.py model=gpt2   # data parallel over 8 GPUs

Reads top to bottom: check the config, build data, model, optimizer and schedule, resume if there is a
checkpoint, then the loop — one optimizer update per iteration, ``scheduler.step()`` once after each.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from itertools import islice
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from data import TrainBatches, ValBatches, prepare, token_byte_lengths
from model import GPT, GPTConfig, full_context_forward, padded_vocab, sample_text
from model.flops import model_flops_per_token, peak_flops
from scheduling import build_scheduler, schedule_from_config
from training import checkpoint, distributed, parallel
from training.budget import (
    PhaseClock,
    TimePlan,
    budget_key,
    eval_seconds,
    measure_time_plan,
    measure_update_seconds,
    measurement_seconds,
    projected_end,
    projection_report,
    sample_seconds,
    seconds_since_process_start,
    spent_record,
    spent_report,
    steps_from_tokens,
)
from training.engine import NONFINITE, evaluate, train_update_retrying
from training.errors import ConfigError
from training.metrics import CsvSink, JsonlSink, Metrics
from training.optim import build_optimizer
from training.plots import write_run_plots
from training.progress import ProgressSink, duration, human, start_summary
from training.secrets import redact, register_overrides, scrub_hydra_files
from training.signals import EXIT_RESUMABLE, StopSignals
from training.validate import check_config, check_stop_at, grad_accum_steps

log = logging.getLogger("train")


def peak_memory_gb(device: torch.device) -> float:
    """Peak memory so far: allocated on the GPU, or the process's resident set on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kilobytes on Linux


def train(cfg: DictConfig) -> float:
    # ---- config: every check before any work or file --------------------------------------------------
    first_job = HydraConfig.get().job.get("num") in (None, 0)  # a later sweep job's clock starts with the job
    job_started = time.perf_counter() - (seconds_since_process_start() if first_job else 0.0)
    check_config(cfg)
    register_overrides(list(HydraConfig.get().overrides.task))  # their secret-looking values never get written
    dist = distributed.init(cfg.trainer.device)
    run_dir = Path(distributed.broadcast_object(HydraConfig.get().runtime.output_dir)).resolve()
    device, seed = dist.device, cfg.trainer.seed
    precision = distributed.resolve_precision(cfg.trainer.precision, device)
    strategy = parallel.resolve_strategy(cfg.trainer.strategy, dist.world_size)
    use_compile = distributed.resolve_compile(cfg.trainer.compile, device)
    block, batch = cfg.model.block_size, cfg.trainer.batch_size
    accum = grad_accum_steps(cfg.trainer, block, dist.world_size)
    resume_from = distributed.broadcast_object(
        checkpoint.find_resume(cfg.trainer.resume, run_dir) if dist.is_main else None
    )
    state = checkpoint.load(resume_from) if resume_from else None
    if not dist.is_main:
        logging.getLogger().setLevel(logging.WARNING)

    # ---- data: corpus → tokenizer → token cache → batches (rank 0 prepares, the others reuse) ----------
    cache = distributed.in_turn(lambda: prepare(cfg.data), dist)
    tokenizer = cache.tokenizer()
    train_batches = TrainBatches(cache.tokens("train"), block, batch, accum, dist.world_size, dist.rank, seed)
    val_batches = ValBatches(cache.tokens("val"), block, batch, cfg.trainer.eval_batches, dist.world_size, dist.rank)
    token_bytes = torch.from_numpy(token_byte_lengths(tokenizer, padded_vocab(cache.vocab_size))).to(device)

    # ---- model, optimizer, schedule (and the checkpoint's state, if resuming) ---------------------------
    vocab = padded_vocab(cache.vocab_size)
    model_config = GPTConfig.from_dict({**OmegaConf.to_container(cfg.model), "vocab_size": vocab})
    if state is not None:
        checkpoint.check_fits(state, model_config.to_dict(), cache.meta["tokenizer_hash"], resume_from)
    torch.manual_seed(seed)  # the same initial weights on every rank
    raw_model = GPT(model_config).to(device)
    n_params, flops_per_token = raw_model.num_params(), model_flops_per_token(raw_model)
    model = parallel.parallelize(raw_model, strategy, dist, precision, use_compile)
    use_autocast = parallel.autocast_needed(strategy, device)
    autocast = distributed.autocast(device, precision if use_autocast else "fp32")
    distributed.allow_tf32(device)  # here, not inline: train() must pickle for Hydra's submitit launcher
    distributed.keep_freed_memory(device)  # on a CPU: no page faults for each update's fresh activations

    def sample(n_tokens: int) -> str:
        """The end-of-run sample (under FSDP every rank takes part, with the same generator)."""
        same_on_every_rank = torch.Generator(device=device).manual_seed(seed)
        [text] = sample_text(raw_model, tokenizer, cfg.trainer.sample_prompt, n_tokens, temperature=0.8, top_k=50,
                             generator=same_on_every_rank, autocast=autocast)  # fmt: skip
        return text

    samples_here = bool(cfg.trainer.sample_tokens) and (dist.is_main or strategy == "fsdp")

    def measured_plan() -> TimePlan:
        """Measure the real update, an evaluation and sampling, and fit T into the wall-clock budget."""
        on = dict(device=device, autocast=autocast)
        first_two = list(islice(val_batches, 2))
        prompt_tokens = max(1, len(tokenizer.encode(cfg.trainer.sample_prompt).ids))  # "" starts from one token
        return measure_time_plan(
            cfg.trainer.max_time,
            elapsed=lambda: time.perf_counter() - job_started,
            measure_update=lambda: measure_update_seconds(
                model, raw_model, cfg.optim, train_batches.micro_batches, precision=precision,
                grad_clip=cfg.trainer.grad_clip, seconds=measurement_seconds(cfg.trainer.max_time), **on),
            measure_eval=lambda: eval_seconds(
                lambda b: evaluate(model, b, token_bytes, **on), first_two, len(val_batches), device),
            measure_sample=lambda: sample_seconds(
                sample, cfg.trainer.sample_tokens, device, cached=model_config.block_size - prompt_tokens,
                window=lambda: full_context_forward(raw_model, autocast)) if samples_here else 0.0,
            n_params=raw_model.num_params(), eval_every=cfg.trainer.eval_every, ckpt_every=cfg.trainer.ckpt_every,
            wandb=cfg.logger.name == "wandb", cuda=device.type == "cuda",
        )  # fmt: skip

    # ---- T: trainer.max_steps, a token budget, or a wall-clock budget measured on the real update --------
    tokens_per_update = train_batches.tokens_per_update
    budget = budget_key(cfg.trainer)
    plan = distributed.broadcast_object(measured_plan()) if budget == "max_time" and state is None else None
    clock, planned_at = PhaseClock(), time.perf_counter()  # where a timed run's budget goes, phase by phase
    if plan is not None:
        T, budget_record = plan.total_steps, plan.as_dict()
    elif state is not None and budget != "max_steps":
        T, budget_record = state["total_steps"], state["budget"]  # a resumed run keeps what its budget gave
    else:
        T = (
            cfg.trainer.max_steps
            if budget == "max_steps"
            else steps_from_tokens(cfg.trainer.max_tokens, tokens_per_update)
        )
        budget_record = {budget: cfg.trainer[budget], "total_steps": T}
    check_stop_at(cfg.trainer.stop_at, T)
    schedule = schedule_from_config(cfg.schedule, T, cfg.optim.lr)
    optimizer = build_optimizer(raw_model, cfg.optim, device)
    scheduler = build_scheduler(optimizer, schedule)
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    ckpt = checkpoint.Checkpointer(run_dir, raw_model, optimizer, scheduler, scaler, dist, strategy,
                                   cfg.trainer.keep_checkpoints)  # fmt: skip
    start, tokens_seen, wandb_id = 0, 0, None
    if state is not None:
        ckpt.restore(state, resume_from, cfg.trainer.allow_schedule_change)
        start, tokens_seen, wandb_id = state["step"], state["tokens"], state.get("wandb_run_id")
    else:
        torch.manual_seed(seed + dist.rank)  # dropout differs across ranks

    # ---- outputs: metric sinks and the start-of-run summary (from here on the run directory is written) --
    peak = peak_flops(device, precision)
    resolved = redact(OmegaConf.to_container(cfg, resolve=True))
    config_yaml = OmegaConf.to_yaml(resolved)
    metrics, wandb_sink, hydra_cfg = Metrics([]), None, HydraConfig.get()
    if dist.is_main:
        scrub_hydra_files(run_dir)
        resume_step = start if state is not None else None
        sinks = [JsonlSink(run_dir / "metrics.jsonl", resume_step), ProgressSink(T, start, cfg.trainer.log_every)]
        if cfg.logger.name == "csv":
            sinks.append(CsvSink(run_dir / "metrics.csv", resume_step))
        if cfg.logger.name == "wandb":
            from training.wandb_logger import WandbSink, swept_overrides

            # A sweep's jobs share one W&B group (the sweep directory); each is named after its swept values.
            sweep = hydra_cfg.mode == RunMode.MULTIRUN
            group = str(hydra_cfg.sweep.dir) if sweep else None
            swept = swept_overrides(list(hydra_cfg.overrides.task), sys.argv[1:], hydra_cfg.sweeper.get("params"))
            name = (",".join(swept) or f"job{hydra_cfg.job.num}") if sweep else None
            wandb_sink = WandbSink(cfg.logger, run_dir, resolved, wandb_id, name=name, group=group)
            wandb_sink.run.summary["params"] = n_params
            sinks.append(wandb_sink)
        metrics = Metrics(sinks)
        if plan is not None:
            (run_dir / "budget.json").write_text(json.dumps(plan.as_dict(), indent=1) + "\n")
            metrics.summary.update({f"budget/{k}": v for k, v in plan.as_dict().items()})
            log.info(
                "budget: %gs → T = %d updates (%.3f s each; evaluation %.2f s, checkpoint %.2f s, sample %.2f s, "
                "start-up and measurement %.1f s)", plan.max_time, T, plan.step_seconds, plan.eval_seconds,
                plan.checkpoint_seconds, plan.sample_seconds, plan.elapsed_at_plan,
            )  # fmt: skip
    p = schedule.params
    floor = f" → floor {cfg.optim.lr * p['min_lr_ratio']:.3g}" if "min_lr_ratio" in p else ""
    log.info("\n%s", start_summary(
        model=f"{model_config.arch}, {human(n_params)} parameters (n_layer {model_config.n_layer}, n_head "
              f"{model_config.n_head}, n_embd {model_config.n_embd}, block {block}, vocab {vocab})",
        data=f"{cache.meta['corpus']}: {human(cache.meta['tokens']['train'])} train / "
             f"{human(cache.meta['tokens']['val'])} val tokens",
        batch=f"{tokens_per_update:,} tokens per update = {dist.world_size} rank(s) × {accum} micro-batch(es) "
              f"× {batch} × {block}",
        schedule=f"{schedule.name}: warmup {p.get('warmup_steps', 0)}, peak {cfg.optim.lr:g}{floor}, "
                 f"T = {T:,} updates" + (f", resuming at {start}" if state is not None else ""),
        device=f"{device}, {precision}, {strategy}{', compiled' if use_compile else ''}",
        run_dir=str(run_dir),
    ))  # fmt: skip
    if state is not None:
        log.info("resuming from %s at update %d", resume_from, start)

    def save_checkpoint(step: int) -> None:
        extra = {
            "total_steps": T,
            "budget": budget_record,
            "model_config": model_config.to_dict(),
            "tokenizer_hash": cache.meta["tokenizer_hash"],
            "config": config_yaml,
            "wandb_run_id": wandb_sink.run_id if wandb_sink else wandb_id,
        }
        files = {"tokenizer.json": tokenizer.to_str(), "config.yaml": config_yaml}
        with clock("checkpoint"):
            path = ckpt.save(step, tokens_seen, extra, files)
        if path is not None:
            log.info("checkpoint %s", path)

    def run_eval(step: int) -> float:
        distributed.check_same_everywhere(step=step, lr=optimizer.param_groups[0]["lr"], index=scheduler.last_epoch)
        with clock("evaluation"):
            val_loss, val_bpb = evaluate(model, val_batches, token_bytes, device=device, autocast=autocast)
            metrics.log(step, {"val/loss": val_loss, "val/bpb": val_bpb})
        return val_loss

    # ---- the loop: update t uses lr = peak · λ(t); one scheduler.step() after each optimizer step ----------
    t, started, status = start, time.perf_counter(), "failed"
    clock.seconds["loggers"] = started - planned_at  # the metric sinks (W&B's start) and the summary
    stop_at = cfg.trainer.stop_at
    try:
        with StopSignals() as signals:
            while t < T:
                if cfg.trainer.eval_every and t % cfg.trainer.eval_every == 0:
                    run_eval(t)
                if plan is not None and t > 0 and 10 * t // T > 10 * (t - 1) // T:  # each tenth's first update
                    # where the timed run is heading at its updates' pace so far
                    now, spent = time.perf_counter() - job_started, clock.seconds["updates"]
                    end = projected_end(plan, now, t, spent, clock.seconds["loggers"], cfg.trainer.eval_every,
                                        cfg.trainer.ckpt_every)  # fmt: skip
                    log.info(projection_report(plan, t, now, end, spent))
                t0 = time.perf_counter()
                lr = optimizer.param_groups[0]["lr"]  # what update t uses
                micro_batches = train_batches.micro_batches(t)
                data_wait = time.perf_counter() - t0
                update, overflows = train_update_retrying(  # fp16: retried at a lower scale while it overflows
                    model, optimizer, scheduler, micro_batches,
                    device=device, autocast=autocast, scaler=scaler, grad_clip=cfg.trainer.grad_clip,
                )  # fmt: skip
                if overflows:
                    metrics.summary["fp16_overflows"] = metrics.summary.get("fp16_overflows", 0) + overflows
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
                    "tokens": tokens_seen, "train/data_wait": data_wait, "train/peak_memory_gb": peak_memory_gb(device),
                })  # fmt: skip
                t += 1
                stop = signals.requested or ("stop_at" if stop_at and t >= stop_at and t < T else None)
                stopping = distributed.any_rank(stop is not None)  # every rank stops at the same update
                clock.seconds["updates"] += time.perf_counter() - t0
                if stopping:
                    save_checkpoint(t)
                    log.info("stopped after update %d (%s); re-run the same command to resume", t, stop or "a rank")
                    status = "preempted"
                    raise SystemExit(EXIT_RESUMABLE)
                if cfg.trainer.ckpt_every and t % cfg.trainer.ckpt_every == 0 and t < T:
                    save_checkpoint(t)
        final_val = run_eval(T)
        save_checkpoint(T)
        if samples_here:
            with clock("sample"):
                text = sample(cfg.trainer.sample_tokens)
                log.info("sample:\n%s", text)
                if wandb_sink is not None:
                    wandb_sink.log_table("sample", ["step", "prompt", "text"], [[T, cfg.trainer.sample_prompt, text]])
        status = "ok"
        return final_val
    finally:
        if status == "ok" and dist.is_main:
            with clock("plots"):
                plots = write_run_plots(run_dir)
            best = metrics.summary
            took, at_end = duration(time.perf_counter() - started), time.perf_counter() - job_started
            if plan is not None:
                took += f" of training; {at_end:.1f} s of the {plan.max_time:g} s budget"
                record = spent_record(plan, clock.seconds, at_end, cfg.trainer.eval_every, cfg.trainer.ckpt_every)
                (run_dir / "budget.json").write_text(json.dumps(record, indent=1) + "\n")
                metrics.summary.update({f"budget/spent/{k}": v for k, v in record["spent"].items()})
                log.info(spent_report(record))
            log.info("\n%s", start_summary(
                done=f"{took}: {best_validation(best)}",
                run_dir=str(run_dir),
                metrics="metrics.jsonl" + (", metrics.csv" if cfg.logger.name == "csv" else ""),
                checkpoint=str(checkpoint.latest(run_dir / "checkpoints").relative_to(run_dir)),
                plots=", ".join(str(q.relative_to(run_dir)) for q in plots),
            ))  # fmt: skip
        metrics.close(status)
        distributed.shutdown()


def best_validation(summary: dict) -> str:
    """The end-of-run line's verdict: the best validation, and the batches skipped as non-finite, if any."""
    if "best/val_loss" in summary:
        best = (f"best val loss {summary['best/val_loss']:.4f} ({summary['best/val_bpb']:.4f} bits per byte) at "
                f"update {summary['best/step']}")  # fmt: skip
    else:
        best = "no validation loss was finite"
    skipped = summary.get("skipped_nonfinite")
    return best + (f"; {skipped} update(s) skipped as non-finite (trainer.nonfinite=skip)" if skipped else "")


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
