"""Parts a fork would plug in, for the tests: sinks that count or fail. Imported by the tests and, through
``_target_``, by the run, as the same module (``tests.training.fork_parts``), so ``SEEN`` is shared."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from training.loggers import RunInfo, Sink

SEEN: dict[str, Any] = {}  # what the parts below saw, by label


class Counting(Sink):
    """Counts the records it gets; its state is the count, and it remembers the state it was given."""

    def __init__(self, info: RunInfo, label: str = "counting"):
        self.label, self.count = label, int(info.state.get("count", 0))
        SEEN.setdefault(label, []).append({"start": info.start, "state": dict(info.state), "group": info.group})

    def log(self, step: int, metrics) -> None:
        self.count += 1

    def state(self) -> dict[str, Any]:
        return {"count": self.count}

    def finish(self, status: str, summary) -> None:
        SEEN[self.label][-1].update(status=status, count=self.count, params=summary.get("params"))


class Failing(Sink):
    """Fails at its third record, or at its start with ``at_start``."""

    def __init__(self, info: RunInfo, at_start: bool = False):
        if at_start:
            raise ConnectionError("no server")
        self.calls = 0

    def log(self, step: int, metrics) -> None:
        self.calls += 1
        SEEN["failing"] = self.calls
        if self.calls == 3:
            raise ConnectionError("the server went away")

    def finish(self, status: str, summary) -> None:
        SEEN["failing finished"] = status


class Renaming(Sink):
    """Edits the metrics it gets in place (W&B-style names with dots)."""

    def __init__(self, info: RunInfo):
        pass

    def log(self, step: int, metrics) -> None:
        for key in list(metrics):
            metrics[key.replace("/", ".")] = metrics.pop(key)


class Misnamed(Sink):
    """A subclass whose method has another name than the protocol's: it would get nothing."""

    def __init__(self, info: RunInfo):
        pass

    def log_metrics(self, step: int, metrics) -> None:
        pass


class NoLog:
    """Not a Sink, and without log()."""

    def __init__(self, info: RunInfo):
        pass

    def log_metrics(self, step: int, metrics) -> None:
        pass


class ShortSample(Sink):
    """log_sample without the prompt: it would fail at the end of the run, its finish never called."""

    def __init__(self, info: RunInfo):
        pass

    def log(self, step: int, metrics) -> None:
        pass

    def log_sample(self, text: str) -> None:
        pass


class BadState(Sink):
    """Its state() raises, or with ``unplain`` is a value a checkpoint cannot load back (a Path)."""

    def __init__(self, info: RunInfo, unplain: bool = False):
        self.unplain = unplain

    def state(self) -> dict[str, Any]:
        if self.unplain:
            return {"where": Path(".")}
        raise RuntimeError("no state to give")


class Crash(BaseException):
    """What a process killed mid-run leaves: no graceful stop, no checkpoint beyond the last periodic one."""


class CrashAt(Sink):
    """Stops the run as a crash would, when update ``step`` is logged (after the sinks before it got it)."""

    def __init__(self, info: RunInfo, step: int):
        self.step = step

    def log(self, step: int, metrics) -> None:
        if step == self.step and "train/loss" in metrics:
            raise Crash(f"crashed at update {step}")


class CallAt(Sink):
    """Calls ``SEEN["call_at"]()`` when update ``step`` is logged: a test's way to act mid-run."""

    def __init__(self, info: RunInfo, step: int):
        self.step = step

    def log(self, step: int, metrics) -> None:
        if step == self.step and "train/loss" in metrics:
            SEEN.pop("call_at")()


