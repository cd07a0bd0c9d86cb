"""The MLflow sink (``logger=mlflow``): one MLflow run per training run, resumed with the run and ended with its
status. The only module that knows MLflow.

The run is logged to ``MLFLOW_TRACKING_URI`` when set, else ``logger.tracking_uri`` (a server's URL, or a
database such as the default ``sqlite:///mlflow.db`` in the working directory), in the experiment
``logger.project``: the flattened, redacted config as params, every record's metrics at step = the update index
t under the names metrics.jsonl uses, and tags for the sweep (``group``: the sweep's jobs share it), the job's
name and the git commit. It ends FINISHED, FAILED, or KILLED for a preempted run, which a resume continues (the
run id travels in the checkpoint through the sink's state).

MLflow never stops training. Its calls run on a thread of their own, so a slow or failing server never holds an
update back. A server that does not answer within ``logger.init_timeout`` seconds at the start is replaced by a
local store in the run directory, said in one line with the command that uploads it later:
``python -m training.mlflow_logger upload <run dir>``. A call that fails mid-run is reported once; the sink then
stays quiet, and metrics.jsonl stays complete.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from scheduling.spec import CommandLine
from training.config import ConfigError
from training.loggers import RunInfo, Sink, check_tracking, first_line, flat_config, require
from training.secrets import REDACTED, redact

log = logging.getLogger("train")
DEFAULT_URI = "sqlite:///mlflow.db"  # MLflow's own default store since 3.7
FALLBACK = "mlflow/fallback.db"  # in the run directory, when the tracking server does not answer
STATUS = {"ok": "FINISHED", "failed": "FAILED", "preempted": "KILLED"}
PARAM_LENGTH = 6000  # MLflow's limit on a param's value
BATCH = {"params": 100, "metrics": 1000}  # MLflow's limits on one log_batch call
CLOSING = "closing its run"  # the one call a sink that failed still makes
UPLOAD_TIMEOUT = 30  # seconds an upload's request waits for the server (a batch of 1,000 points is one request)


def tracking_uri(settings: Mapping[str, Any]) -> str:
    """Where runs go: ``MLFLOW_TRACKING_URI`` wins over ``logger.tracking_uri``; the default is a SQLite file."""
    return os.environ.get("MLFLOW_TRACKING_URI") or settings.get("tracking_uri") or DEFAULT_URI


def metric_name(name: str) -> str:
    """``name`` as MLflow takes a metric's: a character it refuses (``@``, ``,``) as ``_``, no empty or relative
    part of a path, at most its 250 characters. Any other name stays as it is (an evaluation of a fork names its
    own: one MLflow refused ended the sink for the rest of the run)."""
    try:
        from mlflow.utils.validation import MAX_ENTITY_KEY_LENGTH, path_not_unique, validate_param_and_metric_name
    except ImportError:  # MLflow moved them: names as they are, as before
        return name
    if validate_param_and_metric_name(name) and not path_not_unique(name) and len(name) <= MAX_ENTITY_KEY_LENGTH:
        return name
    parts = re.sub(r"[^/\w.\- ]", "_", name).split("/")
    return ("/".join(p for p in parts if p not in ("", ".", "..")) or "_")[:MAX_ENTITY_KEY_LENGTH]


def is_local(uri: str) -> bool:
    """A store on this machine (a database file, a folder), not a server's (Databricks' is named without ://)."""
    return uri.startswith(("sqlite:", "file:")) or ("://" not in uri and not uri.startswith("databricks"))


def unusable(uri: str) -> str | None:
    """Why MLflow cannot use ``uri``, found without writing anything — a scheme it does not know, MLflow 3's
    folder store closed to new runs — or None (a server's answer, a database's, is the start's to find)."""
    try:
        from mlflow.tracking._tracking_service.utils import _tracking_store_registry as stores
    except ImportError:  # MLflow moved it: the start says so instead
        return None
    from mlflow.tracking.registry import UnsupportedModelRegistryStoreURIException as UnknownScheme

    try:
        builder = stores.get_store_builder(uri)
    except UnknownScheme:
        return f"no tracking store has the scheme {uri.partition(':')[0]!r}"
    except Exception as e:
        return f"{type(e).__name__}: {first_line(e)}"
    if getattr(builder, "__name__", "") == "_get_file_store" and not file_store_allowed():
        return "MLflow 3 takes no new run in a folder store: give sqlite:///<file>.db, or set MLFLOW_ALLOW_FILE_STORE"
    if uri.startswith("sqlite:"):
        path = uri.removeprefix("sqlite:").removeprefix("///").partition("?")[0]
        if path in ("", "//", ":memory:"):
            return "an in-memory database keeps no run: give sqlite:///<file>.db"
        folder = Path(path).expanduser().parent.absolute()
        while not folder.exists() and folder != folder.parent:  # the store makes the folders it lacks
            folder = folder.parent
        if not folder.is_dir():
            return f"{folder} is a file, not a folder"
    return None


