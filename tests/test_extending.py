"""docs/extending.md's five examples, as written: their files are added to a copy of the template — no file of it
edited — and the copy trains with each (in this process, on the copy's conf/ and modules)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
import shlex
import shutil
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, read_metrics, train_records
from training import checkpoint
from training.signals import Stopped

PAGE = ROOT / "docs" / "extending.md"
# A fenced block whose info string names a file (```python steps_file.py) is that file, whole.
EXAMPLES = {m.group(1): m.group(2) for m in re.finditer(r"```\w+ (\S+)\n(.*?)```", PAGE.read_text(), re.S)}
COPIED = shutil.ignore_patterns(
    ".git",
    ".venv*",
    ".cache",
    "outputs",
    "multirun",
    "__pycache__",
    "*.egg-info",
    "bench-out",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    ".whl",
    ".gl",
)


def files(root: Path) -> dict[str, str]:
    """Every file of the tree at ``root`` (what the copy takes), by relative path: its sha256."""
    found = {}
    for p in root.rglob("*"):
        parts = p.relative_to(root).parts
        if p.is_file() and not any(COPIED(str(p.parent), [part]) for part in parts):
            found[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return found


@pytest.fixture(scope="module")
def fork(tmp_path_factory) -> Path:
    """A copy of the template with the five examples' files added."""
    tree = tmp_path_factory.mktemp("fork") / "tree"
    shutil.copytree(ROOT, tree, ignore=COPIED)
    for path, text in EXAMPLES.items():
        (tree / path).parent.mkdir(parents=True, exist_ok=True)
        (tree / path).write_text(text)
    return tree


@pytest.fixture
def in_fork(fork, monkeypatch):
    """Run from the copy: its conf/ composed, its modules imported, its directory the working one."""
    import scheduling.plot
    import scheduling.spec
    import training.config

    for module in (training.config, scheduling.plot, scheduling.spec):
        monkeypatch.setattr(module, "CONF", fork / "conf")
    monkeypatch.syspath_prepend(str(fork))
    monkeypatch.chdir(fork)
    yield fork
    for name in ("steps_file", "sgd_momentum", "step_decay", "token_accuracy", "gz_files"):
        sys.modules.pop(name, None)


def test_the_page_has_five_examples_of_a_python_and_a_yaml_file_each():
    assert sorted(EXAMPLES) == sorted(
        [
            "steps_file.py",
            "conf/logger/steps_file.yaml",
            "sgd_momentum.py",
            "conf/optim/sgd.yaml",
            "step_decay.py",
            "conf/schedule/step_decay.yaml",
            "token_accuracy.py",
            "conf/eval/token_accuracy.yaml",
            "gz_files.py",
            "conf/data/gz_files.yaml",
        ]
    )


def test_the_examples_add_files_and_edit_none_of_the_template(fork):
    template, copy = files(ROOT), files(fork)
    assert sorted(set(copy) - set(template)) == sorted(EXAMPLES)
    assert {path: digest for path, digest in copy.items() if path in template} == template


def test_every_command_the_page_shows_composes_and_passes_the_checks_in_the_fork(in_fork):
    from training.config import check_config, check_overrides, compose

    shown = [
        shlex.split(line)
        for block in re.findall(r"```bash\n(.*?)```", PAGE.read_text(), re.S)
        for line in block.splitlines()
    ]
    runs = [words[2:] for words in shown if words[:2] == ["python", "train.py"]]
    assert len(runs) == 5
    for args in runs:
        check_overrides(args)
        check_config(compose(args))


def test_the_logger_writes_every_record_to_its_file(in_fork, tiny_train):
    run = tiny_train(in_fork / "runs" / "logger", ["logger=[csv,steps_file]", "trainer.max_steps=6"])
    lines = (run / "steps.txt").read_text().splitlines()
    records = read_metrics(run)
    assert [line.split()[1] for line in lines[:-1]] == [str(r["step"]) for r in records] and lines[-1] == "end ok"
    assert (run / "metrics.csv").is_file()
    first_loss = next(r for r in records if "train/loss" in r)
    assert f"train/loss={first_loss['train/loss']}" in lines[1]


