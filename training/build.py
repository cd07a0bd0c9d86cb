"""The one build of a run: every part, in order, from a checked config — the process and device, the checkpoint
to resume, data, model, evaluations, T, optimizer and schedule, checkpointer, and last the outputs — into a
``Run``, complete when made. ``build_run`` writes nothing but the run directory's outputs, and nothing until every
part is built and the checkpoint (if resuming) is restored.

``Run`` holds what the loop (train.py's ``fit``) uses, and what the loop does with it besides the update:
evaluate, save, log, the end-of-run sample, and finishing.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import resource
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from data import MixtureValBatches, TrainBatches, ValBatches, prepare, token_byte_lengths
from data.atomic import replace_file
from data.cache import special_tokens
from data.tokenizer import eot_id
from model import GPT, GPTConfig, full_context_forward, padded_vocab, sample_text
from model.flops import model_flops_per_token, peak_flops
from scheduling import build_scheduler, schedule_from_config
from scheduling.spec import first_line
from training import budget, checkpoint, distributed, run_lock, summary
from training.components import build, build_refusing, find
from training.config import LIST_GROUPS, USER_ERRORS, ConfigError, check_stop_at, grad_accum_steps
from training.engine import Model, TrainStep, Update, build_model
from training.evaluation import Clock, EvalContext, Evaluations
from training.init_from import initial_weights, model_vocab
from training.loggers import (
    JsonlSink,
    Metrics,
    ProgressSink,
    RunInfo,
    check_sink,
    flat_config,
    human,
    start_summary,
)
from training.optim import build_optimizer, describe_optimizer
from training.secrets import redact
from training.signals import Interrupted
from training.spikes import MAX_ROLLBACKS_TO_ONE_CHECKPOINT, Skips
from training.watchdog import Watchdog, failing_together

log = logging.getLogger("train")


@dataclass(frozen=True)
class Sweep:
    """A multirun job's place in its sweep: the group its jobs share in the trackers, and this job's name."""

    group: str  # the sweep directory
    name: str


@dataclass
class Run:
    """Everything the loop needs, built; ``start`` is the first update to take (> 0 when resuming)."""

    cfg: DictConfig
    run_dir: Path
    dist: distributed.Dist
    model: Model  # the GPT (model.raw), what the loop calls (model.module) and how its update runs
    step: TrainStep  # one optimizer update: the model with its optimizer and schedule
    train_batches: TrainBatches
    evaluations: Evaluations
    checkpointer: checkpoint.Checkpointer
    metrics: Metrics
    total_steps: int
    budget: dict[str, Any]
    start: int
    tokens_seen: int
    started: float  # time.perf_counter() at the job's start
    earlier_seconds: float  # what the run's earlier starts took, up to the checkpoint this one resumed
    extra_state: dict[str, Any]  # saved in every checkpoint beside the training state
    files: dict[str, str]  # written into every checkpoint folder
    tokenizer: Any
    skips: Skips  # which batch each update takes, and what trainer.on_spike=rollback skipped
    peak_measured_again: bool = False  # a CPU peak FLOP/s found low (MFU > 100 %) is measured again, once

    @property
    def device(self) -> torch.device:
        return self.dist.device

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.step.optimizer

    @property
    def scheduler(self) -> torch.optim.lr_scheduler.LambdaLR:
        return self.step.scheduler

    def evaluate(self, step: int) -> float:
        """Every evaluation at ``step``, logged; returns ``val/loss`` (nan without one). Every rank must agree on
        the schedule."""
        lr = self.optimizer.param_groups[0]["lr"]
        distributed.check_same_everywhere(step=step, lr=lr, index=self.scheduler.last_epoch)
        metrics = self.evaluations(self.model.module, step)
        self.metrics.log(step, metrics)
        return metrics.get("val/loss", float("nan"))

    def save(self, step: int) -> None:
        extra = {
            **self.extra_state,
            "sinks": {**self.extra_state["sinks"], **self.metrics.states()},
            "seconds": self.earlier_seconds + time.perf_counter() - self.started,
            "skips": self.skips.state_dict(),
            "summary": dict(self.metrics.summary),  # best/*, counters: a resume or rollback continues them
        }
        path = self.checkpointer.save(step, self.tokens_seen, extra, self.files)
        if path is not None:
            log.info("checkpoint %s", path)

    def skip_nonfinite(self, t: int, update: Update) -> None:
        """``trainer.nonfinite``: stop (the last good checkpoint stays the latest) or skip the batch."""
        if self.cfg.trainer.nonfinite == "stop":
            rollback = "" if self.cfg.trainer.on_spike else ", or trainer.on_spike=rollback to go back past them"
            raise ConfigError(
                f"update {t}: the loss ({update.loss}) or gradient norm ({update.grad_norm}) is not finite; no "
                "optimizer step was taken with it and the last good checkpoint, if any, is kept (lower optim.lr, "
                f"set trainer.nonfinite=skip to skip such batches{rollback})"
            )
        self.scheduler.step()  # the update index and the schedule move on without an optimizer step
        self.metrics.count("skipped_nonfinite")

    def micro_batches(self, t: int) -> list:
        """The micro-batches of update ``t``: those of its batch number (``t`` unless a rollback skipped some)."""
        return self.train_batches.micro_batches(self.skips.batch(t))

    def roll_back(self, t: int, update: Update, median: float) -> int | None:
        """``trainer.on_spike=rollback`` after a spike at update ``t``: the newest intact periodic checkpoint restored
        (``checkpoint.newest_periodic``), the batches since skipped, the metrics cut back to it; returns the update to
        take next (None: there is no checkpoint yet to go back to, and the run goes on)."""
        trainer = self.cfg.trainer
        finite = math.isfinite(update.loss) and math.isfinite(update.grad_norm)
        if finite:
            times, n = update.loss / median, len(self.skips.recent)
            spiked = (
                f"the training loss {update.loss:.4g} is {times:.1f}× the median {median:.4g} of the {n} updates before"
            )
        else:
            spiked = f"the loss ({update.loss:.4g}) or gradient norm ({update.grad_norm:.4g}) is not finite"
        what = f"update {t}: {spiked} (trainer.on_spike=rollback)"
        root, every = self.checkpointer.root, trainer.ckpt_every
        folder = distributed.from_rank_zero(lambda: checkpoint.newest_periodic(root, every, t), self.dist)
        if folder is None:
            then = "going on" if finite else f"trainer.nonfinite={trainer.nonfinite} applies"
            log.warning("%s; there is no periodic checkpoint yet to go back to: %s", what, then)
            return None
        state = checkpoint.load(folder, verify_files=False)  # rank 0 verified it
        back = state["step"]
        if self.skips.repeats == [back, MAX_ROLLBACKS_TO_ONE_CHECKPOINT]:
            raise ConfigError(
                f"{what}, after {MAX_ROLLBACKS_TO_ONE_CHECKPOINT} rollbacks in a row to {folder}: the spikes come "
                "from the run, not its data; lower optim.lr, or raise trainer.spike_factor"
            )
        self.checkpointer.restore(state, folder, trainer.allow_schedule_change, self.cfg.optim.name)
        history = self.extra_state["schedule_history"]
        if back < history[-1]["from_update"]:  # back past this start: its schedule runs from the checkpoint's update
            history = [s for s in history[:-1] if s["from_update"] < back] + [{**history[-1], "from_update": back}]
            self.extra_state["schedule_history"] = history
            if self.dist.is_main:
                write_schedule_record(self.run_dir, history)
        if self.dist.is_main:
            checkpoint.abandon_after(root, back)
        self.tokens_seen = state["tokens"]
        first, last = self.skips.roll_back(back, t, (state.get("skips") or {}).get("recent"))
        self.metrics.rewind(back, state.get("summary"))
        self.metrics.summary["train/rollbacks"] = self.skips.rollbacks
        log.warning(
            "%s; back to %s, skipping batches %d–%d (rollback %d)", what, folder, first, last, self.skips.rollbacks
        )
        return back

    def learning_rates(self) -> dict[str, float]:
        """The lrs the next update uses: ``train/lr`` (param group 0, AdamW's), and ``train/lr_<name>`` of each
        named group (Muon's)."""
        groups = self.optimizer.param_groups
        return {"train/lr": groups[0]["lr"], **{f"train/lr_{g['name']}": g["lr"] for g in groups if "name" in g}}

    @functools.cached_property
    def flops_share(self) -> float | None:
        """Model FLOPs per token over the peak FLOP/s of all ranks: MFU = this × tokens/s (None: no known peak)."""
        peak = peak_flops(self.device, self.model.precision, refresh=self.peak_measured_again)
        return model_flops_per_token(self.model.raw) / (peak * self.dist.world_size) if peak else None

    def log_update(self, t: int, update: Update, lrs: dict[str, float], step_time: float, data_wait: float) -> None:
        tokens = self.train_batches.tokens_per_update
        self.tokens_seen += tokens
        tokens_per_sec = tokens / step_time
        mfu = self.flops_share * tokens_per_sec if self.flops_share else None
        if mfu is not None and mfu > 1 and self.device.type == "cpu" and not self.peak_measured_again:
            # the cached peak was measured while other work slowed it down: the run outpaces it
            log.warning("mfu %.0f%%: this CPU's peak FLOP/s on record is too low; measuring it again", 100 * mfu)
            self.peak_measured_again = True
            del self.flops_share
            mfu = self.flops_share * tokens_per_sec
        record = {
            "train/loss": update.loss,
            **lrs,
            "train/grad_norm": update.grad_norm,
            "train/tokens_per_sec": tokens_per_sec,
            "train/mfu": mfu,
            "train/step_time": step_time,
            "tokens": self.tokens_seen,
            "train/data_wait": data_wait,
            **({"train/rollbacks": self.skips.rollbacks} if self.cfg.trainer.on_spike else {}),
        }
        self.metrics.log(t, {**record, "train/peak_memory_gb": peak_memory_gb(self.device)})

    def sample(self, n_tokens: int) -> str:
        return sample(self.model.raw, self.tokenizer, self.cfg, n_tokens, self.model.how.autocast)

    def end_sample(self) -> None:
        if not samples_here(self.cfg.trainer, self.dist, self.model.strategy):
            return
        text = self.sample(self.cfg.trainer.sample_tokens)
        log.info("sample:\n%s", text)
        self.metrics.log_sample(self.total_steps, self.cfg.trainer.sample_prompt, text)

    def finish(self, status: str, stopped_by: str | None = None, error: str | None = None) -> None:
        """Close the run: ``status`` ok, failed (``error``: its line), or preempted (``stopped_by``: the signal,
        trainer.stop_at or another rank). The sinks are closed, and the run directory's lock released, even when
        the reports fail (a full disk). After a run that ended well on every rank, the ranks leave together."""
        # the same on every rank: each finished the same loop, or stopped at the same update after the same save
        ended_well = status in ("ok", "preempted")
        try:
            # rank 0's failure here is every rank's: the others, waiting at the last barrier, end with its line
            with failing_together():
                try:
                    if self.dist.is_main:  # a stall in the reports (a hung filesystem) ends the process as in the loop
                        with Watchdog(self.cfg.trainer.hang_timeout) as reports:
                            reports.progress(self.total_steps, "the end-of-run reports (summary.json, the plots)")
                            summary.report(self, status, stopped_by, error)
                except BaseException:
                    status = "failed"
                    raise
                finally:
                    self.metrics.close(status)
        finally:
            distributed.shutdown(wait=ended_well)
            if self.dist.is_main:
                run_lock.release(self.run_dir)  # taken by open_metrics


def sample(raw_model: GPT, tokenizer, cfg: DictConfig, n_tokens: int, autocast) -> str:
    """A sample from the model at the run's settings (under FSDP every rank takes part, with the same generator)."""
    device = next(raw_model.parameters()).device
    same_on_every_rank = torch.Generator(device=device).manual_seed(cfg.trainer.seed)
    [text] = sample_text(
        raw_model,
        tokenizer,
        cfg.trainer.sample_prompt,
        n_tokens,
        separator=eot_id(tokenizer, special_tokens(cfg.data)),
        temperature=0.8,
        top_k=50,
        generator=same_on_every_rank,
        autocast=autocast,
    )
    return text


def peak_memory_gb(device: torch.device) -> float:
    """Peak memory so far: allocated on the GPU, or the process's resident set on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kilobytes on Linux


def evaluation(node, where: str, ctx: EvalContext):
    """The evaluation ``node`` names, built with ``ctx``: it must be a callable of the model, refused in one line
    before any update otherwise (``_target_: builtins.print`` built None, called at the first evaluation)."""
    built = build_refusing(node, where, ctx)
    if not callable(built):
        raise ConfigError(
            f"{where}: {node['_target_']} built {type(built).__name__}, not an evaluation (a callable taking the "
            "model and returning its metrics; docs/extending.md)"
        )
    return built


def samples_here(trainer, dist: distributed.Dist, strategy: str) -> bool:
    """The end-of-run sample runs on rank 0, and under FSDP on every rank (each holds a shard of the weights)."""
    return bool(trainer.sample_tokens) and (dist.is_main or strategy == "fsdp")


def build_run(
    cfg: DictConfig,
    run_dir: Path,
    *,
    sweep: Sweep | None = None,
    started: float | None = None,
) -> Run:
    """Build every part of a run from ``cfg`` (already checked), in order: the process and device, the
    checkpoint to resume, data, model, evaluations, T, optimizer and schedule, and last the outputs in ``run_dir``."""
    started = time.perf_counter() if started is None else started
    trainer = cfg.trainer
    dist = distributed.init(trainer.device, trainer.collective_timeout)
    run_dir = Path(distributed.broadcast_object(str(run_dir))).resolve()
    resume_from = distributed.from_rank_zero(lambda: checkpoint.find_resume(trainer.resume, run_dir), dist)
    state = checkpoint.load(resume_from, verify_files=False) if resume_from else None  # rank 0 verified it
    if not dist.is_main:
        logging.getLogger().setLevel(logging.WARNING)
    if state is not None:
        model_keys, data_keys = (OmegaConf.to_container(cfg[k], resolve=True) for k in ("model", "data"))
        try:
            checkpoint.check_fits_before_data(state, model_keys, data_keys, resume_from)
        except ConfigError as e:
            e.alike_on_every_rank = True  # the same checkpoint and config on every rank: rank 0 says it, once
            raise
    cache, train_batches, val_batches = build_data(cfg, dist)
    tokenizer = cache.tokenizer()
    model_config = gpt_config(cfg, cache)
    vocab = model_config.vocab_size
    if state is not None:
        checkpoint.check_fits(
            state,
            model_config.to_dict(),
            cache.meta["tokenizer_hash"],
            resume_from,
            lambda: first_changes(data_changes(state, cfg, cache.meta.get("source_fingerprint"))),
        )
    weights = initial_weights(cfg.model, model_config) if state is None else None  # model.init_from's
    model = build_model(trainer, dist, model_config, weights)
    token_bytes = torch.from_numpy(token_byte_lengths(tokenizer, vocab)).to(dist.device)
    clock = Clock(state["step"] if state is not None else 0)  # ctx.step: the update each evaluation runs at
    ctx = EvalContext(cfg, dist, model.how.autocast, val_batches, token_bytes, tokenizer, run_dir=run_dir, clock=clock)
    evaluations = Evaluations(
        {
            name: evaluation(node, f"eval.evals.{name}", replace(ctx, name=name))
            for name, node in (cfg.eval.evals or {}).items()
        },
        clock,
    )
    optim = OmegaConf.to_container(cfg.optim, resolve=True)

    def measure() -> budget.TimePlan:  # a time budget's plan, rank 0's (every rank measures together)
        prompt = max(1, len(tokenizer.encode(trainer.sample_prompt, add_special_tokens=False).ids))  # "": one token
        sample_now = lambda n: sample(model.raw, tokenizer, cfg, n, model.how.autocast)  # noqa: E731
        sinks = [find(node, f"logger.sinks.{name}") for name, node in (cfg.logger.sinks or {}).items()]
        try:
            plan = budget.measure_plan(
                trainer,
                started,
                step=TrainStep(model, None, None),
                optimizer=lambda: build_optimizer(model.raw, optim, dist.device),
                micro_batches=train_batches.micro_batches,
                evaluate=lambda: evaluations.measured(model.module),
                sample=sample_now if samples_here(trainer, dist, model.strategy) else None,
                window=lambda: full_context_forward(model.raw, model.how.autocast),
                cached=cfg.model.block_size - prompt,
                n_params=model.raw.num_params(),
                sinks=sinks,
                run_dir=run_dir if dist.is_main else None,
            )
        except USER_ERRORS as e:  # a budget too short: rank 0's verdict, as its plan, is every rank's
            if not dist.distributed:
                raise
            plan = ConfigError(str(e))
        plan = distributed.broadcast_object(plan)
        if isinstance(plan, ConfigError):
            raise plan
        return plan

    # T, fixed before update 0; then the optimizer and the schedule that ends at T
    T, budget_record = budget.total_steps(trainer, train_batches.tokens_per_update, state, measure)
    if model.strategy == "fsdp":  # the budget's evaluation (a forward without backward) left the root unsharded:
        model.raw.reshard()  # the optimizer must take the sharded parameters, which each backward updates
    check_stop_at(trainer.stop_at, T, "trainer.max_steps" if trainer.max_steps is not None else "T of the budget")
    key = budget.budget_key(trainer)  # what set T: a budget's is named, not the null trainer.max_steps
    total_key = "trainer.max_steps" if key == "max_steps" else f"the T of trainer.{key}={trainer[key]:g}"
    schedule = schedule_from_config(cfg.schedule, T, cfg.optim.lr, total_key)
    optimizer = build_optimizer(model.raw, optim, dist.device)
    step = TrainStep(model, optimizer, build_scheduler(optimizer, schedule))
    checkpointer = checkpoint.Checkpointer(
        run_dir,
        model.raw,
        optimizer,
        step.scheduler,
        model.how.scaler,
        dist,
        model.strategy,
        trainer.keep_checkpoints,
        keep_every=trainer.ckpt_every if trainer.on_spike else 0,  # where a rollback goes, even after stops
    )
    start, tokens_seen, continued = 0, 0, {}
    if state is not None:
        checkpointer.restore(state, resume_from, trainer.allow_schedule_change, cfg.optim.name, total_key)
        if state["step"] > T:  # an allowed change of T: the loop would save a model of more updates as update T
            raise ConfigError(
                f"checkpoint {resume_from}: it is at update {state['step']}, past T = {T} ({total_key}); a run "
                f"cannot go back: raise T to {state['step']} or more, or resume from an earlier checkpoint"
            )
        start, tokens_seen = state["step"], state["tokens"]
        warn_of_another_batch(state, train_batches.tokens_per_update, trainer.eval_batches * trainer.batch_size)
        warn_of_other_data(state, cfg, cache.meta.get("source_fingerprint"))
        # the sinks continue their runs (W&B's) when this run directory continues; a branch starts new ones
        continued = state if Path(resume_from).resolve().is_relative_to(run_dir) else {}
    else:
        torch.manual_seed(trainer.seed + dist.rank)  # dropout differs across ranks
    resolved = redact(OmegaConf.to_container(cfg, resolve=True))
    history = schedule_history(state, start, T, cfg, resume_from)
    files = {"tokenizer.json": tokenizer.to_str(), "config.yaml": OmegaConf.to_yaml(resolved)}
    extra_state = {
        "total_steps": T,
        "tokens_per_update": train_batches.tokens_per_update,
        "val_windows": trainer.eval_batches * trainer.batch_size,  # what val/loss is measured on
        "budget": budget_record,
        "optimizer_name": cfg.optim.name,
        "model_config": model_config.to_dict(),
        "tokenizer_hash": cache.meta["tokenizer_hash"],
        "source_fingerprint": cache.meta.get("source_fingerprint"),  # the documents: their files' digests
        "config": files["config.yaml"],
        "sinks": dict(continued.get("sinks") or {}),
        "schedule_history": history,
    }
    metrics = Metrics([])
    if dist.is_main:  # from here on the run directory is written
        metrics = open_metrics(cfg, run_dir, resolved, T, start if state is not None else None, continued, sweep)
    try:
        if dist.is_main:
            metrics.summary.update(continued.get("summary") or {})  # the best validation and counts before the resume
            metrics.summary["params"] = model.raw.num_params()
            # this start's ending is written at its end: an earlier start's status and error would be read as this one's
            (run_dir / "summary.json").unlink(missing_ok=True)
            write_schedule_record(run_dir, history)
            if "max_time" in budget_record and state is None:
                write_plan(run_dir, budget_record, metrics, T)
            if trainer.max_steps is None:  # a budget's T, which the resolved config leaves null (the lr audit reads it)
                metrics.summary["budget/total_steps"] = T
        run = Run(
            cfg=cfg,
            run_dir=run_dir,
            dist=dist,
            model=model,
            step=step,
            train_batches=train_batches,
            evaluations=evaluations,
            checkpointer=checkpointer,
            metrics=metrics,
            total_steps=T,
            budget=budget_record,
            start=start,
            tokens_seen=tokens_seen,
            started=started,
            earlier_seconds=float((state or {}).get("seconds", 0.0)),
            extra_state=extra_state,
            files=files,
            tokenizer=tokenizer,
            skips=Skips(trainer.spike_window, (state or {}).get("skips")),
        )
        log.info("\n%s", start_summary(**describe(run, cache.meta, schedule)))
        if state is not None:
            log.info("resuming from %s at update %d", resume_from, start)
    except BaseException as e:  # a full disk, a signal: the trackers' runs end, not left running
        if dist.is_main:
            with contextlib.suppress(Exception):
                metrics.close("preempted" if isinstance(e, Interrupted) else "failed")
            run_lock.release(run_dir)
        raise
    return run


def warn_of_another_batch(state: dict, tokens_per_update: int, val_windows: int) -> None:
    """A resume whose updates take another number of tokens, or whose validation scores another number of windows,
    than the checkpoint's goes on, saying so."""
    start = state["step"]
    before = state.get("tokens_per_update") or (state["tokens"] // start if start else None)
    if before is not None and before != tokens_per_update:
        log.warning(
            "the checkpoint's updates took %s tokens each, this run's take %s (the number of ranks, "
            "trainer.batch_size or the accumulation changed): the run goes on with the new batch",
            f"{before:,}",
            f"{tokens_per_update:,}",
        )
    scored = state.get("val_windows") or saved_val_windows(state)
    if scored not in (None, val_windows):
        log.warning(
            "validation scores %d windows from here on, the checkpoint's %d (trainer.eval_batches × batch_size "
            "or the number of ranks changed): val/loss may shift at update %d",
            val_windows,
            scored,
            start,
        )


def warn_of_other_data(state: dict, cfg: DictConfig, fingerprint: str | dict[str, str] | None = None) -> None:
    """A resume whose data settings, documents (``fingerprint``: the token cache's, of each source for a mixture)
    or seed differ from the checkpoint's goes on (a cooldown on other data is a recipe), naming what changed: its
    batches are no longer the checkpoint run's."""
    changed = data_changes(state, cfg, fingerprint)
    if changed:
        log.warning(
            "the checkpoint's run drew its batches with other data settings (%s): from update %d on they are "
            "this config's",
            first_changes(changed),
            state["step"],
        )


def first_changes(changed: list[str]) -> str:
    return ", ".join(changed[:4]) + (f" and {len(changed) - 4} more" if len(changed) > 4 else "")


def data_changes(state: dict, cfg: DictConfig, fingerprint: str | dict[str, str] | None = None) -> list[str]:
    """What differs in the data settings, documents or seed from the checkpoint's, a phrase each."""
    try:
        saved = OmegaConf.create(state["config"])
        before = flat_config({"data": OmegaConf.to_container(saved.data), "trainer": {"seed": saved.trainer.seed}})
    except Exception:  # no config recorded, or not one this reads
        return []
    after = flat_config(
        redact({"data": OmegaConf.to_container(cfg.data, resolve=True), "trainer": {"seed": cfg.trainer.seed}})
    )
    changed = [
        f"{key} {before[key]!r} → {after[key]!r}"
        for key in sorted(before.keys() & after.keys())  # a key newer than the checkpoint keeps the old behaviour
        if key != "data.cache_dir" and before[key] != after[key]
    ]
    order = [
        list(dict.fromkeys(k.split(".")[2] for k in keys if k.startswith("data.sources."))) for keys in (before, after)
    ]
    sources = [set(names) for names in order]
    changed += [f"data.sources.{name} added" for name in sorted(sources[1] - sources[0])]
    changed += [f"data.sources.{name} removed" for name in sorted(sources[0] - sources[1])]
    if sources[0] == sources[1] and order[0] != order[1]:  # each batch's source is drawn by its index
        changed.append(f"data.sources in the order {', '.join(order[0])} → {', '.join(order[1])}")
    documents = state.get("source_fingerprint")
    if (
        None not in (documents, fingerprint)
        and documents != fingerprint
        and not any(c.startswith("data.") for c in changed)
    ):
        # the same settings, other files (edited, added, removed; the built-in corpus of another Python)
        if isinstance(documents, dict) and isinstance(fingerprint, dict):
            changed += [
                f"data.sources.{n}'s files changed" for n in sorted(documents) if documents[n] != fingerprint[n]
            ]
        else:
            changed.append("the corpus's files changed")
    return changed


def saved_val_windows(state: dict) -> int | None:
    """The validation windows of a checkpoint that predates ``val_windows``: each of its ranks (one RNG state
    each) scored eval_batches × batch_size of its own."""
    try:
        t = OmegaConf.create(state["config"]).trainer
        return int(t.eval_batches) * int(t.batch_size) * len(state["rng"])
    except Exception:  # no config recorded, or not one this reads
        return None


def write_schedule_record(run_dir: Path, history: list[dict]) -> None:
    replace_file(run_dir / "schedule.json", json.dumps({"segments": history}, indent=1) + "\n")


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
            history = [
                {
                    "from_update": 0,
                    "total_steps": state.get("total_steps"),
                    "peak_lr": saved.optim.lr,
                    "schedule": OmegaConf.to_container(saved.schedule),
                    "resumed_from": None,
                }
            ]
    if history and start == T:  # a finished run's command again: no update runs under a new segment
        return [s for s in history if s["from_update"] < start]
    segment = {
        "from_update": start,
        "total_steps": T,
        "peak_lr": float(cfg.optim.lr),
        "schedule": OmegaConf.to_container(cfg.schedule, resolve=True),
        "resumed_from": os.path.abspath(resumed_from) if resumed_from else None,  # readable from any folder
    }
    return [s for s in history if s["from_update"] < start] + [segment]


def gpt_config(cfg: DictConfig, cache, head_rows: int | None = None) -> GPTConfig:
    """The model ``cfg.model`` describes for the token cache's tokenizer: its vocabulary padded, the padding in
    no softmax (or a transformers folder's, unpadded; ``head_rows``: that many rows, for a benchmark), and with
    ``data.document_mask`` its end-of-text token as the document separator."""
    vocab = padded_vocab(head_rows) if head_rows else model_vocab(cfg.model, cache.vocab_size)
    rows = head_rows or cache.vocab_size
    padded = rows if vocab > rows and cfg.model.get("init_from") is None else None
    separator = cache.eot_id if cfg.data.document_mask else None  # attention stays within documents
    return GPTConfig.from_dict(
        {
            **OmegaConf.to_container(cfg.model),
            "vocab_size": vocab,
            "padded_from": padded,
            "document_separator": separator,
        }
    )


def build_data(cfg: DictConfig, dist: distributed.Dist) -> tuple[Any, TrainBatches, ValBatches | MixtureValBatches]:
    """corpus → tokenizer → token cache (rank 0 prepares, the others reuse) → this rank's batches; a mixture's
    train batches draw from its sources by weight, and each source keeps its own validation windows."""
    trainer, block = cfg.trainer, cfg.model.block_size
    cache = distributed.in_turn(lambda: prepare(cfg.data, window=block + 1), dist)
    accum = grad_accum_steps(trainer, block, dist.world_size)
    weights = getattr(cache, "weights", None)  # a mixture's
    train_batches = TrainBatches(
        cache.tokens("train"),
        block,
        trainer.batch_size,
        accum,
        dist.world_size,
        dist.rank,
        trainer.seed,
        weights,
        vocab_size=cache.vocab_size,
    )

    def val(tokens, name: str = "") -> ValBatches:
        windows = trainer.eval_batches * trainer.batch_size
        short = block < len(tokens) <= windows * block  # fewer than one window is refused below, without this
        if dist.is_main and short:  # the same tokens in several windows: weighted more
            log.warning(
                "%s: the %d windows of %d tokens (trainer.eval_batches × trainer.batch_size) overlap in its %d "
                "tokens, each scored %.1f× on average: lower trainer.eval_batches, or hold out more text",
                f"data.sources.{name}'s validation split" if name else "the validation split",
                windows,
                block,
                len(tokens),
                windows * block / max(1, len(tokens) - 1),
            )
        return ValBatches(
            tokens, block, trainer.batch_size, trainer.eval_batches, dist.world_size, dist.rank, name, cache.vocab_size
        )

    if weights is None:
        return cache, train_batches, val(cache.tokens("val"))
    sources = {name: val(tokens, name) for name, tokens in cache.tokens("val").items()}
    return cache, train_batches, MixtureValBatches(sources, weights)


def open_metrics(
    cfg: DictConfig,
    run_dir: Path,
    resolved: dict,
    T: int,
    resume_step: int | None,
    continued: dict,
    sweep: Sweep | None,
) -> Metrics:
    """The run directory's metric sinks (rank 0), once its lock is held: metrics.jsonl and the console — cut back
    to the resumed update — and each sink the logger group names."""
    # one writer per run directory: a second launch stops here with RunInUse
    run_lock.acquire(run_dir, "hydra.sweep.dir" if sweep else "hydra.run.dir")
    settings = OmegaConf.to_container(cfg.logger, resolve=True)
    saved = continued.get("sinks") or {}
    section = LIST_GROUPS["logger"]
    sinks = {}
    for name, node in (settings.get(section) or {}).items():
        info = RunInfo(
            run_dir=run_dir,
            config=resolved,
            settings=settings,
            total_steps=T,
            start=resume_step or 0,
            state=dict(saved.get(name) or {}),
            checkpoint={k: v for k, v in continued.items() if v is None or isinstance(v, (str, int, float))},
            group=sweep and sweep.group,
            name=sweep and sweep.name,
        )
        try:
            sinks[name] = build(node, f"logger.{section}.{name}", info)
            check_sink(sinks[name], f"logger.{section}.{name}")
        except (ConfigError, Interrupted) as e:  # its settings, the user's to fix, or a stop: the runs begun end
            with contextlib.suppress(Exception):
                Metrics([], sinks).close("preempted" if isinstance(e, Interrupted) else "failed")
            raise
        except Exception as e:  # its service or its code: as a sink failing later, it never stops training
            log.warning(
                "logger %s failed to start (%s: %s); training goes on without it, metrics.jsonl stays complete",
                name,
                type(e).__name__,
                first_line(e),
            )
    # metrics.jsonl last: a sink that refused its settings leaves a new run directory unwritten (train.py removes it)
    try:
        core = [
            JsonlSink(run_dir / "metrics.jsonl", resume_step),
            ProgressSink(T, resume_step or 0, cfg.trainer.log_every),
        ]
    except BaseException as e:
        with contextlib.suppress(Exception):
            Metrics([], sinks).close("preempted" if isinstance(e, Interrupted) else "failed")
        raise
    return Metrics(core, sinks)


def write_plan(run_dir: Path, plan: dict, metrics: Metrics, T: int) -> None:
    """budget.json, and the plan in the summary and the log, for a fresh run with a time budget."""
    (run_dir / "budget.json").write_text(json.dumps(plan, indent=1) + "\n")
    metrics.summary.update({f"budget/{k}": v for k, v in plan.items()})
    log.info(
        "budget: %gs → T = %d updates (%.3f s each; evaluation %.2f s, checkpoint %.2f s, sample %.2f s, "
        "start-up and measurement %.1f s)",
        plan["max_time"],
        T,
        plan["step_seconds"],
        plan["eval_seconds"],
        plan["checkpoint_seconds"],
        plan["sample_seconds"],
        plan["elapsed_at_plan"],
    )


def describe(run: Run, meta: dict, schedule) -> dict[str, str]:
    """The facts of the start-of-run summary."""
    c, p, lr, m = run.model.raw.config, schedule.params, run.cfg.optim.lr, run.model
    floor = f" → floor {lr * p['min_lr_ratio']:.3g}" if "min_lr_ratio" in p else ""
    b = run.train_batches
    return {
        "model": f"{run.cfg.model.get('name', 'model')} ({c.arch} style), {human(m.raw.num_params())} parameters "
        f"(n_layer {c.n_layer}, n_head {c.n_head}"
        + (f", n_kv_head {c.n_kv_head}" if c.n_kv_head not in (None, c.n_head) else "")
        + ", "
        f"n_embd {c.n_embd}, block {c.block_size}, vocab {c.vocab_size})",
        "data": f"{meta['corpus']}: {human(meta['tokens']['train'])} train / {human(meta['tokens']['val'])} val tokens"
        + (", attention within documents" if c.document_separator is not None else ""),
        "batch": f"{b.tokens_per_update:,} tokens per update = {b.world} rank(s) × {b.accum} micro-batch(es) × "
        f"{b.batch_size} × {b.block_size}",
        "schedule": f"{schedule.name}: warmup {p.get('warmup_steps', 0)}, peak {lr:g}{floor}, "
        f"T = {run.total_steps:,} updates" + (f", resuming at {run.start}" if run.start else ""),
        "optimizer": describe_optimizer(run.optimizer),
        "device": f"{run.device}, {m.precision}, {m.strategy}{', compiled' if m.compiled else ''}",
        "run_dir": str(run.run_dir),
    }
