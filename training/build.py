"""The parts of a run, built from a checked config before update 0: data, model, T, optimizer and schedule,
checkpointer, metric sinks — and what the loop does with them besides the update (evaluate, save, log, the
end-of-run sample and reports). ``build_run`` writes nothing but the run directory's outputs, in this order:
nothing until every part is built and the checkpoint (if resuming) is restored.
"""

from __future__ import annotations

import json
import logging
import math
import resource
import time
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from data import MixtureValBatches, TrainBatches, ValBatches, prepare, token_byte_lengths
from data.atomic import replace_file
from model import GPT, GPTConfig, full_context_forward, sample_text
from model.flops import model_flops_per_token, peak_flops
from model.gpt import liger_cross_entropy
from scheduling import build_scheduler, schedule_from_config
from training import budget, checkpoint, distributed, run_lock
from training.config import ConfigError, check_stop_at, grad_accum_steps
from training.engine import Update, evaluate, loss_and_bpb, train_update, validation_sums
from training.init_from import initial_weights, model_vocab
from training.metrics import (
    CsvSink,
    JsonlSink,
    Metrics,
    ProgressSink,
    duration,
    human,
    last_logged_step,
    start_summary,
)
from training.optim import build_optimizer, describe_optimizer
from training.plots import write_run_plots
from training.secrets import redact, register_overrides, scrub_hydra_files

log = logging.getLogger("train")


@dataclass(frozen=True)
class Sweep:
    """A multirun job's place in its sweep: the W&B group its jobs share and this job's name."""

    group: str
    name: str