def test_the_optimizer_trains_under_the_schedule_and_resumes_exactly(in_fork, tiny_train):
    args = ["optim=sgd", "optim.lr=0.05", "trainer.max_steps=8", "trainer.eval_every=4"]
    whole = train_records(tiny_train(in_fork / "runs" / "sgd-whole", args))
    from scheduling import Schedule

    schedule = Schedule("cosine", total_steps=8, warmup_steps=1, min_lr_ratio=0.1)  # the default's at T = 8
    assert all(math.isclose(r["train/lr"], 0.05 * schedule(t), rel_tol=1e-12) for t, r in whole.items())
    run = in_fork / "runs" / "sgd"
    with pytest.raises(Stopped):
        tiny_train(run, [*args, "trainer.stop_at=3"])
    state = checkpoint.load(checkpoint.latest(run / "checkpoints"))
    assert state["optimizer_name"] == "sgd"
    assert all("momentum_buffer" in s for s in state["optimizer"]["state"].values())
    resumed = train_records(tiny_train(run, args))
    assert [r["train/loss"] for r in resumed.values()] == [r["train/loss"] for r in whole.values()]


def test_the_schedule_sets_the_lr_and_is_audited_and_plotted_like_the_templates(in_fork, tiny_train):
    from scheduling import audit, plot

    run = tiny_train(in_fork / "runs" / "steps", ["schedule=step_decay", "trainer.max_steps=40"])
    from step_decay import step_decay

    lrs = {t: r["train/lr"] for t, r in train_records(run).items()}
    expected = {t: 3e-3 * step_decay(t, total_steps=40, warmup_steps=2, min_lr_ratio=0.0) for t in lrs}
    assert lrs == pytest.approx(expected, rel=1e-12)
    assert sorted(set(lrs.values()), reverse=True)[:4] == pytest.approx([3e-3, 1.5e-3, 7.5e-4, 3.75e-4])
    assert audit.main([str(run)]) == 0
    assert plot.main(["schedule=step_decay", "trainer.max_steps=200", "--out", str(run / "step_decay.png")]) == 0


def test_the_evaluation_logs_its_metric_at_every_evaluation(in_fork, tiny_train):
    run = tiny_train(
        in_fork / "runs" / "eval", ["eval=[perplexity,token_accuracy]", "trainer.max_steps=6", "trainer.eval_every=3"]
    )
    evaluations = [r for r in read_metrics(run) if "val/loss" in r]
    assert [r["step"] for r in evaluations] == [0, 3, 6]
    assert all(0.0 <= r["val/accuracy"] <= 1.0 for r in evaluations)
    assert json.loads((run / "summary.json").read_text())["status"] == "ok"


def test_the_evaluation_leaves_out_a_ranks_padding_targets(in_fork):
    """Under DDP a rank short of windows pads with ignored targets (-100): no target, so no miss."""
    from types import SimpleNamespace

    import torch
    from token_accuracy import TokenAccuracy

    y = torch.tensor([[1, 2, 3, -100], [-100, -100, -100, -100]])
    logits = torch.nn.functional.one_hot(y.clamp(min=0), 5).float()  # ranks every real target first

    def model(x, targets):
        return logits, None

    model.training, model.eval, model.train = False, lambda: None, lambda mode: None
    ctx = SimpleNamespace(device=torch.device("cpu"), autocast=contextlib.nullcontext(), val_batches=[(y, y)])
    assert TokenAccuracy(ctx, batches=1)(model) == {"val/accuracy": 1.0}


def gz_corpus(folder: Path) -> Path:
    """Sixty small gzipped documents, and one that is not UTF-8 (skipped, as data.on_decode_error says)."""
    import gzip

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(60):
        text = "".join(f"log {i}: line {j} of the gzipped corpus, naïve café\n" for j in range(30))
        (folder / f"part{i:02d}.gz").write_bytes(gzip.compress(text.encode()))
    (folder / "latin1.gz").write_bytes(gzip.compress("caf\xe9\n".encode("latin-1")))
    return folder


