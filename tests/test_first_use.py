"""What a new user reads first: the start-of-run header names the preset and its style, W&B's offline mode is
said at the start with the login that comes before ``wandb sync``, a resumed run's end says how long it took in
all, and the files the README's and docs' commands write at the root are ignored by git."""

from __future__ import annotations

import re
import shlex
import subprocess

import pytest

from tests.conftest import ROOT
from tests.test_docs import PAGES
from training.signals import Stopped


def test_the_header_names_the_preset_and_its_style(tmp_path, tiny_train, caplog):
    with caplog.at_level("INFO", logger="train"):
        tiny_train(tmp_path / "run", ["model=llama-nano", "model.n_layer=1", "trainer.max_steps=2"])
    assert re.search(r"^model +llama-nano \(llama style\), ", caplog.text, re.M), caplog.text


def test_wandb_offline_is_said_at_the_start_with_the_login_before_the_sync(tmp_path, tiny_train, caplog, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    with caplog.at_level("INFO", logger="train"):
        tiny_train(tmp_path / "run", ["logger=wandb", "trainer.max_steps=2"])
    text = caplog.text
    start = text.index(f"W&B logs offline into {tmp_path / 'run' / 'wandb'}")
    assert "wandb login, then the wandb sync command" in text[start:]
    assert start < text.index("step 0/2") < text.index("W&B ran offline; upload the run with (after wandb login)")


def test_a_resumed_run_says_how_long_this_start_and_all_of_them_took(tmp_path, tiny_train, caplog):
    run = tmp_path / "run"
    with pytest.raises(Stopped):
        tiny_train(run, ["trainer.max_steps=6", "trainer.stop_at=3"])
    with caplog.at_level("INFO", logger="train"):
        tiny_train(run, ["trainer.max_steps=6"])
    assert re.search(r"^done +\d+s \(this start; \d+s in all\): best val loss", caplog.text, re.M), caplog.text


def written_at_the_root() -> list[str]:
    """What the pages' commands write into the working directory: their --out files and out= folders."""
    found = set()
    for page in PAGES:
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(), flags=re.S):
            for line in block.replace("\\\n", " ").splitlines():
                words = shlex.split(line, comments=True)
                found |= {b for a, b in zip(words, words[1:], strict=False) if a == "--out" and "/" not in b}
                found |= {w.split("=", 1)[1].split("/")[0] + "/" for w in words if w.startswith("out=")}
    return sorted(found)


def test_what_the_docs_commands_write_at_the_root_is_ignored_by_git():
    written = written_at_the_root()
    assert "lr.png" in written and "compare.png" in written and "exported/" in written
    result = subprocess.run(["git", "check-ignore", "--no-index", *written], cwd=ROOT, capture_output=True, text=True)
    assert sorted(result.stdout.split()) == written
