"""Plots without W&B: what labels each run when several are overlaid."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

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