@dataclass
class Run:
    """Everything the loop needs, built; ``start`` is the first update to take (> 0 when resuming)."""

    cfg: DictConfig
    run_dir: Path
    dist: distributed.Dist
    model: torch.nn.Module  # what the loop calls: compiled, wrapped or sharded
    raw_model: GPT
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    train_batches: TrainBatches
    val_batches: ValBatches | MixtureValBatches
    checkpointer: checkpoint.Checkpointer
    metrics: Metrics
    update_settings: dict[str, Any]  # train_update's keywords: device, autocast, scaler, grad_clip
    strategy: str  # single | ddp | fsdp
    precision: str  # fp32 | bf16 | fp16 | fp8
    compiled: bool
    total_steps: int
    budget: dict[str, Any]
    start: int
    tokens_seen: int
    started: float  # time.perf_counter() at the job's start
    wandb_sink: Any  # the W&B sink when logger=wandb (rank 0), for its run id and tables
    extra_state: dict[str, Any]  # saved in every checkpoint beside the training state
    files: dict[str, str]  # written into every checkpoint folder
    token_bytes: torch.Tensor
    tokenizer: Any
    flops_per_token: float
    peak_flops: float | None
    schedule_history: list[dict[str, Any]] = field(default_factory=list)  # schedule.json: what each update used

    @property
    def device(self) -> torch.device:
        return self.dist.device

    def evaluate(self, step: int) -> float:
        """Validation loss and bits per byte at ``step``, logged; every rank must agree on the schedule."""
        lr = self.optimizer.param_groups[0]["lr"]
        distributed.check_same_everywhere(step=step, lr=lr, index=self.scheduler.last_epoch)
        metrics = validate(self.model, self.val_batches, self.token_bytes, device=self.device,
                           autocast=self.update_settings["autocast"])  # fmt: skip
        self.metrics.log(step, metrics)
        return metrics["val/loss"]

    def save(self, step: int) -> None:
        wandb_id = self.wandb_sink.run_id if self.wandb_sink else self.extra_state["wandb_run_id"]
        extra = {**self.extra_state, "wandb_run_id": wandb_id}
        path = self.checkpointer.save(step, self.tokens_seen, extra, self.files)
        if path is not None:
            log.info("checkpoint %s", path)

    def skip_nonfinite(self, t: int, update: Update) -> None:
        """``trainer.nonfinite``: stop (the last good checkpoint stays the latest) or skip the batch."""
        if self.cfg.trainer.nonfinite == "stop":
            raise ConfigError(
                f"update {t}: the loss ({update.loss}) or gradient norm ({update.grad_norm}) is not finite; no "
                "optimizer step was taken with it and the last good checkpoint is kept (lower optim.lr, or set "
                "trainer.nonfinite=skip to skip such batches)"
            )
        self.scheduler.step()  # the update index and the schedule move on without an optimizer step
        self.metrics.count("skipped_nonfinite")

    def learning_rates(self) -> dict[str, float]:
        """The lrs the next update uses: ``train/lr`` (param group 0, AdamW's), and ``train/lr_<name>`` of each
        named group (Muon's)."""
        groups = self.optimizer.param_groups
        return {"train/lr": groups[0]["lr"], **{f"train/lr_{g['name']}": g["lr"] for g in groups if "name" in g}}

    def log_update(self, t: int, update: Update, lrs: dict[str, float], step_time: float, data_wait: float) -> None:
        tokens = self.train_batches.tokens_per_update
        self.tokens_seen += tokens
        tokens_per_sec = tokens / step_time
        mfu = (
            self.flops_per_token * tokens_per_sec / (self.peak_flops * self.dist.world_size)
            if self.peak_flops
            else None
        )
        record = {"train/loss": update.loss, **lrs, "train/grad_norm": update.grad_norm,
                  "train/tokens_per_sec": tokens_per_sec, "train/mfu": mfu, "train/step_time": step_time,
                  "tokens": self.tokens_seen, "train/data_wait": data_wait}  # fmt: skip
        self.metrics.log(t, {**record, "train/peak_memory_gb": peak_memory_gb(self.device)})

    def sample(self, n_tokens: int) -> str:
        return sample(self.raw_model, self.tokenizer, self.cfg.trainer, n_tokens, self.update_settings["autocast"])

    def end_sample(self) -> None:
        if not samples_here(self.cfg.trainer, self.dist, self.strategy):
            return
        text = self.sample(self.cfg.trainer.sample_tokens)
        log.info("sample:\n%s", text)
        if self.wandb_sink is not None:
            self.wandb_sink.log_table("sample", ["step", "prompt", "text"],
                                      [[self.total_steps, self.cfg.trainer.sample_prompt, text]])  # fmt: skip

    def finish(self, status: str) -> None:
        """Close the run: ``status`` ok, failed, or preempted. The sinks are closed, and the run directory's lock
        released, even when the reports fail (a full disk). After a run that ended well on every rank, the ranks
        leave together."""
        ended_well = status == "ok"  # the same on every rank: each finished the same loop
        try:
            self.report(status)
        except BaseException:
            status = "failed"
            raise
        finally:
            try:
                self.metrics.close(status)
            finally:
                distributed.shutdown(wait=ended_well)
                if self.dist.is_main:
                    run_lock.release(self.run_dir)  # taken by open_outputs

    def report(self, status: str) -> None:
        """The end-of-run reports: plots and the summary when ``status`` is ok; summary.json records the status,
        T, tokens, seconds and the summary's values (what a sweep report reads)."""
        if self.dist.is_main:
            record = {"status": status, "total_steps": self.total_steps, "tokens": self.tokens_seen,
                      "seconds": round(time.perf_counter() - self.started, 2), **self.metrics.summary}  # fmt: skip
            write_summary(self.run_dir, record)
        if status == "ok" and self.dist.is_main:
            plots = write_run_plots(self.run_dir)
            took = time.perf_counter() - self.started
            if "max_time" in self.budget:
                plan = budget.TimePlan(**self.budget)
                planned = plan.planned_end(self.cfg.trainer.eval_every, self.cfg.trainer.ckpt_every)
                record = {**self.budget, "planned_seconds": round(planned, 2), "took_seconds": round(took, 2)}
                (self.run_dir / "budget.json").write_text(json.dumps(record, indent=1) + "\n")
                self.metrics.summary.update({"budget/planned_seconds": planned, "budget/took_seconds": took})
                log.info("budget: planned %.1f s, took %.1f s of %g s", planned, took, plan.max_time)
            ckpt = checkpoint.latest(self.run_dir / "checkpoints")
            log.info("\n%s", start_summary(
                done=f"{duration(took)}: {best_validation(self.metrics.summary)}",
                run_dir=str(self.run_dir),
                metrics="metrics.jsonl" + (", metrics.csv" if self.cfg.logger.name == "csv" else ""),
                checkpoint=str(ckpt.relative_to(self.run_dir)) if ckpt else "none",
                plots=", ".join(str(p.relative_to(self.run_dir)) for p in plots),
            ))  # fmt: skip


def write_summary(run_dir: Path, record: dict[str, Any]) -> None:
    """Merge ``record`` into the run directory's summary.json (strict JSON: a non-finite value is null)."""
    path = run_dir / "summary.json"
    old = json.loads(path.read_text()) if path.is_file() else {}
    merged = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in {**old, **record}.items()}
    replace_file(path, json.dumps(merged, indent=1, allow_nan=False) + "\n")


