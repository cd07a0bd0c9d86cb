"""No secret reaches what a run writes; checkpoints load only tensors and plain values."""

from __future__ import annotations

import pickle
import warnings

import pytest
import torch

from tests.conftest import TINY, run_train
from training import checkpoint
from training.errors import ConfigError

ENV_SECRET = "envSECRETvalue12345"
CLI_SECRET = "cliSECRETvalue67890"
KEY_SECRET = "wandbKEYvalue0123456789"


def test_no_secret_is_written_to_config_dumps_logs_checkpoints_metrics_or_wandb(tmp_path, data_cache):
    run = tmp_path / "run"
    args = TINY[:-1] + ["logger=wandb", "logger.mode=offline", "trainer.max_steps=3", "trainer.eval_every=0",
                        f"+trainer.hf_token={CLI_SECRET}", "+data.note=${oc.env:MY_SERVICE_TOKEN}"]  # fmt: skip
    proc = run_train(args, run, data_cache, env={"MY_SERVICE_TOKEN": ENV_SECRET, "WANDB_API_KEY": KEY_SECRET})
    files = [p for p in run.rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in files) and any(p.name == "state.pt" for p in files)
    for path in files:
        data = path.read_bytes()
        for secret in (ENV_SECRET, CLI_SECRET, KEY_SECRET):
            assert secret.encode() not in data, f"{secret} leaked into {path.relative_to(run)}"
    for secret in (ENV_SECRET, CLI_SECRET, KEY_SECRET):
        assert secret not in proc.stdout + proc.stderr


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
