"""A sweep's report given a fit: each job's final loss, the loss the fit forecast for its schedule and the error, in
report.md and report.csv, and forecast.png; a fit that cannot be read is one line, exit 2, before any job runs."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest

from scheduling import forecast
from tests.conftest import ROOT, TINY, read_metrics
from training.report import main as report_main
from training.report import write_report

ARGS = [
    "trainer.max_steps=40",
    "schedule.warmup_steps=4",
    "trainer.eval_every=3",
    "trainer.eval_batches=4",
    "optim.lr=3e-3",
    "trainer.sample_tokens=0",
]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, data_cache):
    """Two jobs as a multirun leaves them (cosine and WSD, 40 updates), and a fit made on the cosine one."""
    from tests.conftest import compose_config
    from train import train

    root = tmp_path_factory.mktemp("sweep")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPT_DATA_CACHE", str(data_cache))
        for job, schedule in enumerate(("cosine", "wsd")):
            run = root / str(job)
            (run / ".hydra").mkdir(parents=True)
            (run / ".hydra" / "overrides.yaml").write_text(f"- schedule={schedule}\n")
            train(compose_config(TINY + ARGS + [f"schedule={schedule}"]), run)
    assert forecast.main(["fit", str(root / "0"), "--out", str(root / "fit.json")]) == 0
    return root


def test_each_job_s_forecast_stands_beside_its_result(sweep):
    jobs, files = write_report(sweep, sweep / "fit.json")
    assert sweep / "forecast.png" in files and (sweep / "forecast.png").stat().st_size > 0
    fit = forecast.load_fit(sweep / "fit.json")
    header, *rows = (sweep / "report.md").read_text().splitlines()[2:]
    assert header.endswith("| final val/loss | forecast val/loss | forecast error |")
    with open(sweep / "report.csv") as fh:
        table = {row["job"]: row for row in csv.DictReader(fh)}
    for job in ("0", "1"):
        final = [r["val/loss"] for r in read_metrics(sweep / job) if "val/loss" in r][-1]
        predicted = forecast.forecast_run(fit, sweep / job).final()
        assert float(table[job]["final val/loss"]) == final
        assert float(table[job]["forecast val/loss"]) == pytest.approx(predicted, rel=1e-12)
        assert float(table[job]["forecast error"]) == pytest.approx(predicted / final - 1, rel=1e-9)
        assert any(f"| {final:.4f} | {predicted:.4f} | {predicted / final - 1:+.2%} |" in r for r in rows), rows
    assert abs(float(table["0"]["forecast error"])) < 0.005  # the run the fit was made on


def test_a_job_beyond_the_fits_runs_is_warned_of_as_predict_does(sweep, tmp_path, capsys):
    import json

    fit = json.loads((sweep / "fit.json").read_text())
    fit["runs"][0]["updates"] = 10  # as if fitted on a run a quarter as long as the jobs
    (tmp_path / "fit.json").write_text(json.dumps(fit))
    write_report(sweep, tmp_path / "fit.json")
    err = capsys.readouterr().err
    assert "warning: job 0: T = 40 is 4× the longest of the fit's runs (10 updates): the forecast extrapolates" in err


def test_a_job_too_short_to_forecast_is_said_not_left_out_in_silence(sweep, tmp_path, capsys):
    import json
    import shutil

    shutil.copytree(sweep / "0", tmp_path / "0")
    rows = [r for r in read_metrics(sweep / "0") if r["step"] < 10]  # two validation losses after the warmup
    (tmp_path / "0" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_report(tmp_path, sweep / "fit.json")
    assert "warning: job 0: no forecast: " in capsys.readouterr().err


def test_without_a_fit_the_report_has_no_forecast_columns(sweep):
    write_report(sweep)
    assert "forecast" not in (sweep / "report.md").read_text()


def test_the_report_cli_refuses_a_fit_it_cannot_read_and_writes_nothing(sweep, capsys, tmp_path):
    (sweep / "report.md").unlink(missing_ok=True)
    assert report_main([str(sweep), "--forecast", str(tmp_path / "missing.json")]) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'missing.json'} does not exist")
    assert not (sweep / "report.md").exists()


def test_a_sweep_given_a_fit_reports_forecasts_and_a_bad_fit_stops_it_before_any_job(sweep, tmp_path, data_cache):
    env = {**os.environ, "GPT_DATA_CACHE": str(data_cache), "WANDB_MODE": "offline"}
    base = [sys.executable, "train.py", "-m", "schedule=cosine,linear", *TINY, *ARGS]
    bad = subprocess.run(
        [
            *base,
            f"hydra.sweep.dir={tmp_path / 'bad'}",
            f"hydra.callbacks.sweep_report.forecast={tmp_path / 'missing.json'}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        f"error: hydra.callbacks.sweep_report.forecast: {tmp_path / 'missing.json'} does not exist (write one with: "
        "python -m scheduling.forecast fit RUN…)"
    ]
    assert not any((tmp_path / "bad").glob("*/metrics.jsonl"))  # no job ran
    good = subprocess.run(
        [*base, f"hydra.sweep.dir={tmp_path / 'good'}", f"hydra.callbacks.sweep_report.forecast={sweep / 'fit.json'}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert good.returncode == 0, good.stderr[-3000:]
    assert "| final val/loss | forecast val/loss | forecast error |" in (tmp_path / "good" / "report.md").read_text()
    assert (tmp_path / "good" / "forecast.png").is_file()
