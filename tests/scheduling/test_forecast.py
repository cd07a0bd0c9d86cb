"""``python -m scheduling.forecast``: the two laws as written, their fit (known parameters recovered), forecasts of
a real run's own schedule, the optimized schedule, and bad input in one line.

The laws are checked against their formulas written out as plain sums (the annealing law against its recursion),
and the fit against curves the laws themselves generate from known parameters."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from scheduling import Schedule, forecast, schedule_from_config
from tests.conftest import read_metrics

T, W, PEAK = 2000, 100, 6e-3
MULTI_POWER = {"L0": 3.0, "A": 10.0, "alpha": 0.4, "B": 0.6, "C": 0.05, "beta": 0.6, "gamma": 0.5}
ANNEALING = {"L0": 3.0, "A": 10.0, "alpha": 0.4, "C": 3e-4}


def schedules(total: int = T) -> dict[str, Schedule]:
    """The fit's three schedules and two to forecast, warmup W, floor 0.1."""
    half, three_quarters = total // 2, 3 * total // 4
    step = ((half - 1, 1.0), (half, 0.3), (three_quarters - 1, 0.3), (three_quarters, 0.1), (total, 0.1))
    same = {"total_steps": total, "warmup_steps": W, "min_lr_ratio": 0.1}
    return {
        "constant": Schedule("constant", warmup_steps=W),
        "cosine": Schedule("cosine", **same),
        "two_step": Schedule("tabulated", total_steps=total, warmup_steps=W, knots=step),
        "wsd": Schedule("wsd", decay_steps=total // 5, **same),
        "linear": Schedule("linear", **same),
    }


def generated(name: str, law: str, params: dict, total: int = T, every: int = 40) -> forecast.Observed:
    """A run whose loss every ``every`` updates is exactly the law's, from ``params``."""
    lrs = forecast.schedule_lrs(schedules(total)[name], PEAK, total)
    steps = np.arange(W + every, total + 1, every)
    fit = forecast.Fit(params={law: params}, lr_scale=PEAK, loss="val")
    losses = fit.predict(fit.profile(lrs, steps, W, max_groups=None), law)
    return forecast.Observed(name, lrs, steps, losses, W)


def multi_power_written_out(p: dict, lrs: np.ndarray, s: int, peak: float) -> float:
    """L(s) summed term by term: S(s) = Σ_{u<s} η_u; for each update k ≥ W, d_k = η_{k−1} − η_k (the peak before
    W) and S_k = Σ_{k≤u<s} η_u."""
    eta = lrs / peak
    total = eta[:s].sum()
    drop = 0.0
    for k in range(W, s):
        d = (1.0 if k == W else eta[k - 1]) - eta[k]
        x = eta[k] ** -p["gamma"] * eta[k:s].sum()
        drop += d * (1 - (p["C"] * x + 1) ** -p["beta"])
    return p["L0"] + p["A"] * total ** -p["alpha"] - p["B"] * drop


def annealing_by_recursion(p: dict, lrs: np.ndarray, s: int, peak: float, decay: float = 0.999) -> float:
    """L(s) with S2 summed as Tissue et al. write it: m_i = λ·m_{i−1} + (η_{i−1} − η_i), S2 = Σ_{i<s} m_i."""
    eta = lrs / peak
    m = s2 = 0.0
    for i in range(W, s):
        m = decay * m + ((1.0 if i == W else eta[i - 1]) - eta[i])
        s2 += m
    return p["L0"] + p["A"] * eta[:s].sum() ** -p["alpha"] - p["C"] * s2


# ---- the laws as written --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cosine", "two_step", "wsd"])
def test_both_laws_equal_their_formulas_written_out(name):
    lrs = forecast.schedule_lrs(schedules(300)[name], PEAK, 300)
    steps = [W + 1, 150, 151, 226, 300]
    fit = forecast.Fit(params={"multi_power": MULTI_POWER, "annealing": ANNEALING}, lr_scale=PEAK, loss="val")
    prof = fit.profile(lrs, steps, W, max_groups=None)
    mine = fit.predict(prof, "multi_power"), fit.predict(prof, "annealing")
    for i, s in enumerate(steps):
        assert mine[0][i] == pytest.approx(multi_power_written_out(MULTI_POWER, lrs, s, PEAK), rel=1e-12)
        assert mine[1][i] == pytest.approx(annealing_by_recursion(ANNEALING, lrs, s, PEAK), rel=1e-12)


def test_a_decay_to_zero_under_a_steep_fit_is_forecast_at_every_update_from_the_updates_before_it():
    """γ = 115, as a fit to a few short runs found: a drop at an lr near 0 has η^(−γ) = ∞, and where nothing had been
    trained since it (at every update before it) ∞·0 made the loss NaN; L(s) depends on the lrs before s alone."""
    steep = {"L0": 1e-40, "A": 10.0, "alpha": 0.4, "B": 0.6, "C": 2.7e-34, "beta": 3.3e4, "gamma": 115.0}
    lrs = forecast.schedule_lrs(Schedule("cosine", total_steps=300, warmup_steps=W // 5), PEAK, 300)
    fit = forecast.Fit(params={"multi_power": steep}, lr_scale=PEAK, loss="val")
    steps = list(range(W // 5 + 1, 301))
    whole = fit.predict(fit.profile(lrs, steps, W // 5, max_groups=None))
    assert np.isfinite(whole).all()
    for s in (30, 150, 299):
        alone = fit.predict(fit.profile(lrs[:s], [s], W // 5, max_groups=None))[0]
        assert whole[steps.index(s)] == pytest.approx(alone, rel=1e-12), s


def test_pooling_a_smooth_decay_s_drops_changes_the_forecast_by_less_than_1e_4():
    total = 100_000
    for name in ("cosine", "wsd", "two_step"):
        lrs = forecast.schedule_lrs(schedules(total)[name], PEAK, total)
        steps = np.linspace(W + 1, total, 300).round().astype(int)
        fit = forecast.Fit(params={"multi_power": MULTI_POWER, "annealing": ANNEALING}, lr_scale=PEAK, loss="val")
        pooled = fit.profile(lrs, steps, W)
        exact = fit.profile(lrs, steps, W, max_groups=None)
        groups = 2 * forecast.MAX_GROUPS + len(steps)  # a group per ~1/MAX_GROUPS of the drop and of T, and per step
        assert pooled.drop.numel() <= groups < exact.drop.numel() or name == "two_step"
        for law in forecast.LAWS:
            assert np.abs(fit.predict(pooled, law) / fit.predict(exact, law) - 1).max() < 1e-4, (name, law)


# ---- the fit ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("law,params", [("multi_power", MULTI_POWER), ("annealing", ANNEALING)])
def test_curves_generated_from_known_parameters_are_recovered(law, params):
    runs = [generated(name, law, params) for name in ("constant", "cosine", "two_step")]
    fit = forecast.fit_runs(runs, "val")
    for key, value in params.items():
        assert fit.params[law][key] == pytest.approx(value, rel=1e-3), key
    for held_out in ("wsd", "linear"):
        run = generated(held_out, law, params)
        predicted = fit.predict(fit.profile(run.lrs, run.steps, W), law)
        assert np.abs(predicted / run.losses - 1).max() < 1e-4, held_out


@pytest.mark.slow
def test_a_fit_on_runs_of_100_000_updates_recovers_the_parameters():
    total = 100_000
    runs = [
        generated(name, "multi_power", MULTI_POWER, total, every=500) for name in ("constant", "cosine", "two_step")
    ]
    fit = forecast.fit_runs(runs, "val")
    for key, value in MULTI_POWER.items():
        assert fit.params["multi_power"][key] == pytest.approx(value, rel=1e-2), key


# ---- real runs: this template's run directory, W&B offline, trainer_state.json --------------------------------

RUN_T, RUN_W = 40, 4


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, data_cache):
    """A finished cosine run of 40 updates, validated every 3, logged to metrics.jsonl and to W&B offline."""
    from tests.conftest import TINY, compose_config
    from train import train

    run = tmp_path_factory.mktemp("forecast") / "run"
    args = [
        "logger=wandb",
        "logger.mode=offline",
        f"trainer.max_steps={RUN_T}",
        f"schedule.warmup_steps={RUN_W}",
        "trainer.eval_every=3",
        "trainer.eval_batches=4",
        "optim.lr=3e-3",
    ]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPT_DATA_CACHE", str(data_cache))
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        train(compose_config(TINY + args), run)
    import wandb

    wandb.teardown()  # the run file complete
    return run


def test_a_run_directory_and_its_wandb_offline_run_give_the_same_observations(tiny_run):
    from_dir = forecast.observe(tiny_run, "val")
    (run_file,) = sorted(tiny_run.rglob("run-*.wandb"))
    from_wandb = forecast.observe(run_file.parent, "val")
    assert from_dir.warmup == from_wandb.warmup == RUN_W
    assert from_dir.lrs.tolist() == from_wandb.lrs.tolist() and len(from_dir.lrs) == RUN_T
    assert from_dir.steps.tolist() == from_wandb.steps.tolist() == [s for s in range(6, RUN_T, 3)] + [RUN_T]
    assert from_dir.losses.tolist() == pytest.approx(from_wandb.losses.tolist(), rel=1e-12)
    assert from_dir.losses.tolist() == [r["val/loss"] for r in read_metrics(tiny_run) if "val/loss" in r][2:]


def test_several_runs_are_each_forecast_on_their_own_schedule(tiny_run, tmp_path, capsys):
    fit = forecast.Fit(params={"multi_power": MULTI_POWER, "annealing": ANNEALING}, lr_scale=3e-3, loss="val")
    (tmp_path / "fit.json").write_text(json.dumps(fit.to_json()))
    (run_file,) = sorted(tiny_run.rglob("run-*.wandb"))
    argv = ["predict", str(tmp_path / "fit.json"), "--against", str(tiny_run), "--against", str(run_file.parent)]
    assert forecast.main([*argv, "--out", str(tmp_path / "both")]) == 0
    said = capsys.readouterr().out
    assert said.count(": forecast val/loss after 40 updates: multi-power ") == 2
    assert f"against {tiny_run}: " in said and f"against {run_file.parent}: " in said
    rows = (tmp_path / "both.csv").read_text().splitlines()[1:]
    assert {row.split(",")[0] for row in rows} == {tiny_run.name, run_file.parent.name}


def test_overrides_may_come_after_the_options(tiny_run, tmp_path, capsys):
    argv = ["predict", a_fit(tmp_path), "schedule=wsd", "--against", str(tiny_run), "trainer.max_steps=60"]
    assert forecast.main([*argv, "--out", str(tmp_path / "f"), "schedule.decay_fraction=0.5"]) == 0
    said = capsys.readouterr().out
    assert "forecast val/loss after 60 updates" in said and f"against {tiny_run}: " in said
    rows = list(csv.DictReader((tmp_path / "f.csv").open()))
    assert {row["schedule"] for row in rows} == {"wsd (1-sqrt, D = 30)"}  # decay_fraction 0.5 of T = 60
    assert max(int(row["updates"]) for row in rows) == 60


def test_a_run_resumed_under_another_warmup_is_forecast_from_where_its_own_warmup_ended(monkeypatch):
    from scheduling import audit

    first = Schedule("cosine", total_steps=100, warmup_steps=10)
    later = Schedule("cosine", total_steps=100, warmup_steps=30)  # a resume at update 50 that changed W
    segments = [audit.Segment(0, first, 1e-3), audit.Segment(50, later, 1e-3)]
    logged = audit.Logged("run", {t: audit.expected_lr(segments, t) for t in range(100)}, segments)
    logged.losses["val"] = {s: 4.0 - 0.01 * s for s in range(0, 101, 5)}
    monkeypatch.setattr(forecast, "read_run", lambda path: logged)
    fit = forecast.Fit(params={"multi_power": MULTI_POWER, "annealing": ANNEALING}, lr_scale=1e-3, loss="val")
    f = forecast.forecast_run(fit, Path("run"))
    assert f.warmup == 10 and f.steps[0] > 10


def test_a_run_is_forecast_on_the_lrs_it_ran_at_where_they_were_not_its_plan(monkeypatch):
    """A scheduler stepped twice an update: the audit finds it, and the forecast takes the lrs the run had."""
    from scheduling import audit

    planned = Schedule("cosine", total_steps=100, warmup_steps=10)
    segments = [audit.Segment(0, planned, 1e-3)]
    ran = {t: 1e-3 * planned(min(2 * t, 100)) for t in range(60)}  # logged to update 59 of 100
    logged = audit.Logged("run", ran, segments, losses={"val": {s: 4.0 - 0.01 * s for s in range(0, 61, 5)}})
    monkeypatch.setattr(forecast, "read_run", lambda path: logged)
    fit = forecast.Fit(params={"multi_power": MULTI_POWER, "annealing": ANNEALING}, lr_scale=1e-3, loss="val")
    f = forecast.forecast_run(fit, Path("run"))
    assert f.lrs.tolist() == [ran[t] for t in range(60)] + [1e-3 * planned(t) for t in range(60, 100)]


def test_a_run_against_a_schedule_it_did_not_run_is_warned_of(tiny_run, tmp_path, capsys):
    fit = a_fit(tmp_path)
    argv = ["predict", fit, "schedule=constant", "--against", str(tiny_run), "--out", str(tmp_path / "f")]
    assert forecast.main(argv) == 0
    err = capsys.readouterr().err
    assert re.search(rf"warning: {re.escape(str(tiny_run))} did not run constant \(update \d+ ran at lr ", err), err
    own = [f"trainer.max_steps={RUN_T}", f"schedule.warmup_steps={RUN_W}", "optim.lr=3e-3"]  # its schedule
    assert forecast.main(["predict", fit, *own, "--against", str(tiny_run), "--out", str(tmp_path / "f")]) == 0
    assert "did not run" not in capsys.readouterr().err


def test_a_last_training_loss_a_skipped_batch_left_null_is_no_divergence(tmp_path):
    rows = [{"step": t, "train/loss": 3.0 if t < 19 else None, "train/lr": 1e-3} for t in range(20)]  # nonfinite=skip
    rows += [{"step": s, "val/loss": 3.0 - 0.01 * s} for s in range(20)]
    assert forecast.read_run(run_dir(tmp_path / "run", rows)).diverged == {}
    rows[-1]["val/loss"] = None  # the last evaluation's loss NaN: that is one
    assert forecast.read_run(run_dir(tmp_path / "gone", rows)).diverged == {"val": 19}


def test_a_damaged_line_amid_a_runs_metrics_is_said_as_it_is_left_out(tiny_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    lines[3] = lines[3][:10]  # a damaged record amid the others
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n" + '{"step": 9')  # and one a kill cut short
    assert forecast.main(["fit", str(run), "--out", str(tmp_path / "fit.json")]) == 0
    err = capsys.readouterr().err
    assert f"warning: {run / 'metrics.jsonl'}: line 4 cannot be read as JSON; left out\n" in err
    assert f"line {len(lines) + 1}" not in err


def test_a_run_whose_schedule_record_is_damaged_is_fitted_from_its_logged_lrs_saying_so(tiny_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "schedule.json").write_text('{"segments": [{"from_')  # cut short
    assert forecast.main(["fit", str(run), "--out", str(tmp_path / "fit.json")]) == 0
    err = capsys.readouterr().err
    assert f"warning: {run / 'schedule.json'}: cannot be read as JSON" in err
    assert "going by the learning rates the run logged alone" in err
    record = json.loads((tiny_run / "schedule.json").read_text())
    record["segments"][0]["schedule"]["name"] = "a_fork_not_here.decay"  # whole, its schedule not importable here
    (run / "schedule.json").write_text(json.dumps(record))
    assert forecast.main(["fit", str(run), "--out", str(tmp_path / "fit.json")]) == 0
    assert "schedule.json" not in capsys.readouterr().err  # no news: as with a knots file since moved


def test_a_run_the_fit_recorded_by_a_relative_path_is_known_as_one_of_its_runs_from_any_folder(tmp_path):
    final = {"updates": 2000, "loss": 3.25}
    fit = forecast.Fit(params={}, lr_scale=PEAK, loss="val", runs=[{"run": "outputs/forecast/cosine", "final": final}])
    cosine = tmp_path / "outputs" / "forecast" / "cosine"  # fitted in tmp_path, read from here
    assert forecast.in_the_fit(fit, cosine, (2000, 3.25))
    assert not forecast.in_the_fit(fit, cosine, (2000, 3.5))  # the same name, another run (another sweep's job 0)
    assert not forecast.in_the_fit(fit, tmp_path / "outputs" / "other" / "cosine", (2000, 3.25))
    absolute = forecast.Fit(params={}, lr_scale=PEAK, loss="val", runs=[{"run": str(tmp_path / "wsd")}])
    assert forecast.in_the_fit(absolute, tmp_path / "wsd") and not forecast.in_the_fit(absolute, tmp_path / "x" / "wsd")


def test_a_fit_on_runs_whose_lr_never_falls_says_its_decay_terms_are_not_fitted(tmp_path, capsys):
    rows = [{"step": t, "train/lr": 1e-3} for t in range(400)]
    rows += [{"step": s, "val/loss": 2.5 + 6 * s**-0.35} for s in range(20, 401, 20)]  # a power law, constant lr
    assert forecast.main(["fit", str(run_dir(tmp_path / "run", rows)), "--out", str(tmp_path / "fit.json")]) == 0
    assert "warning: no run's learning rate falls below 90% of its peak before its last loss" in capsys.readouterr().err
    assert json.loads((tmp_path / "fit.json").read_text())["decay_fitted"] is False  # and later forecasts say so
    guess = "the fit's runs never decayed (their lr stayed above 90% of its peak), so its decay terms are guesses"
    for schedule, warned in (("cosine", True), ("constant", False)):
        settings = [f"schedule={schedule}", "trainer.max_steps=400", "schedule.warmup_steps=0", "optim.lr=1e-3"]
        out = ["--out", str(tmp_path / schedule)]
        assert forecast.main(["predict", str(tmp_path / "fit.json"), *settings, *out]) == 0
        assert (guess in capsys.readouterr().err) == warned, schedule
    knots = ["--out", str(tmp_path / "knots.csv"), "--knots", "2"]
    assert forecast.main(["optimize", str(tmp_path / "fit.json"), *settings, *knots]) == 0
    assert guess in capsys.readouterr().err


def test_a_forecast_of_a_run_s_own_schedule_fits_that_run(tiny_run, tmp_path, capsys):
    assert forecast.main(["fit", str(tiny_run), "--out", str(tmp_path / "fit.json")]) == 0
    said, err = capsys.readouterr()
    assert "learning rate falls" not in err  # a cosine decay: its terms are fitted
    assert "fitted 1 runs on the validation loss (13 points after warmup)" in said
    assert (
        forecast.main(
            ["predict", str(tmp_path / "fit.json"), "--against", str(tiny_run), "--out", str(tmp_path / "own")]
        )
        == 0
    )
    said = capsys.readouterr().out
    final = [r["val/loss"] for r in read_metrics(tiny_run) if "val/loss" in r][-1]
    fitted = "(one of the fit's runs: the fit's own error, not a held-out one)"
    assert f"against {tiny_run} {fitted}: {final:.4f} after 40 updates; error multi-power" in said
    rows = (tmp_path / "own.csv").read_text().splitlines()
    assert rows[0] == "schedule,updates,multi_power,annealing,actual"
    compared = [row.split(",") for row in rows[1:] if not row.endswith(",")]
    assert len(compared) == 13  # every validation after the warmup, beside the forecast
    errors = [float(mp) / float(actual) - 1 for _, _, mp, _, actual in compared]
    assert abs(errors[-1]) < 0.005 and math.sqrt(np.mean(np.square(errors))) < 0.01, errors  # the final; the curve
    assert (tmp_path / "own.png").stat().st_size > 0


def test_a_trainer_state_json_is_read_with_its_logging_window_and_evaluations(tmp_path):
    """A Trainer logs at global step s the lr of update s − 1 and its window's training loss; evaluates after s."""
    lrs = forecast.schedule_lrs(schedules()["cosine"], PEAK, T)
    fit = forecast.Fit(params={"multi_power": MULTI_POWER}, lr_scale=PEAK, loss="val")
    evals = np.arange(W + 20, T + 1, 20)
    true = fit.predict(fit.profile(lrs, evals, W, max_groups=None), "multi_power")
    history = [{"step": s, "learning_rate": lrs[s - 1], "loss": 4.0} for s in range(10, T + 1, 10)]
    history += [{"step": int(s), "eval_loss": float(v)} for s, v in zip(evals, true, strict=True)]
    (tmp_path / "trainer_state.json").write_text(json.dumps({"max_steps": T, "log_history": history}))
    seen = forecast.observe(tmp_path / "trainer_state.json", "val")
    assert seen.steps.tolist() == evals.tolist() and seen.losses.tolist() == true.tolist()
    logged = np.arange(9, T, 10)
    assert seen.lrs[logged].tolist() == lrs[logged].tolist()
    # between logged updates a straight line: a cosine's chords after the warmup's corner (updates 99 and 109)
    assert np.abs(seen.lrs[110:] - lrs[110:]).max() < 1e-4 * PEAK


# ---- the optimized schedule -------------------------------------------------------------------------------------


def test_the_optimized_schedule_is_forecast_below_cosine_wsd_and_linear_and_runs_as_written(
    tmp_path, capsys, compose_config
):
    fit = forecast.Fit(params={"multi_power": MULTI_POWER, "annealing": ANNEALING}, lr_scale=PEAK, loss="val")
    (tmp_path / "fit.json").write_text(json.dumps(fit.to_json()))
    knots = tmp_path / "best.csv"
    settings = [f"trainer.max_steps={T}", f"optim.lr={PEAK}", f"schedule.warmup_steps={W}", "schedule.min_lr_ratio=0.1"]
    assert forecast.main(["optimize", str(tmp_path / "fit.json"), *settings, "--knots", "40", "--out", str(knots)]) == 0
    said = capsys.readouterr().out
    command = said.split("train it with:\n  python train.py ")[1].strip().split()
    cfg = compose_config(command)  # what train.py will run
    best = schedule_from_config(dict(cfg.schedule), cfg.trainer.max_steps, cfg.optim.lr)
    ys = [y for _, y in best.params["knots"]]
    assert len(ys) == 40 and ys == sorted(ys, reverse=True) and min(ys) >= 0.1 and best.warmup_steps == W

    def final(schedule: Schedule) -> float:
        lrs = forecast.schedule_lrs(schedule, PEAK, T)
        return float(fit.predict(fit.profile(lrs, [T], W, max_groups=None), "multi_power")[0])

    mine = final(best)
    assert f"optimized {mine:.4f}" in said  # the forecast printed is the written schedule's
    for name in ("cosine", "wsd", "linear"):
        assert mine < final(schedules()[name]), name
        assert f"{name} {final(schedules()[name]):.4f}" in said
    assert (tmp_path / "best.png").stat().st_size > 0


def test_the_forecast_csv_quotes_schedule_labels_that_hold_commas(tmp_path, capsys):
    out = tmp_path / "two"
    argv = ["predict", a_fit(tmp_path), "schedule=wsd,cosine_restarts", "trainer.max_steps=200", f"optim.lr={PEAK}"]
    assert forecast.main([*argv, "--out", str(out)]) == 0
    with open(out.with_suffix(".csv"), newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["schedule", "updates", "multi_power", "annealing", "actual"]
    assert {len(r) for r in rows} == {5}
    labels = {r[0] for r in rows[1:]}
    assert len(labels) == 2 and any("," in label for label in labels), labels
    said = capsys.readouterr().out
    assert all(f"{label}: forecast" in said for label in labels)


def test_a_warmup_as_long_as_the_run_is_forecast_after_its_last_update(tmp_path, capsys):
    """W = T: no decay, so the forecast after T is L0 + A·S(T)^(−α) of the warmup's area alone, for both laws."""
    out = tmp_path / "warm"
    argv = ["predict", a_fit(tmp_path), "trainer.max_steps=200", "schedule.warmup_steps=200", f"optim.lr={PEAK}"]
    assert forecast.main([*argv, "--out", str(out)]) == 0
    rows = out.with_suffix(".csv").read_text().splitlines()[1:]
    assert [r.split(",")[1] for r in rows] == ["200"]  # one point, at T, never past it
    area = sum(PEAK * t / 200 for t in range(200)) / PEAK  # the linear warmup's area, in units of the fit's scale
    for law, params, column in (("multi_power", MULTI_POWER, 2), ("annealing", ANNEALING, 3)):
        expected = params["L0"] + params["A"] * area ** -params["alpha"]
        assert float(rows[0].split(",")[column]) == pytest.approx(expected, abs=1e-6), law
    assert out.with_suffix(".png").stat().st_size > 0


def test_optimize_with_a_warmup_past_80_percent_compares_a_wsd_that_decays_after_it(tmp_path, capsys):
    out = tmp_path / "best.csv"
    settings = ["trainer.max_steps=200", "schedule.warmup_steps=190", f"optim.lr={PEAK}", "schedule.min_lr_ratio=0.1"]
    argv = ["optimize", a_fit(tmp_path), *settings]
    assert forecast.main([*argv, "--knots", "5", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    wsd = Schedule("wsd", total_steps=200, warmup_steps=190, decay_steps=10, min_lr_ratio=0.1)
    lrs = forecast.schedule_lrs(wsd, PEAK, 200)
    fit = forecast.load_fit(tmp_path / "fit.json")
    assert f"wsd {fit.predict(fit.profile(lrs, [200], 190, PEAK), 'multi_power')[0]:.4f}" in said


# ---- bad input: one line, exit 2, nothing written ---------------------------------------------------------------


def a_fit(tmp_path, runs: list[dict] | None = None) -> str:
    """A fit.json of MULTI_POWER and ANNEALING; ``runs`` what it records of the runs it was fitted on (none, as
    one written by hand)."""
    params = {"multi_power": MULTI_POWER, "annealing": ANNEALING}
    fit = forecast.Fit(params=params, lr_scale=PEAK, loss="val", runs=runs or [])
    (tmp_path / "fit.json").write_text(json.dumps(fit.to_json()))
    return str(tmp_path / "fit.json")


def run_dir(path, rows: list[dict]):
    path.mkdir(parents=True)
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize(
    "case, says",
    [
        ("no lr", "no learning rate was logged (a forecast needs the lr of every update)"),
        (
            "few points",
            "3 validation losses after the warmup (W = 0); a fit needs at least 5 of one kind per run (evaluate more "
            "often: trainer.eval_every, or fit the training loss: --loss train)",
        ),
        (  # auto took the training loss for want of validation losses, and the run logged none
            "few points auto",
            "0 training losses and 2 validation losses after the warmup (W = 0); a fit needs at least 5 of one kind "
            "per run (evaluate more often: trainer.eval_every)",
        ),
        (
            "few train points",
            "2 training losses and 6 validation losses after the warmup (W = 0); a fit needs at least 5 of one kind "
            "per run (evaluate more often: trainer.eval_every, or fit the validation loss: --loss val)",
        ),
        ("step a string", "metrics.jsonl: step '4' is not an update index (0, 1, …)"),
        ("not a run", "not a run directory (metrics.jsonl), a W&B offline run (run-*.wandb) or a trainer_state.json"),
        ("unknown key", "Could not override 'schedule.decay_fractoin'"),
        ("rising knots", "knot 2 (update 1500) has λ = 0.8, above the 0.5 before it"),
        ("not a fit", "not a fit written by python -m scheduling.forecast fit (it lacks lr_scale)"),
        ("diverged", "{tmp}/run: its last validation loss, at update 19, is not finite: the run diverged, and a"),
        ("a parameter missing", "fit.json: not a fit written by python -m scheduling.forecast fit (it lacks multi_"),
        ("no fit", "does not exist (write one with: python -m scheduling.forecast fit RUN…)"),
        ("two T", "optimize takes one T, peak and warmup; the overrides give 2 schedules"),
        ("two against", "--against: one run beside the overrides' schedules (several only without overrides"),
        ("damaged fit", "fit.json: multi_power.A must be a positive finite number (a fit's parameters are), got -3.0"),
        ("lr 0", "every logged learning rate is 0 (a forecast needs the lr of every update)"),
        ("lr below 0", "{tmp}/run: update 3 logged the learning rate -0.001, below 0"),
        ("negative step", "metrics.jsonl: step -1 is not an update index (0, 1, …)"),
        ("out a folder", "--out " + "{tmp}/out/x.png: cannot be written (Is a directory)"),
        ("fit out a folder", "--out " + "{tmp}/out/x: cannot be written (Is a directory)"),
        ("knots as png", "--out must be the knots' CSV path (the plot is written beside it, as .png)"),
        ("out ending in a slash", "argument --out: must be the path of a file, got '{tmp}/out/'"),
        ("out empty", "argument --out: must be the path of a file, got ''"),
        ("huge lr_scale", "fit.json: lr_scale must be a positive finite number (a fit's parameters are), got 1000"),
        ("huge decay", "fit.json: annealing_decay must be in (0, 1), got 1000"),
        ("run without peak", "fit.json: runs[1].peak_lr must be the run's peak lr, a number > 0, got None"),
        ("run of 0 updates", "fit.json: runs[0].updates must be the run's length, an integer > 0, got 0"),
        ("another format", "fit.json: format 2 is not one this version reads (1); fit the runs again"),
        ("lr_scale not the peak", "fit.json: lr_scale must be the runs' highest peak_lr, 0.006, got 1e+308"),
        ("no loss", "(peak 0.06, T = 2,000): the multi-power law forecasts val/loss -"),
        ("nan", "(peak 1e+306, T = 2,000): the multi-power law forecasts val/loss nan after 101 updates"),
        ("overflow", "(peak 1e+300, T = 2,000): the multi-power law forecasts val/loss -"),
        ("no loss optimized", "cosine (peak 0.06, T = 2,000): the multi-power law forecasts val/loss -"),
    ],
)
def test_bad_input_is_one_error_line_exit_2_and_nothing_written(case, says, tmp_path, capsys):
    rows = [{"step": t, "train/loss": 3.0, "train/lr": 1e-3} for t in range(20)]
    out = ["--out", str(tmp_path / "out" / "x")]
    if case == "no lr":
        argv = ["fit", str(run_dir(tmp_path / "run", [{k: v for k, v in r.items() if k != "train/lr"} for r in rows]))]
    elif case == "few points":
        rows += [{"step": s, "val/loss": 3.0} for s in (5, 10, 15)]
        argv = ["fit", str(run_dir(tmp_path / "run", rows)), "--loss", "val"]
    elif case == "few points auto":
        rows = [{"step": t, "train/lr": 1e-3} for t in range(100)] + [{"step": 49, "val/loss": 3.0}]
        argv = ["fit", str(run_dir(tmp_path / "run", [*rows, {"step": 99, "val/loss": 2.9}]))]
    elif case == "few train points":
        rows = [{"step": t, "train/lr": 1e-3, **({"train/loss": 3.0} if t < 3 else {})} for t in range(20)]
        rows += [{"step": s, "val/loss": 3.0} for s in (2, 5, 8, 11, 14, 17)]
        argv = ["fit", str(run_dir(tmp_path / "run", rows)), "--loss", "train"]
    elif case == "step a string":
        argv = [
            "fit",
            str(run_dir(tmp_path / "run", [{**r, "step": str(r["step"])} if r["step"] == 4 else r for r in rows])),
        ]
    elif case == "not a run":
        (tmp_path / "empty").mkdir()
        argv = ["fit", str(tmp_path / "empty")]
    elif case == "unknown key":
        argv = ["predict", a_fit(tmp_path), "schedule=wsd", "schedule.decay_fractoin=0.3"]
    elif case == "rising knots":
        (tmp_path / "knots.csv").write_text("update,lambda\n1000,0.5\n1500,0.8\n2000,0.1\n")
        argv = [
            "predict",
            a_fit(tmp_path),
            "schedule=tabulated",
            f"schedule.knots={tmp_path / 'knots.csv'}",
            "trainer.max_steps=2000",
        ]
    elif case == "not a fit":
        (tmp_path / "fit.json").write_text('{"loss": "val"}')
        argv = ["predict", str(tmp_path / "fit.json")]
    elif case == "a parameter missing":
        fitted = json.loads(Path(a_fit(tmp_path)).read_text())
        del fitted["multi_power"]["gamma"]
        (tmp_path / "fit.json").write_text(json.dumps(fitted))
        argv = ["predict", str(tmp_path / "fit.json")]
    elif case == "no fit":
        argv = ["optimize", str(tmp_path / "missing.json")]
    elif case == "two T":
        argv = ["optimize", a_fit(tmp_path), "trainer.max_steps=1000,2000"]
    elif case == "two against":
        argv = ["predict", a_fit(tmp_path), "schedule=wsd", "--against", "run1", "--against", "run2"]
    elif case == "damaged fit":
        fit = json.loads(Path(a_fit(tmp_path)).read_text())
        fit["multi_power"]["A"] = -3.0
        (tmp_path / "fit.json").write_text(json.dumps(fit))
        argv = ["predict", str(tmp_path / "fit.json"), "trainer.max_steps=60"]
    elif case == "lr 0":
        rows += [{"step": s, "val/loss": 3.0} for s in range(10)]
        argv = ["fit", str(run_dir(tmp_path / "run", [{**r, "train/lr": 0.0} if "train/lr" in r else r for r in rows]))]
    elif case == "lr below 0":  # a sign flipped: forecast as a loss, once
        rows += [{"step": s, "val/loss": 3.0} for s in range(10)]
        argv = [
            "fit",
            str(run_dir(tmp_path / "run", [{**r, "train/lr": -1e-3} if r["step"] == 3 else r for r in rows])),
        ]
    elif case == "negative step":
        argv = ["fit", str(run_dir(tmp_path / "run", [{"step": -1, "train/lr": 0.5}, *rows]))]
    elif case == "out a folder":  # the CSV beside it is not replaced either
        (tmp_path / "out" / "x.png").mkdir(parents=True)
        (tmp_path / "out" / "x.csv").write_text("old")
        argv = ["predict", a_fit(tmp_path), "trainer.max_steps=60"]
    elif case == "out ending in a slash":  # it wrote out.csv and out.png beside the folder
        argv, out = ["predict", a_fit(tmp_path), "trainer.max_steps=60"], ["--out", f"{tmp_path}/out/"]
    elif case == "out empty":
        argv, out = ["fit", str(tmp_path / "run")], ["--out", ""]
    elif case == "knots as png":
        argv, out = ["optimize", a_fit(tmp_path), "trainer.max_steps=60", "--knots", "3"], ["--out", "k.png"]
    elif case.startswith(("huge", "run ", "another format", "lr_scale")):  # JSON's ints have no bound; floats do
        fit = json.loads(Path(a_fit(tmp_path, FITTED_ON)).read_text())
        huge = 10**400
        if case == "huge lr_scale":
            fit["lr_scale"] = huge
        elif case == "huge decay":
            fit["annealing_decay"] = huge
        elif case == "run without peak":
            del fit["runs"][1]["peak_lr"]
        elif case == "another format":
            fit["format"] = 2
        elif case == "lr_scale not the peak":  # its forecasts were 1e14 "losses"
            fit["lr_scale"] = 1e308
        else:
            fit["runs"][0]["updates"] = 0
        (tmp_path / "fit.json").write_text(json.dumps(fit))
        argv = ["predict", str(tmp_path / "fit.json"), "trainer.max_steps=60"]
    elif case == "diverged":  # its val/loss NaN at the end, written null: read as not logged, it was fitted
        (tmp_path / "out" / "x").mkdir(parents=True)
        rows += [{"step": s, "val/loss": 3.0 - 0.01 * s if s < 19 else None} for s in range(20)]
        argv = ["fit", str(run_dir(tmp_path / "run", rows)), "--loss", "val"]
    elif case in ("no loss", "nan", "overflow", "no loss optimized"):  # a fit that records no runs: no warning first
        # 1e306: the area under the lr overflows; 1e300: each drop times its weight did (a forecast of L0 was shown)
        peak = {"nan": "1e306", "overflow": "1e300"}.get(case, 10 * PEAK)
        settings = [f"trainer.max_steps={T}", f"schedule.warmup_steps={W}", f"optim.lr={peak}"]
        argv = ["optimize" if case == "no loss optimized" else "predict", a_fit(tmp_path), *settings]
    else:
        (tmp_path / "out" / "x").mkdir(parents=True)
        rows += [{"step": s, "val/loss": 3.0 - 0.01 * s} for s in range(20)]
        argv = ["fit", str(run_dir(tmp_path / "run", rows)), "--loss", "val"]
    before = {p.relative_to(tmp_path): p.read_bytes() if p.is_file() else None for p in tmp_path.rglob("*")}
    try:
        code = forecast.main(argv + out)
    except SystemExit as e:  # the command line's parser refused it
        code = e.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and says.format(tmp=tmp_path) in err[0], err
    assert "Traceback" not in err[0]
    after = {p.relative_to(tmp_path): p.read_bytes() if p.is_file() else None for p in tmp_path.rglob("*")}
    assert after == before  # nothing written


# ---- forecasts beyond the fit's runs: a warning, and a refusal where the law gives no loss ------------------------

# What a fit records of the runs it was fitted on: each one's length and peak lr (every fit.json has them).
FITTED_ON = [
    {"run": "long", "updates": T, "warmup": W, "peak_lr": PEAK, "points": 20},
    {"run": "short", "updates": T // 2, "warmup": W, "peak_lr": PEAK / 2, "points": 20},
]
EXTRAPOLATES = "the forecast extrapolates beyond the runs it was fitted on, and is the less reliable the further"


def files_under(root: Path) -> dict:
    return {p.relative_to(root): p.read_bytes() if p.is_file() else None for p in root.rglob("*")}


@pytest.mark.parametrize(
    "settings, warned",
    [
        ([f"trainer.max_steps={T}", f"optim.lr={PEAK}"], None),
        ([f"trainer.max_steps={T + T // 20}", f"optim.lr={PEAK / 2}"], None),  # 5 % longer: within 10 %
        ([f"trainer.max_steps={3 * T}", f"optim.lr={PEAK}"], "T = 6,000 is 3× the longest of the fit's runs (2,000"),
        (
            [f"trainer.max_steps={T // 4}", f"optim.lr={PEAK / 8}"],
            "its peak lr 0.00075 is 1/4 of the lowest of the fit's runs (0.003) and T = 500 is 1/2 of the shortest "
            "of the fit's runs (1,000 updates): " + EXTRAPOLATES,
        ),
        ([f"trainer.max_steps={T}", f"optim.lr={3 * PEAK}"], "its peak lr 0.018 is 3× the highest of the fit's runs"),
    ],
)
def test_a_peak_or_t_beyond_the_fit_s_runs_is_forecast_with_a_warning_that_it_extrapolates(
    settings, warned, tmp_path, capsys
):
    out = tmp_path / "f"
    argv = ["predict", a_fit(tmp_path, FITTED_ON), *settings, f"schedule.warmup_steps={W}", "--out", str(out)]
    assert forecast.main(argv) == 0
    said = capsys.readouterr()
    assert "forecast val/loss after" in said.out and out.with_suffix(".csv").stat().st_size > 0
    warnings = said.err.splitlines()
    if warned is None:
        assert warnings == []
    else:
        assert len(warnings) == 1 and warnings[0].startswith("warning: cosine") and warned in warnings[0], warnings
        assert EXTRAPOLATES in warnings[0]


def test_a_run_forecast_on_its_own_schedule_beyond_the_fit_s_runs_is_warned_of(tmp_path, capsys):
    rows = [{"step": t, "train/loss": 3.0, "train/lr": 3 * PEAK} for t in range(300)]
    rows += [{"step": s, "val/loss": 4.0 - s / 1000} for s in range(30, 301, 30)]
    run = run_dir(tmp_path / "hot", rows)
    argv = ["predict", a_fit(tmp_path, FITTED_ON), "--against", str(run), "--out", str(tmp_path / "f")]
    assert forecast.main(argv) == 0
    assert capsys.readouterr().err.splitlines() == [
        "warning: hot: its peak lr 0.018 is 3× the highest of the fit's runs (0.006) and T = 300 is 1/3.33 of the "
        f"shortest of the fit's runs (1,000 updates): {EXTRAPOLATES} (docs/instruments.md: when not to trust a "
        "forecast)"
    ]


@pytest.mark.parametrize("command", ["predict", "optimize"])
def test_a_forecast_that_is_no_loss_is_refused_naming_its_settings_after_the_warning(command, tmp_path, capsys):
    """At 10× the fit's highest peak the multi-power law forecasts a loss below 0: nothing is written, exit 2."""
    settings = [f"trainer.max_steps={T}", f"schedule.warmup_steps={W}", f"optim.lr={10 * PEAK}"]
    out = tmp_path / "out" / ("k.csv" if command == "optimize" else "f")
    knots = ["--knots", "5"] if command == "optimize" else []
    argv = [command, a_fit(tmp_path, FITTED_ON), *settings, *knots, "--out", str(out)]
    before = files_under(tmp_path)
    assert forecast.main(argv) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and err[0].startswith("warning: ") and "peak lr 0.06 is 10× the highest" in err[0], err
    assert (
        err[1].startswith("error: cosine")
        and "(peak 0.06, T = 2,000): the multi-power law forecasts val/loss -" in err[1]
    )
    assert err[1].endswith(
        "which is not a loss: these settings are outside where the law holds (its fit's runs: peak 0.003–0.006, "
        "T = 1,000–2,000)"
    )
    assert files_under(tmp_path) == before


def test_optimize_is_refused_only_by_the_law_it_minimises(tmp_path, capsys):
    """Where the multi-power law forecasts no loss, the annealing law's optimum is still one, drawn beside it."""
    settings = [f"trainer.max_steps={T}", f"schedule.warmup_steps={W}", f"optim.lr={10 * PEAK}"]
    out = tmp_path / "k.csv"
    argv = ["optimize", a_fit(tmp_path, FITTED_ON), *settings, "--knots", "5", "--law", "annealing", "--out", str(out)]
    assert forecast.main(argv) == 0, capsys.readouterr().err
    assert out.is_file() and "(annealing law): optimized " in capsys.readouterr().out


def test_a_fit_s_runs_tell_its_range_and_a_fit_that_records_none_still_forecasts(tmp_path, capsys):
    from tests.conftest import ROOT

    fit = forecast.load_fit(ROOT / "forecast" / "fit.json")  # the docs' fit: three runs of 3,000 at 6e-3
    assert fit.extent() == ((0.006, 0.006), (3000, 3000))
    by_hand = {k: v for k, v in fit.to_json().items() if k != "runs"}
    (tmp_path / "fit.json").write_text(json.dumps(by_hand))
    assert forecast.load_fit(tmp_path / "fit.json").extent() is None
    argv = ["predict", str(tmp_path / "fit.json"), "experiment=forecast", "trainer.max_steps=30000"]
    assert forecast.main([*argv, "--out", str(tmp_path / "f")]) == 0
    assert capsys.readouterr().err == ""  # nothing to hold it against: no warning


def test_optimize_clamps_more_knots_than_updates_after_the_warmup_to_one_per_update(tmp_path, capsys):
    out = tmp_path / "best.csv"
    settings = ["trainer.max_steps=200", "schedule.warmup_steps=190", f"optim.lr={PEAK}", "schedule.min_lr_ratio=0.1"]
    assert forecast.main(["optimize", a_fit(tmp_path), *settings, "--knots", str(10**12), "--out", str(out)]) == 0
    said = capsys.readouterr()
    assert said.err == f"note: --knots {10**12} clamped to 10, one per update after the warmup\n"
    knots = [line.split(",") for line in out.read_text().splitlines() if not line.startswith(("#", "update"))]
    assert [int(t) for t, _ in knots] == list(range(191, 201)) and "(10 knots)" in said.out
    with pytest.raises(SystemExit) as stop:  # fewer than one: the parser's line
        forecast.main(["optimize", a_fit(tmp_path), *settings, "--knots", "0", "--out", str(out)])
    assert stop.value.code == 2
    assert "argument --knots: must be an integer ≥ 1, got '0'" in capsys.readouterr().err


def test_the_fit_says_which_loss_it_used_and_falls_back_to_the_training_loss(tmp_path, capsys):
    """Too few validation losses: the training loss, averaged over windows, and the fit says so."""
    lrs = forecast.schedule_lrs(schedules()["cosine"], PEAK, T)
    fit = forecast.Fit(params={"multi_power": MULTI_POWER}, lr_scale=PEAK, loss="train")
    every = np.arange(1, T + 1)
    loss = fit.predict(fit.profile(lrs, every, 0, max_groups=None), "multi_power")
    rows = [{"step": t, "train/loss": float(loss[t - 1]) if t else 9.0, "train/lr": lrs[t]} for t in range(T)]
    rows += [{"step": s, "val/loss": 3.5} for s in (500, 1000, 1500, 2000)]
    run = run_dir(tmp_path / "run", rows)
    assert forecast.main(["fit", str(run), "--out", str(tmp_path / "fit.json")]) == 0
    said = capsys.readouterr()
    assert "on the training loss, averaged over ≤ 200 windows per run" in said.out and "warning" not in said.err
    written = json.loads((tmp_path / "fit.json").read_text())
    assert written["loss"] == "train" and written["runs"][0]["points"] > 150
    assert math.isfinite(written["multi_power"]["L0"])
    assert forecast.load_fit(tmp_path / "fit.json").extent() == ((lrs.max(), lrs.max()), (T, T))  # its run's

    rows = [r for r in rows if "train/lr" in r]  # 10 validation losses after the warmup instead
    rows += [{"step": s, "val/loss": 3.5 - 1e-4 * s} for s in range(200, 2200, 200)]
    assert (
        forecast.main(["fit", str(run_dir(tmp_path / "few", rows)), "--loss", "val", "--out", str(tmp_path / "f")]) == 0
    )
    assert capsys.readouterr().err.splitlines() == [  # 10 points pin down the annealing law's 4, not the other's 7
        "warning: 10 points for the multi-power law's 7 parameters are too few to pin them down: its forecasts are "
        "unreliable (fit more runs, or evaluate more often)"
    ]


def test_one_thread_is_restored_after_a_fit():
    threads = torch.get_num_threads()
    with forecast.one_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == threads