def sample(raw_model: GPT, tokenizer, trainer, n_tokens: int, autocast) -> str:
    """A sample from the model at the run's settings (under FSDP every rank takes part, with the same generator)."""
    device = next(raw_model.parameters()).device
    same_on_every_rank = torch.Generator(device=device).manual_seed(trainer.seed)
    [text] = sample_text(raw_model, tokenizer, trainer.sample_prompt, n_tokens, temperature=0.8, top_k=50,
                         generator=same_on_every_rank, autocast=autocast)  # fmt: skip
    return text


def peak_memory_gb(device: torch.device) -> float:
    """Peak memory so far: allocated on the GPU, or the process's resident set on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kilobytes on Linux


def samples_here(trainer, dist: distributed.Dist, strategy: str) -> bool:
    """The end-of-run sample runs on rank 0, and under FSDP on every rank (each holds a shard of the weights)."""
    return bool(trainer.sample_tokens) and (dist.is_main or strategy == "fsdp")


def best_validation(summary: dict) -> str:
    """The end-of-run verdict: the best validation, and the batches skipped as non-finite, if any."""
    if "best/val_loss" in summary:
        best = (f"best val loss {summary['best/val_loss']:.4f} ({summary['best/val_bpb']:.4f} bits per byte) at "
                f"update {summary['best/step']}")  # fmt: skip
    else:
        best = "no validation loss was finite"
    skipped = summary.get("skipped_nonfinite")
    return best + (f"; {skipped} update(s) skipped as non-finite (trainer.nonfinite=skip)" if skipped else "")


def measure_update(model, raw_model, optim_cfg, micro_batches, seconds: float, **settings) -> float:
    """Median seconds of one real update (fetching its batches, forward, backward, clip, the host sync and an
    optimizer step), with a throwaway optimizer at lr 0: weights, the real optimizer and generators stay as
    they were."""
    device = settings["device"]
    throwaway = build_optimizer(raw_model, optim_cfg, device)
    for group in throwaway.param_groups:
        group["lr"] = 0.0
    schedule = torch.optim.lr_scheduler.LambdaLR(throwaway, lambda t: 0.0)
    scaler = torch.amp.GradScaler(device.type) if settings["scaler"] is not None else None
    kwargs = {**settings, "scaler": scaler}
    update = lambda i: budget.timed(
        lambda: train_update(model, throwaway, schedule, micro_batches(i), **kwargs), device
    )  # noqa: E731
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        return budget.median_seconds(update, seconds)


def build_run(cfg: DictConfig, run_dir: Path, *, sweep: Sweep | None = None, overrides: list[str] | None = None,
              started: float | None = None) -> Run:  # fmt: skip
    """Build every part of a run from ``cfg`` (already checked), in order: the process and device, the
    checkpoint to resume, data, model, T, optimizer and schedule, and last the outputs in ``run_dir``."""
    started = time.perf_counter() if started is None else started
    register_overrides(list(overrides or []))  # their secret-looking values never get written
    trainer = cfg.trainer
    dist = distributed.init(trainer.device)
    run_dir = Path(distributed.broadcast_object(str(run_dir))).resolve()
    resume_from = distributed.broadcast_object(
        checkpoint.find_resume(trainer.resume, run_dir) if dist.is_main else None
    )
    state = checkpoint.load(resume_from) if resume_from else None
    if not dist.is_main:
        logging.getLogger().setLevel(logging.WARNING)
    cache, train_batches, val_batches = build_data(cfg, dist)
    tokenizer = cache.tokenizer()
    vocab = model_vocab(cfg.model, cache.vocab_size)
    separator = cache.eot_id if cfg.data.document_mask else None  # attention stays within documents
    model_config = GPTConfig.from_dict({**OmegaConf.to_container(cfg.model), "vocab_size": vocab,
                                        "document_separator": separator})  # fmt: skip
    if state is not None:
        checkpoint.check_fits(state, model_config.to_dict(), cache.meta["tokenizer_hash"], resume_from)
    weights = initial_weights(cfg.model, model_config) if state is None else None  # model.init_from's
    raw_model, model, settings, how = build_model(cfg, dist, model_config, weights)
    token_bytes = torch.from_numpy(token_byte_lengths(tokenizer, vocab)).to(dist.device)
    run = Run(cfg=cfg, run_dir=run_dir, dist=dist, model=model, raw_model=raw_model, optimizer=None,
              scheduler=None, train_batches=train_batches, val_batches=val_batches, checkpointer=None,
              metrics=Metrics([]), update_settings=settings, **how, total_steps=0, budget={}, start=0,
              tokens_seen=0, started=started, wandb_sink=None, extra_state={}, files={}, token_bytes=token_bytes,
              tokenizer=tokenizer, flops_per_token=model_flops_per_token(raw_model),
              peak_flops=peak_flops(dist.device, how["precision"]))  # fmt: skip

    # T, fixed before update 0 (every rank measures a time budget's update together; rank 0's plan counts)
    T, run.budget = budget.total_steps(trainer, train_batches.tokens_per_update, state,
                                       lambda: distributed.broadcast_object(measure_plan(run)))  # fmt: skip
    check_stop_at(trainer.stop_at, T)
    schedule = schedule_from_config(cfg.schedule, T, cfg.optim.lr)
    run.total_steps, run.optimizer = T, build_optimizer(raw_model, cfg.optim, dist.device)
    run.scheduler = build_scheduler(run.optimizer, schedule)
    run.checkpointer = checkpoint.Checkpointer(run_dir, raw_model, run.optimizer, run.scheduler, settings["scaler"],
                                               dist, run.strategy, trainer.keep_checkpoints)  # fmt: skip
    wandb_id = None
    if state is not None:
        run.checkpointer.restore(state, resume_from, trainer.allow_schedule_change, cfg.optim.name)
        run.start, run.tokens_seen = state["step"], state["tokens"]
        # the same W&B run when this run directory continues; a new one for a branch from another run's checkpoint
        own = Path(resume_from).resolve().is_relative_to(run_dir)
        wandb_id = state.get("wandb_run_id") if own else None
    else:
        torch.manual_seed(trainer.seed + dist.rank)  # dropout differs across ranks
    resolved = redact(OmegaConf.to_container(cfg, resolve=True))
    run.schedule_history = schedule_history(state, run.start, T, cfg, resume_from)
    run.files = {"tokenizer.json": tokenizer.to_str(), "config.yaml": OmegaConf.to_yaml(resolved)}
    run.extra_state = {"total_steps": T, "budget": run.budget, "optimizer_name": cfg.optim.name,
                       "model_config": model_config.to_dict(),
                       "tokenizer_hash": cache.meta["tokenizer_hash"], "config": run.files["config.yaml"],
                       "wandb_run_id": wandb_id, "schedule_history": run.schedule_history}  # fmt: skip
    if dist.is_main:  # from here on the run directory is written
        open_outputs(run, resolved, sweep, resuming=state is not None, wandb_id=wandb_id)
    log.info("\n%s", start_summary(**describe(run, cache.meta, schedule)))
    if state is not None:
        log.info("resuming from %s at update %d", resume_from, run.start)
    return run


def schedule_history(state: dict | None, start: int, T: int, cfg: DictConfig, resumed_from: Path | None) -> list[dict]:
    """The schedule of every update so far, as ``schedule.json`` records it: one segment per start or resume,
    ``{"from_update", "total_steps", "peak_lr", "schedule" (the resolved group), "resumed_from"}``, the last one
    in force from its update on. A resume keeps the checkpoint's segments before the resumed update (seeded from
    its config when it records none), so a branch in a new run directory carries its stable run's history."""
    history = []
    if state is not None:
        history = list(state.get("schedule_history") or [])
        if not history and state.get("config"):
            saved = OmegaConf.create(state["config"])
            history = [{"from_update": 0, "total_steps": state.get("total_steps"), "peak_lr": saved.optim.lr,
                        "schedule": OmegaConf.to_container(saved.schedule), "resumed_from": None}]  # fmt: skip
    segment = {"from_update": start, "total_steps": T, "peak_lr": float(cfg.optim.lr),
               "schedule": OmegaConf.to_container(cfg.schedule, resolve=True),
               "resumed_from": str(resumed_from) if resumed_from else None}  # fmt: skip
    return [s for s in history if s["from_update"] < start] + [segment]