class StallAt(Sink):
    """Stalls the run when update ``step`` is logged, as a read that never returns would: it opens a named pipe
    that no process writes (``<run dir>/stall.fifo``). ``in_save``: in the first checkpoint after it instead."""

    def __init__(self, info: RunInfo, step: int, in_log_file: bool = False, in_save: bool = False):
        self.step, self.fifo, self.in_log_file, self.in_save = step, info.run_dir / "stall.fifo", in_log_file, in_save
        self.logged = -1

    def log(self, step: int, metrics) -> None:
        self.logged = max(self.logged, step)
        if step == self.step and "train/loss" in metrics and not self.in_save:
            self.stall()

    def state(self) -> dict:
        if self.in_save and self.logged >= self.step:
            self.stall()
        return {}

    def stall(self) -> None:
        import logging
        import os

        if self.in_log_file:  # a write to train.log that never returns: its handler's lock stays held
            next(h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)).acquire()
        os.mkfifo(self.fifo)
        with open(self.fifo) as never_written:
            never_written.read()


def half_lr_first(model, device, *, lr: float, name: str = "half", **_: Any):
    """An optimizer whose first param group runs at half optim.lr (the embeddings' own lr, say)."""
    import torch

    embeddings = [p for n, p in model.named_parameters() if "wte" in n]
    rest = [p for n, p in model.named_parameters() if "wte" not in n]
    return torch.optim.SGD([{"params": embeddings, "lr": lr / 2}, {"params": rest}], lr=lr)


def blocks_only(model, device, *, lr: float, name: str = "blocks", **_: Any):
    """An optimizer that leaves the embeddings and the final norm out (a fork's mistake, or a freeze done by
    omission rather than with requires_grad=False)."""
    import torch

    return torch.optim.SGD([p for n, p in model.named_parameters() if n.startswith("blocks.")], lr=lr)


def lbfgs(model, device, *, lr: float, name: str = "lbfgs", **_: Any):
    """An optimizer whose step evaluates the loss itself, through a closure it must be given."""
    import torch

    return torch.optim.LBFGS(model.parameters(), lr=lr)


def returns_groups(model, device, *, lr: float, name: str = "groups", **_: Any):
    """A builder that returns the param groups, not the optimizer."""
    return [{"params": list(model.parameters()), "lr": lr}]


def without_name(model, device, *, lr: float, momentum: float):
    """A builder that does not take the name every optim group has."""


def adafactor(model, device, *, lr: float, eps: list, betas: list, name: str = "adafactor"):
    """torch's Adafactor, whose eps is a pair (None: its default), and betas of its own (three, as AdEMAMix's)."""
    import torch

    return torch.optim.Adafactor(model.parameters(), lr=lr, eps=tuple(eps), beta2_decay=-betas[2])


class Evaluation:
    """An evaluation that refuses a file it cannot read, a check that raises ValueError (or fails: KeyError), or
    metrics that are tensors (a forgotten ``.item()``)."""

    def __init__(self, ctx, file: str | None = None, metric: str = "number", buggy: bool = False):
        if buggy:  # a bug of its own, not a refusal of its settings
            ctx.name + 1
        if file is not None and file.endswith(".bad"):  # bad input it names itself, as the built-in ones do
            from data import DataError

            raise DataError(f"{file}:3: not an item")
        if file is not None:
            Path(file).read_text()
        self.metric = metric

    @classmethod
    def check(cls, keys, where) -> None:
        if keys.get("metric") == "unchecked":  # a bug in the check itself
            raise KeyError("number")
        if keys.get("metric", "number") not in ("number", "tensor", "list", "numpy"):
            raise ValueError(f"metric must be number, tensor or list, got {keys['metric']!r}")

    def __call__(self, model):
        import numpy as np
        import torch

        value = {"number": 0.5, "tensor": torch.tensor(0.5), "list": [0.5], "numpy": np.float32(0.5)}[self.metric]
        return value if self.metric == "list" else {"val/fork": value}


class WritesEachStep:
    """An evaluation that writes a file per evaluation into the run's folder, named by the update index."""

    def __init__(self, ctx):
        self.ctx = ctx

    def __call__(self, model):
        SEEN.setdefault("writes", []).append((self.ctx.step, self.ctx.measuring))
        if self.ctx.dist.is_main and not self.ctx.measuring:
            folder = self.ctx.run_dir / "fork"
            folder.mkdir(exist_ok=True)
            (folder / f"{self.ctx.step}.txt").write_text(f"{self.ctx.name}\n")
        return {"val/fork_step": float(self.ctx.step)}