def file_store_allowed() -> bool:
    """MLflow's own switch for its folder store (``MLFLOW_ALLOW_FILE_STORE``), read without building the store."""
    try:
        from mlflow.environment_variables import MLFLOW_ALLOW_FILE_STORE
    except ImportError:  # an MLflow without the switch keeps the store open
        return True
    return bool(MLFLOW_ALLOW_FILE_STORE.get())


def git_commit() -> str | None:
    """The template's commit, when it runs from a git checkout."""
    try:
        out = subprocess.run(
            ["git", "-C", str(Path(__file__).resolve().parents[1]), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def upload_command(run_dir: Path) -> str:
    return f"python -m training.mlflow_logger upload {run_dir}"


def within(seconds: float, call: Callable[[], Any], late: Callable[[Any], None]) -> Any:
    """``call()`` on a thread, its result if it returns within ``seconds``; raises ``TimeoutError`` otherwise. The
    call is left to finish or fail on its own; a result it gives after that goes to ``late`` (to undo it)."""
    done: dict[str, Any] = {}
    lock = threading.Lock()

    def target() -> None:
        try:
            result = call()
        except BaseException as e:
            with lock:
                done["error"] = e
            return
        with lock:
            given_up = done.get("given_up", False)
            done["result"] = result
        if given_up:
            with contextlib.suppress(Exception):
                late(result)

    thread = threading.Thread(target=target, name="mlflow-start", daemon=True)
    thread.start()
    thread.join(seconds)
    with lock:
        if "error" in done:
            raise done["error"]
        if "result" not in done:
            done["given_up"] = True
            raise TimeoutError(f"no answer within {seconds:g} s")
        return done["result"]


def http_limits(timeout: float) -> None:
    """A server that stops answering: a few quick retries of ``timeout`` seconds each, not MLflow's minutes of them,
    and not a warning from urllib3 for each (the sink's own line says what failed). Set for this process unless the
    user set them (a sweep's next job sets its own)."""
    for key, value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2"), ("MLFLOW_HTTP_REQUEST_TIMEOUT", str(timeout))):
        if os.environ.get(key) in (None, _SET_HERE.get(key)):
            os.environ[key] = _SET_HERE[key] = value
    pool = logging.getLogger("urllib3.connectionpool")
    if _no_retry_lines not in pool.filters:
        pool.addFilter(_no_retry_lines)


def _no_retry_lines(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Retrying (")


_SET_HERE: dict[str, str] = {}  # the values http_limits set, told apart from the user's own


def quiet() -> None:
    """MLflow announces each new SQLite store with its own handler, outside the run's log: the sink and the upload
    say where the run went in their own line instead."""
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)


class MlflowSink(Sink):
    """This training run's MLflow run. Calls go through a queue to one thread, in order."""

    LOG_SECONDS, SAMPLE_SECONDS, TEARDOWN_SECONDS = 0.0002, 0.05, 2.0  # what a time budget sets aside

    @classmethod
    def check(cls, settings: Mapping[str, Any]) -> None:
        require("mlflow", "mlflow", "logger=mlflow")
        uri = settings.get("tracking_uri")
        if uri is not None and (not isinstance(uri, str) or not uri.strip()):
            raise ConfigError(
                "logger.tracking_uri", "null or a tracking URI (http://host:5000, sqlite:///mlflow.db)", uri
            )
        check_tracking(settings)
        why = unusable(tracking_uri(settings))
        if why is not None:  # before any work: the other sinks' runs have not started
            key = "MLFLOW_TRACKING_URI" if os.environ.get("MLFLOW_TRACKING_URI") else "logger.tracking_uri"
            raise ConfigError(f"{key}: MLflow cannot use {redact(tracking_uri(settings))} ({why})")

    def __init__(self, info: RunInfo):
        from mlflow import MlflowClient
        from mlflow.entities import Param

        settings = redact(dict(info.settings))  # notes, run name, group and tags reach MLflow as given: redact them
        self.run_dir, self.timeout = info.run_dir, float(settings["init_timeout"])
        http_limits(max(1, math.ceil(self.timeout)))
        quiet()
        saved = info.state
        # the run directory's own store (where it is now: the directory may have moved since it fell back)
        fallback = f"sqlite:///{info.run_dir / FALLBACK}"
        # connect to the URI as given (it can carry a password); what is written of it is redacted
        self.uri = fallback if saved.get("fallback") else tracking_uri(info.settings)
        self.fell_back = bool(saved.get("fallback"))
        run_name = settings.get("run_name") or redact(info.name)
        tags = {
            "group": settings.get("group") or redact(info.group),
            "mlflow.note.content": settings.get("notes"),
            "mlflow.source.git.commit": git_commit(),
            "mlflow.source.name": "train.py",
            **{str(t): "true" for t in settings.get("tags") or []},
        }
        tags = {k: str(v) for k, v in tags.items() if v not in (None, "")}
        params = {k: str(v)[:PARAM_LENGTH] for k, v in flat_config(info.config).items()}

        def start(uri: str):
            from mlflow.exceptions import MlflowException

            client = MlflowClient(tracking_uri=uri)
            run_id = saved.get("run_id")
            if run_id:
                try:
                    latest = client.get_run(run_id).data.to_proto().metrics  # each key's point of the highest step
                except MlflowException as e:
                    if e.error_code != "RESOURCE_DOES_NOT_EXIST":
                        raise
                    # a relative URI (sqlite:///mlflow.db) resumed from another directory names another store
                    log.warning("MLflow's run %s is not in %s: a new run there continues it", run_id, redact(uri))
                else:
                    client.update_run(run_id, status="RUNNING")
                    return client, run_id, {m.key: m.step for m in latest}
            found = client.get_experiment_by_name(settings["project"])
            experiment = found.experiment_id if found else client.create_experiment(settings["project"])
            run_id = client.create_run(experiment, tags=tags, run_name=run_name).info.run_id
            items = list(params.items())
            for i in range(0, len(items), BATCH["params"]):
                client.log_batch(run_id, params=[Param(k, v) for k, v in items[i : i + BATCH["params"]]])
            return client, run_id, {}

        resumed = saved.get("run_id")  # before the fallback forgets it

        def undo(started) -> None:  # a server that answered after the fallback: its run would stay RUNNING
            client, run_id, _ = started
            if run_id == resumed:
                client.set_terminated(run_id, status="KILLED")  # as the resume found it
            else:
                client.delete_run(run_id)

        try:
            if is_local(self.uri):  # no server to wait for: a new SQLite store takes seconds to set up
                self.client, self.run_id, self.logged = start(self.uri)
            else:
                self.client, self.run_id, self.logged = within(self.timeout, lambda: start(self.uri), undo)
        except Exception as e:
            from mlflow.tracking.registry import UnsupportedModelRegistryStoreURIException as UnknownScheme

            # the user's to fix, as a bad path is: no server to wait for (a database another process holds locked,
            # a sweep's jobs starting at once, falls back as an unanswering server does)
            busy = "database is locked" in str(e)
            if self.fell_back or (is_local(self.uri) and not busy) or isinstance(e, UnknownScheme):
                raise ConfigError(
                    f"logger.tracking_uri: MLflow cannot use {redact(self.uri)} ({type(e).__name__}: {first_line(e)})"
                ) from None
            late = (
                f"did not start within logger.init_timeout={self.timeout:g} s" if isinstance(e, TimeoutError) else None
            )
            log.warning(
                "MLflow at %s %s (%s); logging to %s instead; to upload it later: %s",
                self.uri,
                late or "failed to start",
                first_line(e),
                info.run_dir / FALLBACK,
                upload_command(info.run_dir),
            )
            (info.run_dir / FALLBACK).parent.mkdir(parents=True, exist_ok=True)
            self.uri, self.fell_back, saved = fallback, True, {}
            self.client, self.run_id, self.logged = start(self.uri)
        if self.fell_back:
            self.files = (str(Path(FALLBACK).parent) + "/",)
        self.failed = False
        self.names: dict[str, str] = {}  # each metric's MLflow name
        self.series: set[str] = set()  # the names logged before the end: the summary adds them no point
        self.calls: queue.Queue = queue.Queue()
        self.worker = threading.Thread(target=self.work, name="mlflow-sink", daemon=True)
        self.worker.start()
        if info.start:  # a resume: what the MLflow run lacks from before it (a killed process's queue, a new run)
            self.catch_up(info.run_dir, info.start)

    def catch_up(self, run_dir: Path, start: int) -> None:
        """Send the records of metrics.jsonl before update ``start`` that the MLflow run lacks (``log`` leaves out
        each key's steps it holds)."""
        from scheduling.audit import AuditError
        from training.plots import read_metrics

        try:
            records = read_metrics(run_dir) if (run_dir / "metrics.jsonl").is_file() else []
        except AuditError:  # unreadable: metrics.jsonl is the run's record, not MLflow's to repair
            return
        for record in records:
            if record["step"] < start:
                self.log(record["step"], {k: v for k, v in record.items() if k != "step"})

    def state(self) -> dict[str, Any]:
        # a resume goes on with the same run: in the run directory's store when it fell back, else at the URI given
        return {"run_id": self.run_id, "tracking_uri": redact(self.uri), "fallback": self.fell_back}

    def work(self) -> None:
        """The sink's thread: each queued call in order, the metrics of the records queued one behind the other in
        one call (up to MLflow's limit: a call per update falls behind a fast run on a local store); the first
        call that fails is reported, the rest dropped."""
        held: list = []  # a call taken from the queue while gathering metrics, to make next
        while True:
            item = held.pop() if held else self.calls.get()
            if item is None:
                return
            what, call = item
            if isinstance(call, list):  # metrics: those queued right behind them join the same call
                metrics = list(call)
                while not held:
                    try:
                        after = self.calls.get_nowait()
                    except queue.Empty:
                        break
                    if (
                        after is not None
                        and isinstance(after[1], list)
                        and len(metrics) + len(after[1]) <= BATCH["metrics"]
                    ):
                        metrics += after[1]
                    else:
                        held.append(after)
                call = functools.partial(self.client.log_batch, self.run_id, metrics=metrics)
            if self.failed and what != CLOSING:  # the run's end is tried still: else it stays RUNNING
                continue
            try:
                call()
            except Exception as e:
                if self.failed:
                    continue
                self.failed = True
                log.warning(
                    "MLflow failed %s (%s: %s); training goes on without it, metrics.jsonl stays complete",
                    what,
                    type(e).__name__,
                    first_line(e),
                )

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        from mlflow.entities import Metric

        if self.failed:
            return
        # MLflow appends and cannot take a point back: a step it holds of a key (logged before a resume or a
        # rollback) keeps its first value
        now = int(time.time() * 1000)
        numbers = {
            self.name(k): v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        self.series.update(numbers)
        batch = [Metric(k, float(v), now, step) for k, v in numbers.items() if step > self.logged.get(k, -1)]
        if not batch:
            return
        self.logged.update((m.key, step) for m in batch)
        self.calls.put((f"at update {step}", batch))  # the worker sends it, with the records queued behind it

    def name(self, key: str) -> str:
        """The metric's MLflow name (``metric_name``); one it changes is said once."""
        if key not in self.names:
            self.names[key] = metric_name(key)
            if self.names[key] != key:
                log.warning("MLflow: the metric %r is logged as %r (MLflow refuses its name)", key, self.names[key])
        return self.names[key]

    def log_sample(self, step: int, prompt: str, text: str) -> None:
        self.calls.put(("logging the sample", lambda: self.client.set_tag(self.run_id, "sample", text[:5000])))

    def finish(self, status: str, summary: Mapping[str, Any]) -> None:
        """End the run with its status; wait for the queued calls at most ``logger.init_timeout`` seconds."""
        # at the last step logged (T's evaluation), through log(): a counter the run logs as a series too
        # (train/rollbacks) gets no point of the summary's, and a resumed run's best/* is a later point than the
        # earlier start's
        final = {
            k: v
            for k, v in summary.items()
            if self.name(k) not in self.series and (not isinstance(v, float) or math.isfinite(v))
        }
        self.log(max(self.logged.values(), default=0), final)
        end = STATUS.get(status, "FAILED")
        self.calls.put((CLOSING, lambda: self.client.set_terminated(self.run_id, status=end)))
        self.calls.put(None)
        # a sink that failed only tries to end its run: a server gone does not hold the run's end for long
        self.worker.join(min(self.timeout, 10.0) if self.failed else max(self.timeout, 10.0))
        behind = self.worker.is_alive()
        if behind and not self.failed:
            log.warning(
                "MLflow did not take the last records within %g s; its run may stay RUNNING (metrics.jsonl is "
                "complete)",
                max(self.timeout, 10.0),
            )
        if self.fell_back:
            log.info(
                "MLflow logged to %s; to upload the run: %s", self.run_dir / FALLBACK, upload_command(self.run_dir)
            )
        elif not (self.failed or behind):
            # where the run went: a relative store (sqlite:///mlflow.db) is the working directory's
            where = redact(self.uri)
            see = f"; see it with: mlflow ui --backend-store-uri {where}" if is_local(self.uri) else ""
            log.info("MLflow logged run %s to %s%s", self.run_id, where, see)


def upload(run_dir: Path, to: str) -> str:
    """Copy the run a fallback store in ``run_dir`` holds to the tracking server ``to``: its params, tags, every
    metric's history and its status. Returns the new run's id."""
    from mlflow import MlflowClient
    from mlflow.entities import Param, RunTag

    source_db = run_dir / FALLBACK
    if not source_db.is_file():
        raise ConfigError(f"{run_dir}: no MLflow fallback store ({FALLBACK}) to upload")
    quiet()
    source = MlflowClient(tracking_uri=f"sqlite:///{source_db}")
    target = MlflowClient(tracking_uri=to)
    runs = [r for e in source.search_experiments() for r in source.search_runs([e.experiment_id])]
    if not runs:
        raise ConfigError(f"{source_db}: holds no run to upload")
    run = runs[0]
    name = source.get_experiment(run.info.experiment_id).name
    found = target.get_experiment_by_name(name)
    experiment = found.experiment_id if found else target.create_experiment(name)
    # the source run's id marks its copy: a copy of the run as it is now is refused; one cut short, or of the run
    # before it went on (a resume that fell back again), is replaced
    histories = {key: source.get_metric_history(run.info.run_id, key) for key in run.data.metrics}
    state = f"{run.info.status} {run.info.end_time} {sum(map(len, histories.values()))}"
    copies = target.search_runs([experiment], filter_string=f"tags.uploaded_run = '{run.info.run_id}'")
    for copy in copies:
        if copy.data.tags.get("upload_complete") == state:
            raise ConfigError(f"{source_db}: its run is at {redact(to)} already, as run {copy.info.run_id}")
        log.info("replacing run %s, an earlier or unfinished upload of it", copy.info.run_id)
        target.delete_run(copy.info.run_id)
    tags = {k: v for k, v in run.data.tags.items() if k != "mlflow.runName"}
    tags["uploaded_run"] = run.info.run_id
    new = target.create_run(experiment, start_time=run.info.start_time, tags=tags, run_name=run.info.run_name)
    new_id = new.info.run_id
    params = [Param(k, v) for k, v in run.data.params.items()]
    for i in range(0, len(params), BATCH["params"]):
        target.log_batch(new_id, params=params[i : i + BATCH["params"]])
    for history in histories.values():
        for i in range(0, len(history), BATCH["metrics"]):
            target.log_batch(new_id, metrics=history[i : i + BATCH["metrics"]])
    target.log_batch(new_id, tags=[RunTag("uploaded_from", str(source_db))])
    target.set_terminated(new_id, status=run.info.status, end_time=run.info.end_time)
    target.set_tag(new_id, "upload_complete", state)
    return new_id


def main(argv: list[str] | None = None) -> int:
    parser = CommandLine(
        prog="python -m training.mlflow_logger",
        description="Upload a run that logged to its local MLflow fallback store to a tracking server.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("upload", help="copy the run in <run dir>/mlflow/fallback.db to a tracking server")
    up.add_argument("run_dir", type=Path)
    up.add_argument("--to", help="the tracking URI (default: MLFLOW_TRACKING_URI, else the run's logger.tracking_uri)")
    args = parser.parse_args(argv)
    to = args.to or os.environ.get("MLFLOW_TRACKING_URI")
    if not to:
        to = configured_uri(args.run_dir)
        if REDACTED in to:  # the run's files keep no password: the user gives it again
            where = args.run_dir / ".hydra" / "config.yaml"
            said = f"error: {where} keeps logger.tracking_uri without its password ({to}): give it with --to"
            print(said, file=sys.stderr)
            return 2
    http_limits(UPLOAD_TIMEOUT)
    try:
        new_id = upload(args.run_dir, to)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # the server: unreachable, refusing, an unknown scheme — MLflow's own error, one line
        print(f"error: MLflow at {redact(to)}: {type(e).__name__}: {first_line(e)}", file=sys.stderr)
        return 2
    print(f"uploaded {args.run_dir} to {redact(to)}: run {new_id}")
    return 0


def configured_uri(run_dir: Path) -> str:
    """The tracking URI a run directory's config names (``.hydra/config.yaml``), or the default."""
    from omegaconf import OmegaConf

    path = run_dir / ".hydra" / "config.yaml"
    if path.is_file():
        return OmegaConf.load(path).get("logger", {}).get("tracking_uri") or DEFAULT_URI
    return DEFAULT_URI


if __name__ == "__main__":
    sys.exit(main())