def build_data(cfg: DictConfig, dist: distributed.Dist) -> tuple[Any, TrainBatches, ValBatches | MixtureValBatches]:
    """corpus → tokenizer → token cache (rank 0 prepares, the others reuse) → this rank's batches; a mixture's
    train batches draw from its sources by weight, and each source keeps its own validation windows."""
    trainer, block = cfg.trainer, cfg.model.block_size
    cache = distributed.in_turn(lambda: prepare(cfg.data), dist)
    accum = grad_accum_steps(trainer, block, dist.world_size)
    weights = getattr(cache, "weights", None)  # a mixture's
    train_batches = TrainBatches(cache.tokens("train"), block, trainer.batch_size, accum, dist.world_size,
                                 dist.rank, trainer.seed, weights, vocab_size=cache.vocab_size)  # fmt: skip
    val = lambda tokens, name="": ValBatches(tokens, block, trainer.batch_size, trainer.eval_batches,  # noqa: E731
                                             dist.world_size, dist.rank, name, cache.vocab_size)  # fmt: skip
    if weights is None:
        return cache, train_batches, val(cache.tokens("val"))
    sources = {name: val(tokens, name) for name, tokens in cache.tokens("val").items()}
    return cache, train_batches, MixtureValBatches(sources, weights)


def validate(model, val_batches: ValBatches | MixtureValBatches, token_bytes: torch.Tensor, **on) -> dict[str, float]:
    """``val/loss`` and ``val/bpb``; for a mixture also ``val/<source>/loss`` and ``val/<source>/bpb``, and the
    overall values are the mixture's own: each source's sums weighted by its weight (every source has as many
    windows), so ``val/bpb`` is the bits per byte of text drawn as training draws it."""
    if not isinstance(val_batches, MixtureValBatches):
        loss, bpb = evaluate(model, val_batches, token_bytes, **on)
        return {"val/loss": loss, "val/bpb": bpb}
    metrics, total = {}, 0.0
    for name, batches in val_batches.sources.items():
        sums = validation_sums(model, batches, token_bytes, **on)
        metrics[f"val/{name}/loss"], metrics[f"val/{name}/bpb"] = loss_and_bpb(sums)
        total = total + val_batches.weights[name] * sums
    loss, bpb = loss_and_bpb(total)
    return {"val/loss": loss, "val/bpb": bpb, **metrics}


