"""No secret reaches what a run writes; checkpoints load only tensors and plain values."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf, open_dict

from tests.conftest import ROOT, TINY, compose_config
from tests.training.wandb_file import run_files
from training import checkpoint
from training.config import ConfigError
from training.secrets import REDACTED, redact

ENV_SECRET = "envSECRETvalue12345"
KEY_SECRET = "wandbKEYvalue0123456789"
SECRETS = (ENV_SECRET, KEY_SECRET)


def write_hydra_output(run_dir: Path, overrides: list[str]) -> None:
    """What Hydra's run writes into ``<run_dir>/.hydra`` before the job starts: the job's config, Hydra's own
    config (with the command line) and the overrides, unresolved."""
    cfg = compose_config(overrides, return_hydra_config=True)
    with open_dict(cfg):
        hydra = cfg.pop("hydra")
    out = run_dir / ".hydra"
    out.mkdir(parents=True)
    OmegaConf.save(cfg, out / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": hydra}), out / "hydra.yaml")
    OmegaConf.save(hydra.overrides.task, out / "overrides.yaml")


def test_no_secret_is_written_to_config_dumps_logs_checkpoints_metrics_or_wandb(
    tmp_path, data_cache, monkeypatch, caplog, capfd
):
    from train import train

    run = tmp_path / "run"
    given = "logger.notes=${oc.env:MY_SERVICE_TOKEN}"  # an environment secret pulled into the config
    args = ["logger=wandb", "logger.mode=offline", "trainer.max_steps=3", "trainer.eval_every=0", given]
    monkeypatch.setenv("GPT_DATA_CACHE", str(data_cache))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("MY_SERVICE_TOKEN", ENV_SECRET)
    monkeypatch.setenv("WANDB_API_KEY", KEY_SECRET)
    monkeypatch.setattr(sys, "argv", ["train.py", *TINY, *args])  # W&B records the command line
    write_hydra_output(run, TINY + args)
    assert given in (run / ".hydra" / "overrides.yaml").read_text()  # as typed, until the run scrubs it
    with caplog.at_level("INFO"):
        train(compose_config(TINY + args), run, overrides=TINY + args)  # as main() passes the command line
    assert run_files(run)  # complete W&B run files (the token cache the run used is searched too)
    files = [p for p in (*run.rglob("*"), *data_cache.rglob("*")) if p.is_file()]
    assert any(p.suffix == ".wandb" for p in files) and any(p.name == "state.pt" for p in files)
    for path in files:
        data = path.read_bytes()
        for secret in SECRETS:
            assert secret.encode() not in data, f"{secret} leaked into {path}"
    out, err = capfd.readouterr()
    for secret in SECRETS:
        assert secret not in caplog.text + out + err


# Credentials by their shape, as their issuers print them (AWS's is its documentation's example key id).
SHAPED = {
    "hugging face": "hf_aB3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3h",
    "openai": "sk-proj-Ab3De6Gh9Jk2Mn5Pq8St1Vw4Yz7Bc0Ef3Hi6Kl9",
    "github classic": "ghp_Ab3De6Gh9Jk2Mn5Pq8St1Vw4Yz7Bc0Ef3Hi6",
    "github fine-grained": "github_pat_11AB3DE6G0" + "hJk2Mn5Pq8St1Vw4Yz7Bc0Ef3Hi6Kl9_" + "x" * 40,
    "aws": "AKIAIOSFODNN7EXAMPLE",
    "wandb": "0123456789abcdef0123456789abcdef01234567",
    "wandb local": "local-fedcba9876543210fedcba9876543210fedcba98",
}
COMMIT = "89abcdef0123456789abcdef0123456789abcdef"
URL_PASSWORD = "Hunter2Pass9"  # in http://alice:…@host (an MLflow server behind basic auth)


def test_a_urls_password_is_redacted_and_its_user_and_host_kept():
    uri = f"http://alice:{URL_PASSWORD}@tracking.example:5000/api"
    assert redact({"tracking_uri": uri}, secrets=[]) == {
        "tracking_uri": f"http://alice:{REDACTED}@tracking.example:5000/api"
    }
    assert redact([f"logger.tracking_uri={uri}"], secrets=[]) == [
        f"logger.tracking_uri=http://alice:{REDACTED}@tracking.example:5000/api"
    ]
    assert (
        redact(f"failed to reach {uri} (refused)", secrets=[])
        == f"failed to reach http://alice:{REDACTED}@tracking.example:5000/api (refused)"
    )
    kept = {
        "uri": "http://tracking.example:5000/api",
        "ssh": "git@github.com:me/repo.git",
        "store": "sqlite:///a:b@c/x.db",
    }
    assert redact(kept, secrets=[]) == kept


@pytest.mark.parametrize("kind", SHAPED)
def test_a_credential_shaped_value_is_redacted_alone_inside_text_and_in_an_override(kind):
    secret = SHAPED[kind]
    redacted = redact({"notes": secret, "tags": [f"see {secret}, please"]}, secrets=[])
    assert redacted == {"notes": REDACTED, "tags": [f"see {REDACTED}, please"]}
    assert redact(["logger.notes=" + secret], secrets=[]) == ["logger.notes=" + REDACTED]


def test_a_commit_under_a_revision_key_or_in_a_path_and_ordinary_names_are_kept():
    kept = {
        "revision": COMMIT,
        "git_commit": COMMIT,
        "init_from": f"/home/me/.cache/huggingface/hub/models--gpt2/snapshots/{COMMIT}",
        "run_name": "sk-learn-baseline-lr-sweep-2024",
        "project": "hf_models",
        "tokens": "max_tokens",
    }
    assert redact(kept, secrets=[]) == kept
    assert redact([f"data.revision={COMMIT}"], secrets=[]) == [f"data.revision={COMMIT}"]
    # overrides joined (Hydra's override_dirname, sorted): each value is judged by the key it follows
    joined = f"data.revision={COMMIT},data=openwebtext,logger.notes={SHAPED['wandb']}"
    assert redact({"override_dirname": joined}, secrets=[]) == {
        "override_dirname": f"data.revision={COMMIT},data=openwebtext,logger.notes={REDACTED}"
    }
    assert redact({"notes": f"trained at {COMMIT}"}, secrets=[]) == {"notes": f"trained at {REDACTED}"}


def test_no_credential_shaped_value_reaches_any_file_of_a_run_or_a_tracker(tmp_path, data_cache, monkeypatch):
    """Given as notes, run name and tags of W&B, TensorBoard and MLflow at once, as a user types them."""
    from train import train

    run, store = tmp_path / "run", tmp_path / "mlflow.db"
    notes = " ".join(v for k, v in SHAPED.items() if k not in ("openai", "github classic"))
    notes += f" http://alice:{URL_PASSWORD}@tracking.example/"
    args = [
        "logger=[wandb,tensorboard,mlflow]",
        "logger.mode=offline",
        f"logger.tracking_uri=sqlite:///{store}",
        f"logger.notes='{notes}'",
        f"logger.run_name={SHAPED['openai']}",
        f"logger.tags=[{SHAPED['github classic']}]",
        "trainer.max_steps=3",
        "trainer.eval_every=0",
    ]
    monkeypatch.setenv("GPT_DATA_CACHE", str(data_cache))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setattr(sys, "argv", ["train.py", *TINY, *args])
    write_hydra_output(run, TINY + args)
    assert SHAPED["aws"] in (run / ".hydra" / "overrides.yaml").read_text()  # as typed, until the run scrubs it
    train(compose_config(TINY + args), run, overrides=TINY + args)
    assert run_files(run)
    files = [p for p in (*run.rglob("*"), store) if p.is_file()]
    written = {p.name for p in files}
    assert {"state.pt", "config.yaml", "metrics.jsonl", "summary.json"} <= written
    assert any(n.startswith("events.out.tfevents") for n in written) and any(n.endswith(".wandb") for n in written)
    for path in files:
        data = path.read_bytes()
        for kind, secret in {**SHAPED, "url password": URL_PASSWORD}.items():
            assert secret.encode() not in data, f"the {kind} key leaked into {path}"


class Payload:
    def __reduce__(self):
        return (print, ("code ran while loading",))


def test_a_checkpoint_holding_arbitrary_objects_is_refused(tmp_path, capsys):
    folder = tmp_path / "step-00000001"
    folder.mkdir()
    with open(folder / "state.pt", "wb") as fh:
        torch.save({"model": {}, "step": 1, "evil": Payload()}, fh, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ConfigError, match="cannot be read"):
            checkpoint.load(folder)
    assert "code ran" not in capsys.readouterr().out
    assert not caught  # the one-line error is all that is said (no warning about the pickle protocol before it)


def test_a_run_log_line_holding_a_secret_is_redacted_in_train_log_and_on_the_console(tmp_path, monkeypatch, capsys):
    """A message can carry what a user typed or an error echoed (a URL with a token): the run's logging (Hydra's
    job_logging=template, train.log and the console W&B captures) redacts it like every file."""
    import logging.config

    cfg = compose_config([f"hydra.run.dir={tmp_path}"], return_hydra_config=True)
    settings = OmegaConf.to_container(cfg.hydra.job_logging, resolve=False)
    settings["handlers"]["file"]["filename"] = str(tmp_path / "train.log")
    settings["handlers"]["console"]["stream"] = "ext://sys.stderr"
    monkeypatch.setenv("MY_SERVICE_TOKEN", ENV_SECRET)
    root = logging.getLogger()
    kept = root.handlers[:], root.level
    try:
        logging.config.dictConfig(settings)
        logging.getLogger("train").warning("MLflow failed (%s, at %s)", SHAPED["hugging face"], ENV_SECRET)
        logging.getLogger("train").info("given: x.api_key=%s trainer.max_steps=4", ENV_SECRET)
        logging.getLogger("train").info("notes: %s", SHAPED["wandb"])  # 40 hex digits: a W&B key in a log line
        try:
            raise ValueError(f"bad notes {SHAPED['github classic']}")  # a crash's traceback echoes the error
        except ValueError:
            logging.getLogger("train").exception("job 0 crashed")
        for h in root.handlers:
            h.flush()
    finally:
        for h in root.handlers:
            h.close()
        root.handlers[:], level = kept
        root.setLevel(level)
    for text in ((tmp_path / "train.log").read_text(), capsys.readouterr().err):
        assert f"MLflow failed ({REDACTED}, at {REDACTED})" in text, text
        assert f"given: x.api_key={REDACTED} trainer.max_steps=4" in text, text  # the rest of the line kept
        assert f"notes: {REDACTED}" in text and f"ValueError: bad notes {REDACTED}" in text, text


def test_no_credential_shaped_value_reaches_a_sweeps_files_or_its_console(tmp_path, data_cache):
    """Hydra's multirun.yaml in the sweep directory holds the command line and the config, as typed; Hydra's
    line for each job prints its overrides; a job refused (its lr a W&B key, pasted into the wrong place) never
    reaches the run's own scrubbing, and its error, which echoes the value, is in its summary and the report."""
    sweep = tmp_path / "sweep"
    env = {**os.environ, "GPT_DATA_CACHE": str(data_cache), "WANDB_SILENT": "true"}
    args = [
        "trainer.max_steps=2",
        "trainer.eval_every=0",
        "trainer.sample_tokens=0",
        f"optim.lr=1e-3,{SHAPED['wandb']}",
    ]
    args += ["logger=wandb", "logger.mode=offline"]
    cmd = [sys.executable, "train.py", "-m", *TINY, *args, f"logger.notes={SHAPED['hugging face']}"]
    proc = subprocess.run([*cmd, f"hydra.sweep.dir={sweep}"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr[-2000:]  # one job refused
    assert "#1 : " in proc.stdout and "error: job 1 (optim.lr=<redacted>)" in proc.stdout + proc.stderr
    files = [p for p in sweep.rglob("*") if p.is_file()]
    assert {"multirun.yaml", "overrides.yaml", "train.log", "state.pt", "report.md"} <= {p.name for p in files}
    for secret in (SHAPED["hugging face"], SHAPED["wandb"]):
        assert secret not in proc.stdout + proc.stderr
        for path in files:
            assert secret.encode() not in path.read_bytes(), f"the key leaked into {path}"


def test_a_run_crashing_before_its_first_update_keeps_no_secret_in_hydras_files_or_console(tmp_path, data_cache):
    (tmp_path / "boom.py").write_text("def build(model, device, **_):\n    raise RuntimeError('planted')\n")
    run = tmp_path / "run"
    env = {**os.environ, "GPT_DATA_CACHE": str(data_cache), "PYTHONPATH": str(tmp_path)}
    args = [*TINY, "logger=csv", "optim._target_=boom.build", f"trainer.sample_prompt={SHAPED['hugging face']}"]
    proc = subprocess.run(
        [sys.executable, "train.py", *args, f"hydra.run.dir={run}"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 1 and "RuntimeError: planted" in proc.stderr, proc.stderr[-2000:]
    # Hydra's line before a crash's traceback lists the overrides
    assert f"trainer.sample_prompt={REDACTED}" in proc.stderr and SHAPED["hugging face"] not in proc.stderr
    files = list((run / ".hydra").glob("*.yaml"))
    assert len(files) == 3
    for path in files:
        assert SHAPED["hugging face"] not in path.read_text(), f"the key leaked into {path}"