class RefusesOnRank:
    """An evaluation that fails on one rank only, at its ``call``-th call: bad input there (a file one node lacks),
    or a crash with ``crash``."""

    def __init__(self, ctx, rank: int, call: int, crash: bool = False):
        self.rank, self.call, self.crash, self.calls = rank, call, crash, 0

    def __call__(self, model):
        import torch.distributed as dist

        from training.config import ConfigError

        self.calls += 1
        if self.calls == self.call and dist.get_rank() == self.rank:
            raise (RuntimeError if self.crash else ConfigError)(f"eval.evals.fork: planted failure on rank {self.rank}")
        return {"val/fork": 0.5}


class SignalAtStart(Sink):
    """Sends this process SIGTERM as it starts: a scheduler's stop while the run starts, the sinks before it begun."""

    def __init__(self, info: RunInfo):
        import os
        import signal
        import time

        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the signal is handled before this ends


class SignalLauncher(Sink):
    """Sends this process's parent (torchrun's agent, which passes it to every rank) SIGTERM as the run starts."""

    def __init__(self, info: RunInfo):
        import os
        import signal
        import time

        os.kill(os.getppid(), signal.SIGTERM)
        time.sleep(5)  # the signal the agent passes on is handled before this ends


class EndStatus(Sink):
    """Writes the status its run ended with to ``<run dir>/<label>.status``."""

    def __init__(self, info: RunInfo, label: str = "sink"):
        self.path = info.run_dir / f"{label}.status"

    def log(self, step: int, metrics) -> None:
        pass

    def finish(self, status: str, summary) -> None:
        self.path.write_text(status)


class SignalAtFinish(Sink):
    """Sends this process SIGTERM while the run ends (a scheduler's stop that comes late), then finishes its file."""

    def __init__(self, info: RunInfo):
        self.path = info.run_dir / "finished.txt"

    def log(self, step: int, metrics) -> None:
        pass

    def finish(self, status: str, summary) -> None:
        import os
        import signal
        import time

        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)  # the signal is handled by now
        self.path.write_text(status)


class DiesAtFinish(Sink):
    """Ends this process at once while the run ends (rank 0, which alone has sinks, lost as it reports)."""

    def __init__(self, info: RunInfo):
        pass

    def log(self, step: int, metrics) -> None:
        pass

    def finish(self, status: str, summary) -> None:
        import os

        os._exit(1)


class BlocksTheSummary(Sink):
    """At the last update, a folder where summary.json goes: rank 0's end-of-run report then fails (bad input)."""

    def __init__(self, info: RunInfo):
        self.run_dir, self.last = info.run_dir, info.total_steps - 1

    def log(self, step: int, metrics) -> None:
        if step == self.last:
            (self.run_dir / "summary.json").mkdir(exist_ok=True)


class SignalAtEvaluation(Sink):
    """Sends this process SIGTERM when the evaluation at update ``step`` is logged (the final one: before its save)."""

    def __init__(self, info: RunInfo, step: int):
        self.step = step

    def log(self, step: int, metrics) -> None:
        if step == self.step and "val/loss" in metrics:
            import os
            import signal

            os.kill(os.getpid(), signal.SIGTERM)


class RefusingAtStart(Sink):
    """Refuses its settings once the run's sinks start (what MLflow's sink does with a store it cannot use)."""

    def __init__(self, info: RunInfo):
        from training.config import ConfigError

        raise ConfigError("logger.sinks.refusing: no such store")


class SignalBetweenJobs(Callback):
    """A Hydra callback that sends this process SIGTERM as the first sweep job has ended, before the next starts:
    where no job's signal handler is set."""

    def on_job_end(self, config, job_return, **kwargs) -> None:
        import os
        import signal
        import time

        if config.hydra.job.num == 0:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)  # the signal is handled by now