def build_model(cfg: DictConfig, dist: distributed.Dist, model_config: GPTConfig, weights: dict | None = None):
    """The model (the same initial weights on every rank), what the loop calls (compiled, wrapped or sharded),
    the update's settings (device, autocast, GradScaler, clipping), and the strategy, precision and compilation."""
    trainer, device = cfg.trainer, dist.device
    precision = distributed.resolve_precision(trainer.precision, device)
    strategy = distributed.resolve_strategy(trainer.strategy, dist.world_size)
    compiled = distributed.resolve_compile(trainer.compile, device)
    if model_config.fused_cross_entropy and (device.type != "cuda" or liger_cross_entropy() is None):
        why = (f"liger-kernel's kernels need a CUDA GPU, not the {device.type}" if device.type != "cuda"
               else "liger-kernel is not installed here (pip install liger-kernel)")  # fmt: skip
        log.warning("model.fused_cross_entropy: %s; the plain head and cross-entropy run instead", why)
    torch.manual_seed(trainer.seed)
    raw_model = GPT(model_config).to(device)
    if weights is not None:  # an imported model's, loaded before any wrapping or sharding
        raw_model.load_state_dict(weights)
    model = distributed.parallelize(raw_model, strategy, dist, precision, compiled)
    autocast = distributed.autocast(device, precision if distributed.autocast_needed(strategy, device) else "fp32")
    distributed.allow_tf32(device)  # here, not at import: train() must pickle for Hydra's submitit launcher
    distributed.keep_freed_memory(device)
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    settings = {"device": device, "autocast": autocast, "scaler": scaler, "grad_clip": trainer.grad_clip}
    return raw_model, model, settings, {"strategy": strategy, "precision": precision, "compiled": compiled}


