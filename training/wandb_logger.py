"""The W&B sink (``logger=wandb``): one W&B run per training run, resumed with the run, finished cleanly (or
marked failed). The only module that knows W&B: its run id travels through the sink's ``state()`` in every
checkpoint, its costs for a time budget and its settings' checks are the sink's own.

W&B never stops training. A W&B that cannot start online within ``logger.init_timeout`` seconds (unreachable,
refused credentials) is started offline instead, said in one line, and the end of the run prints the
``wandb sync`` command that uploads it. A W&B call that fails mid-run is logged once; the sink then stays
quiet and training goes on, with metrics.jsonl complete.
"""

from __future__ import annotations

import logging
import netrc
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from training.config import ConfigError, check_seconds
from training.loggers import RunInfo, Sink, check_tracking, first_line

log = logging.getLogger("train")
MODES = ("auto", "online", "offline", "disabled")


def credentials_present() -> bool:
    """Whether W&B could log in: an API key in the environment or in ~/.netrc (what ``wandb login`` writes), for
    W&B's host: its default moved (0.31: api.forge.coreweave.com, which also takes api.wandb.ai's key)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    base = os.environ.get("WANDB_BASE_URL")
    try:
        import wandb
        from wandb.sdk.lib.wbauth.wbnetrc import read_netrc_auth  # W&B's own reading of ~/.netrc

        return read_netrc_auth(host=base or wandb.Settings().base_url) is not None
    except Exception:  # a W&B without it (it moves between versions): the file read here, for either host
        # W&B's own hosts (the old default, and its key taken at the new one); a server of one's own alone
        hosts = {base.split("://")[-1].split("/")[0]} if base else {"api.wandb.ai", "api.forge.coreweave.com"}
        try:
            return any(netrc.netrc().authenticators(host) is not None for host in hosts)
        except (OSError, netrc.NetrcParseError):
            return False


def resolve_mode(mode: str) -> str:
    """``logger.mode``: an explicit mode wins; ``auto`` follows ``WANDB_MODE`` when set, else online when
    credentials are present and offline otherwise."""
    if mode != "auto":
        return mode
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if env in ("online", "offline", "disabled"):
        return env
    if env == "dryrun":
        return "offline"
    return "online" if credentials_present() else "offline"


class WandbSink(Sink):
    """W&B's run for this training run: every record at W&B step t, the sample as a table, the summary at the end;
    run with the run's resolved config (secrets redacted), named and grouped as its sweep job."""

    # a time budget sets these aside: the log call per update, the sample's table, W&B's start and finish
    LOG_SECONDS, SAMPLE_SECONDS, TEARDOWN_SECONDS = 0.0015, 0.6, 3.5
    files = ("wandb/",)

    @classmethod
    def check(cls, settings: Mapping[str, Any]) -> None:
        if settings.get("mode") not in MODES:
            raise ConfigError("logger.mode", f"one of {', '.join(MODES)}", settings.get("mode"))
        for key in ("entity", "job_type"):
            value = settings.get(key)
            name = str(value) if isinstance(value, int) and not isinstance(value, bool) else value  # 12345: a name
            if value is not None and (not isinstance(name, str) or not name.strip()):
                raise ConfigError(f"logger.{key}", "null or a name", value)
        check_tracking(settings)
        check_seconds(settings.get("finish_timeout"), "logger.finish_timeout", nullable=True)

    def __init__(self, info: RunInfo):
        import wandb

        from training.secrets import redact

        # notes, run name, group and tags reach W&B as given (not through the redacted config): redact them too
        cfg = redact(dict(info.settings))
        name, group = redact(info.name), redact(info.group)
        config, run_dir = info.config, info.run_dir
        # the id of the run this one continues: the sink's state, or what checkpoints before sinks kept
        run_id = info.state.get("run_id") or info.checkpoint.get("wandb_run_id")
        self.mode = resolve_mode(cfg.get("mode", "auto"))
        if self.mode == "disabled":
            self.files = ()  # W&B writes nothing: the end-of-run summary names no wandb/ folder
        self.failed = False
        timeout = float(cfg["init_timeout"])
        self.finish_timeout = cfg.get("finish_timeout")
        limits = {"init_timeout": timeout}
        if self.finish_timeout is not None and "finish_timeout" in wandb.Settings.model_fields:  # an older wandb waits
            limits.update(finish_timeout=float(self.finish_timeout), finish_timeout_raises=True)
        # W&B's own banner and end-of-run history repeat the run's summary: off unless WANDB_SILENT=false
        silent = os.environ.get("WANDB_SILENT", "true").lower() not in ("false", "0")

        def start(mode: str):
            return wandb.init(
                project=cfg.get("project"),
                entity=None if cfg.get("entity") is None else str(cfg["entity"]),
                group=cfg.get("group") or group,
                name=cfg.get("run_name") or name,
                tags=list(cfg.get("tags") or []) or None,
                job_type=None if cfg.get("job_type") is None else str(cfg["job_type"]),
                notes=cfg.get("notes"),
                config=config,
                dir=str(run_dir),
                mode=mode,
                id=run_id,
                resume="allow" if run_id else None,
                reinit="finish_previous",
                settings=wandb.Settings(silent=silent, **limits),
            )

        if self.mode == "offline":
            log.info(
                "W&B logs offline into %s (no credentials, or logger.mode/WANDB_MODE); to upload it after the "
                "run: wandb login, then the wandb sync command the end of the run prints",
                run_dir / "wandb",
            )
        argv, sys.argv = sys.argv, redact(list(sys.argv))  # W&B records the command line in its metadata
        try:
            self.run = start(self.mode)
        except Exception as e:
            if self.mode != "online":
                raise
            log.warning(
                "W&B could not start online within logger.init_timeout=%g s (%s); logging offline to %s "
                "instead, and the end of the run prints the command that uploads it",
                timeout,
                first_line(e),
                run_dir / "wandb",
            )
            self.mode = "offline"
            self.run = start(self.mode)
        finally:
            sys.argv = argv
        self.run.define_metric("step")
        for pattern in ("train/*", "val/*", "tokens"):
            self.run.define_metric(pattern, step_metric="step")
        # A resumed run logs from its checkpoint's update, or online from the step after the last one W&B's server
        # holds. Not from metrics.jsonl's last step: a killed process may have written steps W&B never received.
        self.first_new_step = max(int(self.run.step or 0), info.start) if run_id else 0
        self.sent_at_latest: set[str] = set()  # the keys W&B holds at step first_new_step
        self.run_dir = run_dir

    @property
    def run_id(self) -> str | None:
        return getattr(self.run, "id", None)

    def state(self) -> dict[str, Any]:
        return {"run_id": self.run_id}

    def failure(self, what: str, error: Exception) -> None:
        """A W&B call failed: say so once; from here on the sink does nothing."""
        self.failed = True
        log.warning(
            "W&B failed %s (%s: %s); training goes on without it, metrics.jsonl stays complete",
            what,
            type(error).__name__,
            first_line(error),
        )

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        # W&B takes no step below its latest (a rollback's updates again: it would drop them with a warning),
        # and keeps the first value of a key at its latest step
        if step < self.first_new_step or self.failed:
            return
        if step == self.first_new_step:
            metrics = {k: v for k, v in metrics.items() if k not in self.sent_at_latest}
            if not metrics:
                return
        else:
            self.first_new_step, self.sent_at_latest = step, set()
        try:
            self.run.log({"step": step, **metrics}, step=step)
            self.sent_at_latest.update(metrics)
        except Exception as e:
            self.failure(f"at update {step}", e)

    def log_sample(self, step: int, prompt: str, text: str) -> None:
        import wandb

        if self.failed:
            return
        try:
            table = wandb.Table(columns=["step", "prompt", "text"], data=[[step, prompt, text]])
            self.run.log({"sample": table}, commit=False)
        except Exception as e:
            self.failure("logging the sample", e)

    def finish(self, status: str, summary: Mapping[str, Any]) -> None:
        """Close the run: finished (ok), failed, or preempted (W&B shows it as such; the resume continues it)."""
        try:
            if not self.failed:
                for k, v in summary.items():
                    self.run.summary[k] = v
                if status == "preempted":
                    self.run.mark_preempting()
            local = Path(self.run.dir).parent  # wandb/run-<time>-<id>: what wandb sync uploads
            self.run.finish(exit_code=0 if status == "ok" and not self.failed else 1)
        except TimeoutError:  # logger.finish_timeout passed: the run ends; what is left waits on disk
            log.warning(
                "W&B did not upload the rest of the run within logger.finish_timeout=%g s; it is kept in %s: upload "
                "it with wandb sync %s",
                self.finish_timeout,
                local,
                local,
            )
        except Exception as e:
            if not self.failed:
                self.failure("closing the run", e)
        if self.mode == "offline":  # every offline directory of this run: one per process that logged to it
            found = Path(self.run_dir, "wandb").glob  # offline-run-<start>-<id>[-<n> if one began the same second]
            parts = sorted({*found(f"offline-run-*-{self.run_id}"), *found(f"offline-run-*-{self.run_id}-*")})
            if parts:
                log.info(
                    "W&B ran offline; upload the run with (after wandb login): wandb sync %s", " ".join(map(str, parts))
                )
