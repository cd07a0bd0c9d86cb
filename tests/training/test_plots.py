"""Plots without W&B: what labels each run when several are overlaid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from training import plots
from training.plots import run_labels


def fake_run(root: Path, name: str, choices: dict, config: dict) -> Path:
    """A run directory with what Hydra records in .hydra/: its group choices and its composed config."""
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    hydra = {"hydra": {"runtime": {"choices": {**choices, "hydra/launcher": "basic"}}}}
    OmegaConf.save(OmegaConf.create(hydra), run / ".hydra" / "hydra.yaml")
    OmegaConf.save(OmegaConf.create(config), run / ".hydra" / "config.yaml")
    return run


def config(schedule: str, lr: float, tag: str) -> dict:
    shape = {"decay_fraction": 0.2} if schedule == "wsd" else {}
    return {
        "schedule": {"name": schedule, "warmup_steps": 0.1, **shape},
        "optim": {"lr": lr, "eps": 1e-6},
        "logger": {"tags": [tag]},
        "trainer": {"max_steps": "${unless_budget:500}", "log_every": 10},
    }


def test_overlaid_runs_are_labelled_by_the_choices_and_values_that_differ(tmp_path):
    runs = [
        fake_run(tmp_path, "0", {"schedule": "cosine", "model": "nano"}, config("cosine", 1e-3, "a")),
        fake_run(tmp_path, "1", {"schedule": "wsd", "model": "nano"}, config("wsd", 1e-3, "b")),
        fake_run(tmp_path, "2", {"schedule": "wsd", "model": "nano"}, config("wsd", 3e-3, "c")),
    ]
    # the schedule's own keys go with its choice; what only changes reporting (logger.*) tells nothing apart
    assert run_labels(runs) == [
        "schedule=cosine optim.lr=0.001",
        "schedule=wsd optim.lr=0.001",
        "schedule=wsd optim.lr=0.003",
    ]


def test_an_unset_choice_or_value_is_labelled_as_an_override_writes_it(tmp_path):
    with_stop = {**config("cosine", 1e-3, "a"), "trainer": {"stop_at": 5}}
    runs = [
        fake_run(tmp_path, "0", {"experiment": None}, {**config("cosine", 1e-3, "a"), "trainer": {"stop_at": None}}),
        fake_run(tmp_path, "1", {"experiment": "quick"}, with_stop),
    ]
    assert run_labels(runs) == ["experiment=null trainer.stop_at=null", "experiment=quick trainer.stop_at=5"]


def test_a_run_alone_or_without_hydra_records_is_labelled_by_its_folder(tmp_path):
    alone = fake_run(tmp_path, "only", {"schedule": "cosine"}, config("cosine", 1e-3, "a"))
    bare = tmp_path / "bare"
    bare.mkdir()
    assert run_labels([alone]) == ["only"]
    assert run_labels([alone, bare]) == ["only", "bare"]


def logged_run(root: Path, name: str, *damaged: dict) -> Path:
    """A run directory whose metrics.jsonl holds 20 updates of train loss and lr, a val loss every 5, then the
    ``damaged`` records."""
    run = root / name
    run.mkdir(parents=True)
    rows = [{"step": t, "train/loss": 4 - t / 10, "train/lr": 1e-3, "tokens": 64 * (t + 1)} for t in range(20)]
    rows += [{"step": t, "val/loss": 4 - t / 10} for t in range(0, 20, 5)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [*rows, *damaged]))
    return run


def test_a_logged_value_that_is_not_a_finite_number_reads_as_missing(tmp_path, capsys):
    damaged = [
        {"step": 20, "train/loss": "high", "train/lr": "x", "val/loss": [1]},
        {"step": 21, "train/loss": True, "train/lr": {"a": 1}, "val/loss": None},
        {"step": -1, "train/loss": 1.0, "tokens": 5},  # not an update index: a record of another kind
    ]
    run = logged_run(tmp_path, "run", *damaged)
    rows = plots.read_metrics(run)
    assert [r["step"] for r in rows][-2:] == [20, 21]
    assert [{k: v for k, v in r.items() if k != "step"} for r in rows[-2:]] == [
        {"train/loss": None, "train/lr": None, "val/loss": None},
        {"train/loss": None, "train/lr": None, "val/loss": None},
    ]
    out = tmp_path / "in" / "a folder" / "compare.svg"  # the format its suffix names, its folders made
    assert plots.main([str(run), str(logged_run(tmp_path, "other")), "--out", str(out)]) == 0
    assert out.read_bytes().startswith(b"<?xml") and capsys.readouterr().out == f"2 run(s) → {out}\n"


FORMATS = "give an image file ending in one of .avif, .eps, "


@pytest.mark.parametrize(
    "out, says",
    [
        ("compare.txt", "{out}: .txt is not an image format matplotlib writes; " + FORMATS),
        ("new/compare.txt", "{out}: .txt is not an image format matplotlib writes; " + FORMATS),
        ("compare", "{out}: has no suffix to name its format; " + FORMATS),
        ("run", "{out}: is a directory; " + FORMATS),
        ("run/metrics.jsonl/compare.png", "{out}: cannot be written ({tmp}/run/metrics.jsonl is not a directory)"),
        ("/sys/compare.png", "{out}: cannot be written (Permission denied)"),
    ],
)
def test_an_out_path_that_cannot_take_the_image_is_one_error_line_and_nothing_is_written(out, says, tmp_path, capsys):
    run = logged_run(tmp_path, "run")
    out = out if out.startswith("/") else str(tmp_path / out)
    if out.startswith("/sys/") and not Path("/sys").is_dir():
        pytest.skip("no /sys here")
    before = sorted(tmp_path.rglob("*"))
    assert plots.main([str(run), "--out", out]) == 2
    said = capsys.readouterr()
    assert said.out == "" and said.err.startswith(f"error: --out {says.format(out=out, tmp=tmp_path)}"), said.err
    assert said.err.count("\n") == 1
    assert sorted(tmp_path.rglob("*")) == before and not Path(out).is_file()  # nor run.png beside a folder


def test_a_runs_plots_that_cannot_be_written_are_a_warning_and_the_run_ends_well(tmp_path, tiny_train, caplog):
    """The run is complete when its plots are drawn: a file where plots/ goes (or a full disk there) is one warning."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "plots").write_text("not a folder")
    tiny_train(run, ["trainer.max_steps=3"])
    assert json.loads((run / "summary.json").read_text())["status"] == "ok"
    warned = [r.getMessage() for r in caplog.records if "plots were not written" in r.getMessage()]
    assert len(warned) == 1 and "plots" in warned[0] and "\n" not in warned[0], warned


def test_a_summary_that_cannot_be_written_is_one_line_naming_it(tmp_path, tiny_train, monkeypatch):
    from training import summary
    from training.config import ConfigError

    real = summary.replace_file

    def refused(path, data):
        if path.name == "summary.json":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, data)

    monkeypatch.setattr(summary, "replace_file", refused)
    with pytest.raises(ConfigError, match=r"summary.json: cannot be written \(Permission denied\)$"):
        tiny_train(tmp_path / "run", ["trainer.max_steps=2"])
