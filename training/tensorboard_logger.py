"""The TensorBoard sink (``logger=tensorboard``): event files in ``<run dir>/tensorboard/``, read by
``tensorboard --logdir <run dir or sweep dir>``. The only module that knows TensorBoard.

Every record's metrics are scalars under the names metrics.jsonl uses, at step = the update index t. The run's
resolved config (secrets redacted) is a text entry at step 0 and, at the end, the hyperparameters with the final
``val/loss`` and ``val/bpb`` (TensorBoard's HParams tab compares a sweep's jobs by them). A resumed run appends
to the same directory and purges what the interrupted run wrote from the resumed update on, so every step is
shown once; a rollback (``trainer.on_spike=rollback``) purges the same way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from training.config import ConfigError
from training.loggers import VAL_METRICS, RunInfo, Sink, config_yaml, flat_config, require

# What a run writes in its directory besides TensorBoard's folder: its subdir may be none of them.
RUN_OWN = frozenset(
    (".hydra", ".lock", "budget.json", "checkpoints", "config.yaml", "metrics.csv", "metrics.jsonl", "mlflow")
    + ("schedule.json", "summary.json", "train.log", "wandb", "plots")
)


class TensorBoardSink(Sink):
    """One TensorBoard run per training run, in ``<run dir>/<subdir>``."""

    LOG_SECONDS, TEARDOWN_SECONDS = 0.0005, 0.2  # a time budget sets these aside per logged update and at the end
    files = ("tensorboard/",)

    @classmethod
    def check(cls, settings: Mapping[str, Any]) -> None:
        from training.components import TARGET, find

        require("tensorboard", "tensorboard", "logger=tensorboard")
        for name, node in (settings.get("sinks") or {}).items():  # this sink's entries: their folder
            if not isinstance(node, Mapping) or TARGET not in node or find(node, f"logger.sinks.{name}") is not cls:
                continue
            subdir = node.get("subdir", "tensorboard")
            parts = Path(subdir).parts if isinstance(subdir, str) else ()
            if not parts or not subdir.strip() or Path(subdir).is_absolute() or ".." in parts:
                raise ConfigError(
                    f"logger.sinks.{name}.subdir", "a folder name inside the run directory (relative, no ..)", subdir
                )
            if parts[0] in RUN_OWN:  # the folder would stand where the run writes a file, or mix into its folder
                raise ConfigError(
                    f"logger.sinks.{name}.subdir", f"a folder of its own, not one of the run's ({parts[0]})", subdir
                )

    def __init__(self, info: RunInfo, subdir: str = "tensorboard"):
        from torch.utils.tensorboard import SummaryWriter

        self.files, self.log_dir = (f"{subdir}/",), info.run_dir / subdir
        earlier = any(self.log_dir.glob("events.out.tfevents.*"))
        # purge_step: TensorBoard hides what an earlier writer logged at steps ≥ the update this process starts at
        # (0 for a run started again where one died before its first checkpoint)
        self.writer = SummaryWriter(str(self.log_dir), purge_step=info.start, flush_secs=30)
        self.config = info.config
        self.final: dict[str, float] = {}
        if not info.start or not earlier:  # a fresh start, or a branch's first events in its own folder
            self.writer.add_text("config", "```yaml\n" + config_yaml(info.config) + "```", 0)

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        for name, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(name, value, step)
        self.final.update({k: metrics[k] for k in VAL_METRICS if k in metrics})

    def rewind(self, step: int) -> None:
        """A rollback to update ``step``: a new writer purges what this one logged from there on, as on resume."""
        from torch.utils.tensorboard import SummaryWriter

        self.writer.close()
        self.writer = SummaryWriter(str(self.log_dir), purge_step=step, flush_secs=30)

    def log_sample(self, step: int, prompt: str, text: str) -> None:
        self.writer.add_text("sample", f"```\n{text}\n```", step)

    def finish(self, status: str, summary: Mapping[str, Any]) -> None:
        from torch.utils.tensorboard.summary import hparams

        final = {k: v for k, v in self.final.items() if isinstance(v, float) and math.isfinite(v)}
        if status != "preempted" and final:  # a preempted run writes them when its resumed part ends
            # the HParams tab reads each metric's scalars (logged above) by name; the summary names them
            for summary_proto in hparams(flat_config(self.config), final):
                self.writer.file_writer.add_summary(summary_proto)
        self.writer.close()