def measure_plan(run: Run) -> budget.TimePlan:
    """A time budget's plan from the run's own update, evaluation and sample, measured now."""
    cfg, trainer, device = run.cfg, run.cfg.trainer, run.device
    on = {"device": device, "autocast": run.update_settings["autocast"]}
    first_two = list(islice(run.val_batches, 2))
    prompt_tokens = max(1, len(run.tokenizer.encode(trainer.sample_prompt).ids))  # "" starts from one token
    return budget.measure_time_plan(
        trainer.max_time, lambda: time.perf_counter() - run.started,
        update=lambda: measure_update(run.model, run.raw_model, cfg.optim, run.train_batches.micro_batches,
                                      budget.measurement_seconds(trainer.max_time), **run.update_settings),
        evaluation=lambda: budget.eval_seconds(lambda b: evaluate(run.model, b, run.token_bytes, **on), first_two,
                                               len(run.val_batches), device),
        sample=lambda: budget.sample_seconds(
            run.sample, trainer.sample_tokens, device, cached=cfg.model.block_size - prompt_tokens,
            window=lambda: full_context_forward(run.raw_model, on["autocast"]),
        ) if samples_here(trainer, run.dist, run.strategy) else 0.0,
        n_params=run.raw_model.num_params(), eval_every=trainer.eval_every, ckpt_every=trainer.ckpt_every,
        wandb=cfg.logger.name == "wandb", cuda=device.type == "cuda",
    )  # fmt: skip


def open_outputs(run: Run, resolved: dict, sweep: Sweep | None, resuming: bool, wandb_id: str | None) -> None:
    """The run directory's outputs (rank 0), once its lock is held: metric sinks — cut back to the resumed
    update — and budget.json."""
    cfg, run_dir = run.cfg, run.run_dir
    run_lock.acquire(run_dir)  # one writer per run directory: a second launch stops here with RunInUse
    scrub_hydra_files(run_dir)
    resume_step = run.start if resuming else None
    logged = last_logged_step(run_dir / "metrics.jsonl") if resuming else None  # before it is cut
    sinks = [JsonlSink(run_dir / "metrics.jsonl", resume_step),
             ProgressSink(run.total_steps, run.start, cfg.trainer.log_every)]  # fmt: skip
    if cfg.logger.name == "csv":
        sinks.append(CsvSink(run_dir / "metrics.csv", resume_step))
    if cfg.logger.name == "wandb":
        from training.wandb_logger import WandbSink

        run.wandb_sink = WandbSink(cfg.logger, run_dir, resolved, wandb_id, name=sweep and sweep.name,
                                   group=sweep and sweep.group, logged_through=logged)  # fmt: skip
        run.wandb_sink.run.summary["params"] = run.raw_model.num_params()
        sinks.append(run.wandb_sink)
    run.metrics = Metrics(sinks)
    replace_file(run_dir / "schedule.json", json.dumps({"segments": run.schedule_history}, indent=1) + "\n")
    plan = run.budget
    if "max_time" in plan and not resuming:
        (run_dir / "budget.json").write_text(json.dumps(plan, indent=1) + "\n")
        run.metrics.summary.update({f"budget/{k}": v for k, v in plan.items()})
        log.info("budget: %gs → T = %d updates (%.3f s each; evaluation %.2f s, checkpoint %.2f s, sample %.2f s, "
                 "start-up and measurement %.1f s)", plan["max_time"], run.total_steps, plan["step_seconds"],
                 plan["eval_seconds"], plan["checkpoint_seconds"], plan["sample_seconds"],
                 plan["elapsed_at_plan"])  # fmt: skip


def describe(run: Run, meta: dict, schedule) -> dict[str, str]:
    """The facts of the start-of-run summary."""
    c, p, lr = run.raw_model.config, schedule.params, run.cfg.optim.lr
    floor = f" → floor {lr * p['min_lr_ratio']:.3g}" if "min_lr_ratio" in p else ""
    b = run.train_batches
    return {
        "model": f"{c.arch}, {human(run.raw_model.num_params())} parameters (n_layer {c.n_layer}, n_head {c.n_head}, "
                 f"n_embd {c.n_embd}, block {c.block_size}, vocab {c.vocab_size})",
        "data": f"{meta['corpus']}: {human(meta['tokens']['train'])} train / {human(meta['tokens']['val'])} val tokens"
                + (", attention within documents" if c.document_separator is not None else ""),
        "batch": f"{b.tokens_per_update:,} tokens per update = {b.world} rank(s) × {b.accum} micro-batch(es) × "
                 f"{b.batch_size} × {b.block_size}",
        "schedule": f"{schedule.name}: warmup {p.get('warmup_steps', 0)}, peak {lr:g}{floor}, "
                    f"T = {run.total_steps:,} updates" + (f", resuming at {run.start}" if run.start else ""),
        "optimizer": describe_optimizer(run.optimizer),
        "device": f"{run.device}, {run.precision}, {run.strategy}{', compiled' if run.compiled else ''}",
        "run_dir": str(run.run_dir),
    }  # fmt: skip