def test_the_data_source_trains_caches_and_mixes_like_the_templates(in_fork, tiny_train, data_cache, caplog):
    from data.corpus import build_corpus
    from training.config import compose

    logs = gz_corpus(in_fork / "logs")
    args = ["data=gz_files", f"data.path={logs}", "trainer.max_steps=4"]
    run = tiny_train(in_fork / "runs" / "gz", args)
    assert json.loads((run / "summary.json").read_text())["status"] == "ok"
    corpus = build_corpus(compose(args).data)
    assert [k for k, _ in corpus.capped(corpus.keyed_documents())] == [f"part{i:02d}.gz" for i in range(60)]
    assert corpus.decode_stats.skipped == 1 and corpus.fingerprint
    caches = sorted(p.name for p in data_cache.iterdir() if p.name.startswith("gz-logs-"))
    assert len(caches) == 1
    with caplog.at_level("INFO", logger="data"):
        tiny_train(in_fork / "runs" / "gz-again", args)
    assert "reusing token cache" in caplog.text  # the same files: the same cache
    (logs / "part00.gz").write_bytes((logs / "part01.gz").read_bytes())
    assert build_corpus(compose(args).data).fingerprint != corpus.fingerprint  # a file changed: a new cache
    mixed = [
        "data=mixture",
        "~data.sources",
        f"+data.sources={{gz: {{_target_: gz_files.GzipFiles, path: '{logs}', weight: 1}}, stdlib: {{source: builtin, "
        "weight: 1, max_bytes: 100000}}",
        "trainer.max_steps=4",
    ]
    metrics = read_metrics(tiny_train(in_fork / "runs" / "gz-mixed", mixed))
    assert any("val/gz/loss" in r for r in metrics)


@pytest.mark.parametrize(
    "args, says",
    [
        (["data=gz_files", "data.path=no/such/folder"], r"^data: gz_files.GzipFiles refused its settings \(ValueEr"),
        (["data=builtin", "+data._target_=gz_files.GzipFiles"], r"^data._target_ is a key of data=gz_files, not of"),
        (["data=gz_files", "+data.paths=logs"], r"^data.paths is not a key of data; did you mean data.path\?"),
        (
            [
                "data=mixture",
                "~data.sources",
                "+data.sources={gz: {_target_: gz_files.GzipFiles, paths: l, weight: 1}}",
            ],
            r"^data.sources.gz: gz_files.GzipFiles does not take these settings \(.*paths",
        ),
        (["optim=sgd", "optim.momentum=-1"], r"^optim: sgd_momentum.sgd refused its settings \(ValueError: .*momentum"),
        (
            ["schedule=step_decay", "schedule.factor=abc"],
            r"^schedule.factor must be a number \(schedule step_decay.step_decay's default is 0.5\), got 'abc'$",
        ),
        (["schedule=step_decay", "schedule.drops=-1"], r"^schedule.name: step_decay.step_decay fails at update \d+ \("),
        (["eval=[perplexity,token_accuracy]", "eval.evals.token_accuracy.batches=abc"], r"^eval.evals.token_accuracy"),
    ],
)
def test_a_bad_value_for_a_forks_part_is_one_line_before_the_run_writes(in_fork, tiny_train, args, says):
    from training.config import USER_ERRORS

    run = in_fork / "runs" / "bad"
    with pytest.raises(USER_ERRORS, match=says) as info:
        tiny_train(run, [*args, "trainer.max_steps=4"])
    assert "\n" not in str(info.value) and not (run / "metrics.jsonl").exists()


def test_a_mistyped_key_of_the_forks_option_is_told_the_key_of_that_option(in_fork):
    """As the page says: optim=sgd has a momentum, and so has optim=muon (optim.muon.momentum), which would be
    refused beside sgd; the suggestion is the chosen option's own key."""
    from training.config import ConfigError, check_overrides

    with pytest.raises(ConfigError) as info:
        check_overrides(["optim=sgd", "optim.momentun=0.5"])
    assert str(info.value) == "optim.momentun is not a key of optim; did you mean optim.momentum?"
    assert "`optim.momentun is not a key of optim; did you mean optim.momentum?`" in " ".join(PAGE.read_text().split())
